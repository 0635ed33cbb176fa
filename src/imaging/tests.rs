//! Tests over the real files in `shared/testdata/photos` (see its README for what each is).

use super::*;
use image::{AnimationDecoder, DynamicImage, GenericImageView, RgbImage};
use libjpeg_turbo_rs::{PixelFormat, Subsampling};
use std::io::Cursor;
use std::time::{Duration, Instant};

const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/photos");

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{PHOTOS}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every test file, as paths relative to `PHOTOS`.
fn all_photos() -> Vec<String> {
    let mut names = Vec::new();
    for sub in ["", "orientation/"] {
        for entry in std::fs::read_dir(format!("{PHOTOS}/{sub}")).expect("testdata") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if path.is_file() && name != "SHA256SUMS" {
                names.push(format!("{sub}{name}"));
            }
        }
    }
    names.sort();
    assert!(names.len() >= 25, "testdata missing: {names:?}");
    names
}

/// True if a JPEG has any APP1 segment (EXIF or XMP) before its first scan.
fn has_app1(bytes: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= bytes.len() && bytes[i] == 0xFF {
        let marker = bytes[i + 1];
        if marker == 0xDA || marker == 0xD9 {
            return false;
        }
        if marker == 0xE1 {
            return true;
        }
        i += 2 + usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]));
    }
    false
}

fn decode_output(bytes: &[u8]) -> DynamicImage {
    image::load_from_memory(bytes).expect("output decodes")
}

/// Fails unless `bytes` is a JPEG that `sendPhoto` accepts and carries no EXIF.
fn assert_telegram_photo(bytes: &[u8], what: &str) -> (u32, u32) {
    assert!(bytes.starts_with(&[0xFF, 0xD8, 0xFF]), "{what}: not a JPEG");
    assert!(bytes.len() <= 10_000_000, "{what}: {} bytes", bytes.len());
    assert!(!jpeg::has_exif_segment(bytes), "{what}: EXIF left in");
    let (w, h) = decode_output(bytes).dimensions();
    assert!(w.max(h) <= 2560, "{what}: {w}×{h}");
    assert!(w + h <= 10_000, "{what}: {w}×{h}");
    assert!(w <= 20 * h && h <= 20 * w, "{what}: {w}×{h}");
    (w, h)
}

fn assert_no_metadata(bytes: &[u8], what: &str) {
    if bytes.starts_with(b"\x89PNG") {
        for chunk in [&b"eXIf"[..], b"tEXt", b"iTXt", b"zTXt"] {
            assert!(!bytes.windows(4).any(|w| w == chunk), "{what}: PNG has {chunk:?}");
        }
    } else {
        assert!(!jpeg::has_exif_segment(bytes), "{what}: EXIF left in");
    }
}

/// A 90×60 block-average of an 1800×1200 image, for comparing pictures across re-encodes.
fn small(img: &DynamicImage) -> Vec<f32> {
    let rgb = img.to_rgb8();
    assert_eq!(rgb.dimensions(), (1800, 1200));
    let mut out = vec![0.0f32; 90 * 60 * 3];
    for (x, y, p) in rgb.enumerate_pixels() {
        let i = ((y / 20) * 90 + x / 20) as usize * 3;
        for c in 0..3 {
            out[i + c] += f32::from(p.0[c]) / 400.0;
        }
    }
    out
}

fn mean_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32
}

/// One test per file so they run in parallel; `every_file_is_listed` keeps the list complete.
macro_rules! file_tests {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check_file($name);
            }
        )*
        const LISTED: &[&str] = &[$($name),*];
    };
}

