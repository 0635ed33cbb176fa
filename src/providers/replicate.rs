//! Replicate predictions API client (protocols.md §7).
//!
//! `submit` = `POST {base_url}/v1/models/{owner}/{name}/predictions` (an official model) or
//! `POST {base_url}/v1/predictions` with `version` (a 64-hex version id, alone or as
//! `owner/name:version`), body `{"input": {…}}`, headers `Authorization: Bearer <token>` and
//! `Prefer: wait=N`. The prediction's `id`, `urls.get` and `urls.cancel` are persisted in the
//! [`Submission`] (like fal's request id), so `wait` on a restored submission polls the same
//! prediction and a restart never creates a second one. `wait` polls `urls.get` until
//! `succeeded` (download `output`: a URL or a list of URLs), `failed` or `canceled`.

use super::fal::same_origin;
use super::http::{self, MAX_JSON_BYTES, MAX_POLL_FAILURES, REQUEST_TIMEOUT};
use super::{
    GenerateRequest, GeneratedFile, ImageProvider, ProgressFn, ProviderError, ProviderProgress, SizeParam, Submission,
};
use crate::config::ProviderConfig;
use serde_json::{Map, Value, json};

/// Seconds `Prefer: wait` holds the create call. Short on purpose: until `submit` returns, the
/// engine has no prediction id to persist, so a crash in that window would lose the prediction
/// (and a retry would create a second, billed one). Fast models finish within it; slower ones
/// come back `starting` and are polled.
pub const PREFER_WAIT_SECS: u32 = 10;
/// Aspect ratios offered by Replicate's image models (FLUX, SD 3.5, Imagen on Replicate).
pub const ASPECT_RATIOS: [&str; 9] = ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3"];

/// A Replicate provider (`kind = "replicate"`); a model's `endpoint` is `owner/name`, a version
/// id, or `owner/name:version`.
///
/// Errors (§7, problem JSON `{"title", "detail", "status"}`): 401/403 → `Unauthorized`; 402
/// (billing: the whole account is out of credit, not one model) → `Unauthorized`; 404 on create
/// → `Retired`; 404 on a poll → `Lost`; 422 → `Rejected`; 429 → `RateLimited` with
/// `Retry-After`, else `Transient`; a `failed` prediction → [`failure`].
pub struct ReplicateProvider {
    acct: http::Account,
}

impl std::fmt::Debug for ReplicateProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ReplicateProvider").field(&self.acct).finish()
    }
}

/// Whether `endpoint` is `owner/name`, a 64-hex version id or `owner/name:<version>`.
pub fn valid_endpoint(endpoint: &str) -> bool {
    let e = endpoint.trim();
    let is_hex = |s: &str| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit());
    let is_name = |s: &str| {
        let parts: Vec<&str> = s.split('/').collect();
        parts.len() == 2
            && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
    };
    match e.split_once(':') {
        Some((name, version)) => is_name(name) && is_hex(version),
        None => is_hex(e) || is_name(e),
    }
}

/// Where a create call goes: the URL path under `base_url` and the `version`, if any.
pub fn create_target(endpoint: &str) -> (String, Option<String>) {
    let e = endpoint.trim();
    match e.split_once(':') {
        Some((_, version)) => ("/v1/predictions".into(), Some(version.to_string())),
        None if !e.contains('/') => ("/v1/predictions".into(), Some(e.to_string())),
        None => (format!("/v1/models/{e}/predictions"), None),
    }
}

impl ReplicateProvider {
    /// Builds the client from `[[providers]]` config (`base_url` default
    /// `https://api.replicate.com`, token, `poll_interval_ms`: Replicate's SDK polls every
    /// 0.5 s; 1000 is kinder).
    ///
    /// Errors: `Unauthorized` without a token; `Failed` for a bad base_url or HTTP client.
    pub fn new(cfg: &ProviderConfig) -> Result<ReplicateProvider, ProviderError> {
        Ok(ReplicateProvider { acct: http::Account::new(cfg)? })
    }

