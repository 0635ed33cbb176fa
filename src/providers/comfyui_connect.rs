//! ComfyUI-Connect client (protocols.md §3.4): saved API-format workflows run as
//! `POST /api/connect/workflows/{name}` with a JSON payload keyed by the node tags
//! (`$tag` titles), on the ComfyUI server itself.
//!
//! The plugin answers only when the run has ended, with the `images` outputs inline as base64,
//! and returns no prompt id. So the POST runs in a background task: `submit` waits for it a
//! moment (an unknown workflow fails at once, a fast workflow may already be done), then
//! returns; `wait` takes over the task. Every input file is named `mediabot_<request id>_<i>`,
//! which is what finds the run in ComfyUI's own `/history` and `/queue` when the answer has no
//! file (VideoHelperSuite saves under `gifs`, which the plugin does not collect; a failed run
//! answers `"result": {}`) or when the app restarted while the POST was open: a restored
//! submission is never posted again.

use super::comfyui::{self, ComfyProvider, History, QueueState};
use super::http;
use super::{GenerateRequest, GeneratedFile, ImageProvider, ProgressFn, ProviderError, ProviderProgress, Submission};
use crate::config::ProviderConfig;
use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Bound on the blocking run POST. The job's own timeout (900 s for video models by default)
/// cancels sooner; this only stops a forgotten request.
const RUN_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest `submit` waits for the run's answer before handing the run to `wait`.
const SUBMIT_GRACE: Duration = Duration::from_secs(2);
/// Cap on the run's JSON answer: one video at [`http::MAX_VIDEO_BYTES`] in base64, plus room.
const MAX_RUN_JSON: u64 = http::MAX_VIDEO_BYTES / 3 * 4 + 4 * 1024 * 1024;
/// The most recent `/history` entries searched for a run (`GET /history?max_items=`).
const HISTORY_ITEMS: u32 = 200;
/// Looks in a row that find the run neither in `/history` nor in `/queue` before giving up.
const ABSENT_CHECKS: u32 = 3;

/// The run POST of a submission made by this process.
enum Inflight {
    Running(tokio::task::JoinHandle<Result<Vec<GeneratedFile>, ProviderError>>),
    /// The answer came within `submit`'s grace.
    Done(Vec<GeneratedFile>),
}

/// A ComfyUI server with the ComfyUI-Connect plugin (`kind = "comfyui_connect"`); a model's
/// `endpoint` is the saved workflow's name.
///
/// - `preassign_id`: a UUID v4; the input files are `mediabot_<id>_<i>.<ext>` ([`file_stem`]).
/// - `submit`: `GET /api/connect/workflows/{name}` for its tagged inputs, then the payload of
///   [`build_payload`] is posted in the background; `data = {"workflow", "files"}`.
/// - `wait`: the run's answer — its base64 files (sniffed: mp4, WebM, PNG, …) — or, when it
///   has none, was cut off, or belongs to an earlier process, the History fallback: the run
///   is found by its input file name in `GET /history?max_items=200` and its outputs
///   (`images` and VHS `gifs`) fetched with `GET /view` ([`ComfyProvider`]'s caps), every
///   `poll_interval_ms`; meanwhile `/queue` gives the position. Found nowhere 3 times: a run
///   whose answer was empty is `Failed`, a restored one `Lost`.
/// - `is_known`: the run is in `/history` or `/queue` (or still posted by this process).
/// - `cancel`: drops the POST and, when the run is in `/queue`, deletes / interrupts it.
///
/// Errors (§3.4): the plugin answers a plain-text HTTP 500 for an unknown workflow, tag or
/// input — `Misconfigured`, the operator's to fix; a failed graph answers 200 with an empty
/// result and is reported from `/history` as `Failed("<node type>: <message>")`; other
/// statuses per [`ProviderError::from_status`]; network failures `Transient`.
pub struct ComfyConnectProvider {
    id: String,
    base_url: String,
    /// Client for the run POST: its read timeout is [`RUN_TIMEOUT`] (nothing is sent until
    /// the run ends).
    run_http: reqwest::Client,
    /// The same server's native API: `/history`, `/queue`, `/view`, `/interrupt`.
    comfy: ComfyProvider,
    poll: Duration,
    inflight: Mutex<HashMap<String, Inflight>>,
}