file_tests! {
    file_alpha_png => "alpha_dice_rgba.png",
    file_animated_gif => "animated_pan_16f.gif",
    file_animated_webp => "animated_pan_16f.webp",
    file_bomb_1bit => "bomb_50000x50000_1bit.png",
    file_bomb_header_only => "bomb_50000x50000_rgb_header_only.png",
    file_canon_orient6 => "canon_sx60_orient6_gpsifd.jpg",
    file_cmyk => "cmyk_adobe_ycck.jpg",
    file_corrupt_50pct => "corrupt_truncated_50pct.jpg",
    file_corrupt_in_exif => "corrupt_truncated_in_exif.jpg",
    file_corrupt_progressive => "corrupt_truncated_progressive_30pct.jpg",
    file_iphone6 => "iphone6_8mp_gps.jpg",
    file_nokia => "large_nokia83_9mp_gps.jpg",
    file_olympus => "large_olympus_ep3_12mp.jpg",
    file_progressive => "progressive_nokia83_9mp_gps.jpg",
    file_tiny => "tiny_1x1.jpg",
    file_webp_exif => "webp_lossy_exif_flower.webp",
    file_orientation_0 => "orientation/Landscape_0.jpg",
    file_orientation_1 => "orientation/Landscape_1.jpg",
    file_orientation_2 => "orientation/Landscape_2.jpg",
    file_orientation_3 => "orientation/Landscape_3.jpg",
    file_orientation_4 => "orientation/Landscape_4.jpg",
    file_orientation_5 => "orientation/Landscape_5.jpg",
    file_orientation_6 => "orientation/Landscape_6.jpg",
    file_orientation_7 => "orientation/Landscape_7.jpg",
    file_orientation_8 => "orientation/Landscape_8.jpg",
}

#[test]
fn every_file_is_listed() {
    let mut listed: Vec<String> = LISTED.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(listed, all_photos());
}

