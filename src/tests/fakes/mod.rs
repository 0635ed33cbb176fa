//! Fake external services for tests: real HTTP servers on `127.0.0.1:0`, so the code under test
//! talks to them exactly as it talks to the vendor (point a provider's `base_url` at
//! `base_url()`).
//!
//! - [`FakeFal`]: the fal.ai queue API (protocols.md §2), scenario-driven.
//! - [`FakeChat`]: an OpenAI-compatible chat completions server (protocols.md §4.4).
//! - [`FakeComfy`]: a ComfyUI server (protocols.md §3) answering in the shapes of the recorded
//!   0.3.64 session, with a WebSocket and a one-at-a-time executor.
//! - [`FakeConnect`]: a ComfyUI server with the ComfyUI-Connect plugin (protocols.md §3.4):
//!   workflow endpoints answering base64 files, plus `/history`, `/queue`, `/view`.
//! - [`FakeWavespeed`]: the WaveSpeed AI task API (protocols.md §8) under `/api/v3`, with a
//!   second listener standing for a foreign host.
//! - `openai_images`, `gemini`, `huggingface`, `replicate`: the OpenAI Images, Gemini, Hugging
//!   Face and Replicate APIs (protocols.md §4–§7), scenario enums over the request-recording
//!   server of `recorder`.
//! - `crypto_pay`: the Crypto Pay API (protocols.md §9) with paying, expiring and signed
//!   webhook deliveries.
//!
//! They record what they were asked (submits, auth headers, cancels…) for assertions, and fal and
//! ComfyUI have a `hold()` / `release()` switch that keeps work "running" — e.g. to stop and restart
//! the app while a job is at the provider. Each fake stops when dropped.

pub mod comfyui;
pub mod comfyui_connect;
pub mod crypto_pay;
pub mod fal;
pub mod gemini;
pub mod huggingface;
pub mod openai;
pub mod openai_images;
pub mod recorder;
pub mod replicate;
pub mod wavespeed;

#[allow(unused_imports)] // the record types are for end-to-end tests
pub use comfyui::{ComfyScenario, ComfySubmit, ComfyUpload, FakeComfy};
pub use comfyui_connect::{ConnectScenario, FakeConnect};
pub use fal::{FakeFal, FalScenario};
pub use openai::{ChatScenario, FakeChat};
pub use wavespeed::{FakeWavespeed, WavespeedScenario};

use std::net::SocketAddr;
use std::time::Duration;

/// A running axum server; aborted when dropped.
pub(crate) struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `127.0.0.1:0` and serves `router` in a background task.
    pub(crate) async fn start(router: axum::Router) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Server { addr, task }
    }

    /// `http://127.0.0.1:<port>` (no trailing slash).
    pub(crate) fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A real PNG (RGB gradient) of `width`×`height` pixels.
pub fn gradient_png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        let r = (x * 255 / width.max(1)) as u8;
        let g = (y * 255 / height.max(1)) as u8;
        image::Rgb([r, g, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("encode png");
    out.into_inner()
}

/// `png` with one more chunk (`kind`, `data`, a valid CRC) right after IHDR, where encoders
/// put text and EXIF chunks.
pub fn png_with_chunk(png: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let body: Vec<u8> = kind.iter().chain(data).copied().collect();
    let mut chunk = u32::try_from(data.len()).expect("chunk size").to_be_bytes().to_vec();
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(&crc32(&body).to_be_bytes());
    // Signature (8) + IHDR (length 4, type 4, 13 data bytes, CRC 4).
    let after_ihdr = 8 + 25;
    [&png[..after_ihdr], &chunk, &png[after_ihdr..]].concat()
}

/// CRC-32 (ISO-HDLC, as PNG uses), bit by bit: test images are small.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in bytes {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
/// For end-to-end tests waiting on a fake's counters.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Milliseconds since the epoch, as ComfyUI puts in `timestamp`.
pub(crate) fn now_ms() -> i64 {
    crate::domain::now_ms()
}
