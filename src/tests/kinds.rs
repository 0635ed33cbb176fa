//! Provider kinds of issue 22 (OpenAI Images, Gemini, Hugging Face, Replicate) against fakes of
//! their real request/response shapes (protocols.md §4–§7): the exact request each fake
//! received, every documented error class, and one end-to-end job per kind through the
//! emulator (a Russian user gets the picture; a refusal is told in Russian and the hold released).

use super::fakes::recorder::{Recorded, multipart_parts};
use super::harness::*;
use super::providers::request;
use crate::config::{ProviderConfig, ProviderKind};
use crate::domain::{Credits, Task, UserId};
use crate::providers::{GenerateRequest, ImageProvider, InputImage, ProviderError, SizeParam, Submission};
use crate::store::records::OpKind;
use serde_json::{Value, json};
use std::time::Duration;

const KEY: &str = "sk-test-secret";

fn cfg(kind: ProviderKind, base_url: &str) -> ProviderConfig {
    super::providers::cfg_keyed(kind, base_url, KEY)
}

/// An edit request with two photos (4×2 PNG, 2×4 PNG).
fn edit_request(endpoint: &str) -> GenerateRequest {
    let mut r = request(endpoint);
    r.task = Task::Edit;
    r.prompt = "make the sky purple".into();
    r.input_images = vec![
        InputImage { bytes: super::fakes::gradient_png(4, 2), mime: "image/png".into() },
        InputImage { bytes: super::fakes::gradient_png(2, 4), mime: "image/png".into() },
    ];
    r
}

/// submit then wait (10 s bound).
async fn run(
    p: &dyn ImageProvider,
    r: &GenerateRequest,
) -> Result<Vec<crate::providers::GeneratedFile>, ProviderError> {
    let sub = p.submit(r, None).await?;
    tokio::time::timeout(Duration::from_secs(10), p.wait(&sub, &|_| {})).await.expect("wait finished in time")
}

fn bearer() -> String {
    format!("Bearer {KEY}")
}

fn text_part(parts: &[super::fakes::recorder::Part], name: &str) -> Option<String> {
    parts.iter().find(|p| p.0 == name && p.1.is_none()).map(|p| String::from_utf8_lossy(&p.3).to_string())
}