    /// Sends an authorized request and returns the prediction object.
    async fn call(&self, rb: reqwest::RequestBuilder, what: &str) -> Result<Value, ProviderError> {
        let resp = rb
            .bearer_auth(self.acct.key.expose())
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| http::classify(&e))?;
        let status = resp.status().as_u16();
        let wait = http::retry_after(resp.headers());
        let body = http::read_limited(resp, MAX_JSON_BYTES).await?;
        let text = String::from_utf8_lossy(&body);
        if !(200..300).contains(&status) {
            return Err(match status {
                404 if what != "create" => {
                    ProviderError::Lost(format!("replicate {what}: {}", http::error_detail(&text)))
                }
                402 => ProviderError::Unauthorized(format!(
                    "HTTP 402 (billing: the Replicate account needs credit): {}",
                    http::error_detail(&text)
                )),
                _ => super::classify_answer(status, wait, &text),
            });
        }
        serde_json::from_slice(&body).map_err(|e| ProviderError::Failed(format!("malformed response ({what}): {e}")))
    }

    /// The stored URL under `key` when it is on the base_url's origin (it is sent the token),
    /// else the documented one.
    fn stored_url(&self, sub: &Submission, key: &str) -> String {
        let fallback = match key {
            "cancel" => format!("{}/v1/predictions/{}/cancel", self.acct.base_url, sub.request_id),
            _ => format!("{}/v1/predictions/{}", self.acct.base_url, sub.request_id),
        };
        match sub.data.get(key).and_then(Value::as_str) {
            Some(u) if same_origin(u, &self.acct.base_url) => u.to_string(),
            _ => fallback,
        }
    }

    async fn download(&self, output: &Value) -> Result<Vec<GeneratedFile>, ProviderError> {
        let urls: Vec<&str> = match output {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if urls.is_empty() {
            return Err(ProviderError::Failed("replicate succeeded without an output URL".into()));
        }
        // Delivery URLs (replicate.delivery) are https; plain http only when the API itself is
        // (a local or test server). Addresses and size are checked by the shared downloader,
        // which never sends the token.
        let http_ok = self.acct.base_url.starts_with("http://");
        let mut files = Vec::with_capacity(urls.len());
        for url in urls {
            if !(url.starts_with("https://") || (http_ok && url.starts_with("http://"))) {
                return Err(ProviderError::Failed(format!("refusing output URL {}", http::redact_url(url))));
            }
            let file = self.acct.downloader.fetch(url).await?;
            let sniffed = super::sniff_mime(&file.bytes);
            let mime = match (sniffed, file.content_type) {
                ("application/octet-stream", Some(ct)) => ct,
                (s, _) => s.to_string(),
            };
            files.push(GeneratedFile { bytes: file.bytes, mime, is_demo: false });
        }
        Ok(files)
    }
}

#[async_trait::async_trait]
impl ImageProvider for ReplicateProvider {
    fn id(&self) -> &str {
        &self.acct.id
    }

    async fn submit(&self, req: &GenerateRequest, _preassigned: Option<&str>) -> Result<Submission, ProviderError> {
        if !valid_endpoint(&req.endpoint) {
            return Err(ProviderError::Misconfigured(format!(
                "model {}: endpoint must be owner/name or a version id",
                req.model_id
            )));
        }
        let (path, version) = create_target(&req.endpoint);
        let mut body = json!({ "input": build_input(req) });
        if let Some(v) = version {
            body["version"] = json!(v);
        }
        let rb = self
            .acct
            .http
            .post(format!("{}{path}", self.acct.base_url))
            .header("Prefer", format!("wait={PREFER_WAIT_SECS}"))
            .json(&body);
        let p = self.call(rb, "create").await?;
        let sub = submission(&p, &self.acct.base_url)?;
        tracing::debug!(provider = %self.acct.id, request_id = %sub.request_id, "replicate prediction created");
        Ok(sub)
    }

