//! `compress_for_api`: make an input image small enough for a provider's upload limit while
//! changing as little as possible, and never leak metadata.

use super::decode::{decode_full, jpeg_header};
use super::ops::{encode_jpeg_rgb, encode_png, flatten_on_white, resize_encode};
use super::{ImagingError, Limits, jpeg, requant};
use image::metadata::Orientation;
use image::{ImageFormat, RgbImage};

/// The seed bot's quality ladder, best first.
const QUALITIES: [u8; 8] = [85, 80, 75, 70, 65, 60, 55, 50];
/// Each downscale step keeps at most this fraction of each side (the seed's factor).
const DOWNSCALE_STEP: f64 = 0.85;

/// Default upload limit for provider inputs: 4 MiB, the seed bot's limit, which every provider
/// we talk to accepts as a data URI.
pub const API_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Makes `bytes` at most `max_bytes` long for sending to a provider, with no metadata.
///
/// - Input already within `max_bytes`: the same pixels. An upright, complete JPEG is copied
///   without its metadata segments (lossless, no decode; see [`super::strip_metadata`]); PNG,
///   WebP and GIF are decoded and written as PNG (first frame). If that PNG is too big, or the
///   JPEG needs rotating, it continues as below.
/// - An upright grey or YCbCr JPEG over the limit is requantised in the DCT domain to the
///   highest quality of 85, 80, …, 50 that fits, with no pixel decode at all (see
///   `requant::requantize_to_fit`); metadata goes as in the lossless copy.
/// - Otherwise the image is decoded once, turned upright, flattened on white, and encoded as
///   JPEG at the highest quality of 85, 80, …, 50 that fits. The ladder is binary-searched
///   after 85, so at most 4 encodes. If even 50 is too big, the image is shrunk (Lanczos, from
///   the full decode each time) to a size estimated from the last attempt, never more than
///   0.85 per side, until it fits at quality 50.
///
/// Output: JPEG or PNG bytes; [`super::probe`] them for the MIME type.
///
/// Errors: those of [`super::decode`] (limits are checked before decoding), or
/// [`ImagingError::Encode`] when not even a 1×1 JPEG fits `max_bytes`.
pub fn compress_for_api(bytes: &[u8], max_bytes: usize, limits: &Limits) -> Result<Vec<u8>, ImagingError> {
    if bytes.len() > limits.max_bytes {
        return Err(ImagingError::TooLarge { bytes: bytes.len(), max: limits.max_bytes });
    }
    if bytes.len() <= max_bytes {
        if let Some(out) = lossless_jpeg(bytes, limits)? {
            return Ok(out);
        }
    }
    if image::guess_format(bytes).ok() == Some(ImageFormat::Jpeg) {
        if let Some(out) = requant::requantize_to_fit(bytes, max_bytes, &QUALITIES, limits)? {
            return Ok(out);
        }
    }
    let decoded = decode_full(bytes, limits)?;
    if bytes.len() <= max_bytes && decoded.format != ImageFormat::Jpeg {
        let png = encode_png(&decoded.image)?;
        if png.len() <= max_bytes {
            return Ok(png);
        }
    }
    shrink_to_fit(&flatten_on_white(decoded.image), max_bytes)
}

/// [`compress_for_api`] written to `out`. When the answer is the metadata-free copy of the
/// input (a JPEG under the limit), the copy is written as it is made and never exists in
/// memory, so a caller writing a file holds only the input; otherwise the result is made by
/// [`compress_for_api`] and then written.
///
/// Errors: those of [`compress_for_api`], before anything is written; [`ImagingError::Encode`]
/// when `out` fails.
pub fn compress_for_api_to(
    bytes: &[u8],
    max_bytes: usize,
    limits: &Limits,
    out: &mut impl std::io::Write,
) -> Result<(), ImagingError> {
    if bytes.len() > limits.max_bytes {
        return Err(ImagingError::TooLarge { bytes: bytes.len(), max: limits.max_bytes });
    }
    // A dry run first: only a complete file is copied (see `lossless_jpeg`).
    if bytes.len() <= max_bytes
        && lossless_candidate(bytes, limits)?
        && jpeg::strip_segments_to(bytes, &mut std::io::sink())?
    {
        jpeg::strip_segments_to(bytes, out)?;
        return Ok(());
    }
    let made = compress_for_api(bytes, max_bytes, limits)?;
    out.write_all(&made).map_err(|e| ImagingError::Encode(format!("write: {e}")))
}

