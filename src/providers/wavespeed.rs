//! WaveSpeed AI task API client (protocols.md §8), used for face swap.
//!
//! `submit` = `POST {base_url}/{endpoint}`; every answer is an envelope `{"code", "message",
//! "data": {"id", "status", "urls": {"get"}, "outputs", "error", …}}`. The poll URL
//! (`data.urls.get`) is persisted in [`Submission::data`] so `wait` works from a restored
//! submission; `wait` polls it until `completed` (download `data.outputs`) or `failed`.

use super::fal::same_origin;
use super::http;
use super::{GenerateRequest, GeneratedFile, ImageProvider, ProgressFn, ProviderError, ProviderProgress, Submission};
use crate::config::ProviderConfig;
use base64::Engine;
use serde_json::{Map, Value, json};

use http::{MAX_JSON_BYTES, MAX_POLL_FAILURES, REQUEST_TIMEOUT};

/// A WaveSpeed AI provider (`kind = "wavespeed"`): one account key, any number of models (the
/// model's `endpoint`, e.g. `wavespeed-ai/image-face-swap`).
///
/// - `submit`: body from [`build_input`], `Authorization: Bearer <key>`; HTTP errors per
///   [`ProviderError::from_status`] with the envelope's `message` as text.
/// - `wait`: polls the stored `get_url` (404 → `Lost`; up to 3 transient failures in a row are
///   retried); `failed` → [`failure`]; `completed` → each of `data.outputs` through the
///   guarded [`http::Downloader`] (no key is sent to file hosts).
/// - `cancel`: the trait's no-op — WaveSpeed documents no cancel; the task runs out and the
///   job's hold is released by the engine anyway.
pub struct WavespeedProvider {
    acct: http::Account,
}

impl std::fmt::Debug for WavespeedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WavespeedProvider").field(&self.acct).finish()
    }
}

impl WavespeedProvider {
    /// Builds the client from `[[providers]]` config: `base_url` (normally
    /// `https://api.wavespeed.ai/api/v3`), the key from `resolved_key()`, `poll_interval_ms`
    /// (WaveSpeed asks for ≥ 2 s between polls of an image task; the config decides).
    ///
    /// Errors: `Unauthorized` when no key is configured; `Failed` for a base_url that is not a
    /// URL or an HTTP client that cannot be built.
    pub fn new(cfg: &ProviderConfig) -> Result<WavespeedProvider, ProviderError> {
        Ok(WavespeedProvider { acct: http::Account::new(cfg)? })
    }

    /// Sends an authorized request and returns the envelope's `data`.
    async fn call(&self, rb: reqwest::RequestBuilder, what: &str) -> Result<Map<String, Value>, ProviderError> {
        let resp = rb
            .header(reqwest::header::AUTHORIZATION, format!("Bearer {}", self.acct.key.expose()))
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
            if status == reqwest::StatusCode::NOT_FOUND && what == "poll" {
                // The task id is unknown (expired or never accepted): the model may be fine.
                return Err(ProviderError::Lost(format!("wavespeed poll: {}", http::error_detail(&text))));
            }
            return Err(http::status_error(status.as_u16(), &text));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Failed(format!("malformed response ({what}): {e}")))?;
        parse_envelope(v, what)
    }

    /// The poll URL of a submission, checked again (the base_url may have changed since it
    /// was stored): the API key goes only to the base_url's origin.
    fn poll_url(&self, sub: &Submission) -> String {
        match sub.data.get("get_url").and_then(Value::as_str) {
            Some(u) if same_origin(u, &self.acct.base_url) => u.to_string(),
            _ => fallback_poll_url(&self.acct.base_url, &sub.request_id),
        }
    }

    async fn download(&self, outputs: Vec<String>) -> Result<Vec<GeneratedFile>, ProviderError> {
        let mut files = Vec::with_capacity(outputs.len());
        for out in outputs {
            let (bytes, stated) =
                if out.starts_with("data:") || out.starts_with("http://") || out.starts_with("https://") {
                    let file = self.acct.downloader.fetch(&out).await?;
                    (file.bytes, file.content_type)
                } else {
                    // `enable_base64_output` may give bare base64 (no data: prefix); UNVERIFIED, so
                    // accept both rather than fail a paid run.
                    let clean: String = out.chars().filter(|c| !c.is_ascii_whitespace()).collect();
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(clean.as_bytes())
                        .map_err(|_| ProviderError::Failed("wavespeed output is neither a URL nor base64".into()))?;
                    if bytes.len() as u64 > http::MAX_DOWNLOAD_BYTES {
                        return Err(ProviderError::Failed("wavespeed output too large".into()));
                    }
                    (bytes, None)
                };
            let sniffed = super::sniff_mime(&bytes);
            let mime = if sniffed != "application/octet-stream" {
                sniffed.to_string()
            } else {
                stated.unwrap_or_else(|| sniffed.to_string())
            };
            files.push(GeneratedFile { bytes, mime, is_demo: false });
        }
        Ok(files)
    }
}

