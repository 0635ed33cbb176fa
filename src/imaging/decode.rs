//! Header probing and limited decoding: the only place that turns untrusted bytes into pixels.
//!
//! JPEGs are decoded by libjpeg-turbo-rs's `Decoder` (a pure-Rust port of libjpeg-turbo with
//! SIMD kernels), DCT-scaled by M/8 when the caller will shrink the picture anyway. Whatever it
//! refuses (CMYK, 12-bit, truncated or corrupt streams) and every other format go through the
//! generic `image` decoder, which is more lenient and gives the precise error.

use super::{ImageInfo, ImagingError, Limits, mime_for_format};
use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage};
use libjpeg_turbo_rs as ljt;
use std::io::Cursor;

/// A decoded image with what the header said about it.
pub(super) struct Decoded {
    /// Pixels with the EXIF orientation already applied (first frame if animated).
    pub image: DynamicImage,
    pub format: ImageFormat,
    /// The orientation that was found (and applied); `NoTransforms` when absent or invalid.
    pub orientation: Orientation,
}

/// Reads the header only: format, and dimensions as displayed (EXIF orientation 5–8 swap
/// width and height). No pixel data is decoded, so this is cheap even for a decompression
/// bomb; [`Limits`] are not checked here (that is [`decode`]'s job).
///
/// Errors: [`ImagingError::Unsupported`] for anything but JPEG, PNG, WebP and GIF;
/// [`ImagingError::Corrupt`] when the header itself is broken.
pub fn probe(bytes: &[u8]) -> Result<ImageInfo, ImagingError> {
    let format = supported_format(bytes)?;
    let mut decoder =
        ImageReader::with_format(Cursor::new(bytes), format).into_decoder().map_err(|e| map_error(e, None, 0))?;
    let (width, height) = decoder.dimensions();
    // A broken EXIF block must not make an otherwise readable image unprobeable.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let (width, height) = if swaps_axes(orientation) { (height, width) } else { (width, height) };
    Ok(ImageInfo { width, height, mime: mime_for_format(format).unwrap_or("application/octet-stream") })
}

/// The EXIF orientation a header declares (`NoTransforms` when absent or invalid), read
/// without decoding pixels.
///
/// Errors: those of [`probe`].
pub(super) fn stored_orientation(bytes: &[u8]) -> Result<Orientation, ImagingError> {
    let format = supported_format(bytes)?;
    let mut decoder =
        ImageReader::with_format(Cursor::new(bytes), format).into_decoder().map_err(|e| map_error(e, None, 0))?;
    Ok(decoder.orientation().unwrap_or(Orientation::NoTransforms))
}

/// Decodes untrusted bytes into upright pixels.
///
/// The byte size and the stored `width × height` are checked against `limits` from the header
/// before any pixel buffer exists, and the decoders themselves run under matching limits.
/// The EXIF orientation (values 2–8; 0, 1 and invalid values mean "as stored") is applied.
/// Animated GIF and WebP yield their first frame.
///
/// Errors: [`ImagingError::TooLarge`], [`ImagingError::TooManyPixels`],
/// [`ImagingError::Unsupported`], [`ImagingError::Corrupt`].
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<DynamicImage, ImagingError> {
    decode_full(bytes, limits).map(|d| d.image)
}

/// [`decode`] with the format and orientation the header gave.
pub(super) fn decode_full(bytes: &[u8], limits: &Limits) -> Result<Decoded, ImagingError> {
    decode_with(bytes, limits, None)
}

/// Like [`decode_full`], but a JPEG may come out DCT-scaled (M/8, M = 1…7) when that still
/// leaves at least `target(displayed_width, displayed_height)` pixels (the size the caller
/// will resize to, never up), and its chroma is upsampled by replication. Returns the pixels
/// and that target, evaluated on the full-size picture, so the caller's output size does not
/// depend on which scale the decoder took.
///
/// Errors: those of [`decode`].
pub(super) fn decode_at_least(
    bytes: &[u8],
    limits: &Limits,
    target: impl Fn(u32, u32) -> (u32, u32),
) -> Result<(Decoded, (u32, u32)), ImagingError> {
    let asked = std::cell::Cell::new(None);
    let target = |w: u32, h: u32| {
        let t = target(w, h);
        asked.set(Some(t));
        t
    };
    let decoded = decode_with(bytes, limits, Some(&target))?;
    let size = match asked.get() {
        Some(size) => size,
        None => target(decoded.image.width(), decoded.image.height()),
    };
    Ok((decoded, size))
}

