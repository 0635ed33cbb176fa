//! Operations built on one decode each: Telegram photo fitting, thumbnails, metadata removal,
//! document form.

use super::decode::{decode_at_least, decode_full, probe};
use super::{ImagingError, Limits, chunks, encode, extension_for_mime, jpeg};
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::metadata::Orientation;
use image::{DynamicImage, ImageFormat, RgbImage};
use std::io::Cursor;

/// Bot API `sendPhoto`: the photo must be at most 10 MB…
const PHOTO_MAX_BYTES: usize = 10 * 1000 * 1000;
/// …width + height at most 10000, and a side ratio of at most 20.
const PHOTO_MAX_SIDE_SUM: u32 = 10_000;
const PHOTO_MAX_RATIO: u32 = 20;
/// Telegram stores photos at most 2560 px on the longest side; sending more only wastes upload.
const PHOTO_MAX_SIDE: u32 = 2560;
/// Tried in order until the JPEG fits [`PHOTO_MAX_BYTES`]. 90 first, like the seed bot, so
/// the photo is not visibly worse than what users had.
const PHOTO_QUALITIES: [u8; 6] = [90, 85, 80, 72, 60, 45];
const THUMB_QUALITY: u8 = 80;
/// Output quality of [`enlarge`]: the result is the user's final file, so keep it close to lossless.
const ENLARGE_QUALITY: u8 = 95;

/// Longest side of library and admin-panel thumbnails, in pixels.
pub const THUMBNAIL_SIDE: u32 = 320;
/// Re-encoding a rotated JPEG in `strip_metadata`: close to the source, it may be edited later.
const ROTATED_QUALITY: u8 = 92;

/// Prepares any supported image for `sendPhoto`: a baseline JPEG without metadata, upright,
/// transparency shown as a light checkerboard (a cut-out on white would look like a white
/// background, and the document beside it keeps the real alpha), longest side ≤ 2560 px (never upscaled), width + height ≤ 10000,
/// at most 10 MB.
///
/// An image more elongated than 20:1 is cropped around its centre to exactly 20:1 (Telegram
/// refuses it otherwise); padding would leave a mostly white picture. Send the original as a
/// document when the full frame matters.
///
/// Errors: those of [`super::decode`], or [`ImagingError::Encode`].
pub fn fit_for_telegram_photo(bytes: &[u8], limits: &Limits) -> Result<Vec<u8>, ImagingError> {
    let (decoded, (w, h)) = decode_at_least(bytes, limits, photo_size)?;
    let rgb = flatten_on_checkerboard(decoded.image);
    for quality in PHOTO_QUALITIES {
        let out = resize_encode(&rgb, w, h, quality)?;
        if out.len() <= PHOTO_MAX_BYTES {
            return Ok(out);
        }
    }
    Err(ImagingError::Encode(format!("{w}×{h} JPEG stays over {PHOTO_MAX_BYTES} bytes")))
}

/// A JPEG preview whose longest side is at most `max_side` px (a 0 is taken as 1; never
/// upscaled), upright, alpha flattened onto white, without metadata. For Bot API document
/// thumbnails pass 320.
///
/// Errors: those of [`super::decode`], or [`ImagingError::Encode`].
pub fn thumbnail(bytes: &[u8], max_side: u32, limits: &Limits) -> Result<Vec<u8>, ImagingError> {
    let (decoded, (w, h)) = decode_at_least(bytes, limits, |w, h| fit_within(w, h, max_side.max(1)))?;
    let rgb = flatten_on_white(decoded.image);
    let rgb = resize(rgb, w, h)?;
    encode_jpeg_rgb(&rgb, THUMB_QUALITY)
}

