//! Text overlay ("📝 Add text"): a caption with Cyrillic, Latin and colour emoji drawn onto a
//! photo, styled by a small deterministic wish language in Russian or English.
//!
//! Only the caption's rectangle is touched: the plate, blur and glyphs are composited straight
//! into the decoded picture, with no full-size overlay layer (Pillow's way costs a second
//! full-size RGBA buffer and a full-frame alpha composite).

use super::decode::decode_full;
use super::ops::flatten_on_white;
use super::{ImagingError, Limits, encode};
use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont, point};
use image::RgbImage;

/// DejaVu Sans: Latin, Greek, Cyrillic. Licence: `fonts/LICENSE-DejaVu.txt`.
const TEXT_FONT: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");
/// Twemoji Mozilla, COLR v0 + CPAL layered colour glyphs. Licence: `fonts/LICENSE-Twemoji.txt`
/// (font OFL 1.1; artwork "Twemoji by Twitter / jdecked, CC BY 4.0").
const EMOJI_FONT: &[u8] = include_bytes!("fonts/TwemojiMozilla-COLRv0.ttf");
/// Output quality, the seed bot's.
const QUALITY: u8 = 90;
/// Captions longer than this are cut: a photo caption, not an essay.
pub const MAX_TEXT_CHARS: usize = 1000;
/// Text may use this fraction of the image width (the rest is margin and plate padding).
const TEXT_WIDTH: f32 = 0.85;

/// Font size: a fraction of the image width, or pixels (em size).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TextSize {
    Small,
    Medium,
    /// width / 16, the seed bot's size.
    Normal,
    Large,
    Huge,
    /// Em size in pixels, clamped to 6..=1000.
    Px(u32),
}

/// Where the caption block sits; the margin is a percentage of the image height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Top,
    Center,
    Bottom,
}

/// Caption style. [`Default`] is the seed bot's look: normal size, automatic colour, bottom with
/// a 5 % margin, black plate at 63 % opacity, no blur.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayStyle {
    pub size: TextSize,
    /// Text colour; `None` picks black or white, whichever contrasts with what is under it.
    pub color: Option<[u8; 3]>,
    pub position: Position,
    /// Distance from the top or bottom edge, percent of the height (0..=40).
    pub margin_pct: u8,
    /// Plate colour behind the text; `None` for no plate.
    pub plate: Option<[u8; 3]>,
    /// Plate opacity, percent (0..=100).
    pub plate_opacity_pct: u8,
    /// Blur radius in pixels applied to the picture under the plate (0 = none, at most 64).
    pub blur_px: u32,
}

impl Default for OverlayStyle {
    fn default() -> Self {
        OverlayStyle {
            size: TextSize::Normal,
            color: None,
            position: Position::Bottom,
            margin_pct: 5,
            plate: Some([0, 0, 0]),
            plate_opacity_pct: 63,
            blur_px: 0,
        }
    }
}

/// What [`parse_wishes`] understood, and what it did not.
#[derive(Debug, Clone, PartialEq)]
pub struct Wishes {
    pub style: OverlayStyle,
    /// Words that are not part of the wish language, in input order, as written. Show them to
    /// the user: they were ignored.
    pub unknown: Vec<String>,
}

/// Colour words (lowercase stems, so Russian case endings match) → RGB.
const COLORS: &[(&[&str], [u8; 3])] = &[
    (&["white", "бел"], [255, 255, 255]),
    (&["black", "чёрн", "черн"], [0, 0, 0]),
    (&["red", "красн"], [220, 30, 30]),
    (&["green", "зелён", "зелен"], [40, 170, 60]),
    (&["blue", "сини", "синя", "сине", "синю"], [30, 80, 220]),
    (&["lightblue", "cyan", "голуб"], [90, 190, 250]),
    (&["yellow", "жёлт", "желт"], [255, 215, 0]),
    (&["orange", "оранж"], [255, 140, 0]),
    (&["purple", "violet", "фиолет"], [140, 60, 200]),
    (&["pink", "розов"], [255, 105, 180]),
    (&["gray", "grey", "серы", "сера", "серо", "серу"], [128, 128, 128]),
];

/// Size words (stems) in both languages.
const SIZES: &[(&[&str], TextSize)] = &[
    (&["small", "tiny", "мелк", "маленьк"], TextSize::Small),
    (&["medium", "средн"], TextSize::Medium),
    (&["normal", "regular", "обычн", "нормальн"], TextSize::Normal),
    (&["large", "big", "крупн", "больш"], TextSize::Large),
    (&["huge", "огромн", "гигантск"], TextSize::Huge),
];

const POSITIONS: &[(&[&str], Position)] = &[
    (&["top", "верх", "сверху", "вверху"], Position::Top),
    (&["center", "centre", "middle", "центр", "посередин", "середин"], Position::Center),
    (&["bottom", "низ", "снизу", "внизу"], Position::Bottom),
];

const PLATE_WORDS: &[&str] = &["plate", "background", "box", "плашк", "подложк", "фон"];
const NO_WORDS: &[&str] = &["no", "without", "без", "нет"];
const BLUR_WORDS: &[&str] = &["blur", "blurred", "размыт", "размыв", "размыл"];
const MARGIN_WORDS: &[&str] = &["margin", "offset", "indent", "отступ"];
const AUTO_WORDS: &[&str] = &["auto", "авто", "автоматическ", "контраст"];
/// Words that carry no style on their own.
const FILLER: &[&str] = &[
    "text",
    "font",
    "color",
    "colour",
    "size",
    "on",
    "with",
    "a",
    "the",
    "and",
    "in",
    "at",
    "of",
    "px",
    "текст",
    "шрифт",
    "цвет",
    "размер",
    "на",
    "с",
    "со",
    "в",
    "и",
    "по",
    "пикс",
    "пикселей",
    "буквы",
    "надпись",
];

