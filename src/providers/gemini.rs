//! Google Gemini native image generation (protocols.md §5.2–5.3): `POST
//! {base_url}/models/{model}:generateContent` with `x-goog-api-key`, text and `inlineData`
//! image parts in, `inlineData` image parts out. The old Imagen `:predict` endpoint is shut down
//! on the Gemini API (§5.1): its 404, like any unknown model's, is `Retired`.
//!
//! The call is synchronous: `submit` parks the request ([`super::Parked`]), `wait` calls.

use super::http::{self, MAX_JSON_BYTES};
use super::{GenerateRequest, GeneratedFile, ImageProvider, Parked, ProgressFn, ProviderError, SizeParam, Submission};
use crate::config::ProviderConfig;
use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Bound on one `generateContent` call (image models answer in 10–60 s).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Wait before retrying a 429 that names no delay (neither `Retry-After` nor `RetryInfo`).
pub const DEFAULT_RETRY: Duration = Duration::from_secs(20);
/// `imageConfig.aspectRatio` values (§5.2).
pub const ASPECT_RATIOS: [&str; 8] = ["1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9"];

/// A Gemini provider (`kind = "gemini"`); a model's `endpoint` is the model id
/// (`gemini-2.5-flash-image`).
///
/// Errors (§5.3): 404 → `Retired`; 400 `FAILED_PRECONDITION` "User location is not supported"
/// / "not available in your country" → `Unauthorized` (the provider is disabled and the admins
/// alerted) with a hint to set the provider's `proxy`; 403 → `Unauthorized`; 429
/// `RESOURCE_EXHAUSTED` → `RateLimited` (delay from `Retry-After` or the `RetryInfo` detail,
/// else [`DEFAULT_RETRY`]); an answer without an image → `Rejected` with the block or finish
/// reason (see [`images_or_reason`]).
pub struct GeminiProvider {
    acct: http::Account,
    parked: Parked,
}

impl std::fmt::Debug for GeminiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("GeminiProvider").field(&self.acct).finish()
    }
}

impl GeminiProvider {
    /// Builds the client from `[[providers]]` config (`base_url` default
    /// `https://generativelanguage.googleapis.com/v1beta`, key, `proxy`).
    ///
    /// Errors: `Unauthorized` without a key; `Failed` for a bad base_url or HTTP client.
    pub fn new(cfg: &ProviderConfig) -> Result<GeminiProvider, ProviderError> {
        Ok(GeminiProvider { acct: http::Account::new(cfg)?, parked: Parked::default() })
    }

    async fn call(&self, req: &GenerateRequest) -> Result<Vec<GeneratedFile>, ProviderError> {
        let model = req.endpoint.trim().trim_start_matches("models/");
        let url = format!("{}/models/{model}:generateContent", self.acct.base_url);
        let resp = self
            .acct
            .http
            .post(url)
            .header("x-goog-api-key", self.acct.key.expose())
            .json(&build_body(req))
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| http::classify(&e))?;
        let status = resp.status().as_u16();
        let wait = http::retry_after(resp.headers());
        let body = http::read_limited(resp, MAX_JSON_BYTES).await?;
        let text = String::from_utf8_lossy(&body);
        if !(200..300).contains(&status) {
            return Err(classify_error(status, wait, &text, &self.acct.id));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Failed(format!("malformed response (generateContent): {e}")))?;
        images_or_reason(&v)
    }
}

#[async_trait::async_trait]
impl ImageProvider for GeminiProvider {
    fn id(&self) -> &str {
        &self.acct.id
    }

    /// Checks the request and parks it (no HTTP): the id is local, see [`Parked`].
    async fn submit(&self, req: &GenerateRequest, _preassigned: Option<&str>) -> Result<Submission, ProviderError> {
        if req.endpoint.trim().is_empty() {
            return Err(ProviderError::Misconfigured(format!("model {}: no Gemini model id", req.model_id)));
        }
        Ok(self.parked.park(req))
    }