/// The "Resize" tool: enlarges an image `factor` times on each side (2 or 4) with Lanczos3
/// (`fast_image_resize`), upright, alpha flattened on white, as a JPEG (q95) without metadata.
/// A local, deterministic interpolation, not an AI upscale: it adds pixels, not detail.
///
/// Errors: [`ImagingError::Encode`] for a factor other than 2 or 4 or when encoding fails;
/// [`ImagingError::TooManyPixels`] (with the *output* size) when the result would exceed
/// [`Limits::max_pixels`] or JPEG's 65535 px side, checked before anything is allocated for
/// it; and those of [`super::decode`].
pub fn enlarge(bytes: &[u8], factor: u32, limits: &Limits) -> Result<Vec<u8>, ImagingError> {
    if !matches!(factor, 2 | 4) {
        return Err(ImagingError::Encode(format!("resize factor must be 2 or 4, not {factor}")));
    }
    // Refuse from the header: a 12 MP photo ×4 is 192 MP, and nobody should wait for its decode.
    let info = probe(bytes)?;
    let (w, h) = (u64::from(info.width) * u64::from(factor), u64::from(info.height) * u64::from(factor));
    if w * h > limits.max_pixels || w.max(h) > u64::from(u16::MAX) {
        return Err(ImagingError::TooManyPixels { width: to_u32(w), height: to_u32(h), max: limits.max_pixels });
    }
    let rgb = flatten_on_white(decode_full(bytes, limits)?.image);
    resize_encode(&rgb, rgb.width() * factor, rgb.height() * factor, ENLARGE_QUALITY)
}

/// Removes EXIF, GPS, XMP, IPTC, ICC and comments, keeping the picture upright.
///
/// - JPEG with no orientation to apply: a lossless copy without APP1–APP13, APP15 and COM
///   segments (APP0/JFIF and APP14/Adobe, needed for CMYK, stay) and without bytes after EOI.
/// - JPEG with an EXIF orientation other than 1: the pixels are rotated and re-encoded as JPEG
///   (q92), because dropping the tag would otherwise turn the picture sideways.
/// - PNG, WebP, GIF: decoded and re-encoded as PNG (first frame only for animations).
///
/// The input is always fully decoded once, so a file that does not decode is refused.
/// JPEG stays JPEG and everything else becomes PNG; [`super::probe`] the output for its MIME.
///
/// Errors: those of [`super::decode`], or [`ImagingError::Encode`].
pub fn strip_metadata(bytes: &[u8], limits: &Limits) -> Result<Vec<u8>, ImagingError> {
    let decoded = decode_full(bytes, limits)?;
    match decoded.format {
        ImageFormat::Jpeg if decoded.orientation == Orientation::NoTransforms => jpeg::strip_segments(bytes),
        ImageFormat::Jpeg => encode_jpeg(decoded.image, ROTATED_QUALITY),
        _ => encode_png(&decoded.image),
    }
}

/// Removes the metadata of a provider's result (ComfyUI writes its whole workflow into it)
/// while keeping the picture exactly where the format allows:
///
/// - PNG (also animated): metadata chunks dropped, the rest copied byte for byte (pixels,
///   alpha, palette and frames untouched; see `chunks::strip_png` for what is kept).
/// - WebP (also animated): `EXIF` and `XMP ` chunks dropped, byte for byte otherwise.
/// - JPEG: APPn (but JFIF and Adobe) and COM segments dropped, losslessly.
/// - Anything else (GIF, video, unknown): returned as it came.
///
/// Only when the dropped EXIF held an orientation other than 1 is the picture decoded and
/// re-encoded upright, as [`strip_metadata`] does (without the tag it would show sideways).
///
/// Errors: [`ImagingError::Corrupt`] for a PNG or WebP whose chunks run past the end, and
/// those of [`strip_metadata`] in the rotated case.
pub fn strip_result_metadata(bytes: &[u8], limits: &Limits) -> Result<Vec<u8>, ImagingError> {
    let (out, had_exif) = if bytes.starts_with(chunks::PNG_SIGNATURE) {
        chunks::strip_png(bytes)?
    } else if bytes.len() > 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        chunks::strip_webp(bytes)?
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        // The header reader below finds EXIF however it is laid out.
        (jpeg::strip_segments(bytes)?, true)
    } else {
        return Ok(bytes.to_vec());
    };
    if had_exif && super::decode::stored_orientation(bytes).is_ok_and(|o| o != Orientation::NoTransforms) {
        return strip_metadata(bytes, limits);
    }
    Ok(out)
}

