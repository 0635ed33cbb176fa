//! A fake ComfyUI server (protocols.md §3), answering in the exact shapes of the recorded
//! ComfyUI 0.3.64 session (`testdata/comfyui/recorded-0.3.64.json`).
//!
//! Routes (also under `/api/…`, like the real server):
//! - `POST /prompt` — validates like ComfyUI for the cases recorded: no `prompt` (`no_prompt`),
//!   a node without `class_type`, a class named `NoSuch…` (`invalid_prompt`), no `Save*`/
//!   `Preview*` node (`prompt_no_outputs`), `ImageScaleBy` with a bad `upscale_method` or
//!   `scale_by` > 8 (the recorded `bad_input.json` answer), `LoadImage` of a file that was not
//!   uploaded. Honours a client-chosen `prompt_id`; answers `{prompt_id, number, node_errors}`.
//! - `GET /ws?clientId=` — status frame with `sid` on connect; the prompt's frames go to the
//!   socket whose clientId matches the prompt's `client_id` (frames for a client that is not
//!   connected are dropped, as on the real server). `feature_flags` is answered.
//! - `GET /history/{id}` — `{}` until finished, then the recorded entry shape.
//! - `GET /view?filename&subfolder&type` — the saved PNG (a real gradient, sized from the
//!   graph's first `width`/`height` inputs, else 512×512, carrying the graph in a `prompt`
//!   tEXt chunk as SaveImage writes it); 404 when missing.
//! - `POST /upload/image` — multipart `image` (+ `overwrite`, `subfolder`, `type`) →
//!   `{name, subfolder, type}`.
//! - `GET /queue`, `POST /queue {"delete": [..]} | {"clear": true}`, `POST /interrupt`,
//!   `GET /prompt`, `GET /system_stats`.
//! - `GET /object_info`, `GET /object_info/{class}` — node definitions in the recorded shape:
//!   the core weight-free nodes of protocols.md §3.3 and those the recorded workflows use
//!   (the video nodes copied from `recorded-video-0.3.64.json`); `LoadImage` lists the
//!   uploaded files; an unknown class answers `{}`.
//!
//! Video output nodes replay `recorded-video-0.3.64.json`: `SaveVideo`, `SaveAnimatedWEBP`,
//! `SaveAnimatedPNG` and `SaveWEBM` save the recorded file (mp4 / animated WebP / APNG / WebM
//! bytes as the real server wrote them) and report it under `images` with `animated: [true]`;
//! VideoHelperSuite's `VHS_VideoCombine` saves the recorded mp4 and reports it under `gifs`.
//! `/view` answers with the Content-Type ComfyUI guesses from the extension. SaveVideo fails
//! at run time like libx264 when the graph's size is odd (the recorded `execution_error`);
//! graphs with a video node send no `progress` frames (none were recorded). With
//! [`FakeComfy::set_caching`] on, a graph run before successfully is answered from the cache
//! as recorded: `execution_cached` lists every node, `executed` comes at once with the same
//! file names.
//!
//! Prompts run one at a time in a background executor: `run_delay` after submit (default
//! 100 ms, so a client can connect its socket), then node by node with `progress` steps on the
//! last non-output node. Frame order per prompt, as recorded: `status`×2 (at submit),
//! `execution_start`, `execution_cached`, per node `progress_state` + `executing`
//! (+ `progress`…, + `executed` for output nodes), `execution_success`, `status`,
//! `executing {node: null}`.

use super::{Server, now_ms};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};

/// How the next prompts end. Chosen at submit: a queued one-shot ([`FakeComfy::push_scenario`]),
/// else `RuntimeError` for a graph shaped like `runtime_error.json` (`ImageToMask` with channel
/// `alpha`), else the default ([`FakeComfy::set_scenario`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComfyScenario {
    /// Runs every node and saves a PNG per `SaveImage` node.
    Success,
    /// Fails at the `ImageToMask` node (else the second node) with the recorded `execution_error`
    /// (IndexError "index 3 is out of bounds for dimension 3 with size 3").
    RuntimeError,
}

/// A recorded `POST /prompt` that was accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ComfySubmit {
    pub prompt_id: String,
    pub client_id: Option<String>,
    /// The graph as received (placeholders already filled by the client).
    pub graph: Value,
}

/// A recorded `POST /upload/image`.
#[derive(Debug, Clone, PartialEq)]
pub struct ComfyUpload {
    /// The name answered (use it in `LoadImage`).
    pub name: String,
    pub bytes: Vec<u8>,
    pub overwrite: bool,
}

#[derive(Debug, Clone)]
struct Prompt {
    number: u64,
    id: String,
    graph: Value,
    client_id: Option<String>,
    scenario: ComfyScenario,
    outputs: Vec<String>,
    interrupted: bool,
}

#[derive(Debug)]
struct ComfyState {
    next_number: u64,
    pending: VecDeque<Prompt>,
    running: Option<Prompt>,
    history: HashMap<String, Value>,
    clients: HashMap<String, (u64, mpsc::UnboundedSender<String>)>,
    next_conn: u64,
    /// (type, subfolder, filename) → bytes.
    files: HashMap<(String, String, String), Vec<u8>>,
    counters: HashMap<(String, String), u32>,
    default: ComfyScenario,
    queued: VecDeque<ComfyScenario>,
    ws_enabled: bool,
    held: bool,
    run_delay: Duration,
    step_delay: Duration,
    steps: u32,
    submits: Vec<ComfySubmit>,
    uploads: Vec<ComfyUpload>,
    deletes: Vec<String>,
    interrupts: Vec<Option<String>>,
    ws_connects: Vec<String>,
    history_polls: usize,
    /// Prompt ids asked for in `GET /history/{id}`, in order.
    history_ids: Vec<String>,
    view_fetches: usize,
    /// `GET /system_stats` requests (answered or refused).
    stats_probes: usize,
    /// Every request answers 500 (a crashed or wedged server behind a proxy).
    down: bool,
    /// Re-runs of a finished graph answer from the cache (see the module docs).
    caching: bool,
    /// Graph (as JSON text) → outputs of its successful run.
    cache: HashMap<String, serde_json::Map<String, Value>>,
}

struct Shared {
    state: Mutex<ComfyState>,
    wake: Notify,
}

impl Shared {
    fn st(&self) -> MutexGuard<'_, ComfyState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a frame to one client, if connected.
    fn send_to(&self, client: Option<&str>, frame: Value) {
        let st = self.st();
        if let Some((_, tx)) = client.and_then(|c| st.clients.get(c)) {
            let _ = tx.send(frame.to_string());
        }
    }

    fn broadcast(&self, frame: Value) {
        let text = frame.to_string();
        for (_, tx) in self.st().clients.values() {
            let _ = tx.send(text.clone());
        }
    }
}

type Sh = Arc<Shared>;

/// A fake ComfyUI on `127.0.0.1:<random port>`; stops (server and executor) when dropped.
pub struct FakeComfy {
    server: Server,
    shared: Sh,
    executor: tokio::task::JoinHandle<()>,
}

impl Drop for FakeComfy {
    fn drop(&mut self) {
        self.executor.abort();
    }
}

