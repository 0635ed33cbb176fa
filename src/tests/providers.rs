//! Provider clients against the fake servers: the whole submit → wait → download path over
//! real HTTP (and WebSocket for ComfyUI), failure classification, and resume after a restart.

use crate::config::{ProviderConfig, ProviderKind, Secret};
use crate::domain::{Format, Task};
use crate::providers::comfyui::ComfyProvider;
use crate::providers::fal::FalProvider;
use crate::providers::wavespeed::WavespeedProvider;
use crate::providers::{
    GenerateRequest, GeneratedFile, ImageProvider, InputImage, ProviderError, ProviderProgress, SizeParam, Submission,
};
use crate::tests::fakes::{self, ComfyScenario, FakeComfy, FakeFal, FakeWavespeed, FalScenario, WavespeedScenario};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "fal-key-id:fal-key-secret";

/// A provider of `kind` at `base_url` with the API key `key` (fast polls, short timeouts).
pub(super) fn cfg_keyed(kind: ProviderKind, base_url: &str, key: &str) -> ProviderConfig {
    ProviderConfig {
        id: format!("{kind:?}").to_lowercase(),
        kind,
        base_url: base_url.to_string(),
        base_urls: vec![],
        api_key: Secret::new(key),
        api_key_env: None,
        max_concurrency: 2,
        timeout_secs: 30,
        poll_interval_ms: 20,
        key_concurrency: None,
        proxy: None,
    }
}

fn cfg(kind: ProviderKind, base_url: &str) -> ProviderConfig {
    cfg_keyed(kind, base_url, KEY)
}

/// A text → image request for `endpoint` (64×96, a prompt and a negative, seed 1234).
pub(super) fn request(endpoint: &str) -> GenerateRequest {
    GenerateRequest {
        model_id: "m".into(),
        task: Task::TextToImage,
        endpoint: endpoint.into(),
        workflow: None,
        prompt: "a lighthouse at dusk".into(),
        negative: Some("blurry".into()),
        format: Format::Vertical,
        width: 64,
        height: 96,
        aspect_ratio: None,
        seed: 1234,
        size_param: SizeParam::ImageSize,
        extra: Default::default(),
        input_images: vec![],
        image_fields: vec![],
        video: None,
    }
}

fn workflow(name: &str) -> Value {
    let path = format!("{}/../shared/testdata/comfyui/workflows/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("workflow file")).expect("workflow json")
}

/// A text-to-image template: EmptyImage sized by placeholders → SaveImage.
fn template() -> Value {
    json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": "{{width}}", "height": "{{height}}", "batch_size": 1, "color": "{{seed}}"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "bot/{{seed}}"}},
        "3": {"class_type": "Note", "inputs": {"text": "{{prompt}}", "negative": "{{negative}}"}},
    })
}

type Seen = Arc<Mutex<Vec<ProviderProgress>>>;
type IsExpected = fn(&ProviderError) -> bool;

/// Runs `wait` with a recording progress callback.
async fn wait_recording(
    p: &dyn ImageProvider,
    sub: &Submission,
    seen: &Seen,
) -> Result<Vec<GeneratedFile>, ProviderError> {
    let s = seen.clone();
    let cb = move |pr: ProviderProgress| s.lock().unwrap_or_else(|e| e.into_inner()).push(pr);
    tokio::time::timeout(Duration::from_secs(10), p.wait(sub, &cb)).await.expect("wait finished in time")
}

fn seen() -> Seen {
    Arc::new(Mutex::new(Vec::new()))
}

fn snapshot(s: &Seen) -> Vec<ProviderProgress> {
    s.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

// ---------------------------------------------------------------------------------------- fal

#[tokio::test]
async fn providers_fal_success_with_progress() {
    let fal = FakeFal::start().await;
    let p = FalProvider::new(&cfg(ProviderKind::Fal, &fal.base_url())).expect("provider");
    assert_eq!(p.preassign_id(), None);
    let sub = p.submit(&request("fal-ai/flux/dev"), None).await.expect("submit");
    let s = seen();
    let images = wait_recording(&p, &sub, &s).await.expect("result");
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].mime, "image/png");
    assert_eq!(images[0].bytes, fal.result_png());
    assert!(!images[0].is_demo);
    let progress = snapshot(&s);
    assert!(progress.iter().any(|p| p.queue_position == Some(0) && !p.running), "{progress:?}");
    assert!(progress.iter().any(|p| p.running), "{progress:?}");

    assert_eq!(fal.last_auth().as_deref(), Some(format!("Key {KEY}").as_str()));
    assert_eq!(fal.submits("fal-ai/flux/dev"), 1);
    let body = fal.last_submit_body().expect("body");
    assert_eq!(body["prompt"], "a lighthouse at dusk");
    assert_eq!(body["negative_prompt"], "blurry");
    assert_eq!(body["image_size"], json!({"width": 64, "height": 96}));
    assert_eq!(body["seed"], 1234);
    assert_eq!(body["num_images"], 1);
    // Status and result URLs drop the endpoint subpath (protocols.md §2.2).
    assert!(sub.data["status_url"].as_str().expect("url").contains("/fal-ai/flux/requests/"));
}

#[tokio::test]
async fn providers_fal_input_images_and_built_urls() {
    let fal = FakeFal::start().await;
    fal.set_omit_urls(true);
    let p = FalProvider::new(&cfg(ProviderKind::Fal, &fal.base_url())).expect("provider");
    let mut req = request("fal-ai/nano-banana/edit");
    req.task = Task::Edit;
    req.size_param = SizeParam::AspectRatio;
    req.input_images = vec![InputImage { bytes: fakes::gradient_png(4, 4), mime: "image/png".into() }];
    req.extra.insert("output_format".into(), json!("png"));
    let sub = p.submit(&req, None).await.expect("submit");
    assert!(p.wait(&sub, &|_| {}).await.is_ok());
    let body = fal.last_submit_body().expect("body");
    assert!(body["image_urls"][0].as_str().expect("uri").starts_with("data:image/png;base64,"));
    assert_eq!(body["aspect_ratio"], "9:16");
    assert_eq!(body["output_format"], "png");
}