    async fn wait(&self, sub: &Submission, progress: ProgressFn<'_>) -> Result<Vec<GeneratedFile>, ProviderError> {
        // `Prefer: wait` may already have brought the output.
        if sub.data.get("status").and_then(Value::as_str) == Some("succeeded") {
            if let Some(out) = sub.data.get("output") {
                return self.download(out).await;
            }
        }
        let url = self.stored_url(sub, "get");
        let mut failures = 0;
        loop {
            match self.call(self.acct.http.get(&url), "poll").await {
                Ok(p) => {
                    failures = 0;
                    match p["status"].as_str().unwrap_or_default() {
                        "succeeded" => return self.download(&p["output"]).await,
                        "failed" => return Err(failure(p["error"].as_str().unwrap_or_default())),
                        "canceled" => return Err(ProviderError::Failed("the prediction was canceled".into())),
                        "processing" => progress(ProviderProgress { running: true, ..Default::default() }),
                        _ => progress(ProviderProgress::default()),
                    }
                }
                Err(ProviderError::Transient(m)) if failures < MAX_POLL_FAILURES => {
                    failures += 1;
                    tracing::warn!(provider = %self.acct.id, attempt = failures, "replicate poll failed: {m}");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(self.acct.poll).await;
        }
    }

    /// `POST urls.cancel` (a prediction already finished answers its final state; fine).
    async fn cancel(&self, sub: &Submission) -> Result<(), ProviderError> {
        let url = self.stored_url(sub, "cancel");
        self.call(self.acct.http.post(url), "cancel").await.map(|_| ())
    }
}

/// The model input: `prompt`, `seed`, the size (`aspect_ratio` for `size_param =
/// "aspect_ratio"`, the user's or the nearest of [`ASPECT_RATIOS`]; `width`/`height` for
/// `image_size`; nothing for `none`), input photos as data URIs under the model's
/// `image_fields` (one per photo, or one list) or `image` / `images`; then the model's params
/// and chosen options, which win. Replicate inputs are per model, so anything else (negative
/// prompt, output format) belongs in `params`.
pub fn build_input(req: &GenerateRequest) -> Map<String, Value> {
    let mut m = Map::new();
    if !req.prompt.is_empty() {
        m.insert("prompt".into(), json!(req.prompt));
    }
    m.insert("seed".into(), json!(req.seed % (1 << 31)));
    match req.size_param {
        SizeParam::AspectRatio => {
            let ar = req
                .aspect_ratio
                .clone()
                .filter(|a| ASPECT_RATIOS.contains(&a.as_str()))
                .unwrap_or_else(|| nearest_ratio(req.width, req.height));
            m.insert("aspect_ratio".into(), json!(ar));
        }
        SizeParam::ImageSize if req.input_images.is_empty() => {
            m.insert("width".into(), json!(req.width));
            m.insert("height".into(), json!(req.height));
        }
        _ => {}
    }
    let uris: Vec<String> = req.input_images.iter().map(|i| http::data_uri(&i.mime, &i.bytes)).collect();
    match (req.image_fields.as_slice(), uris.len()) {
        (_, 0) => {}
        ([field], 1) => {
            m.insert(field.clone(), json!(uris[0]));
        }
        ([field], _) => {
            m.insert(field.clone(), json!(uris));
        }
        ([], 1) => {
            m.insert("image".into(), json!(uris[0]));
        }
        ([], _) => {
            m.insert("images".into(), json!(uris));
        }
        (fields, _) => {
            for (field, uri) in fields.iter().zip(uris) {
                m.insert(field.clone(), json!(uri));
            }
        }
    }
    for (k, v) in &req.extra {
        m.insert(k.clone(), v.clone());
    }
    m
}

fn nearest_ratio(w: u32, h: u32) -> String {
    let want = (f64::from(w.max(1)) / f64::from(h.max(1))).ln();
    let ratio = |s: &str| {
        let (a, b) = s.split_once(':').unwrap_or(("1", "1"));
        (a.parse::<f64>().unwrap_or(1.0) / b.parse::<f64>().unwrap_or(1.0)).ln()
    };
    ASPECT_RATIOS
        .iter()
        .min_by(|a, b| (ratio(a) - want).abs().total_cmp(&(ratio(b) - want).abs()))
        .map_or_else(|| "1:1".into(), |s| s.to_string())
}

/// The submission of a created prediction: `id`, `{"get", "cancel"}` from `urls` (only on
/// `base_url`'s origin, else the documented URLs are used when polling), plus `status` and
/// `output` when `Prefer: wait` brought a finished one.
///
/// Errors: `Failed("malformed response …")` without an `id`; a prediction that already
/// `failed` → [`failure`].
pub fn submission(p: &Value, base_url: &str) -> Result<Submission, ProviderError> {
    let id = p["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ProviderError::Failed("malformed response (create): no id".into()))?;
    if p["status"] == "failed" {
        return Err(failure(p["error"].as_str().unwrap_or_default()));
    }
    let mut data = json!({});
    for key in ["get", "cancel"] {
        if let Some(u) = p["urls"][key].as_str().filter(|u| same_origin(u, base_url)) {
            data[key] = json!(u);
        }
    }
    if p["status"] == "succeeded" && !p["output"].is_null() {
        data["status"] = json!("succeeded");
        data["output"] = p["output"].clone();
    }
    Ok(Submission { request_id: id.to_string(), data })
}

/// Classifies a failed prediction's `error`: a safety refusal ("NSFW content detected", …) is
/// `Rejected` with Replicate's words; anything else is `Failed`.
pub fn failure(message: &str) -> ProviderError {
    let m = message.to_lowercase();
    if ["nsfw", "safety", "sensitive", "content policy", "flagged"].iter().any(|w| m.contains(w)) {
        return ProviderError::Rejected(message.trim().to_string());
    }
    ProviderError::Failed(if message.trim().is_empty() {
        "the prediction failed".into()
    } else {
        message.trim().into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let v = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa";
        assert!(valid_endpoint("black-forest-labs/flux-schnell") && valid_endpoint(v));
        assert!(valid_endpoint(&format!("stability-ai/sdxl:{v}")));
        assert!(!valid_endpoint("flux") && !valid_endpoint("a/b/c") && !valid_endpoint("a/b:123"));
        assert_eq!(
            create_target("black-forest-labs/flux-schnell").0,
            "/v1/models/black-forest-labs/flux-schnell/predictions"
        );
        assert_eq!(create_target(v), ("/v1/predictions".into(), Some(v.into())));
        assert_eq!(create_target(&format!("stability-ai/sdxl:{v}")), ("/v1/predictions".into(), Some(v.into())));
        assert_eq!(nearest_ratio(64, 96), "2:3");
    }

    #[test]
    fn failures() {
        assert!(matches!(
            failure("NSFW content detected. Try running it again, or try a different prompt."),
            ProviderError::Rejected(_)
        ));
        assert!(matches!(failure("CUDA out of memory"), ProviderError::Failed(_)));
    }
}
