//! `compress_for_api` for a JPEG that is too big, without a pixel round trip: the quantised DCT
//! coefficients are read (entropy decoding only: no IDCT, no upsampling, no colour conversion),
//! divided down to coarser quantisation tables, and entropy-coded again (what `jpegtran`-style
//! transcoders do). The result is what re-encoding at that quality would give, minus the
//! rounding of a second IDCT/DCT pass, in about half the time of a decode plus encode.

use super::scan::Scan;
use super::{ImagingError, Limits, strips};
use image::RgbImage;
use image::metadata::Orientation;
use libjpeg_turbo_rs as ljt;
use ljt::common::quant_table::ZIGZAG_ORDER;
use ljt::encode::tables::{STD_CHROMINANCE_QUANT_TABLE, STD_LUMINANCE_QUANT_TABLE, quality_scale_quant_table};

/// The JPEG requantised to the highest of `qualities` (best first) whose output is at most
/// `max_bytes`, with no metadata segments (the writer emits JFIF, plus Adobe APP14 only when
/// the colour space needs it).
///
/// Each quality's tables are the IJG quality-scaled Annex K tables (luma for the table the
/// first component uses, chroma for the others; what libjpeg, Pillow and our pixel encoder use
/// at that quality), but never finer than the source's own table at any position: a finer
/// step would spend bytes on precision the source never had.
///
/// The coefficients are held once (2 bytes per coefficient: 36 MB for a 12 MP 4:2:0 photo).
/// A baseline JPEG that [`Scan::read`] takes (what cameras and encoders write) is read on all
/// cores, and each quality is made from the source's coefficients in strips of a megabyte,
/// requantised and entropy-coded on all cores and joined with restart markers. Any other is
/// read by `ljt::read_coefficients` and requantised in place, each lower quality from the
/// previous one (the extra rounding is at most half a step of the coarser table). The first
/// quality fits in the common "slightly too big" case.
///
/// `Ok(None)` when this path does not apply and the caller must decode pixels: not a JPEG the
/// coefficient reader takes (arithmetic coding, 12-bit, corrupt or truncated data), a colour
/// space other than grey/YCbCr, an EXIF orientation to apply, or not fitting even at the
/// lowest quality (then the picture must shrink).
///
/// Errors: [`ImagingError::TooManyPixels`] from the header, before anything is decoded.
pub(super) fn requantize_to_fit(
    bytes: &[u8],
    max_bytes: usize,
    qualities: &[u8],
    limits: &Limits,
) -> Result<Option<Vec<u8>>, ImagingError> {
    if eligible(bytes, limits)?.is_none() {
        return Ok(None);
    }
    let cores = strips::cores();
    if let Some(scan) = Scan::read(bytes, cores) {
        // Every quality starts from the source's own coefficients.
        for &quality in qualities {
            let targets = target_tables(scan.template(), quality);
            let Some(out) = write_requantized(&scan, &targets, cores) else { return Ok(None) };
            if out.len() <= max_bytes {
                return Ok(Some(out));
            }
        }
        return Ok(None);
    }
    let Ok(mut coefficients) = ljt::read_coefficients(bytes) else { return Ok(None) };
    for &quality in qualities {
        let targets = target_tables(&coefficients, quality);
        requantize(&mut coefficients, &targets);
        let Ok(out) = ljt::write_coefficients(&coefficients) else { return Ok(None) };
        if out.len() <= max_bytes {
            return Ok(Some(out));
        }
    }
    Ok(None)
}

/// `scan` requantised to `targets` and entropy-coded in strips of whole MCU rows on `cores`
/// cores, joined with restart markers ([`strips::join`]). `None` if coding fails.
fn write_requantized(scan: &Scan, targets: &[[u16; 64]], cores: usize) -> Option<Vec<u8>> {
    let (rows, count) = strip_layout(scan, cores);
    let parts = strips::code_in_turn(count, |i| code_strip(scan, i * rows..(i + 1) * rows, targets));
    // The helper threads are gone; the calling thread's strip buffer goes too.
    STRIP.with(|cell| {
        if let Ok(mut held) = cell.try_borrow_mut() {
            held.take();
        }
    });
    strips::join(&parts?, scan.template().height, rows * scan.mcus_per_row())
}

