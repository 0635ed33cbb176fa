//! Lossless JPEG metadata removal by rewriting the marker segments.

use super::ImagingError;

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const APP0: u8 = 0xE0;
const APP14: u8 = 0xEE;
const APP15: u8 = 0xEF;
const COM: u8 = 0xFE;
const TEM: u8 = 0x01;

/// Copies a JPEG without APP1–APP13, APP15 and COM segments. APP0 JFIF stays (minus any embedded
/// thumbnail, which could show an earlier crop; JFXX thumbnail segments go too), and so does an
/// APP14 "Adobe" segment because it tells decoders how to read CMYK/YCCK data. Entropy-coded data
/// is copied verbatim, so pixels are unchanged. Bytes after EOI are dropped: phones append
/// motion-photo videos and gain maps there.
///
/// A file cut short is copied up to where it ends (the caller has already checked it decodes).
pub(super) fn strip_segments(bytes: &[u8]) -> Result<Vec<u8>, ImagingError> {
    let mut out = Vec::with_capacity(bytes.len());
    strip_segments_to(bytes, &mut out)?;
    Ok(out)
}

/// [`strip_segments`] written to `out` as it goes (the copy never exists in memory). Returns
/// whether the copy ends with EOI, i.e. the file was not cut short.
///
/// Errors: [`ImagingError::Corrupt`] as [`strip_segments`]; [`ImagingError::Encode`] when
/// `out` fails.
pub(super) fn strip_segments_to(bytes: &[u8], out: &mut impl std::io::Write) -> Result<bool, ImagingError> {
    let mut out = Sink(out);
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != SOI {
        return Err(ImagingError::Corrupt("JPEG does not start with SOI".into()));
    }
    out.extend_from_slice(&bytes[..2])?;
    let mut i = 2;
    while i < bytes.len() {
        if bytes[i] != 0xFF {
            // Stray bytes between segments: decoders skip them to the next marker, so do we.
            match bytes[i..].iter().position(|&b| b == 0xFF) {
                Some(skip) => i += skip,
                None => break,
            }
        }
        // Any number of 0xFF fill bytes may precede a marker.
        while i + 1 < bytes.len() && bytes[i + 1] == 0xFF {
            i += 1;
        }
        let Some(&marker) = bytes.get(i + 1) else {
            break;
        };
        match marker {
            EOI => {
                out.extend_from_slice(&[0xFF, EOI])?;
                return Ok(true);
            }
            TEM | 0xD0..=0xD7 => {
                out.extend_from_slice(&[0xFF, marker])?;
                i += 2;
                continue;
            }
            SOI | 0x00 => {
                return Err(ImagingError::Corrupt(format!("unexpected JPEG marker {marker:#04x} at byte {i}")));
            }
            _ => {}
        }
        let Some(len_bytes) = bytes.get(i + 2..i + 4) else {
            break;
        };
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        if len < 2 {
            return Err(ImagingError::Corrupt(format!("JPEG segment length {len} at byte {i}")));
        }
        let end = (i + 2 + len).min(bytes.len());
        let segment = &bytes[i..end];
        let payload = &segment[4.min(segment.len())..];
        if marker == APP0 {
            out.extend_from_slice(&jfif_without_thumbnail(payload).unwrap_or_default())?;
        } else if keep_segment(marker, payload) {
            out.extend_from_slice(segment)?;
        }
        i = end;
        if marker == SOS {
            let scan_end = entropy_data_end(bytes, i);
            out.extend_from_slice(&bytes[i..scan_end])?;
            i = scan_end;
        }
    }
    Ok(false)
}

/// A writer whose failures are [`ImagingError::Encode`].
struct Sink<'a, W: std::io::Write>(&'a mut W);

impl<W: std::io::Write> Sink<'_, W> {
    fn extend_from_slice(&mut self, data: &[u8]) -> Result<(), ImagingError> {
        self.0.write_all(data).map_err(|e| ImagingError::Encode(format!("write: {e}")))
    }
}

fn keep_segment(marker: u8, payload: &[u8]) -> bool {
    match marker {
        APP14 => payload.starts_with(b"Adobe"),
        APP0..=APP15 | COM => false,
        _ => true,
    }
}

