//! `parse_mode` handling: turns HTML / MarkdownV2 / Markdown text into plain text plus
//! `MessageEntity` objects, the way Telegram stores a message, and refuses malformed markup
//! with Telegram's "can't parse entities" error. Offsets and lengths are UTF-16 code units.
//!
//! Rules follow the "Formatting options" section of the Bot API documentation. The parsers are
//! deliberately small: they accept what the documentation allows and name the first problem.

use serde_json::{Value, json};

/// Text as Telegram stores it after parsing.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Parsed {
    pub text: String,
    pub entities: Vec<Value>,
}

const PREFIX: &str = "Bad Request: can't parse entities: ";

/// Parses `text` in `mode` (`None` = plain text). The error is a full Bot API description.
pub(crate) fn parse(text: &str, mode: Option<&str>) -> Result<Parsed, String> {
    // Telegram compares the mode case-insensitively.
    let mode = mode.map(str::to_ascii_lowercase);
    let mut out = match mode.as_deref() {
        None | Some("") => Ok(Parsed { text: text.to_owned(), entities: Vec::new() }),
        Some("html") => Html::default().run(text),
        Some("markdownv2") => MarkdownV2::default().run(text),
        Some("markdown") => markdown_legacy(text),
        Some(_) => return Err("Bad Request: unsupported parse_mode".to_owned()),
    }
    .map_err(|e| format!("{PREFIX}{e}"))?;
    out.entities.retain(|e| e["length"].as_u64().unwrap_or(0) > 0);
    out.entities.sort_by_key(|e| (e["offset"].as_u64().unwrap_or(0), u64::MAX - e["length"].as_u64().unwrap_or(0)));
    Ok(out)
}

/// Length of `s` in UTF-16 code units (the unit of entity offsets).
pub(crate) fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

fn entity(kind: &str, offset: usize, length: usize) -> Value {
    json!({"type": kind, "offset": offset, "length": length})
}

/// Output buffer that tracks its UTF-16 length.
#[derive(Default)]
struct Out {
    text: String,
    len16: usize,
    entities: Vec<Value>,
}

impl Out {
    fn push(&mut self, c: char) {
        self.text.push(c);
        self.len16 += c.len_utf16();
    }
    fn push_str(&mut self, s: &str) {
        s.chars().for_each(|c| self.push(c));
    }
    fn finish(self) -> Parsed {
        Parsed { text: self.text, entities: self.entities }
    }
}

// ---------------------------------------------------------------------------------------------
// HTML

struct OpenTag {
    name: String,
    entity: Option<Value>,
    start: usize,
}

#[derive(Default)]
struct Html {
    out: Out,
    stack: Vec<OpenTag>,
}

impl Html {
    fn run(mut self, s: &str) -> Result<Parsed, String> {
        let mut i = 0;
        while i < s.len() {
            let rest = &s[i..];
            let Some(c) = rest.chars().next() else { break };
            if c == '<' {
                let next = rest[1..].chars().next();
                if !next.is_some_and(|n| n.is_ascii_alphabetic() || n == '/') {
                    return Err(format!("Unsupported start tag \"\" at byte offset {i}"));
                }
                let end = rest.find('>').ok_or(format!("Unclosed start tag at byte offset {i}"))?;
                self.tag(&rest[1..end], i)?;
                i += end + 1;
            } else if c == '&' {
                let (ch, used) = html_entity(rest);
                self.out.push(ch);
                i += used;
            } else {
                self.out.push(c);
                i += c.len_utf8();
            }
        }
        if let Some(open) = self.stack.last() {
            return Err(format!("Can't find end tag corresponding to start tag \"{}\"", open.name));
        }
        Ok(self.out.finish())
    }