/// `(MCU rows per strip, strips)`: strips of about [`STRIP_BYTES`] of coefficients (a few
/// per core at the least, so the cores finish together), each within the 16-bit restart
/// interval.
fn strip_layout(scan: &Scan, cores: usize) -> (usize, usize) {
    let (mcu_rows, per_row) = (scan.mcu_rows(), scan.mcus_per_row().max(1));
    let row_bytes = per_row * scan.blocks_per_mcu() * 128;
    let rows =
        (STRIP_BYTES / row_bytes.max(1)).min(mcu_rows.div_ceil(cores * 4)).min(usize::from(u16::MAX) / per_row).max(1);
    (rows, mcu_rows.div_ceil(rows))
}

/// Coefficient bytes per strip of [`write_requantized`]: each coding thread holds one strip.
const STRIP_BYTES: usize = 1 << 20;

thread_local! {
    /// The strip buffer of this thread, reused from strip to strip.
    static STRIP: std::cell::RefCell<Option<ljt::JpegCoefficients>> = const { std::cell::RefCell::new(None) };
}

/// MCU rows `rows` of `scan` requantised to `targets`, as a JPEG.
fn code_strip(scan: &Scan, rows: std::ops::Range<usize>, targets: &[[u16; 64]]) -> Option<Vec<u8>> {
    STRIP.with(|cell| {
        let mut held = cell.try_borrow_mut().ok()?;
        let strip = held.get_or_insert_with(|| scan.template().clone());
        scan.strip_into(rows, strip);
        requantize(strip, targets);
        ljt::write_coefficients(strip).ok()
    })
}

/// The frame size (width, height) when the coefficient paths apply: an 8-bit DCT JPEG in grey
/// or YCbCr with no EXIF orientation to apply (they cannot rotate); `None` otherwise.
///
/// Errors: [`ImagingError::TooManyPixels`] from the header.
pub(super) fn eligible(bytes: &[u8], limits: &Limits) -> Result<Option<(u32, u32)>, ImagingError> {
    let Some((decoder, orientation)) = super::codec::jpeg_header(bytes, limits)? else { return Ok(None) };
    let header = decoder.header();
    let (width, height) = (u32::from(header.width), u32::from(header.height));
    let ok = header.precision == 8
        && !header.is_lossless
        && matches!(decoder.jpeg_color_space(), ljt::ColorSpace::YCbCr | ljt::ColorSpace::Grayscale)
        && orientation == Orientation::NoTransforms;
    Ok(ok.then_some((width, height)))
}

/// The quantisation tables for `quality`, one per table slot of `coefficients`: the IJG
/// quality-scaled Annex K table (luma for the slot the first component uses, chroma for the
/// others), but never finer than the slot's current table at any position.
fn target_tables(coefficients: &ljt::JpegCoefficients, quality: u8) -> Vec<[u16; 64]> {
    let luma_slot = coefficients.components.first().map(|c| usize::from(c.quant_table_index));
    coefficients
        .quant_tables
        .iter()
        .enumerate()
        .map(|(slot, current)| {
            let base = if Some(slot) == luma_slot { &STD_LUMINANCE_QUANT_TABLE } else { &STD_CHROMINANCE_QUANT_TABLE };
            let scaled = quality_scale_quant_table(base, quality);
            std::array::from_fn(|n| scaled[n].max(current[n]))
        })
        .collect()
}

/// What [`repaint_rows`] draws: it first asks which rows will change, then hands over those
/// rows as pixels.
pub(super) trait RowPainter {
    /// The pixel rows `[top, bottom)` of a `width × height` picture that [`Self::paint`] will
    /// read or write; an empty range when nothing will be drawn.
    fn rows(&mut self, width: u32, height: u32) -> (u32, u32);
    /// Draws into `band`, the full-width picture rows from `offset` on (a superset of the rows
    /// announced, aligned to the JPEG's MCU rows).
    fn paint(&mut self, band: &mut RgbImage, offset: u32);
}

