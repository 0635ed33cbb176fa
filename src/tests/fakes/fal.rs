//! A fake fal.ai queue API (protocols.md §2.2).
//!
//! Routes (any endpoint id is accepted):
//! - `POST /{owner}/{app}[/{sub}]` — submit; answers `{request_id, status_url, response_url,
//!   cancel_url, status: "IN_QUEUE", queue_position: 1}` with URLs on `{owner}/{app}` only (the
//!   subpath is dropped, as fal does).
//! - `GET /{owner}/{app}/requests/{id}/status` — per request, poll 1: `IN_QUEUE` position 0,
//!   poll 2: `IN_PROGRESS`, poll 3+: `COMPLETED` (unless the scenario or `hold()` says otherwise).
//! - `GET /{owner}/{app}/requests/{id}` — the result: `{"images": [{"url":
//!   "<base>/files/<id>.png", "content_type", "width": 512, "height": 768}], "seed", …}`.
//! - `PUT /{owner}/{app}/requests/{id}/cancel` — 202 `CANCELLATION_REQUESTED` (400
//!   `ALREADY_COMPLETED` once completed).
//! - `GET /files/{name}` — a real 512×768 gradient PNG ([`FakeFal::result_png`]).
//!
//! Unknown request ids answer 404 `{"detail": "Request not found"}`.

use super::Server;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// Width and height of the served result PNG.
pub const RESULT_SIZE: (u32, u32) = (512, 768);

/// What happens to a submitted request. Chosen at submit time: the next queued one-shot
/// ([`FakeFal::push_scenario`]) or else the default ([`FakeFal::set_scenario`]).
#[derive(Debug, Clone, PartialEq)]
pub enum FalScenario {
    /// `IN_QUEUE`(1) → `IN_QUEUE`(0) → `IN_PROGRESS` → `COMPLETED`, one PNG.
    Success,
    /// Submit answers this HTTP status and body (e.g. 500, 401, 404, 422 with a FastAPI
    /// `detail`). Still counted as a submit.
    SubmitError { status: u16, body: String },
    /// `COMPLETED` with `error` (and `error_type`, if given) in the status body.
    CompletedWithError { error: String, error_type: Option<String> },
    /// Completes, but the result endpoint answers this HTTP status and body.
    ResultError { status: u16, body: String },
    /// Completes, but the result endpoint returns truncated JSON.
    MalformedResult,
    /// Stays `IN_PROGRESS` forever (for timeouts and cancel).
    NeverCompletes,
    /// Submit answers 429 with `Retry-After: <secs>` (fal's rate limit). Counted as a submit.
    RateLimited { retry_after_secs: u32 },
    /// Completes, and the result is this JSON (a text model such as `fal-ai/any-llm`:
    /// `{"output": "…"}`).
    ResultJson(Value),
}

#[derive(Debug)]
struct Request {
    app_root: String,
    scenario: FalScenario,
    polls: u32,
    completed: bool,
    cancelled: bool,
    seed: Value,
}

#[derive(Debug)]
struct FalState {
    base_url: String,
    default: FalScenario,
    queued: VecDeque<FalScenario>,
    held: bool,
    omit_urls: bool,
    requests: HashMap<String, Request>,
    order: Vec<String>,
    submits: HashMap<String, usize>,
    /// When each submit arrived (any endpoint, in order).
    submit_times: Vec<std::time::Instant>,
    last_body: Option<Value>,
    last_auth: Option<String>,
    status_polls: usize,
    result_fetches: usize,
    file_fetches: usize,
    cancels: Vec<String>,
    png: Arc<Vec<u8>>,
    /// A result file served instead of the PNG: (bytes, content type).
    file: Option<(Arc<Vec<u8>>, String)>,
}

type Shared = Arc<Mutex<FalState>>;

/// A fake fal.ai queue server on `127.0.0.1:<random port>`; stops when dropped.
pub struct FakeFal {
    server: Server,
    state: Shared,
}