/// The JFIF APP0 segment with its thumbnail size set to 0×0 and the thumbnail cut; `None` for
/// anything else in APP0.
fn jfif_without_thumbnail(payload: &[u8]) -> Option<Vec<u8>> {
    // "JFIF\0", version (2), units (1), densities (2 + 2), thumbnail width and height (1 + 1).
    const HEADER: usize = 14;
    if !payload.starts_with(b"JFIF\0") || payload.len() < HEADER {
        return None;
    }
    let mut segment = vec![0xFF, APP0, 0, 2 + HEADER as u8];
    segment.extend_from_slice(&payload[..HEADER - 2]);
    segment.extend_from_slice(&[0, 0]);
    Some(segment)
}

/// Index of the first marker after entropy-coded data starting at `from`; stuffed bytes
/// (`FF 00`) and restart markers belong to the data.
fn entropy_data_end(bytes: &[u8], from: usize) -> usize {
    let mut j = from;
    while j + 1 < bytes.len() {
        if bytes[j] == 0xFF {
            let next = bytes[j + 1];
            if next != 0x00 && next != 0xFF && !(0xD0..=0xD7).contains(&next) {
                return j;
            }
        }
        j += 1;
    }
    bytes.len()
}

/// True if the JPEG has an APP1 segment holding EXIF (`Exif\0\0`) before its first scan.
#[cfg(test)]
pub(super) fn has_exif_segment(bytes: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= bytes.len() && bytes[i] == 0xFF {
        let marker = bytes[i + 1];
        if marker == SOS || marker == EOI {
            return false;
        }
        let len = usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
        let payload = &bytes[(i + 4).min(bytes.len())..(i + 2 + len).min(bytes.len())];
        if marker == 0xE1 && payload.starts_with(b"Exif\0\0") {
            return true;
        }
        i += 2 + len;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(marker: u8, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(payload.len() + 2).expect("small segment");
        let mut s = vec![0xFF, marker];
        s.extend_from_slice(&len.to_be_bytes());
        s.extend_from_slice(payload);
        s
    }

    #[test]
    fn drops_metadata_keeps_structure_and_scan() {
        let app0 = segment(APP0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        let app0_thumb = segment(APP0, b"JFIF\0\x01\x01\0\0\x01\0\x01\x01\x01RGB");
        let jfxx = segment(APP0, b"JFXX\0\x13thumbnail");
        let exif = segment(0xE1, b"Exif\0\0MM\0*secret gps");
        let xmp = segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0<x/>");
        let icc = segment(0xE2, b"ICC_PROFILE\0\x01\x01");
        let iptc = segment(0xED, b"Photoshop 3.0\0");
        let adobe = segment(APP14, b"Adobe\0\x64\0\0\0\0\x02");
        let other14 = segment(APP14, b"Other");
        let com = segment(COM, b"made on my phone");
        let dqt = segment(0xDB, &[0u8; 65]);
        let sos = segment(SOS, &[1, 1, 0, 0, 63, 0]);
        // Entropy data with a stuffed byte and a restart marker, then a comment between scans.
        let scan = [0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56];

        let mut input = vec![0xFF, SOI];
        for s in [&app0_thumb, &jfxx, &exif, &xmp, &icc, &iptc, &adobe, &other14, &com, &dqt, &sos] {
            input.extend_from_slice(s);
        }
        input.extend_from_slice(&scan);
        input.extend_from_slice(&com);
        input.extend_from_slice(&sos);
        input.extend_from_slice(&scan);
        input.extend_from_slice(&[0xFF, EOI]);
        input.extend_from_slice(b"trailing motion photo");

        let mut expected = vec![0xFF, SOI];
        for s in [&app0, &adobe, &dqt, &sos] {
            expected.extend_from_slice(s);
        }
        expected.extend_from_slice(&scan);
        expected.extend_from_slice(&sos);
        expected.extend_from_slice(&scan);
        expected.extend_from_slice(&[0xFF, EOI]);

        assert!(has_exif_segment(&input));
        let out = strip_segments(&input).expect("strips");
        assert_eq!(out, expected);
        assert!(!has_exif_segment(&out));
    }

    #[test]
    fn rejects_non_jpeg_and_survives_truncation() {
        assert!(matches!(strip_segments(b"\x89PNG"), Err(ImagingError::Corrupt(_))));
        let mut input = vec![0xFF, SOI];
        input.extend_from_slice(&segment(0xE1, b"Exif\0\0abc"));
        input.truncate(input.len() - 2);
        let out = strip_segments(&input).expect("truncated segment is dropped, not a panic");
        assert_eq!(out, vec![0xFF, SOI]);
    }
}