/// The metadata-free copy of an upright, complete JPEG within the pixel limit; `None` when the
/// pixels must be decoded (rotation, truncation, a header the fast reader cannot parse).
fn lossless_jpeg(bytes: &[u8], limits: &Limits) -> Result<Option<Vec<u8>>, ImagingError> {
    if !lossless_candidate(bytes, limits)? {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(bytes.len());
    // A file cut inside its scan has no EOI; the decoder path fills the rest in (as `decode`
    // does) so the provider gets a whole picture.
    let complete = jpeg::strip_segments_to(bytes, &mut out)?;
    Ok(complete.then_some(out))
}

/// An upright JPEG whose header the fast reader parses, within the pixel limit.
///
/// Errors: [`ImagingError::TooManyPixels`] from the header.
fn lossless_candidate(bytes: &[u8], limits: &Limits) -> Result<bool, ImagingError> {
    if image::guess_format(bytes).ok() != Some(ImageFormat::Jpeg) {
        return Ok(false);
    }
    let Some((_, orientation)) = jpeg_header(bytes, limits)? else { return Ok(false) };
    Ok(orientation == Orientation::NoTransforms)
}

/// JPEG of `rgb` within `max_bytes`: quality ladder first, then downscaling at the lowest
/// quality.
fn shrink_to_fit(rgb: &RgbImage, max_bytes: usize) -> Result<Vec<u8>, ImagingError> {
    let smallest = match best_quality(rgb, max_bytes)? {
        Ok(out) => return Ok(out),
        Err(size) => size,
    };
    let lowest = QUALITIES[QUALITIES.len() - 1];
    let (w, h) = (f64::from(rgb.width()), f64::from(rgb.height()));
    let mut scale = 1.0;
    let mut last = smallest;
    loop {
        // JPEG size grows roughly with the pixel count: aim a little under the limit so one
        // step usually suffices, but never shrink less than the seed's 0.85 per step.
        let estimate = (max_bytes as f64 / last as f64).sqrt() * 0.95;
        scale *= estimate.min(DOWNSCALE_STEP);
        let tw = ((w * scale).round() as u32).max(1);
        let th = ((h * scale).round() as u32).max(1);
        let out = resize_encode(rgb, tw, th, lowest)?;
        if out.len() <= max_bytes {
            return Ok(out);
        }
        if tw == 1 && th == 1 {
            return Err(ImagingError::Encode(format!("even a 1×1 JPEG is over {max_bytes} bytes")));
        }
        last = out.len();
    }
}

/// The highest-quality encoding in [`QUALITIES`] that fits, or the size at the lowest quality.
/// JPEG size falls monotonically with quality, so after trying 85 (which fits in the common
/// "slightly too big" case) the rest is a binary search: at most 4 encodes instead of 8.
fn best_quality(rgb: &RgbImage, max_bytes: usize) -> Result<Result<Vec<u8>, usize>, ImagingError> {
    let first = encode_jpeg_rgb(rgb, QUALITIES[0])?;
    if first.len() <= max_bytes {
        return Ok(Ok(first));
    }
    let (mut lo, mut hi) = (1, QUALITIES.len() - 1);
    let mut best = None;
    let mut lowest_size = first.len();
    while lo <= hi {
        let mid = (lo + hi) / 2;
        let out = encode_jpeg_rgb(rgb, QUALITIES[mid])?;
        if out.len() <= max_bytes {
            best = Some(out);
            hi = mid - 1;
        } else {
            lowest_size = out.len();
            lo = mid + 1;
        }
    }
    Ok(best.ok_or(lowest_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noisy(width: u32, height: u32) -> RgbImage {
        // Deterministic high-entropy pixels so small limits force the ladder and downscaling.
        let mut state = 0x1234_5678_u32;
        RgbImage::from_fn(width, height, |_, _| {
            let mut px = [0u8; 3];
            for c in &mut px {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *c = state.to_le_bytes()[0];
            }
            image::Rgb(px)
        })
    }

    #[test]
    fn written_out_is_the_same_answer() {
        let read = |rel: &str| {
            std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/photos").join(rel))
                .expect("test photo")
        };
        let limits = Limits::default();
        // Under the limit (streamed copy), over it (requantised), cut short (decoded), rotated
        // (decoded and turned), and not a JPEG.
        for (rel, max) in [
            ("iphone6_8mp_gps.jpg", API_MAX_BYTES),
            ("iphone6_8mp_gps.jpg", 300_000),
            ("corrupt_truncated_50pct.jpg", API_MAX_BYTES),
            ("canon_sx60_orient6_gpsifd.jpg", API_MAX_BYTES),
            ("alpha_dice_rgba.png", API_MAX_BYTES),
        ] {
            let bytes = read(rel);
            let mut written = Vec::new();
            compress_for_api_to(&bytes, max, &limits, &mut written).expect("compresses");
            assert_eq!(written, compress_for_api(&bytes, max, &limits).expect("compresses"), "{rel} at {max}");
        }
        // Refused before anything is written.
        let mut written = Vec::new();
        let tiny = Limits { max_bytes: 10, ..Limits::default() };
        assert!(compress_for_api_to(&read("iphone6_8mp_gps.jpg"), API_MAX_BYTES, &tiny, &mut written).is_err());
        assert!(written.is_empty());
    }

    #[test]
    fn ladder_picks_the_best_quality_that_fits() {
        let rgb = noisy(128, 96);
        let sizes: Vec<usize> = QUALITIES.iter().map(|&q| encode_jpeg_rgb(&rgb, q).expect("encodes").len()).collect();
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "sizes fall with quality: {sizes:?}");
        for (i, &limit) in sizes.iter().enumerate() {
            let out = best_quality(&rgb, limit).expect("encodes").expect("fits");
            assert_eq!(out.len(), sizes[i], "limit {limit} should pick q{}", QUALITIES[i]);
        }
        assert_eq!(best_quality(&rgb, sizes[7] - 1).expect("encodes"), Err(sizes[7]));
    }

    #[test]
    fn downscales_when_the_lowest_quality_is_too_big() {
        let rgb = noisy(256, 256);
        let q50 = encode_jpeg_rgb(&rgb, 50).expect("encodes").len();
        let out = shrink_to_fit(&rgb, q50 / 3).expect("fits");
        assert!(out.len() <= q50 / 3);
        let img = image::load_from_memory(&out).expect("valid JPEG");
        assert!(img.width() < 256 && img.width() > 64, "{}", img.width());
        assert!(shrink_to_fit(&rgb, 10).is_err(), "nothing fits in 10 bytes");
    }
}