impl FakeFal {
    /// Starts the server with the [`FalScenario::Success`] default.
    pub async fn start() -> FakeFal {
        let (w, h) = RESULT_SIZE;
        let state = Arc::new(Mutex::new(FalState {
            base_url: String::new(),
            default: FalScenario::Success,
            queued: VecDeque::new(),
            held: false,
            omit_urls: false,
            requests: HashMap::new(),
            order: Vec::new(),
            submits: HashMap::new(),
            submit_times: Vec::new(),
            last_body: None,
            last_auth: None,
            status_polls: 0,
            result_fetches: 0,
            file_fetches: 0,
            cancels: Vec::new(),
            png: Arc::new(super::gradient_png(w, h)),
            file: None,
        }));
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone())
            // Like the real services, accept request bodies of several MB (data URIs, uploads).
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024));
        let server = Server::start(router).await;
        lock(&state).base_url = server.base_url();
        FakeFal { server, state }
    }

    /// `http://127.0.0.1:<port>`: use as the provider's `base_url`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    fn st(&self) -> MutexGuard<'_, FalState> {
        lock(&self.state)
    }

    /// Scenario for every later submit without a queued one-shot.
    pub fn set_scenario(&self, s: FalScenario) {
        self.st().default = s;
    }

    /// Scenario for the next single submit (FIFO, before the default).
    pub fn push_scenario(&self, s: FalScenario) {
        self.st().queued.push_back(s);
    }

    /// Keeps every request `IN_PROGRESS` (those already reported `COMPLETED` stay so) until
    /// [`Self::release`].
    pub fn hold(&self) {
        self.st().held = true;
    }

    /// Lets held requests complete at their next status poll.
    pub fn release(&self) {
        self.st().held = false;
    }

    /// When set, the submit answer carries only `request_id` (and status), so the client must
    /// build the status/result/cancel URLs itself.
    pub fn set_omit_urls(&self, omit: bool) {
        self.st().omit_urls = omit;
    }

    /// Submits received for this endpoint id (`fal-ai/flux/dev`), failed ones included.
    pub fn submits(&self, endpoint: &str) -> usize {
        self.st().submits.get(endpoint.trim_matches('/')).copied().unwrap_or(0)
    }

    /// Arrival times of all submits, in order.
    pub fn submit_times(&self) -> Vec<std::time::Instant> {
        self.st().submit_times.clone()
    }

    /// Submits received for all endpoints.
    pub fn submits_total(&self) -> usize {
        self.st().submits.values().sum()
    }

    /// JSON body of the last submit.
    pub fn last_submit_body(&self) -> Option<Value> {
        self.st().last_body.clone()
    }

    /// `Authorization` header of the last submit (expected: `Key <key>`).
    pub fn last_auth(&self) -> Option<String> {
        self.st().last_auth.clone()
    }

    /// Status polls received (all requests).
    pub fn status_polls(&self) -> usize {
        self.st().status_polls
    }

    /// `/files/…` downloads received.
    pub fn file_fetches(&self) -> usize {
        self.st().file_fetches
    }

    /// Request ids cancelled (`PUT …/cancel`), in order.
    pub fn cancels(&self) -> Vec<String> {
        self.st().cancels.clone()
    }

    /// Serves `bytes` as every result from now on; a `video/*` type comes back in fal's video
    /// shape (`{"video": {"url", "content_type", "file_size"}}`), anything else as `images`.
    pub fn set_result_file(&self, bytes: Vec<u8>, content_type: &str) {
        self.st().file = Some((Arc::new(bytes), content_type.to_string()));
    }

    /// The PNG served for every result file.
    pub fn result_png(&self) -> Vec<u8> {
        self.st().png.as_ref().clone()
    }
}