/// The form in which to send an image as a document: `(bytes, extension, mime)`.
///
/// JPEG, PNG and GIF are returned unchanged (a copy of the input). WebP becomes PNG, because
/// Telegram clients show a WebP document as a sticker; that conversion decodes the first frame
/// under [`Limits::default`], applies the orientation, and drops metadata.
///
/// Errors: [`ImagingError::Unsupported`] for other formats, [`ImagingError::Corrupt`] for a
/// broken header, and the decode errors for WebP.
pub fn document_form(bytes: &[u8]) -> Result<(Vec<u8>, &'static str, &'static str), ImagingError> {
    let info = probe(bytes)?;
    if info.mime == "image/webp" {
        let decoded = decode_full(bytes, &Limits::default())?;
        return Ok((encode_png(&decoded.image)?, "png", "image/png"));
    }
    Ok((bytes.to_vec(), extension_for_mime(info.mime), info.mime))
}

/// Target size for a Telegram photo: crop to 20:1 at most, then scale the longest side down to
/// [`PHOTO_MAX_SIDE`].
fn photo_size(width: u32, height: u32) -> (u32, u32) {
    let (w, h) = (u64::from(width), u64::from(height));
    let ratio = u64::from(PHOTO_MAX_RATIO);
    let (cw, ch) = (w.min(h * ratio), h.min(w * ratio));
    let (tw, th) = scale_to_fit(cw, ch, u64::from(PHOTO_MAX_SIDE));
    // Rounding may push a 20:1 crop just past the ratio; trim the long side back.
    let (tw, th) = (tw.min(th * ratio), th.min(tw * ratio));
    debug_assert!(tw + th <= u64::from(PHOTO_MAX_SIDE_SUM));
    (to_u32(tw), to_u32(th))
}

/// Scales `(w, h)` so the longest side is at most `max_side`, keeping the aspect ratio.
fn fit_within(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let (w, h) = scale_to_fit(u64::from(width), u64::from(height), u64::from(max_side));
    (to_u32(w), to_u32(h))
}

fn scale_to_fit(w: u64, h: u64, max_side: u64) -> (u64, u64) {
    let longest = w.max(h);
    if longest <= max_side {
        return (w.max(1), h.max(1));
    }
    let scale = |v: u64| ((v * max_side + longest / 2) / longest).max(1);
    (scale(w), scale(h))
}

fn to_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Resizes with `fast_image_resize` (Lanczos3). If the target aspect differs from the source,
/// the source is cropped around its centre first, which is how the 20:1 crop happens.
fn resize(src: RgbImage, width: u32, height: u32) -> Result<RgbImage, ImagingError> {
    if src.dimensions() == (width, height) {
        return Ok(src);
    }
    resize_ref(&src, width, height)
}

/// A Lanczos3 resize of `src` to `width × height` encoded as a baseline JPEG at `quality`.
///
/// From 2 MP up the result is made in bands of rows, each resized from its own crop of the
/// source (the crop box is fractional and the filter reads past it into the whole source, so
/// the coefficients are those of a one-pass resize) and coded as it is made
/// ([`encode::encode_rgb_bands`]): neither the resized picture nor the resizer's
/// source-width × output-height intermediate ever exists whole. For a 12 MP photo going to
/// 2560 px those two were 38 MB on top of the decoded source.
pub(super) fn resize_encode(src: &RgbImage, width: u32, height: u32, quality: u8) -> Result<Vec<u8>, ImagingError> {
    if u64::from(width) * u64::from(height) < 2_000_000 || src.dimensions() == (width, height) {
        return encode_jpeg_rgb(&resize_ref(src, width, height)?, quality);
    }
    encode::encode_rgb_bands(width, height, quality, |rows, out| resize_rows(src, width, height, rows, out))
}