#[tokio::test]
async fn providers_fal_submit_errors_classified() {
    let fal = FakeFal::start().await;
    let p = FalProvider::new(&cfg(ProviderKind::Fal, &fal.base_url())).expect("provider");
    let cases: [(u16, &str, IsExpected); 8] = [
        (500, r#"{"detail":"Internal Server Error"}"#, |e| matches!(e, ProviderError::Transient(_))),
        (429, r#"{"detail":"rate limited"}"#, |e| matches!(e, ProviderError::Transient(_))),
        (404, r#"{"detail":"Application 'nope' not found"}"#, |e| matches!(e, ProviderError::Retired(_))),
        (401, r#"{"detail":"Invalid key"}"#, |e| matches!(e, ProviderError::Unauthorized(_))),
        (403, r#"{"detail":"User is locked. Reason: Exhausted balance."}"#, |e| {
            matches!(e, ProviderError::Unauthorized(_))
        }),
        // One model's payment, not the account: the model goes, the provider stays.
        (
            402,
            r#"{"detail":"Payment required to use this model"}"#,
            |e| matches!(e, ProviderError::PaymentRequired(m) if m.contains("Payment required to use this model")),
        ),
        (400, r#"{"detail":"Payment Required: this endpoint is billed per image"}"#, |e| {
            matches!(e, ProviderError::PaymentRequired(_))
        }),
        (
            422,
            r#"{"detail":[{"loc":["body","prompt"],"msg":"field required","type":"value_error.missing"}]}"#,
            |e| matches!(e, ProviderError::Rejected(m) if m == "prompt: field required"),
        ),
    ];
    for (status, body, check) in cases {
        fal.push_scenario(FalScenario::SubmitError { status, body: body.into() });
        let e = p.submit(&request("fal-ai/flux/dev"), None).await.expect_err("must fail");
        assert!(check(&e), "HTTP {status} → {e:?}");
    }
    assert_eq!(fal.submits("fal-ai/flux/dev"), 8);
}

async fn run_failing(fal: &FakeFal, p: &FalProvider, s: FalScenario) -> ProviderError {
    fal.push_scenario(s);
    let sub = p.submit(&request("fal-ai/flux/dev"), None).await.expect("submit");
    p.wait(&sub, &|_| {}).await.expect_err("must fail")
}

#[tokio::test]
async fn providers_fal_run_failures_classified() {
    let fal = FakeFal::start().await;
    let p = FalProvider::new(&cfg(ProviderKind::Fal, &fal.base_url())).expect("provider");
    let e =
        run_failing(&fal, &p, FalScenario::CompletedWithError { error: "CUDA out of memory".into(), error_type: None })
            .await;
    assert!(matches!(e, ProviderError::Failed(ref m) if m == "CUDA out of memory"), "{e:?}");
    let e = run_failing(
        &fal,
        &p,
        FalScenario::CompletedWithError {
            error: "Prompt flagged".into(),
            error_type: Some("content_policy_violation".into()),
        },
    )
    .await;
    assert!(matches!(e, ProviderError::Rejected(ref m) if m == "Prompt flagged"), "{e:?}");
    let e = run_failing(&fal, &p, FalScenario::MalformedResult).await;
    assert!(matches!(e, ProviderError::Failed(ref m) if m.contains("malformed")), "{e:?}");
    let e =
        run_failing(&fal, &p, FalScenario::ResultError { status: 422, body: r#"{"detail":"Image too small"}"#.into() })
            .await;
    assert!(matches!(e, ProviderError::Rejected(ref m) if m == "Image too small"), "{e:?}");
    let e = run_failing(&fal, &p, FalScenario::ResultError { status: 503, body: "upstream".into() }).await;
    assert!(matches!(e, ProviderError::Transient(_)), "{e:?}");
}

#[tokio::test]
async fn providers_fal_unknown_request_is_lost_and_dead_server_is_transient() {
    let fal = FakeFal::start().await;
    let p = FalProvider::new(&cfg(ProviderKind::Fal, &fal.base_url())).expect("provider");
    let r = format!("{}/fal-ai/flux/requests/nope", fal.base_url());
    let sub = Submission {
        request_id: "nope".into(),
        data: json!({"status_url": format!("{r}/status"), "response_url": r, "cancel_url": format!("{r}/cancel")}),
    };
    assert!(matches!(p.wait(&sub, &|_| {}).await, Err(ProviderError::Lost(_))));

    let base = fal.base_url();
    drop(fal);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let p = FalProvider::new(&cfg(ProviderKind::Fal, &base)).expect("provider");
    let e = p.submit(&request("fal-ai/flux/dev"), None).await.expect_err("connection refused");
    assert!(matches!(e, ProviderError::Transient(_)), "{e:?}");
}

#[tokio::test]
async fn providers_fal_timeout_then_cancel() {
    let fal = FakeFal::start().await;
    fal.set_scenario(FalScenario::NeverCompletes);
    let p = FalProvider::new(&cfg(ProviderKind::Fal, &fal.base_url())).expect("provider");
    let sub = p.submit(&request("fal-ai/flux/dev"), None).await.expect("submit");
    // The caller applies the overall timeout.
    assert!(tokio::time::timeout(Duration::from_millis(300), p.wait(&sub, &|_| {})).await.is_err());
    assert!(fal.status_polls() >= 3);
    p.cancel(&sub).await.expect("cancel");
    assert_eq!(fal.cancels(), vec![sub.request_id.clone()]);
}

#[tokio::test]
async fn providers_fal_resume_after_restart() {
    let fal = FakeFal::start().await;
    fal.hold();
    let before = FalProvider::new(&cfg(ProviderKind::Fal, &fal.base_url())).expect("provider");
    let sub = before.submit(&request("fal-ai/flux/dev"), None).await.expect("submit");
    let stored = serde_json::to_string(&sub).expect("persist");
    // The app waits a little, then "crashes" mid-wait.
    assert!(tokio::time::timeout(Duration::from_millis(150), before.wait(&sub, &|_| {})).await.is_err());
    drop(before);

    let after = FalProvider::new(&cfg(ProviderKind::Fal, &fal.base_url())).expect("provider");
    let restored: Submission = serde_json::from_str(&stored).expect("restore");
    assert_eq!(restored, sub);
    fal.release();
    let images = after.wait(&restored, &|_| {}).await.expect("result after restart");
    assert_eq!(images[0].bytes, fal.result_png());
    assert_eq!(fal.submits_total(), 1, "no second submit");
}

#[tokio::test]
async fn providers_fal_debug_hides_key() {
    let p = FalProvider::new(&cfg(ProviderKind::Fal, "https://queue.fal.run")).expect("provider");
    let dbg = format!("{p:?}");
    assert!(!dbg.contains("fal-key-secret"), "{dbg}");
    assert!(dbg.contains("***"), "{dbg}");
    let mut no_key = cfg(ProviderKind::Fal, "https://queue.fal.run");
    no_key.api_key = Secret::default();
    assert!(matches!(FalProvider::new(&no_key), Err(ProviderError::Unauthorized(_))));
}

// ------------------------------------------------------------------------------------ ComfyUI

pub(super) fn comfy_request(workflow: Value) -> GenerateRequest {
    let mut r = request("");
    r.workflow = Some(workflow);
    r
}

#[tokio::test]
async fn providers_comfy_success_with_progress_and_placeholders() {
    let comfy = FakeComfy::start().await;
    let p = ComfyProvider::new(&cfg(ProviderKind::Comfyui, &comfy.base_url())).expect("provider");
    let prompt_id = p.preassign_id().expect("ComfyUI lets the client pick the id");
    assert!(uuid::Uuid::parse_str(&prompt_id).is_ok());
    comfy.hold(); // so the socket is surely connected before the progress frames
    let sub = p.submit(&comfy_request(template()), Some(&prompt_id)).await.expect("submit");
    assert_eq!(sub.request_id, prompt_id);
    let client_id = sub.data["client_id"].as_str().expect("client_id stored").to_string();

    let submits = comfy.submits();
    assert_eq!(submits.len(), 1);
    assert_eq!(submits[0].prompt_id, prompt_id);
    assert_eq!(submits[0].client_id.as_deref(), Some(client_id.as_str()));
    let g = &submits[0].graph;
    assert_eq!(g["1"]["inputs"]["width"], json!(64));
    assert!(g["1"]["inputs"]["width"].is_number() && g["1"]["inputs"]["color"].is_number());
    assert_eq!(g["1"]["inputs"]["height"], json!(96));
    assert_eq!(g["2"]["inputs"]["filename_prefix"], "bot/1234");
    assert_eq!(g["3"]["inputs"]["text"], "a lighthouse at dusk");
    assert_eq!(g["3"]["inputs"]["negative"], "blurry");

    let p = Arc::new(p);
    let s = seen();
    let task = {
        let (p, sub, s) = (p.clone(), sub.clone(), s.clone());
        tokio::spawn(async move { wait_recording(p.as_ref(), &sub, &s).await })
    };
    assert!(fakes::eventually(Duration::from_secs(5), || comfy.ws_connects().contains(&client_id)).await);
    comfy.release();
    let images = task.await.expect("join").expect("result");
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].mime, "image/png");
    let img = image::load_from_memory(&images[0].bytes).expect("png");
    assert_eq!((img.width(), img.height()), (64, 96), "the fake sized the output from the filled template");
    assert_eq!(Some(images[0].bytes.clone()), comfy.output_file("bot", "1234_00001_.png"));
    let progress = snapshot(&s);
    assert!(progress.iter().any(|p| p.fraction == Some(1.0)), "{progress:?}");
    assert!(progress.iter().any(|p| p.fraction.is_some_and(|f| f > 0.0 && f < 1.0)), "{progress:?}");
    assert!(progress.iter().any(|p| p.running), "{progress:?}");
}

#[tokio::test]
async fn providers_comfy_uploads_input_image() {
    let comfy = FakeComfy::start().await;
    let p = ComfyProvider::new(&cfg(ProviderKind::Comfyui, &comfy.base_url())).expect("provider");
    let mut wf = workflow("invert.json");
    wf["1"]["inputs"]["image"] = json!("{{input_image}}");
    let mut req = comfy_request(wf);
    req.task = Task::Edit;
    let input = fakes::gradient_png(8, 6);
    req.input_images = vec![InputImage { bytes: input.clone(), mime: "image/png".into() }];
    let id = p.preassign_id().expect("id");
    let sub = p.submit(&req, Some(&id)).await.expect("submit");
    let ups = comfy.uploads();
    assert_eq!(ups.len(), 1);
    assert!(ups[0].overwrite);
    assert_eq!(ups[0].bytes, input);
    assert_eq!(comfy.submits()[0].graph["1"]["inputs"]["image"], json!(ups[0].name));
    let images = p.wait(&sub, &|_| {}).await.expect("result");
    assert_eq!(images.len(), 1);
}

#[tokio::test]
async fn providers_comfy_failures_classified() {
    let comfy = FakeComfy::start().await;
    let p = ComfyProvider::new(&cfg(ProviderKind::Comfyui, &comfy.base_url())).expect("provider");

    // A workflow ComfyUI's validation refuses is the operator's to fix, not the user's.
    let e = p.submit(&comfy_request(workflow("bad_input.json")), None).await.expect_err("400");
    match e {
        ProviderError::Misconfigured(m) => {
            assert!(m.contains("Prompt outputs failed validation"), "{m}");
            assert!(m.contains("node 2 (ImageScaleBy)"), "{m}");
            assert!(m.contains("bigger than max of 8.0"), "{m}");
        }
        other => panic!("expected Misconfigured, got {other:?}"),
    }
    // An input placeholder without an uploaded image reaches ComfyUI, which rejects it.
    let mut wf = workflow("invert.json");
    wf["1"]["inputs"]["image"] = json!("{{input_image}}");
    let e = p.submit(&comfy_request(wf), None).await.expect_err("400");
    assert!(matches!(e, ProviderError::Misconfigured(ref m) if m.contains("Invalid image file")), "{e:?}");
    let e = p.submit(&comfy_request(json!({"1": {"class_type": "NoSuchNode", "inputs": {}}})), None).await;
    assert!(matches!(e, Err(ProviderError::Misconfigured(ref m)) if m.contains("NoSuchNode")), "{e:?}");

    let sub = p.submit(&comfy_request(workflow("runtime_error.json")), None).await.expect("submit");
    let e = p.wait(&sub, &|_| {}).await.expect_err("runtime error");
    assert!(matches!(e, ProviderError::Failed(ref m) if m.contains("index 3 is out of bounds")), "{e:?}");

    // Same failure seen through /history only.
    comfy.set_websocket(false);
    comfy.push_scenario(ComfyScenario::RuntimeError);
    let sub = p.submit(&comfy_request(template()), None).await.expect("submit");
    let e = p.wait(&sub, &|_| {}).await.expect_err("runtime error");
    assert!(matches!(e, ProviderError::Failed(ref m) if m.contains("index 3 is out of bounds")), "{e:?}");
}

#[tokio::test]
async fn providers_comfy_without_websocket_polls_history() {
    let comfy = FakeComfy::start().await;
    comfy.set_websocket(false);
    let p = ComfyProvider::new(&cfg(ProviderKind::Comfyui, &comfy.base_url())).expect("provider");
    let sub = p.submit(&comfy_request(workflow("empty.json")), None).await.expect("submit");
    let s = seen();
    let images = wait_recording(&p, &sub, &s).await.expect("result via /history");
    assert_eq!(images.len(), 1);
    assert!(comfy.ws_connects().is_empty());
    assert!(comfy.history_polls() >= 2);
    assert!(snapshot(&s).iter().any(|p| p.running || p.queue_position.is_some()));
}

#[tokio::test]
async fn providers_comfy_resume_after_restart() {
    let comfy = FakeComfy::start().await;
    comfy.hold();
    let before = ComfyProvider::new(&cfg(ProviderKind::Comfyui, &comfy.base_url())).expect("provider");
    let id = before.preassign_id().expect("id");
    let sub = before.submit(&comfy_request(template()), Some(&id)).await.expect("submit");
    let stored = serde_json::to_string(&sub).expect("persist");
    assert!(tokio::time::timeout(Duration::from_millis(200), before.wait(&sub, &|_| {})).await.is_err());
    drop(before);

    let after = ComfyProvider::new(&cfg(ProviderKind::Comfyui, &comfy.base_url())).expect("provider");
    let restored: Submission = serde_json::from_str(&stored).expect("restore");
    assert!(after.is_known(&restored.request_id, &restored.data).await.expect("is_known"));
    assert!(!after.is_known("00000000-0000-0000-0000-000000000000", &json!({})).await.expect("is_known"));
    let after = Arc::new(after);
    let task = {
        let (p, sub) = (after.clone(), restored.clone());
        tokio::spawn(async move { p.wait(&sub, &|_| {}).await })
    };
    let client_id = restored.data["client_id"].as_str().expect("client id").to_string();
    assert!(
        fakes::eventually(Duration::from_secs(5), || comfy.ws_connects().iter().filter(|c| **c == client_id).count()
            == 2)
        .await,
        "reconnected with the stored clientId"
    );
    comfy.release();
    let images =
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("in time").expect("join").expect("result");
    assert_eq!(images.len(), 1);
    assert_eq!(comfy.submits().len(), 1, "no second submit");
    assert!(after.is_known(&id, &json!({})).await.expect("is_known"), "finished prompts are known too");
}

/// Submits a held prompt, lets ComfyUI "restart" (forget everything) and starts waiting;
/// returns once the provider has posted the prompt a second time.
async fn comfy_restarted_mid_job(
    comfy: &FakeComfy,
) -> (Submission, tokio::task::JoinHandle<Result<Vec<GeneratedFile>, ProviderError>>) {
    comfy.hold();
    let p = Arc::new(ComfyProvider::new(&cfg(ProviderKind::Comfyui, &comfy.base_url())).expect("provider"));
    let sub = p.submit(&comfy_request(template()), Some("5c1e0a9e-0000-4000-8000-000000000026")).await.expect("submit");
    assert!(fakes::eventually(Duration::from_secs(5), || comfy.is_running(&sub.request_id)).await);
    comfy.forget_all(); // ComfyUI restarted: history and queue are gone
    let task = {
        let (p, sub) = (p.clone(), sub.clone());
        tokio::spawn(async move { p.wait(&sub, &|_| {}).await })
    };
    assert!(
        fakes::eventually(Duration::from_secs(10), || comfy.submits().len() == 2).await,
        "the forgotten prompt is submitted again"
    );
    let submits = comfy.submits();
    assert_eq!(submits[1].prompt_id, sub.request_id, "same prompt_id");
    assert_eq!(submits[1].client_id, submits[0].client_id, "same client_id (progress keeps flowing)");
    assert_eq!(submits[1].graph, submits[0].graph, "same graph");
    (sub, task)
}

#[tokio::test]
async fn providers_comfy_restart_mid_job_resubmits_once_with_the_same_id() {
    let comfy = FakeComfy::start().await;
    let (_, task) = comfy_restarted_mid_job(&comfy).await;
    comfy.release();
    let images =
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("in time").expect("join").expect("result");
    assert_eq!(images.len(), 1);
    assert_eq!(comfy.submits().len(), 2);
}

#[tokio::test]
async fn providers_comfy_forgotten_twice_is_lost() {
    let comfy = FakeComfy::start().await;
    let (sub, task) = comfy_restarted_mid_job(&comfy).await;
    assert!(fakes::eventually(Duration::from_secs(5), || comfy.is_running(&sub.request_id)).await);
    comfy.forget_all();
    let e =
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("in time").expect("join").expect_err("lost");
    assert!(matches!(e, ProviderError::Lost(_)), "{e:?}");
    assert_eq!(comfy.submits().len(), 2, "resubmitted once only");
}

#[tokio::test]
async fn providers_comfy_cancel_deletes_and_interrupts() {
    let comfy = FakeComfy::start().await;
    comfy.hold();
    let p = ComfyProvider::new(&cfg(ProviderKind::Comfyui, &comfy.base_url())).expect("provider");
    let first = p.submit(&comfy_request(template()), None).await.expect("submit");
    let second = p.submit(&comfy_request(template()), None).await.expect("submit");
    assert!(fakes::eventually(Duration::from_secs(2), || comfy.is_running(&first.request_id)).await);

    p.cancel(&second).await.expect("cancel pending");
    assert_eq!(comfy.deletes(), vec![second.request_id.clone()]);
    assert_eq!(comfy.interrupts(), vec![Some(second.request_id.clone())]);
    let e = p.wait(&second, &|_| {}).await.expect_err("deleted prompt");
    assert!(matches!(e, ProviderError::Lost(_)), "{e:?}");
    assert_eq!(comfy.submits().len(), 2, "a cancelled prompt is not submitted again");

    p.cancel(&first).await.expect("cancel running");
    let e = tokio::time::timeout(Duration::from_secs(5), p.wait(&first, &|_| {}))
        .await
        .expect("in time")
        .expect_err("interrupted");
    assert!(matches!(e, ProviderError::Failed(ref m) if m.contains("interrupted")), "{e:?}");
}

#[tokio::test]
async fn providers_comfy_server_down_is_transient() {
    let comfy = FakeComfy::start().await;
    let base = comfy.base_url();
    drop(comfy);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let p = ComfyProvider::new(&cfg(ProviderKind::Comfyui, &base)).expect("provider");
    let e = p.submit(&comfy_request(template()), None).await.expect_err("down");
    assert!(matches!(e, ProviderError::Transient(_)), "{e:?}");
    assert!(matches!(ComfyProvider::new(&cfg(ProviderKind::Comfyui, "ftp://x")), Err(ProviderError::Failed(_))));
}

/// A config with one ComfyUI provider at `base` and one model per workflow (written to `dir`).
fn comfy_config(dir: &std::path::Path, base: &str, workflows: &[Value]) -> crate::config::Config {
    let mut c = crate::config::Config::default();
    c.providers.push(cfg(ProviderKind::Comfyui, base));
    for (i, wf) in workflows.iter().enumerate() {
        let path = dir.join(format!("wf{i}.json"));
        std::fs::write(&path, wf.to_string()).expect("workflow");
        let mut m = crate::tests::harness::model(&format!("m{i}"), "comfyui", 5);
        m.workflow = Some(path);
        c.models.push(m);
    }
    c.validate().expect("valid otherwise");
    c
}

#[tokio::test]
async fn check_config_names_unknown_placeholders_and_asks_the_server_online() {
    let comfy = FakeComfy::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let mut good = workflow("invert.json");
    good["1"]["inputs"]["image"] = json!("{{input_image}}");
    good["2"]["inputs"]["scale_by"] = json!("{{seed}}");
    let mut bad = workflow("video_from_image.json");
    bad["3"]["class_type"] = json!("ImageInvertPlus");
    bad["2"]["inputs"]["mode"] = json!("fast");
    // {{frames}}, {{fps}} (and {{duration}}) are filled for video; a misspelt one is named.
    bad["5"]["inputs"]["amount"] = json!("{{frame}}");
    let c = comfy_config(dir.path(), &comfy.base_url(), &[good, bad]);

    let offline = crate::cli::check_workflows(&c, false).await;
    assert_eq!(offline.len(), 1, "{offline:#?}");
    assert!(offline.iter().all(|p| p.starts_with("models[1].workflow (m1): ")), "{offline:#?}");
    assert!(
        offline.iter().any(|p| p.contains("node 5 (RepeatImageBatch) input amount: unknown placeholder {{frame}}"))
    );

    let online = crate::cli::check_workflows(&c, true).await;
    let extra: Vec<&String> = online.iter().filter(|p| !offline.contains(p)).collect();
    assert_eq!(
        extra,
        [
            "models[1].workflow (m1): node 2 (ImageScale): unknown input mode",
            "models[1].workflow (m1): node 3: unknown class_type ImageInvertPlus (not on this server)",
        ],
        "{online:#?}"
    );

    let base = comfy.base_url();
    drop(comfy);
    let down = comfy_config(dir.path(), &base, &[workflow("empty.json")]);
    let problems = crate::cli::check_workflows(&down, true).await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    // The server is named (a pool has several), without credentials.
    assert!(
        problems[0].starts_with(&format!("providers[0] (comfyui) {base}: GET /object_info failed")),
        "{problems:?}"
    );
    assert!(crate::cli::check_workflows(&down, false).await.is_empty(), "offline, a good workflow passes");
}

// ---------------------------------------------------------------------------------- WaveSpeed

/// A face swap request: the face photo (4×2), then the photo to change (2×4).
fn face_swap_request() -> GenerateRequest {
    let mut r = request("wavespeed-ai/image-face-swap");
    r.task = Task::FaceSwap;
    r.prompt = String::new();
    r.negative = None;
    r.size_param = SizeParam::None;
    r.image_fields = vec!["face_image".into(), "image".into()];
    r.input_images = vec![
        InputImage { bytes: fakes::gradient_png(4, 2), mime: "image/png".into() },
        InputImage { bytes: fakes::gradient_png(2, 4), mime: "image/png".into() },
    ];
    r
}

fn data_uri_size(v: &Value) -> (u32, u32) {
    let (mime, bytes) = crate::providers::http::decode_data_uri(v.as_str().expect("a data URI")).expect("data URI");
    assert_eq!(mime, "image/png");
    let img = image::load_from_memory(&bytes).expect("an image");
    (img.width(), img.height())
}

#[tokio::test]
async fn providers_wavespeed_face_swap_submits_polls_and_downloads() {
    let ws = FakeWavespeed::start().await;
    let p = WavespeedProvider::new(&cfg(ProviderKind::Wavespeed, &ws.base_url())).expect("provider");
    let sub = p.submit(&face_swap_request(), None).await.expect("submit");
    assert!(sub.data["get_url"].as_str().expect("get_url").starts_with(&ws.base_url()), "{sub:?}");
    let s = seen();
    let files = wait_recording(&p, &sub, &s).await.expect("result");
    assert_eq!(files.len(), 1);
    assert_eq!((files[0].bytes.clone(), files[0].mime.as_str()), (ws.result_jpeg(), "image/jpeg"));
    assert!(snapshot(&s).iter().any(|p| p.running), "processing reported as running");

    let body = ws.last_submit_body().expect("body");
    assert_eq!(data_uri_size(&body["face_image"]), (4, 2), "the face is the first photo");
    assert_eq!(data_uri_size(&body["image"]), (2, 4), "the photo to change is the second");
    assert_eq!((&body["enable_sync_mode"], &body["output_format"]), (&json!(false), &json!("jpeg")));
    assert!(body.get("prompt").is_none() && body.get("image_url").is_none(), "{body}");
    let bearer = format!("Bearer {KEY}");
    assert_eq!(ws.last_auth().as_deref(), Some(bearer.as_str()));
    let polls = ws.poll_auths();
    assert_eq!(polls.len(), 4, "created, processing ×2, completed");
    assert!(polls.iter().all(|a| a.as_deref() == Some(bearer.as_str())), "{polls:?}");
    assert_eq!((ws.submits(), ws.file_fetches()), (1, 1));

    // A restored submission resumes without a second submit.
    let restored: Submission = serde_json::from_str(&serde_json::to_string(&sub).expect("persist")).expect("restore");
    assert_eq!(p.wait(&restored, &|_| {}).await.expect("again")[0].bytes, ws.result_jpeg());
    assert_eq!(ws.submits(), 1);
}

#[tokio::test]
async fn providers_wavespeed_text_to_image_and_a_two_photo_edit_send_their_shapes() {
    let ws = FakeWavespeed::start().await;
    let p = WavespeedProvider::new(&cfg(ProviderKind::Wavespeed, &ws.base_url())).expect("provider");
    // Text → image (wavespeed-ai/flux-dev): the prompt, WaveSpeed's "W*H" size and the seed.
    let mut t2i = request("wavespeed-ai/flux-dev");
    t2i.task = Task::TextToImage;
    t2i.prompt = "рыжий кот".into();
    t2i.size_param = SizeParam::ImageSize;
    t2i.input_images.clear();
    let sub = p.submit(&t2i, None).await.expect("submit");
    assert_eq!(p.wait(&sub, &|_| {}).await.expect("result")[0].bytes, ws.result_jpeg());
    let body = ws.last_submit_body().expect("body");
    assert_eq!(body["prompt"], json!("рыжий кот"));
    assert_eq!(body["size"], json!(format!("{}*{}", t2i.width, t2i.height)), "{body}");
    assert_eq!(body["seed"], json!(t2i.seed));
    assert!(body.get("image").is_none() && body.get("images").is_none(), "{body}");

    // Edit with two photos (bytedance/seedream-v4/edit): both under `images`, in order.
    let mut edit = face_swap_request();
    edit.endpoint = "bytedance/seedream-v4/edit".into();
    edit.task = Task::Edit;
    edit.prompt = "поменяй фон".into();
    edit.size_param = SizeParam::ImageSize;
    edit.image_fields = vec!["images".into()];
    let sub = p.submit(&edit, None).await.expect("submit");
    p.wait(&sub, &|_| {}).await.expect("result");
    let body = ws.last_submit_body().expect("body");
    let images = body["images"].as_array().expect("a list");
    assert_eq!((data_uri_size(&images[0]), data_uri_size(&images[1])), ((4, 2), (2, 4)), "in order");
    assert_eq!((body["prompt"].clone(), body.get("size").is_some()), (json!("поменяй фон"), true));

    // Face swap keeps the photo: no size, no seed even with the default size_param.
    let mut swap = face_swap_request();
    swap.size_param = SizeParam::ImageSize;
    p.submit(&swap, None).await.expect("submit");
    let body = ws.last_submit_body().expect("body");
    assert!(body.get("size").is_none() && body.get("seed").is_none(), "{body}");
}

#[tokio::test]
async fn providers_wavespeed_no_face_is_a_rejection_and_http_errors_are_classified() {
    let ws = FakeWavespeed::start().await;
    let p = WavespeedProvider::new(&cfg(ProviderKind::Wavespeed, &ws.base_url())).expect("provider");
    ws.push_scenario(WavespeedScenario::Failed { error: "no face detected in face_image".into() });
    let sub = p.submit(&face_swap_request(), None).await.expect("submit");
    let e = p.wait(&sub, &|_| {}).await.expect_err("failed task");
    assert!(matches!(&e, ProviderError::Rejected(m) if m.contains("no face detected")), "{e:?}");
    assert_eq!(ws.file_fetches(), 0);
    ws.push_scenario(WavespeedScenario::Failed { error: "internal worker error".into() });
    let sub = p.submit(&face_swap_request(), None).await.expect("submit");
    let e = p.wait(&sub, &|_| {}).await.expect_err("failed task");
    assert!(matches!(&e, ProviderError::Failed(m) if m == "internal worker error"), "{e:?}");

    ws.push_scenario(WavespeedScenario::SubmitError {
        status: 401,
        body: r#"{"code":401,"message":"Unauthorized: invalid API key","data":null}"#.into(),
    });
    let e = p.submit(&face_swap_request(), None).await.expect_err("401");
    assert!(matches!(&e, ProviderError::Unauthorized(m) if m.contains("invalid API key")), "{e:?}");
    assert!(!e.to_string().contains(KEY), "the key is never echoed: {e}");
    ws.push_scenario(WavespeedScenario::SubmitError {
        status: 422,
        body: r#"{"code":422,"message":"image: invalid image format","data":null}"#.into(),
    });
    let e = p.submit(&face_swap_request(), None).await.expect_err("422");
    assert!(matches!(&e, ProviderError::Rejected(m) if m == "image: invalid image format"), "{e:?}");
    assert_eq!(ws.submits(), 4);

    let unknown = Submission { request_id: "nope".into(), data: json!({}) };
    assert!(matches!(p.wait(&unknown, &|_| {}).await, Err(ProviderError::Lost(_))));
}

#[tokio::test]
async fn providers_wavespeed_never_polls_a_foreign_get_url() {
    let ws = FakeWavespeed::start().await;
    ws.push_scenario(WavespeedScenario::ForeignPollUrl);
    let p = WavespeedProvider::new(&cfg(ProviderKind::Wavespeed, &ws.base_url())).expect("provider");
    let sub = p.submit(&face_swap_request(), None).await.expect("submit");
    let want = format!("{}/predictions/{}/result", ws.base_url(), sub.request_id);
    assert_eq!(sub.data["get_url"], json!(want), "the documented URL instead");
    let files = p.wait(&sub, &|_| {}).await.expect("result via the documented URL");
    assert_eq!(files[0].bytes, ws.result_jpeg());
    // A stored submission pointing elsewhere (older data, a changed base_url) is not followed.
    let stored = Submission { request_id: sub.request_id.clone(), data: json!({"get_url": "http://evil.example/x"}) };
    assert!(p.wait(&stored, &|_| {}).await.is_ok());
    assert_eq!(ws.foreign_hits(), 0, "the key never went to another host");

    let dbg = format!("{p:?}");
    assert!(!dbg.contains("fal-key-secret") && dbg.contains("***"), "{dbg}");
}

// ------------------------------------------------------------------------------ ComfyUI video

/// What a result file is, by its first bytes: an mp4 `ftyp` box, a WebM EBML header, a
/// RIFF WEBP, an animated PNG (`acTL`), or something else.
fn container(bytes: &[u8]) -> &'static str {
    if bytes.len() > 12 && &bytes[4..8] == b"ftyp" {
        "mp4"
    } else if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        "webm"
    } else if bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "webp"
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.windows(4).any(|w| w == b"acTL") {
        "apng"
    } else {
        "other"
    }
}