    async fn wait(&self, sub: &Submission, progress: ProgressFn<'_>) -> Result<Vec<GeneratedFile>, ProviderError> {
        self.parked.run(sub, &self.acct.id, progress, |req| async move { self.call(&req).await }).await
    }

    async fn cancel(&self, sub: &Submission) -> Result<(), ProviderError> {
        self.parked.remove(sub);
        Ok(())
    }
}

/// The request body (§5.2): one user turn with the prompt as a `text` part, then each input
/// photo as an `inlineData` part (edits take 1–4 reference photos); `generationConfig` with
/// `responseModalities: ["TEXT", "IMAGE"]` (image models answer both) and
/// `imageConfig.aspectRatio` (see [`aspect_ratio`]). The model's params and chosen options
/// go into `imageConfig` when named `aspectRatio` / `imageSize`, else into
/// `generationConfig` (`temperature`, …); they win.
pub fn build_body(req: &GenerateRequest) -> Value {
    let mut parts = vec![json!({"text": req.prompt})];
    for img in &req.input_images {
        parts.push(json!({"inlineData": {
            "mimeType": img.mime,
            "data": base64::engine::general_purpose::STANDARD.encode(&img.bytes),
        }}));
    }
    let mut image_config = Map::new();
    if let Some(ar) = aspect_ratio(req) {
        image_config.insert("aspectRatio".into(), json!(ar));
    }
    let mut generation = Map::new();
    generation.insert("responseModalities".into(), json!(["TEXT", "IMAGE"]));
    for (k, v) in &req.extra {
        if k == "aspectRatio" || k == "imageSize" {
            image_config.insert(k.clone(), v.clone());
        } else {
            generation.insert(k.clone(), v.clone());
        }
    }
    if !image_config.is_empty() {
        generation.insert("imageConfig".into(), Value::Object(image_config));
    }
    json!({"contents": [{"role": "user", "parts": parts}], "generationConfig": generation})
}

/// The user's `aspect_ratio=W:H` when Gemini accepts it, else the accepted ratio nearest to
/// `width:height`. `None` with `size_param = "none"`, or for an edit without an explicit ratio
/// (the model keeps the photo's shape).
pub fn aspect_ratio(req: &GenerateRequest) -> Option<String> {
    if req.size_param == SizeParam::None {
        return None;
    }
    if let Some(ar) = req.aspect_ratio.as_deref().filter(|a| ASPECT_RATIOS.contains(a)) {
        return Some(ar.to_string());
    }
    if !req.input_images.is_empty() {
        return None;
    }
    let want = f64::from(req.width.max(1)) / f64::from(req.height.max(1));
    let ratio = |s: &str| {
        let (w, h) = s.split_once(':').unwrap_or(("1", "1"));
        w.parse::<f64>().unwrap_or(1.0) / h.parse::<f64>().unwrap_or(1.0)
    };
    ASPECT_RATIOS
        .iter()
        .min_by(|a, b| (ratio(a).ln() - want.ln()).abs().total_cmp(&(ratio(b).ln() - want.ln()).abs()))
        .map(|s| s.to_string())
}