/// A JPEG at `quality` where only the rows `painter` announces are decoded, painted and
/// encoded again; every other block is requantised to `quality`'s tables (see
/// [`requantize_to_fit`] for the tables) without leaving the DCT domain. Output: a baseline
/// JPEG with the source's size and chroma subsampling and no metadata segments.
///
/// Compared with decoding and re-encoding the whole picture this skips the IDCT, upsampling,
/// colour conversion, DCT and quantisation of every block outside the band, which for a
/// caption is most of the picture. At the band's edges chroma is upsampled from the band's
/// own rows only, a difference of at most one chroma sample's interpolation.
///
/// `Ok(None)` when the caller must take the pixel path: what [`requantize_to_fit`] refuses,
/// grey JPEGs (the caption is in colour), and chroma layouts other than 4:4:4, 4:2:2, 4:2:0
/// and 4:4:0 with single-sampled chroma.
///
/// Errors: [`ImagingError::TooManyPixels`] from the header.
pub(super) fn repaint_rows(
    bytes: &[u8],
    limits: &Limits,
    quality: u8,
    painter: &mut dyn RowPainter,
) -> Result<Option<Vec<u8>>, ImagingError> {
    let Some((width, height)) = eligible(bytes, limits)? else { return Ok(None) };
    let (top, bottom) = painter.rows(width, height);
    // Each band pixel costs a decode and an encode on top of the entropy passes everyone pays,
    // so past about a third of the picture the plain pixel path is as fast.
    if u64::from(bottom.saturating_sub(top)) * 3 > u64::from(height) {
        return Ok(None);
    }
    let Ok(mut coefficients) = ljt::read_coefficients(bytes) else { return Ok(None) };
    let Some(subsampling) = subsampling(&coefficients) else { return Ok(None) };
    let targets = target_tables(&coefficients, quality);
    let band = match top < bottom {
        true => match repainted_band(&coefficients, subsampling, quality, (top, bottom), painter) {
            Some(band) => Some(band),
            None => return Ok(None),
        },
        false => None,
    };
    requantize(&mut coefficients, &targets);
    if let Some((first_mcu_row, mut band)) = band {
        // The band was encoded with plain IJG tables; bring it to the same tables as the rest.
        for (component, target) in band.components.iter_mut().zip(&coefficients.components) {
            let from = band.quant_tables[usize::from(component.quant_table_index)];
            let to = targets[usize::from(target.quant_table_index)];
            requantize_blocks(&mut component.blocks, &from, &to);
        }
        for (dst, src) in coefficients.components.iter_mut().zip(&band.components) {
            let start = first_mcu_row * usize::from(dst.v_sampling) * dst.blocks_x;
            let Some(slot) = dst.blocks.get_mut(start..start + src.blocks.len()) else { return Ok(None) };
            slot.copy_from_slice(&src.blocks);
        }
    }
    let Ok(out) = ljt::write_coefficients(&coefficients) else { return Ok(None) };
    Ok(Some(out))
}

/// The chroma subsampling of a 3-component JPEG whose chroma is sampled once per MCU.
fn subsampling(c: &ljt::JpegCoefficients) -> Option<ljt::Subsampling> {
    let [y, cb, cr] = c.components.as_slice() else { return None };
    if (cb.h_sampling, cb.v_sampling, cr.h_sampling, cr.v_sampling) != (1, 1, 1, 1) {
        return None;
    }
    match (y.h_sampling, y.v_sampling) {
        (1, 1) => Some(ljt::Subsampling::S444),
        (2, 1) => Some(ljt::Subsampling::S422),
        (2, 2) => Some(ljt::Subsampling::S420),
        (1, 2) => Some(ljt::Subsampling::S440),
        _ => None,
    }
}

/// Decodes the MCU rows covering `rows`, lets `painter` draw on them, and encodes them at
/// `quality` with the same subsampling: `(first MCU row, the band's coefficients)`, block rows
/// matching the source's for that range. `None` if any step fails or the shapes disagree.
fn repainted_band(
    source: &ljt::JpegCoefficients,
    subsampling: ljt::Subsampling,
    quality: u8,
    (top, bottom): (u32, u32),
    painter: &mut dyn RowPainter,
) -> Option<(usize, ljt::JpegCoefficients)> {
    let v_max = source.components.iter().map(|c| usize::from(c.v_sampling)).max()?;
    let mcu_h = 8 * v_max;
    let height = usize::from(source.height);
    let first_mcu_row = top as usize / mcu_h;
    let band_top = first_mcu_row * mcu_h;
    let band_bottom = (bottom as usize).div_ceil(mcu_h).saturating_mul(mcu_h).min(height);
    if band_bottom <= band_top {
        return None;
    }
    let band_h = band_bottom - band_top;
    // The source's blocks for those rows, as a JPEG of their own, decoded to pixels.
    let mut band = header_only(source);
    band.height = u16::try_from(band_h).ok()?;
    for (dst, src) in band.components.iter_mut().zip(&source.components) {
        let v = usize::from(src.v_sampling);
        let first = first_mcu_row * v;
        let rows = (band_h.div_ceil(mcu_h) * v).min(src.blocks_y.checked_sub(first)?);
        dst.blocks = src.blocks.get(first * src.blocks_x..(first + rows) * src.blocks_x)?.to_vec();
        dst.blocks_y = rows;
    }
    let band_jpeg = ljt::write_coefficients(&band).ok()?;
    let mut decoder = ljt::Decoder::new(&band_jpeg).ok()?;
    decoder.set_output_format(ljt::PixelFormat::Rgb);
    let pixels = decoder.decode_image().ok()?;
    let mut rgb = RgbImage::from_raw(u32::from(source.width), u32::try_from(band_h).ok()?, pixels.data)?;
    painter.paint(&mut rgb, u32::try_from(band_top).ok()?);
    let encoded =
        ljt::compress(rgb.as_raw(), rgb.width() as usize, band_h, ljt::PixelFormat::Rgb, quality, subsampling).ok()?;
    let painted = ljt::read_coefficients(&encoded).ok()?;
    let shapes_match = painted.components.len() == band.components.len()
        && painted.components.iter().zip(&band.components).all(|(p, b)| {
            (p.blocks_x, p.blocks.len(), p.h_sampling, p.v_sampling)
                == (b.blocks_x, b.blocks.len(), b.h_sampling, b.v_sampling)
        });
    shapes_match.then_some((first_mcu_row, painted))
}

