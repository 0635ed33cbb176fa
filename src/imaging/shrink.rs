//! A big JPEG made smaller without ever becoming RGB (the Telegram photo fit).
//!
//! The coefficients [`Scan`] read on all cores become Y, Cb and Cr samples through
//! libjpeg-turbo-rs's DCT-scaled inverse transforms (an M/8-size IDCT per block, what libjpeg
//! does for `scale_num/scale_denom`), each plane is resized on its own with Lanczos3
//! (`fast_image_resize`) straight to its size in a 4:2:0 output, and the planes are coded
//! with `ljt::compress_raw` (libjpeg's raw-data path), in bands of rows on all cores joined
//! with restart markers ([`strips`]).
//!
//! Why planes: the pixel path upsamples chroma, converts to RGB, resizes three samples per
//! pixel, converts back and averages chroma down again; here the resize reads one and a half
//! samples per pixel and nothing else happens. The result is the pixel path's up to rounding:
//! the JFIF colour conversion is affine and a Lanczos resize is linear (its weights sum to
//! 1), so they commute. Chroma goes from its own resolution to the output's in one filter,
//! with the sample positions JFIF gives it (centred on the luma samples it covers).
//!
//! Neither the decoded picture nor the resized one ever exists whole: each band decodes the
//! source rows its filter reads (the MCU rows around them) and is coded as soon as it is made.

use super::scan::{Kept, Scan};
use super::{ImagingError, Limits, requant, strips};
use fast_image_resize as fir;
use libjpeg_turbo_rs as ljt;
use std::ops::Range;

/// MCU rows (16 px) per output band, at most: 128 rows of a 2560 px photo are 0.5 MB of
/// samples, and 15 bands keep two cores evenly busy.
const BAND_MCU_ROWS: usize = 8;
/// Lanczos3 reads 3 source samples either side of a destination sample's centre (times the
/// downscale factor); 2 more cover the rounding of the band's edges.
const LANCZOS_SUPPORT: f64 = 3.0;

/// `bytes` (a JPEG) resized to the size `target(width, height)` returns, cropped around its
/// centre first when that size has another aspect ratio, as a baseline 4:2:0 JPEG at
/// `quality` without metadata: what [`super::ops`]'s decode → resize → encode makes, up to
/// rounding, for the 8-bit YCbCr JPEGs [`Scan::read`] takes.
///
/// `Ok(None)` when this path does not apply: another format, a grey or CMYK JPEG, an EXIF
/// orientation to apply, a scan under 1 MB or of a kind [`Scan::read`] refuses (progressive,
/// damaged…), a single core, or a target larger than the source. The caller then takes the
/// pixel path, which also words the errors.
///
/// Errors: [`ImagingError::TooLarge`] and [`ImagingError::TooManyPixels`] from the byte count
/// and the header, before anything is decoded.
pub(super) fn resize_jpeg(
    bytes: &[u8],
    limits: &Limits,
    target: impl Fn(u32, u32) -> (u32, u32),
    quality: u8,
) -> Result<Option<Vec<u8>>, ImagingError> {
    if bytes.len() > limits.max_bytes {
        return Err(ImagingError::TooLarge { bytes: bytes.len(), max: limits.max_bytes });
    }
    if image::guess_format(bytes).ok() != Some(image::ImageFormat::Jpeg) {
        return Ok(None);
    }
    let Some((width, height)) = requant::eligible(bytes, limits)? else { return Ok(None) };
    let (out_w, out_h) = target(width, height);
    if out_w == 0 || out_h == 0 || out_w > width || out_h > height || out_w > u32::from(u16::MAX) {
        return Ok(None);
    }
    let out = (out_w as usize, out_h as usize);
    let (_, scale) = crop_and_scale((width, height), out);
    let Some(scan) = Scan::read_kept(bytes, strips::cores(), Kept::TopLeft(scale)) else { return Ok(None) };
    let Some(layout) = Layout::new(&scan, out) else { return Ok(None) };
    let coded = layout.code(&scan, quality.clamp(1, 100), BAND_MCU_ROWS);
    release_scratch();
    Ok(coded)
}