    fn tag(&mut self, inner: &str, at: usize) -> Result<(), String> {
        if let Some(close) = inner.strip_prefix('/') {
            let name = close.trim().to_ascii_lowercase();
            let open = self.stack.pop().ok_or(format!("Unexpected end tag at byte offset {at}"))?;
            if !name.is_empty() && name != open.name {
                return Err(format!(
                    "Unmatched end tag at byte offset {at}, expected \"</{}>\", found \"</{name}>\"",
                    open.name
                ));
            }
            if let Some(mut e) = open.entity {
                e["offset"] = json!(open.start);
                e["length"] = json!(self.out.len16 - open.start);
                self.out.entities.push(e);
            }
            return Ok(());
        }
        let name_len = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).unwrap_or(inner.len());
        let name = inner[..name_len].to_ascii_lowercase();
        let attrs = parse_attrs(&inner[name_len..]);
        let attr = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let unsupported = || format!("Unsupported start tag \"{name}\" at byte offset {at}");
        let kind = |k: &str| Some(json!({"type": k}));
        let entity = match name.as_str() {
            "b" | "strong" => kind("bold"),
            "i" | "em" => kind("italic"),
            "u" | "ins" => kind("underline"),
            "s" | "strike" | "del" => kind("strikethrough"),
            "tg-spoiler" => kind("spoiler"),
            "span" if attr("class").as_deref() == Some("tg-spoiler") => kind("spoiler"),
            "a" => attr("href").map(|url| json!({"type": "text_link", "url": url})),
            "code" => {
                let lang = attr("class").and_then(|c| c.strip_prefix("language-").map(str::to_owned));
                match (self.stack.last_mut(), lang) {
                    (Some(OpenTag { name, entity: Some(e), .. }), Some(lang)) if name == "pre" => {
                        e["language"] = json!(lang);
                        None
                    }
                    _ => kind("code"),
                }
            }
            "pre" => kind("pre"),
            "blockquote" if attr("expandable").is_some() => kind("expandable_blockquote"),
            "blockquote" => kind("blockquote"),
            "tg-emoji" => {
                let id = attr("emoji-id").ok_or_else(unsupported)?;
                Some(json!({"type": "custom_emoji", "custom_emoji_id": id}))
            }
            _ => return Err(unsupported()),
        };
        self.stack.push(OpenTag { name, entity, start: self.out.len16 });
        Ok(())
    }
}

/// `&lt;` and friends; an unknown entity stays a literal `&`. Returns the char and bytes used.
fn html_entity(s: &str) -> (char, usize) {
    let Some(end) = s[..s.len().min(12)].find(';') else {
        return ('&', 1);
    };
    let name = &s[1..end];
    let ch = match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        _ => {
            let num = name.strip_prefix('#');
            let code = num.and_then(|n| match n.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => n.parse().ok(),
            });
            code.and_then(char::from_u32)
        }
    };
    match ch {
        Some(c) => (c, end + 1),
        None => ('&', 1),
    }
}

fn parse_attrs(mut s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        let name_end = s.find(|c: char| c == '=' || c.is_whitespace()).unwrap_or(s.len());
        if name_end == 0 {
            return out;
        }
        let name = s[..name_end].to_ascii_lowercase();
        s = s[name_end..].trim_start();
        let value = if let Some(rest) = s.strip_prefix('=') {
            let rest = rest.trim_start();
            let (v, used) = match rest.chars().next() {
                Some(q @ ('"' | '\'')) => {
                    let end = rest[1..].find(q).map(|e| e + 1).unwrap_or(rest.len());
                    (&rest[1..end], (end + 1).min(rest.len()))
                }
                _ => {
                    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                    (&rest[..end], end)
                }
            };
            s = &rest[used..];
            decode_html_text(v)
        } else {
            String::new()
        };
        out.push((name, value));
    }
}

