//! Hugging Face Inference Providers, text to image on HF's own provider (protocols.md §6):
//! `POST {base_url}/models/{model_id}` (base default
//! `https://router.huggingface.co/hf-inference`), `Authorization: Bearer hf_…`,
//! `Accept: image/png`, body `{"inputs": "<prompt>", "parameters": {…}}`; a 200 answer is the
//! image bytes themselves.
//!
//! The call is synchronous: `submit` parks the request ([`super::Parked`]) and `wait` calls,
//! retrying while the model loads (503 with `estimated_time`), which it reports as queue time.

use super::http::{self, MAX_DOWNLOAD_BYTES};
use super::{
    GenerateRequest, GeneratedFile, ImageProvider, Parked, ProgressFn, ProviderError, ProviderProgress, SizeParam,
    Submission,
};
use crate::config::ProviderConfig;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// Bound on one inference call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest single wait for a loading model, whatever `estimated_time` says.
pub const MAX_LOADING_WAIT: Duration = Duration::from_secs(120);
/// Longest total wait for a loading model inside one `wait` (the job's own timeout usually ends
/// it first).
pub const MAX_LOADING_TOTAL: Duration = Duration::from_secs(900);

/// A Hugging Face provider (`kind = "huggingface"`); a model's `endpoint` is the model id
/// (`black-forest-labs/FLUX.1-schnell`).
///
/// Errors (§6, JSON `{"error": "…"}`): 503 with `estimated_time` → waits (≤ 120 s each, ≤ 15 min
/// in all) and calls again, reporting `queue_position: 0`; 503 without it, 504 and 429 →
/// `Transient` (`RateLimited` with `Retry-After`); 402 → `PaymentRequired` (credits exhausted
/// or a paid model: that model is disabled, the provider keeps its others); 403 on a gated
/// model → `Misconfigured` (see [`classify_error`]); other 401/403 → `Unauthorized`; 404 (model
/// not served) → `Retired`; 400/422 → `Rejected`.
pub struct HuggingfaceProvider {
    acct: http::Account,
    parked: Parked,
}

impl std::fmt::Debug for HuggingfaceProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HuggingfaceProvider").field(&self.acct).finish()
    }
}

/// One call's outcome before retry decisions.
enum Answer {
    Image(GeneratedFile),
    /// 503 "Model … is currently loading" with `estimated_time` (seconds).
    Loading(Duration),
}

impl HuggingfaceProvider {
    /// Builds the client from `[[providers]]` config (`base_url`, token, `proxy`).
    ///
    /// Errors: `Unauthorized` without a token; `Failed` for a bad base_url or HTTP client.
    pub fn new(cfg: &ProviderConfig) -> Result<HuggingfaceProvider, ProviderError> {
        Ok(HuggingfaceProvider { acct: http::Account::new(cfg)?, parked: Parked::default() })
    }

    async fn call(&self, req: &GenerateRequest) -> Result<Answer, ProviderError> {
        let model = req.endpoint.trim().trim_matches('/');
        let resp = self
            .acct
            .http
            .post(format!("{}/models/{model}", self.acct.base_url))
            .bearer_auth(self.acct.key.expose())
            .header(reqwest::header::ACCEPT, "image/png")
            .json(&build_body(req))
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(|e| http::classify(&e))?;
        let status = resp.status().as_u16();
        let wait = http::retry_after(resp.headers());
        let ctype = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = http::read_limited(resp, MAX_DOWNLOAD_BYTES).await?;
        if (200..300).contains(&status) {
            let sniffed = super::sniff_mime(&body);
            if !sniffed.starts_with("image/") {
                let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
                return Err(ProviderError::Failed(format!("hugging face answered {ctype}, not an image: {text}")));
            }
            return Ok(Answer::Image(GeneratedFile { mime: sniffed.to_string(), bytes: body, is_demo: false }));
        }
        let text = String::from_utf8_lossy(&body);
        if status == 503 {
            if let Some(secs) = estimated_time(&text) {
                return Ok(Answer::Loading(Duration::from_secs_f64(secs).min(MAX_LOADING_WAIT)));
            }
        }
        Err(classify_error(status, wait, &text))
    }
}

#[async_trait::async_trait]
impl ImageProvider for HuggingfaceProvider {
    fn id(&self) -> &str {
        &self.acct.id
    }

