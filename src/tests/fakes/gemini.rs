//! A fake Gemini API (protocols.md §5) under `/v1beta`: `POST
//! /v1beta/models/{model}:generateContent` answers per the [`GeminiScenario`]; the retired Imagen
//! `:predict` method, any `imagen-*` model and anything else answer 404 `NOT_FOUND` in Google's error shape.

use super::recorder::{self, Recorded, Recorder};
use axum::response::Response;
use base64::Engine as _;
use serde_json::json;
use std::sync::Arc;

/// How `generateContent` answers.
#[derive(Debug, Clone, PartialEq)]
pub enum GeminiScenario {
    /// 200: a text part then an `inlineData` PNG part, `finishReason: STOP`.
    Image,
    /// 200 with no candidates and `promptFeedback.blockReason`.
    Blocked(String),
    /// 200 with one candidate without an image and this `finishReason`.
    NoImage(String),
    /// `{"error": {"code", "message", "status"}}` with this HTTP status.
    Error { status: u16, canonical: String, message: String },
}

pub struct FakeGemini {
    pub rec: Recorder,
    png: Vec<u8>,
}

impl FakeGemini {
    pub async fn start(s: GeminiScenario) -> FakeGemini {
        let png = super::gradient_png(40, 30);
        let rec = Recorder::start(responder(s, png.clone())).await;
        FakeGemini { rec, png }
    }

    /// `http://127.0.0.1:<port>/v1beta`.
    pub fn base_url(&self) -> String {
        format!("{}/v1beta", self.rec.root())
    }

    pub fn set(&self, s: GeminiScenario) {
        self.rec.set(responder(s, self.png.clone()));
    }

    pub fn png(&self) -> Vec<u8> {
        self.png.clone()
    }
}

fn error(status: u16, canonical: &str, message: &str) -> Response {
    recorder::json(status, json!({"error": {"code": status, "message": message, "status": canonical}}))
}

fn responder(s: GeminiScenario, png: Vec<u8>) -> recorder::Responder {
    Arc::new(move |r: &Recorded, _base: &str| -> Response {
        let Some(model) = r.path.strip_prefix("/v1beta/models/") else {
            return error(404, "NOT_FOUND", "Requested entity was not found.");
        };
        if let Some(m) = model.strip_suffix(":predict") {
            return error(
                404,
                "NOT_FOUND",
                &format!(
                    "models/{m} is not found for API version v1beta, or is not supported for predict. Call ListModels to see the list of available models and their supported methods."
                ),
            );
        }
        if let Some(m) = model.strip_suffix(":generateContent").filter(|m| m.starts_with("imagen-")) {
            // Imagen models never had generateContent, and :predict is shut down (§5.1).
            return error(
                404,
                "NOT_FOUND",
                &format!(
                    "models/{m} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."
                ),
            );
        }
        if r.method != "POST" || !model.ends_with(":generateContent") {
            return error(404, "NOT_FOUND", "Requested entity was not found.");
        }
        let usage = json!({"promptTokenCount": 7, "candidatesTokenCount": 1290, "totalTokenCount": 1297});
        match &s {
            GeminiScenario::Image => recorder::json(
                200,
                json!({
                "candidates": [{"content": {"role": "model", "parts": [
                    {"text": "Here is your image."},
                    {"inlineData": {"mimeType": "image/png", "data": base64::engine::general_purpose::STANDARD.encode(&png)}}
                ]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": usage, "modelVersion": "gemini-2.5-flash-image"}),
            ),
            GeminiScenario::Blocked(reason) => {
                recorder::json(200, json!({"promptFeedback": {"blockReason": reason}, "usageMetadata": usage}))
            }
            GeminiScenario::NoImage(reason) => recorder::json(
                200,
                json!({
                "candidates": [{"content": {"role": "model", "parts": []}, "finishReason": reason, "index": 0}],
                "usageMetadata": usage}),
            ),
            GeminiScenario::Error { status, canonical, message } => error(*status, canonical, message),
        }
    })
}
