use super::*;
use crate::tests::fakes::comfyui::recorded_video_bytes as recorded;

fn top_level(data: &[u8]) -> Vec<String> {
    boxes(data, 0, data.len()).expect("boxes").iter().map(|b| String::from_utf8_lossy(&b.kind).into_owned()).collect()
}

/// Every sample of every track, as the mp4 crate reads it: (track id, sample bytes).
fn samples(data: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut r = mp4::Mp4Reader::read_header(std::io::Cursor::new(data), data.len() as u64).expect("mp4 reads");
    let mut ids: Vec<u32> = r.tracks().keys().copied().collect();
    ids.sort();
    let mut out = vec![];
    for id in ids {
        for s in 1..=r.sample_count(id).expect("count") {
            let sample = r.read_sample(id, s).expect("sample").expect("present");
            out.push((id, sample.bytes.to_vec()));
        }
    }
    out
}

#[test]
fn the_recorded_savevideo_mp4_is_probed() {
    let mp4 = recorded("video_from_image");
    assert_eq!(top_level(&mp4), ["ftyp", "free", "mdat", "moov"], "SaveVideo writes moov last");
    // 64×48, 12 frames at 8 fps = 1.5 s, rounded to 2.
    assert_eq!(probe(&mp4), Some(VideoMeta { duration_secs: 2, width: 64, height: 48 }));
    assert!(!is_faststart(&mp4));
}

#[test]
fn faststart_moves_moov_and_keeps_every_sample() {
    let mp4 = recorded("video_from_image");
    let fast = faststart(&mp4).expect("moov was last");
    assert_eq!(fast.len(), mp4.len());
    assert_eq!(top_level(&fast), ["ftyp", "free", "moov", "mdat"]);
    assert!(is_faststart(&fast));
    assert_eq!(faststart(&fast), None, "already faststart");
    assert_eq!(probe(&fast), probe(&mp4));

    // The mp4 crate reads the same tracks and samples; the bytes at the new offsets are the old ones.
    let (before, after) = (samples(&mp4), samples(&fast));
    assert_eq!(before.len(), 12);
    assert_eq!(before, after);
    let r = mp4::Mp4Reader::read_header(std::io::Cursor::new(&fast), fast.len() as u64).expect("reads");
    let track = r.tracks().values().next().expect("a track");
    assert_eq!((track.width(), track.height()), (64, 48));
    assert_eq!(track.box_type().expect("type").to_string(), "avc1");
}

#[test]
fn webm_and_animations_are_probed() {
    let webm = recorded("video_webm");
    assert_eq!(probe(&webm), Some(VideoMeta { duration_secs: 2, width: 64, height: 48 }));
    let webp = recorded("video_animated_webp");
    assert_eq!(probe(&webp), Some(VideoMeta { duration_secs: 2, width: 64, height: 48 }), "12 × 125 ms");
    let apng = recorded("video_animated_png");
    assert_eq!(probe(&apng), Some(VideoMeta { duration_secs: 2, width: 64, height: 48 }), "12 × 1/8 s");

    // A GIF of 3 frames × 40 cs = 1.2 s.
    let mut gif = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut gif);
        for i in 0..3u8 {
            let frame = image::RgbaImage::from_pixel(30, 20, image::Rgba([i * 80, 0, 0, 255]));
            let delay = image::Delay::from_numer_denom_ms(400, 1);
            enc.encode_frame(image::Frame::from_parts(frame, 0, 0, delay)).expect("gif frame");
        }
    }
    assert_eq!(probe(&gif), Some(VideoMeta { duration_secs: 1, width: 30, height: 20 }));
    assert_eq!(probe(b"%PDF-1.7 whatever"), None);
}

#[test]
fn thumbnails_come_from_animation_frames_not_from_video() {
    for session in ["video_animated_webp", "video_animated_png"] {
        let jpeg = thumbnail(&recorded(session)).expect("first frame");
        assert!(jpeg.starts_with(&[0xFF, 0xD8, 0xFF]), "{session}: a JPEG");
        let img = image::load_from_memory(&jpeg).expect("decodes");
        assert!(img.width().max(img.height()) <= 320);
        assert_eq!((img.width(), img.height()), (64, 48));
    }
    assert_eq!(thumbnail(&recorded("video_from_image")), None, "no H.264 decoder");
    assert_eq!(thumbnail(&recorded("video_webm")), None, "no VP9 decoder");
}