/// Terminal job of `user` (waits for it).
async fn terminal_job(h: &Harness, user: i64) -> crate::store::records::JobRecord {
    for _ in 0..600 {
        let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
        if let Some(j) = jobs.into_iter().rev().find(|j| j.user_id == UserId(user)) {
            if j.status.is_terminal() {
                return j;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job never finished");
}

/// An app with one provider of `kind` at `base` and its text-to-image model "Vendor model"
/// (price 10) whose `endpoint` is `endpoint`, plus a demo model.
async fn harness(kind: ProviderKind, base: String, endpoint: &'static str) -> Harness {
    Harness::start(move |d| {
        let mut c = test_config(d);
        c.providers.push(provider("vendor", kind, &base));
        let mut m = model("vm", "vendor", 10);
        m.endpoint = endpoint.into();
        m.display_name = "Vendor model".into();
        c.models.push(m);
        // A second model, so the bot asks which one (as in a real catalog).
        c.providers.push(provider("demo", ProviderKind::Demo, ""));
        c.models.push(model("spare", "demo", 5));
        c
    })
    .await
}

/// A Russian user asks for a square picture on the vendor model.
async fn order(h: &Harness, user: i64) {
    h.text(user, "ru", "/start");
    h.wait_for(user, 20, "welcome", |m| m.iter().any(|x| x["from_bot"] == true)).await;
    h.create(user, "ru", "маяк на закате", "Vendor model", "Квадрат").await;
}

/// The picture arrives; the ledger shows hold + capture.
async fn assert_delivered(h: &Harness, user: i64) {
    h.wait_for(user, 30, "the picture", |_| h.photos(user).len() == 1).await;
    terminal_job(h, user).await;
    assert_eq!(kinds(&h.ledger(user).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!(h.balance(user).await, Credits(90));
    h.verify_clean().await;
    h.assert_no_rejections();
}

/// The user is told `needle` (Russian); the hold is released.
async fn assert_refused(h: &Harness, user: i64, needle: &str) -> Value {
    let m = h.wait_text(user, needle).await;
    terminal_job(h, user).await;
    assert!(h.photos(user).is_empty());
    assert_eq!(kinds(&h.ledger(user).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Release]);
    assert_eq!(h.balance(user).await, Credits(100));
    h.verify_clean().await;
    h.assert_no_rejections();
    m
}

// ------------------------------------------------------------------------------------- OpenAI

mod openai {
    use super::super::fakes::openai_images::{FakeImages, ImagesScenario};
    use super::*;
    use crate::providers::openai::OpenaiProvider;

    fn error(status: u16, code: &str, message: &str) -> ImagesScenario {
        ImagesScenario::Error { status, code: code.into(), message: message.into(), headers: vec![] }
    }

    #[tokio::test]
    async fn kinds_openai_generation_sends_the_documented_json_and_decodes_b64() {
        let f = FakeImages::start(ImagesScenario::B64).await;
        let p = OpenaiProvider::new(&cfg(ProviderKind::Openai, &f.base_url())).expect("provider");
        let mut r = request("gpt-image-1");
        r.extra.insert("quality".into(), json!("high"));
        r.extra.insert("background".into(), json!("transparent"));
        let files = run(&p, &r).await.expect("result");
        assert_eq!((files.len(), files[0].bytes == f.png(), files[0].mime.as_str()), (1, true, "image/png"));
        let calls = f.calls();
        assert_eq!(calls.len(), 1);
        let c: &Recorded = &calls[0];
        assert_eq!((c.method.as_str(), c.path.as_str()), ("POST", "/v1/images/generations"));
        assert_eq!(c.header("authorization"), Some(bearer()));
        assert!(c.header("content-type").unwrap_or_default().starts_with("application/json"));
        assert_eq!(
            c.json(),
            json!({"model": "gpt-image-1", "prompt": "a lighthouse at dusk", "n": 1, "size": "1024x1536",
                   "quality": "high", "background": "transparent"}),
            "no response_format for GPT-image models, no negative prompt"
        );
    }

    #[tokio::test]
    async fn kinds_openai_dalle_url_answer_is_downloaded_and_hostile_urls_refused() {
        let f = FakeImages::start(ImagesScenario::Url).await;
        let p = OpenaiProvider::new(&cfg(ProviderKind::Openai, &f.base_url())).expect("provider");
        let mut r = request("dall-e-3");
        r.width = 96;
        r.height = 64;
        let files = run(&p, &r).await.expect("result");
        assert_eq!(files[0].bytes, f.png());
        let body = f.calls()[0].json();
        assert_eq!((&body["size"], &body["response_format"]), (&json!("1792x1024"), &json!("b64_json")));
        let file_get = f.rec.requests().into_iter().find(|q| q.path == "/files/result.png").expect("downloaded");
        assert_eq!(file_get.header("authorization"), None, "the key never goes with a result URL");
        for hostile in ["file:///etc/passwd", "ftp://example.com/x.png", "data:image/png;base64,AAAA"] {
            f.set(ImagesScenario::UrlTo(hostile.into()));
            let e = run(&p, &r).await.expect_err(hostile);
            assert!(matches!(e, ProviderError::Failed(_)), "{hostile}: {e:?}");
        }
    }

    #[tokio::test]
    async fn kinds_openai_edit_sends_each_photo_as_an_image_array_part() {
        let f = FakeImages::start(ImagesScenario::B64).await;
        let p = OpenaiProvider::new(&cfg(ProviderKind::Openai, &f.base_url())).expect("provider");
        let r = edit_request("gpt-image-1");
        run(&p, &r).await.expect("result");
        let c = &f.calls()[0];
        assert_eq!(c.path, "/v1/images/edits");
        assert_eq!(c.header("authorization"), Some(bearer()));
        assert!(c.header("content-type").unwrap_or_default().starts_with("multipart/form-data; boundary="));
        let parts = multipart_parts(c);
        assert_eq!(text_part(&parts, "model").as_deref(), Some("gpt-image-1"));
        assert_eq!(text_part(&parts, "prompt").as_deref(), Some("make the sky purple"));
        assert_eq!(text_part(&parts, "n").as_deref(), Some("1"));
        assert_eq!(text_part(&parts, "size").as_deref(), Some("1024x1536"));
        let images: Vec<_> = parts.iter().filter(|p| p.0 == "image[]").collect();
        assert_eq!(images.len(), 2, "{:?}", parts.iter().map(|p| &p.0).collect::<Vec<_>>());
        assert_eq!(images[0].3, r.input_images[0].bytes, "in order");
        assert_eq!(images[1].3, r.input_images[1].bytes);
        assert_eq!((images[0].1.as_deref(), images[0].2.as_deref()), (Some("image-1.png"), Some("image/png")));
    }

    #[tokio::test]
    async fn kinds_openai_error_classes() {
        let f = FakeImages::start(ImagesScenario::B64).await;
        let p = OpenaiProvider::new(&cfg(ProviderKind::Openai, &f.base_url())).expect("provider");
        let r = request("gpt-image-1");
        f.set(error(400, "moderation_blocked", "Your request was rejected by the safety system."));
        let e = run(&p, &r).await.expect_err("moderation");
        assert!(
            matches!(&e, ProviderError::Rejected(m) if m == "Your request was rejected by the safety system."),
            "{e:?}"
        );
        f.set(error(400, "content_policy_violation", "Your prompt may contain text that is not allowed."));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Rejected(_))));
        f.set(ImagesScenario::Error {
            status: 429,
            code: "rate_limit_exceeded".into(),
            message: "Rate limit reached".into(),
            headers: vec![("retry-after", "7".into())],
        });
        let e = run(&p, &r).await.expect_err("429");
        assert!(
            matches!(e, ProviderError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(7)),
            "{e:?}"
        );
        f.set(ImagesScenario::Error {
            status: 429,
            code: "rate_limit_exceeded".into(),
            message: "Rate limit reached".into(),
            headers: vec![("retry-after-ms", "1500".into())],
        });
        let e = run(&p, &r).await.expect_err("429 ms");
        assert!(
            matches!(e, ProviderError::RateLimited { retry_after, .. } if retry_after == Duration::from_millis(1500))
        );
        f.set(error(429, "rate_limit_exceeded", "Rate limit reached"));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Transient(_))), "429 without Retry-After");
        f.set(error(429, "insufficient_quota", "You exceeded your current quota"));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Unauthorized(_))), "no money: never retried");
        f.set(error(401, "invalid_api_key", "Incorrect API key provided"));
        let e = run(&p, &r).await.expect_err("401");
        assert!(matches!(&e, ProviderError::Unauthorized(_)) && !e.to_string().contains(KEY), "{e:?}");
        f.set(error(404, "model_not_found", "The model `gpt-image-0` does not exist"));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Retired(_))));
        f.set(error(500, "server_error", "The server had an error"));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Transient(_))));
    }

    #[tokio::test]
    async fn kinds_openai_restored_submission_is_lost_not_called_again() {
        let f = FakeImages::start(ImagesScenario::B64).await;
        let p = OpenaiProvider::new(&cfg(ProviderKind::Openai, &f.base_url())).expect("provider");
        let sub = p.submit(&request("gpt-image-1"), None).await.expect("submit");
        assert!(f.calls().is_empty(), "submit only parks the request");
        let restarted = OpenaiProvider::new(&cfg(ProviderKind::Openai, &f.base_url())).expect("provider");
        let restored: Submission =
            serde_json::from_str(&serde_json::to_string(&sub).expect("persist")).expect("restore");
        assert!(matches!(restarted.wait(&restored, &|_| {}).await, Err(ProviderError::Lost(_))));
        assert!(f.calls().is_empty(), "a restart never calls the vendor again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn kinds_openai_end_to_end_picture_and_russian_refusal() {
        let f = FakeImages::start(ImagesScenario::B64).await;
        let h = harness(ProviderKind::Openai, f.base_url(), "gpt-image-1").await;
        order(&h, 2201).await;
        assert_delivered(&h, 2201).await;
        assert_eq!(f.calls()[0].json()["size"], "1024x1024");

        f.set(error(400, "moderation_blocked", "Your request was rejected by the safety system."));
        order(&h, 2202).await;
        let m = assert_refused(&h, 2202, "Провайдер отклонил запрос").await;
        let text = text_of(&m);
        assert!(text.contains("правила содержания") && !text.contains("safety"), "in Russian: {text}");
    }
}