/// English words match exactly; Russian stems match as prefixes, so every case ending works.
fn matches_stem(word: &str, stems: &[&str]) -> bool {
    stems.iter().any(|s| if s.is_ascii() { word == *s } else { word.starts_with(s) })
}

/// Parses free-text style wishes, e.g. "крупный белый текст снизу на чёрной плашке 50%" or
/// "huge yellow top, no plate".
///
/// Words: sizes (small/мелкий, medium/средний, normal/обычный, large/big/крупный,
/// huge/огромный, or `48px`), colours (white, black, red, green, blue, cyan, yellow, orange,
/// purple, pink, gray and the Russian adjectives in any case, `#rrggbb`/`#rgb`, auto/авто),
/// positions (top/сверху, center/по центру, bottom/снизу), plate (plate/плашка/фон; a colour
/// next to it colours the plate; "no plate"/"без плашки"), `N%` (plate opacity, or the margin
/// after margin/отступ), blur/размытие with an optional radius in px. Deterministic: the same
/// text gives the same style. Later words win over earlier ones.
pub fn parse_wishes(text: &str) -> Wishes {
    let mut style = OverlayStyle::default();
    let mut unknown = Vec::new();
    let words: Vec<String> = text
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '.' | '!' | '?' | '(' | ')'))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    let raw: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '.' | '!' | '?' | '(' | ')'))
        .filter(|w| !w.is_empty())
        .collect();
    let is_plate = |i: usize| words.get(i).is_some_and(|w| matches_stem(w, PLATE_WORDS));
    let is_text = |i: usize| words.get(i).is_some_and(|w| matches!(w.as_str(), "text" | "текст" | "буквы" | "надпись"));
    // "чёрной плашке" and "плашка чёрная" colour the plate; "плашка, белый текст" does not.
    let for_plate = |i: usize| is_plate(i + 1) || (i > 0 && is_plate(i - 1) && !is_text(i + 1));
    let mut i = 0;
    while i < words.len() {
        let w = words[i].as_str();
        let prev = if i > 0 { words.get(i - 1).map(String::as_str) } else { None };
        if let Some(px) = w.strip_suffix("px").or_else(|| w.strip_suffix("пикс")).and_then(|n| n.parse::<u32>().ok())
        {
            style.size = TextSize::Px(px.clamp(6, 1000));
        } else if let Some(pct) = w.strip_suffix('%').and_then(|n| n.parse::<u32>().ok()) {
            if prev.is_some_and(|p| matches_stem(p, MARGIN_WORDS)) {
                style.margin_pct = u8::try_from(pct.min(40)).unwrap_or(40);
            } else {
                style.plate_opacity_pct = u8::try_from(pct.min(100)).unwrap_or(100);
                if style.plate.is_none() {
                    style.plate = Some([0, 0, 0]);
                }
            }
        } else if let Some(rgb) = w.strip_prefix('#').and_then(parse_hex) {
            assign_color(&mut style, rgb, for_plate(i));
        } else if let Some((_, rgb)) = COLORS.iter().find(|(stems, _)| matches_stem(w, stems)) {
            assign_color(&mut style, *rgb, for_plate(i));
        } else if let Some((_, size)) = SIZES.iter().find(|(stems, _)| matches_stem(w, stems)) {
            style.size = *size;
        } else if let Some((_, pos)) = POSITIONS.iter().find(|(stems, _)| matches_stem(w, stems)) {
            style.position = *pos;
        } else if matches_stem(w, PLATE_WORDS) {
            if prev.is_some_and(|p| matches_stem(p, NO_WORDS)) {
                style.plate = None;
            } else if style.plate.is_none() {
                style.plate = Some([0, 0, 0]);
            }
        } else if matches_stem(w, BLUR_WORDS) {
            style.blur_px = 8;
            if let Some(n) = words.get(i + 1).and_then(|n| n.trim_end_matches("px").parse::<u32>().ok()) {
                style.blur_px = n.min(64);
                i += 1;
            }
        } else if matches_stem(w, AUTO_WORDS) {
            style.color = None;
        } else if !(matches_stem(w, NO_WORDS) || matches_stem(w, MARGIN_WORDS) || FILLER.contains(&w)) {
            unknown.push(raw[i].to_string());
        }
        i += 1;
    }
    Wishes { style, unknown }
}

fn assign_color(style: &mut OverlayStyle, rgb: [u8; 3], for_plate: bool) {
    if for_plate {
        style.plate = Some(rgb);
    } else {
        style.color = Some(rgb);
    }
}

fn parse_hex(hex: &str) -> Option<[u8; 3]> {
    let v = u32::from_str_radix(hex, 16).ok()?;
    let b = v.to_be_bytes();
    match hex.len() {
        6 => Some([b[1], b[2], b[3]]),
        3 => {
            let nib = |s: u32| u8::try_from((v >> s) & 0xF).unwrap_or(0) * 17;
            Some([nib(8), nib(4), nib(0)])
        }
        _ => None,
    }
}

