//! Header probing and limited decoding. The only place that turns untrusted bytes into pixels.

use super::{ImageInfo, ImagingError, Limits, mime_for_format};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader};
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

/// Decodes untrusted bytes into upright pixels.
///
/// The byte size and the stored `width × height` are checked against `limits` from the header
/// before any pixel buffer exists, and the decoder itself runs under matching `image::Limits`.
/// The EXIF orientation (values 2–8; 0, 1 and invalid values mean "as stored") is applied.
/// Animated GIF and WebP yield their first frame.
///
/// Errors: [`ImagingError::TooLarge`], [`ImagingError::TooManyPixels`],
/// [`ImagingError::Unsupported`], [`ImagingError::Corrupt`].
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<DynamicImage, ImagingError> {
    decode_full(bytes, limits).map(|d| d.image)
}

pub(super) fn decode_full(bytes: &[u8], limits: &Limits) -> Result<Decoded, ImagingError> {
    if bytes.len() > limits.max_bytes {
        return Err(ImagingError::TooLarge { bytes: bytes.len(), max: limits.max_bytes });
    }
    let format = supported_format(bytes)?;
    if format == ImageFormat::Jpeg {
        if let Some(decoded) = super::codec::decode_jpeg(bytes, limits, None)? {
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

pub(super) fn swaps_axes(o: Orientation) -> bool {
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
