//! Untrusted JPEG bytes through the parallel scan reader (src/imaging/scan.rs), at any scan
//! size and 2 to 4 runs: no panic, and whenever it reads a picture that the sequential
//! reader (libjpeg-turbo-rs's read_coefficients) also reads, every block is the same.
//!
//! Input layout: byte 0 picks the number of runs (2 + byte % 3), then the JPEG.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../src/imaging/mod.rs"]
mod imaging;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&runs, jpeg)) = data.split_first() else { return };
    imaging::fuzz_scan(jpeg, 2 + usize::from(runs % 3));
});