/// Every `inlineData` (or `inline_data`) image part of every candidate; with none, the reason:
/// `promptFeedback.blockReason`, else the first candidate's `finishReason` (`SAFETY`,
/// `PROHIBITED_CONTENT`, `IMAGE_SAFETY`, `NO_IMAGE`, …) with the model's own text if it wrote
/// any.
///
/// Errors: `Rejected` with that reason (safety reasons worded so the bot says "content
/// policy" in the user's language); `Failed` for an image part that is not base64.
pub fn images_or_reason(v: &Value) -> Result<Vec<GeneratedFile>, ProviderError> {
    let mut files = Vec::new();
    let mut said = Vec::new();
    for cand in v["candidates"].as_array().into_iter().flatten() {
        for part in cand["content"]["parts"].as_array().into_iter().flatten() {
            let inline = part.get("inlineData").or_else(|| part.get("inline_data"));
            if let Some(d) = inline {
                let data = d["data"].as_str().unwrap_or_default();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.as_bytes())
                    .map_err(|_| ProviderError::Failed("malformed response: inlineData is not base64".into()))?;
                if bytes.len() as u64 > http::MAX_DOWNLOAD_BYTES {
                    return Err(ProviderError::Failed("result image too large".into()));
                }
                let stated = d.get("mimeType").or_else(|| d.get("mime_type")).and_then(Value::as_str);
                let sniffed = super::sniff_mime(&bytes);
                let mime = if sniffed == "application/octet-stream" { stated.unwrap_or(sniffed) } else { sniffed };
                files.push(GeneratedFile { mime: mime.to_string(), bytes, is_demo: false });
            } else if let Some(t) = part["text"].as_str() {
                said.push(t.trim().to_string());
            }
        }
    }
    if !files.is_empty() {
        return Ok(files);
    }
    let block = v["promptFeedback"]["blockReason"].as_str();
    let finish = v["candidates"][0]["finishReason"].as_str();
    let reason = block.or(finish).unwrap_or("NO_IMAGE");
    let safety = ["SAFETY", "PROHIBITED", "BLOCKLIST", "SPII"].iter().any(|w| reason.contains(w));
    let text: String = said.join(" ").chars().take(200).collect();
    Err(ProviderError::Rejected(match (safety, text.is_empty()) {
        (true, _) => format!("blocked by the provider's safety filters ({reason})"),
        (false, true) => format!("the model returned no image ({reason})"),
        (false, false) => format!("the model returned no image ({reason}): {text}"),
    }))
}

/// Classifies an error answer `{"error": {"code", "message", "status", "details"}}` (§5.3).
/// `provider` names the provider in the geo-block hint.
pub fn classify_error(status: u16, retry_after: Option<Duration>, body: &str, provider: &str) -> ProviderError {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let canonical = v["error"]["status"].as_str().unwrap_or_default();
    let message = http::error_detail(body);
    let lower = message.to_lowercase();
    if status == 400
        && (canonical == "FAILED_PRECONDITION"
            || lower.contains("location is not supported")
            || lower.contains("not available in your country"))
    {
        return ProviderError::Unauthorized(format!(
            "geo-blocked: {message} ({canonical}). Google refuses requests from this server's region: set \
             `proxy` for provider \"{provider}\" in the config (an HTTPS proxy in a supported country), then \
             enable it again"
        ));
    }
    if status == 429 || canonical == "RESOURCE_EXHAUSTED" {
        let delay = retry_after.or_else(|| retry_info(&v)).unwrap_or(DEFAULT_RETRY);
        return ProviderError::RateLimited { retry_after: delay, detail: message };
    }
    http::status_error(status, body)
}

/// `retryDelay` ("37s") of a `google.rpc.RetryInfo` detail, capped at 10 minutes.
fn retry_info(v: &Value) -> Option<Duration> {
    v["error"]["details"].as_array()?.iter().find_map(|d| {
        let s = d["retryDelay"].as_str()?;
        let secs: f64 = s.trim_end_matches('s').parse().ok()?;
        Some(Duration::from_secs_f64(secs.clamp(0.0, 600.0)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_image_reasons() {
        let safety = json!({"candidates": [{"content": {"parts": []}, "finishReason": "IMAGE_SAFETY"}]});
        assert!(
            matches!(images_or_reason(&safety), Err(ProviderError::Rejected(m)) if m.contains("safety") && m.contains("IMAGE_SAFETY"))
        );
        let blocked = json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}});
        assert!(
            matches!(images_or_reason(&blocked), Err(ProviderError::Rejected(m)) if m.contains("PROHIBITED_CONTENT"))
        );
        let talk = json!({"candidates": [{"content": {"parts": [{"text": "I can only describe it."}]}, "finishReason": "STOP"}]});
        assert!(
            matches!(images_or_reason(&talk), Err(ProviderError::Rejected(m)) if m.contains("I can only describe it."))
        );
    }

    #[test]
    fn retry_info_is_read() {
        let body = r#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}"#;
        assert!(
            matches!(classify_error(429, None, body, "g"), ProviderError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(37))
        );
    }
}