#[async_trait::async_trait]
impl ImageProvider for WavespeedProvider {
    fn id(&self) -> &str {
        &self.acct.id
    }

    async fn submit(&self, req: &GenerateRequest, _preassigned: Option<&str>) -> Result<Submission, ProviderError> {
        let endpoint = req.endpoint.trim_matches('/');
        if endpoint.is_empty() {
            return Err(ProviderError::Failed(format!("model {}: no wavespeed model id", req.model_id)));
        }
        let body = build_input(req);
        let url = format!("{}/{endpoint}", self.acct.base_url);
        let data = self.call(self.acct.http.post(&url).json(&body), "submit").await?;
        let sub = parse_submitted(&data, &self.acct.base_url)?;
        tracing::debug!(provider = %self.acct.id, request_id = %sub.request_id, "wavespeed task created");
        Ok(sub)
    }

    async fn wait(&self, sub: &Submission, progress: ProgressFn<'_>) -> Result<Vec<GeneratedFile>, ProviderError> {
        let url = self.poll_url(sub);
        let mut failures = 0;
        loop {
            match self.call(self.acct.http.get(&url), "poll").await.and_then(|d| parse_status(&d)) {
                Ok(TaskStatus::Created) => {
                    failures = 0;
                    progress(ProviderProgress::default());
                }
                Ok(TaskStatus::Processing) => {
                    failures = 0;
                    progress(ProviderProgress { running: true, ..Default::default() });
                }
                Ok(TaskStatus::Completed(outputs)) => return self.download(outputs).await,
                Ok(TaskStatus::Failed(err)) => return Err(err),
                Ok(TaskStatus::Other(s)) => {
                    tracing::debug!(provider = %self.acct.id, status = %s, "unknown wavespeed status")
                }
                Err(ProviderError::Transient(m)) if failures < MAX_POLL_FAILURES => {
                    failures += 1;
                    tracing::warn!(provider = %self.acct.id, attempt = failures, "wavespeed poll failed: {m}");
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(self.acct.poll).await;
        }
    }
}

/// The request body: input images as data URIs, `prompt` (only when non-empty: face swap
/// takes none), `enable_sync_mode: false` (we poll), `output_format: "jpeg"`, then the
/// model's `params` on top (they win over all of these).
///
/// Images go under the model's `image_fields` — one field per image in order (face swap:
/// `["face_image", "image"]`), or one field for all (a list when several) — else `image` for
/// one image and `images` for several.
///
/// A model that composes a picture (text → image, edit, sketch, references) with
/// `size_param = "image_size"` gets WaveSpeed's `size: "W*H"` and `seed` (the shape of
/// `wavespeed-ai/flux-dev` and `bytedance/seedream-v4/edit`); `"aspect_ratio"` sends
/// `aspect_ratio`. Tools that keep the photo (face swap…) get neither: their schema (§8) has no
/// size, and a model naming more puts it in `params`.
pub fn build_input(req: &GenerateRequest) -> Map<String, Value> {
    let mut m = Map::new();
    if !req.prompt.is_empty() {
        m.insert("prompt".into(), json!(req.prompt));
    }
    if !req.task.keeps_size() && req.video.is_none() {
        match req.size_param {
            crate::providers::SizeParam::ImageSize => {
                m.insert("size".into(), json!(format!("{}*{}", req.width, req.height)));
                m.insert("seed".into(), json!(req.seed));
            }
            crate::providers::SizeParam::AspectRatio => {
                let ratio = req.aspect_ratio.clone().unwrap_or_else(|| req.format.aspect_ratio().to_string());
                m.insert("aspect_ratio".into(), json!(ratio));
                m.insert("seed".into(), json!(req.seed));
            }
            crate::providers::SizeParam::None => {}
        }
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
    m.insert("enable_sync_mode".into(), json!(false));
    m.insert("output_format".into(), json!("jpeg"));
    for (k, v) in &req.extra {
        m.insert(k.clone(), v.clone());
    }
    m
}

/// Opens the envelope `{"code": 200, "message": "success", "data": {…}}` and returns `data`.
/// A `code` other than 200 inside a 2xx answer is classified like an HTTP status (§8 leaves
/// such codes UNVERIFIED, so this is the cautious reading).
///
/// Errors: per [`ProviderError::from_status`] for such a code; `Failed("malformed response
/// …")` without a `data` object.
pub fn parse_envelope(v: Value, what: &str) -> Result<Map<String, Value>, ProviderError> {
    let code = v.get("code").and_then(Value::as_u64);
    if let Some(code) = code.filter(|c| *c != 200) {
        let message = v.get("message").and_then(Value::as_str).unwrap_or_default();
        return Err(ProviderError::from_status(u16::try_from(code).unwrap_or(500), message));
    }
    match v {
        Value::Object(mut o) => match o.remove("data") {
            Some(Value::Object(d)) => Ok(d),
            _ => Err(ProviderError::Failed(format!("malformed response ({what}): no data object"))),
        },
        _ => Err(ProviderError::Failed(format!("malformed response ({what}): not an object"))),
    }
}

/// `{base_url}/predictions/{id}/result`: the documented poll URL, used when the answer's own
/// `urls.get` is missing or off the base_url's origin.
pub fn fallback_poll_url(base_url: &str, id: &str) -> String {
    format!("{}/predictions/{id}/result", base_url.trim_end_matches('/'))
}

/// Reads the submit answer's `data`: `id` and `urls.get`, kept as `{"get_url"}` only when on
/// `base_url`'s origin (it is sent the API key; issue 17 item 7), else the fallback URL.
///
/// Errors: `Failed("malformed response …")` without an `id`.
pub fn parse_submitted(data: &Map<String, Value>, base_url: &str) -> Result<Submission, ProviderError> {
    let id = data
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ProviderError::Failed("malformed response (submit): no data.id".into()))?;
    let get = data.get("urls").and_then(|u| u.get("get")).and_then(Value::as_str).filter(|s| !s.is_empty());
    let get_url = match get {
        Some(u) if same_origin(u, base_url) => u.to_string(),
        Some(u) => {
            tracing::warn!(url = %http::redact_url(u), "wavespeed answered a poll URL off the base_url's origin; using the documented one");
            fallback_poll_url(base_url, id)
        }
        None => fallback_poll_url(base_url, id),
    };
    Ok(Submission { request_id: id.to_string(), data: json!({ "get_url": get_url }) })
}

/// One poll answer's `data.status`.
#[derive(Debug)]
pub enum TaskStatus {
    Created,
    Processing,
    /// `completed` with `data.outputs`: URLs, data URIs or (base64 output) bare base64.
    Completed(Vec<String>),
    /// `failed`, classified by [`failure`].
    Failed(ProviderError),
    /// A status this client does not know; polling continues.
    Other(String),
}

/// Parses a poll answer's `data` (`status`, `outputs`, `error`; §8).
///
/// Errors: `Failed("malformed response …")` without a `status`, or `completed` with no
/// outputs; `Rejected` when `has_nsfw_contents` flags every output.
pub fn parse_status(data: &Map<String, Value>) -> Result<TaskStatus, ProviderError> {
    let status = data
        .get("status")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::Failed("malformed response (poll): no data.status".into()))?;
    Ok(match status {
        "created" => TaskStatus::Created,
        "processing" => TaskStatus::Processing,
        "failed" => {
            let msg = data.get("error").and_then(Value::as_str).unwrap_or_default();
            TaskStatus::Failed(failure(msg))
        }
        "completed" => {
            if let Some(flags) = data.get("has_nsfw_contents").and_then(Value::as_array) {
                if !flags.is_empty() && flags.iter().all(|f| f.as_bool() == Some(true)) {
                    return Err(ProviderError::Rejected(
                        "the image was flagged by the provider's safety checker".into(),
                    ));
                }
            }
            let outputs: Vec<String> = data
                .get("outputs")
                .and_then(Value::as_array)
                .map(|o| o.iter().filter_map(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string).collect())
                .unwrap_or_default();
            if outputs.is_empty() {
                return Err(ProviderError::Failed("malformed response (poll): completed with no outputs".into()));
            }
            TaskStatus::Completed(outputs)
        }
        other => TaskStatus::Other(other.to_string()),
    })
}

/// Classifies a `failed` task's `data.error`. A photo without a usable face ("no face
/// detected", "face not found", "failed to detect …") is the user's input, not an outage:
/// `Rejected`, worded so the bot's refusal text recognises it ("no face …") with the
/// provider's words kept after it. Safety refusals are `Rejected` as they are; anything else
/// is `Failed`.
pub fn failure(message: &str) -> ProviderError {
    let msg = message.trim();
    let m = msg.to_lowercase();
    let about_face = m.contains("face") && (m.contains("not") || m.contains("no ") || m.contains("detect"));
    if m.contains("no face") || about_face {
        return ProviderError::Rejected(format!("no face detected ({msg})"));
    }
    if ["detect", "nsfw", "safety", "sensitive", "content policy"].iter().any(|w| m.contains(w)) {
        return ProviderError::Rejected(msg.to_string());
    }
    ProviderError::Failed(if msg.is_empty() { "the task failed without a reason".into() } else { msg.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Format, Task};
    use crate::providers::{InputImage, SizeParam};

    fn req() -> GenerateRequest {
        GenerateRequest {
            model_id: "swap".into(),
            task: Task::FaceSwap,
            endpoint: "wavespeed-ai/image-face-swap".into(),
            workflow: None,
            prompt: String::new(),
            negative: None,
            format: Format::Square,
            width: 1024,
            height: 1024,
            aspect_ratio: None,
            seed: 7,
            size_param: SizeParam::None,
            extra: Map::new(),
            input_images: vec![
                InputImage { bytes: vec![1, 2, 3], mime: "image/jpeg".into() },
                InputImage { bytes: vec![4, 5, 6], mime: "image/png".into() },
            ],
            image_fields: vec!["face_image".into(), "image".into()],
            video: None,
        }
    }

    #[test]
    fn body_puts_each_photo_under_its_field_and_params_win() {
        let mut r = req();
        let m = build_input(&r);
        assert_eq!(m["face_image"], "data:image/jpeg;base64,AQID");
        assert_eq!(m["image"], "data:image/png;base64,BAUG");
        assert_eq!((&m["enable_sync_mode"], &m["output_format"]), (&json!(false), &json!("jpeg")));
        assert!(!m.contains_key("prompt") && !m.contains_key("seed"), "{m:?}");
        r.extra.insert("output_format".into(), json!("png"));
        r.extra.insert("target_index".into(), json!(1));
        r.prompt = "swap".into();
        let m = build_input(&r);
        assert_eq!((&m["output_format"], &m["target_index"], &m["prompt"]), (&json!("png"), &json!(1), &json!("swap")));
        r.image_fields.clear();
        r.input_images.truncate(1);
        assert_eq!(build_input(&r)["image"], "data:image/jpeg;base64,AQID", "default field for one photo");
    }

    #[test]
    fn envelope_and_submit_answer() {
        let base = "https://api.wavespeed.ai/api/v3";
        let answer = json!({"code": 200, "message": "success", "data": {
            "id": "t1", "model": "wavespeed-ai/image-face-swap", "status": "created",
            "urls": {"get": "https://api.wavespeed.ai/api/v3/predictions/t1/result"}, "outputs": [], "error": ""}});
        let sub = parse_submitted(&parse_envelope(answer, "submit").expect("data"), base).expect("sub");
        assert_eq!(sub.request_id, "t1");
        assert_eq!(sub.data["get_url"], "https://api.wavespeed.ai/api/v3/predictions/t1/result");
        let foreign = json!({"data": {"id": "t2", "urls": {"get": "https://evil.example/api/v3/predictions/t2"}}});
        let sub = parse_submitted(&parse_envelope(foreign, "submit").expect("data"), base).expect("sub");
        assert_eq!(sub.data["get_url"], "https://api.wavespeed.ai/api/v3/predictions/t2/result");
        let bad_code = json!({"code": 401, "message": "invalid api key", "data": null});
        assert!(matches!(parse_envelope(bad_code, "submit"), Err(ProviderError::Unauthorized(_))));
        assert!(matches!(parse_envelope(json!({"code": 200}), "poll"), Err(ProviderError::Failed(_))));
        assert!(parse_submitted(&Map::new(), base).is_err());
    }

    #[test]
    fn statuses_and_failures() {
        let data = |v: Value| v.as_object().cloned().expect("object");
        assert!(matches!(parse_status(&data(json!({"status": "created"}))), Ok(TaskStatus::Created)));
        assert!(matches!(parse_status(&data(json!({"status": "processing"}))), Ok(TaskStatus::Processing)));
        assert!(matches!(
            parse_status(&data(json!({"status": "completed", "outputs": ["https://cdn/x.jpeg"]}))),
            Ok(TaskStatus::Completed(o)) if o == ["https://cdn/x.jpeg"]
        ));
        assert!(matches!(
            parse_status(&data(json!({"status": "completed", "outputs": []}))),
            Err(ProviderError::Failed(_))
        ));
        assert!(matches!(
            parse_status(&data(json!({"status": "completed", "outputs": ["u"], "has_nsfw_contents": [true]}))),
            Err(ProviderError::Rejected(_))
        ));
        assert!(matches!(
            parse_status(&data(json!({"status": "failed", "error": "no face detected"}))),
            Ok(TaskStatus::Failed(ProviderError::Rejected(m))) if m.contains("no face")
        ));
        for face in ["Face not found in the source image", "failed to detect any faces", "No face detected"] {
            let e = failure(face);
            assert!(matches!(&e, ProviderError::Rejected(m) if m.starts_with("no face detected")), "{face}: {e:?}");
        }
        assert!(matches!(failure("CUDA out of memory"), ProviderError::Failed(_)));
        assert!(matches!(failure("NSFW content detected"), ProviderError::Rejected(m) if m == "NSFW content detected"));
        assert!(matches!(failure(""), ProviderError::Failed(_)));
    }
}
