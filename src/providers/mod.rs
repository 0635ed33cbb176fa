//! External generators behind one trait.
//!
//! A provider call is split into `submit` → `wait` so the job engine can persist the provider's
//! request id ([`Submission`]) between the two: after a crash, a submitted job is resumed with
//! `wait` on the stored submission and never submitted again. Providers whose API lets the client
//! choose the id (ComfyUI's `prompt_id`) return it from [`ImageProvider::preassign_id`], and the
//! engine persists it *before* calling `submit`.

pub mod comfy_pool;
pub mod comfyui;
pub mod comfyui_connect;
pub mod demo;
pub mod fal;
pub mod gemini;
pub mod http;
pub mod huggingface;
pub mod openai;
pub mod replicate;
pub mod wavespeed;

use crate::domain::{Format, Task};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// One generation request, provider-neutral. Built by `jobs` from the job payload and the model
/// config; every provider maps it onto its own request shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GenerateRequest {
    /// Model id from config (`[[models]] id`), for logs.
    pub model_id: String,
    pub task: Task,
    /// Provider-side model address: a fal endpoint id (`fal-ai/flux/dev`), a WaveSpeed model id
    /// (`wavespeed-ai/image-face-swap`), an OpenAI / Gemini / Hugging Face model name, a
    /// Replicate `owner/name` or version id, or for ComfyUI the
    /// API-format workflow JSON (already loaded from the model's workflow file).
    pub endpoint: String,
    pub workflow: Option<serde_json::Value>,
    pub prompt: String,
    pub negative: Option<String>,
    pub format: Format,
    /// Pixel size asked for (from the format or an explicit `size=WxH`).
    pub width: u32,
    pub height: u32,
    /// Explicit `aspect_ratio=W:H`, if the user gave one.
    pub aspect_ratio: Option<String>,
    pub seed: u64,
    /// How the model takes its size: `image_size` (fal object), `aspect_ratio`, or `none`.
    pub size_param: SizeParam,
    /// Extra input fields from the model config, merged into the provider's request body.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Input images (already stripped of metadata), for edit/upscale tasks.
    pub input_images: Vec<InputImage>,
    /// The request field of each input image, from the model's `image_fields` (empty: the
    /// provider's default).
    #[serde(default)]
    pub image_fields: Vec<String>,
    /// Set for video tasks ([`crate::domain::Task::is_video`]): what the clip should be.
    /// `width`/`height` above are then even (libx264 refuses odd sizes after submit).
    #[serde(default)]
    pub video: Option<VideoParams>,
}

/// A video job's settings, from the model's declared options (`duration`, `fps`) and params.
/// ComfyUI fills `{{duration}}`, `{{fps}}` and `{{frames}}` from it; fal and the others get
/// the chosen values as request fields anyway (`extra`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct VideoParams {
    /// Clip length, seconds (≥ 1).
    pub duration_secs: u32,
    /// Frames per second (1–120, ComfyUI CreateVideo's range).
    pub fps: u32,
}

impl VideoParams {
    /// Frames in the clip: duration × fps (ComfyUI `{{frames}}`).
    #[allow(dead_code, reason = "the ComfyUI video placeholders use it")]
    pub fn frames(self) -> u32 {
        self.duration_secs.saturating_mul(self.fps)
    }
}

/// Default video frame rate when a model declares none (Wan 2.x's 16 fps).
pub const DEFAULT_FPS: u32 = 16;
/// Default clip length when a model declares no `duration` option, seconds.
pub const DEFAULT_DURATION_SECS: u32 = 5;

/// A JSON number, or a string holding one (`"10"`: fal Kling takes durations as strings).
pub fn json_u32(v: &serde_json::Value) -> Option<u32> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().trim_end_matches('s').parse().ok(),
        _ => None,
    }
}

/// Rounds a video side down to an even number (at least 2).
pub fn even(side: u32) -> u32 {
    (side & !1).max(2)
}

/// How a model receives the requested size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeParam {
    /// fal `image_size: {"width", "height"}`.
    #[default]
    ImageSize,
    /// `aspect_ratio: "16:9"`.
    AspectRatio,
    /// The model decides (or the workflow has the size baked in).
    None,
}

/// An input image handed to a provider.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InputImage {
    pub bytes: Vec<u8>,
    /// MIME type, e.g. `image/jpeg`.
    pub mime: String,
}

/// What the provider returned when it accepted a request: its id plus whatever the provider
/// needs to find the request again (fal: `status_url`, `response_url`, `cancel_url`; ComfyUI:
/// `client_id`). Persisted verbatim in the job record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Submission {
    /// fal `request_id`, ComfyUI `prompt_id`, WaveSpeed `data.id`, Replicate prediction `id`;
    /// demo and the synchronous kinds (OpenAI, Gemini, Hugging Face): a local id ([`Parked`]).
    pub request_id: String,
    #[serde(default)]
    pub data: serde_json::Value,
}

