//! fal.ai queue API client (protocols.md §2).
//!
//! `submit` = `POST {base_url}/{endpoint}`; the answer's `status_url` / `response_url` /
//! `cancel_url` are persisted in [`Submission::data`], so `wait` and `cancel` work from a
//! restored submission without knowing the endpoint. `wait` polls `status_url?logs=0` until
//! `COMPLETED`, then reads `response_url` and downloads every output file.

use super::http;
use super::{
    GenerateRequest, GeneratedFile, ImageProvider, ProgressFn, ProviderError, ProviderProgress, SizeParam, Submission,
};
use crate::config::ProviderConfig;
use crate::domain::Task;
use serde_json::{Map, Value, json};

use http::{MAX_JSON_BYTES, MAX_POLL_FAILURES, REQUEST_TIMEOUT};

/// A fal.ai provider (`kind = "fal"`): one account key, any number of endpoints (the model's
/// `endpoint`, e.g. `fal-ai/flux/dev`).
///
/// - `submit`: body from [`build_input`], `Authorization: Key <key>`; HTTP errors per
///   [`ProviderError::from_status`] with the FastAPI `detail` as text.
/// - `wait`: status polls (404 → `Lost`; up to 3 transient failures in a row are retried),
///   `COMPLETED` with `error` → `Failed`/`Rejected`, else the result JSON ([`parse_outputs`])
///   and each file through the guarded [`http::Downloader`] (no key is sent to file hosts).
/// - `cancel`: `PUT cancel_url` (400 already-completed and 404 count as done).
/// - No `preassign_id` (fal assigns ids), so `is_known` keeps the default.
pub struct FalProvider {
    acct: http::Account,
}

impl std::fmt::Debug for FalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FalProvider").field(&self.acct).finish()
    }
}

impl FalProvider {
    /// Builds the client from `[[providers]]` config: `base_url` (normally
    /// `https://queue.fal.run`), the key from `resolved_key()`, `poll_interval_ms`.
    ///
    /// Errors: `Unauthorized` when no key is configured; `Failed` for a base_url that is not a
    /// URL or an HTTP client that cannot be built.
    pub fn new(cfg: &ProviderConfig) -> Result<FalProvider, ProviderError> {
        Ok(FalProvider { acct: http::Account::new(cfg)? })
    }

    fn auth(&self) -> String {
        format!("Key {}", self.acct.key.expose())
    }

    /// Sends an authorized request and parses the JSON answer.
    async fn call(&self, rb: reqwest::RequestBuilder, what: &str) -> Result<Value, ProviderError> {
        let resp = rb
            .header(reqwest::header::AUTHORIZATION, self.auth())
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| http::classify(&e))?;
        let status = resp.status();
        let wait = http::retry_after(resp.headers());
        let body = http::read_limited(resp, MAX_JSON_BYTES).await?;
        let text = String::from_utf8_lossy(&body);
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            if let Some(retry_after) = wait {
                return Err(ProviderError::RateLimited { retry_after, detail: http::error_detail(&text) });
            }
        }
        if !status.is_success() {
            if status == reqwest::StatusCode::NOT_FOUND && what == "status" {
                // The request id is unknown (expired or never accepted): the model may be fine.
                return Err(ProviderError::Lost(format!("fal status: {}", http::error_detail(&text))));
            }
            return Err(http::status_error(status.as_u16(), &text));
        }
        serde_json::from_slice(&body).map_err(|e| ProviderError::Failed(format!("malformed response ({what}): {e}")))
    }

    async fn fetch_result(&self, response_url: &str) -> Result<Vec<GeneratedFile>, ProviderError> {
        let v = self.call(self.acct.http.get(response_url), "result").await?;
        let outputs = parse_outputs(&v)?;
        let mut images = Vec::with_capacity(outputs.len());
        for out in outputs {
            let file = if out.video {
                self.acct.downloader.for_video().fetch(&out.url).await?
            } else {
                self.acct.downloader.fetch(&out.url).await?
            };
            let sniffed = super::sniff_mime(&file.bytes);
            let mime = if sniffed != "application/octet-stream" {
                sniffed.to_string()
            } else {
                out.content_type.or(file.content_type).unwrap_or_else(|| sniffed.to_string())
            };
            images.push(GeneratedFile { bytes: file.bytes, mime, is_demo: false });
        }
        Ok(images)
    }
}