/// Draws `text` onto the image in `bytes` and returns an upright JPEG (q90, no metadata, alpha
/// flattened on white). `text` is cut to [`MAX_TEXT_CHARS`]; newlines are kept; words wrap to
/// 85 % of the width and over-long words break between characters. Emoji are drawn in colour
/// from the embedded Twemoji (COLR v0 layers in their CPAL colours); ZWJ sequences are drawn
/// as their parts. A caption too tall for the picture is set in a smaller size (down to 6 px);
/// lines that still do not fit are dropped from the end.
///
/// Errors: those of [`super::decode`]; [`ImagingError::Encode`] if encoding fails.
pub fn overlay_text(bytes: &[u8], text: &str, style: &OverlayStyle, limits: &Limits) -> Result<Vec<u8>, ImagingError> {
    let decoded = decode_full(bytes, limits)?;
    let mut rgb = flatten_on_white(decoded.image);
    draw_caption(&mut rgb, text, style)?;
    encode::encode_rgb(&rgb, QUALITY)
}

struct Fonts<'a> {
    text: FontRef<'a>,
    emoji: FontRef<'a>,
    /// The emoji font once more for shaping: Twemoji joins ZWJ sequences, flags (pairs of
    /// regional indicators) and keycaps into one glyph through its GSUB `ccmp` ligatures, which
    /// only a shaper applies. Derefs to the `ttf_parser::Face` that has the COLR table.
    emoji_face: rustybuzz::Face<'a>,
}

/// One drawable unit: a glyph from the text font, or a colour emoji.
#[derive(Clone, Copy)]
enum Glyph {
    Text(GlyphId),
    Emoji(ttf_parser::GlyphId),
}

struct Layout {
    text_scale: PxScale,
    emoji_scale: PxScale,
    /// Emoji em size in px (for placing them on the baseline).
    em: f32,
}

impl Fonts<'static> {
    fn load() -> Result<Self, ImagingError> {
        let bad = |e: String| ImagingError::Encode(format!("embedded font: {e}"));
        Ok(Fonts {
            text: FontRef::try_from_slice(TEXT_FONT).map_err(|e| bad(e.to_string()))?,
            emoji: FontRef::try_from_slice(EMOJI_FONT).map_err(|e| bad(e.to_string()))?,
            emoji_face: rustybuzz::Face::from_slice(EMOJI_FONT, 0).ok_or_else(|| bad("not a font".into()))?,
        })
    }
}

/// Joiners, presentation selectors, the keycap mark and tag characters (subdivision flags):
/// no ink of their own, they only shape the emoji before them.
fn is_emoji_modifier(c: char) -> bool {
    matches!(c, '\u{200D}' | '\u{FE0E}' | '\u{FE0F}' | '\u{20E3}' | '\u{E0020}'..='\u{E007F}')
}

impl Fonts<'_> {
    /// A character Twemoji draws in colour. Plain letters and digits stay in the text font
    /// even where Twemoji has keycap bases.
    fn is_colour_emoji(&self, c: char) -> bool {
        u32::from(c) >= 0x2000 && self.emoji_face.glyph_index(c).is_some_and(|id| self.emoji_face.is_color_glyph(id))
    }

    /// The glyphs of one line with their advances in px: text-font characters one by one
    /// (Latin and Cyrillic need no shaping), emoji clusters shaped as runs so that
    /// 👨‍👩‍👧, 🇷🇺 and 1️⃣ come out as one glyph each rather than their parts.
    fn shape(&self, layout: &Layout, line: &str) -> Vec<(Glyph, f32)> {
        let mut out = Vec::new();
        let mut run = String::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            let keycap = matches!(c, '0'..='9' | '#' | '*')
                && chars.peek().is_some_and(|&n| matches!(n, '\u{FE0F}' | '\u{20E3}'));
            if self.is_colour_emoji(c) || keycap || (!run.is_empty() && is_emoji_modifier(c)) {
                run.push(c);
                continue;
            }
            self.shape_emoji(layout, &mut run, &mut out);
            if is_emoji_modifier(c) || c.is_control() {
                continue;
            }
            let id = self.text.glyph_id(c);
            if id.0 != 0 {
                out.push((Glyph::Text(id), self.text.as_scaled(layout.text_scale).h_advance(id)));
            }
        }
        self.shape_emoji(layout, &mut run, &mut out);
        out
    }

    /// Shapes and empties `run`. Glyphs without colour layers (a joiner left over from a
    /// sequence the font has no ligature for) are dropped, as unshaped text would drop them.
    fn shape_emoji(&self, layout: &Layout, run: &mut String, out: &mut Vec<(Glyph, f32)>) {
        if run.is_empty() {
            return;
        }
        let mut buffer = rustybuzz::UnicodeBuffer::new();
        buffer.push_str(run);
        run.clear();
        let shaped = rustybuzz::shape(&self.emoji_face, &[], buffer);
        let px_per_unit = layout.em / self.emoji_face.units_per_em() as f32;
        for (info, pos) in shaped.glyph_infos().iter().zip(shaped.glyph_positions()) {
            let id = ttf_parser::GlyphId(info.glyph_id as u16);
            if self.emoji_face.is_color_glyph(id) {
                out.push((Glyph::Emoji(id), pos.x_advance as f32 * px_per_unit));
            }
        }
    }

    fn width(&self, layout: &Layout, s: &str) -> f32 {
        self.shape(layout, s).iter().map(|(_, advance)| advance).sum()
    }
}

