//! Pure functions over image bytes: probe, decode with limits, fit for Telegram, thumbnails,
//! metadata stripping, compression for provider uploads, text overlay, 2×/4× enlargement and the
//! demo renderer. CPU only; callers run these on blocking threads (`tokio::task::spawn_blocking`).
//!
//! Every operation decodes its input at most once. Pixel and byte limits are checked from the
//! header before any pixel buffer is allocated, so decompression bombs are refused cheaply.

mod chunks;
mod compress;
mod decode;
mod demo;
mod encode;
mod jpeg;
mod ops;
mod overlay;
mod requant;
mod strips;
#[cfg(test)]
mod tests;
pub mod video;

pub use compress::{API_MAX_BYTES, compress_for_api, compress_for_api_to};
pub use decode::{decode, probe};
pub use demo::{render_demo, render_demo_cutout};
pub use ops::{
    THUMBNAIL_SIDE, document_form, enlarge, fit_for_telegram_photo, strip_metadata, strip_result_metadata, thumbnail,
};
// The style types name what `parse_wishes` returns; the binary only passes them through, the
// fuzz targets and tests look inside.
#[allow(unused_imports)]
pub use overlay::{MAX_TEXT_CHARS, OverlayStyle, Position, TextSize, Wishes, overlay_text, parse_wishes};

use sha2::{Digest, Sha256};
use unicode_segmentation::UnicodeSegmentation;

/// Resource limits applied before decoding untrusted bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted `width × height` of the stored image, in pixels.
    pub max_pixels: u64,
    /// Largest accepted input, in bytes.
    pub max_bytes: usize,
}

impl Default for Limits {
    /// 50 megapixels and 20 MB (the Bot API `getFile` download limit).
    fn default() -> Self {
        Limits { max_pixels: 50_000_000, max_bytes: crate::domain::MAX_DOWNLOAD_BYTES }
    }
}

/// Why an imaging operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ImagingError {
    /// The input is larger than [`Limits::max_bytes`].
    #[error("image is {bytes} bytes, the limit is {max}")]
    TooLarge { bytes: usize, max: usize },
    /// The header declares more pixels than [`Limits::max_pixels`]; nothing was decoded.
    #[error("image is {width}×{height} pixels, the limit is {max} pixels")]
    TooManyPixels { width: u32, height: u32, max: u64 },
    /// Not a JPEG, PNG, WebP or GIF, or a feature of one the decoder lacks.
    #[error("unsupported image format: {format}")]
    Unsupported { format: String },
    /// The bytes claim to be an image but do not decode.
    #[error("corrupt image: {0}")]
    Corrupt(String),
    /// Encoding or resizing the output failed, or no encoding fits the size limit.
    #[error("cannot encode image: {0}")]
    Encode(String),
}

/// What [`probe`] learns from a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// Width in pixels as displayed, i.e. after the EXIF orientation is applied.
    pub width: u32,
    /// Height in pixels as displayed.
    pub height: u32,
    /// `image/jpeg`, `image/png`, `image/webp` or `image/gif`.
    pub mime: &'static str,
}

/// Lowercase hex SHA-256 of `bytes` (64 characters); the content address of stored files.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// File extension (without the dot) for an image MIME type; `bin` for anything else.
pub fn extension_for_mime(mime: &str) -> &'static str {
    let essence = mime.split(';').next().unwrap_or("").trim();
    match essence.to_ascii_lowercase().as_str() {
        "image/jpeg" | "image/jpg" | "image/pjpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "image/gif" => "gif",
        _ => "bin",
    }
}

/// MIME type of the formats this module handles.
fn mime_for_format(format: image::ImageFormat) -> Option<&'static str> {
    match format {
        image::ImageFormat::Jpeg => Some("image/jpeg"),
        image::ImageFormat::Png => Some("image/png"),
        image::ImageFormat::WebP => Some("image/webp"),
        image::ImageFormat::Gif => Some("image/gif"),
        _ => None,
    }
}

/// Greedy word wrap shared by the demo renderer and the text overlay: words are added while
/// `fits` holds for the line; a word wider than a whole line is broken between grapheme
/// clusters (UAX #29).
/// The text's own line breaks are kept.
pub(crate) fn wrap_words(text: &str, fits: impl Fn(&str) -> bool) -> Vec<String> {
    let mut lines = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            let candidate = if line.is_empty() { word.to_string() } else { format!("{line} {word}") };
            if fits(&candidate) {
                line = candidate;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            // Between grapheme clusters, so a flag, a keycap or a ZWJ family is never cut in two.
            for g in word.graphemes(true) {
                let before = line.len();
                line.push_str(g);
                if !fits(&line) && before > 0 {
                    line.truncate(before);
                    lines.push(std::mem::take(&mut line));
                    line.push_str(g);
                }
            }
        }
        if !line.is_empty() {
            lines.push(line);
        }
    }
    lines
}
