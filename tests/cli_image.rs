//! `mediabot image …` as scripts use it: files in, files out, one-line errors with exit code 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/photos");

fn mediabot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mediabot")).arg("image").args(args).env("RUST_LOG", "off").output().expect("runs")
}

fn photo(name: &str) -> String {
    Path::new(PHOTOS).join(name).display().to_string()
}

fn out_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

fn has_exif(bytes: &[u8]) -> bool {
    bytes.windows(6).any(|w| w == b"Exif\0\0")
}

#[test]
fn strip_fit_and_compress_write_clean_jpegs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = photo("canon_sx60_orient6_gpsifd.jpg");
    assert!(has_exif(&std::fs::read(&input).expect("read")));
    for (cmd, extra) in [("strip", vec![]), ("fit", vec![]), ("compress-for-api", vec!["--max-bytes", "300000"])] {
        let out = out_path(&dir, &format!("{cmd}.jpg"));
        let mut args = vec![cmd, input.as_str(), out.to_str().expect("utf-8")];
        args.extend(extra);
        let res = mediabot(&args);
        assert!(res.status.success(), "{cmd}: {}", String::from_utf8_lossy(&res.stderr));
        let bytes = std::fs::read(&out).expect("output written");
        assert!(bytes.starts_with(&[0xFF, 0xD8]), "{cmd}: JPEG");
        assert!(!has_exif(&bytes), "{cmd}: metadata left");
        if cmd == "compress-for-api" {
            assert!(bytes.len() <= 300_000, "{cmd}: {} bytes", bytes.len());
        }
    }
}

#[test]
fn errors_are_one_line_with_exit_code_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = out_path(&dir, "x.jpg");
    for input in [photo("corrupt_truncated_in_exif.jpg"), photo("bomb_50000x50000_1bit.png"), photo("missing.jpg")] {
        let res = mediabot(&["fit", &input, out.to_str().expect("utf-8")]);
        assert_eq!(res.status.code(), Some(2), "{input}");
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert_eq!(stderr.trim_end().lines().count(), 1, "{input}: {stderr}");
        assert!(stderr.starts_with("error: "), "{input}: {stderr}");
        assert!(!out.exists(), "{input}: no output on error");
    }
}

#[test]
fn overlay_draws_and_refuses_unknown_style_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = photo("orientation/Landscape_6.jpg");
    let out = out_path(&dir, "overlay.jpg");
    let args = ["overlay", &input, out.to_str().expect("utf-8"), "--text", "Привет 🔥", "--style", "крупный сверху"];
    let res = mediabot(&args);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let bytes = std::fs::read(&out).expect("written");
    assert!(bytes.starts_with(&[0xFF, 0xD8]) && !has_exif(&bytes));

    let bad = out_path(&dir, "bad.jpg");
    let res = mediabot(&["overlay", &input, bad.to_str().expect("utf-8"), "--text", "x", "--style", "sparkly"]);
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("sparkly"));
}

#[test]
fn bombs_are_refused_before_allocating() {
    // Under a 1 GB address-space limit a large allocation aborts the process (no exit code 2,
    // no message); the 50000×50000 bombs need 2.5–10 GB decoded. A clean exit 2 naming the
    // size therefore shows the refusal came from the header, before any pixel buffer.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = out_path(&dir, "bomb.jpg");
    for name in ["bomb_50000x50000_1bit.png", "bomb_50000x50000_rgb_header_only.png"] {
        for op in ["fit", "strip", "compress-for-api", "resize"] {
            let res = Command::new("sh")
                .arg("-c")
                .arg(r#"ulimit -v 1000000 && exec "$0" image "$1" "$2" "$3""#)
                .args([env!("CARGO_BIN_EXE_mediabot"), op, &photo(name), out.to_str().expect("utf-8")])
                .env("RUST_LOG", "off")
                .output()
                .expect("runs");
            let stderr = String::from_utf8_lossy(&res.stderr);
            assert_eq!(res.status.code(), Some(2), "{name} {op}: {stderr}");
            assert!(stderr.contains("50000×50000") || stderr.contains("100000×100000"), "{name} {op}: {stderr}");
            assert!(!out.exists());
        }
    }
}

#[test]
fn resize_enlarges_by_2_or_4_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = out_path(&dir, "big.jpg");
    let res = mediabot(&["resize", &photo("alpha_dice_rgba.png"), out.to_str().expect("utf-8"), "--factor", "4"]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let img = image::load_from_memory(&std::fs::read(&out).expect("written")).expect("JPEG");
    assert_eq!((img.width(), img.height()), (800, 600));
    let bad = out_path(&dir, "bad.jpg");
    let res = mediabot(&["resize", &photo("tiny_1x1.jpg"), bad.to_str().expect("utf-8"), "--factor", "3"]);
    assert_eq!(res.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&res.stderr).trim_end().lines().count(), 1);
    assert!(!bad.exists());
}
