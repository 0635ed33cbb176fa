//! `compress_for_api` for a JPEG that is too big, without a pixel round trip: the quantised DCT
//! coefficients are read (entropy decoding only: no IDCT, no upsampling, no colour conversion),
//! divided down to coarser quantisation tables, and entropy-coded again (what `jpegtran`-style
//! transcoders do). The result is what re-encoding at that quality would give, minus the
//! rounding of a second IDCT/DCT pass, in about half the time of a decode plus encode.

use super::scan::Scan;
use super::{ImagingError, Limits, strips};
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

#[cfg(test)]
mod tests {
    use super::*;

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
