//! A language model for text around images: turning a short idea into an image prompt and
//! translating prompts into English. Configured by the optional `[llm]` section
//! ([`LlmConfig`]); two protocols:
//!
//! - `kind = "openai"`: `POST {base_url}/chat/completions` on any OpenAI-compatible server
//!   (OpenAI, OpenRouter, llama.cpp, vLLM, Ollama; protocols.md §4.4).
//! - `kind = "fal"`: fal's `fal-ai/any-llm` through the queue API (protocols.md §2): submit,
//!   poll `status_url` until `COMPLETED`, read `response_url`. The queue answers are read by the
//!   same parsers as the image provider ([`fal::parse_accepted`], [`fal::parse_status`]).
//!
//! Uses `config` and the shared HTTP pieces of `providers` (client builder, capped body reads,
//! error bodies); nothing above them.

use crate::config::{LlmConfig, LlmKind, Secret};
use crate::providers::ProviderError;
use crate::providers::fal::{self, FalStatus};
use crate::providers::http;
use serde_json::{Value, json};
use std::time::Duration;

/// fal endpoint id of the any-llm app.
pub const FAL_ANY_LLM: &str = "fal-ai/any-llm";
/// Telegram's limit on a message text, in UTF-16 code units (protocols.md §1.3).
pub const TELEGRAM_TEXT_LIMIT: usize = 4096;
/// Largest answer body read (bytes): a chat answer is a few KB; anything bigger is not one.
const MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Pause between fal status polls: an LLM answer takes a second or two.
const FAL_POLL: Duration = Duration::from_millis(500);
/// Sampling temperature sent to OpenAI-compatible servers.
const TEMPERATURE: f64 = 0.7;

/// Why a completion failed. Callers decide what the user sees; [`Llm::translate`] callers use
/// the original text on any of these.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The whole exchange took longer than `timeout_secs`.
    #[error("the language model did not answer in time")]
    Timeout,
    /// Network failure, HTTP 408/429/5xx, or a fal run that failed: may work later.
    #[error("language model unavailable: {0}")]
    Unavailable(String),
    /// The model or server declined: `finish_reason: "content_filter"`, a `refusal`, a fal
    /// content-policy error, or any other 4xx (bad key, unknown model) with its text.
    #[error("language model refused: {0}")]
    Refused(String),
    /// A 2xx answer without usable text (not JSON, no choices, empty content, over 1 MiB).
    #[error("malformed answer from the language model: {0}")]
    Malformed(String),
    /// The client cannot be built as configured (fal without a key, no TLS backend).
    #[error("language model misconfigured: {0}")]
    Config(String),
}

/// A configured language model. Cheap to share behind an `Arc`; `Debug` hides the key.
#[derive(Debug)]
pub struct Llm {
    kind: LlmKind,
    base_url: String,
    model: String,
    key: Secret,
    timeout: Duration,
    writer_prompt: String,
    translate_prompt: String,
    http: reqwest::Client,
    poll: Duration,
}

impl Llm {
    /// Builds the client from `[llm]` (already validated by `Config::validate`). The key comes
    /// from `api_key_env` or `api_key`; without one no `Authorization` header is sent (local
    /// OpenAI-compatible servers), except for fal, which needs one.
    ///
    /// Errors: `Config` for fal without a key or an HTTP client that cannot be built.
    pub fn new(cfg: &LlmConfig) -> Result<Llm, LlmError> {
        let key = cfg.resolved_key();
        if cfg.kind == LlmKind::Fal && key.is_empty() {
            return Err(LlmError::Config("kind = \"fal\" needs a key (api_key_env = \"FAL_KEY\")".into()));
        }
        let timeout = Duration::from_secs(cfg.timeout_secs.max(1));
        let http =
            http::builder(timeout).build().map_err(|e| LlmError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Llm {
            kind: cfg.kind,
            base_url: cfg.effective_base_url(),
            model: cfg.model.clone(),
            key,
            timeout,
            writer_prompt: cfg.writer_system_prompt.clone(),
            translate_prompt: cfg.translate_system_prompt.clone(),
            http,
            poll: FAL_POLL,
        })
    }

