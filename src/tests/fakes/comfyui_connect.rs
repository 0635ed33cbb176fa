//! A fake ComfyUI server with the ComfyUI-Connect plugin (protocols.md §3.4), answering as
//! the observations there describe.
//!
//! Routes (the plugin's under both `/connect/…` and `/api/connect/…`, ComfyUI's at the root):
//! - `GET /api/connect/workflows/{name}` — `{"status": "success", "workflow": {"name",
//!   "inputs": {tag: {input: type}}, "outputs": [..]}}` for a workflow added with
//!   [`FakeConnect::add_workflow`]; an unknown name answers aiohttp's plain-text 500.
//! - `POST /api/connect/workflows/{name}` — runs it: a non-JSON body, an unknown workflow, a tag
//!   or input the workflow does not declare, a file without `name` → plain-text 500. File
//!   inputs are "written" only when no file of that name exists (an existing one is reused with
//!   its old bytes). The run is queued (listed by `GET /queue`, its graph holding the payload's
//!   values, file names included), kept running while [`FakeConnect::hold`] is on, and goes on
//!   even if the client hangs up. It ends per [`ConnectScenario`]; the answer comes when it
//!   ends: `{"status": "success", "workflow", "result": {"output": <base64>}}` or
//!   `"result": {}`.
//! - `GET /history?max_items=N` (the N most recent), `GET /history/{id}`, `GET /queue`,
//!   `POST /queue {"delete"}`, `POST /interrupt`, `GET /view` — ComfyUI's shapes.
//!
//! The output file is the recorded SaveVideo mp4 (`recorded-video-0.3.64.json`).

use super::Server;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How a run ends. The next queued one-shot ([`FakeConnect::push_scenario`]), else `Direct`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectScenario {
    /// SaveVideo tagged `#output`: the mp4 comes back in `result.output` (what the real plugin
    /// did with core SaveVideo).
    Direct,
    /// VHS_VideoCombine: history has the mp4 under `gifs`, the answer has `"result": {}`.
    HistoryOnly,
    /// The graph fails in SaveVideo (libx264, odd height): history `status_str: error` with
    /// the `execution_error`, the answer `"result": {}` with HTTP 200.
    FailedRun,
}

/// A recorded run request.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectRun {
    pub workflow: String,
    /// The JSON payload as received.
    pub payload: Value,
}

#[derive(Debug, Default)]
struct ConnectState {
    workflows: HashMap<String, Value>,
    queued: VecDeque<ConnectScenario>,
    held: bool,
    runs: Vec<ConnectRun>,
    /// Input files by name.
    inputs: HashMap<String, Vec<u8>>,
    /// Output files by (subfolder, name).
    outputs: HashMap<(String, String), Vec<u8>>,
    /// History entries in insertion order.
    history: Vec<(String, Value)>,
    /// Queued or running: (number, prompt_id, graph); the first is the running one.
    queue: Vec<(u64, String, Value)>,
    interrupted: Vec<String>,
    deletes: Vec<String>,
    next_number: u64,
    history_polls: usize,
    view_fetches: usize,
}

type Shared = Arc<Mutex<ConnectState>>;

fn lock(s: &Shared) -> MutexGuard<'_, ConnectState> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fake ComfyUI + ComfyUI-Connect on `127.0.0.1:<random port>`; stops when dropped.
pub struct FakeConnect {
    server: Server,
    state: Shared,
}

impl FakeConnect {
    pub async fn start() -> FakeConnect {
        let state: Shared = Arc::default();
        let plugin = Router::new().route("/workflows/{name}", get(get_workflow).post(run_workflow));
        let router = Router::new()
            .nest("/connect", plugin.clone())
            .nest("/api/connect", plugin)
            .route("/history", get(all_history))
            .route("/history/{id}", get(one_history))
            .route("/queue", get(get_queue).post(post_queue))
            .route("/interrupt", post(interrupt))
            .route("/view", get(view))
            .with_state(state.clone())
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024));
        FakeConnect { server: Server::start(router).await, state }
    }

    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    fn st(&self) -> MutexGuard<'_, ConnectState> {
        lock(&self.state)
    }

    /// Saves a workflow under `name` with its tagged inputs (`{tag: {input: type}}`, as
    /// `GET /api/connect/workflows/{name}` reports them).
    pub fn add_workflow(&self, name: &str, inputs: Value) {
        self.st().workflows.insert(name.to_string(), inputs);
    }

    pub fn push_scenario(&self, s: ConnectScenario) {
        self.st().queued.push_back(s);
    }

    /// Keeps runs going (in `queue_running`, no history, no answer) until [`Self::release`].
    pub fn hold(&self) {
        self.st().held = true;
    }

    pub fn release(&self) {
        self.st().held = false;
    }

    /// Run requests accepted (valid payloads), in order.
    pub fn runs(&self) -> Vec<ConnectRun> {
        self.st().runs.clone()
    }

    /// An input file as written.
    pub fn input_file(&self, name: &str) -> Option<Vec<u8>> {
        self.st().inputs.get(name).cloned()
    }

    /// True while a run is queued or running.
    pub fn busy(&self) -> bool {
        !self.st().queue.is_empty()
    }

    /// Prompt ids interrupted (`POST /interrupt {prompt_id}`) and deleted from the queue.
    pub fn interrupts_and_deletes(&self) -> (Vec<String>, Vec<String>) {
        let st = self.st();
        (st.interrupted.clone(), st.deletes.clone())
    }

    /// `GET /history…` and `GET /view` requests served.
    pub fn history_polls_and_views(&self) -> (usize, usize) {
        let st = self.st();
        (st.history_polls, st.view_fetches)
    }

    /// The file every run outputs: the recorded SaveVideo mp4.
    pub fn video(&self) -> Vec<u8> {
        super::comfyui::recorded_video_bytes("video_from_image")
    }
}