/// The three components of `scan` at DCT scale `scale`/8, which must be what the scan kept
/// ([`Kept::TopLeft`]). `None` for layouts other than three components with sampling factors
/// of 1 or 2.
pub(super) fn sources(scan: &Scan, scale: usize) -> Option<[Source; 3]> {
    let t = scan.template();
    let [y, cb, cr] = t.components.as_slice() else { return None };
    let factors = [y, cb, cr].map(|c| (usize::from(c.h_sampling), usize::from(c.v_sampling)));
    if scan.kept() != Kept::TopLeft(scale)
        || factors.iter().any(|&(h, v)| !(1..=2).contains(&h) || !(1..=2).contains(&v))
    {
        return None;
    }
    let (width, height) = (usize::from(t.width), usize::from(t.height));
    let h_max = factors.iter().map(|f| f.0).max()?;
    let v_max = factors.iter().map(|f| f.1).max()?;
    // libjpeg's downsampled_width/height at DCT_scaled_size `scale`.
    Some(factors.map(|(h, v)| Source {
        width: (width * h * scale).div_ceil(h_max * 8),
        height: (height * v * scale).div_ceil(v_max * 8),
        h,
        v,
        unit_x: (h_max * 8) as f64 / (h * scale) as f64,
        unit_y: (v_max * 8) as f64 / (v * scale) as f64,
    }))
}

/// The part of a `width × height` picture an `out` output shows (its centre, at the output's
/// aspect ratio), and the smallest DCT scale M/8 that leaves at least the output's pixels in it.
fn crop_and_scale((width, height): (u32, u32), (out_w, out_h): (usize, usize)) -> (fir::CropBox, usize) {
    let crop = fir::CropBox::fit_src_into_dst_size(width, height, out_w as u32, out_h as u32, None);
    let scale = (1..=8)
        .find(|&m| crop.width * m as f64 / 8.0 >= out_w as f64 && crop.height * m as f64 / 8.0 >= out_h as f64)
        .unwrap_or(8);
    (crop, scale)
}

/// One source component at a DCT scale.
#[derive(Clone, Copy, Debug)]
pub(super) struct Source {
    /// Samples across and down that hold picture (the rest of the last blocks is padding).
    pub(super) width: usize,
    pub(super) height: usize,
    /// Sampling factors (blocks per MCU across and down).
    pub(super) h: usize,
    pub(super) v: usize,
    /// Picture pixels per sample, across and down.
    unit_x: f64,
    unit_y: f64,
}

/// How a picture is cut, scaled and resized into the output's three planes.
#[derive(Debug)]
struct Layout {
    /// Samples per block side after the scaled IDCT (1…8).
    scale: usize,
    sources: [Source; 3],
    /// The part of the picture (in picture pixels) that the output shows.
    crop: fir::CropBox,
    out_w: usize,
    out_h: usize,
}

/// A destination plane's rows and where they come from in a source plane.
#[derive(Clone, Copy, Debug)]
struct Window {
    /// Crop box in source samples (left, top, width, height).
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    /// Source rows the filter reads: `[first, end)`.
    first: usize,
    end: usize,
}

impl Layout {
    /// `None` for layouts other than three components with sampling factors of 1 or 2, or a
    /// scan that did not keep the coefficients this scale needs.
    fn new(scan: &Scan, (out_w, out_h): (usize, usize)) -> Option<Self> {
        let t = scan.template();
        let (crop, scale) = crop_and_scale((u32::from(t.width), u32::from(t.height)), (out_w, out_h));
        let sources = sources(scan, scale)?;
        Some(Self { scale, sources, crop, out_w, out_h })
    }