    /// Polls fal faster than [`FAL_POLL`] (tests walk the fake queue's states).
    #[cfg(test)]
    pub fn with_poll(mut self, poll: Duration) -> Llm {
        self.poll = poll;
        self
    }

    /// One answer to `user` under the `system` instructions, trimmed and non-empty. The whole
    /// exchange (for fal: submit, every poll and the result) is bounded by `timeout_secs`.
    ///
    /// openai: `{"model", "messages": [system, user], "temperature": 0.7}` →
    /// `choices[0].message.content`; fal any-llm: `{"prompt": user, "system_prompt": system,
    /// "model"}` → `{"output"}`.
    ///
    /// Errors: see [`LlmError`].
    pub async fn complete(&self, system: &str, user: &str) -> Result<String, LlmError> {
        let exchange = async {
            match self.kind {
                LlmKind::Openai => self.complete_openai(system, user).await,
                LlmKind::Fal => self.complete_fal(system, user).await,
            }
        };
        tokio::time::timeout(self.timeout, exchange).await.unwrap_or(Err(LlmError::Timeout))
    }

    /// A detailed image prompt for a short `idea` (any language), with `writer_system_prompt`.
    ///
    /// Errors: see [`Llm::complete`].
    pub async fn write_prompt(&self, idea: &str) -> Result<String, LlmError> {
        self.complete(&self.writer_prompt, idea).await
    }

    /// `prompt` in English, with `translate_system_prompt`. Translation is an improvement, not
    /// a requirement: callers send the original prompt on any error rather than failing.
    ///
    /// Errors: see [`Llm::complete`].
    pub async fn translate(&self, prompt: &str) -> Result<String, LlmError> {
        self.complete(&self.translate_prompt, prompt).await
    }

    async fn complete_openai(&self, system: &str, user: &str) -> Result<String, LlmError> {
        let body = json!({
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": TEMPERATURE,
        });
        let url = format!("{}/chat/completions", self.base_url);
        let v = self.send(self.http.post(url).json(&body)).await?;
        parse_chat_answer(&v)
    }

    async fn complete_fal(&self, system: &str, user: &str) -> Result<String, LlmError> {
        let body = json!({"prompt": user, "system_prompt": system, "model": self.model});
        let v = self.send(self.http.post(format!("{}/{FAL_ANY_LLM}", self.base_url)).json(&body)).await?;
        // The URLs it returns are checked against base_url's origin: only there goes the key.
        let sub = fal::parse_accepted(&v, &self.base_url, FAL_ANY_LLM).map_err(malformed)?;
        let url = |key: &str| sub.data.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let status_url = fal::with_logs_off(&url("status_url")).map_err(malformed)?;
        loop {
            let v = self.send(self.http.get(status_url.clone())).await?;
            match fal::parse_status(&v).map_err(malformed)? {
                FalStatus::Completed(None) => break,
                FalStatus::Completed(Some(ProviderError::Rejected(m))) => return Err(LlmError::Refused(m)),
                FalStatus::Completed(Some(e)) => return Err(LlmError::Unavailable(e.to_string())),
                FalStatus::InQueue(_) | FalStatus::InProgress | FalStatus::Other(_) => {}
            }
            tokio::time::sleep(self.poll).await;
        }
        let v = self.send(self.http.get(url("response_url"))).await?;
        parse_any_llm_answer(&v)
    }