/// Font em size in px for an image `width` px wide.
fn font_px(size: TextSize, width: u32, height: u32) -> f32 {
    let w = width as f32;
    let px = match size {
        TextSize::Small => w / 28.0,
        TextSize::Medium => w / 21.0,
        TextSize::Normal => w / 16.0,
        TextSize::Large => w / 11.0,
        TextSize::Huge => w / 7.0,
        TextSize::Px(px) => px.clamp(6, 1000) as f32,
    };
    // At least 6 px (readable on 1×1 maths), and a single line must fit the height.
    px.min(height as f32 / 1.5).max(6.0)
}

/// ab_glyph scales by line height; this gives an em of `px` pixels (Pillow's font size), so
/// both fonts get the same em.
fn em_scale(font: &FontRef<'_>, px: f32) -> PxScale {
    let upem = font.units_per_em().unwrap_or(1000.0);
    PxScale::from(px * font.height_unscaled() / upem)
}

/// Greedy word wrap to `max_width`, keeping the text's own line breaks.
fn wrap(fonts: &Fonts<'_>, layout: &Layout, text: &str, max_width: f32) -> Vec<String> {
    super::wrap_words(text, |s: &str| fonts.width(layout, s) <= max_width)
}

/// Font size, line height, padding, wrapped lines and how many lines fit, for a `w × h` picture.
/// A caption taller than the picture is set smaller (15 % steps, down to 6 px) rather than
/// losing lines; only at 6 px can `lines` be longer than the lines that fit.
fn fit_caption(
    fonts: &Fonts<'_>,
    text: &str,
    size: TextSize,
    w: f32,
    h: f32,
) -> (Layout, f32, f32, Vec<String>, usize) {
    let mut px = font_px(size, w as u32, h as u32);
    loop {
        let layout = Layout { text_scale: em_scale(&fonts.text, px), emoji_scale: em_scale(&fonts.emoji, px), em: px };
        let scaled = fonts.text.as_scaled(layout.text_scale);
        let line_h = (scaled.ascent() - scaled.descent()) * 1.15;
        let pad = (px * 0.4).round();
        let lines = wrap(fonts, &layout, text, (w * TEXT_WIDTH - 2.0 * pad).max(1.0));
        let max_lines = (((h - 2.0 * pad) / line_h).floor() as usize).max(1);
        if lines.len() <= max_lines || px <= 6.0 {
            return (layout, line_h, pad, lines, max_lines);
        }
        px = (px * 0.85).max(6.0);
    }
}

/// Where a caption goes on a picture, in that picture's pixel coordinates.
struct CaptionPlan {
    layout: Layout,
    line_h: f32,
    pad: f32,
    lines: Vec<String>,
    widths: Vec<f32>,
    /// Picture width (the lines are centred on it).
    w: f32,
    /// The plate (or the text block without one): left, top, width, height.
    x0: f32,
    y0: f32,
    plate_w: f32,
    plate_h: f32,
}

impl CaptionPlan {
    /// `None` when no line fits (an empty text).
    fn new(fonts: &Fonts<'_>, text: &str, style: &OverlayStyle, width: u32, height: u32) -> Option<Self> {
        let (w, h) = (width as f32, height as f32);
        let (layout, line_h, pad, mut lines, max_lines) = fit_caption(fonts, text, style.size, w, h);
        lines.truncate(max_lines);
        if lines.is_empty() {
            return None;
        }
        let widths: Vec<f32> = lines.iter().map(|l| fonts.width(&layout, l)).collect();
        let block_w = widths.iter().copied().fold(0.0f32, f32::max);
        let block_h = line_h * lines.len() as f32;
        let margin = (h * f32::from(style.margin_pct.min(40)) / 100.0).round();
        let (plate_w, plate_h) = ((block_w + 2.0 * pad).min(w), (block_h + 2.0 * pad).min(h));
        let y0 = match style.position {
            Position::Top => margin,
            Position::Center => (h - plate_h) / 2.0,
            Position::Bottom => h - margin - plate_h,
        }
        .clamp(0.0, (h - plate_h).max(0.0));
        let x0 = ((w - plate_w) / 2.0).max(0.0);
        Some(CaptionPlan { layout, line_h, pad, lines, widths, w, x0, y0, plate_w, plate_h })
    }

    /// Every glyph outline of the caption: text glyphs (colour `None`: the text colour,
    /// opaque) and the layers of colour emoji (their CPAL colour and alpha).
    fn for_each_ink(&self, fonts: &Fonts<'_>, mut ink: impl FnMut(&ab_glyph::OutlinedGlyph, Option<[u8; 3]>, f32)) {
        let scaled = fonts.text.as_scaled(self.layout.text_scale);
        let layout = &self.layout;
        for (i, (line, lw)) in self.lines.iter().zip(&self.widths).enumerate() {
            let mut x = (self.w - lw) / 2.0;
            let baseline = self.y0 + self.pad + i as f32 * self.line_h + scaled.ascent();
            for (g, advance) in fonts.shape(layout, line) {
                match g {
                    Glyph::Text(id) => {
                        let glyph = id.with_scale_and_position(layout.text_scale, point(x, baseline));
                        if let Some(outline) = fonts.text.outline_glyph(glyph) {
                            ink(&outline, None, 1.0);
                        }
                    }
                    Glyph::Emoji(id) => emoji_layers(fonts, layout, id, x, baseline, &mut ink),
                }
                x += advance;
            }
        }
    }