    /// Checks the request and parks it (no HTTP): the id is local, see [`Parked`].
    async fn submit(&self, req: &GenerateRequest, _preassigned: Option<&str>) -> Result<Submission, ProviderError> {
        if req.endpoint.trim().is_empty() {
            return Err(ProviderError::Misconfigured(format!("model {}: no Hugging Face model id", req.model_id)));
        }
        if !req.input_images.is_empty() {
            return Err(ProviderError::Misconfigured(format!(
                "model {}: the Hugging Face kind does text to image only",
                req.model_id
            )));
        }
        Ok(self.parked.park(req))
    }

    async fn wait(&self, sub: &Submission, progress: ProgressFn<'_>) -> Result<Vec<GeneratedFile>, ProviderError> {
        let req = self.parked.get(sub, &self.acct.id)?;
        let mut loading = Duration::ZERO;
        let out = loop {
            progress(ProviderProgress { running: true, ..Default::default() });
            match self.call(&req).await {
                Ok(Answer::Image(file)) => break Ok(vec![file]),
                Ok(Answer::Loading(d)) if loading < MAX_LOADING_TOTAL => {
                    // Shown to the user as waiting in the queue, not as running.
                    progress(ProviderProgress { queue_position: Some(0), ..Default::default() });
                    tracing::info!(provider = %self.acct.id, secs = d.as_secs_f64(), "model loading; waiting");
                    loading += d.max(Duration::from_millis(10));
                    tokio::time::sleep(d).await;
                }
                Ok(Answer::Loading(_)) => {
                    break Err(ProviderError::Transient("the model is still loading after 15 minutes".into()));
                }
                Err(e) => break Err(e),
            }
        };
        self.parked.settle(sub, out)
    }

    async fn cancel(&self, sub: &Submission) -> Result<(), ProviderError> {
        self.parked.remove(sub);
        Ok(())
    }
}

/// The body (§6): `inputs` = the prompt; `parameters` = `negative_prompt` (if any), `width` /
/// `height` (unless `size_param = "none"`), `seed`, then the model's params and chosen options
/// (`num_inference_steps`, `guidance_scale`, …), which win.
pub fn build_body(req: &GenerateRequest) -> Value {
    let mut params = Map::new();
    if let Some(n) = req.negative.as_deref().filter(|n| !n.trim().is_empty()) {
        params.insert("negative_prompt".into(), json!(n));
    }
    if req.size_param != SizeParam::None {
        params.insert("width".into(), json!(req.width));
        params.insert("height".into(), json!(req.height));
    }
    params.insert("seed".into(), json!(req.seed));
    for (k, v) in &req.extra {
        params.insert(k.clone(), v.clone());
    }
    json!({"inputs": req.prompt, "parameters": params})
}

/// `estimated_time` (seconds) of a loading answer `{"error": "Model … is currently loading",
/// "estimated_time": 20.0}`.
pub fn estimated_time(body: &str) -> Option<f64> {
    let v: Value = serde_json::from_str(body).ok()?;
    v["estimated_time"].as_f64().filter(|s| s.is_finite() && *s >= 0.0)
}

/// Classifies an error answer. A 403 naming a gated / restricted model ("Access to model … is
/// restricted", "gated") is `Misconfigured`: the token works, but this model needs its terms
/// accepted on huggingface.co, so the engine disables this model only (and alerts the admins
/// with the reason) — `Unauthorized` would switch off every model of the provider, and
/// `PaymentRequired` would tell the admins to pay. Other 401/403 are `Unauthorized`.
pub fn classify_error(status: u16, retry_after: Option<Duration>, body: &str) -> ProviderError {
    let message = http::error_detail(body);
    let lower = message.to_lowercase();
    if status == 403 && (lower.contains("gated") || lower.contains("restricted") || lower.contains("access to model")) {
        return ProviderError::Misconfigured(format!(
            "gated model: {message} (accept its terms on huggingface.co with the token's account)"
        ));
    }
    super::classify_answer(status, retry_after, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_and_gated() {
        assert_eq!(estimated_time(r#"{"error":"Model x is currently loading","estimated_time":20.5}"#), Some(20.5));
        assert_eq!(estimated_time(r#"{"error":"Service Unavailable"}"#), None);
        let gated = r#"{"error":"Access to model black-forest-labs/FLUX.1-dev is restricted. You must have access to it and be authenticated to access it. Please log in."}"#;
        assert!(
            matches!(classify_error(403, None, gated), ProviderError::Misconfigured(m) if m.contains("restricted"))
        );
        assert!(matches!(
            classify_error(403, None, r#"{"error":"Invalid credentials"}"#),
            ProviderError::Unauthorized(_)
        ));
        assert!(matches!(
            classify_error(402, None, r#"{"error":"You have exceeded your monthly included credits"}"#),
            ProviderError::PaymentRequired(_)
        ));
    }
}