    /// Output plane `plane`'s size in samples and its sample size in output pixels (Y 1, Cb
    /// and Cr 2: the output is 4:2:0).
    fn out_plane(&self, plane: usize) -> (usize, usize, usize) {
        if plane == 0 { (self.out_w, self.out_h, 1) } else { (self.out_w.div_ceil(2), self.out_h.div_ceil(2), 2) }
    }

    /// Where output plane `plane`'s rows `rows` come from in its source plane. A destination
    /// sample's centre maps to the picture point it covers (a chroma sample covers 2×2 output
    /// pixels), so Y, Cb and Cr stay registered whatever the scales.
    fn window(&self, plane: usize, rows: Range<usize>) -> Window {
        let src = self.sources[plane];
        let (out_cols, _, k) = self.out_plane(plane);
        let fx = self.crop.width / self.out_w as f64 * k as f64 / src.unit_x;
        let fy = self.crop.height / self.out_h as f64 * k as f64 / src.unit_y;
        let left = self.crop.left / src.unit_x;
        let width = (out_cols as f64 * fx).min(src.width as f64 - left);
        let top = (self.crop.top / src.unit_y + rows.start as f64 * fy).min(src.height as f64);
        let height = (rows.len() as f64 * fy).min(src.height as f64 - top);
        let margin = LANCZOS_SUPPORT * fy.max(1.0) + 2.0;
        let first = (top - margin).floor().max(0.0) as usize;
        let end = ((top + height + margin).ceil() as usize).min(src.height);
        Window { left, top, width, height, first, end }
    }

    /// Codes the output in bands of `band_mcu_rows` MCU rows on all cores. `None` if a band
    /// fails or the bands do not join.
    fn code(&self, scan: &Scan, quality: u8, band_mcu_rows: usize) -> Option<Vec<u8>> {
        let mcus_across = self.out_w.div_ceil(16);
        // The restart interval (MCUs per band) must fit DRI's 16 bits.
        let band_mcu_rows = (usize::from(u16::MAX) / mcus_across).clamp(1, band_mcu_rows);
        let band_h = band_mcu_rows * 16;
        let count = self.out_h.div_ceil(band_h);
        let coded = strips::code_in_turn(count, |i| {
            let rows = i * band_h..((i + 1) * band_h).min(self.out_h);
            SCRATCH.with(|cell| self.code_band(scan, rows, quality, &mut *cell.try_borrow_mut().ok()?))
        })?;
        strips::join(&coded, u16::try_from(self.out_h).ok()?, band_mcu_rows * mcus_across)
    }

    /// Output rows `rows` (whole 16-row MCUs but the last) as a JPEG of their own.
    fn code_band(&self, scan: &Scan, rows: Range<usize>, quality: u8, scratch: &mut Scratch) -> Option<Vec<u8>> {
        let chroma_rows = rows.start / 2..rows.end.div_ceil(2).min(self.out_plane(1).1);
        let windows = [0, 1, 2].map(|p| self.window(p, if p == 0 { rows.clone() } else { chroma_rows.clone() }));
        // The MCU rows holding every source row the three filters read.
        let s = self.scale;
        let mcu_rows = windows
            .iter()
            .zip(&self.sources)
            .map(|(w, src)| (w.first / s / src.v)..(w.end.div_ceil(s).div_ceil(src.v)))
            .reduce(|a, b| a.start.min(b.start)..a.end.max(b.end))?;
        let mcu_rows = mcu_rows.start..mcu_rows.end.min(scan.mcu_rows());
        let Scratch { samples, resized, resizer } = scratch;
        let local_rows = samples_of(scan, s, &self.sources, mcu_rows.clone(), samples)?;
        for p in 0..3 {
            let src = self.sources[p];
            let first_row = mcu_rows.start * src.v * s;
            let local_rows = local_rows[p];
            let w = windows[p];
            let view = fir::images::ImageRef::new(
                u32::try_from(src.width).ok()?,
                u32::try_from(local_rows).ok()?,
                &samples[p],
                fir::PixelType::U8,
            )
            .ok()?;
            let (cols, _, _) = self.out_plane(p);
            let band_rows = if p == 0 { rows.len() } else { chroma_rows.len() };
            resized[p].resize(cols * band_rows, 0);
            let mut dst = fir::images::Image::from_slice_u8(
                u32::try_from(cols).ok()?,
                u32::try_from(band_rows).ok()?,
                &mut resized[p],
                fir::PixelType::U8,
            )
            .ok()?;
            let options = fir::ResizeOptions::new()
                .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3))
                .crop(w.left, w.top - first_row as f64, w.width, w.height);
            resizer.resize(&view, &mut dst, &options).ok()?;
        }
        let (cw, _, _) = self.out_plane(1);
        ljt::compress_raw(
            &[&resized[0], &resized[1], &resized[2]],
            &[self.out_w, cw, cw],
            &[rows.len(), chroma_rows.len(), chroma_rows.len()],
            self.out_w,
            rows.len(),
            quality,
            ljt::Subsampling::S420,
        )
        .ok()
    }
}