fn lock(s: &Shared) -> MutexGuard<'_, FalState> {
    // A panicking test thread must not poison the fake for the others.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn json_response(status: u16, v: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn not_found() -> Response {
    json_response(404, json!({"detail": "Request not found"}))
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().trim_matches('/').to_string();
    let mut st = lock(&state);
    if let Some(name) = path.strip_prefix("files/") {
        if method != Method::GET || name.is_empty() {
            return not_found();
        }
        st.file_fetches += 1;
        if let Some((bytes, ct)) = &st.file {
            return ([(header::CONTENT_TYPE, ct.clone())], bytes.as_ref().clone()).into_response();
        }
        let png = st.png.as_ref().clone();
        return ([(header::CONTENT_TYPE, "image/png")], png).into_response();
    }
    if let Some((root, rest)) = path.split_once("/requests/") {
        let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
        return match (&method, action) {
            (&Method::GET, "status") => status(&mut st, id),
            (&Method::GET, "") => result(&mut st, id),
            (&Method::PUT, "cancel") => cancel(&mut st, id),
            _ => {
                let _ = root;
                not_found()
            }
        };
    }
    if method == Method::POST && !path.is_empty() {
        return submit(&mut st, &path, &headers, &body);
    }
    not_found()
}

fn urls(base: &str, root: &str, id: &str) -> Value {
    let r = format!("{base}/{root}/requests/{id}");
    json!({"status_url": format!("{r}/status"), "response_url": r, "cancel_url": format!("{r}/cancel")})
}

fn submit(st: &mut FalState, endpoint: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    *st.submits.entry(endpoint.to_string()).or_default() += 1;
    st.last_auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    st.last_body = parsed.as_ref().ok().cloned();
    let scenario = st.queued.pop_front().unwrap_or_else(|| st.default.clone());
    st.submit_times.push(std::time::Instant::now());
    if let FalScenario::RateLimited { retry_after_secs } = &scenario {
        let body = json!({"detail": "Rate limit exceeded"}).to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (header::CONTENT_TYPE, "application/json".to_string()),
                (header::RETRY_AFTER, retry_after_secs.to_string()),
            ],
            body,
        )
            .into_response();
    }
    if let FalScenario::SubmitError { status, body } = &scenario {
        let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (code, [(header::CONTENT_TYPE, "application/json")], body.clone()).into_response();
    }
    let Ok(input) = parsed else {
        return json_response(
            422,
            json!({"detail": [{"loc": ["body"], "msg": "invalid JSON", "type": "value_error.jsondecode"}]}),
        );
    };
    let parts: Vec<&str> = endpoint.split('/').collect();
    let root = parts[..parts.len().min(2)].join("/");
    let id = uuid::Uuid::new_v4().to_string();
    let seed = input.get("seed").cloned().unwrap_or(json!(42));
    st.requests.insert(
        id.clone(),
        Request { app_root: root.clone(), scenario, polls: 0, completed: false, cancelled: false, seed },
    );
    st.order.push(id.clone());
    let mut answer = json!({"request_id": id, "gateway_request_id": id, "status": "IN_QUEUE", "queue_position": 1});
    if !st.omit_urls {
        if let (Some(a), Value::Object(u)) = (answer.as_object_mut(), urls(&st.base_url, &root, &id)) {
            a.extend(u);
        }
    }
    json_response(200, answer)
}

fn status(st: &mut FalState, id: &str) -> Response {
    st.status_polls += 1;
    let held = st.held;
    let base = st.base_url.clone();
    let Some(r) = st.requests.get_mut(id) else {
        return not_found();
    };
    let n = r.polls;
    r.polls += 1;
    let stuck = matches!(r.scenario, FalScenario::NeverCompletes) || held;
    let mut body = match n {
        _ if r.completed || r.cancelled => json!({"status": "COMPLETED"}),
        0 => json!({"status": "IN_QUEUE", "queue_position": 0}),
        1 => json!({"status": "IN_PROGRESS"}),
        _ if stuck => json!({"status": "IN_PROGRESS"}),
        _ => json!({"status": "COMPLETED"}),
    };
    if body["status"] == "COMPLETED" {
        r.completed = true;
        body["metrics"] = json!({"inference_time": 0.42});
        if r.cancelled {
            body["error"] = json!("Request was cancelled");
        } else if let FalScenario::CompletedWithError { error, error_type } = &r.scenario {
            body["error"] = json!(error);
            if let Some(t) = error_type {
                body["error_type"] = json!(t);
            }
        }
    }
    body["request_id"] = json!(id);
    body["logs"] = Value::Null;
    if let (Some(b), Value::Object(u)) = (body.as_object_mut(), urls(&base, &r.app_root, id)) {
        b.extend(u);
    }
    json_response(200, body)
}