fn decode_html_text(s: &str) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < s.len() {
        if s[i..].starts_with('&') {
            let (c, used) = html_entity(&s[i..]);
            out.push(c);
            i += used;
        } else if let Some(c) = s[i..].chars().next() {
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// MarkdownV2

const RESERVED: &str = "_*[]()~`>#+-=|{}.!";

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mark {
    Bold,
    Italic,
    Underline,
    Strikethrough,
    Spoiler,
    Link,
    Emoji,
}

impl Mark {
    fn entity(self) -> &'static str {
        match self {
            Mark::Bold => "bold",
            Mark::Italic => "italic",
            Mark::Underline => "underline",
            Mark::Strikethrough => "strikethrough",
            Mark::Spoiler => "spoiler",
            Mark::Link => "text_link",
            Mark::Emoji => "custom_emoji",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Mark::Bold => "Bold",
            Mark::Italic => "Italic",
            Mark::Underline => "Underline",
            Mark::Strikethrough => "Strikethrough",
            Mark::Spoiler => "Spoiler",
            Mark::Link => "TextUrl",
            Mark::Emoji => "CustomEmoji",
        }
    }
}

#[derive(Default)]
struct MarkdownV2 {
    out: Out,
    stack: Vec<(Mark, usize, usize)>,
    quote_start: Option<usize>,
}

impl MarkdownV2 {
    fn run(mut self, s: &str) -> Result<Parsed, String> {
        let chars: Vec<(usize, char)> = s.char_indices().collect();
        let at = |k: usize| chars.get(k).map(|&(_, c)| c);
        let mut k = 0;
        let mut line_start = true;
        while k < chars.len() {
            let (byte, c) = chars[k];
            if line_start {
                line_start = false;
                if c == '>' {
                    self.quote_start.get_or_insert(self.out.len16);
                    k += 1;
                    continue;
                }
                self.close_quote();
            }
            match c {
                '\\' => {
                    match at(k + 1) {
                        Some(n) if (1..=126).contains(&(n as u32)) => {
                            self.out.push(n);
                            k += 2;
                        }
                        _ => {
                            self.out.push('\\');
                            k += 1;
                        }
                    }
                    continue;
                }
                '\n' => {
                    // The newline that ends a quoted line is not part of the quote.
                    if self.quote_start.is_some() && at(k + 1) != Some('>') {
                        self.close_quote();
                    }
                    self.out.push('\n');
                    line_start = true;
                }
                '`' => {
                    k = self.code(&chars, k)?;
                    continue;
                }
                '*' => self.toggle(Mark::Bold, byte)?,
                '_' if at(k + 1) == Some('_') => {
                    self.toggle(Mark::Underline, byte)?;
                    k += 1;
                }
                '_' => self.toggle(Mark::Italic, byte)?,
                '~' => self.toggle(Mark::Strikethrough, byte)?,
                '|' if at(k + 1) == Some('|') => {
                    self.toggle(Mark::Spoiler, byte)?;
                    k += 1;
                }
                '[' => self.stack.push((Mark::Link, self.out.len16, byte)),
                '!' if at(k + 1) == Some('[') => {
                    self.stack.push((Mark::Emoji, self.out.len16, byte));
                    k += 1;
                }
                ']' if matches!(self.stack.last(), Some((Mark::Link | Mark::Emoji, _, _))) => {
                    k = self.link_end(&chars, k)?;
                    continue;
                }
                c if RESERVED.contains(c) => {
                    return Err(format!("Character '{c}' is reserved and must be escaped with the preceding '\\'"));
                }
                c => self.out.push(c),
            }
            k += 1;
        }
        self.close_quote();
        if let Some((mark, _, byte)) = self.stack.last() {
            return Err(format!("Can't find end of {} entity at byte offset {byte}", mark.name()));
        }
        Ok(self.out.finish())
    }

    fn close_quote(&mut self) {
        if let Some(start) = self.quote_start.take() {
            self.out.entities.push(entity("blockquote", start, self.out.len16 - start));
        }
    }

    fn toggle(&mut self, mark: Mark, byte: usize) -> Result<(), String> {
        match self.stack.iter().rposition(|(m, _, _)| *m == mark) {
            None => self.stack.push((mark, self.out.len16, byte)),
            Some(pos) if pos + 1 == self.stack.len() => {
                let (_, start, _) = self.stack.remove(pos);
                self.out.entities.push(entity(mark.entity(), start, self.out.len16 - start));
            }
            Some(_) => {
                let (inner, _, at) = self.stack[self.stack.len() - 1];
                return Err(format!("Can't find end of {} entity at byte offset {at}", inner.name()));
            }
        }
        Ok(())
    }

    /// Inline code or a pre block starting at `chars[k]`; returns the index after it.
    fn code(&mut self, chars: &[(usize, char)], k: usize) -> Result<usize, String> {
        let byte = chars[k].0;
        let is_pre = chars.get(k + 1).map(|c| c.1) == Some('`') && chars.get(k + 2).map(|c| c.1) == Some('`');
        let open_len = if is_pre { 3 } else { 1 };
        let mut body = String::new();
        let mut j = k + open_len;
        loop {
            let Some(&(_, c)) = chars.get(j) else {
                let kind = if is_pre { "Pre" } else { "Code" };
                return Err(format!("Can't find end of {kind} entity at byte offset {byte}"));
            };
            if c == '\\' {
                if let Some(&(_, n)) = chars.get(j + 1) {
                    body.push(n);
                    j += 2;
                    continue;
                }
            }
            let closes = c == '`'
                && (!is_pre
                    || (chars.get(j + 1).map(|c| c.1) == Some('`') && chars.get(j + 2).map(|c| c.1) == Some('`')));
            if closes {
                break;
            }
            body.push(c);
            j += 1;
        }
        let start = self.out.len16;
        if is_pre {
            let mut lang = None;
            if let Some((first, rest)) = body.split_once('\n') {
                if !first.is_empty() && !first.contains(char::is_whitespace) {
                    lang = Some(first.to_owned());
                    body = rest.to_owned();
                }
            }
            self.out.push_str(&body);
            let mut e = entity("pre", start, self.out.len16 - start);
            if let Some(l) = lang {
                e["language"] = json!(l);
            }
            self.out.entities.push(e);
        } else {
            self.out.push_str(&body);
            self.out.entities.push(entity("code", start, self.out.len16 - start));
        }
        Ok(j + open_len)
    }

    /// `](url)` closing a link or custom emoji at `chars[k]`; returns the index after it.
    fn link_end(&mut self, chars: &[(usize, char)], k: usize) -> Result<usize, String> {
        let Some((mark, start, byte)) = self.stack.pop() else {
            return Ok(k + 1);
        };
        if chars.get(k + 1).map(|c| c.1) != Some('(') {
            return Err(format!("Can't find end of {} entity at byte offset {byte}", mark.name()));
        }
        let mut url = String::new();
        let mut j = k + 2;
        loop {
            match chars.get(j).map(|c| c.1) {
                None => {
                    return Err(format!("Can't find end of a URL at byte offset {}", chars[k + 1].0));
                }
                Some('\\') if j + 1 < chars.len() => {
                    url.push(chars[j + 1].1);
                    j += 2;
                }
                Some(')') => break,
                Some(c) => {
                    url.push(c);
                    j += 1;
                }
            }
        }
        let len = self.out.len16 - start;
        let e = match mark {
            Mark::Emoji => {
                let id = url
                    .strip_prefix("tg://emoji?id=")
                    .ok_or_else(|| format!("Custom emoji URL must have scheme tg at byte offset {byte}"))?;
                json!({"type": "custom_emoji", "offset": start, "length": len, "custom_emoji_id": id})
            }
            _ => json!({"type": "text_link", "offset": start, "length": len, "url": url}),
        };
        self.out.entities.push(e);
        Ok(j + 1)
    }
}

// ---------------------------------------------------------------------------------------------
// Markdown (legacy): *bold*, _italic_, `code`, ```pre```, [text](url); no nesting.

fn markdown_legacy(s: &str) -> Result<Parsed, String> {
    let mut out = Out::default();
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut k = 0;
    while k < chars.len() {
        let (byte, c) = chars[k];
        if c == '\\' && matches!(chars.get(k + 1).map(|c| c.1), Some('_' | '*' | '`' | '[')) {
            out.push(chars[k + 1].1);
            k += 2;
            continue;
        }
        let (close, kind, open_len): (&str, &str, usize) = match c {
            '*' => ("*", "bold", 1),
            '_' => ("_", "italic", 1),
            '`' if s[byte..].starts_with("```") => ("```", "pre", 3),
            '`' => ("`", "code", 1),
            '[' => ("]", "text_link", 1),
            _ => {
                out.push(c);
                k += 1;
                continue;
            }
        };
        let body_from = byte + open_len;
        let rel =
            s[body_from..].find(close).ok_or(format!("Can't find end of the entity starting at byte offset {byte}"))?;
        let body = &s[body_from..body_from + rel];
        let mut next = body_from + rel + close.len();
        let start = out.len16;
        out.push_str(body);
        let mut e = entity(kind, start, out.len16 - start);
        if kind == "text_link" {
            let rest = &s[next..];
            let url_end = rest
                .strip_prefix('(')
                .and_then(|r| r.find(')'))
                .ok_or(format!("Can't find end of the entity starting at byte offset {byte}"))?;
            e["url"] = json!(&rest[1..url_end + 1]);
            next += url_end + 2;
        }
        out.entities.push(e);
        k = chars.iter().position(|&(b, _)| b >= next).unwrap_or(chars.len());
    }
    Ok(out.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(p: &Parsed) -> Vec<(String, u64, u64)> {
        p.entities
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or("").to_owned(),
                    e["offset"].as_u64().unwrap_or(0),
                    e["length"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    #[test]
    fn html_becomes_text_and_entities() {
        let p = parse("<b>Hi</b> &lt;you&gt; <a href=\"https://x.y/?a=1&amp;b=2\">link</a> 😀<i>é</i>", Some("HTML"))
            .expect("valid html");
        assert_eq!(p.text, "Hi <you> link 😀é");
        assert_eq!(kinds(&p), vec![("bold".into(), 0, 2), ("text_link".into(), 9, 4), ("italic".into(), 16, 1)]);
        assert_eq!(p.entities[1]["url"], "https://x.y/?a=1&b=2");
        let pre = parse("<pre><code class=\"language-rust\">fn</code></pre>", Some("HTML")).expect("pre");
        assert_eq!(pre.entities, vec![json!({"type": "pre", "offset": 0, "length": 2, "language": "rust"})]);
    }

    #[test]
    fn html_errors_are_telegram_errors() {
        let e = parse("a < b", Some("HTML")).expect_err("bare <");
        assert!(e.starts_with("Bad Request: can't parse entities: Unsupported start tag"), "{e}");
        let e = parse("<b>x", Some("HTML")).expect_err("unclosed");
        assert!(e.contains("Can't find end tag corresponding to start tag \"b\""), "{e}");
        let e = parse("<b><i>x</b></i>", Some("HTML")).expect_err("crossed");
        assert!(e.contains("Unmatched end tag"), "{e}");
        let e = parse("<b", Some("HTML")).expect_err("unclosed start");
        assert!(e.contains("Unclosed start tag"), "{e}");
        let e = parse("<br>", Some("HTML")).expect_err("br");
        assert!(e.contains("\"br\""), "{e}");
        assert_eq!(parse("AT&T", Some("HTML")).expect("amp").text, "AT&T");
    }

    #[test]
    fn markdown_v2_parses_and_demands_escapes() {
        let p =
            parse("*bold _it_* __u__ ~s~ ||sp|| `c\\`` [l](https://a.b/\\)) 1\\.5", Some("MarkdownV2")).expect("valid");
        assert_eq!(p.text, "bold it u s sp c` l 1.5");
        assert_eq!(
            kinds(&p),
            vec![
                ("bold".into(), 0, 7),
                ("italic".into(), 5, 2),
                ("underline".into(), 8, 1),
                ("strikethrough".into(), 10, 1),
                ("spoiler".into(), 12, 2),
                ("code".into(), 15, 2),
                ("text_link".into(), 18, 1),
            ]
        );
        assert_eq!(p.entities[6]["url"], "https://a.b/)");
        let e = parse("Price: 1.5", Some("MarkdownV2")).expect_err("dot");
        assert!(e.contains("Character '.' is reserved"), "{e}");
        let e = parse("*open", Some("MarkdownV2")).expect_err("open");
        assert!(e.contains("Can't find end of Bold entity"), "{e}");
        let q = parse(">quoted\n>more\nplain", Some("MarkdownV2")).expect("quote");
        assert_eq!(q.text, "quoted\nmore\nplain");
        assert_eq!(kinds(&q), vec![("blockquote".into(), 0, 11)]);
        let pre = parse("```py\nx = 1\n```", Some("MarkdownV2")).expect("pre");
        assert_eq!(pre.text, "x = 1\n");
        assert_eq!(pre.entities[0]["language"], "py");
    }

    #[test]
    fn legacy_markdown_and_plain() {
        let p = parse("*b* _i_ [t](http://x) 1.5", Some("Markdown")).expect("md");
        assert_eq!(p.text, "b i t 1.5");
        assert_eq!(kinds(&p).len(), 3);
        assert!(parse("*b", Some("Markdown")).is_err());
        assert_eq!(parse("<b>", None).expect("plain").text, "<b>");
        assert_eq!(parse("<b>x</b>", Some("html")).expect("case").text, "x");
        assert_eq!(parse("x", Some("xml")).expect_err("mode"), "Bad Request: unsupported parse_mode");
    }
}
