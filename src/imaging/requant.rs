//! `compress_for_api` for a JPEG that is too big, without a pixel round trip: libjpeg-turbo-rs's
//! coefficient API reads the quantised DCT coefficients (entropy decoding only: no IDCT, no
//! upsampling, no colour conversion), they are divided down to coarser quantisation tables here,
//! and the same API entropy-codes them again (what `jpegtran`-style transcoders do). The result
//! is what re-encoding at that quality would give, minus the rounding of a second IDCT/DCT
//! pass, in about half the time of a decode plus encode.

use super::decode::jpeg_header;
use super::{ImagingError, Limits, strips};
use image::metadata::Orientation;
use libjpeg_turbo_rs as ljt;

/// The JPEG requantised to the highest of `qualities` (best first) whose output is at most
/// `max_bytes`, with no metadata segments (the writer emits JFIF, plus Adobe APP14 only when
/// the colour space needs it).
///
/// Each quality's tables are our encoder's at that quality (the IJG quality-scaled Annex K
/// tables, as libjpeg and Pillow use; luma for the table the first component uses, chroma for
/// the others), but never finer than the source's own table at any position: a finer step
/// would spend bytes on precision the source never had.
///
/// The coefficients are read once (`ljt::read_coefficients`, one core; 2 bytes per
/// coefficient: 36 MB for a 12 MP 4:2:0 photo). Each quality is made from them in strips of
/// about a megabyte, requantised and coded (`ljt::write_coefficients`) on all cores and joined
/// with restart markers ([`strips`]). The first quality fits in the common "slightly too big"
/// case.
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
    if !eligible(bytes, limits)? {
        return Ok(None);
    }
    let Ok(source) = ljt::read_coefficients(bytes) else { return Ok(None) };
    for &quality in qualities {
        let Some(targets) = target_tables(&source, quality) else { return Ok(None) };
        let Some(out) = write_requantized(&source, &targets) else { return Ok(None) };
        if out.len() <= max_bytes {
            return Ok(Some(out));
        }
    }
    Ok(None)
}

/// True when the coefficient path applies: an 8-bit DCT JPEG in grey or YCbCr with no EXIF
/// orientation to apply (coefficients are not rotated here).
///
/// Errors: [`ImagingError::TooManyPixels`] from the header.
fn eligible(bytes: &[u8], limits: &Limits) -> Result<bool, ImagingError> {
    let Some((decoder, orientation)) = jpeg_header(bytes, limits)? else { return Ok(false) };
    let header = decoder.header();
    Ok(header.precision == 8
        && !header.is_lossless
        && matches!(decoder.jpeg_color_space(), ljt::ColorSpace::YCbCr | ljt::ColorSpace::Grayscale)
        && orientation == Orientation::NoTransforms)
}

/// `source` requantised to `targets` and coded in strips of whole MCU rows on all cores,
/// joined with restart markers. `None` if coding fails.
fn write_requantized(source: &ljt::JpegCoefficients, targets: &[[u16; 64]]) -> Option<Vec<u8>> {
    let Some((rows, count)) = strip_layout(source) else {
        // One strip: the source's frame as it is, restart interval included.
        let mut whole = source.clone();
        requantize(&mut whole, targets);
        return ljt::write_coefficients(&whole).ok();
    };
    let parts = strips::code_in_turn(count, |i| {
        let mut strip = strip_of(source, i * rows..(i + 1) * rows)?;
        requantize(&mut strip, targets);
        ljt::write_coefficients(&strip).ok()
    })?;
    let mcus_across = usize::from(source.width).div_ceil(8 * max_sampling(source).0);
    strips::join(&parts, source.height, rows * mcus_across)
}

