//! Image facts the emulator needs: dimensions from the header, a small JPEG thumbnail (the
//! extra `PhotoSize` Telegram always adds), and a content type for stored files.

use image::{ImageFormat, ImageReader};
use std::io::Cursor;

/// Width and height read from the image header only (no pixel decode).
pub(crate) fn dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    ImageReader::new(Cursor::new(bytes)).with_guessed_format().ok()?.into_dimensions().ok()
}

/// Longest side of the thumbnail `PhotoSize`.
pub(crate) const THUMB_SIDE: u32 = 320;
/// Pictures above this many pixels get no thumbnail (keeps decompression bombs harmless).
const THUMB_MAX_PIXELS: u64 = 50_000_000;

/// A JPEG no larger than `THUMB_SIDE`, or `None` when the picture is already that small or
/// does not decode. CPU-bound: call it from a blocking thread.
pub(crate) fn thumbnail(bytes: &[u8], width: u32, height: u32) -> Option<(Vec<u8>, u32, u32)> {
    if width.max(height) <= THUMB_SIDE || u64::from(width) * u64::from(height) > THUMB_MAX_PIXELS {
        return None;
    }
    let img = ImageReader::new(Cursor::new(bytes)).with_guessed_format().ok()?.decode().ok()?;
    let small = img.thumbnail(THUMB_SIDE, THUMB_SIDE).into_rgb8();
    let (w, h) = small.dimensions();
    let mut out = Cursor::new(Vec::new());
    small.write_to(&mut out, ImageFormat::Jpeg).ok()?;
    Some((out.into_inner(), w, h))
}

/// A content type from the file name, else from the bytes, else `application/octet-stream`.
pub(crate) fn mime_type(file_name: Option<&str>, bytes: &[u8]) -> String {
    let ext = file_name.and_then(|n| n.rsplit_once('.')).map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    let by_ext = match ext.as_str() {
        "jpg" | "jpeg" => Some("image/jpeg"),
        "png" => Some("image/png"),
        "webp" => Some("image/webp"),
        "gif" => Some("image/gif"),
        "pdf" => Some("application/pdf"),
        "txt" => Some("text/plain"),
        "json" => Some("application/json"),
        "zip" => Some("application/zip"),
        "mp4" => Some("video/mp4"),
        "webm" => Some("video/webm"),
        _ => None,
    };
    if let Some(m) = by_ext {
        return m.to_owned();
    }
    if is_mp4(bytes) {
        return "video/mp4".to_owned();
    }
    if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return "video/webm".to_owned();
    }
    match image::guess_format(bytes) {
        Ok(f) => f.to_mime_type().to_owned(),
        Err(_) if bytes.starts_with(b"%PDF") => "application/pdf".to_owned(),
        Err(_) => "application/octet-stream".to_owned(),
    }
}

/// An ISO-BMFF file (MP4, MOV): `ftyp` box at offset 4.
pub(crate) fn is_mp4(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(b"ftyp")
}

/// The extension Telegram would give a stored file of this type.
pub(crate) fn extension(mime: &str) -> &'static str {
    match mime {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "image/gif" => "gif",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        "video/mp4" => "mp4",
        _ => "bin",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/photos").join(name);
        std::fs::read(p).expect("test photo")
    }

    #[test]
    fn reads_dimensions_from_headers() {
        assert_eq!(dimensions(&photo("canon_sx60_orient6_gpsifd.jpg")), Some((2048, 1536)));
        assert_eq!(dimensions(&photo("bomb_50000x50000_rgb_header_only.png")), Some((50000, 50000)));
        assert_eq!(dimensions(b"not an image"), None);
    }

    #[test]
    fn thumbnails_are_small_jpegs() {
        let bytes = photo("alpha_dice_rgba.png");
        assert!(thumbnail(&bytes, 200, 150).is_none(), "already small");
        let bytes = photo("canon_sx60_orient6_gpsifd.jpg");
        let (jpeg, w, h) = thumbnail(&bytes, 2048, 1536).expect("thumbnail");
        assert_eq!((w, h), (320, 240));
        assert_eq!(dimensions(&jpeg), Some((320, 240)));
        assert_eq!(mime_type(None, &jpeg), "image/jpeg");
        assert_eq!(mime_type(Some("a.PDF"), b""), "application/pdf");
        assert_eq!(mime_type(Some("x"), b"zzz"), "application/octet-stream");
    }
}