/// A progress report while waiting.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProviderProgress {
    /// 0.0–1.0 if the provider reports steps (ComfyUI `progress` value/max).
    pub fraction: Option<f32>,
    /// 0-based position in the provider's queue (fal `queue_position`; ComfyUI: index among the
    /// pending prompts of `GET /queue`).
    pub queue_position: Option<u32>,
    /// True once the provider says it is running the request (fal `IN_PROGRESS`).
    pub running: bool,
}

/// One result file: a picture, a video, an animation or anything else — its kind is sniffed
/// from the bytes when it is stored (`domain::MediaKind::sniff`), not taken from here.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneratedFile {
    pub bytes: Vec<u8>,
    /// MIME type as the provider stated it (informational; logs).
    pub mime: String,
    /// Set by the demo provider: the image is a local rendering, not a model output.
    pub is_demo: bool,
}

/// Errors from a provider, already classified: the job engine decides retry vs abort on the
/// variant alone.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Network failure, 5xx, 429, read timeout: may succeed later.
    #[error("provider temporarily unavailable: {0}")]
    Transient(String),
    /// HTTP 429 with `Retry-After`: transient, and the next attempt waits at least that long.
    #[error("provider rate limit: retry after {retry_after:?}: {detail}")]
    RateLimited { retry_after: Duration, detail: String },
    /// Content policy or invalid input: retrying won't help; the text is safe to show a user.
    #[error("request rejected: {0}")]
    Rejected(String),
    /// The model is gone (404 model not found).
    #[error("model retired: {0}")]
    Retired(String),
    /// Bad key, locked account, region blocked (401/403, Gemini FAILED_PRECONDITION): every
    /// model of the provider is affected.
    #[error("provider unauthorized: {0}")]
    Unauthorized(String),
    /// HTTP 402 Payment Required for one model: that model needs a payment (a paid model on an
    /// account whose other models are free, exhausted credits for it); the provider's other
    /// models may still work.
    #[error("payment required: {0}")]
    PaymentRequired(String),
    /// The request as configured cannot work, whatever the user typed: ComfyUI's validation of
    /// the workflow (HTTP 400 with `node_errors`, an unknown node class, no output node). The
    /// operator must fix the model; the text (node errors) is for admins.
    #[error("model misconfigured: {0}")]
    Misconfigured(String),
    /// The provider ran the request but it failed (fal COMPLETED with error, ComfyUI
    /// execution_error), or answered with something we cannot parse.
    #[error("generation failed: {0}")]
    Failed(String),
    /// The provider forgot the request (ComfyUI history lost on its restart).
    #[error("request unknown to provider: {0}")]
    Lost(String),
    /// The server holding the request (one of a ComfyUI pool) went down while the job waited:
    /// no result will come from there, and the provider has other servers. The engine forgets
    /// the submission (so a late answer from that server can never be delivered) and submits
    /// the job again, with a new id; with no attempts left it is released like `Transient`.
    #[error("provider server down: {0}")]
    ServerDown(String),
}

impl ProviderError {
    /// Classifies an HTTP status the way every provider here does (protocols.md §2.5, §5.3, §6, §7).
    pub fn from_status(status: u16, body: &str) -> ProviderError {
        let detail: String = body.chars().take(300).collect();
        match status {
            401 | 403 => ProviderError::Unauthorized(format!("HTTP {status}: {detail}")),
            402 => ProviderError::PaymentRequired(format!("HTTP 402: {detail}")),
            // Some APIs say it in a 400 body rather than with the status.
            400 if detail.to_ascii_lowercase().contains("payment required") => {
                ProviderError::PaymentRequired(format!("HTTP 400: {detail}"))
            }
            // Gemini: region blocks answer 400 FAILED_PRECONDITION (protocols.md §5.3).
            400 if detail.contains("FAILED_PRECONDITION")
                || detail.contains("not available in your country")
                || detail.contains("location is not supported") =>
            {
                ProviderError::Unauthorized(format!("HTTP 400: {detail}"))
            }
            404 => ProviderError::Retired(format!("HTTP 404: {detail}")),
            408 | 409 | 425 | 429 | 500..=599 => ProviderError::Transient(format!("HTTP {status}: {detail}")),
            400 | 413 | 415 | 422 => ProviderError::Rejected(detail),
            _ => ProviderError::Failed(format!("HTTP {status}: {detail}")),
        }
    }
}

/// Callback for progress reports; cheap to call often (the bot rate-limits what it shows).
pub type ProgressFn<'a> = &'a (dyn Fn(ProviderProgress) + Send + Sync);

/// A generation backend. Implementations: [`fal::FalProvider`], [`comfyui::ComfyProvider`],
/// [`comfyui_connect::ComfyConnectProvider`], [`wavespeed::WavespeedProvider`],
/// [`openai::OpenaiProvider`], [`gemini::GeminiProvider`], [`huggingface::HuggingfaceProvider`],
/// [`replicate::ReplicateProvider`], [`demo::DemoProvider`].
#[async_trait::async_trait]
pub trait ImageProvider: Send + Sync {
    /// Provider id from config (`[[providers]] id`).
    #[allow(dead_code, reason = "every provider names itself; tests and logs read it")]
    fn id(&self) -> &str;