impl FakeComfy {
    /// Starts the server and its executor ([`ComfyScenario::Success`], WebSocket on, 3 progress
    /// steps of 20 ms, 100 ms run delay).
    pub async fn start() -> FakeComfy {
        let shared = Arc::new(Shared {
            state: Mutex::new(ComfyState {
                next_number: 0,
                pending: VecDeque::new(),
                running: None,
                history: HashMap::new(),
                clients: HashMap::new(),
                next_conn: 0,
                files: HashMap::new(),
                counters: HashMap::new(),
                default: ComfyScenario::Success,
                queued: VecDeque::new(),
                ws_enabled: true,
                held: false,
                run_delay: Duration::from_millis(100),
                step_delay: Duration::from_millis(20),
                steps: 3,
                submits: Vec::new(),
                uploads: Vec::new(),
                deletes: Vec::new(),
                interrupts: Vec::new(),
                ws_connects: Vec::new(),
                history_polls: 0,
                history_ids: Vec::new(),
                view_fetches: 0,
                stats_probes: 0,
                down: false,
                caching: false,
                cache: HashMap::new(),
            }),
            wake: Notify::new(),
        });
        let routes = Router::new()
            .route("/prompt", post(post_prompt).get(get_prompt))
            .route("/ws", get(ws))
            .route("/history/{id}", get(history))
            .route("/view", get(view))
            .route("/upload/image", post(upload))
            .route("/queue", get(get_queue).post(post_queue))
            .route("/interrupt", post(interrupt))
            .route("/system_stats", get(system_stats))
            .route("/object_info", get(all_object_info))
            .route("/object_info/{class}", get(one_object_info));
        let router = routes
            .clone()
            .nest("/api", routes)
            .with_state(shared.clone())
            // Like the real services, accept request bodies of several MB (data URIs, uploads).
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
            .layer(axum::middleware::from_fn_with_state(shared.clone(), refuse_when_down));
        let server = Server::start(router).await;
        let executor = tokio::spawn(executor(shared.clone()));
        FakeComfy { server, shared, executor }
    }

    /// `http://127.0.0.1:<port>`: use as the provider's `base_url`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    fn st(&self) -> MutexGuard<'_, ComfyState> {
        self.shared.st()
    }

    /// Scenario for the next single prompt (FIFO).
    pub fn push_scenario(&self, s: ComfyScenario) {
        self.st().queued.push_back(s);
    }

    /// `false` refuses the WebSocket upgrade (403), so clients must poll `/history`.
    pub fn set_websocket(&self, enabled: bool) {
        self.st().ws_enabled = enabled;
    }

    /// Keeps the running prompt at its first node (listed in `queue_running`, `/history` `{}`)
    /// until [`Self::release`]; later prompts wait behind it.
    pub fn hold(&self) {
        self.st().held = true;
    }

    pub fn release(&self) {
        self.st().held = false;
    }

    /// Time between submit and the start of execution.
    pub fn set_run_delay(&self, d: Duration) {
        self.st().run_delay = d;
    }

    /// Turns ComfyUI's output cache on: an identical graph that ran successfully before is
    /// answered from it, as in the recorded `video_webm (cached rerun)` session.
    pub fn set_caching(&self, on: bool) {
        self.st().caching = on;
    }

    /// `progress` frames sent for the last non-output node, and the pause before each.
    pub fn set_steps(&self, steps: u32, step_delay: Duration) {
        let mut st = self.st();
        st.steps = steps;
        st.step_delay = step_delay;
    }

    /// Simulates a ComfyUI restart: history, queue and the running prompt are forgotten (the
    /// executor drops it silently), sockets stay.
    pub fn forget_all(&self) {
        let mut st = self.st();
        st.cache.clear();
        st.history.clear();
        st.pending.clear();
        st.running = None;
    }

    /// `true`: every route (`/system_stats` too) answers 500 until set back; nothing is
    /// forgotten. See [`Self::kill`] for a crash.
    pub fn set_down(&self, down: bool) {
        self.st().down = down;
    }

    /// Simulates the server dying with work in flight: down ([`Self::set_down`]), history,
    /// queue and the running prompt forgotten ([`Self::forget_all`]), WebSockets closed.
    pub fn kill(&self) {
        self.forget_all();
        let mut st = self.st();
        st.down = true;
        st.clients.clear();
    }

    /// Prompt ids asked for with `GET /history/{id}`, in order.
    pub fn history_ids(&self) -> Vec<String> {
        self.st().history_ids.clone()
    }

    /// `GET /system_stats` requests received (also while down).
    pub fn stats_probes(&self) -> usize {
        self.st().stats_probes
    }

    /// Accepted prompts, in order.
    pub fn submits(&self) -> Vec<ComfySubmit> {
        self.st().submits.clone()
    }

    pub fn uploads(&self) -> Vec<ComfyUpload> {
        self.st().uploads.clone()
    }

    /// Prompt ids named in `POST /queue {"delete": [..]}`, in order.
    pub fn deletes(&self) -> Vec<String> {
        self.st().deletes.clone()
    }

    /// `POST /interrupt` calls: the `prompt_id` given, or `None` for a global interrupt.
    pub fn interrupts(&self) -> Vec<Option<String>> {
        self.st().interrupts.clone()
    }

    /// clientIds of accepted WebSocket connections, in order.
    pub fn ws_connects(&self) -> Vec<String> {
        self.st().ws_connects.clone()
    }

    /// `GET /history/{id}` requests served.
    pub fn history_polls(&self) -> usize {
        self.st().history_polls
    }

    /// True once the prompt has a history entry (success or error).
    pub fn is_finished(&self, prompt_id: &str) -> bool {
        self.st().history.contains_key(prompt_id)
    }

    /// True while the prompt is being executed (held or not).
    pub fn is_running(&self, prompt_id: &str) -> bool {
        self.st().running.as_ref().is_some_and(|p| p.id == prompt_id)
    }

    /// A saved output file (`type` = output), as `/view` serves it.
    pub fn output_file(&self, subfolder: &str, filename: &str) -> Option<Vec<u8>> {
        self.st().files.get(&("output".into(), subfolder.into(), filename.into())).cloned()
    }
}

/// While [`FakeComfy::set_down`]: 500 for every request, as a proxy answers for a dead server.
async fn refuse_when_down(State(sh): State<Sh>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let down = {
        let mut st = sh.st();
        if req.uri().path().ends_with("/system_stats") {
            st.stats_probes += 1;
        }
        st.down
    };
    if down {
        return (StatusCode::INTERNAL_SERVER_ERROR, "500: Internal Server Error").into_response();
    }
    next.run(req).await
}

fn json_response(status: StatusCode, v: Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json; charset=utf-8")], v.to_string()).into_response()
}

fn rejection(kind: &str, message: &str, details: &str, node_errors: Value) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"error": {"type": kind, "message": message, "details": details, "extra_info": {}}, "node_errors": node_errors}),
    )
}

fn sorted_nodes(graph: &Value) -> Vec<(String, Value)> {
    let mut nodes: Vec<(String, Value)> =
        graph.as_object().map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
    nodes.sort_by_key(|(id, _)| (id.parse::<u64>().unwrap_or(u64::MAX), id.clone()));
    nodes
}

fn class_of(node: &Value) -> &str {
    node.get("class_type").and_then(Value::as_str).unwrap_or_default()
}

fn is_output_class(class: &str) -> bool {
    class.starts_with("Save") || class.starts_with("Preview") || class == VHS_COMBINE
}

