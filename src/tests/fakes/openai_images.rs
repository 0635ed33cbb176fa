//! A fake OpenAI Images API (protocols.md §4.1–4.3) under `/v1`: `POST /v1/images/generations`
//! (JSON) and `POST /v1/images/edits` (multipart) answer per the [`ImagesScenario`];
//! `GET /files/{name}` serves the result PNG for `url` answers. Everything is recorded.

use super::recorder::{self, Recorded, Recorder};
use axum::response::Response;
use base64::Engine as _;
use serde_json::json;
use std::sync::Arc;

/// How the image routes answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ImagesScenario {
    /// 200 `{"created", "data": [{"b64_json": <png>}], "usage"…}` (GPT-image style).
    B64,
    /// 200 `{"data": [{"url": "<this server>/files/result.png", "revised_prompt"}]}` (DALL·E style).
    Url,
    /// 200 with a `url` pointing at this string (hostile URLs).
    UrlTo(String),
    /// An error `{"error": {"message", "type", "param": null, "code"}}` with this status and
    /// headers (e.g. `retry-after`).
    Error { status: u16, code: String, message: String, headers: Vec<(&'static str, String)> },
}

/// The fake server.
pub struct FakeImages {
    pub rec: Recorder,
    png: Vec<u8>,
}

impl FakeImages {
    pub async fn start(scenario: ImagesScenario) -> FakeImages {
        let png = super::gradient_png(48, 32);
        let rec = Recorder::start(responder(scenario, png.clone())).await;
        FakeImages { rec, png }
    }

    /// `http://127.0.0.1:<port>/v1`: the provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.rec.root())
    }

    pub fn set(&self, scenario: ImagesScenario) {
        self.rec.set(responder(scenario, self.png.clone()));
    }

    /// The PNG every answer carries.
    pub fn png(&self) -> Vec<u8> {
        self.png.clone()
    }

    /// Requests to the image routes (not file downloads).
    pub fn calls(&self) -> Vec<Recorded> {
        self.rec.requests().into_iter().filter(|r| r.path.starts_with("/v1/images/")).collect()
    }
}

fn responder(scenario: ImagesScenario, png: Vec<u8>) -> recorder::Responder {
    Arc::new(move |r: &Recorded, base: &str| -> Response {
        if r.path.starts_with("/files/") {
            return recorder::bytes("image/png", png.clone());
        }
        if r.method != "POST" || !matches!(r.path.as_str(), "/v1/images/generations" | "/v1/images/edits") {
            return recorder::json(
                404,
                json!({"error": {"message": "Invalid URL", "type": "invalid_request_error", "param": null, "code": null}}),
            );
        }
        match &scenario {
            ImagesScenario::B64 => recorder::json(
                200,
                json!({"created": 1_700_000_000, "data": [{"b64_json": base64::engine::general_purpose::STANDARD.encode(&png)}],
                       "background": "opaque", "output_format": "png", "quality": "medium", "size": "1024x1024",
                       "usage": {"input_tokens": 50, "output_tokens": 1056, "total_tokens": 1106}}),
            ),
            ImagesScenario::Url => recorder::json(
                200,
                json!({"created": 1_700_000_000, "data": [{"url": format!("{base}/files/result.png"), "revised_prompt": "a lighthouse"}]}),
            ),
            ImagesScenario::UrlTo(url) => recorder::json(200, json!({"created": 1, "data": [{"url": url}]})),
            ImagesScenario::Error { status, code, message, headers } => recorder::json_with(
                *status,
                headers,
                json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}}),
            ),
        }
    })
}
