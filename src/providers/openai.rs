//! OpenAI Images API client (protocols.md §4.1–4.3), also for any OpenAI-compatible image
//! server (`base_url`, default `https://api.openai.com/v1`).
//!
//! - text to image: `POST {base_url}/images/generations`, JSON `{"model", "prompt", "n": 1,
//!   "size", …}`;
//! - edit: `POST {base_url}/images/edits`, multipart with one `image[]` part per photo (GPT-image
//!   models take up to 16) plus the same fields as text parts.
//!
//! Both answer `{"created", "data": [{"b64_json"? , "url"?, "revised_prompt"?}]}`. The API is
//! synchronous, so `submit` only checks and parks the request ([`super::Parked`]) and `wait`
//! makes the call.

use super::http::{self, MAX_JSON_BYTES};
use super::{
    GenerateRequest, GeneratedFile, ImageProvider, Parked, ProgressFn, ProviderError, SizeParam, Submission, Task,
};
use crate::config::ProviderConfig;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Bound on one image call: GPT-image generations often take over a minute (§4.3 advises
/// ≥ 120 s; the SDK's default is 600 s). The job's own timeout still applies.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// An OpenAI Images provider (`kind = "openai"`); a model's `endpoint` is the OpenAI model name
/// (`gpt-image-1`, `dall-e-3`).
///
/// Errors (§4.3): 400 with `code` `moderation_blocked` / `content_policy_violation` →
/// `Rejected` with OpenAI's message; 429 `insufficient_quota` → `Unauthorized` (the account
/// has no money: every model stops); other 429 → `RateLimited` with `Retry-After` /
/// `retry-after-ms`, else `Transient`; 401/403 → `Unauthorized` (the provider is disabled);
/// 404 (unknown model) → `Retired`; the rest per [`ProviderError::from_status`].
pub struct OpenaiProvider {
    acct: http::Account,
    parked: Parked,
}

impl std::fmt::Debug for OpenaiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OpenaiProvider").field(&self.acct).finish()
    }
}

/// One item of the answer's `data`.
#[derive(Debug, Deserialize)]
pub struct ImageData {
    #[serde(default)]
    pub b64_json: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
}

/// The `ImagesResponse` (§4.1), the fields we read.
#[derive(Debug, Deserialize)]
pub struct ImagesResponse {
    #[serde(default)]
    pub data: Vec<ImageData>,
}

impl OpenaiProvider {
    /// Builds the client from `[[providers]]` config (`base_url`, key, `proxy`).
    ///
    /// Errors: `Unauthorized` without a key; `Failed` for a bad base_url or HTTP client.
    pub fn new(cfg: &ProviderConfig) -> Result<OpenaiProvider, ProviderError> {
        Ok(OpenaiProvider { acct: http::Account::new(cfg)?, parked: Parked::default() })
    }

    async fn call(&self, req: &GenerateRequest) -> Result<Vec<GeneratedFile>, ProviderError> {
        let fields = build_fields(req);
        let rb = if req.input_images.is_empty() {
            self.acct.http.post(format!("{}/images/generations", self.acct.base_url)).json(&fields)
        } else {
            self.acct.http.post(format!("{}/images/edits", self.acct.base_url)).multipart(edit_form(req, &fields)?)
        };
        let resp = rb
            .bearer_auth(self.acct.key.expose())
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| http::classify(&e))?;
        let status = resp.status().as_u16();
        let wait = retry_after(resp.headers());
        let body = http::read_limited(resp, MAX_JSON_BYTES).await?;
        let text = String::from_utf8_lossy(&body);
        if !(200..300).contains(&status) {
            return Err(classify_error(status, wait, &text));
        }
        let answer: ImagesResponse = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Failed(format!("malformed response (openai images): {e}")))?;
        self.files(answer).await
    }

    async fn files(&self, answer: ImagesResponse) -> Result<Vec<GeneratedFile>, ProviderError> {
        let mut files = Vec::new();
        for item in answer.data {
            let bytes = match (item.b64_json, item.url) {
                (Some(b64), _) => decode_b64(&b64)?,
                // URLs come from a third party: http(s) only, non-global addresses refused, size
                // capped (the shared downloader); the key is never sent with them.
                (None, Some(url)) if url.starts_with("https://") || url.starts_with("http://") => {
                    self.acct.downloader.fetch(&url).await?.bytes
                }
                (None, Some(_)) => return Err(ProviderError::Failed("openai answered a non-http(s) image URL".into())),
                (None, None) => continue,
            };
            files.push(GeneratedFile { mime: super::sniff_mime(&bytes).to_string(), bytes, is_demo: false });
        }
        if files.is_empty() {
            return Err(ProviderError::Failed("openai answered no image".into()));
        }
        Ok(files)
    }
}

#[async_trait::async_trait]
impl ImageProvider for OpenaiProvider {
    fn id(&self) -> &str {
        &self.acct.id
    }

