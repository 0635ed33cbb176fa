//! Entropy coding in parallel: a JPEG is cut into horizontal strips of whole MCU rows, each
//! strip is coded as a JPEG of its own on its own thread, and the strips' scans are joined
//! with restart markers (ITU-T T.81 §B.2.1, §F.1.2.3: at a restart marker the DC predictions
//! reset and the coder starts byte-aligned, which is exactly how every strip was coded). The
//! coefficients are the same as a one-pass encode's; the file gains a DRI segment and a
//! two-byte RSTn marker per strip.

/// Strips worth coding on their own thread: fewer pixels than this and thread start-up eats
/// the gain.
const MIN_PIXELS: u64 = 2_000_000;

/// How many strips to cut a `width × height` picture into (1 means: do not split): a few
/// per core, pulled in turn ([`code_in_turn`]), so that when another process slows one core
/// the others take more strips instead of waiting for its half.
pub(super) fn strip_count(width: u32, height: u32) -> usize {
    let cores = cores();
    if cores < 2 || u64::from(width) * u64::from(height) < MIN_PIXELS {
        return 1;
    }
    cores * 4
}

/// The cores the imaging code spreads one picture over: all of them, at most 4 (past that,
/// memory bandwidth and the serial parts leave little to gain).
pub(super) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// The MCU-row ranges of `strips` strips over `mcu_rows` rows (all but the last of equal
/// height, as a fixed restart interval needs).
pub(super) fn mcu_row_ranges(mcu_rows: usize, strips: usize) -> Vec<std::ops::Range<usize>> {
    let per = mcu_rows.div_ceil(strips.max(1)).max(1);
    (0..mcu_rows).step_by(per).map(|start| start..(start + per).min(mcu_rows)).collect()
}

/// Codes every strip with [`code_in_turn`] and joins the results with [`join`]. `None` if any
/// strip fails or the strips do not join.
pub(super) fn code_in_parallel<T: Sync>(
    strips: &[T],
    height: u16,
    mcus_per_strip: usize,
    code: impl Fn(&T) -> Option<Vec<u8>> + Sync,
) -> Option<Vec<u8>> {
    join(&code_in_turn(strips.len(), |i| code(&strips[i]))?, height, mcus_per_strip)
}

/// Runs `code(i)` for every `i` in `0..count` on up to [`cores`] scoped threads (the calling
/// thread one of them) pulling the next index in turn, so at most that many strips are being
/// made at once (a strip's pixels exist only while it is coded). `None` if any strip fails.
pub(super) fn code_in_turn(count: usize, code: impl Fn(usize) -> Option<Vec<u8>> + Sync) -> Option<Vec<Vec<u8>>> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let workers = cores().min(count.max(1));
    let next = AtomicUsize::new(0);
    let coded: Vec<Mutex<Option<Vec<u8>>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= count {
                return;
            }
            let Some(out) = code(i) else {
                // Stop everyone: the result is refused anyway.
                next.store(count, Ordering::Relaxed);
                return;
            };
            if let Ok(mut slot) = coded[i].lock() {
                *slot = Some(out);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..workers {
            scope.spawn(work);
        }
        work();
    });
    coded.into_iter().map(|m| m.into_inner().ok().flatten()).collect()
}

/// One JPEG from strips coded as separate baseline JPEGs with identical tables and sampling:
/// the first strip's header with the frame height set to `height` and a DRI segment of
/// `mcus_per_strip` added, then every strip's scan data separated by RST0…RST7 in turn.
///
/// `None` when the strips' headers differ in anything but the frame height, a strip is not a
/// single-scan JPEG ending in EOI, or the interval does not fit DRI's 16 bits.
pub(super) fn join(strips: &[Vec<u8>], height: u16, mcus_per_strip: usize) -> Option<Vec<u8>> {
    let interval = u16::try_from(mcus_per_strip).ok().filter(|&i| i > 0)?;
    if strips.len() == 1 {
        return strips.first().cloned();
    }
    let parts: Vec<(Vec<u8>, &[u8])> = strips.iter().map(|s| split(s)).collect::<Option<_>>()?;
    let (header, _) = &parts[0];
    if parts.iter().any(|(h, _)| h != header) {
        return None;
    }
    let total: usize = parts.iter().map(|(_, scan)| scan.len() + 2).sum::<usize>() + header.len() + 8;
    let mut out = Vec::with_capacity(total);
    // The header up to SOS, the frame height patched, then DRI, then the SOS segment.
    let sos = sos_offset(header)?;
    out.extend_from_slice(&header[..sos]);
    let sof = sof_offset(&out)?;
    out[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    out.extend_from_slice(&[0xFF, 0xDD, 0x00, 0x04]);
    out.extend_from_slice(&interval.to_be_bytes());
    out.extend_from_slice(&header[sos..]);
    for (i, (_, scan)) in parts.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(&[0xFF, 0xD0 + ((i - 1) % 8) as u8]);
        }
        out.extend_from_slice(scan);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    Some(out)
}