/// aiohttp's answer to an exception in a handler.
fn server_error() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "500 Internal Server Error\n\nServer got itself in trouble",
    )
        .into_response()
}

async fn get_workflow(State(st): State<Shared>, Path(name): Path<String>) -> Response {
    let Some(inputs) = lock(&st).workflows.get(&name).cloned() else {
        return server_error();
    };
    Json(json!({"status": "success", "workflow": {"name": name, "inputs": inputs, "outputs": ["output"]}}))
        .into_response()
}

/// Checks the payload against the declared tags and builds the run's graph: one node per tag
/// whose inputs are the values sent (file inputs become their names).
fn accept(st: &mut ConnectState, declared: &Value, payload: &Value) -> Option<Value> {
    let mut graph = serde_json::Map::new();
    for (i, (tag, inputs)) in payload.as_object()?.iter().enumerate() {
        if inputs == &Value::Bool(false) {
            continue;
        }
        let mut node_inputs = serde_json::Map::new();
        for (input, value) in inputs.as_object()? {
            declared.get(tag)?.get(input)?;
            let value = if value.get("type") == Some(&json!("file")) {
                let name = value.get("name").and_then(Value::as_str).filter(|n| !n.is_empty())?.to_string();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(value.get("content").and_then(Value::as_str)?)
                    .ok()?;
                st.inputs.entry(name.clone()).or_insert(bytes); // an existing file is reused as is
                json!(name)
            } else {
                value.clone()
            };
            node_inputs.insert(input.clone(), value);
        }
        graph.insert(
            (i + 1).to_string(),
            json!({"class_type": "Tagged", "inputs": node_inputs, "_meta": {"title": format!("${tag}")}}),
        );
    }
    Some(Value::Object(graph))
}

async fn run_workflow(State(st): State<Shared>, Path(name): Path<String>, body: axum::body::Bytes) -> Response {
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else { return server_error() };
    let (id, scenario) = {
        let mut s = lock(&st);
        let Some(declared) = s.workflows.get(&name).cloned() else { return server_error() };
        let Some(graph) = accept(&mut s, &declared, &payload) else { return server_error() };
        s.runs.push(ConnectRun { workflow: name.clone(), payload });
        let scenario = s.queued.pop_front().unwrap_or(ConnectScenario::Direct);
        let id = uuid::Uuid::new_v4().to_string();
        let number = s.next_number;
        s.next_number += 1;
        s.queue.push((number, id.clone(), graph));
        (id, scenario)
    };
    // The run goes on in ComfyUI even if the client hangs up.
    let run = tokio::spawn(execute(st.clone(), id, scenario));
    let result = run.await.unwrap_or_default();
    Json(json!({"status": "success", "workflow": name, "result": result})).into_response()
}