/// VideoHelperSuite's video output node (reports under `gifs`).
const VHS_COMBINE: &str = "VHS_VideoCombine";

/// The recorded file a video output node saves: (recorded session, extension).
fn video_output(class: &str) -> Option<(&'static str, &'static str)> {
    Some(match class {
        "SaveVideo" | VHS_COMBINE => ("video_from_image", "mp4"),
        "SaveAnimatedWEBP" => ("video_animated_webp", "webp"),
        "SaveAnimatedPNG" => ("video_animated_png", "png"),
        "SaveWEBM" => ("video_webm", "webm"),
        _ => return None,
    })
}

/// The bytes `GET /view ({session})` answered in `recorded-video-0.3.64.json`.
pub fn recorded_video_bytes(session: &str) -> Vec<u8> {
    use base64::Engine as _;
    static FILES: std::sync::OnceLock<HashMap<String, Vec<u8>>> = std::sync::OnceLock::new();
    let files = FILES.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/comfyui/recorded-video-0.3.64.json");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("video recording")).expect("json");
        v["transcript"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let session = e["label"].as_str()?.strip_prefix("GET /view (")?.strip_suffix(')')?;
                let b64 = e["response"]["body_base64"].as_str()?;
                let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
                Some((session.to_string(), bytes))
            })
            .collect()
    });
    files.get(session).cloned().unwrap_or_else(|| panic!("no recorded file for {session}"))
}

/// Content-Type as ComfyUI's `/view` guesses it from the extension (`mimetypes`).
fn content_type(filename: &str) -> &'static str {
    match filename.rsplit_once('.').map(|(_, e)| e) {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("mp4") => "video/mp4",
        Some("webm") => "video/webm",
        _ => "application/octet-stream",
    }
}

/// ComfyUI's checks for the cases in the recording; `Err` is the 400 answer.
fn validate(st: &ComfyState, graph: &Value) -> Result<Vec<String>, Box<Response>> {
    let nodes = sorted_nodes(graph);
    for (id, n) in &nodes {
        if n.get("class_type").is_none() {
            return Err(Box::new(rejection(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                &format!("Node ID '#{id}'"),
                json!({}),
            )));
        }
        let class = class_of(n);
        if class.starts_with("NoSuch") {
            return Err(Box::new(rejection(
                "invalid_prompt",
                &format!("Cannot execute because node {class} does not exist."),
                &format!("Node ID '#{id}'"),
                json!({}),
            )));
        }
    }
    let outputs: Vec<String> =
        nodes.iter().filter(|(_, n)| is_output_class(class_of(n))).map(|(id, _)| id.clone()).collect();
    if outputs.is_empty() {
        return Err(Box::new(rejection("prompt_no_outputs", "Prompt has no outputs", "", json!({}))));
    }
    let mut node_errors = serde_json::Map::new();
    for (id, n) in &nodes {
        let inputs = &n["inputs"];
        let mut errors = Vec::new();
        match class_of(n) {
            "ImageScaleBy" => {
                const METHODS: [&str; 5] = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"];
                if let Some(s) = inputs["scale_by"].as_f64().filter(|s| *s > 8.0) {
                    errors.push(json!({
                        "type": "value_bigger_than_max",
                        "message": "Value 100.0 bigger than max of 8.0".replace("100.0", &format!("{s:?}")),
                        "details": "scale_by",
                        "extra_info": {"input_name": "scale_by",
                            "input_config": ["FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}],
                            "received_value": s}
                    }));
                }
                if let Some(m) = inputs["upscale_method"].as_str().filter(|m| !METHODS.contains(m)) {
                    errors.push(json!({
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": format!("upscale_method: '{m}' not in {}", "['nearest-exact', 'bilinear', 'area', 'bicubic', 'lanczos']"),
                        "extra_info": {"input_name": "upscale_method", "input_config": [METHODS, {}], "received_value": m}
                    }));
                }
            }
            "LoadImage" => {
                let name = inputs["image"].as_str().unwrap_or_default();
                let (sub, file) = name.rsplit_once('/').unwrap_or(("", name));
                if !st.files.contains_key(&("input".into(), sub.into(), file.into())) {
                    errors.push(json!({
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": format!("image - Invalid image file: {name}"),
                        "extra_info": {"input_name": "image"}
                    }));
                }
            }
            _ => {}
        }
        if !errors.is_empty() {
            node_errors
                .insert(id.clone(), json!({"errors": errors, "dependent_outputs": outputs, "class_type": class_of(n)}));
        }
    }
    if !node_errors.is_empty() {
        return Err(Box::new(rejection(
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation",
            "",
            Value::Object(node_errors),
        )));
    }
    Ok(outputs)
}

fn queue_remaining(st: &ComfyState) -> usize {
    st.pending.len() + usize::from(st.running.is_some())
}

fn status_frame(remaining: usize) -> Value {
    json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": remaining}}}})
}

async fn post_prompt(State(sh): State<Sh>, body: axum::body::Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return rejection("invalid_prompt", "Invalid JSON", "", json!({}));
    };
    let Some(graph) = body.get("prompt").filter(|g| g.is_object()).cloned() else {
        return rejection("no_prompt", "No prompt provided", "No prompt provided", json!({}));
    };
    let remaining = {
        let mut st = sh.st();
        let outputs = match validate(&st, &graph) {
            Ok(o) => o,
            Err(resp) => return *resp,
        };
        let id = body
            .get("prompt_id")
            .and_then(Value::as_str)
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
        let client_id = body.get("client_id").and_then(Value::as_str).map(str::to_string);
        let runtime_error_shape =
            sorted_nodes(&graph).iter().any(|(_, n)| class_of(n) == "ImageToMask" && n["inputs"]["channel"] == "alpha");
        let scenario =
            st.queued.pop_front().unwrap_or(if runtime_error_shape { ComfyScenario::RuntimeError } else { st.default });
        let number = st.next_number;
        st.next_number += 1;
        st.submits.push(ComfySubmit { prompt_id: id.clone(), client_id: client_id.clone(), graph: graph.clone() });
        st.pending.push_back(Prompt {
            number,
            id: id.clone(),
            graph,
            client_id,
            scenario,
            outputs,
            interrupted: false,
        });
        (queue_remaining(&st), id, number)
    };
    let (remaining, id, number) = remaining;
    // Each queue change sends two identical status frames (seen on the real server).
    sh.broadcast(status_frame(remaining));
    sh.broadcast(status_frame(remaining));
    sh.wake.notify_one();
    json_response(StatusCode::OK, json!({"prompt_id": id, "number": number, "node_errors": {}}))
}

async fn get_prompt(State(sh): State<Sh>) -> Response {
    let n = queue_remaining(&sh.st());
    json_response(StatusCode::OK, json!({"exec_info": {"queue_remaining": n}}))
}

fn queue_item(p: &Prompt) -> Value {
    let extra = match &p.client_id {
        Some(c) => json!({"client_id": c}),
        None => json!({}),
    };
    json!([p.number, p.id, p.graph, extra, p.outputs])
}

async fn get_queue(State(sh): State<Sh>) -> Response {
    let st = sh.st();
    let running: Vec<Value> = st.running.iter().map(queue_item).collect();
    let pending: Vec<Value> = st.pending.iter().map(queue_item).collect();
    json_response(StatusCode::OK, json!({"queue_running": running, "queue_pending": pending}))
}