/// Rows `rows` of the Lanczos3 resize of `src` to `width × height`, written to `out`
/// (`rows.len() × width × 3` bytes).
fn resize_rows(
    src: &RgbImage,
    width: u32,
    height: u32,
    rows: std::ops::Range<u32>,
    out: &mut [u8],
) -> Result<(), ImagingError> {
    let failed = |e: &dyn std::fmt::Display| ImagingError::Encode(format!("resize: {e}"));
    let band = rows.end.saturating_sub(rows.start);
    let mut dst = fast_image_resize::images::Image::from_slice_u8(width, band, out, fast_image_resize::PixelType::U8x3)
        .map_err(|e| failed(&e))?;
    // The crop a one-pass `fit_into_destination` resize takes (a fraction of a pixel when the
    // rounded output size changes the aspect ratio), cut into this band's share.
    let whole = fast_image_resize::CropBox::fit_src_into_dst_size(src.width(), src.height(), width, height, None);
    let scale = whole.height / f64::from(height);
    let (top, bottom) = (whole.top + f64::from(rows.start) * scale, whole.top + f64::from(rows.end) * scale);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)).crop(
        whole.left,
        top,
        whole.width,
        bottom - top,
    );
    Resizer::new().resize(src, &mut dst, &options).map_err(|e| failed(&e))
}

/// [`resize`] without taking the source, for callers that resize one image several times.
pub(super) fn resize_ref(src: &RgbImage, width: u32, height: u32) -> Result<RgbImage, ImagingError> {
    let mut dst = RgbImage::new(width, height);
    let options =
        ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)).fit_into_destination(None);
    Resizer::new().resize(src, &mut dst, &options).map_err(|e| ImagingError::Encode(format!("resize: {e}")))?;
    Ok(dst)
}

/// 8-bit RGB with any alpha composited onto white (JPEG has no alpha, and Telegram would
/// otherwise show transparent areas as black).
pub(super) fn flatten_on_white(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = Vec::with_capacity(rgba.as_raw().len() / 4 * 3);
    for px in rgba.as_raw().chunks_exact(4) {
        let a = u32::from(px[3]);
        for &c in &px[..3] {
            let v = (u32::from(c) * a + 255 * (255 - a) + 127) / 255;
            out.push(u8::try_from(v).unwrap_or(u8::MAX));
        }
    }
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}

/// Side of a checkerboard square behind transparent pixels, in pixels of the decoded image.
const CHECKER: u32 = 16;

/// 8-bit RGB with any alpha composited onto a white and light-grey checkerboard, the usual
/// picture of "transparent here". Opaque images pass unchanged.
pub(super) fn flatten_on_checkerboard(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let px = rgba.get_pixel(x, y).0;
        let back: u32 = if (x / CHECKER + y / CHECKER) % 2 == 0 { 255 } else { 204 };
        let a = u32::from(px[3]);
        image::Rgb(std::array::from_fn(|i| {
            let v = (u32::from(px[i]) * a + back * (255 - a) + 127) / 255;
            u8::try_from(v).unwrap_or(u8::MAX)
        }))
    })
}

/// Baseline JPEG without metadata (see [`encode::encode_rgb`]).
pub(super) fn encode_jpeg_rgb(rgb: &RgbImage, quality: u8) -> Result<Vec<u8>, ImagingError> {
    encode::encode_rgb(rgb, quality)
}

/// Like [`encode_jpeg_rgb`]; grey stays grey, anything else becomes RGB on white.
fn encode_jpeg(image: DynamicImage, quality: u8) -> Result<Vec<u8>, ImagingError> {
    if let DynamicImage::ImageLuma8(grey) = &image {
        return encode::encode_grey(grey, quality);
    }
    encode_jpeg_rgb(&flatten_on_white(image), quality)
}