#[test]
fn demo_video_is_a_faststart_h264_mp4() {
    let mp4 = demo_video("a cat", 200, 120, 12, 8, 7).expect("encodes");
    // For a look by hand (ffprobe / a player); the test itself needs no tools.
    if let Ok(path) = std::env::var("MEDIABOT_DEMO_VIDEO_OUT") {
        std::fs::write(path, &mp4).expect("write");
    }
    assert_eq!(&mp4[4..8], b"ftyp");
    assert!(is_faststart(&mp4));
    assert_eq!(probe(&mp4), Some(VideoMeta { duration_secs: 2, width: 200, height: 120 }));
    let mut r = mp4::Mp4Reader::read_header(std::io::Cursor::new(&mp4), mp4.len() as u64).expect("reads");
    assert_eq!(r.tracks().len(), 1);
    let track = r.tracks().get(&1).expect("track 1");
    assert_eq!(track.box_type().expect("type").to_string(), "avc1");
    assert_eq!(track.media_type().expect("media"), mp4::MediaType::H264);
    assert_eq!((track.width(), track.height()), (200, 120));
    assert_eq!(track.sample_count(), 12);
    assert_eq!(track.duration(), std::time::Duration::from_millis(1500));
    assert!(!track.sequence_parameter_set().expect("sps").is_empty());
    let first = r.read_sample(1, 1).expect("sample").expect("present");
    assert!(first.is_sync);
    let len = u32::from_be_bytes(first.bytes[0..4].try_into().expect("4 bytes")) as usize;
    assert_eq!(len + 4, first.bytes.len(), "one length-prefixed NAL unit");
    assert_eq!(first.bytes[4] & 0x1F, 5, "an IDR slice");

    // Odd and huge sizes are clamped and made even; frames are capped.
    let small = demo_video("", 999, 77, 500, 8, 1).expect("encodes");
    let meta = probe(&small).expect("probes");
    assert_eq!((meta.width, meta.height), (DEMO_MAX_SIDE, 76));
    let r = mp4::Mp4Reader::read_header(std::io::Cursor::new(&small), small.len() as u64).expect("reads");
    assert_eq!(r.tracks().get(&1).expect("track").sample_count(), DEMO_MAX_FRAMES);
}

#[test]
fn hostile_bytes_never_panic() {
    let mut files = vec![
        recorded("video_from_image"),
        recorded("video_webm"),
        recorded("video_animated_webp"),
        recorded("video_animated_png"),
    ];
    files.push(faststart(&files[0]).expect("faststart"));
    for file in &files {
        // Every truncation.
        for n in 0..file.len() {
            let cut = &file[..n];
            let _ = probe(cut);
            let _ = faststart(cut);
            let _ = is_faststart(cut);
        }
        // Corruptions: every byte of the first 600 set to 0xFF, then to 0x00, and a pseudo-random
        // sprinkle over the rest.
        let mut seed: u32 = 0x9E37_79B9;
        for i in 0..file.len().min(600) {
            for v in [0xFF, 0x00, 0x01] {
                let mut bad = file.clone();
                bad[i] = v;
                let _ = probe(&bad);
                let _ = faststart(&bad);
            }
        }
        for _ in 0..200 {
            let mut bad = file.clone();
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let at = seed as usize % bad.len();
                bad[at] = (seed >> 8) as u8;
            }
            let _ = probe(&bad);
            let _ = faststart(&bad);
            let _ = thumbnail(&bad);
        }
    }
    // Sizes that claim more than there is.
    let _ = probe(b"\0\0\0\x10ftypisom\0\0\0\0\xff\xff\xff\xffmoov");
    let _ = faststart(b"\0\0\0\x10ftypisom\0\0\0\0\0\0\0\x01mdat\xff\xff\xff\xff\xff\xff\xff\xff");
    let _ = probe(&[0x1A, 0x45, 0xDF, 0xA3, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x18, 0x53, 0x80, 0x67]);
    let _ = probe(b"GIF89a\xff\xff\xff\xff\xf7");
}