    /// Draws into `img`, the whole picture.
    fn paint(&self, img: &mut RgbImage, fonts: &Fonts<'_>, style: &OverlayStyle) {
        let rect = clip(img, self.x0, self.y0, self.x0 + self.plate_w, self.y0 + self.plate_h);
        if style.blur_px > 0 {
            box_blur(img, rect, style.blur_px.min(64));
        }
        if let Some(color) = style.plate {
            tint(img, rect, color, style.plate_opacity_pct.min(100));
        }
        let color = style.color.unwrap_or_else(|| contrasting(img, rect));
        self.for_each_ink(fonts, |outline, ink, alpha| blend_coverage(img, outline, ink.unwrap_or(color), alpha));
    }
}

/// Draws the caption into `img` in place; only the caption block is read or written.
fn draw_caption(img: &mut RgbImage, text: &str, style: &OverlayStyle) -> Result<(), ImagingError> {
    let text: String = text.chars().take(MAX_TEXT_CHARS).collect();
    let fonts = Fonts::load()?;
    if let Some(plan) = CaptionPlan::new(&fonts, &text, style, img.width(), img.height()) {
        plan.paint(img, &fonts, style);
    }
    Ok(())
}

/// Collects COLR v0 layers: each an outline glyph and its solid CPAL colour.
struct Layers(Vec<(u16, ttf_parser::RgbaColor)>, Option<u16>);

impl<'a> ttf_parser::colr::Painter<'a> for Layers {
    fn outline_glyph(&mut self, glyph_id: ttf_parser::GlyphId) {
        self.1 = Some(glyph_id.0);
    }
    fn paint(&mut self, paint: ttf_parser::colr::Paint<'a>) {
        // v0 only has solid paints; gradients (COLR v1) are not in the embedded font.
        if let (Some(id), ttf_parser::colr::Paint::Solid(c)) = (self.1.take(), paint) {
            self.0.push((id, c));
        }
    }
    fn push_clip(&mut self) {}
    fn push_clip_box(&mut self, _: ttf_parser::colr::ClipBox) {}
    fn pop_clip(&mut self) {}
    fn push_layer(&mut self, _: ttf_parser::colr::CompositeMode) {}
    fn pop_layer(&mut self) {}
    fn push_transform(&mut self, _: ttf_parser::Transform) {}
    fn pop_transform(&mut self) {}
}

/// The layers of colour emoji `id` at pen position `x` on `baseline`, to `ink` with their
/// colour and alpha.
fn emoji_layers(
    fonts: &Fonts<'_>,
    layout: &Layout,
    id: ttf_parser::GlyphId,
    x: f32,
    baseline: f32,
    ink: &mut impl FnMut(&ab_glyph::OutlinedGlyph, Option<[u8; 3]>, f32),
) {
    let mut layers = Layers(Vec::new(), None);
    let black = ttf_parser::RgbaColor::new(0, 0, 0, 255);
    if fonts.emoji_face.paint_color_glyph(id, 0, black, &mut layers).is_none() {
        return;
    }
    // Twemoji sits slightly below the text baseline otherwise; centre it on the x-height band.
    let lift = layout.em * 0.08;
    for (layer, c) in layers.0 {
        let glyph = GlyphId(layer).with_scale_and_position(layout.emoji_scale, point(x, baseline - lift));
        if let Some(outline) = fonts.emoji.outline_glyph(glyph) {
            ink(&outline, Some([c.red, c.green, c.blue]), f32::from(c.alpha) / 255.0);
        }
    }
}

fn blend_coverage(img: &mut RgbImage, outline: &ab_glyph::OutlinedGlyph, color: [u8; 3], alpha: f32) {
    let bounds = outline.px_bounds();
    let (iw, ih) = (img.width() as i64, img.height() as i64);
    outline.draw(|gx, gy, cov| {
        let x = bounds.min.x as i64 + i64::from(gx);
        let y = bounds.min.y as i64 + i64::from(gy);
        if x < 0 || y < 0 || x >= iw || y >= ih {
            return;
        }
        let a = (cov * alpha).clamp(0.0, 1.0);
        // Most of a glyph's box is outside the glyph.
        if a <= 0.0 {
            return;
        }
        let px = img.get_pixel_mut(x as u32, y as u32);
        for (dst, &src) in px.0.iter_mut().zip(&color) {
            // Non-negative, so + 0.5 and truncation round to nearest (without a libm call).
            *dst = (f32::from(*dst) * (1.0 - a) + f32::from(src) * a + 0.5) as u8;
        }
    });
}

/// Pixel rectangle `[x0, x1) × [y0, y1)` clipped to the image.
fn clip(img: &RgbImage, x0: f32, y0: f32, x1: f32, y1: f32) -> (u32, u32, u32, u32) {
    let cx = |v: f32| v.round().clamp(0.0, img.width() as f32) as u32;
    let cy = |v: f32| v.round().clamp(0.0, img.height() as f32) as u32;
    (cx(x0), cy(y0), cx(x1), cy(y1))
}

