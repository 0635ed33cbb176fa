//! Pixels from the quantised DCT coefficients that [`Scan`] read on all cores, with
//! libjpeg-turbo-rs's own kernels and what its decoder does by default (ISLOW inverse DCT,
//! "fancy" triangular chroma upsampling, YCbCr → RGB as JFIF defines it), so the pixels are
//! a whole-picture decode's (within one level: the upsampling is the same filter, run on
//! rows we hand it). Entropy decoding is most of a JPEG decode and libjpeg does it on one
//! core; this way a picture that is drawn on and encoded again (the "Add text" tool) is
//! decoded on all of them.
//!
//! Handled layouts: three components with chroma sampled once per MCU and luma 1×1 (4:4:4),
//! 2×1 (4:2:2) or 2×2 (4:2:0), i.e. every camera and encoder default.

use super::requant::{self, RowPainter};
use super::scan::{Kept, Scan};
use super::shrink::{self, Source};
use super::{ImagingError, Limits, strips};
use image::RgbImage;
use libjpeg_turbo_rs as ljt;
use std::ops::Range;
use std::sync::{Mutex, OnceLock};

/// Luma (h, v) sampling when the layout is one [`decode_rows`] handles.
pub(super) fn luma_sampling(template: &ljt::JpegCoefficients) -> Option<(usize, usize)> {
    let [y, cb, cr] = template.components.as_slice() else { return None };
    if (cb.h_sampling, cb.v_sampling, cr.h_sampling, cr.v_sampling) != (1, 1, 1, 1) {
        return None;
    }
    matches!((y.h_sampling, y.v_sampling), (1, 1) | (2, 1) | (2, 2))
        .then_some((usize::from(y.h_sampling), usize::from(y.v_sampling)))
}

thread_local! {
    /// Y, Cb, Cr samples of a band coded from planes, and Cb, Cr brought to 4:2:0.
    static PLANES: std::cell::RefCell<([Vec<u8>; 3], [Vec<u8>; 2])> = std::cell::RefCell::new(Default::default());
    /// Y, Cb, Cr samples of the rows in flight on this thread, reused: fresh pages cost a page
    /// fault each.
    static SAMPLES: std::cell::RefCell<[Vec<u8>; 3]> = std::cell::RefCell::new(Default::default());
}

/// Frees this thread's scratch buffers. The helper threads end with their work; the calling
/// thread (a pool thread in the bot) would otherwise hold megabytes until it ends.
fn release_scratch() {
    PLANES.with(|cell| {
        if let Ok(mut planes) = cell.try_borrow_mut() {
            *planes = Default::default();
        }
    });
    SAMPLES.with(|cell| {
        if let Ok(mut samples) = cell.try_borrow_mut() {
            *samples = Default::default();
        }
    });
}