/// A video request for a ComfyUI workflow: 65×49 asked (odd on purpose), 2 s at 6 fps.
fn comfy_video_request(wf: Value, task: Task) -> GenerateRequest {
    let mut r = comfy_request(wf);
    r.task = task;
    (r.width, r.height) = (65, 49);
    r.video = Some(crate::providers::VideoParams { duration_secs: 2, fps: 6 });
    if task == Task::ImageToVideo {
        r.input_images = vec![InputImage { bytes: fakes::gradient_png(96, 72), mime: "image/png".into() }];
    }
    r
}

/// The numbers of the filled graph ComfyUI received: every `width`, `height`, `amount`,
/// `length`, `fps` / `frame_rate` input.
fn filled_numbers(graph: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for node in graph.as_object().expect("graph").values() {
        for (k, v) in node["inputs"].as_object().expect("inputs") {
            if ["width", "height", "amount", "length", "fps", "frame_rate"].contains(&k.as_str()) {
                out.push((k.clone(), v.clone()));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup();
    out
}

#[tokio::test]
async fn providers_comfy_video_workflows_deliver_the_recorded_files() {
    let comfy = FakeComfy::start().await;
    let p = ComfyProvider::new(&cfg(ProviderKind::Comfyui, &comfy.base_url())).expect("provider");
    for (wf, task, session, kind) in [
        ("video_from_image.json", Task::ImageToVideo, "video_from_image", "mp4"),
        ("video_animated_webp.json", Task::ImageToVideo, "video_animated_webp", "webp"),
        ("video_animated_png.json", Task::ImageToVideo, "video_animated_png", "apng"),
        ("video_webm.json", Task::TextToVideo, "video_webm", "webm"),
    ] {
        let id = p.preassign_id().expect("id");
        let sub = p.submit(&comfy_video_request(workflow(wf), task), Some(&id)).await.expect("submit");
        let files = tokio::time::timeout(Duration::from_secs(10), p.wait(&sub, &|_| {}))
            .await
            .expect("in time")
            .unwrap_or_else(|e| panic!("{wf}: {e:?}"));
        assert_eq!(files.len(), 1, "{wf}");
        assert_eq!(container(&files[0].bytes), kind, "{wf}");
        assert_eq!(files[0].bytes, fakes::comfyui::recorded_video_bytes(session), "{wf}: the recorded file");
        // frames = duration × fps, sizes even.
        let graph = &comfy.submits().last().expect("submitted").graph.clone();
        let want = [("amount", 12), ("fps", 6), ("height", 48), ("length", 12), ("width", 64)];
        let want: Vec<(String, Value)> = want.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        assert_eq!(filled_numbers(graph), want, "{wf}");
        if task == Task::ImageToVideo {
            let up = comfy.uploads().last().expect("uploaded").name.clone();
            assert_eq!(up, format!("mediabot_{id}_0.png"));
            assert_eq!(graph["1"]["inputs"]["image"], json!(up), "{wf}");
        }
    }
    assert_eq!(container(&fakes::comfyui::recorded_video_bytes("video_from_image")[..]), "mp4");
}

#[tokio::test]
async fn providers_comfy_video_cached_rerun_delivers_the_same_file() {
    let comfy = FakeComfy::start().await;
    comfy.set_caching(true);
    let p = ComfyProvider::new(&cfg(ProviderKind::Comfyui, &comfy.base_url())).expect("provider");
    let mut delivered = Vec::new();
    for _ in 0..2 {
        let sub = p.submit(&comfy_video_request(workflow("video_webm.json"), Task::TextToVideo), None).await;
        let files = p.wait(&sub.expect("submit"), &|_| {}).await.expect("result");
        delivered.push(files[0].bytes.clone());
    }
    assert_eq!(delivered[0], delivered[1]);
    assert_eq!(container(&delivered[1]), "webm");
    assert_eq!(comfy.submits().len(), 2, "submitted twice, the second answered from the cache");
    assert!(comfy.output_file("harness", "webm_00001_.webm").is_some());
    assert!(comfy.output_file("harness", "webm_00002_.webm").is_none(), "the cached run saved nothing new");
}

#[tokio::test]
async fn providers_comfy_odd_video_height_fails_in_save_video() {
    let comfy = FakeComfy::start().await;
    let p = ComfyProvider::new(&cfg(ProviderKind::Comfyui, &comfy.base_url())).expect("provider");
    // A workflow with the odd size baked in: rounding the placeholders cannot help it.
    let mut wf = workflow("video_from_image.json");
    wf["2"]["inputs"]["width"] = json!(64);
    wf["2"]["inputs"]["height"] = json!(47);
    let sub = p.submit(&comfy_video_request(wf, Task::ImageToVideo), None).await.expect("accepted: fails at run time");
    let e = p.wait(&sub, &|_| {}).await.expect_err("libx264 refuses");
    match e {
        ProviderError::Failed(m) => {
            assert!(m.starts_with("SaveVideo: "), "{m}");
            assert!(m.contains("height not divisible by 2 (64x47)"), "{m}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    // Same failure read from /history alone.
    comfy.set_websocket(false);
    let mut wf = workflow("video_from_image.json");
    wf["2"]["inputs"]["height"] = json!(47);
    let sub = p.submit(&comfy_video_request(wf, Task::ImageToVideo), None).await.expect("submit");
    let e = p.wait(&sub, &|_| {}).await.expect_err("libx264 refuses");
    assert!(matches!(e, ProviderError::Failed(ref m) if m.contains("(64x47)")), "{e:?}");
}

#[tokio::test]
async fn providers_comfy_vhs_video_combine_gifs_output() {
    let comfy = FakeComfy::start().await;
    let p = ComfyProvider::new(&cfg(ProviderKind::Comfyui, &comfy.base_url())).expect("provider");
    let wf = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": "{{width}}", "height": "{{height}}", "batch_size": 1, "color": 0}},
        "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": "{{frames}}"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "vhs/still"}},
        "4": {"class_type": "VHS_VideoCombine", "inputs": {"images": ["2", 0], "frame_rate": "{{fps}}", "loop_count": 0,
              "filename_prefix": "vhs/clip", "format": "video/h264-mp4", "pingpong": false, "save_output": true}},
    });
    let sub = p.submit(&comfy_video_request(wf, Task::TextToVideo), None).await.expect("submit");
    let files = p.wait(&sub, &|_| {}).await.expect("result");
    assert_eq!(files.len(), 2, "the clip and the still");
    assert_eq!(container(&files[0].bytes), "mp4", "the video comes first");
    assert_eq!(files[0].bytes, fakes::comfyui::recorded_video_bytes("video_from_image"));
    assert_eq!(files[0].mime, "video/mp4");
    assert!(image::load_from_memory(&files[1].bytes).is_ok(), "then the still picture");
    let graph = &comfy.submits()[0].graph;
    assert_eq!((&graph["2"]["inputs"]["amount"], &graph["4"]["inputs"]["frame_rate"]), (&json!(12), &json!(6)));
}

// ---------------------------------------------------------------------------------- fal video

#[tokio::test]
async fn providers_fal_image_to_video_and_text_to_video_deliver_an_mp4() {
    let fal = FakeFal::start().await;
    let mp4 = fakes::comfyui::recorded_video_bytes("video_from_image");
    fal.set_result_file(mp4.clone(), "video/mp4");
    let p = FalProvider::new(&cfg(ProviderKind::Fal, &fal.base_url())).expect("provider");
    let endpoint = "fal-ai/kling-video/v2.1/standard/image-to-video";
    let mut req = request(endpoint);
    req.task = Task::ImageToVideo;
    req.negative = None;
    req.input_images = vec![InputImage { bytes: fakes::gradient_png(6, 4), mime: "image/png".into() }];
    req.video = Some(crate::providers::VideoParams { duration_secs: 10, fps: 24 });
    // The chosen option, under its request field (Kling takes the duration as a string).
    req.extra.insert("duration".into(), json!("10"));
    let sub = p.submit(&req, None).await.expect("submit");
    assert!(sub.data["status_url"].as_str().expect("url").contains("/fal-ai/kling-video/requests/"));
    let files = p.wait(&sub, &|_| {}).await.expect("result");
    assert_eq!(files.len(), 1);
    assert_eq!((container(&files[0].bytes), files[0].mime.as_str()), ("mp4", "video/mp4"));
    assert_eq!(files[0].bytes, mp4);
    let body = fal.last_submit_body().expect("body");
    assert_eq!(data_uri_size(&body["image_url"]), (6, 4), "the photo as a data URI");
    assert_eq!((&body["prompt"], &body["duration"]), (&json!("a lighthouse at dusk"), &json!("10")));
    for k in ["image_size", "num_images", "seed", "image_urls", "negative_prompt"] {
        assert!(body.get(k).is_none(), "{k} is not a video field: {body}");
    }
    assert_eq!(fal.submits(endpoint), 1);

    // text_to_video: the same without the photo; an aspect ratio only when configured.
    let endpoint = "fal-ai/kling-video/v2.1/master/text-to-video";
    let mut req = request(endpoint);
    req.task = Task::TextToVideo;
    req.size_param = SizeParam::AspectRatio;
    req.aspect_ratio = Some("16:9".into());
    req.extra.insert("duration".into(), json!("5"));
    let sub = p.submit(&req, None).await.expect("submit");
    let files = p.wait(&sub, &|_| {}).await.expect("result");
    assert_eq!(container(&files[0].bytes), "mp4");
    let body = fal.last_submit_body().expect("body");
    assert_eq!((&body["aspect_ratio"], &body["duration"]), (&json!("16:9"), &json!("5")));
    assert!(body.get("image_url").is_none() && body.get("image_size").is_none(), "{body}");
    assert_eq!(fal.file_fetches(), 2);
}

// --------------------------------------------------------------------------- ComfyUI-Connect

use crate::providers::comfyui_connect::ComfyConnectProvider;
use crate::tests::fakes::{ConnectScenario, FakeConnect};

/// The tagged inputs of a Wan-like image-to-video workflow: `$image` on LoadImage, `$prompt`
/// on CLIPTextEncode (its `clip` is a link), `$frames(length)`, `$fps(fps)`.
fn connect_workflow() -> Value {
    json!({
        "image": {"image": "str", "upload": "str"},
        "prompt": {"text": "str", "clip": "list"},
        "frames": {"length": "int"},
        "fps": {"fps": "float"},
    })
}

fn connect_request() -> GenerateRequest {
    let mut r = comfy_video_request(json!({}), Task::ImageToVideo);
    r.workflow = None;
    r.endpoint = "wan-i2v".into();
    r
}

async fn connect_setup() -> (FakeConnect, ComfyConnectProvider) {
    let fake = FakeConnect::start().await;
    fake.add_workflow("wan-i2v", connect_workflow());
    let p = ComfyConnectProvider::new(&cfg(ProviderKind::ComfyuiConnect, &fake.base_url())).expect("provider");
    (fake, p)
}

#[tokio::test]
async fn providers_connect_direct_result_is_the_mp4() {
    let (fake, p) = connect_setup().await;
    let id = p.preassign_id().expect("the client picks the id");
    let req = connect_request();
    let sub = p.submit(&req, Some(&id)).await.expect("submit");
    assert_eq!(sub.request_id, id);
    let files = tokio::time::timeout(Duration::from_secs(10), p.wait(&sub, &|_| {})).await.expect("in time");
    let files = files.expect("result");
    assert_eq!(files.len(), 1);
    assert_eq!((container(&files[0].bytes), files[0].mime.as_str()), ("mp4", "video/mp4"));
    assert_eq!(files[0].bytes, fake.video());

    let runs = fake.runs();
    assert_eq!((runs.len(), runs[0].workflow.as_str()), (1, "wan-i2v"));
    let body = &runs[0].payload;
    let name = format!("mediabot_{id}_0.png");
    assert_eq!((&body["image"]["image"]["type"], &body["image"]["image"]["name"]), (&json!("file"), &json!(name)));
    assert_eq!(fake.input_file(&name), Some(req.input_images[0].bytes.clone()), "the photo, base64 in the payload");
    assert_eq!(body["prompt"], json!({"text": "a lighthouse at dusk"}), "never into the clip link");
    assert_eq!((&body["frames"], &body["fps"]), (&json!({"length": 12}), &json!({"fps": 6})));
    assert_eq!(sub.data["files"], json!([name]));
    assert_eq!(fake.history_polls_and_views(), (0, 0), "the answer carried the file");
}

#[tokio::test]
async fn providers_connect_history_fallback_fetches_vhs_gifs() {
    let (fake, p) = connect_setup().await;
    fake.push_scenario(ConnectScenario::HistoryOnly);
    let sub = p.submit(&connect_request(), None).await.expect("submit");
    let files = tokio::time::timeout(Duration::from_secs(10), p.wait(&sub, &|_| {})).await.expect("in time");
    let files = files.expect("result from /history + /view");
    assert_eq!(files.len(), 1);
    assert_eq!(container(&files[0].bytes), "mp4");
    assert_eq!(files[0].bytes, fake.video());
    let (polls, views) = fake.history_polls_and_views();
    assert!(polls >= 1 && views == 1, "{polls} history polls, {views} views");
}

#[tokio::test]
async fn providers_connect_restart_resumes_from_history_without_posting_again() {
    let (fake, before) = connect_setup().await;
    fake.hold();
    let id = before.preassign_id().expect("id");
    let sub = before.submit(&connect_request(), Some(&id)).await.expect("submit while the run is held");
    assert!(fake.busy());
    drop(before); // the app stops; ComfyUI goes on

    let after = ComfyConnectProvider::new(&cfg(ProviderKind::ComfyuiConnect, &fake.base_url())).expect("provider");
    assert!(after.is_known(&id, &Value::Null).await.expect("is_known"), "found in /queue by its file name");
    assert!(!after.is_known("00000000-0000-0000-0000-000000000000", &Value::Null).await.expect("is_known"));
    // What the engine restores after `is_known`: the id alone.
    let restored = Submission { request_id: sub.request_id.clone(), data: Value::Null };
    let after = Arc::new(after);
    let s = seen();
    let task = {
        let (p, sub, s) = (after.clone(), restored.clone(), s.clone());
        tokio::spawn(async move { wait_recording(p.as_ref(), &sub, &s).await })
    };
    assert!(fakes::eventually(Duration::from_secs(5), || snapshot(&s).iter().any(|p| p.running)).await, "running");
    fake.release();
    let files = task.await.expect("join").expect("result after restart");
    assert_eq!(files[0].bytes, fake.video());
    assert_eq!(fake.runs().len(), 1, "no second POST");
    assert!(after.is_known(&id, &Value::Null).await.expect("is_known"), "finished runs are known too");
}

#[tokio::test]
async fn providers_connect_errors_classified() {
    let (fake, p) = connect_setup().await;
    // Unknown workflow: the plugin's plain-text 500 is the operator's to fix.
    let mut req = connect_request();
    req.endpoint = "nope".into();
    let e = p.submit(&req, None).await.expect_err("unknown workflow");
    assert!(matches!(e, ProviderError::Misconfigured(ref m) if m.contains("nope")), "{e:?}");
    // A photo but no $image tag: refused before posting.
    fake.add_workflow("t2v", json!({"prompt": {"text": "str"}}));
    req.endpoint = "t2v".into();
    let e = p.submit(&req, None).await.expect_err("no $image");
    assert!(matches!(e, ProviderError::Misconfigured(ref m) if m.contains("$image")), "{e:?}");
    assert!(fake.runs().is_empty());

    // A graph that fails answers 200 with an empty result: the node error comes from /history.
    fake.push_scenario(ConnectScenario::FailedRun);
    let sub = p.submit(&connect_request(), None).await.expect("submit");
    let e = p.wait(&sub, &|_| {}).await.expect_err("failed run");
    assert!(
        matches!(e, ProviderError::Failed(ref m) if m.starts_with("SaveVideo: ") && m.contains("(64x47)")),
        "{e:?}"
    );

    // Cancel: the POST is dropped and the run interrupted, found in /queue by its file name.
    fake.hold();
    let sub = p.submit(&connect_request(), None).await.expect("submit");
    p.cancel(&sub).await.expect("cancel");
    let (interrupted, _) = fake.interrupts_and_deletes();
    assert_eq!(interrupted.len(), 1, "{interrupted:?}");
    fake.release();
    assert!(fakes::eventually(Duration::from_secs(5), || !fake.busy()).await);
    // A stored run ComfyUI has never heard of (it restarted and lost its history).
    let unknown = Submission { request_id: "0a0a0a0a-0000-4000-8000-000000000000".into(), data: Value::Null };
    assert!(matches!(p.wait(&unknown, &|_| {}).await, Err(ProviderError::Lost(_))));

    let base = fake.base_url();
    drop(fake);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let p = ComfyConnectProvider::new(&cfg(ProviderKind::ComfyuiConnect, &base)).expect("provider");
    let e = p.submit(&connect_request(), None).await.expect_err("down");
    assert!(matches!(e, ProviderError::Transient(_)), "{e:?}");
    let lost = p.wait(&Submission { request_id: "gone".into(), data: Value::Null }, &|_| {}).await;
    assert!(matches!(lost, Err(ProviderError::Transient(_))), "{lost:?}");
}

#[tokio::test]
async fn check_config_asks_comfyui_connect_for_the_workflow_and_its_image_tag() {
    let fake = FakeConnect::start().await;
    fake.add_workflow("wan-i2v", connect_workflow());
    fake.add_workflow("no-photo", json!({"prompt": {"text": "str"}}));
    let mut c = crate::config::Config::default();
    c.providers.push(cfg(ProviderKind::ComfyuiConnect, &fake.base_url()));
    for (id, endpoint) in [("good", "wan-i2v"), ("untagged", "no-photo"), ("missing", "nope")] {
        let mut m = crate::tests::harness::model(id, "comfyuiconnect", 5);
        m.task = Task::ImageToVideo;
        m.endpoint = endpoint.into();
        c.models.push(m);
    }
    c.validate().expect("valid");
    assert!(crate::cli::check_workflows(&c, false).await.is_empty(), "offline: nothing to ask");
    let online = crate::cli::check_workflows(&c, true).await;
    assert_eq!(online.len(), 2, "{online:#?}");
    assert!(online[0].starts_with("models[1].endpoint (untagged): workflow no-photo has no $image tag"), "{online:#?}");
    assert!(
        online[1].starts_with("models[2].endpoint (missing): ComfyUI-Connect workflow nope: model misconfigured"),
        "{online:#?}"
    );

    // validate(): the endpoint is a workflow name.
    for bad in ["", "a/b"] {
        c.models[0].endpoint = bad.into();
        let e = c.validate().expect_err("no workflow name");
        assert_eq!(e.key, "models[0].endpoint", "{e}");
    }
}