impl std::fmt::Debug for ComfyConnectProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComfyConnectProvider")
            .field("id", &self.id)
            .field("base_url", &self.base_url)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl Drop for ComfyConnectProvider {
    fn drop(&mut self) {
        for (_, run) in self.inflight.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            if let Inflight::Running(h) = run {
                h.abort();
            }
        }
    }
}

/// `mediabot_<request id>_`: how every input file of a run begins, and how the run is found
/// in `/history` and `/queue`.
pub fn file_stem(request_id: &str) -> String {
    format!("mediabot_{request_id}_")
}

impl ComfyConnectProvider {
    /// Builds the client from `[[providers]]` config: `base_url` (the ComfyUI server,
    /// `http://127.0.0.1:8188`; start ComfyUI with an explicit `--port`, the plugin assumes
    /// 8000 otherwise), `poll_interval_ms` (3000 suits it). Like ComfyUI, no auth; a
    /// configured key is ignored.
    ///
    /// Errors: `Failed` for a base_url that is not an http(s) URL.
    pub fn new(cfg: &ProviderConfig) -> Result<ComfyConnectProvider, ProviderError> {
        let comfy = ComfyProvider::new(cfg)?;
        Ok(ComfyConnectProvider {
            id: cfg.id.clone(),
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            run_http: http::client_for(cfg, RUN_TIMEOUT)?,
            comfy,
            poll: Duration::from_millis(cfg.poll_interval_ms.max(10)),
            inflight: Mutex::new(HashMap::new()),
        })
    }

    fn workflow_url(&self, name: &str) -> String {
        format!("{}/api/connect/workflows/{name}", self.base_url)
    }

    /// The workflow's tagged inputs: `{tag: {input: python type name}}`.
    async fn tagged_inputs(&self, name: &str) -> Result<Map<String, Value>, ProviderError> {
        let (status, body) = self.comfy.send(self.comfy_get(&self.workflow_url(name))).await?;
        let text = String::from_utf8_lossy(&body);
        if !(200..300).contains(&status) {
            return Err(connect_error(status, &text, name));
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ProviderError::Failed(format!("malformed response (connect workflow): {e}")))?;
        Ok(v.get("workflow").and_then(|w| w.get("inputs")).and_then(Value::as_object).cloned().unwrap_or_default())
    }

    /// `check-config --online`: the problems of workflow `name` for a model taking
    /// `images` input photos — one line per `$tag` the photos need and the workflow lacks.
    ///
    /// Errors: `Misconfigured` when the plugin has no such workflow, else as [`Self::submit`].
    pub async fn check_workflow(
        &self,
        name: &str,
        image_fields: &[String],
        images: usize,
    ) -> Result<Vec<String>, ProviderError> {
        let tagged = self.tagged_inputs(name).await?;
        Ok((0..images)
            .map(|i| image_tag(image_fields, i))
            .filter(|tag| !tagged.contains_key(tag))
            .map(|tag| format!("workflow {name} has no ${tag} tag (title the photo's LoadImage node ${tag})"))
            .collect())
    }

    fn comfy_get(&self, url: &str) -> reqwest::RequestBuilder {
        self.run_http.get(url).timeout(Duration::from_secs(60))
    }