/// probe → decode → strip → fit on one file, and what each kind of file must give.
fn check_file(name: &str) {
    let limits = Limits::default();
    let bytes = read(name);
    let started = Instant::now();
    let probed = probe(&bytes);
    let decoded = decode(&bytes, &limits);
    let stripped = strip_metadata(&bytes, &limits);
    let fitted = fit_for_telegram_photo(&bytes, &limits);
    let compressed = compress_for_api(&bytes, API_MAX_BYTES, &limits);

    if name.starts_with("bomb_") {
        let info = probed.expect("a bomb has a valid header");
        assert_eq!((info.width, info.height), (50_000, 50_000));
        for result in [decoded.map(|_| ()), stripped.map(|_| ()), fitted.map(|_| ()), compressed.map(|_| ())] {
            assert!(
                matches!(result, Err(ImagingError::TooManyPixels { width: 50_000, height: 50_000, .. })),
                "{name}: {result:?}"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(1), "{name}: slow refusal");
        // Each operation on its own must refuse within 100 ms: from the header, before any
        // pixel buffer (tests/cli_image.rs shows the same under a 1 GB address-space limit).
        let ops: [(&str, &dyn Fn() -> bool); 6] = [
            ("decode", &|| decode(&bytes, &limits).is_err()),
            ("strip", &|| strip_metadata(&bytes, &limits).is_err()),
            ("fit", &|| fit_for_telegram_photo(&bytes, &limits).is_err()),
            ("compress", &|| compress_for_api(&bytes, API_MAX_BYTES, &limits).is_err()),
            ("overlay", &|| overlay_text(&bytes, "x", &OverlayStyle::default(), &limits).is_err()),
            ("enlarge", &|| enlarge(&bytes, 2, &limits).is_err()),
        ];
        for (op, run) in ops {
            let t = Instant::now();
            assert!(run(), "{name}: {op} accepted a bomb");
            assert!(t.elapsed() < Duration::from_millis(100), "{name}: {op} took {:?}", t.elapsed());
        }
        return;
    }
    if name == "corrupt_truncated_in_exif.jpg" {
        // No SOF at all: nothing to be lenient about.
        let results =
            [probed.map(|_| ()), decoded.map(|_| ()), stripped.map(|_| ()), fitted.map(|_| ()), compressed.map(|_| ())];
        for result in results {
            assert!(matches!(result, Err(ImagingError::Corrupt(_))), "{name}: {result:?}");
        }
        return;
    }

    // Everything else decodes. The two truncated-scan JPEGs do too: zune-jpeg is lenient and
    // fills in the missing part (the README says some decoders give a half-grey image).
    let info = probed.unwrap_or_else(|e| panic!("{name}: probe {e}"));
    let image = decoded.unwrap_or_else(|e| panic!("{name}: decode {e}"));
    assert_eq!((info.width, info.height), image.dimensions(), "{name}");
    let stripped = stripped.unwrap_or_else(|e| panic!("{name}: strip {e}"));
    let fitted = fitted.unwrap_or_else(|e| panic!("{name}: fit {e}"));
    let compressed = compressed.unwrap_or_else(|e| panic!("{name}: compress {e}"));
    assert_no_metadata(&stripped, name);
    assert_no_metadata(&compressed, name);
    assert!(compressed.len() <= API_MAX_BYTES, "{name}");
    assert_eq!(decode_output(&compressed).dimensions(), image.dimensions(), "{name}: under the limit, same size");
    let stripped_image = decode_output(&stripped);
    assert_eq!(stripped_image.dimensions(), image.dimensions(), "{name}");
    let (w, h) = assert_telegram_photo(&fitted, name);
    let (iw, ih) = image.dimensions();
    assert!(w <= iw && h <= ih, "{name}: upscaled {iw}×{ih} → {w}×{h}");

    if name.ends_with(".jpg") {
        assert_eq!(info.mime, "image/jpeg");
        assert!(stripped.starts_with(&[0xFF, 0xD8]), "{name}: JPEG stays JPEG");
    } else {
        assert!(stripped.starts_with(b"\x89PNG"), "{name}: re-encoded as PNG");
    }
    // The whole chain as a provider upload takes it: strip → compress → fit.
    let chained = compress_for_api(&stripped, API_MAX_BYTES, &limits)
        .and_then(|c| fit_for_telegram_photo(&c, &limits))
        .unwrap_or_else(|e| panic!("{name}: chain {e}"));
    assert_eq!(assert_telegram_photo(&chained, name), (w, h), "{name}: chain gives the same photo size");
    if name.contains("_gps") {
        assert!(jpeg::has_exif_segment(&bytes), "{name}: the input should carry EXIF");
        for (what, out) in [("strip", &stripped), ("compress", &compressed), ("fit", &fitted), ("chain", &chained)] {
            // No EXIF block at all (GPS lives inside it), not even an empty APP1.
            assert!(!out.windows(4).any(|w| w == b"Exif"), "{name} {what}: EXIF left");
            assert!(!has_app1(out), "{name} {what}: an APP1 segment is left");
        }
    }
    if name.starts_with("orientation/") {
        assert_eq!(image.dimensions(), (1800, 1200), "{name}");
        let reference = small(&decode(&read("orientation/Landscape_1.jpg"), &limits).expect("ref"));
        let compressed_image = decode_output(&compressed);
        for (what, img) in [
            ("decode", &image),
            ("strip", &stripped_image),
            ("fit", &decode_output(&fitted)),
            ("compress", &compressed_image),
        ] {
            let diff = mean_abs_diff(&small(img), &reference);
            // Same photo, another digit and JPEG generation: a few levels. A wrong rotation or
            // mirror is off by tens of levels (see `orientation_metric_detects_a_wrong_rotation`).
            assert!(diff < 3.0, "{name} {what}: mean abs diff {diff}");
        }
    }
}

#[test]
fn strip_is_lossless_for_upright_jpeg() {
    let bytes = read("large_nokia83_9mp_gps.jpg");
    let limits = Limits::default();
    let stripped = strip_metadata(&bytes, &limits).expect("strip");
    assert!(stripped.len() < bytes.len());
    assert!(!jpeg::has_exif_segment(&stripped));
    // Neither the GPS coordinates' EXIF header nor the camera model survive anywhere.
    assert!(!stripped.windows(6).any(|w| w == b"Exif\0\0"));
    assert_eq!(
        decode(&stripped, &limits).expect("decodes").into_bytes(),
        decode(&bytes, &limits).expect("decodes").into_bytes(),
        "scan data copied verbatim"
    );
}

#[test]
fn result_metadata_goes_and_the_picture_stays_exactly() {
    use crate::tests::fakes::png_with_chunk;
    let limits = Limits::default();
    // PNG with alpha: ComfyUI's text chunks go, the rest is the encoder's output byte for byte.
    let rgba =
        image::RgbaImage::from_fn(37, 23, |x, y| image::Rgba([(x * 7) as u8, (y * 11) as u8, 99, (x * y) as u8]));
    let mut clean = Cursor::new(Vec::new());
    DynamicImage::ImageRgba8(rgba.clone()).write_to(&mut clean, image::ImageFormat::Png).expect("png");
    let clean = clean.into_inner();
    let mut tagged = png_with_chunk(&clean, b"tEXt", b"prompt\0{\"3\": {\"class_type\": \"KSampler\"}}");
    tagged = png_with_chunk(&tagged, b"iTXt", b"workflow\0\0\0\0\0{\"nodes\": []}");
    tagged = png_with_chunk(&tagged, b"zTXt", b"Comment\0\0x\x9c\x03\0\0\0\0\x01");
    let stripped = strip_result_metadata(&tagged, &limits).expect("strip");
    assert_eq!(stripped, clean, "only the metadata chunks went");
    assert_eq!(decode(&stripped, &limits).expect("decodes").to_rgba8(), rgba, "pixels and alpha exactly");
    // An EXIF orientation in a PNG turns into upright pixels rather than being lost.
    let exif = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
    let rotated = strip_result_metadata(&png_with_chunk(&clean, b"eXIf", exif), &limits).expect("strip");
    assert!(!rotated.windows(4).any(|w| w == b"eXIf"));
    assert_eq!(probe(&rotated).expect("probe").width, 23, "applied, not dropped");
    // JPEG: segments dropped, scan data kept; a rotated one is made upright.
    let jpeg = read("large_nokia83_9mp_gps.jpg");
    assert_eq!(strip_result_metadata(&jpeg, &limits).expect("strip"), strip_metadata(&jpeg, &limits).expect("strip"));
    let turned = strip_result_metadata(&read("canon_sx60_orient6_gpsifd.jpg"), &limits).expect("strip");
    assert!(!turned.windows(6).any(|w| w == b"Exif\0\0"));
    assert_eq!(probe(&turned).expect("probe").width, 1536);
    // Not a picture: untouched.
    assert_eq!(strip_result_metadata(b"\x1a\x45\xdf\xa3webm", &limits).expect("as is"), b"\x1a\x45\xdf\xa3webm");
}

#[test]
fn compress_under_the_limit_is_the_lossless_strip() {
    let bytes = read("large_nokia83_9mp_gps.jpg");
    let limits = Limits::default();
    let compressed = compress_for_api(&bytes, API_MAX_BYTES, &limits).expect("compress");
    assert_eq!(compressed, strip_metadata(&bytes, &limits).expect("strip"), "no re-encode");
    // Over the limit the same file is re-encoded, upright, within the limit, at full size first.
    let limit = bytes.len() * 3 / 4;
    let smaller = compress_for_api(&bytes, limit, &limits).expect("compress");
    assert!(smaller.len() <= limit);
    assert_eq!(probe(&smaller).expect("probe").width, 4608);
    assert_no_metadata(&smaller, "re-encoded");
    // Far too small: downscaled.
    let tiny = compress_for_api(&bytes, 100_000, &limits).expect("compress");
    assert!(tiny.len() <= 100_000);
    assert!(probe(&tiny).expect("probe").width < 4608);
}

#[test]
fn rotated_jpeg_is_reencoded_upright_without_exif() {
    // Canon: stored 2048×1536 with Orientation=6 and a near-empty GPS IFD.
    let bytes = read("canon_sx60_orient6_gpsifd.jpg");
    let info = probe(&bytes).expect("probe");
    assert_eq!((info.width, info.height), (1536, 2048));
    let stripped = strip_metadata(&bytes, &Limits::default()).expect("strip");
    assert!(!stripped.windows(6).any(|w| w == b"Exif\0\0"));
    assert_eq!(probe(&stripped).expect("probe").width, 1536);
}

#[test]
fn orientation_metric_detects_a_wrong_rotation() {
    let img = decode(&read("orientation/Landscape_1.jpg"), &Limits::default()).expect("decode");
    let diff = mean_abs_diff(&small(&img), &small(&img.rotate180()));
    assert!(diff > 15.0, "metric too weak: {diff}");
}

#[test]
fn bombs_are_refused_from_the_header() {
    for name in ["bomb_50000x50000_1bit.png", "bomb_50000x50000_rgb_header_only.png"] {
        let bytes = read(name);
        let started = Instant::now();
        let err = decode(&bytes, &Limits::default()).expect_err("refused");
        assert!(started.elapsed() < Duration::from_millis(500), "{name}");
        assert!(
            matches!(err, ImagingError::TooManyPixels { width: 50_000, height: 50_000, max: 50_000_000 }),
            "{name}: {err:?}"
        );
        assert!(thumbnail(&bytes, 320, &Limits::default()).is_err());
    }
}

#[test]
fn limits_and_unknown_formats() {
    let tiny = read("tiny_1x1.jpg");
    let small_bytes = Limits { max_pixels: 10, max_bytes: 100 };
    assert!(matches!(decode(&tiny, &small_bytes), Err(ImagingError::TooLarge { bytes: 634, max: 100 })));
    let few_pixels = Limits { max_pixels: 1_000_000, max_bytes: 20_000_000 };
    assert!(matches!(
        fit_for_telegram_photo(&read("orientation/Landscape_6.jpg"), &few_pixels),
        Err(ImagingError::TooManyPixels { width: 1200, height: 1800, .. })
    ));
    for junk in [&b""[..], b"hello world, not an image", b"BM\x3e\0\0\0\0\0\0\0\x36\0\0\0"] {
        assert!(matches!(probe(junk), Err(ImagingError::Unsupported { .. })), "{junk:?}");
        assert!(matches!(decode(junk, &Limits::default()), Err(ImagingError::Unsupported { .. })));
        assert!(matches!(document_form(junk), Err(ImagingError::Unsupported { .. })));
    }
}

#[test]
fn cmyk_jpeg_decodes_red_on_black() {
    let bytes = read("cmyk_adobe_ycck.jpg");
    let rgb = decode(&bytes, &Limits::default()).expect("CMYK decodes").to_rgb8();
    assert_eq!(rgb.dimensions(), (100, 100));
    let red = rgb.pixels().filter(|p| p[0] > 150 && p[1] < 90 && p[2] < 90).count();
    let dark = rgb.pixels().filter(|p| p.0.iter().all(|&c| c < 60)).count();
    assert!(red > 300, "red pixels: {red}");
    assert!(dark > 3000, "dark pixels: {dark}");
    // The lossless strip keeps the Adobe segment, so the colours survive it.
    let stripped = strip_metadata(&bytes, &Limits::default()).expect("strip");
    assert!(stripped.windows(5).any(|w| w == b"Adobe"));
    assert_eq!(decode(&stripped, &Limits::default()).expect("decodes").to_rgb8(), rgb);
}

#[test]
fn alpha_is_flattened_on_white() {
    let bytes = read("alpha_dice_rgba.png");
    let rgba = decode(&bytes, &Limits::default()).expect("decode").to_rgba8();
    assert_eq!(rgba.get_pixel(0, 0)[3], 0, "input corner is transparent");
    for (what, out) in [
        ("fit", fit_for_telegram_photo(&bytes, &Limits::default()).expect("fit")),
        ("thumbnail", thumbnail(&bytes, 64, &Limits::default()).expect("thumbnail")),
    ] {
        let rgb = decode_output(&out).to_rgb8();
        let corner = rgb.get_pixel(0, 0).0;
        assert!(corner.iter().all(|&c| c >= 245), "{what}: corner {corner:?}");
        // The dice themselves are not washed out.
        assert!(rgb.pixels().any(|p| p.0.iter().any(|&c| c < 128)), "{what}");
    }
}

#[test]
fn tiny_image_works_everywhere() {
    let bytes = read("tiny_1x1.jpg");
    let limits = Limits::default();
    assert_eq!(decode(&bytes, &limits).expect("decode").dimensions(), (1, 1));
    assert_eq!(assert_telegram_photo(&fit_for_telegram_photo(&bytes, &limits).expect("fit"), "fit"), (1, 1));
    for side in [0, 1, 320] {
        let thumb = thumbnail(&bytes, side, &limits).expect("thumbnail");
        assert_eq!(decode_output(&thumb).dimensions(), (1, 1));
    }
    let (doc, ext, mime) = document_form(&bytes).expect("document");
    assert_eq!((doc, ext, mime), (bytes.clone(), "jpg", "image/jpeg"));
}

#[test]
fn animations_give_their_first_frame() {
    let gif = read("animated_pan_16f.gif");
    let frames = image::codecs::gif::GifDecoder::new(Cursor::new(&gif))
        .expect("gif")
        .into_frames()
        .take(2)
        .collect::<Result<Vec<_>, _>>()
        .expect("frames");
    check_first_frame("gif", &gif, frames);

    let webp = read("animated_pan_16f.webp");
    let frames = image::codecs::webp::WebPDecoder::new(Cursor::new(&webp))
        .expect("webp")
        .into_frames()
        .take(2)
        .collect::<Result<Vec<_>, _>>()
        .expect("frames");
    check_first_frame("webp", &webp, frames);
}

fn check_first_frame(what: &str, bytes: &[u8], frames: Vec<image::Frame>) {
    let decoded = decode(bytes, &Limits::default()).expect("decode").to_rgba8();
    assert_eq!(decoded.dimensions(), (360, 240), "{what}");
    assert_eq!(&decoded, frames[0].buffer(), "{what}: not frame 1");
    assert_ne!(&decoded, frames[1].buffer(), "{what}: frames 1 and 2 are equal");
    let thumb = thumbnail(bytes, 90, &Limits::default()).expect("thumbnail");
    assert_eq!(decode_output(&thumb).dimensions(), (90, 60), "{what}");
}

fn synthetic_png(width: u32, height: u32, band: u32) -> Vec<u8> {
    // Red bands of `band` px at both ends, a textured middle.
    let img = RgbImage::from_fn(width, height, |x, y| {
        if x < band || x >= width - band {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, ((x / 7 + y / 5) % 200) as u8 + 30, (y % 256) as u8])
        }
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageFormat::Png).expect("png");
    out.into_inner()
}

