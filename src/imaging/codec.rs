//! The fast paths around the generic decoder: a SIMD JPEG encoder (`jpeg-encoder`, several
//! times faster than the `image` crate's) and DCT-scaled JPEG decoding (`jpeg-decoder`), which
//! skips most of the IDCT and colour conversion work when the output will be shrunk anyway.

use super::decode::{Decoded, decode_full, swaps_axes};
use super::{ImagingError, Limits};
use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};
use jpeg_encoder::{ColorType, Encoder, SamplingFactor};

/// Encodes 8-bit RGB as a baseline JPEG with 4:2:0 chroma (what libjpeg and Pillow use by
/// default, so sizes compare) and no metadata segments.
///
/// Errors: [`ImagingError::Encode`] for images wider or taller than 65535 px (JPEG's limit).
pub(super) fn encode_rgb(rgb: &RgbImage, quality: u8) -> Result<Vec<u8>, ImagingError> {
    encode_raw(rgb.as_raw(), rgb.width(), rgb.height(), ColorType::Rgb, quality)
}

/// Like [`encode_rgb`] for 8-bit grey.
pub(super) fn encode_grey(grey: &GrayImage, quality: u8) -> Result<Vec<u8>, ImagingError> {
    encode_raw(grey.as_raw(), grey.width(), grey.height(), ColorType::Luma, quality)
}

fn encode_raw(data: &[u8], width: u32, height: u32, color: ColorType, quality: u8) -> Result<Vec<u8>, ImagingError> {
    let too_big = || ImagingError::Encode(format!("{width}×{height} is too large for JPEG"));
    let w = u16::try_from(width).map_err(|_| too_big())?;
    let h = u16::try_from(height).map_err(|_| too_big())?;
    // Compressed output is rarely above a bit per pixel at these qualities; avoid regrowing.
    let mut out = Vec::with_capacity(data.len() / 8 + 1024);
    let mut encoder = Encoder::new(&mut out, quality.clamp(1, 100));
    encoder.set_sampling_factor(SamplingFactor::F_2_2);
    encoder.encode(data, w, h, color).map_err(|e| ImagingError::Encode(format!("JPEG: {e}")))?;
    Ok(out)
}

/// Decodes upright pixels, at least as many as `target(displayed_width, displayed_height)`
/// returns (the output size the caller will resize to; never more than the source), using DCT scaling (1/2, 1/4, 1/8) for JPEGs where that still
/// leaves enough pixels. Anything else, including every JPEG the scaled decoder cannot read
/// (CMYK, truncated, arithmetic coding), goes through the generic [`decode_full`], so the
/// result and the errors are the same as there, only the pixel count may be lower.
pub(super) fn decode_at_least(
    bytes: &[u8],
    limits: &Limits,
    target: impl Fn(u32, u32) -> (u32, u32),
) -> Result<Decoded, ImagingError> {
    if image::guess_format(bytes).ok() == Some(ImageFormat::Jpeg) && bytes.len() <= limits.max_bytes {
        if let Some(decoded) = decode_jpeg_scaled(bytes, limits, &target) {
            return Ok(decoded);
        }
    }
    decode_full(bytes, limits)
}

/// `None` when scaling would not help or the scaled decoder fails; the caller then decodes
/// fully (that decoder is more lenient and gives the precise error).
fn decode_jpeg_scaled(bytes: &[u8], limits: &Limits, target: &dyn Fn(u32, u32) -> (u32, u32)) -> Option<Decoded> {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    let (sw, sh) = (u32::from(info.width), u32::from(info.height));
    if sw == 0 || sh == 0 || u64::from(sw) * u64::from(sh) > limits.max_pixels {
        return None;
    }
    let orientation = decoder.exif_data().and_then(Orientation::from_exif_chunk).unwrap_or(Orientation::NoTransforms);
    let swapped = swaps_axes(orientation);
    let (tw, th) = if swapped { target(sh, sw) } else { target(sw, sh) };
    // Requested size in stored orientation.
    let (rw, rh) = if swapped { (th, tw) } else { (tw, th) };
    // Only worth it when at least a factor 2 is possible on both axes.
    if rw.saturating_mul(2) > sw || rh.saturating_mul(2) > sh {
        return None;
    }
    // jpeg-decoder picks the smallest scale that reaches the request in *one* axis; ask for
    // the larger relative size on both so that neither axis ends up below its minimum.
    let need = (f64::from(rw) / f64::from(sw)).max(f64::from(rh) / f64::from(sh));
    let req_w = u16::try_from(((f64::from(sw) * need).ceil() as u64).min(u64::from(u16::MAX))).ok()?;
    let req_h = u16::try_from(((f64::from(sh) * need).ceil() as u64).min(u64::from(u16::MAX))).ok()?;
    let (ow, oh) = decoder.scale(req_w, req_h).ok()?;
    let (ow, oh) = (u32::from(ow), u32::from(oh));
    if ow < rw || oh < rh {
        return None;
    }
    decoder.set_max_decoding_buffer_size(usize::try_from(limits.max_pixels.saturating_mul(4)).ok()?);
    let pixels = decoder.decode().ok()?;
    let info = decoder.info()?;
    let mut image = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => DynamicImage::ImageRgb8(RgbImage::from_raw(ow, oh, pixels)?),
        jpeg_decoder::PixelFormat::L8 => DynamicImage::ImageLuma8(GrayImage::from_raw(ow, oh, pixels)?),
        // CMYK needs the Adobe transform handling of the generic decoder; L16 is not baseline.
        _ => return None,
    };
    image.apply_orientation(orientation);
    Some(Decoded { image, format: ImageFormat::Jpeg, orientation })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_jpeg_decodes_to_the_same_size() {
        let rgb = RgbImage::from_fn(33, 17, |x, y| image::Rgb([(x * 7) as u8, (y * 13) as u8, 90]));
        let out = encode_rgb(&rgb, 85).expect("encodes");
        let back = image::load_from_memory(&out).expect("decodes");
        assert_eq!((back.width(), back.height()), (33, 17));
        assert!(encode_grey(&GrayImage::new(70_000, 1), 80).is_err());
    }
}