/// `(MCU rows per strip, strips)` for strips of about [`STRIP_BYTES`] of coefficients (a few per
/// core at the least, so the cores finish together), each within the 16-bit restart interval;
/// `None` when the picture is one strip or its layout is not one strips can be cut from
/// (interleaved three-component frames with sampling factors of 1 or 2, or a single component
/// sampled 1×1: then every MCU row is `v` block rows of every component).
fn strip_layout(c: &ljt::JpegCoefficients) -> Option<(usize, usize)> {
    let plain = match c.components.as_slice() {
        [y] => (y.h_sampling, y.v_sampling) == (1, 1),
        [_, _, _] => c.components.iter().all(|p| (1..=2).contains(&p.h_sampling) && (1..=2).contains(&p.v_sampling)),
        _ => false,
    };
    let (h_max, v_max) = max_sampling(c);
    let mcus_across = usize::from(c.width).div_ceil(8 * h_max);
    let mcu_rows = usize::from(c.height).div_ceil(8 * v_max);
    let blocks_per_mcu: usize =
        c.components.iter().map(|p| usize::from(p.h_sampling) * usize::from(p.v_sampling)).sum();
    let row_bytes = (mcus_across * blocks_per_mcu * 128).max(1);
    let cores = strips::cores();
    let rows = (STRIP_BYTES / row_bytes)
        .min(mcu_rows.div_ceil(cores * 4))
        .min(usize::from(u16::MAX) / mcus_across.max(1))
        .max(1);
    let count = mcu_rows.div_ceil(rows);
    (plain && cores > 1 && count > 1).then_some((rows, count))
}

/// Coefficient bytes per strip of [`write_requantized`]: each coding thread holds one strip.
const STRIP_BYTES: usize = 1 << 20;

/// The largest horizontal and vertical sampling factors (an MCU is 8× those in pixels).
fn max_sampling(c: &ljt::JpegCoefficients) -> (usize, usize) {
    let max = |f: fn(&ljt::ComponentCoefficients) -> u8| c.components.iter().map(|p| usize::from(f(p))).max();
    (max(|p| p.h_sampling).unwrap_or(1).max(1), max(|p| p.v_sampling).unwrap_or(1).max(1))
}

