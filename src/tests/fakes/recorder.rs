//! A recording HTTP server for the synchronous and prediction APIs (OpenAI Images, Gemini,
//! Hugging Face, Replicate): every request is kept (method, path, query, headers, body) and
//! answered by a vendor-specific responder, which sees the request and the count of earlier
//! ones. The vendor fakes (`openai_images`, `gemini`, `huggingface`, `replicate`) are thin
//! scenario enums over it.

use super::Server;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use std::sync::{Arc, Mutex, MutexGuard};

/// One request received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
    }

    /// The body as JSON (`Null` if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What a responder gets: the request, and the base URL of this server (for URLs in answers).
pub type Responder = Arc<dyn Fn(&Recorded, &str) -> Response + Send + Sync>;

struct St {
    requests: Vec<Recorded>,
    responder: Responder,
    base_url: String,
}

type Shared = Arc<Mutex<St>>;

/// The server; stops when dropped.
pub struct Recorder {
    server: Server,
    state: Shared,
}

impl Recorder {
    pub async fn start(responder: Responder) -> Recorder {
        let state = Arc::new(Mutex::new(St { requests: Vec::new(), responder, base_url: String::new() }));
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone())
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024));
        let server = Server::start(router).await;
        lock(&state).base_url = server.base_url();
        Recorder { server, state }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn root(&self) -> String {
        self.server.base_url()
    }

    /// Replaces the responder.
    pub fn set(&self, responder: Responder) {
        lock(&self.state).responder = responder;
    }

    /// Requests received, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }
}

fn lock(s: &Shared) -> MutexGuard<'_, St> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let rec = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers,
        body: body.to_vec(),
    };
    let (responder, base) = {
        let mut st = lock(&state);
        st.requests.push(rec.clone());
        (st.responder.clone(), st.base_url.clone())
    };
    responder(&rec, &base)
}

/// A JSON answer with this status.
pub fn json(status: u16, v: serde_json::Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// A JSON answer with extra headers.
pub fn json_with(status: u16, headers: &[(&'static str, String)], v: serde_json::Value) -> Response {
    let mut r = json(status, v);
    for (k, val) in headers {
        if let Ok(hv) = axum::http::HeaderValue::from_str(val) {
            r.headers_mut().insert(*k, hv);
        }
    }
    r
}

/// Raw bytes with a content type.
pub fn bytes(content_type: &'static str, b: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, content_type)], b).into_response()
}

/// One multipart part: (name, file name, content type, bytes).
pub type Part = (String, Option<String>, Option<String>, Vec<u8>);

/// The parts of a `multipart/form-data` body: (name, file name, content type, bytes). A
/// small parser for tests: boundary from the request's `Content-Type`.
pub fn multipart_parts(rec: &Recorded) -> Vec<Part> {
    let ct = rec.header("content-type").unwrap_or_default();
    let Some(boundary) = ct.split("boundary=").nth(1) else { return vec![] };
    let delim = format!("--{}", boundary.trim_matches('"'));
    let body = &rec.body;
    let mut out = Vec::new();
    let positions: Vec<usize> =
        body.windows(delim.len()).enumerate().filter(|(_, w)| *w == delim.as_bytes()).map(|(i, _)| i).collect();
    for pair in positions.windows(2) {
        let part = &body[pair[0] + delim.len()..pair[1]];
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let Some(split) = part.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&part[..split]).to_string();
        let mut data = part[split + 4..].to_vec();
        if data.ends_with(b"\r\n") {
            data.truncate(data.len() - 2);
        }
        let disposition = head.lines().next().unwrap_or_default().to_string();
        let attr = |key: &str| {
            disposition
                .split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix(&format!("{key}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
        };
        let name = attr("name").unwrap_or_default();
        let ctype = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Type: ").or_else(|| l.strip_prefix("content-type: ")))
            .map(|s| s.trim().to_string());
        out.push((name, attr("filename"), ctype, data));
    }
    out
}