/// `(header through the SOS segment with the frame height zeroed, scan data up to EOI)`.
fn split(jpeg: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    if !jpeg.starts_with(&[0xFF, 0xD8]) || !jpeg.ends_with(&[0xFF, 0xD9]) {
        return None;
    }
    let mut i = 2;
    loop {
        let (&ff, &marker) = (jpeg.get(i)?, jpeg.get(i + 1)?);
        if ff != 0xFF || matches!(marker, 0xDD | 0xD0..=0xD7 | 0xD9) {
            // A restart interval of its own, or no scan: not what a plain encode writes.
            return None;
        }
        let len = usize::from(u16::from_be_bytes([*jpeg.get(i + 2)?, *jpeg.get(i + 3)?]));
        let end = i + 2 + len;
        if marker == 0xDA {
            let mut header = jpeg.get(..end)?.to_vec();
            let sof = sof_offset(&header)?;
            header[sof + 5..sof + 7].copy_from_slice(&[0, 0]);
            let scan = jpeg.get(end..jpeg.len() - 2)?;
            // A second scan would start with a marker inside the data; baseline has one.
            if scan.windows(2).any(|w| w[0] == 0xFF && !matches!(w[1], 0x00 | 0xFF)) {
                return None;
            }
            return Some((header, scan));
        }
        i = end;
    }
}

/// Offset of the SOF0/SOF1 marker in a header.
fn sof_offset(header: &[u8]) -> Option<usize> {
    segment_offset(header, |m| matches!(m, 0xC0 | 0xC1))
}

/// Offset of the SOS marker in a header.
fn sos_offset(header: &[u8]) -> Option<usize> {
    segment_offset(header, |m| m == 0xDA)
}

fn segment_offset(header: &[u8], wanted: impl Fn(u8) -> bool) -> Option<usize> {
    let mut i = 2;
    while i + 4 <= header.len() {
        if header[i] != 0xFF {
            return None;
        }
        if wanted(header[i + 1]) {
            return (i + 7 <= header.len()).then_some(i);
        }
        i += 2 + usize::from(u16::from_be_bytes([header[i + 2], header[i + 3]]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use libjpeg_turbo_rs as ljt;

    fn picture(width: usize, height: usize) -> Vec<u8> {
        (0..width * height * 3).map(|i| ((i * 7 + i / (width * 3) * 13) % 251) as u8).collect()
    }

    #[test]
    fn joined_strips_decode_to_the_one_pass_picture() {
        // 4:2:0 MCUs are 16×16: 7 MCU rows plus a partial one, cut in three strips.
        let (width, height) = (100usize, 120usize);
        let pixels = picture(width, height);
        let whole =
            ljt::compress(&pixels, width, height, ljt::PixelFormat::Rgb, 90, ljt::Subsampling::S420).expect("encodes");
        let ranges = mcu_row_ranges(height.div_ceil(16), 3);
        assert_eq!(ranges, vec![0..3, 3..6, 6..8]);
        let strips: Vec<Vec<u8>> = ranges
            .iter()
            .map(|r| {
                let (top, bottom) = (r.start * 16, (r.end * 16).min(height));
                let rows = &pixels[top * width * 3..bottom * width * 3];
                ljt::compress(rows, width, bottom - top, ljt::PixelFormat::Rgb, 90, ljt::Subsampling::S420)
                    .expect("strip encodes")
            })
            .collect();
        let mcus_per_strip = 3 * width.div_ceil(16);
        let joined = join(&strips, height as u16, mcus_per_strip).expect("joins");
        let a = ljt::decompress(&whole).expect("one pass decodes");
        let b = ljt::decompress(&joined).expect("joined decodes");
        assert_eq!((b.width, b.height), (width, height));
        assert_eq!(a.data, b.data, "same coefficients, same pixels");
        // The generic decoder agrees.
        let generic = image::load_from_memory(&joined).expect("image decodes").to_rgb8();
        assert_eq!(generic.dimensions(), (width as u32, height as u32));
        // Strips that disagree (another quality) are refused, not joined into garbage.
        let mut other = strips.clone();
        other[1] =
            ljt::compress(&pixels[..48 * width * 3], width, 48, ljt::PixelFormat::Rgb, 50, ljt::Subsampling::S420)
                .expect("encodes");
        assert!(join(&other, height as u16, mcus_per_strip).is_none());
        assert!(join(&strips, height as u16, 70_000).is_none(), "interval over 16 bits");
    }
}
