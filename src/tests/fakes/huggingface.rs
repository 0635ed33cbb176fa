//! A fake Hugging Face router (protocols.md §6): `POST /hf-inference/models/{owner}/{name}`
//! answers per the [`HfScenario`]: raw PNG bytes on success, `{"error": …}` JSON otherwise
//! (503 with `estimated_time` while "loading").

use super::recorder::{self, Recorded, Recorder};
use axum::response::Response;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// How the model route answers.
#[derive(Debug, Clone, PartialEq)]
pub enum HfScenario {
    /// 200 `image/png` bytes.
    Image,
    /// 503 `{"error": "Model … is currently loading", "estimated_time": secs}` this many times,
    /// then the image.
    Loading { times: u32, estimated_time: f64 },
    /// This status and `{"error": message}`.
    Error { status: u16, message: String },
}

pub struct FakeHf {
    pub rec: Recorder,
    png: Vec<u8>,
}

impl FakeHf {
    pub async fn start(s: HfScenario) -> FakeHf {
        let png = super::gradient_png(32, 48);
        let rec = Recorder::start(responder(s, png.clone())).await;
        FakeHf { rec, png }
    }

    /// `http://127.0.0.1:<port>/hf-inference`.
    pub fn base_url(&self) -> String {
        format!("{}/hf-inference", self.rec.root())
    }

    pub fn set(&self, s: HfScenario) {
        self.rec.set(responder(s, self.png.clone()));
    }

    pub fn png(&self) -> Vec<u8> {
        self.png.clone()
    }
}

fn responder(s: HfScenario, png: Vec<u8>) -> recorder::Responder {
    let loaded = Arc::new(AtomicU32::new(0));
    Arc::new(move |r: &Recorded, _base: &str| -> Response {
        let Some(model) = r.path.strip_prefix("/hf-inference/models/") else {
            return recorder::json(404, json!({"error": "Not Found"}));
        };
        if r.method != "POST" {
            return recorder::json(405, json!({"error": "Method Not Allowed"}));
        }
        match &s {
            HfScenario::Image => recorder::bytes("image/png", png.clone()),
            HfScenario::Loading { times, estimated_time } => {
                if loaded.fetch_add(1, Ordering::SeqCst) < *times {
                    recorder::json(
                        503,
                        json!({"error": format!("Model {model} is currently loading"), "estimated_time": estimated_time}),
                    )
                } else {
                    recorder::bytes("image/png", png.clone())
                }
            }
            HfScenario::Error { status, message } => recorder::json(*status, json!({"error": message})),
        }
    })
}