// ------------------------------------------------------------------------------------- Gemini

mod gemini {
    use super::super::fakes::gemini::{FakeGemini, GeminiScenario};
    use super::*;
    use crate::providers::gemini::GeminiProvider;

    const MODEL: &str = "gemini-2.5-flash-image";

    fn error(status: u16, canonical: &str, message: &str) -> GeminiScenario {
        GeminiScenario::Error { status, canonical: canonical.into(), message: message.into() }
    }

    fn calls(f: &FakeGemini) -> Vec<Recorded> {
        f.rec.requests()
    }

    #[tokio::test]
    async fn kinds_gemini_generate_content_request_and_inline_image_out() {
        let f = FakeGemini::start(GeminiScenario::Image).await;
        let p = GeminiProvider::new(&cfg(ProviderKind::Gemini, &f.base_url())).expect("provider");
        let files = run(&p, &request(MODEL)).await.expect("result");
        assert_eq!((files.len(), files[0].bytes == f.png(), files[0].mime.as_str()), (1, true, "image/png"));
        let c = &calls(&f)[0];
        assert_eq!(
            (c.method.as_str(), c.path.as_str()),
            ("POST", "/v1beta/models/gemini-2.5-flash-image:generateContent")
        );
        assert_eq!(c.header("x-goog-api-key").as_deref(), Some(KEY));
        assert_eq!((c.header("authorization"), c.query.as_deref()), (None, None), "the key only in x-goog-api-key");
        assert_eq!(
            c.json(),
            json!({"contents": [{"role": "user", "parts": [{"text": "a lighthouse at dusk"}]}],
                   "generationConfig": {"responseModalities": ["TEXT", "IMAGE"], "imageConfig": {"aspectRatio": "2:3"}}}),
            "64×96 is nearest 2:3"
        );
    }