fn decode_with(
    bytes: &[u8],
    limits: &Limits,
    target: Option<&dyn Fn(u32, u32) -> (u32, u32)>,
) -> Result<Decoded, ImagingError> {
    if bytes.len() > limits.max_bytes {
        return Err(ImagingError::TooLarge { bytes: bytes.len(), max: limits.max_bytes });
    }
    let format = supported_format(bytes)?;
    if format == ImageFormat::Jpeg {
        if let Some(decoded) = decode_jpeg(bytes, limits, target)? {
            return Ok(decoded);
        }
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(decoder_limits(limits));
    let mut decoder = reader.into_decoder().map_err(|e| map_error(e, None, limits.max_pixels))?;

    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImagingError::Corrupt(format!("{width}×{height} image")));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImagingError::TooManyPixels { width, height, max: limits.max_pixels });
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image =
        DynamicImage::from_decoder(decoder).map_err(|e| map_error(e, Some((width, height)), limits.max_pixels))?;
    image.apply_orientation(orientation);
    Ok(Decoded { image, format, orientation })
}

/// A JPEG's header as libjpeg-turbo-rs reads it (markers only, no entropy data), with the
/// pixel limit checked and the EXIF orientation (`NoTransforms` when absent or invalid).
/// `Ok(None)` when that reader cannot parse the header.
///
/// Errors: [`ImagingError::TooManyPixels`], before any pixel buffer exists.
pub(super) fn jpeg_header<'a>(
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<Option<(ljt::Decoder<'a>, Orientation)>, ImagingError> {
    let decode_limits = ljt::DecodeLimits {
        max_pixels: limits.max_pixels,
        // Output buffer (RGB) plus the decoder's own component planes, with room to spare.
        max_memory: Some(limits.max_pixels.saturating_mul(4).saturating_add(64 << 20)),
        ..ljt::DecodeLimits::default()
    };
    let Ok(decoder) = ljt::Decoder::new_with_limits(bytes, decode_limits) else { return Ok(None) };
    let header = decoder.header();
    let (width, height) = (u32::from(header.width), u32::from(header.height));
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ImagingError::TooManyPixels { width, height, max: limits.max_pixels });
    }
    let orientation = decoder.exif_orientation().and_then(Orientation::from_exif).unwrap_or(Orientation::NoTransforms);
    Ok(Some((decoder, orientation)))
}