#[async_trait::async_trait]
impl ImageProvider for FalProvider {
    fn id(&self) -> &str {
        &self.acct.id
    }

    async fn submit(&self, req: &GenerateRequest, _preassigned: Option<&str>) -> Result<Submission, ProviderError> {
        let endpoint = req.endpoint.trim_matches('/');
        if endpoint.is_empty() {
            return Err(ProviderError::Failed(format!("model {}: no fal endpoint", req.model_id)));
        }
        let body = build_input(req);
        let url = format!("{}/{endpoint}", self.acct.base_url);
        let v = self.call(self.acct.http.post(&url).json(&body), "submit").await?;
        let sub = parse_accepted(&v, &self.acct.base_url, endpoint)?;
        tracing::debug!(provider = %self.acct.id, request_id = %sub.request_id, "fal request queued");
        Ok(sub)
    }

    async fn wait(&self, sub: &Submission, progress: ProgressFn<'_>) -> Result<Vec<GeneratedFile>, ProviderError> {
        let status_url = with_logs_off(sub_url(sub, "status_url", &self.acct.base_url)?)?;
        let response_url = sub_url(sub, "response_url", &self.acct.base_url)?;
        let mut failures = 0;
        loop {
            match self.call(self.acct.http.get(status_url.clone()), "status").await.and_then(|v| parse_status(&v)) {
                Ok(FalStatus::InQueue(pos)) => {
                    failures = 0;
                    progress(ProviderProgress { queue_position: pos, ..Default::default() });
                }
                Ok(FalStatus::InProgress) => {
                    failures = 0;
                    progress(ProviderProgress { running: true, ..Default::default() });
                }
                Ok(FalStatus::Completed(Some(err))) => return Err(err),
                Ok(FalStatus::Completed(None)) => return self.fetch_result(response_url).await,
                Ok(FalStatus::Other(s)) => {
                    tracing::debug!(provider = %self.acct.id, status = %s, "unknown fal status")
                }
                Err(ProviderError::Transient(m)) if failures < MAX_POLL_FAILURES => {
                    failures += 1;
                    tracing::warn!(provider = %self.acct.id, attempt = failures, "fal status poll failed: {m}");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(self.acct.poll).await;
        }
    }

    async fn cancel(&self, sub: &Submission) -> Result<(), ProviderError> {
        let url = sub_url(sub, "cancel_url", &self.acct.base_url)?;
        let resp = self
            .acct
            .http
            .put(url)
            .header(reqwest::header::AUTHORIZATION, self.auth())
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| http::classify(&e))?;
        match resp.status().as_u16() {
            // 400 = already completed, 404 = unknown: nothing left to cancel either way.
            200..=299 | 400 | 404 => Ok(()),
            s => Err(http::status_error(s, &resp.text().await.unwrap_or_default())),
        }
    }
}

/// The model input (protocols.md §2.4): `prompt` (left out when empty: tools such as
/// `fal-ai/birefnet` take none), `negative_prompt`, the size per [`SizeParam`], `seed`,
/// `num_images: 1`, input images as data URIs, then the model's `extra` fields on top.
///
/// Video tasks ([`Task::is_video`]: Kling, Wan, Seedance image-to-video and text-to-video)
/// get no image-model fields: no `image_size`, `seed` or `num_images` (the endpoints'
/// schemas have none of them); `aspect_ratio` only with `size_param = "aspect_ratio"`. Their
/// length and quality arrive with `extra`: the chosen options under their `field` (Kling
/// `duration: "5"`, Wan `num_frames`, `resolution: "720p"`) and the model's `params`.
///
/// Images go under the model's `image_fields` — one field per image in order, or one field
/// for all (a list when several) — else under `image_urls` for [`Task::Edit`],
/// [`Task::Reference`] or several images, `image_url` for one.
pub fn build_input(req: &GenerateRequest) -> Map<String, Value> {
    let mut m = Map::new();
    if !req.prompt.is_empty() {
        m.insert("prompt".into(), json!(req.prompt));
    }
    if let Some(neg) = req.negative.as_deref().filter(|n| !n.trim().is_empty()) {
        m.insert("negative_prompt".into(), json!(neg));
    }
    let video = req.task.is_video();
    match req.size_param {
        SizeParam::ImageSize if !video => {
            m.insert("image_size".into(), json!({"width": req.width, "height": req.height}));
        }
        SizeParam::AspectRatio => {
            let ar = req.aspect_ratio.clone().unwrap_or_else(|| req.format.aspect_ratio().to_string());
            m.insert("aspect_ratio".into(), json!(ar));
        }
        SizeParam::ImageSize | SizeParam::None => {}
    }
    if !video {
        m.insert("seed".into(), json!(req.seed));
        m.insert("num_images".into(), json!(1));
    }
    let uris: Vec<String> = req.input_images.iter().map(|i| http::data_uri(&i.mime, &i.bytes)).collect();
    if let [field] = req.image_fields.as_slice() {
        if uris.len() > 1 {
            m.insert(field.clone(), json!(uris));
        } else if let Some(first) = uris.into_iter().next() {
            m.insert(field.clone(), json!(first));
        }
    } else if !req.image_fields.is_empty() {
        for (field, uri) in req.image_fields.iter().zip(uris) {
            m.insert(field.clone(), json!(uri));
        }
    } else if matches!(req.task, Task::Edit | Task::Reference) || uris.len() > 1 {
        if !uris.is_empty() {
            m.insert("image_urls".into(), json!(uris));
        }
    } else if let Some(first) = uris.into_iter().next() {
        m.insert("image_url".into(), json!(first));
    }
    for (k, v) in &req.extra {
        m.insert(k.clone(), v.clone());
    }
    m
}

/// The part of an endpoint id that status/result/cancel URLs keep: `owner/app`, or
/// `<namespace>/owner/app` for `workflows/…` and `comfy/…` ids (the subpath is dropped, §2.2).
pub fn app_root(endpoint: &str) -> String {
    let parts: Vec<&str> = endpoint.split('/').filter(|p| !p.is_empty()).collect();
    let n = if matches!(parts.first(), Some(&"workflows") | Some(&"comfy")) { 3 } else { 2 };
    parts[..n.min(parts.len())].join("/")
}

/// True when `url` has the scheme, host and port (explicit or the scheme's default) of
/// `base_url`: only such URLs are sent the API key.
pub fn same_origin(url: &str, base_url: &str) -> bool {
    match (url::Url::parse(url), url::Url::parse(base_url)) {
        (Ok(u), Ok(b)) => {
            u.scheme() == b.scheme()
                && u.host_str().is_some()
                && u.host_str() == b.host_str()
                && u.port_or_known_default() == b.port_or_known_default()
        }
        _ => false,
    }
}

/// Reads the submit answer `{request_id, status_url, response_url, cancel_url, …}`; missing
/// URLs, and URLs on another origin than `base_url` (they would get the API key), are built
/// from `base_url` and [`app_root`].
///
/// Errors: `Failed("malformed response …")` without a `request_id`.
pub fn parse_accepted(v: &Value, base_url: &str, endpoint: &str) -> Result<Submission, ProviderError> {
    let id = v
        .get("request_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ProviderError::Failed("malformed response (submit): no request_id".into()))?;
    let root = format!("{}/{}/requests/{id}", base_url.trim_end_matches('/'), app_root(endpoint));
    let url = |key: &str, fallback: String| match v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()) {
        Some(u) if same_origin(u, base_url) => u.to_string(),
        Some(u) => {
            tracing::warn!(key, url = %http::redact_url(u), "fal answered a URL off the base_url's origin; using the documented one");
            fallback
        }
        None => fallback,
    };
    Ok(Submission {
        request_id: id.to_string(),
        data: json!({
            "status_url": url("status_url", format!("{root}/status")),
            "response_url": url("response_url", root.clone()),
            "cancel_url": url("cancel_url", format!("{root}/cancel")),
        }),
    })
}

/// A stored URL of a submission, checked again (it may predate the origin check, or the
/// base_url may have changed since): the API key goes only to the base_url's origin.
fn sub_url<'a>(sub: &'a Submission, key: &str, base_url: &str) -> Result<&'a str, ProviderError> {
    let url = sub
        .data
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::Failed(format!("stored fal submission has no {key}")))?;
    if !same_origin(url, base_url) {
        return Err(ProviderError::Failed(format!(
            "stored fal {key} is not on the provider's base_url; not sending the key there"
        )));
    }
    Ok(url)
}