/// Rescales every block from `coefficients.quant_tables` to `targets` (natural order, one per
/// table slot) and installs `targets` as the new tables. Rounds to nearest, halves away from
/// zero, like libjpeg's quantiser.
fn requantize(coefficients: &mut ljt::JpegCoefficients, targets: &[[u16; 64]]) {
    for component in &mut coefficients.components {
        let slot = usize::from(component.quant_table_index);
        if let (Some(old), Some(new)) = (coefficients.quant_tables.get(slot), targets.get(slot)) {
            requantize_blocks(&mut component.blocks, old, new);
        }
    }
    coefficients.quant_tables = targets.to_vec();
}

/// Rescales zigzag-ordered blocks quantised with `old` (natural order) to `new`, rounding to
/// nearest with halves away from zero (libjpeg's quantiser). Large arrays are split across
/// the cores.
fn requantize_blocks(blocks: &mut [[i16; 64]], old: &[u16; 64], new: &[u16; 64]) {
    // Per zigzag position, old step / new step. In f32 the product |c| × ratio ≤ 2047 × 255 is
    // within a few ulps of the exact quotient, so only a value within ~1e-4 of a half can round
    // the other way; the loop has no branch and vectorises, unlike an integer division.
    let ratio: [f32; 64] = std::array::from_fn(|z| {
        let n = ZIGZAG_ORDER[z];
        f32::from(old[n]) / f32::from(new[n].max(1))
    });
    if ratio.iter().all(|&r| r == 1.0) {
        return;
    }
    let run = |blocks: &mut [[i16; 64]]| {
        for block in blocks {
            for (c, r) in block.iter_mut().zip(&ratio) {
                let v = f32::from(*c) * r;
                *c = (v + 0.5f32.copysign(v)) as i16;
            }
        }
    };
    let threads = strips::cores();
    if threads < 2 || blocks.len() < 100_000 {
        run(blocks);
        return;
    }
    std::thread::scope(|scope| {
        for chunk in blocks.chunks_mut(blocks.len().div_ceil(threads)) {
            scope.spawn(move || run(chunk));
        }
    });
}

