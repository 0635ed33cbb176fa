//! A fake OpenAI-compatible chat completions server (protocols.md §4.4).
//!
//! `POST /v1/chat/completions` answers per the [`ChatScenario`] (default: the assistant says
//! "a red fox in the snow"); every request is recorded with its `Authorization` header and
//! JSON body. Any other route answers 404 `{"error": {"message": …}}`.

use super::Server;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex, MutexGuard};

/// How the server answers a completion request.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatScenario {
    /// 200 with one choice: this content and finish reason (`stop`, `content_filter`, …).
    Answer { content: String, finish_reason: String },
    /// This HTTP status and JSON body.
    Status { status: u16, body: Value },
    /// Accepts the request and never answers.
    Hang,
}

/// One request received.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Debug)]
struct ChatState {
    scenario: ChatScenario,
    requests: Vec<ChatRequest>,
}

type Shared = Arc<Mutex<ChatState>>;

/// A fake chat completions server on `127.0.0.1:<random port>`; stops when dropped.
pub struct FakeChat {
    server: Server,
    state: Shared,
}

impl FakeChat {
    pub async fn start() -> FakeChat {
        let state = Arc::new(Mutex::new(ChatState {
            scenario: ChatScenario::Answer { content: "a red fox in the snow".into(), finish_reason: "stop".into() },
            requests: Vec::new(),
        }));
        let server = Server::start(axum::Router::new().fallback(handle).with_state(state.clone())).await;
        FakeChat { server, state }
    }

    /// `http://127.0.0.1:<port>/v1`: use as `[llm] base_url`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.base_url())
    }

    pub fn set_scenario(&self, s: ChatScenario) {
        lock(&self.state).scenario = s;
    }

    /// Requests received, oldest first.
    pub fn requests(&self) -> Vec<ChatRequest> {
        lock(&self.state).requests.clone()
    }
}

fn lock(s: &Shared) -> MutexGuard<'_, ChatState> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let scenario = {
        let mut st = lock(&state);
        st.requests.push(ChatRequest {
            path: uri.path().to_string(),
            authorization: headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_string),
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        });
        st.scenario.clone()
    };
    if method != Method::POST || uri.path() != "/v1/chat/completions" {
        return (StatusCode::NOT_FOUND, axum::Json(json!({"error": {"message": "unknown route"}}))).into_response();
    }
    match scenario {
        ChatScenario::Answer { content, finish_reason } => axum::Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }))
        .into_response(),
        ChatScenario::Status { status, body } => {
            (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(body)).into_response()
        }
        ChatScenario::Hang => std::future::pending().await,
    }
}