/// Runs one prompt to its end; returns the plugin's `result`.
async fn execute(st: Shared, id: String, scenario: ConnectScenario) -> Value {
    loop {
        {
            let s = lock(&st);
            let first = s.queue.first().map(|q| q.1.clone());
            if !s.held && first.as_deref() == Some(id.as_str()) {
                break;
            }
            if s.interrupted.contains(&id) || !s.queue.iter().any(|q| q.1 == id) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut s = lock(&st);
    let Some(pos) = s.queue.iter().position(|q| q.1 == id) else { return json!({}) }; // deleted
    let (number, _, graph) = s.queue.remove(pos);
    let ts = super::now_ms();
    let mut messages = vec![json!(["execution_start", {"prompt_id": id, "timestamp": ts}])];
    let filename = format!("clip_{:05}_.mp4", number + 1);
    let (status, outputs, result) = if s.interrupted.contains(&id) {
        messages.push(json!(["execution_interrupted", {"prompt_id": id, "node_id": "1", "node_type": "Tagged", "executed": [], "timestamp": ts}]));
        ("error", json!({}), json!({}))
    } else {
        match scenario {
            ConnectScenario::Direct => {
                let mp4 = super::comfyui::recorded_video_bytes("video_from_image");
                s.outputs.insert(("connect".into(), filename.clone()), mp4.clone());
                messages.push(json!(["execution_success", {"prompt_id": id, "timestamp": ts}]));
                (
                    "success",
                    json!({"9": {"images": [{"filename": filename, "subfolder": "connect", "type": "output"}], "animated": [true]}}),
                    json!({"output": base64::engine::general_purpose::STANDARD.encode(mp4)}),
                )
            }
            ConnectScenario::HistoryOnly => {
                let mp4 = super::comfyui::recorded_video_bytes("video_from_image");
                s.outputs.insert(("connect".into(), filename.clone()), mp4);
                messages.push(json!(["execution_success", {"prompt_id": id, "timestamp": ts}]));
                let gif = json!({"filename": filename, "subfolder": "connect", "type": "output", "format": "video/h264-mp4",
                                 "frame_rate": 16.0, "workflow": filename.replace(".mp4", ".png"),
                                 "fullpath": format!("<run-dir>/output/connect/{filename}")});
                ("success", json!({"9": {"gifs": [gif]}}), json!({}))
            }
            ConnectScenario::FailedRun => {
                messages.push(json!(["execution_error", {
                    "prompt_id": id, "node_id": "9", "node_type": "SaveVideo", "executed": ["1"],
                    "exception_message": "[Errno 542398533] Generic error in an external library: 'avcodec_open2(\"libx264\", {})'; last error log: [libx264] height not divisible by 2 (64x47)\n",
                    "exception_type": "av.error.ExternalError", "traceback": [], "current_inputs": {}, "current_outputs": [], "timestamp": ts,
                }]));
                ("error", json!({}), json!({}))
            }
        }
    };
    let entry = json!({
        "prompt": [number, id, graph, {"client_id": "connect"}, ["9"]],
        "outputs": outputs,
        "status": {"status_str": status, "completed": status == "success", "messages": messages},
        "meta": {},
    });
    s.history.push((id.clone(), entry));
    result
}

async fn all_history(State(st): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut s = lock(&st);
    s.history_polls += 1;
    let max = q.get("max_items").and_then(|m| m.parse::<usize>().ok()).unwrap_or(usize::MAX);
    let skip = s.history.len().saturating_sub(max);
    let out: serde_json::Map<String, Value> = s.history.iter().skip(skip).cloned().collect();
    Json(Value::Object(out)).into_response()
}

async fn one_history(State(st): State<Shared>, Path(id): Path<String>) -> Response {
    let mut s = lock(&st);
    s.history_polls += 1;
    match s.history.iter().find(|(h, _)| *h == id) {
        Some((h, e)) => Json(json!({ h.clone(): e })).into_response(),
        None => Json(json!({})).into_response(),
    }
}

async fn get_queue(State(st): State<Shared>) -> Response {
    let s = lock(&st);
    let item = |q: &(u64, String, Value)| json!([q.0, q.1, q.2, {"client_id": "connect"}, ["9"]]);
    let running: Vec<Value> = s.queue.iter().take(1).map(item).collect();
    let pending: Vec<Value> = s.queue.iter().skip(1).map(item).collect();
    Json(json!({"queue_running": running, "queue_pending": pending})).into_response()
}

async fn post_queue(State(st): State<Shared>, body: axum::body::Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut s = lock(&st);
    for id in v["delete"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        s.deletes.push(id.to_string());
        // Only pending prompts can be deleted.
        let running = s.queue.first().map(|q| q.1.clone());
        if running.as_deref() != Some(id) {
            s.queue.retain(|q| q.1 != id);
        }
    }
    StatusCode::OK.into_response()
}

async fn interrupt(State(st): State<Shared>, body: axum::body::Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(id) = v["prompt_id"].as_str() {
        lock(&st).interrupted.push(id.to_string());
    }
    StatusCode::OK.into_response()
}

async fn view(State(st): State<Shared>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut s = lock(&st);
    s.view_fetches += 1;
    let key = (q.get("subfolder").cloned().unwrap_or_default(), q.get("filename").cloned().unwrap_or_default());
    match s.outputs.get(&key) {
        Some(b) => ([(header::CONTENT_TYPE, "video/mp4")], b.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