/// `status_url` with `logs=0` (any `logs` it had replaced): polls need no log lines.
///
/// Errors: `Failed("bad status_url …")` when it is not a URL.
pub fn with_logs_off(status_url: &str) -> Result<url::Url, ProviderError> {
    let mut u = url::Url::parse(status_url).map_err(|e| ProviderError::Failed(format!("bad status_url: {e}")))?;
    let rest: Vec<(String, String)> =
        u.query_pairs().filter(|(k, _)| k != "logs").map(|(k, v)| (k.into(), v.into())).collect();
    u.query_pairs_mut().clear().extend_pairs(rest).append_pair("logs", "0");
    Ok(u)
}

/// One status answer.
#[derive(Debug)]
pub enum FalStatus {
    /// `IN_QUEUE` with the 0-based `queue_position`, if given.
    InQueue(Option<u32>),
    InProgress,
    /// `COMPLETED`; `Some` when the body carries `error` / `error_type` (the run failed).
    Completed(Option<ProviderError>),
    /// A status this client does not know; polling continues.
    Other(String),
}

/// Parses `{"status": "IN_QUEUE"|"IN_PROGRESS"|"COMPLETED", "queue_position"?, "error"?,
/// "error_type"?}` (§2.2).
///
/// Errors: `Failed("malformed response …")` without a `status` string.
pub fn parse_status(v: &Value) -> Result<FalStatus, ProviderError> {
    let status = v
        .get("status")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::Failed("malformed response (status): no status".into()))?;
    Ok(match status {
        "IN_QUEUE" => FalStatus::InQueue(v.get("queue_position").and_then(Value::as_u64).map(|p| p as u32)),
        "IN_PROGRESS" => FalStatus::InProgress,
        "COMPLETED" => FalStatus::Completed(completed_error(v)),
        other => FalStatus::Other(other.to_string()),
    })
}

