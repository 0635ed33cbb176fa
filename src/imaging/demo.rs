//! The demo renderer: a gradient with the prompt on it, so the whole pipeline can run without a
//! model and nobody mistakes the result for one.

use super::ImagingError;
use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont, point};
use image::{ImageFormat, Rgb, RgbImage};
use sha2::{Digest, Sha256};
use std::io::Cursor;

/// DejaVu Sans: full Latin, Greek and Cyrillic. Licence: `fonts/LICENSE-DejaVu.txt`.
const FONT: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");

const MIN_SIDE: u32 = 32;
const MAX_SIDE: u32 = 2048;
/// Longer prompts are cut; the picture only needs to show what was asked, not all of it.
const MAX_PROMPT_CHARS: usize = 400;
const MIN_FONT_PX: f32 = 6.0;
const LABEL: &str = "DEMO";
const EMPTY_PROMPT: &str = "(no prompt)";

/// Renders a demo picture as PNG bytes (8-bit RGB).
///
/// Each side is clamped to 32–2048 px. The background is a diagonal gradient between two
/// colours derived from `seed` and `prompt` (same inputs, same picture). The prompt is
/// word-wrapped in the centre over a darkened panel, shrunk to fit and cut with "…" when too
/// long; characters DejaVu Sans lacks (emoji) are skipped rather than drawn as boxes. A "DEMO"
/// badge sits in the top-left corner.
///
/// Errors: [`ImagingError::Encode`] if PNG encoding fails.
pub fn render_demo(prompt: &str, width: u32, height: u32, seed: u64) -> Result<Vec<u8>, ImagingError> {
    let width = width.clamp(MIN_SIDE, MAX_SIDE);
    let height = height.clamp(MIN_SIDE, MAX_SIDE);
    let font = FontRef::try_from_slice(FONT).map_err(|e| ImagingError::Encode(format!("embedded font: {e}")))?;

    let digest = Sha256::new().chain_update(seed.to_le_bytes()).chain_update(prompt.as_bytes()).finalize();
    let (from, to) = palette(&digest);
    let mut img = gradient(width, height, from, to);

    let prompt = prompt.trim();
    let mut text: String = prompt.chars().take(MAX_PROMPT_CHARS).collect();
    if text.len() < prompt.len() {
        text.truncate(text.trim_end().len());
        text.push('…');
    }
    let text = if text.chars().any(|c| glyph(&font, c).is_some()) { text } else { EMPTY_PROMPT.to_string() };
    draw_prompt(&mut img, &font, &text);
    draw_label(&mut img, &font);

    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).map_err(|e| ImagingError::Encode(format!("PNG: {e}")))?;
    Ok(out.into_inner())
}

/// [`render_demo`] cut out: the picture inside a centred ellipse, fully transparent outside it
/// (8-bit RGBA PNG), so the demo's "remove background" result exercises the same delivery as a
/// real cut-out (a document keeping the alpha, a preview on a checkerboard).
///
/// Errors: as [`render_demo`], and [`ImagingError::Encode`] if its PNG cannot be read back.
pub fn render_demo_cutout(prompt: &str, width: u32, height: u32, seed: u64) -> Result<Vec<u8>, ImagingError> {
    let png = render_demo(prompt, width, height, seed)?;
    let mut img = image::load_from_memory_with_format(&png, ImageFormat::Png)
        .map_err(|e| ImagingError::Encode(format!("PNG: {e}")))?
        .to_rgba8();
    let (cx, cy) = (img.width() as f32 / 2.0, img.height() as f32 / 2.0);
    for (x, y, p) in img.enumerate_pixels_mut() {
        let (dx, dy) = ((x as f32 + 0.5 - cx) / (cx * 0.8), (y as f32 + 0.5 - cy) / (cy * 0.9));
        if dx * dx + dy * dy > 1.0 {
            p.0[3] = 0;
        }
    }
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png).map_err(|e| ImagingError::Encode(format!("PNG: {e}")))?;
    Ok(out.into_inner())
}

/// Two colours from the hash: hues 60–180° apart, so the gradient is visible but not garish.
fn palette(digest: &[u8]) -> ([f32; 3], [f32; 3]) {
    let hue = f32::from(u16::from_le_bytes([digest[0], digest[1]])) / 65536.0 * 360.0;
    let spread = 60.0 + f32::from(digest[2]) / 255.0 * 120.0;
    let sat = 0.45 + f32::from(digest[3]) / 255.0 * 0.25;
    (hsv(hue, sat, 0.88), hsv(hue + spread, sat + 0.1, 0.42))
}

fn hsv(hue: f32, s: f32, v: f32) -> [f32; 3] {
    let h = hue.rem_euclid(360.0) / 60.0;
    let c = v * s.min(1.0);
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [(r + m) * 255.0, (g + m) * 255.0, (b + m) * 255.0]
}

