//! Metadata removal at the container level for PNG and WebP: metadata chunks are dropped and
//! every other chunk is copied byte for byte, so the pixels (alpha, palette, bit depth,
//! animation frames) are exactly the input's. ComfyUI writes its whole node graph into PNG
//! `tEXt` chunks (`prompt`, `workflow`), into a private `comf` chunk of animated PNGs and into
//! WebP `EXIF`; none of that may reach a user.

use super::ImagingError;

pub(super) const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// PNG chunks that carry the picture or say how to show it (PNG 3rd edition and APNG): image
/// data, palette and transparency, colour space, pixel density, animation control. All
/// others go: `tEXt`, `iTXt`, `zTXt`, `eXIf`, `tIME`, and private chunks of any tool.
const PNG_KEPT: [&[u8; 4]; 18] = [
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"cICP", b"mDCV",
    b"cLLI", b"pHYs", b"bKGD", b"acTL", b"fcTL", b"fdAT",
];

/// A copy of a PNG without its metadata chunks (see [`PNG_KEPT`]) and without bytes after
/// `IEND`, and whether an `eXIf` chunk was dropped (it may have held an orientation).
///
/// Errors: [`ImagingError::Corrupt`] for a missing signature, a chunk running past the end, or
/// no `IEND`.
pub(super) fn strip_png(bytes: &[u8]) -> Result<(Vec<u8>, bool), ImagingError> {
    if !bytes.starts_with(PNG_SIGNATURE) {
        return Err(ImagingError::Corrupt("PNG signature missing".into()));
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(PNG_SIGNATURE);
    let (mut at, mut had_exif) = (PNG_SIGNATURE.len(), false);
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        // Length, type, data, CRC.
        let end = at.checked_add(12 + len).filter(|&e| e <= bytes.len());
        let Some(end) = end else {
            return Err(ImagingError::Corrupt(format!("PNG chunk at byte {at} runs past the end")));
        };
        let kind = &head[4..8];
        if PNG_KEPT.iter().any(|k| k.as_slice() == kind) {
            out.extend_from_slice(&bytes[at..end]);
        }
        had_exif |= kind == b"eXIf";
        if kind == b"IEND" {
            return Ok((out, had_exif));
        }
        at = end;
    }
    Err(ImagingError::Corrupt("PNG without IEND".into()))
}

/// VP8X flag bits (WebP container spec): EXIF and XMP metadata present.
const VP8X_EXIF: u8 = 0x08;
const VP8X_XMP: u8 = 0x04;