/// A failed run reports `COMPLETED` with `error` (string or object) and/or `error_type`.
/// Input and content-policy types become `Rejected` (retrying won't help, the text may be shown
/// to the user); the rest `Failed`. The type list is fal's documented model-error names as far
/// as known, matched loosely.
fn completed_error(v: &Value) -> Option<ProviderError> {
    let err = v.get("error").filter(|e| !e.is_null());
    let etype = v.get("error_type").and_then(Value::as_str).filter(|t| !t.is_empty());
    if err.is_none() && etype.is_none() {
        return None;
    }
    let msg = match err {
        Some(Value::String(s)) => s.clone(),
        Some(e) => http::error_detail(&e.to_string()),
        None => String::new(),
    };
    let msg = match (msg.is_empty(), etype) {
        (true, Some(t)) => t.to_string(),
        (true, None) => "unknown error".to_string(),
        (false, _) => msg,
    };
    let t = etype.unwrap_or_default().to_ascii_lowercase();
    const REJECTED: [&str; 8] =
        ["content_policy", "validation", "nsfw", "safety", "image_too_", "file_too_large", "unsupported_", "invalid_"];
    if REJECTED.iter().any(|r| t.contains(r)) {
        Some(ProviderError::Rejected(msg))
    } else {
        Some(ProviderError::Failed(msg))
    }
}