/// PNG with no ancillary chunks (the encoder writes none), keeping bit depth and alpha.
pub(super) fn encode_png(image: &DynamicImage) -> Result<Vec<u8>, ImagingError> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png).map_err(|e| ImagingError::Encode(format!("PNG: {e}")))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_banded_resize_is_the_one_pass_resize() {
        // Detail at every scale, so that a wrong crop offset or a filter cut at a band edge shows.
        let src = RgbImage::from_fn(3001, 2203, |x, y| {
            let v = (x * 7 + y * 13) ^ (x * y / 97);
            image::Rgb([v as u8, (x / 3) as u8, ((y * 5) % 251) as u8])
        });
        let (w, h) = (2011, 1476);
        let whole = resize_ref(&src, w, h).expect("one pass");
        let mut banded = vec![0u8; (w * h * 3) as usize];
        let row = (w * 3) as usize;
        // Bands as the encoder cuts them (128 rows), and odd ones.
        for step in [128u32, 77, 13] {
            for top in (0..h).step_by(step as usize) {
                let bottom = (top + step).min(h);
                resize_rows(&src, w, h, top..bottom, &mut banded[top as usize * row..bottom as usize * row])
                    .expect("band");
            }
            let off: Vec<usize> =
                whole.as_raw().iter().zip(&banded).map(|(a, b)| usize::from(a.abs_diff(*b))).collect();
            let bad: Vec<(usize, usize, usize)> = off
                .iter()
                .enumerate()
                .filter(|(_, d)| **d > 1)
                .map(|(i, d)| (i / row, i % row / 3, *d))
                .take(20)
                .collect();
            let nbad = off.iter().filter(|d| **d > 1).count();
            assert!(off.iter().all(|d| *d <= 1), "step {step}: {nbad} values off by more than 1: {bad:?}");
            let changed = off.iter().filter(|d| **d > 0).count();
            assert!(changed * 10_000 < off.len(), "step {step}: {changed} of {} values differ", off.len());
        }
        // Encoded in bands: the same picture as the one-pass resize encoded in one go.
        let out = resize_encode(&src, w, h, 90).expect("banded encode");
        let one = encode_jpeg_rgb(&whole, 90).expect("one-pass encode");
        let (a, b) = (
            image::load_from_memory(&out).expect("decodes").to_rgb8(),
            image::load_from_memory(&one).expect("d").to_rgb8(),
        );
        assert_eq!(a.dimensions(), (w, h));
        let diff: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
        assert!(diff * 100 < a.as_raw().len() as u64, "mean difference {}", diff as f64 / a.as_raw().len() as f64);
        assert!(out.windows(2).any(|m| m == [0xFF, 0xDD]), "a restart interval: the bands were joined");
    }

    #[test]
    fn photo_size_respects_telegram_limits() {
        for (w, h) in [
            (1, 1),
            (12_000, 400),
            (400, 12_000),
            (3000, 3000),
            (2560, 128),
            (100, 2500),
            (65_535, 1),
            (1, 65_535),
            (4608, 1976),
            (2561, 2560),
        ] {
            let (tw, th) = photo_size(w, h);
            assert!(tw >= 1 && th >= 1, "{w}×{h} → {tw}×{th}");
            assert!(tw.max(th) <= PHOTO_MAX_SIDE, "{w}×{h} → {tw}×{th}");
            assert!(tw + th <= PHOTO_MAX_SIDE_SUM, "{w}×{h} → {tw}×{th}");
            assert!(tw <= th * 20 && th <= tw * 20, "{w}×{h} → {tw}×{th}");
            assert!(tw <= w && th <= h, "never upscales: {w}×{h} → {tw}×{th}");
        }
        assert_eq!(photo_size(12_000, 400), (2560, 128));
        assert_eq!(photo_size(3000, 3000), (2560, 2560));
        assert_eq!(photo_size(100, 2500), (100, 2000));
        assert_eq!(photo_size(1800, 1200), (1800, 1200));
    }

    #[test]
    fn transparency_shows_as_a_checkerboard_and_opaque_pixels_stay() {
        let mut rgba = image::RgbaImage::from_pixel(64, 64, image::Rgba([0, 0, 0, 0]));
        rgba.put_pixel(40, 40, image::Rgba([10, 200, 30, 255]));
        let rgb = flatten_on_checkerboard(DynamicImage::ImageRgba8(rgba));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255], "first square white");
        assert_eq!(rgb.get_pixel(16, 0).0, [204, 204, 204], "next square grey");
        assert_eq!(rgb.get_pixel(16, 16).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(40, 40).0, [10, 200, 30], "opaque pixel kept");
    }

    #[test]
    fn flatten_composites_on_white() {
        let mut rgba = image::RgbaImage::new(2, 1);
        rgba.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
        rgba.put_pixel(1, 0, image::Rgba([0, 0, 0, 128]));
        let rgb = flatten_on_white(DynamicImage::ImageRgba8(rgba));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [127, 127, 127]);
    }
}