/// A copy of a WebP (still or animated) without its `EXIF` and `XMP ` chunks, the VP8X flags
/// and the RIFF size updated to match, and whether an `EXIF` chunk was dropped. The ICC
/// profile stays (it says how to show the colours).
///
/// Errors: [`ImagingError::Corrupt`] for a missing RIFF/WEBP header or a chunk running past
/// the end.
pub(super) fn strip_webp(bytes: &[u8]) -> Result<(Vec<u8>, bool), ImagingError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WEBP" {
        return Err(ImagingError::Corrupt("WebP RIFF header missing".into()));
    }
    // Bytes after the RIFF payload are not part of the file.
    let declared = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    let riff_end = declared.saturating_add(8).min(bytes.len());
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..12]);
    let (mut at, mut had_exif, mut vp8x_flags) = (12usize, false, None);
    while let Some(head) = bytes.get(at..at + 8).filter(|_| at + 8 <= riff_end) {
        let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        // Payloads are padded to an even size.
        let end = at.checked_add(8 + size + (size & 1)).map(|e| e.min(riff_end));
        let Some(end) = end.filter(|&e| e >= at + 8 + size) else {
            return Err(ImagingError::Corrupt(format!("WebP chunk at byte {at} runs past the end")));
        };
        match &head[0..4] {
            b"EXIF" => had_exif = true,
            b"XMP " => {}
            kind => {
                if kind == b"VP8X" && size >= 1 {
                    vp8x_flags = Some(out.len() + 8);
                }
                out.extend_from_slice(&bytes[at..end]);
            }
        }
        at = end;
    }
    if let Some(i) = vp8x_flags {
        out[i] &= !(VP8X_EXIF | VP8X_XMP);
    }
    let riff_size = u32::try_from(out.len() - 8).map_err(|_| ImagingError::Corrupt("WebP over 4 GiB".into()))?;
    out[4..8].copy_from_slice(&riff_size.to_le_bytes());
    Ok((out, had_exif))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        // The CRC is copied, never checked here: any value does.
        c.extend_from_slice(&[0xAB; 4]);
        c
    }

    fn kinds(png: &[u8]) -> Vec<String> {
        let mut at = 8;
        let mut out = Vec::new();
        while let Some(head) = png.get(at..at + 8) {
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            out.push(String::from_utf8_lossy(&head[4..8]).into_owned());
            at += 12 + len;
        }
        out
    }

    #[test]
    fn png_metadata_chunks_go_and_the_rest_is_copied_verbatim() {
        let mut png = PNG_SIGNATURE.to_vec();
        for (k, d) in [
            (b"IHDR", &b"hdr"[..]),
            (b"tEXt", b"prompt\0{\"1\": {}}"),
            (b"acTL", b"anim"),
            (b"iTXt", b"workflow\0\0\0\0\0{}"),
            (b"IDAT", b"pixels"),
            (b"comf", b"private"),
            (b"zTXt", b"x\0\0zz"),
            (b"eXIf", b"MM\0*"),
            (b"IEND", b""),
        ] {
            png.extend_from_slice(&chunk(k, d));
        }
        png.extend_from_slice(b"trailing junk");
        let (out, had_exif) = strip_png(&png).expect("strip");
        assert_eq!(kinds(&out), ["IHDR", "acTL", "IDAT", "IEND"]);
        assert!(had_exif);
        let mut want = PNG_SIGNATURE.to_vec();
        for (k, d) in [(b"IHDR", &b"hdr"[..]), (b"acTL", b"anim"), (b"IDAT", b"pixels"), (b"IEND", b"")] {
            want.extend_from_slice(&chunk(k, d));
        }
        assert_eq!(out, want, "kept chunks byte for byte, nothing after IEND");
        assert!(matches!(strip_png(&png[..png.len() - 30]), Err(ImagingError::Corrupt(_))), "cut short");
        assert!(matches!(strip_png(b"GIF89a"), Err(ImagingError::Corrupt(_))));
    }

    #[test]
    fn webp_exif_and_xmp_go_and_the_flags_and_size_follow() {
        let riff = |chunks: &[(&[u8; 4], &[u8])]| {
            let mut body = b"WEBP".to_vec();
            for (k, d) in chunks {
                body.extend_from_slice(*k);
                body.extend_from_slice(&(d.len() as u32).to_le_bytes());
                body.extend_from_slice(d);
                if d.len() % 2 == 1 {
                    body.push(0);
                }
            }
            let mut f = b"RIFF".to_vec();
            f.extend_from_slice(&(body.len() as u32).to_le_bytes());
            f.extend_from_slice(&body);
            f
        };
        let flags = 0x10 | 0x02 | VP8X_EXIF | VP8X_XMP;
        let vp8x = [flags, 0, 0, 0, 9, 0, 0, 9, 0, 0];
        let input = riff(&[
            (b"VP8X", &vp8x),
            (b"ANIM", b"animat"),
            (b"ANMF", b"frame"),
            (b"EXIF", b"prompt={...}"),
            (b"XMP ", b"<x/>"),
        ]);
        let (out, had_exif) = strip_webp(&input).expect("strip");
        assert!(had_exif);
        let mut kept = vp8x;
        kept[0] = 0x10 | 0x02;
        assert_eq!(out, riff(&[(b"VP8X", &kept), (b"ANIM", b"animat"), (b"ANMF", b"frame")]));
        assert!(matches!(strip_webp(&input[..input.len() - 20]), Err(ImagingError::Corrupt(_))));
    }
}