fn tint(img: &mut RgbImage, (x0, y0, x1, y1): (u32, u32, u32, u32), color: [u8; 3], opacity_pct: u8) {
    let a = u32::from(opacity_pct) * 255 / 100;
    let width = img.width() as usize;
    if x1 <= x0 || y1 <= y0 {
        return;
    }
    let raw: &mut [u8] = img;
    let Some(rows) = raw.get_mut(y0 as usize * width * 3..y1 as usize * width * 3) else { return };
    let (left, right) = (x0 as usize * 3, x1 as usize * 3);
    // Per channel, every input level's blended level: at most (255 × 255 + 127) / 255 = 255.
    let table: [[u8; 256]; 3] = std::array::from_fn(|c| {
        std::array::from_fn(|v| ((v as u32 * (255 - a) + u32::from(color[c]) * a + 127) / 255) as u8)
    });
    let blend = |rows: &mut [u8]| {
        for row in rows.chunks_exact_mut(width * 3) {
            for px in row[left..right].chunks_exact_mut(3) {
                for (dst, t) in px.iter_mut().zip(&table) {
                    *dst = t[usize::from(*dst)];
                }
            }
        }
    };
    // A plate under a big caption is millions of pixels: on all cores, rows split evenly.
    let cores = super::strips::cores();
    let per = (y1 - y0).div_ceil(cores as u32) as usize * width * 3;
    std::thread::scope(|scope| {
        let mut parts = rows.chunks_mut(per.max(width * 3));
        let first = parts.next();
        for part in parts {
            scope.spawn(move || blend(part));
        }
        if let Some(part) = first {
            blend(part);
        }
    });
}

/// Black or white, whichever contrasts more with the mean luminance of the rectangle.
fn contrasting(img: &RgbImage, (x0, y0, x1, y1): (u32, u32, u32, u32)) -> [u8; 3] {
    let (mut sum, mut n) = (0u64, 0u64);
    for y in y0..y1 {
        for x in x0..x1 {
            let [r, g, b] = img.get_pixel(x, y).0;
            sum += (299 * u64::from(r) + 587 * u64::from(g) + 114 * u64::from(b)) / 1000;
            n += 1;
        }
    }
    let mean = if n == 0 { 128 } else { sum / n };
    if mean < 128 { [255, 255, 255] } else { [0, 0, 0] }
}

/// Three passes of a separable box blur (close to a Gaussian) over the rectangle only.
fn box_blur(img: &mut RgbImage, (x0, y0, x1, y1): (u32, u32, u32, u32), radius: u32) {
    if x1 <= x0 || y1 <= y0 {
        return;
    }
    let (w, h) = ((x1 - x0) as usize, (y1 - y0) as usize);
    let mut buf: Vec<[f32; 3]> = Vec::with_capacity(w * h);
    for y in y0..y1 {
        for x in x0..x1 {
            let p = img.get_pixel(x, y).0;
            buf.push([f32::from(p[0]), f32::from(p[1]), f32::from(p[2])]);
        }
    }
    let r = radius as usize / 2 + 1;
    for _ in 0..3 {
        blur_1d(&mut buf, w, h, r, true);
        blur_1d(&mut buf, w, h, r, false);
    }
    for (i, v) in buf.iter().enumerate() {
        let (x, y) = (x0 + (i % w) as u32, y0 + (i / w) as u32);
        img.put_pixel(x, y, image::Rgb(v.map(|c| c.round().clamp(0.0, 255.0) as u8)));
    }
}

