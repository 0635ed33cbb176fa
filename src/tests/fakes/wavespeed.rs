//! A fake WaveSpeed AI task API (protocols.md §8), under `/api/v3` like the real one.
//!
//! Routes (any `owner/model` is accepted):
//! - `POST /api/v3/{owner}/{model}` — submit; answers the envelope `{"code": 200, "message":
//!   "success", "data": {"id", "model", "status": "created", "urls": {"get":
//!   "<base>/predictions/{id}"}, "outputs": [], …}}`.
//! - `GET /api/v3/predictions/{id}` and `GET /api/v3/predictions/{id}/result` (both forms
//!   appear in WaveSpeed's docs) — poll 1: `created`, then `processing` for the scenario's
//!   count, then `completed` with `outputs: ["<base>/files/{id}.jpeg"]` (or `failed`).
//! - `GET /files/{name}` — a real 512×512 JPEG ([`FakeWavespeed::result_jpeg`]).
//!
//! A second listener stands for a foreign host: its hits are counted
//! ([`FakeWavespeed::foreign_hits`]) and it never answers usefully. Unknown task ids answer 404
//! `{"code": 404, "message": "prediction not found"}`.

use super::Server;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Width and height of the served result JPEG.
pub const RESULT_SIZE: (u32, u32) = (512, 512);

/// What happens to a submitted task, chosen at submit time: the next queued one-shot
/// ([`FakeWavespeed::push_scenario`]) or else the default.
#[derive(Debug, Clone, PartialEq)]
pub enum WavespeedScenario {
    /// `created` → `processing` × n → `completed`, one JPEG.
    Success { processing_polls: u32 },
    /// `created` → `processing` → `failed` with this `data.error` (envelope `code` still 200).
    Failed { error: String },
    /// Submit answers this HTTP status and body. Still counted as a submit.
    SubmitError { status: u16, body: String },
    /// Like `Success { processing_polls: 1 }`, but `urls.get` names the foreign host.
    ForeignPollUrl,
}

#[derive(Debug)]
struct Task {
    model: String,
    scenario: WavespeedScenario,
    polls: u32,
}

#[derive(Debug)]
struct WsState {
    base_url: String,
    foreign_url: String,
    default: WavespeedScenario,
    queued: VecDeque<WavespeedScenario>,
    tasks: HashMap<String, Task>,
    submits: usize,
    last_body: Option<Value>,
    last_auth: Option<String>,
    poll_auths: Vec<Option<String>>,
    file_fetches: usize,
    jpeg: Arc<Vec<u8>>,
}

type Shared = Arc<Mutex<WsState>>;

/// A fake WaveSpeed server on `127.0.0.1:<random port>` plus a foreign-host listener; both
/// stop when dropped.
pub struct FakeWavespeed {
    server: Server,
    _foreign: Server,
    foreign_hits: Arc<AtomicUsize>,
    state: Shared,
}

impl FakeWavespeed {
    /// Starts the servers with `Success { processing_polls: 2 }` as the default.
    pub async fn start() -> FakeWavespeed {
        let (w, h) = RESULT_SIZE;
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x / 2) as u8, (y / 2) as u8, 200]));
        let mut jpeg = std::io::Cursor::new(Vec::new());
        img.write_to(&mut jpeg, image::ImageFormat::Jpeg).expect("encode jpeg");
        let state = Arc::new(Mutex::new(WsState {
            base_url: String::new(),
            foreign_url: String::new(),
            default: WavespeedScenario::Success { processing_polls: 2 },
            queued: VecDeque::new(),
            tasks: HashMap::new(),
            submits: 0,
            last_body: None,
            last_auth: None,
            poll_auths: Vec::new(),
            file_fetches: 0,
            jpeg: Arc::new(jpeg.into_inner()),
        }));
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone())
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024));
        let server = Server::start(router).await;
        let foreign_hits = Arc::new(AtomicUsize::new(0));
        let hits = foreign_hits.clone();
        let foreign = Server::start(axum::Router::new().fallback(move || {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                json_response(200, json!({"code": 200, "message": "success", "data": {"status": "processing"}}))
            }
        }))
        .await;
        {
            let mut st = lock(&state);
            st.base_url = format!("{}/api/v3", server.base_url());
            st.foreign_url = format!("{}/api/v3", foreign.base_url());
        }
        FakeWavespeed { server, _foreign: foreign, foreign_hits, state }
    }

    /// `http://127.0.0.1:<port>/api/v3`: use as the provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("{}/api/v3", self.server.base_url())
    }

    fn st(&self) -> MutexGuard<'_, WsState> {
        lock(&self.state)
    }

    /// Scenario for every later submit without a queued one-shot.
    pub fn set_scenario(&self, s: WavespeedScenario) {
        self.st().default = s;
    }

    /// Scenario for the next single submit (FIFO, before the default).
    pub fn push_scenario(&self, s: WavespeedScenario) {
        self.st().queued.push_back(s);
    }

    /// Submits received, failed ones included.
    pub fn submits(&self) -> usize {
        self.st().submits
    }

    /// JSON body of the last submit.
    pub fn last_submit_body(&self) -> Option<Value> {
        self.st().last_body.clone()
    }

    /// `Authorization` header of the last submit (expected: `Bearer <key>`).
    pub fn last_auth(&self) -> Option<String> {
        self.st().last_auth.clone()
    }

    /// `Authorization` header of every poll, in order.
    pub fn poll_auths(&self) -> Vec<Option<String>> {
        self.st().poll_auths.clone()
    }

    /// `/files/…` downloads received.
    pub fn file_fetches(&self) -> usize {
        self.st().file_fetches
    }

    /// Requests that reached the foreign host (any path).
    pub fn foreign_hits(&self) -> usize {
        self.foreign_hits.load(Ordering::SeqCst)
    }

    /// The JPEG served for every result file.
    pub fn result_jpeg(&self) -> Vec<u8> {
        self.st().jpeg.as_ref().clone()
    }
}