/// One output file named by a result.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRef {
    /// `https://…` or a `data:` URI (`sync_mode`).
    pub url: String,
    pub content_type: Option<String>,
    /// Named under `video`, or stated as `video/*`: downloaded with the video cap
    /// ([`http::MAX_VIDEO_BYTES`]) instead of the picture cap.
    pub video: bool,
}

/// Finds the output files in a result, whatever the model's shape (§2.4, §9): `images[].url`,
/// `image.url`, `video.url` (a bare string in place of a file object is accepted too).
///
/// Errors: `Rejected` when `has_nsfw_concepts` flags every image (fal then returns black
/// images); `Failed` when no output is found.
pub fn parse_outputs(v: &Value) -> Result<Vec<OutputRef>, ProviderError> {
    if let Some(flags) = v.get("has_nsfw_concepts").and_then(Value::as_array) {
        if !flags.is_empty() && flags.iter().all(|f| f.as_bool() == Some(true)) {
            return Err(ProviderError::Rejected("the image was flagged by the provider's safety checker".into()));
        }
    }
    let file = |f: &Value, video: bool| -> Option<OutputRef> {
        match f {
            Value::String(s) if !s.is_empty() => Some(OutputRef { url: s.clone(), content_type: None, video }),
            Value::Object(o) => {
                let url = o.get("url").and_then(Value::as_str).filter(|s| !s.is_empty())?;
                let ct = o.get("content_type").and_then(Value::as_str).map(str::to_string);
                let video = video || ct.as_deref().is_some_and(|c| c.starts_with("video/"));
                Some(OutputRef { url: url.to_string(), content_type: ct, video })
            }
            _ => None,
        }
    };
    let mut out: Vec<OutputRef> = Vec::new();
    if let Some(images) = v.get("images").and_then(Value::as_array) {
        out.extend(images.iter().filter_map(|f| file(f, false)));
    }
    for key in ["image", "video"] {
        if let Some(f) = v.get(key).and_then(|f| file(f, key == "video")) {
            out.push(f);
        }
    }
    if out.is_empty() {
        let keys: Vec<&str> = v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
        return Err(ProviderError::Failed(format!("malformed response (result): no output files (keys: {keys:?})")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Format;
    use crate::providers::InputImage;

    fn req() -> GenerateRequest {
        GenerateRequest {
            model_id: "flux".into(),
            task: Task::TextToImage,
            endpoint: "fal-ai/flux/dev".into(),
            workflow: None,
            prompt: "a cat".into(),
            negative: None,
            format: Format::Vertical,
            width: 768,
            height: 1344,
            aspect_ratio: None,
            seed: 42,
            size_param: SizeParam::ImageSize,
            extra: Map::new(),
            input_images: vec![],
            image_fields: vec![],
            video: None,
        }
    }

    #[test]
    fn input_image_size_and_extra() {
        let mut r = req();
        r.negative = Some("blurry".into());
        r.extra.insert("num_inference_steps".into(), json!(28));
        r.extra.insert("num_images".into(), json!(2));
        let m = build_input(&r);
        assert_eq!(m["prompt"], "a cat");
        assert_eq!(m["negative_prompt"], "blurry");
        assert_eq!(m["image_size"], json!({"width": 768, "height": 1344}));
        assert_eq!(m["seed"], 42);
        assert_eq!(m["num_images"], 2, "extra wins");
        assert_eq!(m["num_inference_steps"], 28);
        assert!(!m.contains_key("aspect_ratio"));
    }

    #[test]
    fn input_aspect_ratio() {
        let mut r = req();
        r.size_param = SizeParam::AspectRatio;
        assert_eq!(build_input(&r)["aspect_ratio"], "9:16");
        r.aspect_ratio = Some("21:9".into());
        let m = build_input(&r);
        assert_eq!(m["aspect_ratio"], "21:9");
        assert!(!m.contains_key("image_size"));
        r.size_param = SizeParam::None;
        let m = build_input(&r);
        assert!(!m.contains_key("aspect_ratio") && !m.contains_key("image_size"));
    }

    #[test]
    fn input_images_as_data_uris() {
        let mut r = req();
        r.input_images = vec![InputImage { bytes: vec![1, 2, 3], mime: "image/jpeg".into() }];
        assert_eq!(build_input(&r)["image_url"], "data:image/jpeg;base64,AQID");
        r.task = Task::Edit;
        let m = build_input(&r);
        assert_eq!(m["image_urls"], json!(["data:image/jpeg;base64,AQID"]));
        assert!(!m.contains_key("image_url"));
    }

    #[test]
    fn video_input_has_no_image_model_fields() {
        let mut r = req();
        r.task = Task::ImageToVideo;
        r.endpoint = "fal-ai/kling-video/v2.1/standard/image-to-video".into();
        r.input_images = vec![InputImage { bytes: vec![1, 2, 3], mime: "image/jpeg".into() }];
        r.extra.insert("duration".into(), json!("10"));
        let m = build_input(&r);
        assert_eq!(m["image_url"], "data:image/jpeg;base64,AQID");
        assert_eq!((&m["prompt"], &m["duration"]), (&json!("a cat"), &json!("10")));
        for k in ["image_size", "seed", "num_images", "aspect_ratio", "image_urls"] {
            assert!(!m.contains_key(k), "{k}: {m:?}");
        }
        r.task = Task::TextToVideo;
        r.input_images.clear();
        r.size_param = SizeParam::AspectRatio;
        let m = build_input(&r);
        assert_eq!(m["aspect_ratio"], "9:16", "configured: sent");
        assert!(!m.contains_key("image_url") && !m.contains_key("image_size"), "{m:?}");
    }

    #[test]
    fn app_roots() {
        assert_eq!(app_root("fal-ai/flux/dev"), "fal-ai/flux");
        assert_eq!(app_root("fal-ai/esrgan"), "fal-ai/esrgan");
        assert_eq!(app_root("fal-ai/kling-video/v2.1/standard/image-to-video"), "fal-ai/kling-video");
        assert_eq!(app_root("workflows/me/app/sub"), "workflows/me/app");
    }

    #[test]
    fn accepted_urls_are_built_when_missing() {
        let s = parse_accepted(&json!({"request_id": "r1"}), "https://queue.fal.run/", "fal-ai/flux/dev").expect("ok");
        assert_eq!(s.request_id, "r1");
        assert_eq!(s.data["status_url"], "https://queue.fal.run/fal-ai/flux/requests/r1/status");
        assert_eq!(s.data["response_url"], "https://queue.fal.run/fal-ai/flux/requests/r1");
        assert_eq!(s.data["cancel_url"], "https://queue.fal.run/fal-ai/flux/requests/r1/cancel");
        let s = parse_accepted(
            &json!({"request_id": "r2", "status_url": "https://q/a/b/requests/r2/status"}),
            "https://q",
            "a/b",
        )
        .expect("ok");
        assert_eq!(s.data["status_url"], "https://q/a/b/requests/r2/status");
        assert!(matches!(
            parse_accepted(&json!({"status": "IN_QUEUE"}), "https://q", "a/b"),
            Err(ProviderError::Failed(_))
        ));
    }

    #[test]
    fn urls_off_the_base_origin_are_never_used() {
        let answer = json!({
            "request_id": "r3",
            "status_url": "https://evil.example/steal",
            "response_url": "http://queue.fal.run/fal-ai/flux/requests/r3",
            "cancel_url": "https://queue.fal.run:8443/fal-ai/flux/requests/r3/cancel",
        });
        let s = parse_accepted(&answer, "https://queue.fal.run", "fal-ai/flux/dev").expect("ok");
        assert_eq!(s.data["status_url"], "https://queue.fal.run/fal-ai/flux/requests/r3/status", "other host");
        assert_eq!(s.data["response_url"], "https://queue.fal.run/fal-ai/flux/requests/r3", "other scheme");
        assert_eq!(s.data["cancel_url"], "https://queue.fal.run/fal-ai/flux/requests/r3/cancel", "other port");
        assert!(same_origin("https://queue.fal.run:443/x", "https://queue.fal.run"));
        assert!(same_origin("http://127.0.0.1:8000/a", "http://127.0.0.1:8000"));
        assert!(!same_origin("http://127.0.0.1:8001/a", "http://127.0.0.1:8000"));
        assert!(!same_origin("https://queue.fal.run.evil.example/x", "https://queue.fal.run"));
        assert!(!same_origin("https://user@evil.example/x", "https://queue.fal.run"));
        // A stored submission (say, from before this check) is refused before any request.
        let stored = Submission { request_id: "r4".into(), data: json!({"status_url": "https://evil.example/s"}) };
        assert!(matches!(sub_url(&stored, "status_url", "https://queue.fal.run"), Err(ProviderError::Failed(_))));
    }

    #[test]
    fn status_parsing() {
        assert!(matches!(
            parse_status(&json!({"status": "IN_QUEUE", "queue_position": 3})),
            Ok(FalStatus::InQueue(Some(3)))
        ));
        assert!(matches!(parse_status(&json!({"status": "IN_PROGRESS", "logs": null})), Ok(FalStatus::InProgress)));
        assert!(matches!(parse_status(&json!({"status": "COMPLETED", "error": null})), Ok(FalStatus::Completed(None))));
        assert!(matches!(
            parse_status(&json!({"status": "COMPLETED", "error": "CUDA out of memory"})),
            Ok(FalStatus::Completed(Some(ProviderError::Failed(m)))) if m == "CUDA out of memory"
        ));
        assert!(matches!(
            parse_status(&json!({"status": "COMPLETED", "error": "nsfw", "error_type": "content_policy_violation"})),
            Ok(FalStatus::Completed(Some(ProviderError::Rejected(_))))
        ));
        assert!(matches!(parse_status(&json!({"nope": 1})), Err(ProviderError::Failed(m)) if m.contains("malformed")));
    }

    #[test]
    fn output_shapes() {
        let v = json!({"images": [{"url": "https://v3.fal.media/a.jpg", "content_type": "image/jpeg"}], "seed": 1});
        assert_eq!(
            parse_outputs(&v).expect("images"),
            vec![OutputRef {
                url: "https://v3.fal.media/a.jpg".into(),
                content_type: Some("image/jpeg".into()),
                video: false
            }]
        );
        let v = json!({"image": {"url": "https://x/up.png"}, "seed": 3});
        assert_eq!(parse_outputs(&v).expect("image")[0].url, "https://x/up.png");
        let v = json!({"video": {"url": "https://x/v.mp4", "content_type": "video/mp4"}});
        assert_eq!(parse_outputs(&v).expect("video")[0].content_type.as_deref(), Some("video/mp4"));
        assert!(parse_outputs(&v).expect("video")[0].video);
        assert!(parse_outputs(&json!({"video": "https://x/v.webm"})).expect("video")[0].video);
        assert!(matches!(parse_outputs(&json!({"images": []})), Err(ProviderError::Failed(_))));
        let v = json!({"images": [{"url": "https://x/a.png"}], "has_nsfw_concepts": [true]});
        assert!(matches!(parse_outputs(&v), Err(ProviderError::Rejected(_))));
    }

    #[test]
    fn status_url_gets_logs_off() {
        let u = with_logs_off("https://q/a/b/requests/1/status?logs=1&x=y").expect("url");
        assert_eq!(u.as_str(), "https://q/a/b/requests/1/status?x=y&logs=0");
    }
}
