//! Video and animation files as bytes: metadata ([`probe`]), streaming layout ([`faststart`]),
//! a Telegram thumbnail ([`thumbnail`]) and the sandbox's demo clip ([`demo_video`]).
//!
//! Everything here is pure and bounded: hostile input gives `None`, never a panic or an
//! allocation larger than the input. MP4 and WebM are read with small box / element walkers of
//! our own (the same walk serves `faststart`): the `mp4` crate's reader allocates by the counts
//! a file declares and indexes by them, so it is used only to *write* the demo clip and, in the
//! tests, to cross-check what we read. WebM uses a minimal EBML read (Info and Tracks only; the
//! clusters are never touched) rather than a demuxer crate: four element ids are all we need.

use crate::domain::MediaKind;
use image::RgbImage;

/// Playback facts of a video or animation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct VideoMeta {
    /// Length in whole seconds, rounded to nearest; at least 1 for any length above zero, 0 when
    /// the file does not say (a still, or an MP4 / WebM without a duration).
    pub duration_secs: u32,
    /// Frame width in pixels (an MP4's track header, a WebM's PixelWidth, an animation's canvas).
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
}

/// Reads duration and frame size of MP4/MOV (`mvhd` + the first `tkhd` with a size), WebM
/// (Info/Duration × TimecodeScale, the first track's PixelWidth/PixelHeight), GIF (logical
/// screen + Graphic Control delays; a delay under 2 cs counts as 10 cs, as browsers play it),
/// animated WebP (VP8X canvas + ANMF durations) and PNG/APNG (IHDR + fcTL delays). `None` for
/// other formats and for anything truncated or inconsistent before the size is known.
pub fn probe(bytes: &[u8]) -> Option<VideoMeta> {
    if bytes.len() > 12 && &bytes[4..8] == b"ftyp" {
        probe_mp4(bytes)
    } else if bytes.starts_with(&EBML_MAGIC) {
        probe_webm(bytes)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        probe_gif(bytes)
    } else if bytes.len() > 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        probe_webp(bytes)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        probe_png(bytes)
    } else {
        None
    }
}

/// Whole seconds from `units` at `per_sec` units a second (rounded; ≥ 1 when above zero).
fn whole_secs(units: u64, per_sec: u64) -> u32 {
    if units == 0 || per_sec == 0 {
        return 0;
    }
    let secs = (units.saturating_add(per_sec / 2)) / per_sec;
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------------------------
// ISO-BMFF (MP4 / MOV)

/// One box: its type and where it is in the buffer it was read from.
#[derive(Debug, Clone, Copy)]
struct Bmff {
    kind: [u8; 4],
    /// Offset of the size field.
    start: usize,
    /// Offset of the content (after size, type and any 64-bit size).
    body: usize,
    /// Offset just past the box.
    end: usize,
}

/// The boxes in `data[from..to]`, in order; `None` when one is cut off or malformed. A box of
/// size 0 runs to `to` (ISO/IEC 14496-12 §4.2).
fn boxes(data: &[u8], from: usize, to: usize) -> Option<Vec<Bmff>> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let head = data.get(at..at.checked_add(8)?)?;
        let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let kind = [head[4], head[5], head[6], head[7]];
        let (body, end) = match size32 {
            0 => (at + 8, to),
            1 => {
                let large = data.get(at + 8..at + 16)?;
                let size = u64::from_be_bytes(large.try_into().ok()?);
                (at + 16, at.checked_add(usize::try_from(size).ok()?)?)
            }
            n => (at + 8, at.checked_add(n as usize)?),
        };
        if end < body || end > to {
            return None;
        }
        out.push(Bmff { kind, start: at, body, end });
        at = end;
    }
    Some(out)
}