fn result(st: &mut FalState, id: &str) -> Response {
    st.result_fetches += 1;
    let base = st.base_url.clone();
    let file = st.file.clone();
    let (w, h) = RESULT_SIZE;
    let Some(r) = st.requests.get(id) else {
        return not_found();
    };
    if !r.completed {
        return json_response(400, json!({"detail": "Request is still in progress"}));
    }
    match &r.scenario {
        FalScenario::MalformedResult => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], r#"{"images": [{"url": "#).into_response()
        }
        FalScenario::ResultError { status, body } => {
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (code, [(header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
        }
        FalScenario::CompletedWithError { error, .. } => json_response(500, json!({"detail": error})),
        FalScenario::ResultJson(v) => json_response(200, v.clone()),
        _ if file.as_ref().is_some_and(|f| f.1.starts_with("video/")) => json_response(
            200,
            json!({
                "video": {
                    "url": format!("{base}/files/{id}.mp4"),
                    "content_type": file.as_ref().map(|f| f.1.clone()),
                    "file_size": file.as_ref().map(|f| f.0.len()),
                },
                "seed": r.seed,
            }),
        ),
        _ if file.is_some() => json_response(
            200,
            json!({
                "images": [{"url": format!("{base}/files/{id}"), "content_type": file.as_ref().map(|f| f.1.clone())}],
                "seed": r.seed,
            }),
        ),
        _ => json_response(
            200,
            json!({
                "images": [{
                    "url": format!("{base}/files/{id}.png"),
                    "content_type": "image/png",
                    "width": w,
                    "height": h,
                    "file_name": format!("{id}.png"),
                }],
                "seed": r.seed,
                "has_nsfw_concepts": [false],
                "timings": {"inference": 0.42},
            }),
        ),
    }
}

fn cancel(st: &mut FalState, id: &str) -> Response {
    st.cancels.push(id.to_string());
    let Some(r) = st.requests.get_mut(id) else {
        return json_response(404, json!({"status": "NOT_FOUND"}));
    };
    if r.completed {
        return json_response(400, json!({"status": "ALREADY_COMPLETED"}));
    }
    r.cancelled = true;
    json_response(202, json!({"status": "CANCELLATION_REQUESTED"}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_fal_walks_the_queue_states() {
        let fal = FakeFal::start().await;
        let http = reqwest::Client::new();
        let sub: Value = http
            .post(format!("{}/fal-ai/flux/dev", fal.base_url()))
            .header("Authorization", "Key k")
            .json(&json!({"prompt": "x", "seed": 5}))
            .send()
            .await
            .expect("submit")
            .json()
            .await
            .expect("json");
        assert_eq!(sub["status"], "IN_QUEUE");
        assert_eq!(sub["queue_position"], 1);
        let status_url = sub["status_url"].as_str().expect("status_url").to_string();
        let want = format!("/fal-ai/flux/requests/{}/status", sub["request_id"].as_str().expect("id"));
        assert!(status_url.ends_with(&want), "{status_url}");
        let mut seen = Vec::new();
        for _ in 0..4 {
            let s: Value = http.get(&status_url).send().await.expect("status").json().await.expect("json");
            seen.push(s["status"].as_str().expect("status").to_string());
        }
        assert_eq!(seen, ["IN_QUEUE", "IN_PROGRESS", "COMPLETED", "COMPLETED"]);
        let res: Value =
            http.get(sub["response_url"].as_str().expect("url")).send().await.expect("res").json().await.expect("json");
        assert_eq!(res["seed"], 5);
        let png = http
            .get(res["images"][0]["url"].as_str().expect("url"))
            .send()
            .await
            .expect("png")
            .bytes()
            .await
            .expect("bytes");
        let img = image::load_from_memory(&png).expect("decodes");
        assert_eq!((img.width(), img.height()), RESULT_SIZE);
        assert_eq!(fal.submits("fal-ai/flux/dev"), 1);
        assert_eq!(fal.last_auth().as_deref(), Some("Key k"));
        assert_eq!(fal.status_polls(), 4);
        assert_eq!(fal.file_fetches(), 1);
    }
}