/// The libjpeg-turbo-rs decode of a JPEG, upright, at the smallest DCT scale M/8 that still
/// covers `target` (full size and the default triangle chroma filter without one).
///
/// `Ok(None)` means "use the generic decoder": a colour space or precision this path does not
/// take (CMYK, YCCK, 12-bit, lossless), or any decode error or warning (truncation, corrupt
/// entropy data), so that lenient decoding and error wording stay the generic decoder's.
///
/// Errors: [`ImagingError::TooManyPixels`] from the header, before any pixel buffer exists.
pub(super) fn decode_jpeg(
    bytes: &[u8],
    limits: &Limits,
    target: Option<&dyn Fn(u32, u32) -> (u32, u32)>,
) -> Result<Option<Decoded>, ImagingError> {
    let Some((mut decoder, orientation)) = jpeg_header(bytes, limits)? else { return Ok(None) };
    let header = decoder.header();
    let (sw, sh) = (u32::from(header.width), u32::from(header.height));
    if sw == 0 || sh == 0 || header.precision != 8 || header.is_lossless {
        return Ok(None);
    }
    let format = match decoder.jpeg_color_space() {
        ljt::ColorSpace::YCbCr | ljt::ColorSpace::Rgb => ljt::PixelFormat::Rgb,
        ljt::ColorSpace::Grayscale => ljt::PixelFormat::Grayscale,
        _ => return Ok(None),
    };
    if let Some(target) = target {
        let swapped = swaps_axes(orientation);
        let (tw, th) = if swapped { target(sh, sw) } else { target(sw, sh) };
        // Requested size in stored orientation.
        let (rw, rh) = if swapped { (th, tw) } else { (tw, th) };
        // The smallest M/8 scale that still covers the target. 3/4 or 7/8 take about as long
        // as a full decode, but the decoder keeps whole component planes besides its output,
        // so a scaled decode is what keeps a photo's fit under half of Pillow's memory (and
        // the resize after it has fewer rows to read).
        let num = (1..8u32).find(|&m| {
            (u64::from(sw) * u64::from(m)).div_ceil(8) >= u64::from(rw)
                && (u64::from(sh) * u64::from(m)).div_ceil(8) >= u64::from(rh)
        });
        if let Some(num) = num {
            // In lowest terms: libjpeg-turbo-rs takes 4/8 as its own (slower, larger) case
            // rather than as 1/2.
            let common = [4u32, 2, 1].into_iter().find(|g| num % g == 0).unwrap_or(1);
            match ljt::ScalingFactor::try_new(num / common, 8 / common) {
                Ok(scale) => decoder.set_scale(scale),
                Err(_) => return Ok(None),
            }
        }
    }
    decoder.set_output_format(format);
    if target.is_some() {
        // The picture is resized down (or coded again at its size with 4:2:0 chroma), which
        // smooths chroma more than the triangle filter would: libjpeg's merged upsampler
        // (replication fused with the colour conversion) keeps no full-size chroma planes,
        // so a 12 MP 4:2:2 photo's fit peaks at 48 MiB instead of 61, and is quicker.
        decoder.set_merged_upsample(true);
    }
    decoder.set_stop_on_warning(true);
    let Ok(decoded) = decoder.decode_image() else {
        return Ok(None);
    };
    if !decoded.warnings.is_empty() {
        return Ok(None);
    }
    let (w, h) = (u32::try_from(decoded.width), u32::try_from(decoded.height));
    let (Ok(w), Ok(h)) = (w, h) else { return Ok(None) };
    let image = match format {
        ljt::PixelFormat::Grayscale => GrayImage::from_raw(w, h, decoded.data).map(DynamicImage::ImageLuma8),
        _ => RgbImage::from_raw(w, h, decoded.data).map(DynamicImage::ImageRgb8),
    };
    let Some(mut image) = image else { return Ok(None) };
    image.apply_orientation(orientation);
    Ok(Some(Decoded { image, format: ImageFormat::Jpeg, orientation }))
}

/// The format from magic bytes, if it is one we handle.
fn supported_format(bytes: &[u8]) -> Result<ImageFormat, ImagingError> {
    let format = image::guess_format(bytes).map_err(|_| ImagingError::Unsupported { format: "unknown".into() })?;
    if mime_for_format(format).is_none() {
        return Err(ImagingError::Unsupported { format: format!("{format:?}") });
    }
    Ok(format)
}

/// `image::Limits` matching ours. The pixel product cannot be expressed there, so each side is
/// capped at the pixel budget and the allocation cap covers the widest output (RGBA, 16 bit)
/// plus working room for decoders that buffer coefficients or rows.
fn decoder_limits(limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    let side = u32::try_from(limits.max_pixels).unwrap_or(u32::MAX);
    l.max_image_width = Some(side);
    l.max_image_height = Some(side);
    l.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    l
}

fn swaps_axes(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    )
}

/// Maps decoder errors onto ours; `dims` is known once the header was read.
fn map_error(e: ImageError, dims: Option<(u32, u32)>, max_pixels: u64) -> ImagingError {
    match e {
        ImageError::Limits(l) => match dims {
            Some((width, height)) => ImagingError::TooManyPixels { width, height, max: max_pixels },
            // Hit while reading headers (e.g. oversized PNG text chunks): no size to report.
            None => ImagingError::Corrupt(format!("refused by decoder limits: {l}")),
        },
        ImageError::Unsupported(u) => ImagingError::Unsupported { format: u.to_string() },
        ImageError::Encoding(e) => ImagingError::Encode(e.to_string()),
        // Truncated input surfaces as an unexpected EOF from the reader.
        ImageError::IoError(e) => ImagingError::Corrupt(e.to_string()),
        ImageError::Decoding(e) => ImagingError::Corrupt(e.to_string()),
        ImageError::Parameter(e) => ImagingError::Corrupt(e.to_string()),
    }
}