/// An upright 8-bit YCbCr JPEG of a layout [`luma_sampling`] takes, with `painter`'s rows
/// drawn on, encoded at `quality` (4:2:0, like `codec::encode_rgb`): the scan is read on all
/// cores ([`Scan`]) and the picture made and coded in bands of 128 rows on all cores
/// (joined with restart markers, [`strips`]). Bands clear of the painted rows are decoded
/// and coded on their own, first; the painted rows are decoded as one region, painted once
/// (a plate's blur and the automatic colour look at all of it) and coded last, so the other
/// cores are coding while one paints. The whole picture never exists as pixels.
///
/// `Ok(None)` when this path does not apply (another format, colour space, layout, an EXIF
/// orientation to apply, a JPEG [`Scan::read`] refuses, or damage): the caller decodes the
/// usual way, which also words the errors.
///
/// Errors: [`ImagingError::TooLarge`] and [`ImagingError::TooManyPixels`] from the byte count
/// and the header, before anything is decoded.
pub(super) fn paint_upright(
    bytes: &[u8],
    limits: &Limits,
    quality: u8,
    painter: &mut (dyn RowPainter + Send),
) -> Result<Option<Vec<u8>>, ImagingError> {
    if bytes.len() > limits.max_bytes {
        return Err(ImagingError::TooLarge { bytes: bytes.len(), max: limits.max_bytes });
    }
    if image::guess_format(bytes).ok() != Some(image::ImageFormat::Jpeg) || requant::eligible(bytes, limits)?.is_none()
    {
        return Ok(None);
    }
    let cores = strips::cores();
    // All 64 coefficients, in natural order: what the band coder's inverse DCT reads.
    let Some(scan) = Scan::read_kept(bytes, cores, Kept::TopLeft(8)).filter(|s| luma_sampling(s.template()).is_some())
    else {
        return Ok(None);
    };
    let Some(sources) = shrink::sources(&scan, 8) else { return Ok(None) };
    let (width, height) = (usize::from(scan.template().width), usize::from(scan.template().height));
    let (top, bottom) = painter.rows(width as u32, height as u32);
    let (top, bottom) = (top as usize, (bottom as usize).min(height));
    // Output bands of whole 16-row MCUs (4:2:0), each within DRI's 16-bit interval. Source
    // MCU rows are 8 or 16 pixels high, so every band is whole source MCU rows too.
    let mcus_across = width.div_ceil(16);
    let band_mcu_rows = (usize::from(u16::MAX) / mcus_across).clamp(1, 8);
    let band_h = band_mcu_rows * 16;
    let count = height.div_ceil(band_h);
    let touches = |i: usize| top < bottom && i * band_h < bottom && top < (i + 1) * band_h;
    let painted_bands: Vec<usize> = (0..count).filter(|&i| touches(i)).collect();
    let region = match (painted_bands.first(), painted_bands.last()) {
        (Some(&first), Some(&last)) => first * band_h..((last + 1) * band_h).min(height),
        _ => 0..0,
    };
    let order: Vec<usize> = (0..count).filter(|&i| !touches(i)).chain(painted_bands.iter().copied()).collect();
    let mcu_h = scan.mcu_height();
    let painted: OnceLock<Option<RgbImage>> = OnceLock::new();
    let painter = Mutex::new(painter);
    // The painted region: decoded on all cores and painted once.
    let paint_region = || {
        let mut rgb = decode_rows(&scan, region.start / mcu_h..region.end.div_ceil(mcu_h), cores)?;
        painter.lock().ok()?.paint(&mut rgb, u32::try_from(region.start).ok()?);
        Some(rgb)
    };
    let code_band = |i: usize| {
        let rows = i * band_h..((i + 1) * band_h).min(height);
        let code = |pixels: &[u8]| {
            let quality = quality.clamp(1, 100);
            ljt::compress(pixels, width, rows.len(), ljt::PixelFormat::Rgb, quality, ljt::Subsampling::S420).ok()
        };
        if touches(i) {
            let region_pixels = painted.get_or_init(paint_region).as_ref()?;
            let row_bytes = width * 3;
            code(
                region_pixels
                    .as_raw()
                    .get((rows.start - region.start) * row_bytes..(rows.end - region.start) * row_bytes)?,
            )
        } else {
            code_planes(&scan, &sources, rows, quality.clamp(1, 100))
        }
    };
    // Bands clear of the caption first, in turn on every core; this thread paints the region
    // before it joins in, so painting overlaps coding.
    let lead = || {
        if !region.is_empty() {
            painted.get_or_init(paint_region);
        }
    };
    let coded = strips::code_in_turn_after(count, lead, |n| code_band(*order.get(n)?));
    release_scratch();
    let Some(coded) = coded else { return Ok(None) };
    let mut parts = vec![Vec::new(); count];
    for (part, &i) in coded.into_iter().zip(&order) {
        parts[i] = part;
    }
    Ok(strips::join(&parts, u16::try_from(height).unwrap_or(u16::MAX), band_mcu_rows * mcus_across))
}