/// The first child of `parent` of type `kind`.
fn child(data: &[u8], parent: &Bmff, kind: &[u8; 4]) -> Option<Bmff> {
    boxes(data, parent.body, parent.end)?.into_iter().find(|b| &b.kind == kind)
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

fn be_u64(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

/// (timescale, duration) of an `mvhd` or `mdhd` full box (versions 0 and 1).
fn header_duration(data: &[u8], b: &Bmff) -> Option<(u64, u64)> {
    match data.get(b.body)? {
        0 => Some((u64::from(be_u32(data, b.body + 12)?), u64::from(be_u32(data, b.body + 16)?))),
        1 => Some((u64::from(be_u32(data, b.body + 20)?), be_u64(data, b.body + 24)?)),
        _ => None,
    }
}

fn probe_mp4(data: &[u8]) -> Option<VideoMeta> {
    let top = boxes(data, 0, data.len())?;
    let moov = top.iter().find(|b| &b.kind == b"moov")?;
    let inside = boxes(data, moov.body, moov.end)?;
    let mut meta = VideoMeta::default();
    if let Some((scale, units)) = inside.iter().find(|b| &b.kind == b"mvhd").and_then(|b| header_duration(data, b)) {
        meta.duration_secs = whole_secs(units, scale);
    }
    for trak in inside.iter().filter(|b| &b.kind == b"trak") {
        let Some(tkhd) = child(data, trak, b"tkhd") else { continue };
        // Width and height are the last two fields, 16.16 fixed point.
        let at = match data.get(tkhd.body)? {
            0 => tkhd.body + 76,
            1 => tkhd.body + 88,
            _ => continue,
        };
        let (w, h) = (be_u32(data, at)? >> 16, be_u32(data, at + 4)? >> 16);
        if w > 0 && h > 0 {
            meta.width = w;
            meta.height = h;
            if meta.duration_secs == 0 {
                let mdhd = child(data, trak, b"mdia").and_then(|m| child(data, &m, b"mdhd"));
                if let Some((scale, units)) = mdhd.and_then(|b| header_duration(data, &b)) {
                    meta.duration_secs = whole_secs(units, scale);
                }
            }
            return Some(meta);
        }
    }
    None
}

/// Whether an MP4's `moov` comes before its first `mdat` (a player can start before the whole
/// file arrived). `false` for anything that is not a readable MP4 with both boxes.
pub fn is_faststart(data: &[u8]) -> bool {
    let Some(top) = boxes(data, 0, data.len()) else { return false };
    let moov = top.iter().position(|b| &b.kind == b"moov");
    let mdat = top.iter().position(|b| &b.kind == b"mdat");
    matches!((moov, mdat), (Some(m), Some(d)) if m < d)
}

/// Moves an MP4's `moov` box in front of its first `mdat` (what `ffmpeg -movflags faststart`
/// and qt-faststart do), so Telegram can stream it (`supports_streaming`). Every chunk offset
/// in each track's `stco` / `co64` (moov/trak/mdia/minf/stbl) that pointed between the new
/// place and the old one moves by moov's size; the sample bytes are not touched.
///
/// `None` when the file is already faststart, is not a readable MP4 with `moov` and `mdat`,
/// or a 32-bit chunk offset would overflow once moved.
pub fn faststart(data: &[u8]) -> Option<Vec<u8>> {
    if !(data.len() > 12 && &data[4..8] == b"ftyp") {
        return None;
    }
    let top = boxes(data, 0, data.len())?;
    let moov_at = top.iter().position(|b| &b.kind == b"moov")?;
    let mdat_at = top.iter().position(|b| &b.kind == b"mdat")?;
    if moov_at < mdat_at {
        return None;
    }
    let (moov, first_mdat) = (top[moov_at], top[mdat_at]);
    let shift = u64::try_from(moov.end - moov.start).ok()?;
    let (from, to) = (first_mdat.start as u64, moov.start as u64);
    let mut new_moov = data[moov.start..moov.end].to_vec();
    let base = moov.start;
    // Walk the copy with offsets relative to it.
    let rel = |b: Bmff| Bmff { kind: b.kind, start: b.start - base, body: b.body - base, end: b.end - base };
    let moov_rel = rel(moov);
    for trak in boxes(&new_moov, moov_rel.body, moov_rel.end)?.into_iter().filter(|b| &b.kind == b"trak") {
        let Some(stbl) = child(&new_moov, &trak, b"mdia")
            .and_then(|m| child(&new_moov, &m, b"minf"))
            .and_then(|m| child(&new_moov, &m, b"stbl"))
        else {
            continue;
        };
        for table in boxes(&new_moov, stbl.body, stbl.end)? {
            let wide = match &table.kind {
                b"stco" => false,
                b"co64" => true,
                _ => continue,
            };
            let count = be_u32(&new_moov, table.body + 4)? as usize;
            let width = if wide { 8 } else { 4 };
            let first = table.body + 8;
            if count.checked_mul(width)?.checked_add(first)? > table.end {
                return None;
            }
            for i in 0..count {
                let at = first + i * width;
                let old = if wide { be_u64(&new_moov, at)? } else { u64::from(be_u32(&new_moov, at)?) };
                let new = if (from..to).contains(&old) { old.checked_add(shift)? } else { old };
                if wide {
                    new_moov[at..at + 8].copy_from_slice(&new.to_be_bytes());
                } else {
                    new_moov[at..at + 4].copy_from_slice(&u32::try_from(new).ok()?.to_be_bytes());
                }
            }
        }
    }
    let mut out = Vec::with_capacity(data.len());
    out.extend_from_slice(&data[..first_mdat.start]);
    out.extend_from_slice(&new_moov);
    out.extend_from_slice(&data[first_mdat.start..moov.start]);
    out.extend_from_slice(&data[moov.end..]);
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// EBML (WebM / Matroska)

const EBML_MAGIC: [u8; 4] = [0x1A, 0x45, 0xDF, 0xA3];
const SEGMENT: u32 = 0x1853_8067;
const INFO: u32 = 0x1549_A966;
const TIMECODE_SCALE: u32 = 0x2A_D7B1;
const DURATION: u32 = 0x4489;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const CLUSTER: u32 = 0x1F43_B675;

/// One EBML element: id (with its length marker, as the specs write ids), content range;
/// `end` is `None` for an unknown size.
struct Element {
    id: u32,
    body: usize,
    end: Option<usize>,
}

/// Reads a variable-length integer at `at`: (value, length). `keep_marker` for ids.
fn vint(data: &[u8], at: usize, keep_marker: bool, max_len: usize) -> Option<(u64, usize)> {
    let first = *data.get(at)?;
    let len = first.leading_zeros() as usize + 1;
    if len > max_len {
        return None;
    }
    let mut value = if keep_marker { u64::from(first) } else { u64::from(first) & (0xFF >> len) };
    for i in 1..len {
        value = (value << 8) | u64::from(*data.get(at + i)?);
    }
    Some((value, len))
}

fn element(data: &[u8], at: usize, limit: usize) -> Option<Element> {
    let (id, id_len) = vint(data, at, true, 4)?;
    let (size, size_len) = vint(data, at + id_len, false, 8)?;
    let body = at + id_len + size_len;
    let unknown = size == (1u64 << (7 * size_len)) - 1;
    let end = if unknown { None } else { Some(body.checked_add(usize::try_from(size).ok()?)?) };
    if body > limit || end.is_some_and(|e| e > limit) {
        return None;
    }
    Some(Element { id: u32::try_from(id).ok()?, body, end })
}

/// The children of `data[from..to]`; stops (keeping what was read) at an unknown-size child or
/// a cluster, since nothing we read comes after the first cluster in a WebM written by a muxer.
fn elements(data: &[u8], from: usize, to: usize) -> Vec<Element> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let Some(e) = element(data, at, to) else { break };
        let (id, next) = (e.id, e.end);
        out.push(e);
        match next {
            Some(n) if id != CLUSTER => at = n,
            _ => break,
        }
    }
    out
}

fn ebml_uint(data: &[u8], e: &Element) -> Option<u64> {
    let bytes = data.get(e.body..e.end?)?;
    if bytes.len() > 8 {
        return None;
    }
    Some(bytes.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b)))
}