fn gradient(width: u32, height: u32, from: [f32; 3], to: [f32; 3]) -> RgbImage {
    let (wf, hf) = ((width - 1).max(1) as f32, (height - 1).max(1) as f32);
    RgbImage::from_fn(width, height, |x, y| {
        let t = 0.6 * x as f32 / wf + 0.4 * y as f32 / hf;
        let t = t * t * (3.0 - 2.0 * t);
        Rgb(std::array::from_fn(|i| (from[i] + (to[i] - from[i]) * t).round().clamp(0.0, 255.0) as u8))
    })
}

/// The glyph for `c`, or `None` for controls and characters the font lacks (no tofu boxes).
fn glyph(font: &FontRef<'_>, c: char) -> Option<GlyphId> {
    if c.is_control() {
        return None;
    }
    let id = font.glyph_id(c);
    (id.0 != 0).then_some(id)
}

fn line_width(font: &FontRef<'_>, scale: PxScale, text: &str) -> f32 {
    let scaled = font.as_scaled(scale);
    let mut width = 0.0;
    let mut prev: Option<GlyphId> = None;
    for id in text.chars().filter_map(|c| glyph(font, c)) {
        if let Some(p) = prev {
            width += scaled.kern(p, id);
        }
        width += scaled.h_advance(id);
        prev = Some(id);
    }
    width
}

/// Greedy word wrap; words wider than a line are broken between characters. Newlines in the
/// prompt are kept as line breaks.
fn wrap(font: &FontRef<'_>, scale: PxScale, text: &str, max_width: f32) -> Vec<String> {
    super::wrap_words(text, |s: &str| line_width(font, scale, s) <= max_width)
}

fn draw_prompt(img: &mut RgbImage, font: &FontRef<'_>, text: &str) {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let (max_w, max_h) = (w * 0.8, h * 0.6);
    let mut size = (w.min(h) * 0.075).clamp(MIN_FONT_PX, 96.0);
    let (scale, mut lines, line_height) = loop {
        let scale = PxScale::from(size);
        let scaled = font.as_scaled(scale);
        let line_height = scaled.height() + scaled.line_gap();
        let lines = wrap(font, scale, text, max_w);
        if lines.len() as f32 * line_height <= max_h || size <= MIN_FONT_PX {
            break (scale, lines, line_height);
        }
        size = (size * 0.85).max(MIN_FONT_PX);
    };
    let max_lines = ((max_h / line_height) as usize).max(1);
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        if let Some(last) = lines.last_mut() {
            last.push('…');
            while line_width(font, scale, last) > max_w && last.chars().count() > 1 {
                last.pop();
                last.pop();
                last.push('…');
            }
        }
    }

    let scaled = font.as_scaled(scale);
    let block_h = lines.len() as f32 * line_height;
    let block_w = lines.iter().map(|l| line_width(font, scale, l)).fold(0.0f32, f32::max);
    let pad = line_height * 0.6;
    let top = (h - block_h) / 2.0;
    darken(img, (w - block_w) / 2.0 - pad, top - pad, (w + block_w) / 2.0 + pad, top + block_h + pad, 0.45);
    for (i, line) in lines.iter().enumerate() {
        let x = (w - line_width(font, scale, line)) / 2.0;
        let baseline = top + i as f32 * line_height + scaled.ascent();
        draw_text(img, font, scale, line, x, baseline, [255, 255, 255]);
    }
}

fn draw_label(img: &mut RgbImage, font: &FontRef<'_>) {
    let size = (img.width().min(img.height()) as f32 * 0.05).clamp(MIN_FONT_PX, 40.0);
    let scale = PxScale::from(size);
    let scaled = font.as_scaled(scale);
    let margin = size * 0.6;
    let pad = size * 0.35;
    let text_w = line_width(font, scale, LABEL);
    let (x0, y0) = (margin, margin);
    let (x1, y1) = (x0 + text_w + 2.0 * pad, y0 + scaled.ascent() - scaled.descent() + 2.0 * pad);
    fill(img, x0, y0, x1, y1, [196, 32, 48]);
    draw_text(img, font, scale, LABEL, x0 + pad, y0 + pad + scaled.ascent(), [255, 255, 255]);
}

/// Pixel rectangle `[x0, x1) × [y0, y1)` clipped to the image.
fn clip(img: &RgbImage, x0: f32, y0: f32, x1: f32, y1: f32) -> (u32, u32, u32, u32) {
    let cx = |v: f32| v.round().clamp(0.0, img.width() as f32) as u32;
    let cy = |v: f32| v.round().clamp(0.0, img.height() as f32) as u32;
    (cx(x0), cy(y0), cx(x1), cy(y1))
}