    fn take_inflight(&self, id: &str) -> Option<Inflight> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }

    /// Where the run stands in ComfyUI: `(history, prompt_id)` when it is in `/history`.
    async fn find_in_history(&self, stem: &str) -> Result<Option<(Value, String)>, ProviderError> {
        let h = self.comfy.get_json(&format!("/history?max_items={HISTORY_ITEMS}")).await?;
        let found = h.as_object().into_iter().flatten().find(|(_, e)| mentions(&e["prompt"][2], stem));
        Ok(found.map(|(id, _)| (h.clone(), id.clone())))
    }

    /// The run's prompt id and place in `/queue`, if it is there.
    async fn find_in_queue(&self, stem: &str) -> Result<Option<(String, QueueState)>, ProviderError> {
        let q = self.comfy.get_json("/queue").await?;
        let items = ["queue_running", "queue_pending"]
            .into_iter()
            .flat_map(|k| q.get(k).and_then(Value::as_array).cloned().unwrap_or_default());
        let id =
            items.filter(|i| mentions(&i[2], stem)).find_map(|i| i.get(1).and_then(Value::as_str).map(str::to_string));
        Ok(id.map(|id| {
            let state = comfyui::queue_state(&q, &id);
            (id, state)
        }))
    }

    /// The History fallback: polls until the run is in `/history`, then downloads its outputs.
    /// `answered` = the run's POST has returned (with no file), so absence means failure.
    async fn via_history(
        &self,
        request_id: &str,
        answered: bool,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<GeneratedFile>, ProviderError> {
        let stem = file_stem(request_id);
        let (mut absent, mut failures) = (0u32, 0u32);
        loop {
            match self.look(&stem, &mut absent, progress).await {
                Ok(Some(files)) => return Ok(files),
                Ok(None) => failures = 0,
                Err(ProviderError::Transient(m)) if failures < http::MAX_POLL_FAILURES => {
                    failures += 1;
                    tracing::warn!(provider = %self.id, attempt = failures, "ComfyUI-Connect history poll failed: {m}");
                }
                Err(e) => return Err(e),
            }
            if absent >= ABSENT_CHECKS {
                return Err(if answered {
                    ProviderError::Failed(
                        "ComfyUI-Connect answered without an output file and the run is not in /history".into(),
                    )
                } else {
                    ProviderError::Lost(format!("ComfyUI has no run with input {stem}* in /history or /queue"))
                });
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// One look at `/history`, then `/queue`. `Ok(Some)` = done.
    async fn look(
        &self,
        stem: &str,
        absent: &mut u32,
        progress: ProgressFn<'_>,
    ) -> Result<Option<Vec<GeneratedFile>>, ProviderError> {
        if let Some((history, prompt_id)) = self.find_in_history(stem).await? {
            return match comfyui::parse_history(&history, &prompt_id)? {
                History::Success(files) => {
                    let mut out = Vec::with_capacity(files.len());
                    for f in &files {
                        out.push(self.comfy.view(f).await?);
                    }
                    Ok(Some(out))
                }
                History::Error(m) => Err(ProviderError::Failed(m)),
                History::Pending => Ok(None),
            };
        }
        match self.find_in_queue(stem).await? {
            Some((_, QueueState::Pending(pos))) => {
                *absent = 0;
                progress(ProviderProgress { queue_position: Some(pos), ..Default::default() });
            }
            Some(_) => {
                *absent = 0;
                progress(ProviderProgress { running: true, ..Default::default() });
            }
            None => *absent += 1,
        }
        Ok(None)
    }
}

/// Whether any string in `v` contains `stem` (a run's graph holds its input file names).
fn mentions(v: &Value, stem: &str) -> bool {
    match v {
        Value::String(s) => s.contains(stem),
        Value::Array(a) => a.iter().any(|x| mentions(x, stem)),
        Value::Object(o) => o.values().any(|x| mentions(x, stem)),
        _ => false,
    }
}

/// Classifies a plugin error answer (§3.4): a 500 whose body is not JSON is aiohttp's answer to
/// the plugin's exceptions (unknown workflow, tag or input, a file without a name) —
/// `Misconfigured`; anything else per [`http::status_error`].
pub fn connect_error(status: u16, body: &str, workflow: &str) -> ProviderError {
    if status == 500 && serde_json::from_str::<Value>(body).is_err() {
        let detail: String = body.trim().chars().take(200).collect();
        return ProviderError::Misconfigured(format!(
            "ComfyUI-Connect refused workflow {workflow} (unknown workflow, tag or input?): HTTP 500: {detail}"
        ));
    }
    http::status_error(status, body)
}

/// The payload for the run (§3.4), sent only under tags the workflow declares (`tagged` =
/// `GET /api/connect/workflows/{name}` → `workflow.inputs`; the plugin answers 500 for any
/// other) and never into an input that is a link (declared type `list`):
///
/// - input image *i* (0-based): `{"type": "file", "content": <base64>, "name":
///   "mediabot_<id>_<i>.<ext>"}` under the tag `image_fields[i]` (one field for several images:
///   `field`, `field_2`, …; none: `image`, `image_2`, …), into its input `image` (LoadImage's)
///   or its only input. A missing tag is `Misconfigured`.
/// - value tags: `prompt`, `negative` (text), `seed`, `width`, `height`, and for video
///   `duration` (s), `frames`, `fps`: every declared input of a tag of that name gets the value
///   (`$fps(fps)` on CreateVideo, `$frames(length)` on a Wan sampler…). Sizes are even and the
///   clip defaults to 5 s at 16 fps, as for ComfyUI ([`comfyui::TemplateVars::for_request`]).
/// - `extra` (model `params` and chosen options by field): an object value is sent as the
///   tag's inputs as written; any other value goes into every declared input of the tag of
///   that name; names the workflow does not declare are left out.
///
/// Returns the payload and the input file names.
pub fn build_payload(
    req: &GenerateRequest,
    request_id: &str,
    tagged: &Map<String, Value>,
) -> Result<(Map<String, Value>, Vec<String>), ProviderError> {
    let mut payload = Map::new();
    let set = |payload: &mut Map<String, Value>, tag: &str, value: &Value| {
        let Some(inputs) = tagged.get(tag).and_then(Value::as_object) else { return };
        for (input, kind) in inputs {
            if kind.as_str() != Some("list") {
                let entry = payload.entry(tag.to_string()).or_insert_with(|| json!({}));
                if let Some(o) = entry.as_object_mut() {
                    o.insert(input.clone(), value.clone());
                }
            }
        }
    };
    let mut names = Vec::with_capacity(req.input_images.len());
    for (i, img) in req.input_images.iter().enumerate() {
        let tag = image_tag(&req.image_fields, i);
        let inputs = tagged.get(&tag).and_then(Value::as_object).ok_or_else(|| {
            ProviderError::Misconfigured(format!(
                "workflow {} has no ${tag} tag for input image {} (title its LoadImage node ${tag})",
                req.endpoint,
                i + 1
            ))
        })?;
        let input = if inputs.contains_key("image") {
            "image".to_string()
        } else if let [only] = inputs.keys().collect::<Vec<_>>().as_slice() {
            (*only).clone()
        } else {
            return Err(ProviderError::Misconfigured(format!(
                "workflow {}: tag ${tag} has no `image` input",
                req.endpoint
            )));
        };
        let ext = match super::sniff_mime(&img.bytes) {
            "image/png" => "png",
            "image/jpeg" => "jpg",
            "image/webp" => "webp",
            "image/gif" => "gif",
            _ => "bin",
        };
        let name = format!("{}{i}.{ext}", file_stem(request_id));
        let content = base64::engine::general_purpose::STANDARD.encode(&img.bytes);
        let file = json!({"type": "file", "content": content, "name": name});
        payload.entry(tag).or_insert_with(|| json!({}))[input] = file;
        names.push(name);
    }
    let no_inputs: [String; 0] = [];
    let vars = comfyui::TemplateVars::for_request(req, &no_inputs);
    set(&mut payload, "prompt", &json!(req.prompt));
    set(&mut payload, "negative", &json!(vars.negative));
    set(&mut payload, "seed", &json!(req.seed));
    set(&mut payload, "width", &json!(vars.width));
    set(&mut payload, "height", &json!(vars.height));
    if req.video.is_some() || req.task.is_video() {
        set(&mut payload, "duration", &json!(vars.duration));
        set(&mut payload, "frames", &json!(vars.frames));
        set(&mut payload, "fps", &json!(vars.fps));
    }
    for (k, v) in &req.extra {
        match v {
            Value::Object(o) => {
                let entry = payload.entry(k.clone()).or_insert_with(|| json!({}));
                if let Some(e) = entry.as_object_mut() {
                    e.extend(o.clone());
                }
            }
            other => set(&mut payload, k, other),
        }
    }
    Ok((payload, names))
}

/// The tag of input image `i` (0-based): `fields[i]`; with one field for several images
/// `field`, `field_2`, …; with none `image`, `image_2`, ….
pub fn image_tag(fields: &[String], i: usize) -> String {
    let numbered = |base: &str| if i == 0 { base.to_string() } else { format!("{base}_{}", i + 1) };
    match fields {
        [] => numbered("image"),
        [one] => numbered(one),
        many => many.get(i).cloned().unwrap_or_else(|| numbered("image")),
    }
}

/// Reads the run's answer `{"status": "success", "workflow", "result": {tag: base64 |
/// [base64, …]}}` into files (possibly none), each sniffed and capped like a download.
///
/// Errors: `Failed` for a body that is not that shape, bad base64 or a file over the cap.
pub fn parse_result(v: &Value) -> Result<Vec<GeneratedFile>, ProviderError> {
    let malformed = |m: &str| ProviderError::Failed(format!("malformed response (connect run): {m}"));
    let result = match v.get("result") {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(malformed("result is not an object")),
    };
    let mut files = Vec::new();
    for value in result.values() {
        let items: Vec<&Value> = match value {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for item in items {
            let Some(text) = item.as_str() else { continue };
            let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(clean.as_bytes())
                .map_err(|_| malformed("an output is not base64"))?;
            let mime = super::sniff_mime(&bytes);
            let cap = if mime.starts_with("image/")
                && crate::domain::MediaKind::sniff(&bytes).0 == crate::domain::MediaKind::Image
            {
                http::MAX_DOWNLOAD_BYTES
            } else {
                http::MAX_VIDEO_BYTES
            };
            if bytes.len() as u64 > cap {
                return Err(ProviderError::Failed(format!("result file larger than {} MB", cap / (1024 * 1024))));
            }
            files.push(GeneratedFile { bytes, mime: mime.to_string(), is_demo: false });
        }
    }
    Ok(files)
}

/// The run POST; the answer's files (possibly none).
async fn run(
    client: reqwest::Client,
    url: String,
    workflow: String,
    payload: Map<String, Value>,
) -> Result<Vec<GeneratedFile>, ProviderError> {
    let resp = client.post(&url).json(&payload).timeout(RUN_TIMEOUT).send().await.map_err(|e| http::classify(&e))?;
    let status = resp.status().as_u16();
    let body = http::read_limited(resp, MAX_RUN_JSON).await?;
    let text = String::from_utf8_lossy(&body);
    if !(200..300).contains(&status) {
        return Err(connect_error(status, &text, &workflow));
    }
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| ProviderError::Failed(format!("malformed response (connect run): {e}")))?;
    parse_result(&v)
}

#[async_trait::async_trait]
impl ImageProvider for ComfyConnectProvider {
    fn id(&self) -> &str {
        &self.id
    }

    fn preassign_id(&self) -> Option<String> {
        Some(uuid::Uuid::new_v4().to_string())
    }

    async fn submit(&self, req: &GenerateRequest, preassigned: Option<&str>) -> Result<Submission, ProviderError> {
        let request_id = preassigned.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        let workflow = req.endpoint.trim().trim_matches('/').to_string();
        if workflow.is_empty() {
            return Err(ProviderError::Misconfigured(format!("model {}: no ComfyUI-Connect workflow", req.model_id)));
        }
        let tagged = self.tagged_inputs(&workflow).await?;
        let (payload, names) = build_payload(req, &request_id, &tagged)?;
        let mut handle =
            tokio::spawn(run(self.run_http.clone(), self.workflow_url(&workflow), workflow.clone(), payload));
        let grace = self.poll.min(SUBMIT_GRACE);
        let run = match tokio::time::timeout(grace, &mut handle).await {
            Err(_) => Inflight::Running(handle),
            Ok(Ok(Ok(files))) => Inflight::Done(files),
            // Refused or unreachable at once: the job decides on the error (a retry posts the
            // same file names, which the plugin reuses).
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(e)) => return Err(ProviderError::Failed(format!("ComfyUI-Connect run task: {e}"))),
        };
        self.inflight.lock().unwrap_or_else(|e| e.into_inner()).insert(request_id.clone(), run);
        Ok(Submission { request_id, data: json!({"workflow": workflow, "files": names}) })
    }

    async fn is_known(&self, request_id: &str, _data: &Value) -> Result<bool, ProviderError> {
        if self.inflight.lock().unwrap_or_else(|e| e.into_inner()).contains_key(request_id) {
            return Ok(true);
        }
        let stem = file_stem(request_id);
        Ok(self.find_in_history(&stem).await?.is_some() || self.find_in_queue(&stem).await?.is_some())
    }

    async fn wait(&self, sub: &Submission, progress: ProgressFn<'_>) -> Result<Vec<GeneratedFile>, ProviderError> {
        let answered = match self.take_inflight(&sub.request_id) {
            Some(Inflight::Done(files)) if !files.is_empty() => return Ok(files),
            Some(Inflight::Done(_)) => true,
            Some(Inflight::Running(handle)) => {
                progress(ProviderProgress { running: true, ..Default::default() });
                match handle.await {
                    Ok(Ok(files)) if !files.is_empty() => {
                        progress(ProviderProgress { fraction: Some(1.0), running: true, ..Default::default() });
                        return Ok(files);
                    }
                    Ok(Ok(_)) => true,
                    // The connection broke; the run itself may go on in ComfyUI.
                    Ok(Err(ProviderError::Transient(m))) => {
                        tracing::warn!(provider = %self.id, "ComfyUI-Connect run request failed, watching /history: {m}");
                        false
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(e) => return Err(ProviderError::Failed(format!("ComfyUI-Connect run task: {e}"))),
                }
            }
            // Submitted by an earlier process (or found by `is_known`): never posted again.
            None => false,
        };
        self.via_history(&sub.request_id, answered, progress).await
    }

    async fn cancel(&self, sub: &Submission) -> Result<(), ProviderError> {
        if let Some(Inflight::Running(h)) = self.take_inflight(&sub.request_id) {
            h.abort();
        }
        let Some((prompt_id, _)) = self.find_in_queue(&file_stem(&sub.request_id)).await? else {
            return Ok(());
        };
        // Delete only removes pending items; interrupt with our id only stops it if running.
        self.comfy.post_ok("/queue", &json!({"delete": [prompt_id]})).await?;
        self.comfy.post_ok("/interrupt", &json!({"prompt_id": prompt_id})).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Format, Task};
    use crate::providers::{InputImage, SizeParam, VideoParams};

    fn req() -> GenerateRequest {
        GenerateRequest {
            model_id: "wan".into(),
            task: Task::ImageToVideo,
            endpoint: "wan-i2v".into(),
            workflow: None,
            prompt: "waves".into(),
            negative: None,
            format: Format::Square,
            width: 833,
            height: 481,
            aspect_ratio: None,
            seed: 9,
            size_param: SizeParam::None,
            extra: Map::new(),
            input_images: vec![InputImage { bytes: b"\x89PNG\r\n\x1a\nxx".to_vec(), mime: "image/png".into() }],
            image_fields: vec![],
            video: Some(VideoParams { duration_secs: 5, fps: 16 }),
        }
    }

    #[test]
    fn payload_goes_to_declared_tags_only() {
        let tagged = json!({
            "image": {"image": "str", "upload": "str"},
            "prompt": {"text": "str", "clip": "list"},
            "frames": {"length": "int"},
            "fps": {"fps": "float"},
            "video": {"width": "int", "height": "int"},
            "sampler": {"steps": "int", "cfg": "float"},
        });
        let mut r = req();
        r.extra.insert("sampler".into(), json!({"steps": 4}));
        r.extra.insert("duration".into(), json!(5));
        r.extra.insert("quality".into(), json!(832));
        let (p, names) = build_payload(&r, "R", tagged.as_object().expect("obj")).expect("payload");
        assert_eq!(names, ["mediabot_R_0.png"]);
        assert_eq!(
            p["image"]["image"],
            json!({"type": "file", "content": "iVBORw0KGgp4eA==", "name": "mediabot_R_0.png"})
        );
        assert_eq!(p["prompt"], json!({"text": "waves"}), "never into a link input");
        assert_eq!(p["frames"], json!({"length": 80}));
        assert_eq!(p["fps"], json!({"fps": 16}));
        assert_eq!(p["sampler"], json!({"steps": 4}));
        let tags: Vec<&String> = p.keys().collect();
        assert_eq!(tags, ["fps", "frames", "image", "prompt", "sampler"], "undeclared tags are left out");

        let (p, _) = build_payload(
            &r,
            "R",
            json!({"image": {"image": "str"}, "width": {"width": "int"}, "height": {"value": "int"}})
                .as_object()
                .expect("obj"),
        )
        .expect("payload");
        assert_eq!((&p["width"]["width"], &p["height"]["value"]), (&json!(832), &json!(480)), "even sizes");

        let e = build_payload(&r, "R", &Map::new()).expect_err("no $image");
        assert!(matches!(e, ProviderError::Misconfigured(ref m) if m.contains("$image")), "{e:?}");
        r.image_fields = vec!["photo".into()];
        let (p, _) = build_payload(&r, "R", json!({"photo": {"file": "str"}}).as_object().expect("obj")).expect("ok");
        assert_eq!(p["photo"]["file"]["name"], "mediabot_R_0.png", "the tag's only input");
    }

    #[test]
    fn results_and_errors() {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mp4 = [&[0, 0, 0, 0x20][..], b"ftypisom", &[0; 20]].concat();
        let v =
            json!({"status": "success", "workflow": "w", "result": {"output": b64(&mp4), "more": [b64(b"GIF89a..")]}});
        let files = parse_result(&v).expect("files");
        assert_eq!(files.len(), 2);
        let video = files.iter().find(|f| f.mime == "video/mp4").expect("the mp4");
        assert_eq!(video.bytes, mp4);
        assert!(files.iter().any(|f| f.mime == "image/gif"));
        assert!(parse_result(&json!({"status": "success", "result": {}})).expect("ok").is_empty());
        assert!(matches!(parse_result(&json!({"result": {"o": "***"}})), Err(ProviderError::Failed(_))));
        assert!(matches!(
            connect_error(500, "500 Internal Server Error\n\nServer got itself in trouble", "w"),
            ProviderError::Misconfigured(m) if m.contains("workflow w")
        ));
        assert!(matches!(connect_error(502, "bad gateway", "w"), ProviderError::Transient(_)));
        assert!(matches!(connect_error(500, r#"{"error": "x"}"#, "w"), ProviderError::Transient(_)));
        assert!(mentions(&json!({"1": {"inputs": {"image": "mediabot_R_0.png"}}}), "mediabot_R_"));
        assert!(!mentions(&json!({"1": {"inputs": {"image": "mediabot_S_0.png"}}}), "mediabot_R_"));
    }
}