fn ebml_float(data: &[u8], e: &Element) -> Option<f64> {
    let bytes = data.get(e.body..e.end?)?;
    match bytes.len() {
        4 => Some(f64::from(f32::from_be_bytes(bytes.try_into().ok()?))),
        8 => Some(f64::from_be_bytes(bytes.try_into().ok()?)),
        _ => None,
    }
}

fn probe_webm(data: &[u8]) -> Option<VideoMeta> {
    let top = elements(data, 0, data.len());
    let segment = top.iter().find(|e| e.id == SEGMENT)?;
    let seg_end = segment.end.unwrap_or(data.len()).min(data.len());
    let mut meta = VideoMeta::default();
    for e in elements(data, segment.body, seg_end) {
        let Some(end) = e.end else { continue };
        match e.id {
            INFO => {
                let info = elements(data, e.body, end);
                let scale =
                    info.iter().find(|c| c.id == TIMECODE_SCALE).and_then(|c| ebml_uint(data, c)).unwrap_or(1_000_000);
                if let Some(d) = info.iter().find(|c| c.id == DURATION).and_then(|c| ebml_float(data, c)) {
                    let nanos = d * scale as f64;
                    if nanos.is_finite() && nanos > 0.0 && nanos < 1e18 {
                        meta.duration_secs = whole_secs(nanos as u64, 1_000_000_000);
                    }
                }
            }
            TRACKS if meta.width == 0 => {
                for entry in elements(data, e.body, end).into_iter().filter(|c| c.id == TRACK_ENTRY) {
                    let Some(video) = elements(data, entry.body, entry.end?).into_iter().find(|c| c.id == VIDEO) else {
                        continue;
                    };
                    let fields = elements(data, video.body, video.end?);
                    let get = |id| fields.iter().find(|c| c.id == id).and_then(|c| ebml_uint(data, c));
                    if let (Some(w), Some(h)) = (get(PIXEL_WIDTH), get(PIXEL_HEIGHT)) {
                        meta.width = u32::try_from(w).ok()?;
                        meta.height = u32::try_from(h).ok()?;
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    (meta.width > 0 && meta.height > 0).then_some(meta)
}

// ---------------------------------------------------------------------------------------------
// Animations

fn le_u16(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from(u16::from_le_bytes(data.get(at..at.checked_add(2)?)?.try_into().ok()?)))
}

fn le_u24(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(3)?)?;
    Some(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16)
}

/// GIF89a: walks the blocks (GIF89a spec §§17–27), summing Graphic Control delays.
fn probe_gif(data: &[u8]) -> Option<VideoMeta> {
    let (width, height) = (le_u16(data, 6)?, le_u16(data, 8)?);
    let flags = *data.get(10)?;
    let mut at = 13;
    if flags & 0x80 != 0 {
        at += 3 << ((flags & 7) + 1);
    }
    let skip_sub_blocks = |mut at: usize| -> Option<usize> {
        loop {
            let n = *data.get(at)? as usize;
            at += 1 + n;
            if n == 0 {
                return Some(at);
            }
        }
    };
    let mut centis: u64 = 0;
    loop {
        match data.get(at) {
            Some(0x21) => {
                let label = *data.get(at + 1)?;
                if label == 0xF9 {
                    let delay = u64::from(le_u16(data, at + 4)?);
                    centis += if delay < 2 { 10 } else { delay };
                }
                at = skip_sub_blocks(at + 2)?;
            }
            Some(0x2C) => {
                let local = *data.get(at + 9)?;
                at += 10;
                if local & 0x80 != 0 {
                    at += 3 << ((local & 7) + 1);
                }
                at = skip_sub_blocks(at + 1)?; // after the LZW minimum code size
            }
            // The trailer, or a file cut short after its frames: what was read counts.
            _ => break,
        }
    }
    (width > 0 && height > 0).then_some(VideoMeta { duration_secs: whole_secs(centis, 100), width, height })
}

/// WebP: the VP8X canvas and the ANMF frame durations (WebP container spec); a still WebP
/// has its size from VP8 / VP8L and no duration.
fn probe_webp(data: &[u8]) -> Option<VideoMeta> {
    let mut at: usize = 12;
    let mut meta = VideoMeta::default();
    let mut millis: u64 = 0;
    while let Some(head) = data.get(at..at.checked_add(8)?) {
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let body = at + 8;
        match &head[0..4] {
            b"VP8X" => {
                meta.width = le_u24(data, body + 4)? + 1;
                meta.height = le_u24(data, body + 7)? + 1;
            }
            b"ANMF" => millis += u64::from(le_u24(data, body + 12)?),
            b"VP8 " if meta.width == 0 => {
                meta.width = le_u16(data, body + 6)? & 0x3FFF;
                meta.height = le_u16(data, body + 8)? & 0x3FFF;
            }
            b"VP8L" if meta.width == 0 => {
                let bits = u32::from_le_bytes(data.get(body + 1..body + 5)?.try_into().ok()?);
                meta.width = (bits & 0x3FFF) + 1;
                meta.height = ((bits >> 14) & 0x3FFF) + 1;
            }
            _ => {}
        }
        at = body.checked_add(len)?.checked_add(len & 1)?;
    }
    meta.duration_secs = whole_secs(millis, 1000);
    (meta.width > 0 && meta.height > 0).then_some(meta)
}

/// PNG / APNG: IHDR size, and the sum of fcTL delays (delay_num / delay_den s, a den of 0
/// meaning 100; APNG spec §3.3).
fn probe_png(data: &[u8]) -> Option<VideoMeta> {
    let mut at: usize = 8;
    let mut meta = VideoMeta::default();
    let mut millis: u64 = 0;
    while let Some(head) = data.get(at..at.checked_add(8)?) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let body = at + 8;
        match &head[4..8] {
            b"IHDR" => {
                meta.width = be_u32(data, body)?;
                meta.height = be_u32(data, body + 4)?;
            }
            b"fcTL" => {
                let num = u64::from(u16::from_be_bytes(data.get(body + 20..body + 22)?.try_into().ok()?));
                let den = u64::from(u16::from_be_bytes(data.get(body + 22..body + 24)?.try_into().ok()?));
                millis += num * 1000 / if den == 0 { 100 } else { den };
            }
            b"IEND" => break,
            _ => {}
        }
        at = body.checked_add(len)?.checked_add(4)?;
    }
    meta.duration_secs = whole_secs(millis, 1000);
    (meta.width > 0 && meta.height > 0).then_some(meta)
}

// ---------------------------------------------------------------------------------------------
// Thumbnail

/// A JPEG of at most 320 px on the long side (Telegram's `thumbnail` rule: JPEG, ≤ 320 px,
/// < 200 kB; protocols.md §1.4) from the first frame of a GIF, an animated WebP or an APNG
/// (the image crate decodes the first frame; `imaging::thumbnail` scales and encodes it).
///
/// `None` for MP4 and WebM: there is no pure-Rust H.264 / VP9 decoder to take a frame from,
/// so the job engine uses the job's input photo instead (scaled the same way with
/// [`super::thumbnail`]); a text-to-video result gets no thumbnail and Telegram makes its own.
pub fn thumbnail(bytes: &[u8]) -> Option<Vec<u8>> {
    let (kind, mime, _) = MediaKind::sniff(bytes);
    let decodable = matches!(mime, "image/gif" | "image/webp" | "image/png" | "image/apng" | "image/jpeg");
    if kind == MediaKind::Video || !decodable {
        return None;
    }
    super::thumbnail(bytes, super::THUMBNAIL_SIDE, &super::Limits::default()).ok()
}

// ---------------------------------------------------------------------------------------------
// Demo clip

/// Largest side of a demo clip, px.
pub const DEMO_MAX_SIDE: u32 = 256;
/// Most frames in a demo clip.
pub const DEMO_MAX_FRAMES: u32 = 24;

/// A real, playable H.264 MP4 for the sandbox: [`super::render_demo`]'s picture for `prompt`
/// and `seed` with a light band sweeping across it and a progress line along the bottom,
/// `frames` frames at `fps` frames a second. Encoded with `less-avc` (baseline profile, every
/// frame an IDR of PCM macroblocks — lossless and large, fine for a few small frames), muxed
/// with the `mp4` crate's writer (one `avc1` track, ftyp `isom`) and then made
/// [`faststart`].
///
/// Sizes are clamped to 32–[`DEMO_MAX_SIDE`] and made even (4:2:0 chroma), frames to
/// 1–[`DEMO_MAX_FRAMES`], fps to 1–30.
///
/// Errors: [`super::ImagingError::Encode`] when rendering, encoding or muxing fails.
pub fn demo_video(
    prompt: &str,
    width: u32,
    height: u32,
    frames: u32,
    fps: u32,
    seed: u64,
) -> Result<Vec<u8>, super::ImagingError> {
    use super::ImagingError::Encode;
    let even = |v: u32| (v.clamp(32, DEMO_MAX_SIDE)) & !1;
    let (width, height) = (even(width), even(height));
    let frames = frames.clamp(1, DEMO_MAX_FRAMES);
    let fps = fps.clamp(1, 30);
    let png = super::render_demo(prompt, width, height, seed)?;
    let base = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
        .map_err(|e| Encode(format!("demo frame: {e}")))?
        .to_rgb8();
    let (width, height) = (base.width() & !1, base.height() & !1);

    let mut nals: Vec<Vec<u8>> = Vec::with_capacity(frames as usize);
    let mut encoder = None;
    let (mut sps, mut pps) = (Vec::new(), Vec::new());
    for i in 0..frames {
        let frame = demo_frame(&base, width, height, i, frames);
        let planes = Yuv420::from_rgb(&frame, width, height);
        let image = planes.image(width, height);
        match encoder.as_mut() {
            None => {
                let (initial, enc) = less_avc::LessEncoder::new(&image).map_err(|e| Encode(format!("H.264: {e}")))?;
                sps = initial.sps.to_nal_unit();
                pps = initial.pps.to_nal_unit();
                nals.push(initial.frame.to_nal_unit());
                encoder = Some(enc);
            }
            Some(enc) => nals.push(enc.encode(&image).map_err(|e| Encode(format!("H.264: {e}")))?.to_nal_unit()),
        }
    }

    let mux = |e: mp4::Error| Encode(format!("MP4: {e}"));
    let brand = |s: &str| s.parse::<mp4::FourCC>().map_err(mux);
    let config = mp4::Mp4Config {
        major_brand: brand("isom")?,
        minor_version: 512,
        compatible_brands: vec![brand("isom")?, brand("iso2")?, brand("avc1")?, brand("mp41")?],
        timescale: 1000,
    };
    let mut writer = mp4::Mp4Writer::write_start(std::io::Cursor::new(Vec::new()), &config).map_err(mux)?;
    let ticks = 100u32; // per frame: timescale fps × 100
    writer
        .add_track(&mp4::TrackConfig {
            track_type: mp4::TrackType::Video,
            timescale: fps * ticks,
            language: "und".into(),
            media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
                width: u16::try_from(width).map_err(|e| Encode(e.to_string()))?,
                height: u16::try_from(height).map_err(|e| Encode(e.to_string()))?,
                seq_param_set: sps,
                pic_param_set: pps,
            }),
        })
        .map_err(mux)?;
    for (i, nal) in nals.into_iter().enumerate() {
        // AVCC sample: a 4-byte big-endian length before the NAL unit.
        let len = u32::try_from(nal.len()).map_err(|e| Encode(e.to_string()))?;
        let mut sample = Vec::with_capacity(nal.len() + 4);
        sample.extend_from_slice(&len.to_be_bytes());
        sample.extend_from_slice(&nal);
        let sample = mp4::Mp4Sample {
            start_time: i as u64 * u64::from(ticks),
            duration: ticks,
            rendering_offset: 0,
            is_sync: true,
            bytes: bytes::Bytes::from(sample),
        };
        writer.write_sample(1, &sample).map_err(mux)?;
    }
    writer.write_end().map_err(mux)?;
    let out = writer.into_writer().into_inner();
    Ok(faststart(&out).unwrap_or(out))
}