async fn post_queue(State(sh): State<Sh>, body: axum::body::Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut st = sh.st();
    if v["clear"] == true {
        st.pending.clear();
    }
    if let Some(ids) = v["delete"].as_array() {
        for id in ids.iter().filter_map(Value::as_str) {
            st.deletes.push(id.to_string());
            // Only pending prompts can be deleted; the running one needs /interrupt.
            st.pending.retain(|p| p.id != id);
        }
    }
    StatusCode::OK.into_response()
}

async fn interrupt(State(sh): State<Sh>, body: axum::body::Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let target = v.get("prompt_id").and_then(Value::as_str).map(str::to_string);
    let mut st = sh.st();
    st.interrupts.push(target.clone());
    if let Some(p) = st.running.as_mut() {
        if target.as_deref().is_none_or(|t| t == p.id) {
            p.interrupted = true;
        }
    }
    StatusCode::OK.into_response()
}

async fn history(State(sh): State<Sh>, Path(id): Path<String>) -> Response {
    let mut st = sh.st();
    st.history_polls += 1;
    st.history_ids.push(id.clone());
    let body = match st.history.get(&id) {
        Some(entry) => json!({ id: entry }),
        None => json!({}),
    };
    json_response(StatusCode::OK, body)
}

async fn view(State(sh): State<Sh>, Query(q): Query<HashMap<String, String>>) -> Response {
    let filename = q.get("filename").cloned().unwrap_or_default();
    let subfolder = q.get("subfolder").cloned().unwrap_or_default();
    let kind = q.get("type").cloned().unwrap_or_else(|| "output".into());
    if filename.is_empty() || filename.starts_with('/') || filename.contains("..") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    if subfolder.contains("..") || subfolder.starts_with('/') {
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut st = sh.st();
    st.view_fetches += 1;
    let ct = content_type(&filename);
    match st.files.get(&(kind, subfolder, filename)) {
        Some(bytes) => ([(header::CONTENT_TYPE, ct)], bytes.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn upload(State(sh): State<Sh>, mut form: Multipart) -> Response {
    let (mut file, mut overwrite, mut subfolder, mut kind) = (None, false, String::new(), "input".to_string());
    while let Ok(Some(field)) = form.next_field().await {
        match field.name().unwrap_or_default() {
            "image" => {
                let name = field.file_name().unwrap_or_default().to_string();
                let bytes = field.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                file = Some((name, bytes));
            }
            "overwrite" => overwrite = matches!(field.text().await.unwrap_or_default().as_str(), "true" | "1"),
            "subfolder" => subfolder = field.text().await.unwrap_or_default(),
            "type" => kind = field.text().await.unwrap_or_default(),
            _ => {}
        }
    }
    let Some((mut name, bytes)) = file.filter(|(n, _)| !n.is_empty()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut st = sh.st();
    if !overwrite {
        // Same bytes reuse the name; a clash with other bytes becomes "stem (1).ext".
        let (stem, ext) =
            name.rsplit_once('.').map_or((name.clone(), String::new()), |(s, e)| (s.into(), format!(".{e}")));
        let mut i = 1;
        while st.files.get(&(kind.clone(), subfolder.clone(), name.clone())).is_some_and(|b| *b != bytes) {
            name = format!("{stem} ({i}){ext}");
            i += 1;
        }
    }
    st.files.insert((kind.clone(), subfolder.clone(), name.clone()), bytes.clone());
    st.uploads.push(ComfyUpload { name: name.clone(), bytes, overwrite });
    json_response(StatusCode::OK, json!({"name": name, "subfolder": subfolder, "type": kind}))
}

async fn system_stats() -> Json<Value> {
    Json(json!({
        "system": {"os": "posix", "comfyui_version": "0.3.64", "python_version": "3.11.7", "pytorch_version": "2.9.0+cpu",
                   "embedded_python": false, "argv": ["main.py", "--cpu"], "ram_total": 1_u64 << 34, "ram_free": 1_u64 << 33},
        "devices": [{"name": "cpu", "type": "cpu", "index": null, "vram_total": 1_u64 << 34, "vram_free": 1_u64 << 33,
                     "torch_vram_total": 1_u64 << 34, "torch_vram_free": 1_u64 << 33}]
    }))
}

/// One `/object_info` entry in the server's shape.
struct NodeDef {
    class: &'static str,
    display: &'static str,
    category: &'static str,
    module: &'static str,
    required: Vec<(&'static str, Value)>,
    outputs: &'static [&'static str],
    /// Output nodes take the hidden `prompt` / `extra_pnginfo` inputs.
    output_node: bool,
}

impl NodeDef {
    fn json(&self) -> Value {
        let mut input = json!({"required": self.required.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<serde_json::Map<_, _>>()});
        let mut order = json!({"required": self.required.iter().map(|(k, _)| *k).collect::<Vec<_>>()});
        if self.output_node {
            input["hidden"] = json!({"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"});
            order["hidden"] = json!(["prompt", "extra_pnginfo"]);
        }
        json!({
            "input": input, "input_order": order,
            "output": self.outputs, "output_is_list": self.outputs.iter().map(|_| false).collect::<Vec<_>>(),
            "output_name": self.outputs, "name": self.class, "display_name": self.display, "description": "",
            "python_module": self.module, "category": self.category, "output_node": self.output_node,
        })
    }
}

/// The node definitions this fake serves: core weight-free nodes (protocols.md §3.3, ranges
/// as ComfyUI 0.3.64 declares them) and the recorded video nodes. `inputs` are the uploaded
/// files `LoadImage` offers.
fn node_defs(inputs: Vec<String>) -> serde_json::Map<String, Value> {
    const METHODS: [&str; 5] = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"];
    let image = || json!(["IMAGE"]);
    let int =
        |default: i64, min: i64, max: i64| json!(["INT", {"default": default, "min": min, "max": max, "step": 1}]);
    let float =
        |default: f64, min: f64, max: f64| json!(["FLOAT", {"default": default, "min": min, "max": max, "step": 0.01}]);
    let save = |class, display| NodeDef {
        class,
        display,
        category: "image",
        module: "nodes",
        required: vec![("images", image()), ("filename_prefix", json!(["STRING", {"default": "ComfyUI"}]))],
        outputs: &[],
        output_node: true,
    };
    let node = |class, display, category, module, required, outputs| NodeDef {
        class,
        display,
        category,
        module,
        required,
        outputs,
        output_node: false,
    };
    let defs = [
        node(
            "LoadImage",
            "Load Image",
            "image",
            "nodes",
            vec![("image", json!([inputs, {"image_upload": true}]))],
            &["IMAGE", "MASK"],
        ),
        save("SaveImage", "Save Image"),
        save("PreviewImage", "Preview Image"),
        NodeDef {
            required: vec![("images", image())],
            ..node(
                "SaveImageWebsocket",
                "SaveImageWebsocket",
                "api node/image",
                "custom_nodes.websocket_image_save",
                vec![],
                &[],
            )
        },
        node(
            "EmptyImage",
            "EmptyImage",
            "image",
            "nodes",
            vec![
                ("width", int(512, 1, 16384)),
                ("height", int(512, 1, 16384)),
                ("batch_size", int(1, 1, 4096)),
                ("color", json!(["INT", {"default": 0, "min": 0, "max": 16777215, "step": 1, "display": "color"}])),
            ],
            &["IMAGE"],
        ),
        node(
            "ImageScale",
            "Upscale Image",
            "image/upscaling",
            "nodes",
            vec![
                ("image", image()),
                ("upscale_method", json!([METHODS])),
                ("width", int(512, 0, 16384)),
                ("height", int(512, 0, 16384)),
                ("crop", json!([["disabled", "center"]])),
            ],
            &["IMAGE"],
        ),
        node(
            "ImageScaleBy",
            "Upscale Image By",
            "image/upscaling",
            "nodes",
            vec![("image", image()), ("upscale_method", json!([METHODS])), ("scale_by", float(1.0, 0.01, 8.0))],
            &["IMAGE"],
        ),
        node("ImageInvert", "Invert Image", "image", "nodes", vec![("image", image())], &["IMAGE"]),
        node(
            "ImageBlur",
            "Image Blur",
            "image/postprocessing",
            "comfy_extras.nodes_post_processing",
            vec![("image", image()), ("blur_radius", int(1, 1, 31)), ("sigma", float(1.0, 0.1, 10.0))],
            &["IMAGE"],
        ),
        node(
            "ImageToMask",
            "Convert Image to Mask",
            "mask",
            "comfy_extras.nodes_mask",
            vec![("image", image()), ("channel", json!([["red", "green", "blue", "alpha"]]))],
            &["MASK"],
        ),
        node(
            "MaskToImage",
            "Convert Mask to Image",
            "mask",
            "comfy_extras.nodes_mask",
            vec![("mask", json!(["MASK"]))],
            &["IMAGE"],
        ),
        node(
            "ImageBatch",
            "Batch Images",
            "image",
            "nodes",
            vec![("image1", image()), ("image2", image())],
            &["IMAGE"],
        ),
        node(
            "RepeatImageBatch",
            "RepeatImageBatch",
            "image/batch",
            "comfy_extras.nodes_images",
            vec![("image", image()), ("amount", int(1, 1, 4096))],
            &["IMAGE"],
        ),
        node(
            "ImageFromBatch",
            "ImageFromBatch",
            "image/batch",
            "comfy_extras.nodes_images",
            vec![("image", image()), ("batch_index", int(0, 0, 4095)), ("length", int(1, 1, 4096))],
            &["IMAGE"],
        ),
    ];
    let mut out: serde_json::Map<String, Value> = defs.iter().map(|d| (d.class.to_string(), d.json())).collect();
    out.extend(recorded_video_nodes());
    out
}

/// The video nodes exactly as the recorded server described them (`GET /object_info/{class}`
/// in `recorded-video-0.3.64.json`).
fn recorded_video_nodes() -> serde_json::Map<String, Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/comfyui/recorded-video-0.3.64.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("video recording")).expect("json");
    let mut out = serde_json::Map::new();
    for e in v["transcript"].as_array().into_iter().flatten() {
        if e["label"].as_str().is_some_and(|l| l.starts_with("GET /object_info/")) {
            out.extend(e["response"]["json"].as_object().cloned().unwrap_or_default());
        }
    }
    out
}

fn uploaded_inputs(st: &ComfyState) -> Vec<String> {
    let mut names: Vec<String> = st
        .files
        .keys()
        .filter(|(kind, _, _)| kind == "input")
        .map(|(_, sub, name)| if sub.is_empty() { name.clone() } else { format!("{sub}/{name}") })
        .collect();
    names.sort();
    names
}

async fn all_object_info(State(sh): State<Sh>) -> Response {
    let inputs = uploaded_inputs(&sh.st());
    json_response(StatusCode::OK, Value::Object(node_defs(inputs)))
}

async fn one_object_info(State(sh): State<Sh>, Path(class): Path<String>) -> Response {
    let inputs = uploaded_inputs(&sh.st());
    let body = match node_defs(inputs).remove(&class) {
        Some(def) => json!({ class: def }),
        None => json!({}),
    };
    json_response(StatusCode::OK, body)
}

async fn ws(State(sh): State<Sh>, Query(q): Query<HashMap<String, String>>, upgrade: WebSocketUpgrade) -> Response {
    if !sh.st().ws_enabled {
        return (StatusCode::FORBIDDEN, "websocket disabled").into_response();
    }
    let client_id = q.get("clientId").cloned().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    upgrade.on_upgrade(move |socket| serve_socket(sh, client_id, socket))
}

async fn serve_socket(sh: Sh, client_id: String, mut socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (conn, remaining) = {
        let mut st = sh.st();
        st.next_conn += 1;
        let conn = st.next_conn;
        // Reconnecting with the same clientId replaces the old socket (§3.2).
        st.clients.insert(client_id.clone(), (conn, tx));
        st.ws_connects.push(client_id.clone());
        (conn, queue_remaining(&st))
    };
    let hello =
        json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": remaining}}, "sid": client_id}});
    if socket.send(Message::Text(hello.to_string().into())).await.is_ok() {
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(text) => if socket.send(Message::Text(text.into())).await.is_err() { break },
                    None => break,
                },
                inc = socket.recv() => match inc {
                    Some(Ok(Message::Text(t))) => {
                        let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                        if v["type"] == "feature_flags" {
                            let ff = json!({"type": "feature_flags", "data": {"supports_preview_metadata": true, "max_upload_size": 104857600}});
                            if socket.send(Message::Text(ff.to_string().into())).await.is_err() { break }
                        }
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    let mut st = sh.st();
    if st.clients.get(&client_id).is_some_and(|(c, _)| *c == conn) {
        st.clients.remove(&client_id);
    }
}

/// The one-at-a-time execution loop (ComfyUI's prompt worker).
async fn executor(sh: Sh) {
    loop {
        let next = {
            let mut st = sh.st();
            if st.running.is_none() {
                let p = st.pending.pop_front();
                st.running = p.clone();
                p.map(|p| (p, st.run_delay))
            } else {
                None
            }
        };
        match next {
            Some((p, delay)) => {
                tokio::time::sleep(delay).await;
                execute(&sh, p).await;
            }
            None => {
                // notify_one stores a permit, so a submit between the check and here is not lost.
                let _ = tokio::time::timeout(Duration::from_millis(50), sh.wake.notified()).await;
            }
        }
    }
}

/// Where the running prompt stands, checked between steps.
enum Check {
    Go,
    Interrupted,
    /// Forgotten by `forget_all`: stop without a trace.
    Gone,
}

fn check(sh: &Shared, id: &str) -> Check {
    match sh.st().running.as_ref() {
        Some(p) if p.id == id && p.interrupted => Check::Interrupted,
        Some(p) if p.id == id => Check::Go,
        _ => Check::Gone,
    }
}

fn node_progress(prompt_id: &str, ids: &[String], current: usize, state: &str) -> Value {
    let nodes: BTreeMap<String, Value> = ids[..=current]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (value, st) =
                if i < current { (1.0, "finished") } else { (if state == "finished" { 1.0 } else { 0.0 }, state) };
            (
                id.clone(),
                json!({"value": value, "max": 1.0, "state": st, "node_id": id, "prompt_id": prompt_id,
                       "display_node_id": id, "parent_node_id": null, "real_node_id": id}),
            )
        })
        .collect();
    json!({"type": "progress_state", "data": {"prompt_id": prompt_id, "nodes": nodes}})
}

/// Image size for the outputs: the graph's first node with integer `width` and `height`.
fn output_size(graph: &Value) -> (u32, u32) {
    for (_, n) in sorted_nodes(graph) {
        if let (Some(w), Some(h)) = (n["inputs"]["width"].as_u64(), n["inputs"]["height"].as_u64()) {
            return (w.clamp(1, 2048) as u32, h.clamp(1, 2048) as u32);
        }
    }
    (512, 512)
}

async fn execute(sh: &Shared, p: Prompt) {
    let id = p.id.clone();
    let client = p.client_id.clone();
    let send = |frame: Value| sh.send_to(client.as_deref(), frame);
    let start_ts = now_ms();
    let nodes = sorted_nodes(&p.graph);
    let ids: Vec<String> = nodes.iter().map(|(i, _)| i.clone()).collect();
    let graph_key = p.graph.to_string();
    let cached = {
        let st = sh.st();
        st.caching.then(|| st.cache.get(&graph_key).cloned()).flatten()
    };
    let cached_ids: Vec<String> = if cached.is_some() { ids.clone() } else { vec![] };
    let mut messages = vec![
        json!(["execution_start", {"prompt_id": id, "timestamp": start_ts}]),
        json!(["execution_cached", {"nodes": cached_ids, "prompt_id": id, "timestamp": start_ts}]),
    ];
    send(json!({"type": "execution_start", "data": {"prompt_id": id, "timestamp": start_ts}}));
    send(json!({"type": "execution_cached", "data": {"nodes": cached_ids, "prompt_id": id, "timestamp": start_ts}}));
    if let Some(outputs) = cached {
        return finish_cached(sh, &p, outputs, messages);
    }
    let (w, h) = output_size(&p.graph);
    // libx264 refuses odd sizes when SaveVideo encodes (recorded `odd height` session).
    let odd_video =
        (w % 2 == 1 || h % 2 == 1).then(|| nodes.iter().position(|(_, n)| class_of(n) == "SaveVideo")).flatten();
    let fail_at = odd_video.or(match p.scenario {
        ComfyScenario::Success => None,
        ComfyScenario::RuntimeError => {
            nodes.iter().position(|(_, n)| class_of(n) == "ImageToMask").or(Some(1.min(nodes.len().saturating_sub(1))))
        }
    });
    let work_node = nodes.iter().rposition(|(_, n)| !is_output_class(class_of(n)));
    let has_video = nodes.iter().any(|(_, n)| video_output(class_of(n)).is_some());
    let (steps, step_delay) = {
        let st = sh.st();
        // The recorded video nodes send no progress frames.
        (if has_video { 0 } else { st.steps }, st.step_delay)
    };
    let mut outputs = serde_json::Map::new();
    let mut meta = serde_json::Map::new();
    for (i, (node_id, node)) in nodes.iter().enumerate() {
        send(node_progress(&id, &ids, i, "running"));
        send(json!({"type": "executing", "data": {"node": node_id, "display_node": node_id, "prompt_id": id}}));
        // Hold at the first node: the prompt is "running" and history stays `{}`.
        loop {
            let held = sh.st().held;
            match check(sh, &id) {
                Check::Gone => return,
                Check::Interrupted => {
                    return finish_interrupted(sh, &p, node_id, class_of(node), &ids[..i], messages);
                }
                Check::Go if held => tokio::time::sleep(Duration::from_millis(5)).await,
                Check::Go => break,
            }
        }
        if fail_at == Some(i) && class_of(node) == "SaveVideo" {
            let err = json!({
                "prompt_id": id, "node_id": node_id, "node_type": "SaveVideo", "executed": ids[..i],
                "exception_message": format!("[Errno 542398533] Generic error in an external library: 'avcodec_open2(\"libx264\", {{}})'; last error log: [libx264] {} not divisible by 2 ({w}x{h})\n", if h % 2 == 1 { "height" } else { "width" }),
                "exception_type": "av.error.ExternalError",
                "traceback": ["File \"<comfyui>/comfy_extras/nodes_video.py\", line 109, in execute  [source line elided]"],
                "current_inputs": {"video": ["<VideoFromComponents>"]}, "current_outputs": ids, "timestamp": now_ms(),
            });
            send(json!({"type": "execution_error", "data": err}));
            messages.push(json!(["execution_error", err]));
            return finish(sh, &p, "error", false, serde_json::Map::new(), serde_json::Map::new(), messages);
        }
        if fail_at == Some(i) {
            let err = json!({
                "prompt_id": id, "node_id": node_id, "node_type": class_of(node),
                "executed": ids[..i], "exception_message": "index 3 is out of bounds for dimension 3 with size 3\n",
                "exception_type": "IndexError",
                "traceback": [
                    "File \"<comfyui>/execution.py\", line 496, in execute  [source line elided]",
                    "File \"<comfyui>/execution.py\", line 315, in get_output_data  [source line elided]",
                    "File \"<comfyui>/execution.py\", line 289, in _async_map_node_over_list  [source line elided]",
                    "File \"<comfyui>/execution.py\", line 277, in process_inputs  [source line elided]",
                    "File \"<comfyui>/comfy_extras/nodes_mask.py\", line 137, in image_to_mask  [source line elided]"
                ],
                "current_inputs": {"image": ["tensor([[[[0., 0., 0.]]]])"], "channel": ["alpha"]},
                "current_outputs": ids, "timestamp": now_ms(),
            });
            send(json!({"type": "execution_error", "data": err}));
            messages.push(json!(["execution_error", err]));
            return finish(sh, &p, "error", false, serde_json::Map::new(), serde_json::Map::new(), messages);
        }
        if work_node == Some(i) {
            for step in 1..=steps {
                tokio::time::sleep(step_delay).await;
                match check(sh, &id) {
                    Check::Gone => return,
                    Check::Interrupted => {
                        return finish_interrupted(sh, &p, node_id, class_of(node), &ids[..i], messages);
                    }
                    Check::Go => {}
                }
                send(
                    json!({"type": "progress", "data": {"value": step, "max": steps, "prompt_id": id, "node": node_id}}),
                );
            }
        }
        let class = class_of(node);
        if is_output_class(class) {
            let saves = class.starts_with("Save") || (class == VHS_COMBINE && node["inputs"]["save_output"] != false);
            let kind = if saves { "output" } else { "temp" };
            let prefix = node["inputs"]["filename_prefix"].as_str().unwrap_or("ComfyUI").to_string();
            let (subfolder, base) =
                prefix.rsplit_once('/').map_or((String::new(), prefix.clone()), |(s, b)| (s.into(), b.into()));
            let (bytes, ext) = match video_output(class) {
                Some((session, ext)) => (recorded_video_bytes(session), ext),
                None => {
                    // SaveImage writes the graph into every PNG (seen on the real server).
                    let text = [b"prompt\0".as_slice(), p.graph.to_string().as_bytes()].concat();
                    (super::png_with_chunk(&super::gradient_png(w, h), b"tEXt", &text), "png")
                }
            };
            let filename = {
                let mut st = sh.st();
                let n = st.counters.entry((subfolder.clone(), base.clone())).or_insert(0);
                *n += 1;
                let filename = format!("{base}_{:05}_.{ext}", *n);
                st.files.insert((kind.into(), subfolder.clone(), filename.clone()), bytes);
                filename
            };
            let file = json!({"filename": filename, "subfolder": subfolder, "type": kind});
            let images = match video_output(class) {
                Some(_) if class == VHS_COMBINE => json!({"gifs": [{
                    "filename": filename, "subfolder": subfolder, "type": kind, "format": "video/h264-mp4",
                    "frame_rate": node["inputs"]["frame_rate"].as_f64().unwrap_or(8.0),
                    "workflow": filename.replace(".mp4", ".png"),
                    "fullpath": format!("<run-dir>/{kind}/{subfolder}/{filename}"),
                }]}),
                Some(_) => json!({"images": [file], "animated": [true]}),
                None => json!({"images": [file]}),
            };
            send(
                json!({"type": "executed", "data": {"node": node_id, "display_node": node_id, "output": images, "prompt_id": id}}),
            );
            outputs.insert(node_id.clone(), images);
            meta.insert(
                node_id.clone(),
                json!({"node_id": node_id, "display_node": node_id, "parent_node": null, "real_node_id": node_id}),
            );
        }
        send(node_progress(&id, &ids, i, "finished"));
    }
    let ts = now_ms();
    send(json!({"type": "execution_success", "data": {"prompt_id": id, "timestamp": ts}}));
    messages.push(json!(["execution_success", {"prompt_id": id, "timestamp": ts}]));
    {
        let mut st = sh.st();
        if st.caching {
            st.cache.insert(graph_key, outputs.clone());
        }
    }
    finish(sh, &p, "success", true, outputs, meta, messages);
}

/// A fully cached run, frames as recorded: `executed` per output node with the earlier
/// outputs, `progress_state` finished, `execution_success`.
fn finish_cached(sh: &Shared, p: &Prompt, outputs: serde_json::Map<String, Value>, mut messages: Vec<Value>) {
    let mut meta = serde_json::Map::new();
    for (node_id, output) in &outputs {
        sh.send_to(
            p.client_id.as_deref(),
            json!({"type": "executed", "data": {"node": node_id, "display_node": node_id, "output": output, "prompt_id": p.id}}),
        );
        meta.insert(
            node_id.clone(),
            json!({"node_id": node_id, "display_node": node_id, "parent_node": null, "real_node_id": node_id}),
        );
    }
    let ids: Vec<String> = outputs.keys().cloned().collect();
    if !ids.is_empty() {
        sh.send_to(p.client_id.as_deref(), node_progress(&p.id, &ids, ids.len() - 1, "finished"));
    }
    let ts = now_ms();
    sh.send_to(
        p.client_id.as_deref(),
        json!({"type": "execution_success", "data": {"prompt_id": p.id, "timestamp": ts}}),
    );
    messages.push(json!(["execution_success", {"prompt_id": p.id, "timestamp": ts}]));
    finish(sh, p, "success", true, outputs, meta, messages);
}

fn finish_interrupted(
    sh: &Shared,
    p: &Prompt,
    node_id: &str,
    node_type: &str,
    executed: &[String],
    mut messages: Vec<Value>,
) {
    let data = json!({"prompt_id": p.id, "node_id": node_id, "node_type": node_type, "executed": executed, "timestamp": now_ms()});
    sh.send_to(p.client_id.as_deref(), json!({"type": "execution_interrupted", "data": data}));
    messages.push(json!(["execution_interrupted", data]));
    finish(sh, p, "error", false, serde_json::Map::new(), serde_json::Map::new(), messages);
}

/// Writes history and leaves the queue (one step, like ComfyUI's `task_done`), then sends
/// `status` and the final `executing {node: null}`.
fn finish(
    sh: &Shared,
    p: &Prompt,
    status: &str,
    completed: bool,
    outputs: serde_json::Map<String, Value>,
    meta: serde_json::Map<String, Value>,
    messages: Vec<Value>,
) {
    let remaining = {
        let mut st = sh.st();
        if st.running.as_ref().is_none_or(|r| r.id != p.id) {
            return; // forgotten meanwhile
        }
        let entry = json!({
            "prompt": queue_item(p),
            "outputs": outputs,
            "status": {"status_str": status, "completed": completed, "messages": messages},
            "meta": meta,
        });
        st.history.insert(p.id.clone(), entry);
        st.running = None;
        queue_remaining(&st)
    };
    sh.broadcast(status_frame(remaining));
    sh.send_to(p.client_id.as_deref(), json!({"type": "executing", "data": {"node": null, "prompt_id": p.id}}));
    sh.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt as _;
    use std::collections::BTreeSet;

    fn recorded() -> Vec<Value> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/comfyui/recorded-0.3.64.json");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("recording")).expect("json");
        v["transcript"].as_array().expect("transcript").clone()
    }

    fn workflow(name: &str) -> Value {
        let path = format!("{}/../shared/testdata/comfyui/workflows/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).expect("workflow")).expect("json")
    }

    /// Keys of a JSON object (recursively for `data` and history entries), to compare shapes.
    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
    }

    async fn frames_until_done(
        ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    ) -> Vec<Value> {
        let mut out = Vec::new();
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                let v: Value = serde_json::from_str(t.as_str()).expect("json frame");
                let done = v["type"] == "executing" && v["data"]["node"].is_null();
                out.push(v);
                if done {
                    break;
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn fake_comfy_matches_recorded_shapes() {
        let t = recorded();
        let fake = FakeComfy::start().await;
        let http = reqwest::Client::new();
        let base = fake.base_url();
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("{}/ws?clientId=c1", base.replace("http", "ws")))
            .await
            .expect("ws");
        let hello = ws.next().await.expect("frame").expect("ok");
        let hello: Value = serde_json::from_str(hello.to_text().expect("text")).expect("json");
        assert_eq!(hello["data"]["sid"], "c1");

        // empty.json: success, same frame types (in order, ignoring progress_state) and key sets.
        let r: Value = http
            .post(format!("{base}/prompt"))
            .json(&json!({"prompt": workflow("empty.json"), "client_id": "c1", "prompt_id": "p-1"}))
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        assert_eq!(r["prompt_id"], "p-1");
        assert_eq!(keys(&r), keys(&t[20]["response"]["json"]));
        let got = frames_until_done(&mut ws).await;
        let rec: Vec<Value> = t[22]["ws"].as_array().expect("ws").iter().map(|f| f["text"].clone()).collect();
        let types = |fs: &[Value]| -> Vec<String> {
            fs.iter()
                .map(|f| f["type"].as_str().unwrap_or_default().to_string())
                .filter(|t| t != "progress_state")
                .collect()
        };
        let mut want = types(&rec);
        // The fake sends `progress` steps on the last non-output node; the recording had none.
        let got_types: Vec<String> = types(&got).into_iter().filter(|t| t != "progress").collect();
        want.retain(|t| t != "progress");
        assert_eq!(got_types, want);
        for f in &got {
            // `executing` with `node: null` has no `display_node`: compare like with like.
            let same =
                |r: &&Value| r["type"] == f["type"] && r["data"]["node"].is_null() == f["data"]["node"].is_null();
            if let Some(r) = rec.iter().find(same) {
                assert_eq!(keys(&f["data"]), keys(&r["data"]), "data keys of {}", f["type"]);
            }
        }
        let h: Value = http.get(format!("{base}/history/p-1")).send().await.expect("h").json().await.expect("json");
        let rec_h = &t[21]["response"]["json"]["daec7bc2-8df1-4c72-8792-0ca8810ec3f8"];
        assert_eq!(keys(&h["p-1"]), keys(rec_h));
        assert_eq!(keys(&h["p-1"]["status"]), keys(&rec_h["status"]));
        assert_eq!(h["p-1"]["outputs"]["2"]["images"][0]["filename"], "harness_empty_00001_.png");
        let png = http
            .get(format!("{base}/view?filename=harness_empty_00001_.png&subfolder=&type=output"))
            .send()
            .await
            .expect("view")
            .bytes()
            .await
            .expect("bytes");
        let img = image::load_from_memory(&png).expect("png");
        assert_eq!((img.width(), img.height()), (320, 240));

        // runtime_error.json: recorded error frame keys and history status.
        http.post(format!("{base}/prompt"))
            .json(&json!({"prompt": workflow("runtime_error.json"), "client_id": "c1", "prompt_id": "p-2"}))
            .send()
            .await
            .expect("post");
        let got = frames_until_done(&mut ws).await;
        let err = got.iter().find(|f| f["type"] == "execution_error").expect("execution_error");
        let rec_err =
            t[33]["ws"].as_array().expect("ws").iter().find(|f| f["text"]["type"] == "execution_error").expect("rec");
        assert_eq!(keys(&err["data"]), keys(&rec_err["text"]["data"]));
        assert_eq!(err["data"]["node_type"], "ImageToMask");
        let h: Value = http.get(format!("{base}/history/p-2")).send().await.expect("h").json().await.expect("json");
        assert_eq!(h["p-2"]["status"]["status_str"], "error");

        // bad_input.json: the recorded 400, verbatim.
        let resp = http
            .post(format!("{base}/prompt"))
            .json(&json!({"prompt": workflow("bad_input.json")}))
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body, t[34]["response"]["json"]);
        // Missing class_type, unknown class, no outputs, no prompt: recorded answers.
        for (i, prompt) in [
            (37, json!({"prompt": {"1": {"inputs": {}}}})),
            (36, json!({"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}})),
            (
                38,
                json!({"prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}}}),
            ),
            (41, json!({"client_id": "c1"})),
        ] {
            let body: Value = http
                .post(format!("{base}/prompt"))
                .json(&prompt)
                .send()
                .await
                .expect("post")
                .json()
                .await
                .expect("json");
            assert_eq!(body, t[i]["response"]["json"], "{}", t[i]["label"]);
        }
        let unknown: Value =
            http.get(format!("{base}/history/nope")).send().await.expect("h").json().await.expect("json");
        assert_eq!(unknown, json!({}));
    }

    #[tokio::test]
    async fn fake_comfy_object_info_has_the_recorded_shape() {
        let t = recorded();
        let fake = FakeComfy::start().await;
        let http = reqwest::Client::new();
        let base = fake.base_url();
        let one: Value =
            http.get(format!("{base}/object_info/ImageInvert")).send().await.expect("get").json().await.expect("json");
        assert_eq!(one, exchange_json(&t, "GET /object_info/ImageInvert"), "our table writes what the server wrote");
        let all: Value =
            http.get(format!("{base}/api/object_info")).send().await.expect("get").json().await.expect("json");
        for (class, def) in all.as_object().expect("object") {
            assert!(keys(&one["ImageInvert"]).is_subset(&keys(def)), "{class}: {def}");
            assert_eq!(def["name"], json!(class));
        }
        // Every node of the recorded workflows is known, and LoadImage offers the uploads.
        for wf in [
            "empty.json",
            "invert.json",
            "runtime_error.json",
            "slow.json",
            "ws_progress.json",
            "video_from_image.json",
        ] {
            for (_, node) in workflow(wf).as_object().expect("nodes") {
                assert!(all.get(class_of(node)).is_some(), "{wf}: {}", class_of(node));
            }
        }
        assert_eq!(
            all["SaveWEBM"]["input"]["required"]["codec"][1]["options"],
            json!(["vp9", "av1"]),
            "recorded entry"
        );
        let form = reqwest::multipart::Form::new()
            .part("image", reqwest::multipart::Part::bytes(super::super::gradient_png(2, 2)).file_name("in.png"));
        http.post(format!("{base}/upload/image")).multipart(form).send().await.expect("upload");
        let load: Value =
            http.get(format!("{base}/object_info/LoadImage")).send().await.expect("get").json().await.expect("json");
        assert_eq!(load["LoadImage"]["input"]["required"]["image"][0], json!(["in.png"]));
        let none: Value =
            http.get(format!("{base}/object_info/NoSuchNode")).send().await.expect("get").json().await.expect("json");
        assert_eq!(none, json!({}));
    }

    fn exchange_json(t: &[Value], label: &str) -> Value {
        t.iter().find(|e| e["label"] == label).map(|e| e["response"]["json"].clone()).expect("recorded exchange")
    }

    #[tokio::test]
    async fn fake_comfy_uploads_queue_and_interrupt() {
        let fake = FakeComfy::start().await;
        let http = reqwest::Client::new();
        let base = fake.base_url();
        let png = super::super::gradient_png(4, 4);
        let form = reqwest::multipart::Form::new()
            .part("image", reqwest::multipart::Part::bytes(png.clone()).file_name("harness_input.png"))
            .text("overwrite", "true");
        let up: Value = http
            .post(format!("{base}/upload/image"))
            .multipart(form)
            .send()
            .await
            .expect("up")
            .json()
            .await
            .expect("json");
        assert_eq!(up, json!({"name": "harness_input.png", "subfolder": "", "type": "input"}));
        assert_eq!(fake.uploads()[0].bytes, png);

        fake.hold();
        for id in ["slow", "queued"] {
            http.post(format!("{base}/prompt"))
                .json(&json!({"prompt": workflow("invert.json"), "client_id": "c", "prompt_id": id}))
                .send()
                .await
                .expect("post")
                .error_for_status()
                .expect("200");
        }
        assert!(super::super::eventually(Duration::from_secs(2), || fake.is_running("slow")).await);
        let q: Value = http.get(format!("{base}/queue")).send().await.expect("q").json().await.expect("json");
        assert_eq!(q["queue_running"][0][1], "slow");
        assert_eq!(q["queue_pending"][0][1], "queued");
        http.post(format!("{base}/queue")).json(&json!({"delete": ["queued"]})).send().await.expect("del");
        http.post(format!("{base}/interrupt")).json(&json!({"prompt_id": "slow"})).send().await.expect("int");
        assert!(super::super::eventually(Duration::from_secs(2), || fake.is_finished("slow")).await);
        let h: Value = http.get(format!("{base}/history/slow")).send().await.expect("h").json().await.expect("json");
        assert_eq!(h["slow"]["status"]["messages"][2][0], "execution_interrupted");
        assert!(!fake.is_finished("queued"));
        assert_eq!(fake.deletes(), vec!["queued".to_string()]);
        assert_eq!(fake.interrupts(), vec![Some("slow".to_string())]);
    }
}