    /// Sends with the key (openai: `Bearer`, only when one is set; fal: `Key`), reads at most
    /// 1 MiB and parses the JSON answer.
    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<Value, LlmError> {
        let rb = match (self.kind, self.key.is_empty()) {
            (_, true) => rb,
            (LlmKind::Openai, false) => rb.bearer_auth(self.key.expose()),
            (LlmKind::Fal, false) => rb.header(reqwest::header::AUTHORIZATION, format!("Key {}", self.key.expose())),
        };
        let resp = rb.timeout(self.timeout).send().await.map_err(|e| transport(&e))?;
        let status = resp.status().as_u16();
        let body = http::read_limited(resp, MAX_BODY_BYTES).await.map_err(|e| match e {
            ProviderError::Transient(m) => LlmError::Unavailable(m),
            other => LlmError::Malformed(other.to_string()),
        })?;
        if !(200..300).contains(&status) {
            let detail: String = http::error_detail(&String::from_utf8_lossy(&body)).chars().take(300).collect();
            return Err(match status {
                408 | 429 | 500..=599 => LlmError::Unavailable(format!("HTTP {status}: {detail}")),
                _ => LlmError::Refused(format!("HTTP {status}: {detail}")),
            });
        }
        serde_json::from_slice(&body).map_err(|e| LlmError::Malformed(format!("not JSON: {e}")))
    }
}

fn transport(e: &reqwest::Error) -> LlmError {
    if e.is_timeout() { LlmError::Timeout } else { LlmError::Unavailable(http::describe(e)) }
}

fn malformed(e: ProviderError) -> LlmError {
    LlmError::Malformed(e.to_string())
}

/// Reads a chat completion (§4.4): `choices[0]` with `finish_reason: "content_filter"` or a
/// `message.refusal` is `Refused`; otherwise `message.content`, trimmed, must be non-empty.
pub fn parse_chat_answer(v: &Value) -> Result<String, LlmError> {
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| LlmError::Malformed("no choices".into()))?;
    if choice.get("finish_reason").and_then(Value::as_str) == Some("content_filter") {
        return Err(LlmError::Refused("stopped by the content filter".into()));
    }
    let message = choice.get("message");
    if let Some(refusal) = message.and_then(|m| m.get("refusal")).and_then(Value::as_str).filter(|r| !r.is_empty()) {
        return Err(LlmError::Refused(refusal.to_string()));
    }
    let text = message.and_then(|m| m.get("content")).and_then(Value::as_str).map(str::trim).unwrap_or_default();
    if text.is_empty() {
        return Err(LlmError::Malformed("empty answer".into()));
    }
    Ok(text.to_string())
}

/// Reads an any-llm result `{"output": "…", "error"?: "…"}`: the trimmed output; an `error`
/// without output is `Unavailable` (the routed model failed), nothing at all `Malformed`.
pub fn parse_any_llm_answer(v: &Value) -> Result<String, LlmError> {
    let text = v.get("output").and_then(Value::as_str).map(str::trim).unwrap_or_default();
    if !text.is_empty() {
        return Ok(text.to_string());
    }
    match v.get("error").and_then(Value::as_str).filter(|e| !e.is_empty()) {
        Some(e) => Err(LlmError::Unavailable(e.to_string())),
        None => Err(LlmError::Malformed("empty answer".into())),
    }
}

/// Splits `text` into messages of at most `limit` UTF-16 code units each (Telegram counts
/// UTF-16: an emoji outside the BMP is 2). Pieces end at the last sentence boundary that fits
/// (`. `, `! `, `? `, `…`, a newline); a sentence longer than `limit` is split at its last
/// space that fits, and a word longer than that between grapheme clusters. Whitespace at the
/// splits is dropped (each piece is trimmed); empty text gives no pieces. `limit` below 2 is
/// taken as 2, so a surrogate pair always fits.
pub fn split_for_telegram(text: &str, limit: usize) -> Vec<String> {
    let limit = limit.max(2);
    let mut pieces = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        if utf16_len(rest) <= limit {
            pieces.push(rest.to_string());
            break;
        }
        let cut = cut_point(rest, limit);
        pieces.push(rest[..cut].trim_end().to_string());
        rest = rest[cut..].trim_start();
    }
    pieces
}

fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Byte offset where the first piece of `rest` (longer than `limit`, no leading whitespace)
/// ends: after a sentence, else at a space, else between graphemes; always > 0.
fn cut_point(rest: &str, limit: usize) -> usize {
    // `fit`: the end of the longest prefix within the limit.
    let mut fit = 0;
    let mut units = 0;
    for (i, c) in rest.char_indices() {
        units += c.len_utf16();
        if units > limit {
            break;
        }
        fit = i + c.len_utf8();
    }
    let window = &rest[..fit];
    let next = rest[fit..].chars().next();
    let mut sentence = None;
    let mut space = None;
    let mut chars = window.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = i + c.len_utf8();
        let after = chars.peek().map(|&(_, n)| n).or(next);
        let ends_sentence = match c {
            '\n' | '…' => true,
            '.' | '!' | '?' => after.is_some_and(char::is_whitespace),
            _ => false,
        };
        if ends_sentence {
            sentence = Some(end);
        }
        if c.is_whitespace() && i > 0 {
            space = Some(i);
        }
    }
    if let Some(end) = sentence.or(space) {
        return end;
    }
    // No space either: the last grapheme boundary that fits (so an emoji sequence stays whole),
    // or, for one cluster longer than the limit, the char boundary.
    use unicode_segmentation::UnicodeSegmentation;
    rest.grapheme_indices(true).map(|(i, _)| i).take_while(|&i| i <= fit).filter(|&i| i > 0).last().unwrap_or(fit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(s: &str) -> usize {
        s.encode_utf16().count()
    }

    fn without_space(s: &str) -> String {
        s.chars().filter(|c| !c.is_whitespace()).collect()
    }

    /// The pieces are the text in order, with only whitespace between and around them.
    fn assert_rejoins(text: &str, pieces: &[String]) {
        let mut at = 0;
        for p in pieces {
            let found = text[at..].find(p.as_str()).unwrap_or_else(|| panic!("{p:?} not found after byte {at}"));
            assert!(text[at..at + found].trim().is_empty(), "text dropped before {p:?}");
            at += found + p.len();
        }
        assert!(text[at..].trim().is_empty(), "text dropped at the end");
    }

    #[test]
    fn russian_text_of_10000_chars_splits_at_sentences_within_4096_units() {
        let sentences = [
            "Кот сидит на подоконнике и смотрит на дождь.",
            "Вечером город зажигает огни, и улицы становятся золотыми!",
            "Кто знает, что случится завтра?",
            "Старый маяк стоит на скале уже сто лет…",
        ];
        let mut text = String::new();
        let mut i = 0;
        while text.chars().count() < 10_000 {
            text.push_str(sentences[i % sentences.len()]);
            text.push(if i % 7 == 6 { '\n' } else { ' ' });
            i += 1;
        }
        let pieces = split_for_telegram(&text, TELEGRAM_TEXT_LIMIT);
        assert!(pieces.len() >= 3, "{} pieces", pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            assert!(units(p) <= TELEGRAM_TEXT_LIMIT, "{} units", units(p));
            let last_piece = i + 1 == pieces.len();
            assert!(last_piece || units(p) > TELEGRAM_TEXT_LIMIT - 100, "pieces are filled ({} units)", units(p));
            let last = p.chars().last().unwrap_or_default();
            assert!(matches!(last, '.' | '!' | '?' | '…'), "ends at a sentence: …{last}");
            assert_eq!(p.trim(), p);
        }
        assert_eq!(without_space(&pieces.concat()), without_space(&text));
        assert_rejoins(&text, &pieces);
    }

    #[test]
    fn emoji_count_as_two_units_and_are_never_cut() {
        // 10 units per sentence: "Hi 🐱🐱🐱." = 3 + 6 + 1.
        let text = "Hi 🐱🐱🐱. Hi 🐱🐱🐱. Hi 🐱🐱🐱.";
        assert_eq!(units("Hi 🐱🐱🐱."), 10);
        assert_eq!(split_for_telegram(text, 21), ["Hi 🐱🐱🐱. Hi 🐱🐱🐱.", "Hi 🐱🐱🐱."]);
        // 20 units fit two sentences only by chars (14), not by UTF-16 units (21).
        assert_eq!(split_for_telegram(text, 20), ["Hi 🐱🐱🐱.", "Hi 🐱🐱🐱.", "Hi 🐱🐱🐱."]);
        // A run of emoji with no space: split between them, never inside a surrogate pair or a
        // ZWJ sequence (👩‍💻 is one grapheme of 5 units).
        let run = "🐱".repeat(7);
        let pieces = split_for_telegram(&run, 5);
        assert_eq!(pieces, ["🐱🐱", "🐱🐱", "🐱🐱", "🐱"]);
        let coders = "👩‍💻".repeat(3);
        assert_eq!(split_for_telegram(&coders, 11), ["👩‍💻👩‍💻", "👩‍💻"]);
    }

    #[test]
    fn a_long_sentence_splits_at_a_word_then_hard() {
        let words = "слово ".repeat(20); // 120 chars, no sentence end
        let pieces = split_for_telegram(&words, 50);
        assert!(pieces.iter().all(|p| units(p) <= 50 && p.split(' ').all(|w| w == "слово")), "{pieces:?}");
        assert_rejoins(&words, &pieces);
        let word = "а".repeat(25);
        assert_eq!(split_for_telegram(&word, 10), ["а".repeat(10), "а".repeat(10), "а".repeat(5)]);
        // A sentence boundary inside the window wins over a later space.
        assert_eq!(split_for_telegram("Да. Нет и да и нет", 12), ["Да.", "Нет и да и", "нет"]);
        // A period without a following space (a number, an URL) is no sentence end.
        assert_eq!(split_for_telegram("v1.5 is out now", 8), ["v1.5 is", "out now"]);
    }

    #[test]
    fn short_and_empty_texts() {
        assert_eq!(split_for_telegram("  hello  ", TELEGRAM_TEXT_LIMIT), ["hello"]);
        assert!(split_for_telegram(" \n ", TELEGRAM_TEXT_LIMIT).is_empty());
        assert_eq!(split_for_telegram("Одна строка\nвторая строка", 15), ["Одна строка", "вторая строка"]);
        assert_eq!(split_for_telegram("Ну…да", 3), ["Ну…", "да"]);
    }

    #[test]
    fn chat_answers_parse() {
        let ok = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "  a cat  \n"}, "finish_reason": "stop"}]});
        assert_eq!(parse_chat_answer(&ok).expect("text"), "a cat");
        let filtered = json!({"choices": [{"message": {"content": "partial"}, "finish_reason": "content_filter"}]});
        assert!(matches!(parse_chat_answer(&filtered), Err(LlmError::Refused(_))));
        let refusal = json!({"choices": [{"message": {"content": null, "refusal": "I can't help"}}]});
        assert!(matches!(parse_chat_answer(&refusal), Err(LlmError::Refused(m)) if m == "I can't help"));
        for bad in [json!({}), json!({"choices": []}), json!({"choices": [{"message": {"content": " "}}]})] {
            assert!(matches!(parse_chat_answer(&bad), Err(LlmError::Malformed(_))), "{bad}");
        }
        assert_eq!(parse_any_llm_answer(&json!({"output": " hi "})).expect("text"), "hi");
        assert!(matches!(parse_any_llm_answer(&json!({"output": "", "error": "x"})), Err(LlmError::Unavailable(_))));
        assert!(matches!(parse_any_llm_answer(&json!({"output": ""})), Err(LlmError::Malformed(_))));
    }
}
