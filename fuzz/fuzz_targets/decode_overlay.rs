//! Untrusted image bytes through probe → decode → overlay (the "📝 Add text" path), the
//! Telegram photo fit (DCT-scaled decode, banded resize), and compress_for_api over its limit
//! (a JPEG's coefficients read, requantised in strips on all cores and written again), with a
//! caption and style wishes taken from the input too.
//!
//! Input layout: byte 0 = caption length `n`, then `n` bytes of caption (lossy UTF-8; its first
//! line is also parsed as style wishes), then the image bytes.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../src/imaging/mod.rs"]
mod imaging;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else { return };
    let n = usize::from(n).min(rest.len());
    let (caption, image) = rest.split_at(n);
    let caption = String::from_utf8_lossy(caption);
    let wishes = imaging::parse_wishes(caption.lines().next().unwrap_or(""));
    // Small limits keep each run fast; the limit checks themselves are part of what is tested.
    let limits = imaging::Limits { max_pixels: 4_000_000, max_bytes: 4_000_000 };
    let probed = imaging::probe(image);
    match imaging::decode(image, &limits) {
        Ok(img) => {
            let info = probed.expect("what decodes also probes");
            assert_eq!((img.width(), img.height()), (info.width, info.height));
            match imaging::overlay_text(image, &caption, &wishes.style, &limits) {
                Ok(out) => {
                    let back = imaging::probe(&out).expect("overlay output is a valid JPEG");
                    assert_eq!((back.width, back.height), (info.width, info.height));
                }
                // JPEG cannot store a side over 65535 px; anything else decodable must work.
                Err(e) => assert!(info.width.max(info.height) > 65_535, "{e}"),
            }
            // The Telegram photo: a JPEG within the sendPhoto limits, never larger than the input.
            if let Ok(out) = imaging::fit_for_telegram_photo(image, &limits) {
                let back = imaging::probe(&out).expect("fit output is a valid image");
                assert!(back.width.max(back.height) <= 2560 && back.width + back.height <= 10_000);
                assert!(back.width <= info.width.max(1) && back.height <= info.height.max(1));
            }
            // Over the limit a JPEG is requantised from its own coefficients (no pixel decode):
            // the coefficient reader and writer see the same untrusted bytes.
            let max = (image.len() / 2).max(2048);
            if let Ok(out) = imaging::compress_for_api(image, max, &limits) {
                assert!(out.len() <= max, "{} bytes over a limit of {max}", out.len());
                imaging::probe(&out).expect("compress output is a valid image");
            }
        }
        Err(_) => {
            assert!(imaging::overlay_text(image, &caption, &wishes.style, &limits).is_err());
        }
    }
});