/// The samples of MCU rows `rows` of `scan` (kept as [`Kept::TopLeft`]`(scale)`), per
/// component into `out` (`sources[c].width` across), through the `scale`×`scale` inverse DCT
/// of every block. Returns each component's row count (the picture's part of the blocks).
pub(super) fn samples_of(
    scan: &Scan,
    scale: usize,
    sources: &[Source; 3],
    rows: Range<usize>,
    out: &mut [Vec<u8>; 3],
) -> Option<[usize; 3]> {
    // One copy per scale, so the per-block copies have a constant length (a few moves, not a
    // memcpy call per row).
    match scale {
        1 => samples_at::<1>(scan, sources, rows, out),
        2 => samples_at::<2>(scan, sources, rows, out),
        3 => samples_at::<3>(scan, sources, rows, out),
        4 => samples_at::<4>(scan, sources, rows, out),
        5 => samples_at::<5>(scan, sources, rows, out),
        6 => samples_at::<6>(scan, sources, rows, out),
        7 => samples_at::<7>(scan, sources, rows, out),
        _ => samples_at::<8>(scan, sources, rows, out),
    }
}

/// [`samples_of`] at scale `S`.
fn samples_at<const S: usize>(
    scan: &Scan,
    sources: &[Source; 3],
    rows: Range<usize>,
    out: &mut [Vec<u8>; 3],
) -> Option<[usize; 3]> {
    if scan.kept() != Kept::TopLeft(S) {
        return None;
    }
    let t = scan.template();
    let counts = sources.map(|src| (rows.end * src.v * S).min(src.height).saturating_sub(rows.start * src.v * S));
    for p in 0..3 {
        out[p].resize(sources[p].width * counts[p], 0);
    }
    let tables: Vec<&[u16; 64]> =
        t.components.iter().map(|c| t.quant_tables.get(usize::from(c.quant_table_index))).collect::<Option<_>>()?;
    let layout: Vec<(usize, usize, usize)> = scan.blocks_in_mcu().collect();
    let simd = ljt::simd::detect();
    let mut natural = [0i16; 64];
    let mut block = [0u8; 64];
    for row in rows.clone() {
        for col in 0..scan.mcus_per_row() {
            let (blocks, dc) = scan.mcu(row * scan.mcus_per_row() + col)?;
            for (coefficients, &(c, bc, br)) in blocks.chunks_exact(S * S).zip(&layout) {
                let Source { width, h, v, .. } = *sources.get(c)?;
                let x0 = (col * h + bc) * S;
                let y0 = ((row - rows.start) * v + br) * S;
                if x0 >= width || y0 >= counts[c] {
                    continue;
                }
                for (dst, src) in natural.chunks_exact_mut(8).zip(coefficients.chunks_exact(S)) {
                    *dst.first_chunk_mut::<S>()? = *src.first_chunk::<S>()?;
                }
                natural[0] = natural[0].wrapping_add(dc[c]);
                scaled_idct(&simd, S, &natural, tables[c], &mut block);
                let plane = &mut out[c];
                if x0 + S <= width {
                    for r in 0..S.min(counts[c] - y0) {
                        let at = (y0 + r) * width + x0;
                        *plane.get_mut(at..)?.first_chunk_mut::<S>()? = *block.get(r * S..)?.first_chunk::<S>()?;
                    }
                } else {
                    let across = width - x0;
                    for r in 0..S.min(counts[c] - y0) {
                        let at = (y0 + r) * width + x0;
                        plane.get_mut(at..at + across)?.copy_from_slice(&block[r * S..r * S + across]);
                    }
                }
            }
        }
    }
    Some(counts)
}