/// One box pass along rows or columns with a running sum, so the cost does not grow with the
/// radius (a 64 px blur under a wide plate stays a few milliseconds). Edges average over the
/// part of the window inside the rectangle.
fn blur_1d(buf: &mut [[f32; 3]], w: usize, h: usize, r: usize, horizontal: bool) {
    let (n, lines) = if horizontal { (w, h) } else { (h, w) };
    let idx = |line: usize, k: usize| if horizontal { line * w + k } else { k * w + line };
    let mut tmp = vec![[0.0f32; 3]; n];
    for line in 0..lines {
        let mut acc = [0.0f32; 3];
        // Window [k - r, k + r] clipped to [0, n - 1]; start with [0, r - 1].
        for j in 0..r.min(n) {
            let p = buf[idx(line, j)];
            acc = [acc[0] + p[0], acc[1] + p[1], acc[2] + p[2]];
        }
        for (k, t) in tmp.iter_mut().enumerate() {
            if k + r < n {
                let p = buf[idx(line, k + r)];
                acc = [acc[0] + p[0], acc[1] + p[1], acc[2] + p[2]];
            }
            if k > r {
                let p = buf[idx(line, k - r - 1)];
                acc = [acc[0] - p[0], acc[1] - p[1], acc[2] - p[2]];
            }
            let count = ((k + r).min(n - 1) - k.saturating_sub(r) + 1) as f32;
            *t = acc.map(|v| v / count);
        }
        for (k, t) in tmp.iter().enumerate() {
            buf[idx(line, k)] = *t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(w: u32, h: u32, v: u8) -> RgbImage {
        RgbImage::from_pixel(w, h, image::Rgb([v, v, v]))
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128]))
    }

    fn coloured_pixels(img: &RgbImage) -> usize {
        img.pixels().filter(|p| p.0.iter().max().unwrap_or(&0) - p.0.iter().min().unwrap_or(&0) > 80).count()
    }

    fn bare() -> OverlayStyle {
        OverlayStyle { plate: None, ..OverlayStyle::default() }
    }

    #[test]
    fn cyrillic_and_emoji_render_in_colour() {
        let mut plain = grey(400, 300, 128);
        draw_caption(&mut plain, "Привет, мир", &bare()).expect("draws");
        assert!(plain.pixels().any(|p| p.0[0] != 128), "Cyrillic text drew something");
        assert_eq!(coloured_pixels(&plain), 0, "text alone is black or white");
        let mut emoji = grey(400, 300, 128);
        draw_caption(&mut emoji, "Привет 👋🔥❤️", &bare()).expect("draws");
        assert!(coloured_pixels(&emoji) > 200, "emoji are coloured, not tofu: {}", coloured_pixels(&emoji));
    }

    #[test]
    fn emoji_sequences_shape_into_one_glyph() {
        let fonts = Fonts::load().expect("fonts");
        let px = 40.0;
        let layout = Layout { text_scale: em_scale(&fonts.text, px), emoji_scale: em_scale(&fonts.emoji, px), em: px };
        let emoji_only = |s: &str| fonts.shape(&layout, s).iter().filter(|(g, _)| matches!(g, Glyph::Emoji(_))).count();
        // Family (ZWJ), flag (regional indicators), keycap, skin tone, subdivision flag (tags).
        for seq in [
            "👨\u{200D}👩\u{200D}👧",
            "🇷🇺",
            "1\u{FE0F}\u{20E3}",
            "👍🏽",
            "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
        ] {
            let glyphs = fonts.shape(&layout, seq);
            assert_eq!(glyphs.len(), 1, "{seq:?} is one glyph, got {}", glyphs.len());
            assert!(matches!(glyphs[0].0, Glyph::Emoji(_)), "{seq:?} is drawn in colour");
            assert!(glyphs[0].1 > px * 0.5, "{seq:?} advances like one emoji");
        }
        assert_eq!(emoji_only("👨👩👧"), 3, "without joiners they stay three");
        let mixed = fonts.shape(&layout, "Да 🇷🇺!");
        assert_eq!(mixed.len(), 5, "Д, а, space, one flag, !");
        assert_eq!(emoji_only("Да 🇷🇺!"), 1);
        assert!(fonts.width(&layout, "🇷🇺") < fonts.width(&layout, "🇷 🇺"), "a flag is narrower than its letters apart");
    }

    #[test]
    fn wrapping_keeps_text_inside() {
        let text = "Очень длинная подпись, которая никак не поместится в одну строку на узкой картинке";
        for (w, h) in [(200, 600), (600, 200), (1, 1), (37, 900)] {
            let mut img = grey(w, h, 0);
            let style = OverlayStyle { color: Some([255, 255, 255]), ..bare() };
            draw_caption(&mut img, text, &style).expect("draws");
            let edge = (w as f32 * (1.0 - TEXT_WIDTH) / 2.0).floor() as u32;
            for (x, _, p) in img.enumerate_pixels() {
                if p.0[0] > 0 {
                    assert!(x + 1 >= edge && x <= w - edge, "{w}×{h}: ink at x={x}");
                }
            }
        }
    }

    #[test]
    fn auto_colour_contrasts() {
        let ink = |bg: u8, plate: Option<[u8; 3]>| {
            let mut img = grey(300, 200, bg);
            let style = OverlayStyle { plate, plate_opacity_pct: 100, ..OverlayStyle::default() };
            draw_caption(&mut img, "Текст", &style).expect("draws");
            let under = if plate == Some([255, 255, 255]) {
                255
            } else if plate.is_some() {
                0
            } else {
                bg
            };
            img.pixels().map(|p| (i32::from(p.0[0]) - i32::from(under)).abs()).max().unwrap_or(0)
        };
        assert!(ink(255, None) > 200, "dark text on white");
        assert!(ink(0, None) > 200, "light text on black");
        assert!(ink(0, Some([255, 255, 255])) > 200, "dark text on a white plate");
        assert!(ink(255, Some([0, 0, 0])) > 200, "light text on a black plate");
    }

    #[test]
    fn seed_wish_parses_fully() {
        let w = parse_wishes("крупный белый текст снизу на чёрной плашке 50%");
        assert!(w.unknown.is_empty(), "{:?}", w.unknown);
        assert_eq!(w.style.size, TextSize::Large);
        assert_eq!(w.style.color, Some([255, 255, 255]));
        assert_eq!(w.style.position, Position::Bottom);
        assert_eq!(w.style.plate, Some([0, 0, 0]));
        assert_eq!(w.style.plate_opacity_pct, 50);
        let w = parse_wishes("huge #ff0 top, no plate, margin 10%");
        assert!(w.unknown.is_empty(), "{:?}", w.unknown);
        assert_eq!(
            (w.style.size, w.style.color, w.style.position),
            (TextSize::Huge, Some([255, 255, 0]), Position::Top)
        );
        assert_eq!((w.style.plate, w.style.margin_pct), (None, 10));
    }

    #[test]
    fn unknown_words_are_reported() {
        let w = parse_wishes("Крупный бантик, sparkle и синий");
        assert_eq!(w.unknown, vec!["бантик".to_string(), "sparkle".to_string()]);
        assert_eq!(w.style.color, Some([30, 80, 220]));
        assert_eq!(parse_wishes("").unknown, Vec::<String>::new());
    }

    /// Every backticked wish in README.md's table (between the `wishes:begin/end` markers).
    fn documented_wishes() -> Vec<String> {
        let readme = include_str!("../../README.md");
        let start = readme.find("<!-- wishes:begin").expect("README has the wish table");
        let end = readme[start..].find("<!-- wishes:end -->").expect("table end") + start;
        let table = &readme[start..end];
        let words: Vec<String> = table.split('`').skip(1).step_by(2).map(String::from).collect();
        assert!(words.len() > 50, "parsed the table: {words:?}");
        words
    }

    #[test]
    fn each_documented_wish_is_understood_and_changes_the_output() {
        let render = |style: &OverlayStyle| {
            let mut img = gradient(320, 240);
            draw_caption(&mut img, "Привет 🔥", style).expect("draws");
            img
        };
        // A word that restates a default changes nothing on its own, so each word is also
        // tried after settings that differ from it: it must change the picture in one of them.
        let contexts = ["", "huge #123456 top no plate margin 30%", "small #654321 center white plate 10% blur 4"];
        let before: Vec<RgbImage> = contexts.iter().map(|c| render(&parse_wishes(c).style)).collect();
        for wish in documented_wishes() {
            let alone = parse_wishes(&wish);
            assert!(alone.unknown.is_empty(), "{wish}: {:?}", alone.unknown);
            let changes = contexts.iter().zip(&before).any(|(c, img)| {
                let w = parse_wishes(&format!("{c} {wish}"));
                assert!(w.unknown.is_empty(), "{c} {wish}: {:?}", w.unknown);
                render(&w.style) != *img
            });
            assert!(changes, "{wish}: no visible change in any context");
        }
    }

    #[test]
    fn bot_help_words_are_documented_wishes() {
        // The words the bot lists in its prompt must parse too (texts in src/bot/locales).
        for text in [include_str!("../bot/locales/en.toml"), include_str!("../bot/locales/ru.toml")] {
            let line = text.lines().find(|l| l.starts_with("add_text_send_wishes")).expect("key");
            let list = line.split("\\n\\n").nth(1).expect("word list after the example");
            for item in list.split("\\n").filter(|i| i.starts_with('•')) {
                let words = item.split_once(": ").map(|(_, w)| w).unwrap_or("").trim_end_matches('"');
                for wish in words.split(", ").map(|w| w.split(" (").next().unwrap_or(w)) {
                    let w = parse_wishes(wish);
                    assert!(w.unknown.is_empty() && !wish.is_empty(), "{item}: {wish:?} → {:?}", w.unknown);
                }
            }
        }
    }

    #[test]
    fn a_long_caption_shrinks_instead_of_losing_lines() {
        let fonts = Fonts::load().expect("fonts");
        let text = "один два три четыре пять шесть семь восемь девять десять одиннадцать двенадцать КОНЕЦ";
        let px = font_px(TextSize::Huge, 600, 300);
        let layout = Layout { text_scale: em_scale(&fonts.text, px), emoji_scale: em_scale(&fonts.emoji, px), em: px };
        let at_huge = wrap(&fonts, &layout, text, 600.0 * TEXT_WIDTH).len();
        let (fitted, _, _, lines, max_lines) = fit_caption(&fonts, text, TextSize::Huge, 600.0, 300.0);
        assert!(at_huge > max_lines, "the huge size alone would lose lines: {at_huge}");
        assert!(lines.len() <= max_lines && fitted.em < px, "{} lines, {max_lines} fit, {} px", lines.len(), fitted.em);
        assert_eq!(lines.join(" "), text, "every word is kept");
    }

    #[test]
    fn running_box_blur_equals_the_window_mean() {
        let (w, h) = (23usize, 5usize);
        let original: Vec<[f32; 3]> = (0..w * h).map(|i| [(i * 37 % 251) as f32, (i % 7) as f32, 0.0]).collect();
        for r in [1, 3, 30] {
            let mut buf = original.clone();
            blur_1d(&mut buf, w, h, r, true);
            for line in 0..h {
                for k in 0..w {
                    let (lo, hi) = (k.saturating_sub(r), (k + r).min(w - 1));
                    let mean = (lo..=hi).map(|j| original[line * w + j][0]).sum::<f32>() / (hi - lo + 1) as f32;
                    assert!((buf[line * w + k][0] - mean).abs() < 0.01, "r={r} k={k}");
                }
            }
        }
    }

    #[test]
    fn only_the_caption_block_is_touched() {
        let original = gradient(400, 300);
        let mut img = original.clone();
        let style = OverlayStyle { blur_px: 12, ..OverlayStyle::default() };
        draw_caption(&mut img, "Привет 🔥\nвторая строка", &style).expect("draws");
        let changed: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(x, y, p)| original.get_pixel(*x, *y) != *p)
            .map(|(x, y, _)| (x, y))
            .collect();
        let (ys, xs): (Vec<u32>, Vec<u32>) = changed.iter().map(|&(x, y)| (y, x)).unzip();
        let (top, bottom) = (ys.iter().min().copied().unwrap_or(0), ys.iter().max().copied().unwrap_or(0));
        let (left, right) = (xs.iter().min().copied().unwrap_or(0), xs.iter().max().copied().unwrap_or(0));
        assert!(!changed.is_empty());
        assert!(top > 150 && bottom < 300 - 10, "a bottom block with a 5 % margin: rows {top}..={bottom}");
        assert!(left > 0 && right < 399, "centred, narrower than the picture: {left}..={right}");
        // Everything in that bounding box changed (plate), nothing outside it did.
        let area = ((bottom - top + 1) * (right - left + 1)) as usize;
        assert!(changed.len() * 10 > area * 9, "{} of {area}", changed.len());
    }
}