/// Pixel rows `rows` (whole MCU rows of the source) coded from their Y, Cb and Cr samples as
/// they are: no chroma upsampling, colour conversion and back, or chroma averaging, which for
/// rows nothing is drawn on would only cost time and blur chroma a little. Chroma sampled at
/// full resolution across or down (4:2:2, 4:4:4) is averaged 2:1 that way, to the 4:2:0 of
/// `codec::encode_rgb`. The JPEG is `ljt::compress_raw`'s, whose header is `ljt::compress`'s
/// (the painted bands), so the bands join.
fn code_planes(scan: &Scan, sources: &[Source; 3], rows: Range<usize>, quality: u8) -> Option<Vec<u8>> {
    let mcu_h = scan.mcu_height();
    PLANES.with(|cell| {
        let mut held = cell.try_borrow_mut().ok()?;
        let (samples, halved) = &mut *held;
        let counts = shrink::samples_of(scan, 8, sources, rows.start / mcu_h..rows.end.div_ceil(mcu_h), samples)?;
        let width = sources[0].width;
        if counts[0] != rows.len() {
            return None;
        }
        let (cw, ch) = (width.div_ceil(2), rows.len().div_ceil(2));
        // Source chroma samples per output chroma sample, across and down (1 or 2).
        let (h_max, v_max) = (sources.iter().map(|s| s.h).max()?, sources.iter().map(|s| s.v).max()?);
        let factors = sources.map(|s| (2 * s.h / h_max, 2 * s.v / v_max));
        for c in 1..3 {
            let (fx, fy) = factors[c];
            if (fx, fy) == (1, 1) {
                continue;
            }
            let (sw, sh) = (sources[c].width, counts[c]);
            let (src, dst) = (&samples[c], &mut halved[c - 1]);
            dst.resize(cw * ch, 0);
            if (fx, fy) == (1, 2) && sw == cw {
                // 4:2:2, every camera's other layout: pairs of rows, in a loop that vectorises.
                for (y, out) in dst.chunks_exact_mut(cw).enumerate() {
                    let (a, b) = (src.get(2 * y * sw..)?, src.get((2 * y + 1).min(sh - 1) * sw..)?);
                    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                        *o = ((u16::from(a) + u16::from(b) + 1) >> 1) as u8;
                    }
                }
                continue;
            }
            let n = (fx * fy) as u16;
            for y in 0..ch {
                for x in 0..cw {
                    let mut sum = n / 2;
                    for dy in 0..fy {
                        let row = (y * fy + dy).min(sh - 1) * sw;
                        for dx in 0..fx {
                            sum += u16::from(src[row + (x * fx + dx).min(sw - 1)]);
                        }
                    }
                    dst[y * cw + x] = (sum / n) as u8;
                }
            }
        }
        let plane = |c: usize| -> &[u8] { if factors[c] == (1, 1) { &samples[c] } else { &halved[c - 1] } };
        ljt::compress_raw(
            &[&samples[0], plane(1), plane(2)],
            &[width, cw, cw],
            &[rows.len(), ch, ch],
            width,
            rows.len(),
            quality,
            ljt::Subsampling::S420,
        )
        .ok()
    })
}

/// The RGB pixels of MCU rows `rows` (full frame width; the frame's last MCU row only down
/// to the frame's bottom), decoded on up to `cores` cores. Chroma is upsampled with the rows
/// on either side of the band, so the pixels are a whole-picture decode's.
///
/// `None` for a layout [`luma_sampling`] refuses or an empty range.
pub(super) fn decode_rows(scan: &Scan, rows: Range<usize>, cores: usize) -> Option<RgbImage> {
    let t = scan.template();
    luma_sampling(t)?;
    let (width, height) = (usize::from(t.width), usize::from(t.height));
    let mcu_h = scan.mcu_height();
    let rows = rows.start..rows.end.min(scan.mcu_rows());
    let top = rows.start * mcu_h;
    let bottom = (rows.end * mcu_h).min(height);
    if bottom <= top {
        return None;
    }
    let mut rgb = vec![0u8; (bottom - top) * width * 3];
    let per_part = rows.len().div_ceil(cores.max(1));
    if per_part >= rows.len() {
        // One part: on this thread, whose scratch buffers are warm (a new thread's are not).
        decode_part(scan, rows, &mut rgb)?;
        return RgbImage::from_raw(u32::try_from(width).ok()?, u32::try_from(bottom - top).ok()?, rgb);
    }
    let ok = std::thread::scope(|scope| {
        let handles: Vec<_> = rgb
            .chunks_mut(per_part * mcu_h * width * 3)
            .enumerate()
            .map(|(i, out)| {
                let first = rows.start + i * per_part;
                scope.spawn(move || decode_part(scan, first..(first + per_part).min(rows.end), out))
            })
            .collect();
        handles.into_iter().all(|h| h.join().ok().flatten().is_some())
    });
    if !ok {
        return None;
    }
    RgbImage::from_raw(u32::try_from(width).ok()?, u32::try_from(bottom - top).ok()?, rgb)
}

