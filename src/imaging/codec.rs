//! The JPEG fast paths: libjpeg-turbo-rs (a pure-Rust port of libjpeg-turbo with SIMD kernels)
//! encodes every JPEG we write and decodes every JPEG it can, optionally DCT-scaled (1/8 … 7/8)
//! when the output will be shrunk anyway. Whatever it refuses (CMYK, 12-bit, truncated or
//! corrupt streams) goes through the generic `image` decoder, which is more lenient and gives
//! the precise error.

use super::decode::{Decoded, decode_full, swaps_axes};
use super::{ImagingError, Limits, strips};
use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};
use libjpeg_turbo_rs as ljt;

/// Encodes 8-bit RGB as a baseline JPEG with 4:2:0 chroma (what libjpeg and Pillow use by
/// default, so sizes compare), the IJG quality-scaled Annex K tables, standard Huffman tables,
/// and no metadata segments besides JFIF. Pictures of 2 MP and more are coded in strips on
/// all cores and joined with restart markers (see `strips`); the coefficients are the same.
///
/// Errors: [`ImagingError::Encode`] for images wider or taller than 65535 px (JPEG's limit).
pub(super) fn encode_rgb(rgb: &RgbImage, quality: u8) -> Result<Vec<u8>, ImagingError> {
    encode_raw(rgb.as_raw(), rgb.width(), rgb.height(), ljt::PixelFormat::Rgb, quality)
}

/// Like [`encode_rgb`] for 8-bit grey.
pub(super) fn encode_grey(grey: &GrayImage, quality: u8) -> Result<Vec<u8>, ImagingError> {
    encode_raw(grey.as_raw(), grey.width(), grey.height(), ljt::PixelFormat::Grayscale, quality)
}

fn encode_raw(
    data: &[u8],
    width: u32,
    height: u32,
    format: ljt::PixelFormat,
    quality: u8,
) -> Result<Vec<u8>, ImagingError> {
    if width == 0 || height == 0 || width > u32::from(u16::MAX) || height > u32::from(u16::MAX) {
        return Err(ImagingError::Encode(format!("{width}×{height} is not a valid JPEG size")));
    }
    let grey = format == ljt::PixelFormat::Grayscale;
    let (subsampling, mcu) = if grey { (ljt::Subsampling::S444, 8) } else { (ljt::Subsampling::S420, 16) };
    let quality = quality.clamp(1, 100);
    let (w, h) = (width as usize, height as usize);
    let ranges = strips::mcu_row_ranges(h.div_ceil(mcu), strips::strip_count(width, height));
    if ranges.len() > 1 {
        // Big pictures: strips coded on all cores, joined with restart markers.
        let row_bytes = w * format.bytes_per_pixel();
        let mcus_per_strip = ranges[0].len() * w.div_ceil(mcu);
        let code = |rows: &std::ops::Range<usize>| {
            let (top, bottom) = (rows.start * mcu, (rows.end * mcu).min(h));
            let pixels = data.get(top * row_bytes..bottom * row_bytes)?;
            ljt::compress(pixels, w, bottom - top, format, quality, subsampling).ok()
        };
        if let Some(out) = strips::code_in_parallel(&ranges, height as u16, mcus_per_strip, code) {
            return Ok(out);
        }
    }
    ljt::compress(data, w, h, format, quality, subsampling).map_err(|e| ImagingError::Encode(format!("JPEG: {e}")))
}

/// Encodes a `width × height` RGB picture that is produced a band of rows at a time:
/// `band(rows, out)` fills `out` (`rows.len() × width × 3` bytes) with those rows. Bands of
/// [`BAND_MCU_ROWS`] MCU rows are made and coded on all cores, at most one per core at a time,
/// and joined with restart markers ([`strips`]), so the whole picture never exists as pixels.
///
/// Errors: [`ImagingError::Encode`] for a size JPEG cannot hold or when a band fails.
pub(super) fn encode_rgb_bands(
    width: u32,
    height: u32,
    quality: u8,
    band: impl Fn(std::ops::Range<u32>, &mut [u8]) -> Result<(), ImagingError> + Sync,
) -> Result<Vec<u8>, ImagingError> {
    if width == 0 || height == 0 || width > u32::from(u16::MAX) || height > u32::from(u16::MAX) {
        return Err(ImagingError::Encode(format!("{width}×{height} is not a valid JPEG size")));
    }
    let (w, h) = (width as usize, height as usize);
    // The restart interval (MCUs per band) must fit DRI's 16 bits.
    let mcu_rows_per_band = (usize::from(u16::MAX) / w.div_ceil(16)).clamp(1, BAND_MCU_ROWS);
    let ranges = strips::mcu_row_ranges(h.div_ceil(16), h.div_ceil(16).div_ceil(mcu_rows_per_band));
    let mcus_per_strip = ranges[0].len() * w.div_ceil(16);
    let failure = std::sync::Mutex::new(None);
    let coded = strips::code_in_turn(ranges.len(), |i| {
        let (top, bottom) = (ranges[i].start * 16, (ranges[i].end * 16).min(h));
        let mut pixels = vec![0u8; (bottom - top) * w * 3];
        let made = band(top as u32..bottom as u32, &mut pixels).and_then(|()| {
            ljt::compress(
                &pixels,
                w,
                bottom - top,
                ljt::PixelFormat::Rgb,
                quality.clamp(1, 100),
                ljt::Subsampling::S420,
            )
            .map_err(|e| ImagingError::Encode(format!("JPEG: {e}")))
        });
        made.map_err(|e| failure.lock().map(|mut f| *f = Some(e))).ok()
    });
    let failed = || failure.lock().ok().and_then(|mut f| f.take());
    let coded = coded.ok_or_else(|| failed().unwrap_or_else(|| ImagingError::Encode("a band failed".into())))?;
    strips::join(&coded, height as u16, mcus_per_strip)
        .ok_or_else(|| ImagingError::Encode("JPEG bands do not join".into()))
}

/// MCU rows (16 px each at 4:2:0) per band of [`encode_rgb_bands`]: 128 rows of a 2560 px
/// picture are 1 MB of pixels, and 15 bands keep two cores evenly busy.
const BAND_MCU_ROWS: usize = 8;

/// Like [`decode_full`], but a JPEG may come out DCT-scaled (M/8, M = 1…7) when that still
/// leaves at least `target(displayed_width, displayed_height)` pixels (the size the caller
/// will resize to, never up), and its chroma is upsampled by replication. Returns the pixels
/// and that target, evaluated on the full-size picture, so the caller's output size does not
/// depend on which scale the decoder took.
///
/// Errors: those of [`decode_full`].
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
    let mut decoded = None;
    if bytes.len() <= limits.max_bytes && image::guess_format(bytes).ok() == Some(ImageFormat::Jpeg) {
        decoded = decode_jpeg(bytes, limits, Some(&target))?;
    }
    let decoded = match decoded {
        Some(decoded) => decoded,
        None => decode_full(bytes, limits)?,
    };
    let size = match asked.get() {
        Some(size) => size,
        None => target(decoded.image.width(), decoded.image.height()),
    };
    Ok((decoded, size))
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
        // Output buffer (RGB) plus the decoder's own working rows, with room to spare.
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