    #[tokio::test]
    async fn kinds_gemini_edit_sends_two_inline_photos_after_the_text() {
        let f = FakeGemini::start(GeminiScenario::Image).await;
        let p = GeminiProvider::new(&cfg(ProviderKind::Gemini, &f.base_url())).expect("provider");
        let mut r = edit_request(MODEL);
        r.extra.insert("imageSize".into(), json!("2K"));
        run(&p, &r).await.expect("result");
        let body = calls(&f)[0].json();
        let parts = body["contents"][0]["parts"].as_array().expect("parts").clone();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], json!({"text": "make the sky purple"}));
        for (i, part) in parts[1..].iter().enumerate() {
            assert_eq!(part["inlineData"]["mimeType"], "image/png");
            let b = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                part["inlineData"]["data"].as_str().expect("b64"),
            )
            .expect("base64");
            assert_eq!(b, r.input_images[i].bytes, "photo {i} in order");
        }
        assert_eq!(
            body["generationConfig"]["imageConfig"],
            json!({"imageSize": "2K"}),
            "an edit keeps the photo's shape"
        );
    }

    #[tokio::test]
    async fn kinds_gemini_error_classes() {
        let f = FakeGemini::start(GeminiScenario::Image).await;
        let p = GeminiProvider::new(&cfg(ProviderKind::Gemini, &f.base_url())).expect("provider");
        let r = request(MODEL);
        // The retired Imagen model, as configured by seed 002, and a 404 model.
        let e = run(&p, &request("imagen-4.0-generate-001")).await.expect_err("imagen");
        assert!(matches!(&e, ProviderError::Retired(m) if m.contains("not found")), "{e:?}");
        f.set(error(
            404,
            "NOT_FOUND",
            "models/gemini-2.0-flash-exp-image-generation is not found for API version v1beta",
        ));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Retired(_))));
        f.set(error(400, "FAILED_PRECONDITION", "User location is not supported for the API use."));
        let e = run(&p, &r).await.expect_err("geo");
        assert!(
            matches!(&e, ProviderError::Unauthorized(m) if m.contains("User location is not supported") && m.contains("`proxy`") && m.contains("\"gemini\"")),
            "{e:?}"
        );
        f.set(error(400, "FAILED_PRECONDITION", "Image generation is not available in your country."));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Unauthorized(m)) if m.contains("proxy")));
        f.set(error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."));
        let e = run(&p, &r).await.expect_err("429");
        assert!(
            matches!(e, ProviderError::RateLimited { retry_after, .. } if retry_after == crate::providers::gemini::DEFAULT_RETRY),
            "{e:?}"
        );
        f.set(error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Unauthorized(_))));
        f.set(error(503, "UNAVAILABLE", "The model is overloaded."));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Transient(_))));
        f.set(GeminiScenario::NoImage("IMAGE_SAFETY".into()));
        assert!(
            matches!(run(&p, &r).await, Err(ProviderError::Rejected(m)) if m.contains("safety") && m.contains("IMAGE_SAFETY"))
        );
        f.set(GeminiScenario::Blocked("PROHIBITED_CONTENT".into()));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Rejected(m)) if m.contains("PROHIBITED_CONTENT")));
        f.set(GeminiScenario::NoImage("NO_IMAGE".into()));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Rejected(m)) if m.contains("NO_IMAGE")));
    }

    const ADMIN: i64 = 900;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn kinds_gemini_end_to_end_picture_then_geo_block_disables_with_the_proxy_hint() {
        let f = FakeGemini::start(GeminiScenario::Image).await;
        let base = f.base_url();
        let h = Harness::start(move |d| {
            let mut c = test_config(d);
            c.telegram.admins = vec![ADMIN];
            c.providers.push(provider("gemini", ProviderKind::Gemini, &base));
            let mut m = model("vm", "gemini", 10);
            m.endpoint = MODEL.into();
            m.display_name = "Vendor model".into();
            m.size_param = SizeParam::AspectRatio;
            c.models.push(m);
            c.providers.push(provider("demo", ProviderKind::Demo, ""));
            c.models.push(model("spare", "demo", 5));
            c
        })
        .await;
        h.text(ADMIN, "en", "/start");
        h.wait_text(ADMIN, "Welcome").await;
        order(&h, 2211).await;
        assert_delivered(&h, 2211).await;
        assert_eq!(f.rec.requests()[0].json()["generationConfig"]["imageConfig"]["aspectRatio"], "1:1");

        f.set(error(400, "FAILED_PRECONDITION", "User location is not supported for the API use."));
        order(&h, 2212).await;
        assert_refused(&h, 2212, "Провайдер недоступен").await;
        let alert = h.wait_text(ADMIN, "refuses requests").await;
        assert!(text_of(&alert).contains("set `proxy` for provider \"gemini\""), "{alert}");
    }
}