/// A copy of the frame description without the blocks.
fn header_only(c: &ljt::JpegCoefficients) -> ljt::JpegCoefficients {
    ljt::JpegCoefficients {
        components: c
            .components
            .iter()
            .map(|c| ljt::ComponentCoefficients {
                blocks: Vec::new(),
                blocks_x: c.blocks_x,
                blocks_y: c.blocks_y,
                h_sampling: c.h_sampling,
                v_sampling: c.v_sampling,
                quant_table_index: c.quant_table_index,
                component_id: c.component_id,
            })
            .collect(),
        quant_tables: c.quant_tables.clone(),
        ..*c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paints a solid red bar over rows `[top, bottom)`.
    struct Bar(u32, u32, Option<u32>);

    impl RowPainter for Bar {
        fn rows(&mut self, _width: u32, _height: u32) -> (u32, u32) {
            (self.0, self.1)
        }
        fn paint(&mut self, band: &mut RgbImage, offset: u32) {
            self.2 = Some(offset);
            for y in self.0.max(offset)..self.1.min(offset + band.height()) {
                for x in 0..band.width() {
                    band.put_pixel(x, y - offset, image::Rgb([255, 0, 0]));
                }
            }
        }
    }

    fn mean_diff(a: &RgbImage, b: &RgbImage, rows: std::ops::Range<u32>) -> f64 {
        let (mut sum, mut n) = (0u64, 0u64);
        for y in rows {
            for x in 0..a.width() {
                for c in 0..3 {
                    sum += u64::from(a.get_pixel(x, y).0[c].abs_diff(b.get_pixel(x, y).0[c]));
                    n += 1;
                }
            }
        }
        sum as f64 / n as f64
    }

    #[test]
    fn repainting_rows_changes_those_rows_and_keeps_the_rest() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/photos/large_olympus_ep3_12mp.jpg");
        let bytes = std::fs::read(path).expect("testdata");
        let limits = Limits::default();
        let source = image::load_from_memory(&bytes).expect("decodes").to_rgb8();
        let (w, h) = source.dimensions();
        let mut bar = Bar(1000, 1100, None);
        let out = repaint_rows(&bytes, &limits, 90, &mut bar).expect("no error").expect("coefficient path");
        // The band starts on an MCU row at or above the bar (4:2:2 here: 8 px MCU rows).
        let offset = bar.2.expect("painted");
        assert!(offset <= 1000 && 1000 - offset < 16, "{offset}");
        let result = image::load_from_memory(&out).expect("output decodes").to_rgb8();
        assert_eq!(result.dimensions(), (w, h));
        assert!(!super::super::jpeg::has_exif_segment(&out));
        let red = result.get_pixel(w / 2, 1050).0;
        assert!(red[0] > 230 && red[1] < 30 && red[2] < 30, "{red:?}");
        // Everywhere else: the same picture at quality 90.
        assert!(mean_diff(&source, &result, 0..990) < 2.5);
        assert!(mean_diff(&source, &result, 1110..h) < 2.5);
        let tables = ljt::read_coefficients(&out).expect("coefficients").quant_tables;
        assert_eq!(tables[0], quality_scale_quant_table(&STD_LUMINANCE_QUANT_TABLE, 90));
        // A bar over most of the picture: the pixel path is cheaper, so none here.
        assert!(repaint_rows(&bytes, &limits, 90, &mut Bar(0, h / 2, None)).expect("no error").is_none());
        // Nothing to paint: requantised only.
        assert!(repaint_rows(&bytes, &limits, 90, &mut Bar(0, 0, None)).expect("no error").is_some());
    }

    #[test]
    fn float_requantising_matches_exact_integer_rounding_away_from_ties() {
        // Every coefficient and step pair a baseline JPEG can hold, against exact arithmetic;
        // only values within 1e-3 of a half may differ (and then by one step).
        for old in [1u16, 2, 3, 7, 16, 99, 255] {
            for new in [1u16, 2, 5, 9, 24, 100, 255] {
                let mut blocks: Vec<[i16; 64]> = (-2047i16..=2047)
                    .collect::<Vec<_>>()
                    .chunks(64)
                    .map(|c| std::array::from_fn(|i| c.get(i).copied().unwrap_or(0)))
                    .collect();
                let before = blocks.clone();
                requantize_blocks(&mut blocks, &[old; 64], &[new; 64]);
                for (a, b) in before.iter().flatten().zip(blocks.iter().flatten()) {
                    let exact = f64::from(*a) * f64::from(old) / f64::from(new);
                    let rounded = exact.abs().round().copysign(exact) as i16;
                    let tie = (exact.abs().fract() - 0.5).abs() < 1e-3;
                    assert!(*b == rounded || tie && (b - rounded).abs() == 1, "{a}×{old}/{new}: {b} vs {rounded}");
                }
            }
        }
    }

    #[test]
    fn requantising_rounds_to_the_nearest_coarser_step() {
        let mut c = ljt::JpegCoefficients {
            width: 8,
            height: 8,
            data_precision: 8,
            components: vec![ljt::ComponentCoefficients {
                blocks: vec![[0i16; 64]],
                blocks_x: 1,
                blocks_y: 1,
                h_sampling: 1,
                v_sampling: 1,
                quant_table_index: 0,
                component_id: 1,
            }],
            quant_tables: vec![[2u16; 64]],
            restart_interval: 0,
            density_unit: 0,
            x_density: 1,
            y_density: 1,
            saw_jfif_marker: true,
            adobe_transform: None,
        };
        // Values 2×{10, -10, 7, -7, 5, 1} requantised to step 4: 5, -5, 3.5→4, -3.5→-4, 2.5→3, 0.5→1.
        c.components[0].blocks[0][..6].copy_from_slice(&[10, -10, 7, -7, 5, 1]);
        requantize(&mut c, &[[4u16; 64]]);
        assert_eq!(&c.components[0].blocks[0][..6], &[5, -5, 4, -4, 3, 1]);
        assert_eq!(c.quant_tables, vec![[4u16; 64]]);
    }
}