/// MCU rows `rows` of `c` as a frame of their own (no restart interval), for coding as one
/// strip. `None` when the rows are not in the frame.
fn strip_of(c: &ljt::JpegCoefficients, rows: std::ops::Range<usize>) -> Option<ljt::JpegCoefficients> {
    let mcu_h = 8 * max_sampling(c).1;
    let top = rows.start * mcu_h;
    let height = (rows.len() * mcu_h).min(usize::from(c.height).checked_sub(top)?);
    let components = c
        .components
        .iter()
        .map(|p| {
            let v = usize::from(p.v_sampling);
            let (first, last) = (rows.start * v, (rows.end * v).min(p.blocks_y));
            let blocks = p.blocks.get(first * p.blocks_x..last * p.blocks_x)?.to_vec();
            Some(ljt::ComponentCoefficients { blocks, blocks_y: last - first, ..*p })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(ljt::JpegCoefficients {
        height: u16::try_from(height).ok().filter(|&h| h > 0)?,
        components,
        quant_tables: c.quant_tables.clone(),
        restart_interval: 0,
        ..*c
    })
}

/// The quantisation tables for `quality`, one per table slot of `coefficients`: our encoder's
/// table at that quality (luma for the slot the first component uses, chroma for the others),
/// but never finer than the slot's current table at any position. `None` if the encoder fails.
fn target_tables(coefficients: &ljt::JpegCoefficients, quality: u8) -> Option<Vec<[u16; 64]>> {
    let (luma, chroma) = encoder_tables(quality)?;
    let luma_slot = coefficients.components.first().map(|c| usize::from(c.quant_table_index));
    let tables = coefficients.quant_tables.iter().enumerate().map(|(slot, current)| {
        let base = if Some(slot) == luma_slot { &luma } else { &chroma };
        std::array::from_fn(|n| base[n].max(current[n]))
    });
    Some(tables.collect())
}

/// The luma and chroma tables (natural order) `ljt::compress` uses at `quality`, read back from
/// a 16×16 JPEG it writes: what the pixel path would quantise with, by construction.
fn encoder_tables(quality: u8) -> Option<([u16; 64], [u16; 64])> {
    let probe = ljt::compress(&[128u8; 16 * 16 * 3], 16, 16, ljt::PixelFormat::Rgb, quality, ljt::Subsampling::S420);
    let c = ljt::read_coefficients(&probe.ok()?).ok()?;
    let table = |component: usize| c.quant_tables.get(usize::from(c.components.get(component)?.quant_table_index));
    Some((*table(0)?, *table(1)?))
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

/// Rescales zigzag-ordered blocks (how the coefficient API stores them) quantised with `old`
/// (natural order) to `new`, rounding to nearest with halves away from zero.
fn requantize_blocks(blocks: &mut [[i16; 64]], old: &[u16; 64], new: &[u16; 64]) {
    // Per zigzag position, old step / new step. In f32 the product |c| × ratio ≤ 2047 × 255 is
    // within a few ulps of the exact quotient, so only a value within ~1e-4 of a half can round
    // the other way; the loop has no branch and vectorises, unlike an integer division.
    let natural = zigzag_to_natural();
    let ratio: [f32; 64] = std::array::from_fn(|z| {
        let n = natural[z];
        f32::from(old[n]) / f32::from(new[n].max(1))
    });
    if ratio.iter().all(|&r| r == 1.0) {
        return;
    }
    for block in blocks {
        for (c, r) in block.iter_mut().zip(&ratio) {
            let v = f32::from(*c) * r;
            *c = (v + 0.5f32.copysign(v)) as i16;
        }
    }
}

/// The natural (row-major) index of each zigzag position (ITU-T T.81 Figure A.6): the
/// anti-diagonals of the 8×8 block, walked up on even ones and down on odd ones.
fn zigzag_to_natural() -> [usize; 64] {
    let mut order = [0usize; 64];
    let mut z = 0;
    for diagonal in 0..15usize {
        let rows = diagonal.saturating_sub(7)..=diagonal.min(7);
        let mut place = |row: usize| {
            order[z] = row * 8 + diagonal - row;
            z += 1;
        };
        if diagonal % 2 == 0 {
            rows.rev().for_each(&mut place);
        } else {
            rows.for_each(&mut place);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_order_is_the_standards() {
        let order = zigzag_to_natural();
        assert_eq!(order[..16], [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5]);
        assert_eq!(order[60..], [47, 55, 62, 63]);
        let mut sorted = order;
        sorted.sort_unstable();
        assert_eq!(sorted, std::array::from_fn(|i| i), "a permutation");
    }

    #[test]
    fn strips_join_into_the_whole_requantised_picture() {
        // 4:2:0 and 4:2:2 camera photos, the second with restart markers of its own.
        for name in
            ["../shared/testdata/bench/heavy_4000x3000_q95.jpg", "../shared/testdata/photos/large_olympus_ep3_12mp.jpg"]
        {
            let bytes = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).expect("photo");
            let source = ljt::read_coefficients(&bytes).expect("coefficients");
            assert!(strip_layout(&source).is_some_and(|(_, count)| count > 1) || strips::cores() < 2, "{name}");
            let targets = target_tables(&source, 80).expect("tables");
            let joined = ljt::read_coefficients(&write_requantized(&source, &targets).expect("writes")).expect("reads");
            let mut whole = source.clone();
            requantize(&mut whole, &targets);
            assert_eq!((joined.width, joined.height), (whole.width, whole.height), "{name}");
            assert_eq!(joined.quant_tables, whole.quant_tables, "{name}");
            for (a, b) in joined.components.iter().zip(&whole.components) {
                assert!(a.blocks == b.blocks, "{name}: every block as in the one-pass requantisation");
            }
        }
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