    /// If the provider lets the client pick the request id, a fresh one (persisted by the
    /// engine before `submit`). Default: `None` (the provider assigns it).
    fn preassign_id(&self) -> Option<String> {
        None
    }

    /// Sends the request. `preassigned` is the id from [`Self::preassign_id`], if any.
    async fn submit(&self, req: &GenerateRequest, preassigned: Option<&str>) -> Result<Submission, ProviderError>;

    /// Checks whether a request with a preassigned id reached the provider (used after a crash
    /// between persisting the id and learning the submit outcome). Default: unknown → `false`.
    async fn is_known(&self, _request_id: &str, _data: &serde_json::Value) -> Result<bool, ProviderError> {
        Ok(false)
    }

    /// Waits for the result of a submitted request, reporting progress. Works on a submission
    /// restored from the database after a restart. The caller applies the overall timeout.
    async fn wait(&self, sub: &Submission, progress: ProgressFn<'_>) -> Result<Vec<GeneratedFile>, ProviderError>;

    /// Best-effort cancel at the provider (fal `cancel_url`, ComfyUI queue delete / interrupt).
    async fn cancel(&self, _sub: &Submission) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// Requests accepted by a provider whose API is one synchronous call (OpenAI, Gemini,
/// Hugging Face): `submit` checks the request and parks it here under a locally made id
/// (UUIDv7); `wait` takes it and makes the call, so the engine's progress ticker runs during the
/// long call and Hugging Face can report its model-loading wait. There is no vendor request id
/// to resume from: after a restart the map is empty and `wait` answers `Lost` (the job fails
/// and its hold is released) rather than call the vendor — and maybe bill us — a second time.
#[derive(Debug, Default)]
pub struct Parked {
    map: std::sync::Mutex<std::collections::HashMap<String, GenerateRequest>>,
}

impl Parked {
    /// Parks `req`; returns the submission to persist (`request_id` = a fresh UUIDv7,
    /// `data = {"local": true}`).
    pub fn park(&self, req: &GenerateRequest) -> Submission {
        let id = uuid::Uuid::now_v7().to_string();
        self.lock().insert(id.clone(), req.clone());
        Submission { request_id: id, data: serde_json::json!({ "local": true }) }
    }

    /// The parked request of `sub` (left parked: a transient failure is retried with the same
    /// submission).
    ///
    /// Errors: `Lost` when it is not here (the bot restarted since `submit`).
    pub fn get(&self, sub: &Submission, provider: &str) -> Result<GenerateRequest, ProviderError> {
        self.lock().get(&sub.request_id).cloned().ok_or_else(|| {
            ProviderError::Lost(format!(
                "{provider}: the call was in flight when the bot restarted; a synchronous API has nothing to resume"
            ))
        })
    }

    /// Forgets the request of `sub` (on a final result or a cancel).
    pub fn remove(&self, sub: &Submission) {
        self.lock().remove(&sub.request_id);
    }

    /// Settles `sub` after its call: a final outcome (a result, or an error a retry cannot
    /// fix) forgets the request; a transient one keeps it parked for the engine's retry.
    pub fn settle<T>(&self, sub: &Submission, out: Result<T, ProviderError>) -> Result<T, ProviderError> {
        if !matches!(out, Err(ProviderError::Transient(_) | ProviderError::RateLimited { .. })) {
            self.remove(sub);
        }
        out
    }

    /// The whole `wait` of a one-call API: takes the parked request, reports it running,
    /// makes `call` and settles the submission ([`Parked::settle`]).
    pub async fn run<F, Fut>(
        &self,
        sub: &Submission,
        provider: &str,
        progress: ProgressFn<'_>,
        call: F,
    ) -> Result<Vec<GeneratedFile>, ProviderError>
    where
        F: FnOnce(GenerateRequest) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<GeneratedFile>, ProviderError>>,
    {
        let req = self.get(sub, provider)?;
        progress(ProviderProgress { running: true, ..Default::default() });
        self.settle(sub, call(req).await)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, GenerateRequest>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Takes `RateLimited` for a 429 carrying `Retry-After`, else the usual classification of
/// [`http::status_error`]; shared by the synchronous kinds.
pub fn classify_answer(status: u16, retry_after: Option<Duration>, body: &str) -> ProviderError {
    if status == 429 {
        if let Some(retry_after) = retry_after {
            return ProviderError::RateLimited { retry_after, detail: http::error_detail(body) };
        }
    }
    http::status_error(status, body)
}

/// Shared handle to a provider.
pub type DynProvider = Arc<dyn ImageProvider>;

/// The MIME type of `bytes` from their magic numbers (see [`crate::domain::MediaKind::sniff`]);
/// `application/octet-stream` for anything unknown.
pub fn sniff_mime(bytes: &[u8]) -> &'static str {
    crate::domain::MediaKind::sniff(bytes).1
}