/// Frame `i` of `n`: the base picture with a brighter vertical band at `i / n` of the width and
/// a white progress line along the bottom.
fn demo_frame(base: &RgbImage, width: u32, height: u32, i: u32, n: u32) -> RgbImage {
    let band_w = (width / 6).max(4);
    let centre = (u64::from(width) * u64::from(i) / u64::from(n.max(1))) as u32;
    let progress = (u64::from(width) * u64::from(i + 1) / u64::from(n.max(1))) as u32;
    RgbImage::from_fn(width, height, |x, y| {
        let mut px = *base.get_pixel(x, y);
        if y + 4 >= height && x < progress {
            return image::Rgb([255, 255, 255]);
        }
        if x.abs_diff(centre) < band_w / 2 {
            for c in &mut px.0 {
                *c = c.saturating_add((255 - *c) / 2);
            }
        }
        px
    })
}

/// 8-bit Y, Cb, Cr planes padded to whole macroblocks (16 px luma, 8 px chroma), as less-avc
/// reads them.
struct Yuv420 {
    y: Vec<u8>,
    cb: Vec<u8>,
    cr: Vec<u8>,
    stride: usize,
}

impl Yuv420 {
    /// BT.601 limited range from RGB; chroma is the mean of each 2×2 block.
    fn from_rgb(rgb: &RgbImage, width: u32, height: u32) -> Yuv420 {
        let (w, h) = (width as usize, height as usize);
        let stride = w.div_ceil(16) * 16;
        let rows = h.div_ceil(16) * 16;
        let mut y = vec![16u8; stride * rows];
        let (cstride, crows) = (stride / 2, rows / 2);
        let mut cb = vec![128u8; cstride * crows];
        let mut cr = vec![128u8; cstride * crows];
        let clamp = |v: i32| v.clamp(0, 255) as u8;
        for row in 0..h {
            for col in 0..w {
                let [r, g, b] = rgb.get_pixel(col as u32, row as u32).0.map(i32::from);
                y[row * stride + col] = clamp(((66 * r + 129 * g + 25 * b + 128) >> 8) + 16);
            }
        }
        for row in 0..h / 2 {
            for col in 0..w / 2 {
                let mut sum = [0i32; 3];
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let p = rgb.get_pixel((col * 2 + dx) as u32, (row * 2 + dy) as u32).0;
                    for c in 0..3 {
                        sum[c] += i32::from(p[c]);
                    }
                }
                let [r, g, b] = sum.map(|s| (s + 2) / 4);
                cb[row * cstride + col] = clamp(((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128);
                cr[row * cstride + col] = clamp(((112 * r - 94 * g - 18 * b + 128) >> 8) + 128);
            }
        }
        Yuv420 { y, cb, cr, stride }
    }

    fn image(&self, width: u32, height: u32) -> less_avc::ycbcr_image::YCbCrImage<'_> {
        use less_avc::BitDepth::Depth8;
        use less_avc::ycbcr_image::{DataPlane, Planes, YCbCrImage};
        fn plane(data: &[u8], stride: usize) -> DataPlane<'_> {
            DataPlane { data, stride, bit_depth: Depth8 }
        }
        YCbCrImage {
            planes: Planes::YCbCr((
                plane(&self.y, self.stride),
                plane(&self.cb, self.stride / 2),
                plane(&self.cr, self.stride / 2),
            )),
            width,
            height,
        }
    }
}

#[cfg(test)]
mod tests;