    /// Checks the request and parks it (no HTTP): the id is local, see [`Parked`].
    async fn submit(&self, req: &GenerateRequest, _preassigned: Option<&str>) -> Result<Submission, ProviderError> {
        if req.endpoint.trim().is_empty() {
            return Err(ProviderError::Misconfigured(format!("model {}: no OpenAI model name", req.model_id)));
        }
        if !req.input_images.is_empty() && req.endpoint.starts_with("dall-e-3") {
            return Err(ProviderError::Misconfigured("dall-e-3 does not take images (edits: gpt-image-*)".into()));
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

/// The request fields: `model` (= endpoint), `prompt`, `n = 1`, `size` (see [`size_for`]),
/// `response_format = "b64_json"` for DALL·E models on generations (GPT-image models always
/// answer base64 and refuse the field), then the model's params and chosen options (`quality`,
/// `background`, `size`, …), which win.
pub fn build_fields(req: &GenerateRequest) -> Map<String, Value> {
    let model = req.endpoint.trim();
    let mut m = Map::new();
    m.insert("model".into(), json!(model));
    m.insert("prompt".into(), json!(req.prompt));
    m.insert("n".into(), json!(1));
    if let Some(size) = size_for(req) {
        m.insert("size".into(), json!(size));
    }
    if model.starts_with("dall-e") && req.input_images.is_empty() {
        m.insert("response_format".into(), json!("b64_json"));
    }
    for (k, v) in &req.extra {
        m.insert(k.clone(), v.clone());
    }
    m
}

/// The nearest size the model family accepts for the request's orientation (§4.1):
/// GPT-image `1024x1024` / `1536x1024` / `1024x1536`, dall-e-3 `…1792…`, dall-e-2 always
/// `1024x1024`. `None` with `size_param = "none"` (the server decides) or for the task
/// `edit` of dall-e-2 (which keeps the photo's size).
pub fn size_for(req: &GenerateRequest) -> Option<String> {
    if req.size_param == SizeParam::None {
        return None;
    }
    let model = req.endpoint.trim();
    let (w, h) = (req.width, req.height);
    let size = if model.starts_with("dall-e-2") {
        if req.task != Task::TextToImage {
            return None;
        }
        "1024x1024"
    } else if model.starts_with("dall-e-3") {
        match w.cmp(&h) {
            std::cmp::Ordering::Greater => "1792x1024",
            std::cmp::Ordering::Less => "1024x1792",
            std::cmp::Ordering::Equal => "1024x1024",
        }
    } else {
        match w.cmp(&h) {
            std::cmp::Ordering::Greater => "1536x1024",
            std::cmp::Ordering::Less => "1024x1536",
            std::cmp::Ordering::Equal => "1024x1024",
        }
    };
    Some(size.into())
}

/// The edits form: each field as a text part (strings as they are, other JSON as text), then
/// one `image[]` part per photo, named `image-<n>.<ext>` with its MIME type (§4.2, the SDK's
/// "brackets" array format).
///
/// Errors: `Failed` for a MIME type reqwest refuses.
pub fn edit_form(
    req: &GenerateRequest,
    fields: &Map<String, Value>,
) -> Result<reqwest::multipart::Form, ProviderError> {
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in fields {
        let text = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        form = form.text(k.clone(), text);
    }
    for (i, img) in req.input_images.iter().enumerate() {
        let ext = img.mime.rsplit('/').next().unwrap_or("png").replace("jpeg", "jpg");
        let part = reqwest::multipart::Part::bytes(img.bytes.clone())
            .file_name(format!("image-{}.{ext}", i + 1))
            .mime_str(&img.mime)
            .map_err(|e| ProviderError::Failed(format!("input image type {}: {e}", img.mime)))?;
        form = form.part("image[]", part);
    }
    Ok(form)
}

/// `retry-after-ms` (OpenAI's finer header) or `Retry-After` seconds.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let ms = headers.get("retry-after-ms").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    ms.map(|ms| Duration::from_millis(ms.min(600_000))).or_else(|| http::retry_after(headers))
}

/// Classifies an error answer `{"error": {"message", "type", "param", "code"}}` (§4.3).
pub fn classify_error(status: u16, retry_after: Option<Duration>, body: &str) -> ProviderError {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let code = v["error"]["code"].as_str().unwrap_or_default();
    let message = http::error_detail(body);
    match (status, code) {
        (_, "moderation_blocked" | "content_policy_violation") => ProviderError::Rejected(message),
        (429, "insufficient_quota") => {
            ProviderError::Unauthorized(format!("HTTP 429 insufficient_quota (the account has no credit): {message}"))
        }
        _ => super::classify_answer(status, retry_after, body),
    }
}

fn decode_b64(b64: &str) -> Result<Vec<u8>, ProviderError> {
    let clean: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if clean.len() as u64 > http::MAX_DOWNLOAD_BYTES / 3 * 4 + 4 {
        return Err(ProviderError::Failed("result image too large".into()));
    }
    base64::engine::general_purpose::STANDARD
        .decode(clean.as_bytes())
        .map_err(|_| ProviderError::Failed("malformed response: b64_json is not base64".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_by_code_and_status() {
        let body = |code: &str| {
            format!(
                r#"{{"error":{{"message":"Your request was rejected","type":"image_generation_user_error","param":null,"code":"{code}"}}}}"#
            )
        };
        assert!(
            matches!(classify_error(400, None, &body("moderation_blocked")), ProviderError::Rejected(m) if m == "Your request was rejected")
        );
        assert!(matches!(classify_error(400, None, &body("content_policy_violation")), ProviderError::Rejected(_)));
        assert!(matches!(classify_error(429, None, &body("insufficient_quota")), ProviderError::Unauthorized(_)));
        assert!(matches!(
            classify_error(429, Some(Duration::from_secs(3)), &body("rate_limit_exceeded")),
            ProviderError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(3)
        ));
        assert!(matches!(classify_error(429, None, &body("rate_limit_exceeded")), ProviderError::Transient(_)));
        assert!(matches!(classify_error(401, None, &body("invalid_api_key")), ProviderError::Unauthorized(_)));
        assert!(matches!(classify_error(404, None, &body("model_not_found")), ProviderError::Retired(_)));
    }
}