/// The inverse DCT of one block (natural order) to `scale`×`scale` samples, row by row in
/// `out`: libjpeg's ISLOW at 8 and its `jpeg_idct_NxN` kernels below (jidctint.c).
fn scaled_idct(simd: &ljt::simd::SimdRoutines, scale: usize, natural: &[i16; 64], qt: &[u16; 64], out: &mut [u8; 64]) {
    use ljt::decode::{idct_extended as ext, idct_scaled as red};
    fn head<const N: usize>(out: &mut [u8; 64]) -> &mut [u8; N] {
        out.first_chunk_mut::<N>().expect("N ≤ 64")
    }
    match scale {
        1 => out[0] = red::idct_1x1(natural, qt),
        2 => red::idct_2x2(natural, qt, head::<4>(out)),
        3 => ext::idct_3x3(natural, qt, head::<9>(out)),
        4 => red::idct_4x4(natural, qt, head::<16>(out)),
        5 => ext::idct_5x5(natural, qt, head::<25>(out)),
        6 => ext::idct_6x6(natural, qt, head::<36>(out)),
        7 => ext::idct_7x7(natural, qt, head::<49>(out)),
        _ => (simd.idct_islow)(natural, qt, out),
    }
}

/// A thread's buffers, reused from band to band (fresh pages cost a page fault each).
#[derive(Default)]
struct Scratch {
    /// Source samples per component.
    samples: [Vec<u8>; 3],
    /// Resized samples per output plane.
    resized: [Vec<u8>; 3],
    resizer: fir::Resizer,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Frees the calling thread's scratch (a pool thread in the bot would otherwise hold it).
fn release_scratch() {
    SCRATCH.with(|cell| {
        if let Ok(mut scratch) = cell.try_borrow_mut() {
            *scratch = Scratch::default();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imaging::fit_for_telegram_photo;

    fn read(rel: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata").join(rel))
            .expect("test photo")
    }

    fn rgb(jpeg: &[u8]) -> image::RgbImage {
        image::load_from_memory(jpeg).expect("decodes").to_rgb8()
    }

    /// PSNR (dB) of `a` against `b`, over all samples.
    fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
        assert_eq!(a.dimensions(), b.dimensions());
        let se: f64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum();
        10.0 * (255.0f64.powi(2) / (se / a.as_raw().len() as f64)).log10()
    }

    /// The reference: the whole picture decoded to RGB, resized in one pass, kept as pixels.
    fn reference(bytes: &[u8], w: u32, h: u32) -> image::RgbImage {
        let whole = rgb(bytes);
        let mut out = image::RgbImage::new(w, h);
        let options = fir::ResizeOptions::new()
            .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3))
            .fit_into_destination(None);
        fir::Resizer::new().resize(&whole, &mut out, &options).expect("resizes");
        out
    }

    #[test]
    fn planes_resized_in_bands_are_the_pixel_resize() {
        // 4:2:0 at 6/8, 4:2:2 (Olympus) at 6/8, 4:2:0 at 5/8 (Nokia), and a 20:1 crop.
        let cases: [(&str, (u32, u32)); 4] = [
            ("bench/heavy_4000x3000_q95.jpg", (2560, 1920)),
            ("photos/large_olympus_ep3_12mp.jpg", (2560, 1920)),
            ("photos/large_nokia83_9mp_gps.jpg", (2560, 1098)),
            ("bench/heavy_4000x3000_q95.jpg", (2000, 100)),
        ];
        for (rel, (w, h)) in cases {
            let bytes = read(rel);
            let out = resize_jpeg(&bytes, &Limits::default(), |_, _| (w, h), 90).expect("ok").expect("this path");
            let ours = rgb(&out);
            let reference = reference(&bytes, w, h);
            // Against the uncompressed reference: the q90 JPEG's own loss, and no more.
            let direct = psnr(&ours, &reference);
            let pixel_path = rgb(&ljt::compress(
                reference.as_raw(),
                w as usize,
                h as usize,
                ljt::PixelFormat::Rgb,
                90,
                ljt::Subsampling::S420,
            )
            .expect("encodes"));
            let baseline = psnr(&pixel_path, &reference);
            assert!(direct > baseline - 1.0, "{rel} → {w}×{h}: {direct:.2} dB, the pixel path's JPEG {baseline:.2} dB");
        }
    }

    #[test]
    fn bands_are_seamless() {
        // One band per MCU row against one band for the whole picture: the same filter taps
        // reach the same samples, so the planes, and hence the coefficients, are identical.
        let bytes = read("bench/heavy_4000x3000_q95.jpg");
        let scan = Scan::read_kept(&bytes, 2, Kept::TopLeft(3)).expect("parallel read");
        let layout = Layout::new(&scan, (1280, 960)).expect("layout at 3/8");
        let thin = layout.code(&scan, 90, 1).expect("thin bands");
        let whole = layout.code(&scan, 90, 60).expect("one band");
        assert_eq!(rgb(&thin).as_raw(), rgb(&whole).as_raw());
        assert!(thin.len() > whole.len(), "restart markers between the thin bands");
    }

    #[test]
    fn declines_what_it_does_not_take() {
        let limits = Limits::default();
        let same = |w, h| (w, h);
        let half = |w: u32, h: u32| (w / 2, h / 2);
        // Upscaling, an EXIF rotation to apply, a progressive scan, a scan under 1 MB, PNG.
        for (rel, target) in [
            ("photos/large_olympus_ep3_12mp.jpg", &(|w: u32, h: u32| (w + 1, h)) as &dyn Fn(u32, u32) -> (u32, u32)),
            ("photos/progressive_nokia83_9mp_gps.jpg", &half),
            ("photos/orientation/Landscape_1.jpg", &half),
        ] {
            assert!(resize_jpeg(&read(rel), &limits, target, 90).expect("no error").is_none(), "{rel}");
        }
        let png = {
            let mut out = Vec::new();
            image::RgbImage::new(8, 8)
                .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
                .expect("png");
            out
        };
        assert!(resize_jpeg(&png, &limits, same, 90).expect("no error").is_none());
        // The bench photo with an EXIF orientation of 6 (rotate 90° clockwise) put after SOI.
        let bench = read("bench/heavy_4000x3000_q95.jpg");
        assert!(resize_jpeg(&bench, &limits, half, 90).expect("no error").is_some());
        let tiff = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
        let mut rotated = vec![0xFF, 0xD8, 0xFF, 0xE1, 0, (2 + 6 + tiff.len()) as u8];
        rotated.extend_from_slice(b"Exif\0\0");
        rotated.extend_from_slice(tiff);
        rotated.extend_from_slice(&bench[2..]);
        assert!(resize_jpeg(&rotated, &limits, half, 90).expect("no error").is_none());
        let upright = fit_for_telegram_photo(&rotated, &limits).expect("the pixel path rotates");
        assert_eq!(rgb(&upright).dimensions(), (1920, 2560));
        let tiny = Limits { max_pixels: 1000, ..Limits::default() };
        assert!(matches!(
            resize_jpeg(&read("bench/heavy_4000x3000_q95.jpg"), &tiny, same, 90),
            Err(ImagingError::TooManyPixels { .. })
        ));
    }
}