fn darken(img: &mut RgbImage, x0: f32, y0: f32, x1: f32, y1: f32, amount: f32) {
    let (x0, y0, x1, y1) = clip(img, x0, y0, x1, y1);
    for y in y0..y1 {
        for x in x0..x1 {
            let p = img.get_pixel_mut(x, y);
            p.0 = p.0.map(|c| (f32::from(c) * (1.0 - amount)) as u8);
        }
    }
}

fn fill(img: &mut RgbImage, x0: f32, y0: f32, x1: f32, y1: f32, colour: [u8; 3]) {
    let (x0, y0, x1, y1) = clip(img, x0, y0, x1, y1);
    for y in y0..y1 {
        for x in x0..x1 {
            img.put_pixel(x, y, Rgb(colour));
        }
    }
}

fn draw_text(
    img: &mut RgbImage,
    font: &FontRef<'_>,
    scale: PxScale,
    text: &str,
    x: f32,
    baseline: f32,
    colour: [u8; 3],
) {
    let scaled = font.as_scaled(scale);
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    let mut caret = x;
    let mut prev: Option<GlyphId> = None;
    for id in text.chars().filter_map(|c| glyph(font, c)) {
        if let Some(p) = prev {
            caret += scaled.kern(p, id);
        }
        let positioned = id.with_scale_and_position(scale, point(caret, baseline));
        caret += scaled.h_advance(id);
        prev = Some(id);
        let Some(outlined) = font.outline_glyph(positioned) else {
            continue; // whitespace has no outline
        };
        let bounds = outlined.px_bounds();
        outlined.draw(|gx, gy, coverage| {
            let px = bounds.min.x as i64 + i64::from(gx);
            let py = bounds.min.y as i64 + i64::from(gy);
            if (0..iw).contains(&px) && (0..ih).contains(&py) {
                let p = img.get_pixel_mut(px as u32, py as u32);
                let a = coverage.clamp(0.0, 1.0);
                for (c, target) in p.0.iter_mut().zip(colour) {
                    *c = (f32::from(*c) * (1.0 - a) + f32::from(target) * a).round() as u8;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_png(bytes: &[u8]) -> RgbImage {
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
        image::load_from_memory_with_format(bytes, ImageFormat::Png).expect("valid PNG").into_rgb8()
    }

    #[test]
    fn sizes_are_kept_or_clamped() {
        for (w, h, ew, eh) in [
            (1024, 1024, 1024, 1024),
            (768, 1344, 768, 1344),
            (0, 0, MIN_SIDE, MIN_SIDE),
            (1, 5000, MIN_SIDE, MAX_SIDE),
            (u32::MAX, 40, MAX_SIDE, 40),
        ] {
            let img = decode_png(&render_demo("a cat", w, h, 1).expect("renders"));
            assert_eq!(img.dimensions(), (ew, eh), "asked {w}×{h}");
        }
    }

    #[test]
    fn deterministic_and_seeded() {
        let a = render_demo("sunset", 256, 256, 7).expect("renders");
        assert_eq!(a, render_demo("sunset", 256, 256, 7).expect("renders"));
        assert_ne!(a, render_demo("sunset", 256, 256, 8).expect("renders"));
    }

    #[test]
    fn cyrillic_has_glyphs_and_is_drawn() {
        let font = FontRef::try_from_slice(FONT).expect("font");
        for c in ('\u{0400}'..='\u{045F}').chain("Привет, мир! Ёжик".chars()) {
            assert!(c.is_whitespace() || c.is_ascii_punctuation() || glyph(&font, c).is_some(), "{c}");
        }
        // The text panel area must differ from the no-text rendering.
        let with_text = decode_png(&render_demo("Кот в сапогах", 512, 512, 3).expect("renders"));
        let centre_differs = (200..312)
            .flat_map(|y| (100..412).map(move |x| (x, y)))
            .filter(|&(x, y)| with_text.get_pixel(x, y).0 == [255, 255, 255])
            .count();
        assert!(centre_differs > 50, "white text pixels in the centre: {centre_differs}");
    }

    #[test]
    fn odd_prompts_do_not_panic() {
        let huge = "слово ".repeat(20_000);
        let long_word = "x".repeat(5_000);
        for prompt in ["", "   ", "🐱🚀", "line one\nline two\n\n", &huge, &long_word, "a\u{0}b\u{7}"] {
            for (w, h) in [(32, 32), (64, 2048), (2048, 64), (512, 512)] {
                let img = decode_png(&render_demo(prompt, w, h, 42).expect("renders"));
                assert_eq!(img.dimensions(), (w, h));
            }
        }
    }

    #[test]
    fn label_is_in_the_corner() {
        let img = decode_png(&render_demo("x", 512, 512, 1).expect("renders"));
        // The badge's red fill starts at the margin (0.6 × 25.6 px).
        assert_eq!(img.get_pixel(17, 17).0, [196, 32, 48]);
    }
}