// ---------------------------------------------------------------------------------- Replicate

mod replicate {
    use super::super::fakes::replicate::{FakeReplicate, ReplicateScenario};
    use super::*;
    use crate::providers::replicate::ReplicateProvider;

    const MODEL: &str = "black-forest-labs/flux-schnell";
    const VERSION: &str = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa";

    fn provider_for(f: &FakeReplicate) -> ReplicateProvider {
        ReplicateProvider::new(&cfg(ProviderKind::Replicate, &f.base_url())).expect("provider")
    }

    fn create_error(status: u16, detail: &str) -> ReplicateScenario {
        ReplicateScenario::CreateError { status, detail: detail.into(), headers: vec![] }
    }

    #[tokio::test]
    async fn kinds_replicate_official_model_creates_with_prefer_wait_then_polls_urls_get() {
        let f = FakeReplicate::start(ReplicateScenario::Success { processing_polls: 2 }).await;
        let p = provider_for(&f);
        let mut r = request(MODEL);
        r.size_param = SizeParam::AspectRatio;
        r.extra.insert("output_format".into(), json!("png"));
        let sub = p.submit(&r, None).await.expect("submit");
        assert_eq!(sub.request_id, "pred1");
        assert_eq!(sub.data["get"], json!(format!("{}/v1/predictions/pred1", f.base_url())));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let cb = move |pr: crate::providers::ProviderProgress| s2.lock().unwrap_or_else(|e| e.into_inner()).push(pr);
        let files = p.wait(&sub, &cb).await.expect("result");
        assert_eq!((files.len(), files[0].bytes == f.png(), files[0].mime.as_str()), (1, true, "image/png"));
        assert!(seen.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|p| p.running), "processing reported");
        let c = &f.creates()[0];
        assert_eq!(c.path, "/v1/models/black-forest-labs/flux-schnell/predictions");
        assert_eq!((c.header("authorization"), c.header("prefer").as_deref()), (Some(bearer()), Some("wait=10")));
        assert_eq!(
            c.json(),
            json!({"input": {"prompt": "a lighthouse at dusk", "seed": 1234, "aspect_ratio": "2:3", "output_format": "png"}})
        );
        let polls = f.polls();
        assert_eq!(polls.len(), 4, "starting, processing ×2, succeeded");
        assert!(polls.iter().all(|q| q.header("authorization") == Some(bearer())));
        let file = f.rec.requests().into_iter().find(|q| q.path.starts_with("/files/")).expect("downloaded");
        assert_eq!(file.header("authorization"), None, "the token never goes with an output URL");
    }

    #[tokio::test]
    async fn kinds_replicate_version_id_and_inline_output() {
        let f = FakeReplicate::start(ReplicateScenario::Inline).await;
        let p = provider_for(&f);
        let files = run(&p, &request(&format!("stability-ai/sdxl:{VERSION}"))).await.expect("result");
        assert_eq!(files[0].bytes, f.png());
        let c = &f.creates()[0];
        assert_eq!(c.path, "/v1/predictions");
        assert_eq!((&c.json()["version"], &c.json()["input"]["width"]), (&json!(VERSION), &json!(64)));
        assert!(f.polls().is_empty(), "Prefer: wait brought the output; nothing to poll");
    }

    #[tokio::test]
    async fn kinds_replicate_restored_submission_resumes_polling_without_a_second_create() {
        let f = FakeReplicate::start(ReplicateScenario::Success { processing_polls: 3 }).await;
        let sub = provider_for(&f).submit(&request(MODEL), None).await.expect("submit");
        // The bot restarts: a new provider, the submission read back from the job record.
        let restored: Submission =
            serde_json::from_str(&serde_json::to_string(&sub).expect("persist")).expect("restore");
        let p = provider_for(&f);
        let files = tokio::time::timeout(Duration::from_secs(10), p.wait(&restored, &|_| {})).await.expect("in time");
        assert_eq!(files.expect("result")[0].bytes, f.png());
        assert_eq!(f.creates().len(), 1, "a restart never creates a second prediction");
        // A stored poll URL off the API's origin is not followed (it would get the token).
        let forged = Submission { request_id: sub.request_id.clone(), data: json!({"get": "http://evil.example/x"}) };
        assert!(p.wait(&forged, &|_| {}).await.is_ok());
        assert!(f.rec.requests().iter().all(|q| !q.path.contains("evil")));
    }

    #[tokio::test]
    async fn kinds_replicate_cancel_posts_urls_cancel() {
        let f = FakeReplicate::start(ReplicateScenario::Success { processing_polls: 100 }).await;
        let p = provider_for(&f);
        let sub = p.submit(&request(MODEL), None).await.expect("submit");
        p.cancel(&sub).await.expect("cancel");
        let c = &f.cancels()[0];
        assert_eq!((c.method.as_str(), c.path.as_str()), ("POST", "/v1/predictions/pred1/cancel"));
        assert_eq!(c.header("authorization"), Some(bearer()));
        assert!(matches!(p.wait(&sub, &|_| {}).await, Err(ProviderError::Failed(m)) if m.contains("canceled")));
    }

    #[tokio::test]
    async fn kinds_replicate_error_classes() {
        let f =
            FakeReplicate::start(ReplicateScenario::Failed("NSFW content detected. Try a different prompt.".into()))
                .await;
        let p = provider_for(&f);
        let r = request(MODEL);
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Rejected(m)) if m.starts_with("NSFW content detected")));
        f.set(ReplicateScenario::Failed("CUDA out of memory".into()));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Failed(m)) if m == "CUDA out of memory"));
        f.set(create_error(401, "You did not pass a valid authentication token"));
        let e = run(&p, &r).await.expect_err("401");
        assert!(matches!(&e, ProviderError::Unauthorized(m) if m.contains("valid authentication token")), "{e:?}");
        f.set(create_error(402, "You have insufficient credit to run this model."));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Unauthorized(m)) if m.contains("billing")));
        f.set(create_error(404, "The requested resource could not be found."));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Retired(_))));
        f.set(create_error(422, "Input validation failed: aspect_ratio must be one of …"));
        assert!(
            matches!(run(&p, &r).await, Err(ProviderError::Rejected(m)) if m.starts_with("Input validation failed"))
        );
        f.set(ReplicateScenario::CreateError {
            status: 429,
            detail: "Request was throttled.".into(),
            headers: vec![("retry-after", "4".into())],
        });
        let e = run(&p, &r).await.expect_err("429");
        assert!(
            matches!(e, ProviderError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(4)),
            "{e:?}"
        );
        f.set(ReplicateScenario::Inline);
        let unknown = Submission { request_id: "nope".into(), data: json!({}) };
        assert!(matches!(p.wait(&unknown, &|_| {}).await, Err(ProviderError::Lost(_))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn kinds_replicate_app_restart_polls_the_same_prediction() {
        let f = FakeReplicate::start(ReplicateScenario::Success { processing_polls: 1 }).await;
        f.hold();
        let mut h = harness(ProviderKind::Replicate, f.base_url(), MODEL).await;
        order(&h, 2223).await;
        assert!(super::super::fakes::eventually(Duration::from_secs(20), || !f.polls().is_empty()).await);
        h.restart().await;
        f.release();
        h.wait_for(2223, 30, "the picture after the restart", |_| h.photos(2223).len() == 1).await;
        assert_eq!(f.creates().len(), 1, "never created twice");
        assert_eq!(kinds(&h.ledger(2223).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
        h.verify_clean().await;
        h.assert_no_rejections();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn kinds_replicate_end_to_end_picture_and_russian_refusal() {
        let f = FakeReplicate::start(ReplicateScenario::Success { processing_polls: 1 }).await;
        let h = harness(ProviderKind::Replicate, f.base_url(), MODEL).await;
        order(&h, 2221).await;
        assert_delivered(&h, 2221).await;
        assert_eq!(f.creates().len(), 1);

        f.set(ReplicateScenario::Failed("NSFW content detected. Try a different prompt.".into()));
        order(&h, 2222).await;
        let m = assert_refused(&h, 2222, "Провайдер отклонил запрос").await;
        assert!(text_of(&m).contains("правила содержания"), "{m}");
    }
}

// ------------------------------------------------------------------------------- Hugging Face

mod huggingface {
    use super::super::fakes::huggingface::{FakeHf, HfScenario};
    use super::*;
    use crate::providers::ProviderProgress;
    use crate::providers::huggingface::HuggingfaceProvider;
    use std::sync::{Arc, Mutex};

    const MODEL: &str = "black-forest-labs/FLUX.1-schnell";

    fn provider_for(f: &FakeHf) -> HuggingfaceProvider {
        HuggingfaceProvider::new(&cfg(ProviderKind::Huggingface, &f.base_url())).expect("provider")
    }

    fn error(status: u16, message: &str) -> HfScenario {
        HfScenario::Error { status, message: message.into() }
    }

    #[tokio::test]
    async fn kinds_huggingface_text_to_image_posts_inputs_and_reads_raw_bytes() {
        let f = FakeHf::start(HfScenario::Image).await;
        let p = provider_for(&f);
        let mut r = request(MODEL);
        r.extra.insert("num_inference_steps".into(), json!(4));
        let files = run(&p, &r).await.expect("result");
        assert_eq!((files.len(), files[0].bytes == f.png(), files[0].mime.as_str()), (1, true, "image/png"));
        let c = &f.rec.requests()[0];
        assert_eq!(
            (c.method.as_str(), c.path.as_str()),
            ("POST", "/hf-inference/models/black-forest-labs/FLUX.1-schnell")
        );
        assert_eq!(c.header("authorization"), Some(bearer()));
        assert_eq!(c.header("accept").as_deref(), Some("image/png"));
        assert!(c.header("content-type").unwrap_or_default().starts_with("application/json"));
        assert_eq!(
            c.json(),
            json!({"inputs": "a lighthouse at dusk", "parameters": {"negative_prompt": "blurry", "width": 64, "height": 96,
                   "seed": 1234, "num_inference_steps": 4}})
        );
    }

    #[tokio::test]
    async fn kinds_huggingface_loading_model_is_waited_for_and_reported_as_queue() {
        let f = FakeHf::start(HfScenario::Loading { times: 2, estimated_time: 0.05 }).await;
        let p = provider_for(&f);
        let sub = p.submit(&request(MODEL), None).await.expect("submit");
        let seen: Arc<Mutex<Vec<ProviderProgress>>> = Arc::default();
        let s2 = seen.clone();
        let cb = move |pr: ProviderProgress| s2.lock().unwrap_or_else(|e| e.into_inner()).push(pr);
        let started = std::time::Instant::now();
        let files = p.wait(&sub, &cb).await.expect("result after loading");
        assert_eq!(files[0].bytes, f.png());
        assert!(started.elapsed() >= Duration::from_millis(100), "waited estimated_time twice");
        assert_eq!(f.rec.requests().len(), 3, "two 503s, then the image");
        let queued =
            seen.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|p| p.queue_position == Some(0)).count();
        assert_eq!(queued, 2, "each loading wait shown as queue time");
    }

    #[tokio::test]
    async fn kinds_huggingface_error_classes() {
        let f = FakeHf::start(HfScenario::Image).await;
        let p = provider_for(&f);
        let r = request(MODEL);
        f.set(error(402, "You have exceeded your monthly included credits for Inference Providers."));
        assert!(
            matches!(run(&p, &r).await, Err(ProviderError::PaymentRequired(m)) if m.contains("monthly included credits"))
        );
        f.set(error(
            403,
            "Access to model black-forest-labs/FLUX.1-dev is restricted. You must have access to it and be authenticated to access it. Please log in.",
        ));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Misconfigured(m)) if m.starts_with("gated model")));
        f.set(error(
            403,
            "This authentication method does not have sufficient permissions to call Inference Providers",
        ));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Unauthorized(_))));
        f.set(error(401, "Invalid credentials in Authorization header"));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Unauthorized(_))));
        f.set(error(404, "Model black-forest-labs/FLUX.1-gone does not exist"));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Retired(_))));
        f.set(error(503, "Service Unavailable"));
        assert!(matches!(run(&p, &r).await, Err(ProviderError::Transient(_))), "503 without estimated_time");
        f.set(error(400, "Input validation error: `inputs` must be non-empty"));
        assert!(
            matches!(run(&p, &r).await, Err(ProviderError::Rejected(m)) if m.starts_with("Input validation error"))
        );
        // A restored submission after a restart: nothing to resume, no second call.
        let before = f.rec.requests().len();
        let sub = Submission { request_id: "0190-local".into(), data: json!({"local": true}) };
        assert!(matches!(provider_for(&f).wait(&sub, &|_| {}).await, Err(ProviderError::Lost(_))));
        assert_eq!(f.rec.requests().len(), before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn kinds_huggingface_end_to_end_picture_then_402_disables_the_model() {
        let f = FakeHf::start(HfScenario::Loading { times: 1, estimated_time: 0.05 }).await;
        let h = harness(ProviderKind::Huggingface, f.base_url(), MODEL).await;
        order(&h, 2231).await;
        assert_delivered(&h, 2231).await;

        f.set(error(402, "You have exceeded your monthly included credits for Inference Providers."));
        order(&h, 2232).await;
        assert_refused(&h, 2232, "модель сейчас недоступна").await;
        let off = h.store().read(|rx| rx.find_disabled()).await.expect("read");
        let keys: Vec<_> = off.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, [crate::domain::Switch::Model("vm".into())], "the model, not the provider");
    }
}