/// [`decode_rows`] for one part, into `out` (its rows × width × 3 bytes), a few MCU rows at a
/// time so the samples in flight stay small and their buffers are reused.
fn decode_part(scan: &Scan, rows: Range<usize>, out: &mut [u8]) -> Option<()> {
    const AT_ONCE: usize = 8;
    let t = scan.template();
    let sources = shrink::sources(scan, 8)?;
    let row_bytes = usize::from(t.width) * 3 * scan.mcu_height();
    SAMPLES.with(|cell| {
        let mut samples = cell.try_borrow_mut().ok()?;
        for (piece, first) in out.chunks_mut(AT_ONCE * row_bytes).zip((rows.start..rows.end).step_by(AT_ONCE)) {
            decode_piece(scan, &sources, first..(first + AT_ONCE).min(rows.end), piece, &mut samples)?;
        }
        Some(())
    })
}

/// Decodes MCU rows `rows` into `out`, with `samples` as scratch.
fn decode_piece(
    scan: &Scan,
    sources: &[Source; 3],
    rows: Range<usize>,
    out: &mut [u8],
    samples: &mut [Vec<u8>; 3],
) -> Option<()> {
    let t = scan.template();
    let (h_max, v_max) = luma_sampling(t)?;
    let (width, height) = (usize::from(t.width), usize::from(t.height));
    let mcu_h = scan.mcu_height();
    // One MCU row of context on either side, for the chroma upsampling at the band's edges.
    let context = rows.start.saturating_sub(1)..(rows.end + 1).min(scan.mcu_rows());
    // Every component's samples over the context rows, `sources[c].width` across.
    shrink::samples_of(scan, 8, sources, context.clone(), samples)?;
    let planes: [(&Vec<u8>, usize); 3] = [0, 1, 2].map(|c| (&samples[c], sources[c].width));
    let simd = ljt::simd::detect();
    let chroma_width = width.div_ceil(h_max);
    // Chroma rows that hold picture (the rest of the last block row is padding).
    let chroma_rows = height.div_ceil(v_max);
    let context_top = context.start * mcu_h;
    let mut cb_row = vec![0u8; chroma_width * 2 + 16];
    let mut cr_row = vec![0u8; chroma_width * 2 + 16];
    let first = rows.start * mcu_h;
    for (i, rgb) in out.chunks_exact_mut(width * 3).enumerate() {
        let y = first + i;
        if y >= height {
            break;
        }
        let local = y - context_top;
        let (luma, luma_stride) = &planes[0];
        let luma_row = luma.get(local * luma_stride..local * luma_stride + width)?;
        for (component, dst) in [(1, &mut cb_row), (2, &mut cr_row)] {
            let (plane, stride) = &planes[component];
            let row_of = |global: usize| {
                let at = global.checked_sub(context_top / v_max)? * stride;
                plane.get(at..at + chroma_width)
            };
            let cy = y / v_max;
            let cur = row_of(cy)?;
            match (h_max, v_max) {
                (1, _) => dst[..width].copy_from_slice(&cur[..width]),
                (2, 1) => simd.fancy_upsample_h2v1(cur, chroma_width, dst),
                _ => {
                    // The nearer of the chroma rows above and below (T.81 leaves upsampling
                    // to the decoder; this is libjpeg's h2v2 "fancy" filter), the picture's
                    // edge rows standing in for rows beyond it.
                    let neighbour = if y % 2 == 0 { cy.saturating_sub(1) } else { (cy + 1).min(chroma_rows - 1) };
                    ljt::decode::upsample::fancy_h2v2_row(cur, row_of(neighbour)?, dst, chroma_width);
                }
            }
        }
        simd.ycbcr_to_rgb_row(luma_row, &cb_row[..width], &cr_row[..width], rgb, width);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo() -> Vec<u8> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/bench/heavy_4000x3000_q95.jpg");
        std::fs::read(path).expect("bench photo")
    }

    fn reference_rows(bytes: &[u8], top: usize, bottom: usize) -> Vec<u8> {
        let mut decoder = ljt::Decoder::new(bytes).expect("header");
        decoder.set_output_format(ljt::PixelFormat::Rgb);
        let image = decoder.decode_image().expect("decode");
        image.data[top * image.width * 3..bottom * image.width * 3].to_vec()
    }

    #[test]
    fn decoded_rows_are_the_whole_picture_decode() {
        let bytes = photo();
        let scan = Scan::read_kept(&bytes, 2, Kept::TopLeft(8)).expect("parallel read");
        let mcu_h = scan.mcu_height();
        for rows in [0..3, 40..77, scan.mcu_rows() - 5..scan.mcu_rows()] {
            let band = decode_rows(&scan, rows.clone(), 2).expect("band");
            let reference = reference_rows(&bytes, rows.start * mcu_h, rows.start * mcu_h + band.height() as usize);
            let off = band.as_raw().iter().zip(&reference).filter(|(a, b)| a.abs_diff(**b) > 1).count();
            assert_eq!(off, 0, "rows {rows:?}: {off} samples differ by more than 1");
        }
    }

    /// Paints a bar over rows `[top, bottom)` in a colour no photo region has.
    struct Bar(u32, u32);

    impl RowPainter for Bar {
        fn rows(&mut self, _width: u32, _height: u32) -> (u32, u32) {
            (self.0, self.1)
        }
        fn paint(&mut self, band: &mut RgbImage, offset: u32) {
            for y in self.0.max(offset)..self.1.min(offset + band.height()) {
                for x in 0..band.width() {
                    band.put_pixel(x, y - offset, image::Rgb([255, 0, 255]));
                }
            }
        }
    }

    fn decoded(jpeg: &[u8]) -> Vec<u8> {
        let mut decoder = ljt::Decoder::new(jpeg).expect("header");
        decoder.set_output_format(ljt::PixelFormat::Rgb);
        decoder.decode_image().expect("decode").data
    }

    #[test]
    fn painting_in_bands_is_painting_the_whole_decode() {
        painted_in_bands_like_the_whole_decode(&photo(), 4000, 3000, 0.3);
    }

    #[test]
    fn painting_in_bands_a_4_2_2_photo_with_restart_markers() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/testdata/photos/large_olympus_ep3_12mp.jpg");
        // Its chroma is averaged 2:1 down from the source's own samples; the reference averages
        // the horizontally upsampled ones, which blurs a little more.
        painted_in_bands_like_the_whole_decode(&std::fs::read(path).expect("photo"), 4032, 3024, 0.5);
    }

    /// Paints a bar with [`paint_upright`] and checks the JPEG against decode → paint → one
    /// encode of the whole picture: at most `max_mean` apart on average per sample.
    fn painted_in_bands_like_the_whole_decode(bytes: &[u8], width: usize, height: usize, max_mean: f64) {
        // Rows that start and end inside MCU rows and span several output bands.
        let (top, bottom) = (1000, 1701);
        let out = paint_upright(bytes, &Limits::default(), 90, &mut Bar(top, bottom)).expect("ok").expect("this path");
        // The reference: the whole picture decoded, painted, and encoded in one go.
        let mut whole = RgbImage::from_raw(width as u32, height as u32, decoded(bytes)).expect("size");
        Bar(top, bottom).paint(&mut whole, 0);
        let reference = ljt::compress(whole.as_raw(), width, height, ljt::PixelFormat::Rgb, 90, ljt::Subsampling::S420)
            .expect("encode");
        let (ours, theirs) = (decoded(&out), decoded(&reference));
        assert_eq!(ours.len(), theirs.len());
        let total: u64 = ours.iter().zip(&theirs).map(|(a, b)| u64::from(a.abs_diff(*b))).sum();
        let mean = total as f64 / ours.len() as f64;
        assert!(mean < max_mean, "mean difference {mean}");
        // The bar is there, and only there.
        let at = |x: usize, y: usize| &ours[(y * width + x) * 3..(y * width + x) * 3 + 3];
        for y in [1004, 1350, 1696] {
            let p = at(2000, y);
            assert!(p[0] > 230 && p[1] < 25 && p[2] > 230, "row {y}: {p:?}");
        }
        for y in [984, 1716] {
            let p = at(2000, y);
            assert!(!(p[0] > 230 && p[1] < 25 && p[2] > 230), "row {y}: {p:?}");
        }
        assert!(
            (out.len() as f64 / reference.len() as f64 - 1.0).abs() < 0.01,
            "{} vs {} bytes",
            out.len(),
            reference.len()
        );
    }
}
