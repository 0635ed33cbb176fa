//! A fake Replicate predictions API (protocols.md §7).
//!
//! - `POST /v1/models/{owner}/{name}/predictions` and `POST /v1/predictions` (which wants a
//!   `version`: without one, 422 "version is required") create a prediction and answer it
//!   (`status: starting`, or `succeeded` with `output` at once for [`ReplicateScenario::Inline`]);
//! - `GET /v1/predictions/{id}`: `starting` → `processing` × n → `succeeded` with `output` (a
//!   list of one URL `<base>/files/{id}.png`) or `failed` with `error`; unknown ids 404;
//! - `POST /v1/predictions/{id}/cancel` → `canceled`;
//! - `GET /files/{name}` serves the result PNG.
//!
//! Errors use the problem JSON shape `{"type", "title", "status", "detail"}`.

use super::recorder::{self, Recorded, Recorder};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// What a created prediction does.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicateScenario {
    /// Polled: `starting`, then `processing` this many times, then `succeeded`.
    Success { processing_polls: u32 },
    /// `Prefer: wait` was enough: the create answer is already `succeeded`, output a plain URL.
    Inline,
    /// Polled: `processing`, then `failed` with this error.
    Failed(String),
    /// The create call answers this status with a problem JSON `detail` (and headers).
    CreateError { status: u16, detail: String, headers: Vec<(&'static str, String)> },
}

#[derive(Debug)]
struct Pred {
    scenario: ReplicateScenario,
    polls: u32,
    canceled: bool,
}

pub struct FakeReplicate {
    pub rec: Recorder,
    preds: Arc<Mutex<HashMap<String, Pred>>>,
    png: Vec<u8>,
    held: Arc<AtomicBool>,
}

impl FakeReplicate {
    pub async fn start(s: ReplicateScenario) -> FakeReplicate {
        let png = super::gradient_png(36, 36);
        let preds = Arc::new(Mutex::new(HashMap::new()));
        let held = Arc::new(AtomicBool::new(false));
        let rec = Recorder::start(responder(s, preds.clone(), png.clone(), held.clone())).await;
        FakeReplicate { rec, preds, png, held }
    }

    /// While held, every poll answers `processing` (a prediction kept running, e.g. across a
    /// restart of the app).
    pub fn hold(&self) {
        self.held.store(true, Ordering::SeqCst);
    }

    pub fn release(&self) {
        self.held.store(false, Ordering::SeqCst);
    }

    /// `http://127.0.0.1:<port>` (the API paths start with `/v1`).
    pub fn base_url(&self) -> String {
        self.rec.root()
    }

    pub fn set(&self, s: ReplicateScenario) {
        self.rec.set(responder(s, self.preds.clone(), self.png.clone(), self.held.clone()));
    }

    pub fn png(&self) -> Vec<u8> {
        self.png.clone()
    }

    /// Create calls received (POSTs to a `…/predictions` route).
    pub fn creates(&self) -> Vec<Recorded> {
        self.rec.requests().into_iter().filter(|r| r.method == "POST" && r.path.ends_with("/predictions")).collect()
    }

    pub fn polls(&self) -> Vec<Recorded> {
        self.rec
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/v1/predictions/"))
            .collect()
    }

    pub fn cancels(&self) -> Vec<Recorded> {
        self.rec.requests().into_iter().filter(|r| r.path.ends_with("/cancel")).collect()
    }
}

fn problem(status: u16, detail: &str) -> Value {
    json!({"type": "about:blank", "title": "error", "status": status, "detail": detail})
}

fn prediction(id: &str, base: &str, status: &str, output: Value, error: Value) -> Value {
    json!({
        "id": id, "model": "black-forest-labs/flux-schnell", "version": "hidden", "status": status,
        "input": {}, "output": output, "error": error, "logs": "", "metrics": {},
        "created_at": "2026-12-05T12:00:00Z",
        "urls": {"get": format!("{base}/v1/predictions/{id}"), "cancel": format!("{base}/v1/predictions/{id}/cancel"),
                 "stream": format!("https://stream.replicate.com/v1/files/{id}")}
    })
}

fn responder(
    s: ReplicateScenario,
    preds: Arc<Mutex<HashMap<String, Pred>>>,
    png: Vec<u8>,
    held: Arc<AtomicBool>,
) -> recorder::Responder {
    Arc::new(move |r: &Recorded, base: &str| -> Response {
        let mut preds = preds.lock().unwrap_or_else(|e| e.into_inner());
        if r.path.starts_with("/files/") {
            return recorder::bytes("image/png", png.clone());
        }
        if r.method == "POST" && r.path.ends_with("/predictions") {
            let body = r.json();
            if r.path == "/v1/predictions" && body["version"].as_str().is_none() {
                return recorder::json(422, problem(422, "version is required"));
            }
            if let ReplicateScenario::CreateError { status, detail, headers } = &s {
                return recorder::json_with(*status, headers, problem(*status, detail));
            }
            let id = format!("pred{}", preds.len() + 1);
            preds.insert(id.clone(), Pred { scenario: s.clone(), polls: 0, canceled: false });
            if s == ReplicateScenario::Inline {
                let out = json!(format!("{base}/files/{id}.png"));
                return recorder::json(201, prediction(&id, base, "succeeded", out, Value::Null));
            }
            return recorder::json(201, prediction(&id, base, "starting", Value::Null, Value::Null));
        }
        let Some(rest) = r.path.strip_prefix("/v1/predictions/") else {
            return recorder::json(404, problem(404, "Not found"));
        };
        let (id, cancel) = match rest.strip_suffix("/cancel") {
            Some(id) => (id.to_string(), true),
            None => (rest.to_string(), false),
        };
        let Some(p) = preds.get_mut(&id) else {
            return recorder::json(404, problem(404, "The requested resource could not be found."));
        };
        if cancel {
            p.canceled = true;
            return recorder::json(200, prediction(&id, base, "canceled", Value::Null, Value::Null));
        }
        if p.canceled {
            return recorder::json(200, prediction(&id, base, "canceled", Value::Null, Value::Null));
        }
        if held.load(Ordering::SeqCst) {
            return recorder::json(200, prediction(&id, base, "processing", Value::Null, Value::Null));
        }
        p.polls += 1;
        let n = p.polls;
        let out = json!([format!("{base}/files/{id}.png")]);
        let (status, output, error) = match &p.scenario {
            ReplicateScenario::Success { .. } if n == 1 => ("starting", Value::Null, Value::Null),
            ReplicateScenario::Success { processing_polls } if n <= processing_polls + 1 => {
                ("processing", Value::Null, Value::Null)
            }
            ReplicateScenario::Failed(_) if n == 1 => ("processing", Value::Null, Value::Null),
            ReplicateScenario::Failed(e) => ("failed", Value::Null, json!(e)),
            _ => ("succeeded", out, Value::Null),
        };
        recorder::json(200, prediction(&id, base, status, output, error))
    })
}