// -------------------------------------------------------------------------------------- config

#[test]
fn kinds_config_defaults_the_base_url_and_checks_endpoints() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut c = test_config(dir.path());
    for kind in [ProviderKind::Openai, ProviderKind::Gemini, ProviderKind::Huggingface, ProviderKind::Replicate] {
        let mut p = provider(&format!("{kind:?}").to_lowercase(), kind, "");
        p.base_url = String::new();
        assert_eq!(Some(p.effective_base_url().as_str()), kind.default_base_url());
        c.providers.push(p);
    }
    let mut m = model("rep", "replicate", 1);
    m.endpoint = "black-forest-labs/flux-schnell".into();
    c.models.push(m);
    c.validate().expect("empty base_url takes the kind's default");
    c.models[0].endpoint = "flux".into();
    let e = c.validate().expect_err("not owner/name");
    assert!(e.to_string().contains("models[0].endpoint"), "{e}");
    c.models[0].provider = "huggingface".into();
    c.models[0].endpoint = String::new();
    assert!(c.validate().expect_err("no model id").to_string().contains("models[0].endpoint"));
    c.models[0].endpoint = "black-forest-labs/FLUX.1-schnell".into();
    c.models[0].task = Task::Edit;
    c.models[0].images = Some(crate::config::ImageCount::Exactly(1));
    assert!(c.validate().expect_err("t2i only").to_string().contains("models[0].task"));
}