#[test]
fn synthetic_extremes_respect_telegram_limits() {
    let limits = Limits::default();
    // 30:1 → cropped around the centre to 8000×400, then scaled to 2560×128. The red bands
    // (1500 px each) lie wholly in the cropped-off 2000 px on each side.
    let wide = fit_for_telegram_photo(&synthetic_png(12_000, 400, 1500), &limits).expect("fit");
    assert_eq!(assert_telegram_photo(&wide, "12000×400"), (2560, 128));
    let rgb = decode_output(&wide).to_rgb8();
    for x in [0, 2559] {
        let p = rgb.get_pixel(x, 64).0;
        assert!(p[0] < 100, "edge column {x} still red: {p:?}");
    }

    let square = fit_for_telegram_photo(&synthetic_png(3000, 3000, 0), &limits).expect("fit");
    assert_eq!(assert_telegram_photo(&square, "3000×3000"), (2560, 2560));
}

#[test]
fn document_form_keeps_or_converts() {
    for (name, ext, mime) in [
        ("tiny_1x1.jpg", "jpg", "image/jpeg"),
        ("alpha_dice_rgba.png", "png", "image/png"),
        ("animated_pan_16f.gif", "gif", "image/gif"),
    ] {
        let bytes = read(name);
        let (doc, e, m) = document_form(&bytes).expect(name);
        assert_eq!((e, m), (ext, mime), "{name}");
        assert!(doc == bytes, "{name}: bytes changed");
    }
    for (name, dims) in [("webp_lossy_exif_flower.webp", (480, 360)), ("animated_pan_16f.webp", (360, 240))] {
        let (doc, ext, mime) = document_form(&read(name)).expect(name);
        assert_eq!((ext, mime), ("png", "image/png"), "{name}");
        assert_no_metadata(&doc, name);
        assert_eq!(decode_output(&doc).dimensions(), dims, "{name}");
    }
}