fn lock(s: &Shared) -> MutexGuard<'_, WsState> {
    // A panicking test thread must not poison the fake for the others.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn json_response(status: u16, v: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn not_found() -> Response {
    json_response(404, json!({"code": 404, "message": "prediction not found", "data": null}))
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().trim_matches('/').to_string();
    let mut st = lock(&state);
    if let Some(name) = path.strip_prefix("files/") {
        if method != Method::GET || name.is_empty() {
            return not_found();
        }
        st.file_fetches += 1;
        let jpeg = st.jpeg.as_ref().clone();
        return ([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response();
    }
    let Some(rest) = path.strip_prefix("api/v3/") else { return not_found() };
    if let Some(task) = rest.strip_prefix("predictions/") {
        let id = task.strip_suffix("/result").unwrap_or(task);
        if method != Method::GET || id.contains('/') {
            return not_found();
        }
        let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        st.poll_auths.push(auth);
        return poll(&mut st, id);
    }
    // Model ids are `owner/model` or `owner/model/variant` (`bytedance/seedream-v4/edit`).
    if method == Method::POST && (2..=3).contains(&rest.split('/').count()) {
        return submit(&mut st, rest, &headers, &body);
    }
    not_found()
}

/// The `data` object WaveSpeed returns for a task in `status`.
fn task_data(get_url: &str, id: &str, model: &str, status: &str, outputs: Value, error: &str) -> Value {
    json!({
        "id": id,
        "model": model,
        "status": status,
        "urls": {"get": get_url},
        "outputs": outputs,
        "has_nsfw_contents": [],
        "created_at": "2026-12-05T06:41:34.000Z",
        "error": error,
        "timings": {"inference": 1234},
    })
}

fn submit(st: &mut WsState, model: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    st.submits += 1;
    st.last_auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    st.last_body = parsed.as_ref().ok().cloned();
    let scenario = st.queued.pop_front().unwrap_or_else(|| st.default.clone());
    if let WavespeedScenario::SubmitError { status, body } = &scenario {
        let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (code, [(header::CONTENT_TYPE, "application/json")], body.clone()).into_response();
    }
    if parsed.is_err() {
        return json_response(400, json!({"code": 400, "message": "invalid JSON body", "data": null}));
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let host = if scenario == WavespeedScenario::ForeignPollUrl { &st.foreign_url } else { &st.base_url };
    let get_url = format!("{host}/predictions/{id}");
    let data = task_data(&get_url, &id, model, "created", json!([]), "");
    st.tasks.insert(id, Task { model: model.to_string(), scenario, polls: 0 });
    json_response(200, json!({"code": 200, "message": "success", "data": data}))
}

fn poll(st: &mut WsState, id: &str) -> Response {
    let base = st.base_url.clone();
    let Some(t) = st.tasks.get_mut(id) else { return not_found() };
    let n = t.polls;
    t.polls += 1;
    let get_url = format!("{base}/predictions/{id}");
    let (status, outputs, error) = match &t.scenario {
        _ if n == 0 => ("created", json!([]), String::new()),
        WavespeedScenario::Success { processing_polls } if n <= *processing_polls => {
            ("processing", json!([]), String::new())
        }
        WavespeedScenario::ForeignPollUrl if n == 1 => ("processing", json!([]), String::new()),
        WavespeedScenario::Failed { .. } if n == 1 => ("processing", json!([]), String::new()),
        WavespeedScenario::Failed { error } => ("failed", json!([]), error.clone()),
        _ => ("completed", json!([format!("{}/files/{id}.jpeg", base.trim_end_matches("/api/v3"))]), String::new()),
    };
    let data = task_data(&get_url, id, &t.model, status, outputs, &error);
    json_response(200, json!({"code": 200, "message": "success", "data": data}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fake_wavespeed_walks_the_task_states() {
        let ws = FakeWavespeed::start().await;
        let http = reqwest::Client::new();
        let sub: Value = http
            .post(format!("{}/wavespeed-ai/image-face-swap", ws.base_url()))
            .header("Authorization", "Bearer k")
            .json(&json!({"image": "x", "face_image": "y"}))
            .send()
            .await
            .expect("submit")
            .json()
            .await
            .expect("json");
        assert_eq!((sub["code"].as_u64(), sub["data"]["status"].as_str()), (Some(200), Some("created")));
        let get = sub["data"]["urls"]["get"].as_str().expect("urls.get").to_string();
        let mut seen = Vec::new();
        for _ in 0..5 {
            let s: Value = http.get(&get).send().await.expect("poll").json().await.expect("json");
            seen.push(s["data"]["status"].as_str().expect("status").to_string());
        }
        assert_eq!(seen, ["created", "processing", "processing", "completed", "completed"]);
        let done: Value = http.get(format!("{get}/result")).send().await.expect("poll").json().await.expect("json");
        let url = done["data"]["outputs"][0].as_str().expect("output");
        let jpeg = http.get(url).send().await.expect("file").bytes().await.expect("bytes");
        let img = image::load_from_memory(&jpeg).expect("decodes");
        assert_eq!((img.width(), img.height()), RESULT_SIZE);
        assert_eq!((ws.submits(), ws.file_fetches(), ws.foreign_hits()), (1, 1, 0));
        assert_eq!(ws.last_auth().as_deref(), Some("Bearer k"));
    }
}
