//! JPEG encoding: libjpeg-turbo-rs's `compress` writes every JPEG we make from pixels. Big
//! pictures are coded in strips on all cores and joined with restart markers ([`strips`]).

use super::{ImagingError, strips};
use image::{GrayImage, RgbImage};
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
    check_size(width, height)?;
    let grey = format == ljt::PixelFormat::Grayscale;
    let (subsampling, mcu) = if grey { (ljt::Subsampling::S444, 8) } else { (ljt::Subsampling::S420, 16) };
    let quality = quality.clamp(1, 100);
    let (w, h) = (width as usize, height as usize);
    let ranges = strips::mcu_row_ranges(h.div_ceil(mcu), strips::strip_count(width, height));
    if ranges.len() > 1 {
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
    check_size(width, height)?;
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

/// Refuses a size a JPEG frame cannot hold (16-bit sides, none of them 0).
fn check_size(width: u32, height: u32) -> Result<(), ImagingError> {
    if width == 0 || height == 0 || width > u32::from(u16::MAX) || height > u32::from(u16::MAX) {
        return Err(ImagingError::Encode(format!("{width}×{height} is not a valid JPEG size")));
    }
    Ok(())
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