#[test]
fn hashes_and_extensions() {
    assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(sha256_hex(b"").len(), 64);
    for (mime, ext) in [
        ("image/jpeg", "jpg"),
        ("IMAGE/PNG", "png"),
        ("image/webp", "webp"),
        ("image/gif", "gif"),
        ("image/jpeg; charset=binary", "jpg"),
        ("application/pdf", "bin"),
        ("", "bin"),
    ] {
        assert_eq!(extension_for_mime(mime), ext, "{mime}");
    }
}

#[test]
fn enlarge_doubles_and_quadruples_upright() {
    let limits = Limits::default();
    let bytes = read("orientation/Landscape_6.jpg");
    let out = enlarge(&bytes, 2, &limits).expect("2×");
    assert!(!jpeg::has_exif_segment(&out));
    let img = decode_output(&out);
    assert_eq!(img.dimensions(), (3600, 2400), "upright, twice each side");
    // Same picture as the upright reference once brought back to its size.
    let back = DynamicImage::ImageRgb8(image::imageops::resize(&img.to_rgb8(), 1800, 1200, image::imageops::Triangle));
    let reference = small(&decode(&read("orientation/Landscape_1.jpg"), &limits).expect("ref"));
    assert!(mean_abs_diff(&small(&back), &reference) < 3.0);

    let tiny = enlarge(&read("tiny_1x1.jpg"), 4, &limits).expect("4×");
    assert_eq!(decode_output(&tiny).dimensions(), (4, 4));
    let alpha = decode_output(&enlarge(&read("alpha_dice_rgba.png"), 2, &limits).expect("png")).to_rgb8();
    assert_eq!(alpha.dimensions(), (400, 300));
    assert!(alpha.get_pixel(0, 0).0.iter().all(|&c| c >= 245), "alpha flattened on white");
}

