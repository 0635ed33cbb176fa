//! The seed bots' extended prompt syntax:
//! `prompt | model=<id or alias> | size=WxH | aspect_ratio=W:H | negative=…`.

/// A parsed user prompt.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PromptSpec {
    pub prompt: String,
    pub model: Option<String>,
    pub size: Option<(u32, u32)>,
    /// The raw `size=` value when it did not parse or is out of range.
    pub bad_size: Option<String>,
    pub aspect_ratio: Option<String>,
    pub negative: Option<String>,
    /// Segments that were not understood (reported back, never silently dropped).
    pub unknown: Vec<String>,
}

/// Parses the text of a message. The first segment is the prompt; later segments are
/// `key=value` options (keys are case-insensitive; `ar` and `neg` are accepted short forms).
pub fn parse(text: &str) -> PromptSpec {
    let mut segments = text.split('|').map(str::trim);
    let mut spec = PromptSpec { prompt: segments.next().unwrap_or("").to_string(), ..Default::default() };
    for seg in segments.filter(|s| !s.is_empty()) {
        let Some((k, v)) = seg.split_once('=') else {
            spec.unknown.push(seg.to_string());
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        match k.as_str() {
            "model" | "m" => spec.model = Some(v.to_string()),
            "size" => match parse_size(v) {
                Some(s) => spec.size = Some(s),
                None => spec.bad_size = Some(v.to_string()),
            },
            "aspect_ratio" | "ar" => match parse_ratio(v) {
                Some(r) => spec.aspect_ratio = Some(r),
                None => spec.unknown.push(seg.to_string()),
            },
            "negative" | "neg" => spec.negative = Some(v.to_string()).filter(|s| !s.is_empty()),
            _ => spec.unknown.push(seg.to_string()),
        }
    }
    spec
}

fn parse_size(v: &str) -> Option<(u32, u32)> {
    let (w, h) = v
        .to_ascii_lowercase()
        .replace('×', "x")
        .split_once('x')
        .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))?;
    let (w, h): (u32, u32) = (w.parse().ok()?, h.parse().ok()?);
    ((64..=4096).contains(&w) && (64..=4096).contains(&h)).then_some((w, h))
}

fn parse_ratio(v: &str) -> Option<String> {
    let (a, b) = v.split_once(':')?;
    let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a > 0 && b > 0 && a <= 32 && b <= 32).then(|| format!("{a}:{b}"))
}

/// Width and height for an aspect ratio at about one megapixel (multiples of 64).
pub fn size_for_ratio(ratio: &str) -> Option<(u32, u32)> {
    let (a, b) = ratio.split_once(':')?;
    let (a, b): (f64, f64) = (a.parse().ok()?, b.parse().ok()?);
    let h = (1024.0 * 1024.0 * b / a).sqrt();
    let w = h * a / b;
    let r = |x: f64| ((x / 64.0).round().max(1.0) * 64.0) as u32;
    Some((r(w), r(h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_extended_syntax() {
        let s = parse("a red fox in snow | model=flux | size=1024x768 | aspect_ratio=16:9 | negative=blurry, text");
        assert_eq!(s.prompt, "a red fox in snow");
        assert_eq!(s.model.as_deref(), Some("flux"));
        assert_eq!(s.size, Some((1024, 768)));
        assert_eq!(s.aspect_ratio.as_deref(), Some("16:9"));
        assert_eq!(s.negative.as_deref(), Some("blurry, text"));
        assert!(s.unknown.is_empty());
    }

    #[test]
    fn reports_what_it_does_not_understand() {
        let s = parse("кот | size=99999x1 | colour=red | blah");
        assert_eq!(s.prompt, "кот");
        assert_eq!(s.bad_size.as_deref(), Some("99999x1"));
        assert_eq!(s.unknown, vec!["colour=red".to_string(), "blah".to_string()]);
        assert_eq!(parse("plain text").prompt, "plain text");
    }

    #[test]
    fn ratio_sizes_are_about_a_megapixel() {
        assert_eq!(size_for_ratio("1:1"), Some((1024, 1024)));
        let (w, h) = size_for_ratio("16:9").expect("ratio");
        assert!(w > h && w % 64 == 0 && h % 64 == 0);
    }
}