#[test]
fn enlarge_refuses_bad_factors_and_huge_outputs_from_the_header() {
    let limits = Limits::default();
    let bytes = read("large_olympus_ep3_12mp.jpg");
    for factor in [0, 1, 3, 8] {
        assert!(matches!(enlarge(&bytes, factor, &limits), Err(ImagingError::Encode(_))), "{factor}");
    }
    let started = Instant::now();
    let err = enlarge(&bytes, 4, &limits).expect_err("192 MP is over the limit");
    assert!(matches!(err, ImagingError::TooManyPixels { width: 16_128, height: 12_096, .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(100), "refused from the header");
}

#[test]
fn overlay_on_a_rotated_photo_is_upright_and_clean() {
    let limits = Limits::default();
    let bytes = read("canon_sx60_orient6_gpsifd.jpg");
    let out = overlay_text(&bytes, "Привет 👋", &OverlayStyle::default(), &limits).expect("overlay");
    assert!(!out.windows(4).any(|w| w == b"Exif"), "no metadata");
    assert_eq!(decode_output(&out).dimensions(), (1536, 2048), "upright");
    for name in ["corrupt_truncated_in_exif.jpg", "bomb_50000x50000_rgb_header_only.png"] {
        assert!(overlay_text(&read(name), "x", &OverlayStyle::default(), &limits).is_err(), "{name}");
    }
    let tiny = overlay_text(&read("tiny_1x1.jpg"), "Очень длинный текст 🔥", &OverlayStyle::default(), &limits);
    assert_eq!(decode_output(&tiny.expect("1×1 works")).dimensions(), (1, 1));
}

/// Mean absolute difference per channel sample between two same-sized pictures.
fn mean_abs_pixel_diff(a: &DynamicImage, b: &DynamicImage) -> f64 {
    let (a, b) = (a.to_rgb8(), b.to_rgb8());
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(&x, &y)| u64::from(x.abs_diff(y))).sum();
    sum as f64 / a.as_raw().len() as f64
}

#[test]
fn over_the_limit_an_upright_jpeg_is_requantised_in_the_dct_domain() {
    let bytes = read("large_nokia83_9mp_gps.jpg");
    let limits = Limits::default();
    let source = libjpeg_turbo_rs::read_coefficients(&bytes).expect("coefficients");
    for limit in [bytes.len() * 3 / 4, bytes.len() * 2 / 5] {
        let out = compress_for_api(&bytes, limit, &limits).expect("compress");
        assert!(out.len() <= limit, "{} > {limit}", out.len());
        assert_no_metadata(&out, "requantised");
        assert!(!has_app1(&out), "no XMP either");
        // Same frame, and tables that are exactly one ladder step's IJG tables (never finer than
        // the source's): the DCT path ran, not a pixel re-encode at some other setting.
        let coefficients = libjpeg_turbo_rs::read_coefficients(&out).expect("output coefficients");
        assert_eq!((coefficients.width, coefficients.height), (source.width, source.height));
        let quality = [85u8, 80, 75, 70, 65, 60, 55, 50]
            .into_iter()
            .find(|&q| {
                // The pixel encoder's luma table at q, read back from a JPEG it wrote.
                let grey = libjpeg_turbo_rs::compress(&[0; 64], 8, 8, PixelFormat::Grayscale, q, Subsampling::S444);
                let luma = libjpeg_turbo_rs::read_coefficients(&grey.expect("encodes")).expect("reads").quant_tables[0];
                let expected: [u16; 64] = std::array::from_fn(|n| luma[n].max(source.quant_tables[0][n]));
                coefficients.quant_tables[0] == expected
            })
            .expect("luma table is a ladder step");
        assert!(quality <= 85);
        // The picture is the same picture: close to the source everywhere.
        let diff = mean_abs_pixel_diff(&decode(&bytes, &limits).expect("source"), &decode(&out, &limits).expect("out"));
        assert!(diff < 3.0, "limit {limit}: q{quality} differs by {diff:.2} on average");
    }
    // A tighter limit makes the lower step (or the same one at most), never a better one.
    let loose = compress_for_api(&bytes, bytes.len() * 3 / 4, &limits).expect("compress");
    let tight = compress_for_api(&bytes, bytes.len() * 2 / 5, &limits).expect("compress");
    assert!(tight.len() < loose.len());
}

#[test]
fn the_fast_jpeg_decoder_takes_ordinary_jpegs_and_leaves_the_rest_to_the_generic_one() {
    let limits = Limits::default();
    for name in ["large_olympus_ep3_12mp.jpg", "progressive_nokia83_9mp_gps.jpg", "orientation/Landscape_6.jpg"] {
        let bytes = read(name);
        let fast = decode::decode_jpeg(&bytes, &limits, None).expect("no error").unwrap_or_else(|| panic!("{name}"));
        // Same upright picture as the generic decoder (both are libjpeg-style IDCTs with fancy
        // upsampling; they differ by rounding only).
        let generic = image::load_from_memory(&bytes).expect("generic decode");
        let mut generic = generic;
        generic.apply_orientation(fast.orientation);
        let diff = mean_abs_pixel_diff(&fast.image, &generic);
        assert!(diff < 1.5, "{name}: {diff:.2}");
    }
    for name in ["cmyk_adobe_ycck.jpg", "corrupt_truncated_50pct.jpg", "corrupt_truncated_progressive_30pct.jpg"] {
        assert!(decode::decode_jpeg(&read(name), &limits, None).expect("no error").is_none(), "{name}");
    }
    // DCT scaling: asking for at most a quarter of each side gives a 1/4-scale decode.
    let bytes = read("large_olympus_ep3_12mp.jpg");
    let info = probe(&bytes).expect("probe");
    let quarter = |w: u32, h: u32| (w / 4, h / 4);
    let scaled = decode::decode_jpeg(&bytes, &limits, Some(&quarter)).expect("no error").expect("decodes");
    assert_eq!(scaled.image.width(), info.width.div_ceil(4));
    // Every M/8 is taken by the fast decoder (in lowest terms: 4/8 is 1/2), the smallest that
    // covers the target: 0.6 of each side needs 5/8, 0.5 exactly 1/2, 0.7 needs 6/8 = 3/4.
    for (fraction, eighths) in [(0.6, 5), (0.5, 4), (0.7, 6), (0.87, 7)] {
        let target = |w: u32, h: u32| ((f64::from(w) * fraction) as u32, (f64::from(h) * fraction) as u32);
        let (scaled, size) = decode::decode_at_least(&bytes, &limits, target).expect("decodes");
        assert_eq!(
            (scaled.image.width(), scaled.image.height()),
            ((info.width * eighths).div_ceil(8), (info.height * eighths).div_ceil(8)),
            "{fraction}"
        );
        // The size to resize to is the target of the full picture, whatever the scale taken.
        assert_eq!(size, target(info.width, info.height), "{fraction}");
    }
    let tight = Limits { max_pixels: 1_000_000, ..Limits::default() };
    assert!(matches!(decode::decode_jpeg(&bytes, &tight, None), Err(ImagingError::TooManyPixels { .. })));
}

#[test]
fn an_over_long_word_breaks_between_grapheme_clusters() {
    // Ten flags (two regional indicators each) and a ZWJ family, as one word, with room for
    // about three clusters per line (counted in chars, so a cut inside a cluster would show).
    let family = "👨\u{200D}👩\u{200D}👧";
    let word = format!("{}{family}", "🇺🇦".repeat(10));
    let lines = wrap_words(&word, |s| s.chars().count() <= 6);
    assert!(lines.len() >= 4, "{lines:?}");
    assert_eq!(lines.concat(), word, "nothing lost or reordered");
    for line in &lines {
        let ri = line.chars().filter(|c| ('\u{1F1E6}'..='\u{1F1FF}').contains(c)).count();
        assert_eq!(ri % 2, 0, "a flag was cut: {line:?}");
        assert!(!line.starts_with('\u{200D}') && !line.ends_with('\u{200D}'), "a ZWJ sequence was cut: {line:?}");
    }
    assert!(lines.iter().any(|l| l.contains(family)), "the family stays whole: {lines:?}");
}
