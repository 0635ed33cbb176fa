//! The spine end to end: Telegram (emulator) → bot → billing → job → provider → library → user.

use super::harness::*;
use crate::config::ProviderKind;
use crate::domain::{Credits, JobStatus, UserId};
use crate::store::records::OpKind;

fn demo_config(dir: &std::path::Path) -> crate::config::Config {
    let mut c = test_config(dir);
    c.providers.push(provider("demo", ProviderKind::Demo, ""));
    c.models.push(model("demo", "demo", 10));
    c.models.push(model("demo2", "demo", 15));
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn demo_create_flow_delivers_photo_and_document() {
    let h = Harness::start(demo_config).await;
    h.text(501, "en", "/start");
    let welcome = h.wait_text(501, "Welcome bonus").await;
    assert!(text_of(&welcome).contains("100 credits"), "{welcome}");
    let progress_id = h.create(501, "en", "a lighthouse at dusk", "Model demo2", "Square").await;
    h.wait_for(501, 30, "photo and document", |_| h.photos(501).len() == 1 && h.documents(501).len() == 1).await;
    let msgs = h
        .wait_for(501, 10, "progress message ends as done", |m| {
            m.iter().any(|x| x["message_id"].as_i64() == Some(progress_id) && text_of(x).contains("Done"))
        })
        .await;
    let photo = &h.photos(501)[0];
    assert!(text_of(photo).contains("DEMO"), "demo results are captioned as demo: {photo}");
    assert!(photo["reply_markup"].to_string().contains("Create more"));
    let progress = msgs.iter().find(|m| m["message_id"].as_i64() == Some(progress_id)).expect("progress message");
    assert!(text_of(progress).contains("Done"), "progress message ends as done: {progress}");
    assert_eq!(h.balance(501).await, Credits(85));
    assert_eq!(kinds(&h.ledger(501).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn double_tap_on_format_starts_one_job_with_one_hold() {
    let h = Harness::start(demo_config).await;
    h.text(502, "en", "/start");
    h.wait_text(502, "Welcome").await;
    h.text(502, "en", "two foxes");
    let m = h.wait_for_buttons(502, "Model demo").await;
    let mid = m["message_id"].as_i64().expect("id");
    h.press(502, "en", mid, &Harness::button(&m, "Model demo ·"));
    let f = h.wait_for_buttons(502, "Square").await;
    let fid = f["message_id"].as_i64().expect("id");
    let data = Harness::button(&f, "Square");
    h.press(502, "en", fid, &data);
    h.press(502, "en", fid, &data);
    h.wait_for(502, 30, "photo", |_| h.photos(502).len() == 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(h.photos(502).len(), 1);
    let holds = h.ledger(502).await.iter().filter(|o| o.kind == OpKind::Hold).count();
    assert_eq!(holds, 1, "one hold for a double tap");
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    assert_eq!(jobs.iter().filter(|j| j.user_id == UserId(502)).count(), 1);
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn insufficient_balance_is_refused_with_balance_and_price() {
    let h = Harness::start(|d| {
        let mut c = demo_config(d);
        c.models[0].price = Credits(500);
        c
    })
    .await;
    h.text(503, "ru", "/start");
    h.wait_text(503, "бонус").await;
    h.create(503, "ru", "дорогой кот | model=demo", "Квадрат", "Квадрат").await;
    let m = h.wait_text(503, "Недостаточно средств").await;
    assert!(text_of(&m).contains("100") && text_of(&m).contains("500"), "{m}");
    assert_eq!(kinds(&h.ledger(503).await), [OpKind::SignupBonus]);
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    assert!(jobs.is_empty(), "no job without a hold");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn extended_syntax_picks_model_and_size_and_reports_unknown_parts() {
    let h = Harness::start(demo_config).await;
    h.text(504, "en", "/start");
    h.wait_text(504, "Welcome").await;
    h.text(504, "en", "a tower | model=demo2 | size=640x960 | negative=fog | mood=calm");
    h.wait_text(504, "mood=calm").await;
    h.wait_for(504, 30, "photo and document", |_| h.photos(504).len() == 1 && h.documents(504).len() == 1).await;
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    let job = jobs.iter().find(|j| j.user_id == UserId(504)).expect("job");
    assert_eq!(job.model_id, "demo2");
    let crate::store::records::JobPayload::Generate { width, height, negative, .. } = &job.payload else {
        panic!("a generation job: {job:?}")
    };
    assert_eq!((*width, *height), (640, 960));
    assert_eq!(negative.as_deref(), Some("fog"));
    assert_eq!(job.status, JobStatus::Succeeded);
    let doc = &h.documents(504)[0];
    assert_eq!(doc["document"]["file_name"], "mediabot.png");
    h.assert_no_rejections();
}

use super::fakes::comfyui::FakeComfy;
use super::fakes::fal::{FakeFal, FalScenario};

fn fal_config(base: String) -> impl FnOnce(&std::path::Path) -> crate::config::Config {
    move |dir| {
        let mut c = test_config(dir);
        c.providers.push(provider("fal", ProviderKind::Fal, &base));
        c.models.push(model("flux", "fal", 30));
        c
    }
}

async fn start_user(h: &Harness, user: i64, lang: &str) {
    h.text(user, lang, "/start");
    h.wait_for(user, 20, "welcome", |m| m.iter().any(|x| x["from_bot"] == true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fal_end_to_end_photo_document_ledger_and_library() {
    let fal = FakeFal::start().await;
    let h = Harness::start(fal_config(fal.base_url())).await;
    h.text(601, "en", "/start");
    let w = h.wait_text(601, "Welcome bonus: 100 credits").await;
    assert!(w["reply_markup"].to_string().contains("Create"), "main menu under /start");
    h.text(601, "en", "a red fox in snow");
    // One model configured: the bot goes straight to formats.
    let f = h.wait_for_buttons(601, "Vertical").await;
    let fid = f["message_id"].as_i64().expect("id");
    h.press(601, "en", fid, &Harness::button(&f, "Vertical"));
    h.wait_for(601, 30, "photo + document", |_| h.photos(601).len() == 1 && h.documents(601).len() == 1).await;

    let photo = &h.photos(601)[0];
    assert!(text_of(photo).contains("Model flux"), "caption names the model: {photo}");
    assert!(photo["reply_markup"].to_string().contains('⭐'));
    assert_eq!(fal.submits_total(), 1);
    assert_eq!(fal.last_auth().as_deref(), Some("Key test-key-123"));
    let body = fal.last_submit_body().expect("body");
    assert_eq!(body["prompt"], "a red fox in snow");
    assert_eq!(body["image_size"], serde_json::json!({"width": 768, "height": 1344}));

    assert_eq!(kinds(&h.ledger(601).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!(h.balance(601).await, Credits(70));
    // The file_ids are recorded once the whole delivery (photo, document, "done" edit) ended.
    let mut lib = vec![];
    for _ in 0..200 {
        lib = h.store().read(|rx| rx.find_library(UserId(601))).await.expect("library");
        if lib.first().is_some_and(|i| i.document_file_id.is_some()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(lib.len(), 1);
    let item = &lib[0];
    let path = h.dir.path().join("media").join(format!("{}.{}", item.sha256, item.ext));
    let bytes = std::fs::read(&path).expect("result file on disk under its sha256");
    assert_eq!(crate::imaging::sha256_hex(&bytes), item.sha256);
    assert_eq!(bytes, fal.result_png(), "the original is stored byte for byte");
    assert_eq!((item.width, item.height), (512, 768));
    assert!(item.photo_file_id.is_some() && item.document_file_id.is_some(), "file_ids recorded");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn comfyui_end_to_end_with_workflow_placeholders() {
    let comfy = FakeComfy::start().await;
    let base = comfy.base_url();
    let h = Harness::start(move |dir| {
        let wf = dir.join("wf.json");
        std::fs::write(
            &wf,
            r#"{"1": {"class_type": "EmptyImage", "inputs": {"width": "{{width}}", "height": "{{height}}", "batch_size": 1, "color": 255}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "mb {{seed}}"}}}"#,
        )
        .expect("workflow");
        let mut c = test_config(dir);
        c.providers.push(provider("comfy", ProviderKind::Comfyui, &base));
        let mut m = model("local", "comfy", 5);
        m.workflow = Some(wf);
        c.models.push(m);
        c
    })
    .await;
    start_user(&h, 602, "en").await;
    h.text(602, "en", "a cabin");
    let f = h.wait_for_buttons(602, "Horizontal").await;
    h.press(602, "en", f["message_id"].as_i64().expect("id"), &Harness::button(&f, "Horizontal"));
    h.wait_for(602, 30, "photo + document", |_| h.photos(602).len() == 1 && h.documents(602).len() == 1).await;

    let subs = comfy.submits();
    assert_eq!(subs.len(), 1);
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    assert_eq!(jobs[0].preassigned_id.as_deref(), Some(subs[0].prompt_id.as_str()), "our chosen prompt_id was used");
    assert!(subs[0].client_id.is_some());
    assert_eq!(subs[0].graph["1"]["inputs"]["width"], 1344, "numeric placeholders become numbers");
    assert_eq!(subs[0].graph["1"]["inputs"]["height"], 768);
    assert!(subs[0].graph["2"]["inputs"]["filename_prefix"].as_str().expect("prefix").starts_with("mb "));
    assert_eq!(kinds(&h.ledger(602).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!(h.balance(602).await, Credits(95));
    let lib = h.store().read(|rx| rx.find_library(UserId(602))).await.expect("library");
    assert_eq!((lib[0].width, lib[0].height), (1344, 768));
    h.verify_clean().await;
    h.assert_no_rejections();
}

/// Runs one failing job and checks the user's message, the release and the ledger.
async fn assert_failure(scenario: FalScenario, lang: &str, expect: &str, timeout: Option<u64>) -> FakeFal {
    let fal = FakeFal::start().await;
    fal.set_scenario(scenario);
    let base = fal.base_url();
    let h = Harness::start(move |d| {
        let mut c = fal_config(base)(d);
        c.models[0].timeout_secs = timeout;
        c
    })
    .await;
    start_user(&h, 610, lang).await;
    h.text(610, lang, "a storm");
    let fmt = if lang == "ru" { "Квадрат" } else { "Square" };
    let f = h.wait_for_buttons(610, fmt).await;
    h.press(610, lang, f["message_id"].as_i64().expect("id"), &Harness::button(&f, fmt));
    let m = h.wait_text(610, expect).await;
    assert!(text_of(&m).contains("30"), "the message says the price came back: {m}");
    assert!(h.photos(610).is_empty());
    assert_eq!(kinds(&h.ledger(610).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Release]);
    assert_eq!(h.balance(610).await, Credits(100), "balance unchanged");
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    assert!(jobs[0].status == JobStatus::Failed && jobs[0].hold_id.is_some());
    h.verify_clean().await;
    h.assert_no_rejections();
    fal
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_500_is_retried_then_released_in_russian() {
    let fal = assert_failure(
        FalScenario::SubmitError { status: 500, body: r#"{"detail":"Internal Server Error"}"#.into() },
        "ru",
        "Провайдер сейчас не отвечает",
        None,
    )
    .await;
    assert_eq!(fal.submits_total(), 3, "transient errors are retried up to jobs.max_attempts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completed_with_error_is_released() {
    let fal = assert_failure(
        FalScenario::CompletedWithError { error: "CUDA out of memory".into(), error_type: Some("runner_error".into()) },
        "en",
        "Generation failed",
        None,
    )
    .await;
    assert_eq!(fal.submits_total(), 1, "a failed run is not resubmitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_result_json_is_released() {
    assert_failure(FalScenario::MalformedResult, "en", "Generation failed", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timeout_cancels_at_the_provider_and_releases() {
    let fal = assert_failure(FalScenario::NeverCompletes, "en", "took too long", Some(1)).await;
    assert_eq!(fal.cancels().len(), 1, "the provider is told to cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_after_submit_polls_the_stored_request_id() {
    let fal = FakeFal::start().await;
    fal.hold();
    let mut h = Harness::start(fal_config(fal.base_url())).await;
    start_user(&h, 620, "en").await;
    h.text(620, "en", "a lantern");
    let f = h.wait_for_buttons(620, "Square").await;
    h.press(620, "en", f["message_id"].as_i64().expect("id"), &Harness::button(&f, "Square"));
    let store = h.store();
    let submitted = super::fakes::eventually(std::time::Duration::from_secs(20), || fal.submits_total() == 1).await;
    assert!(submitted);
    // Wait until the request id is persisted, then stop the app while fal still holds the job.
    for _ in 0..200 {
        let s = store.clone();
        let jobs = s.read(|rx| rx.find_jobs()).await.expect("jobs");
        if jobs.first().is_some_and(|j| j.status == JobStatus::Submitted) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    drop(store);
    h.stop_app().await;
    fal.release();
    h.start_app().await;
    h.wait_for(620, 30, "photo and document after restart", |_| {
        h.photos(620).len() == 1 && h.documents(620).len() == 1
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(fal.submits_total(), 1, "never resubmitted");
    assert_eq!(h.photos(620).len(), 1, "exactly one delivery");
    assert_eq!(h.documents(620).len(), 1);
    let ops = h.ledger(620).await;
    assert_eq!(kinds(&ops), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture], "exactly one capture");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn comfyui_restart_keeps_the_prompt_id() {
    let comfy = FakeComfy::start().await;
    comfy.hold();
    let base = comfy.base_url();
    let mut h = Harness::start(move |dir| {
        let wf = dir.join("wf.json");
        std::fs::write(
            &wf,
            r#"{"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}"#,
        )
        .expect("wf");
        let mut c = test_config(dir);
        c.providers.push(provider("comfy", ProviderKind::Comfyui, &base));
        let mut m = model("local", "comfy", 5);
        m.workflow = Some(wf);
        m.size_param = crate::providers::SizeParam::None;
        m.formats = vec![crate::domain::Format::Square];
        c.models.push(m);
        c
    })
    .await;
    start_user(&h, 621, "en").await;
    h.text(621, "en", "anything");
    assert!(super::fakes::eventually(std::time::Duration::from_secs(20), || comfy.submits().len() == 1).await);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    h.restart().await;
    comfy.release();
    h.wait_for(621, 30, "photo after restart", |_| h.photos(621).len() == 1).await;
    assert_eq!(comfy.submits().len(), 1, "never resubmitted");
    assert_eq!(kinds(&h.ledger(621).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_photo_upload_goes_to_an_edit_model_without_metadata() {
    let fal = FakeFal::start().await;
    let base = fal.base_url();
    let h = Harness::start(move |d| {
        let mut c = fal_config(base)(d);
        let mut m = model("banana-edit", "fal", 20);
        m.task = crate::domain::Task::Edit;
        m.endpoint = "fal-ai/nano-banana/edit".into();
        m.size_param = crate::providers::SizeParam::None;
        c.models.push(m);
        c
    })
    .await;
    start_user(&h, 630, "en").await;
    let before = h.bot_messages(630).len();
    h.photo(630, "en", &testdata("photos/iphone6_8mp_gps.jpg"), Some("make it winter"));
    h.wait_for(630, 30, "edited photo", |_| h.photos(630).len() == 1 && h.documents(630).len() == 1).await;
    h.wait_for(630, 10, "done", |m| m.iter().any(|x| x["from_bot"] == true && text_of(x).contains("Done"))).await;
    // One message before the result (issue 17, item 24): the receipt is the progress message,
    // so Telegram's per-chat pace never holds the job back behind a second message.
    let new = &h.bot_messages(630)[before..];
    assert_eq!(new.len(), 3, "progress, photo, document: {new:?}");
    assert!(text_of(&new[0]).contains("Done") && new[0]["edit_count"].as_u64() >= Some(1), "{new:?}");
    let body = fal.last_submit_body().expect("submit");
    assert_eq!(body["prompt"], "make it winter");
    let uri = body["image_urls"][0].as_str().expect("image_urls[0] is a data URI");
    let b64 = uri.split_once("base64,").expect("data uri").1;
    let sent = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).expect("b64");
    assert!(!sent.windows(6).any(|w| w == b"Exif\0\0"), "no EXIF (GPS) goes to the provider");
    let info = crate::imaging::probe(&sent).expect("valid image");
    assert_eq!((info.width, info.height), (3264, 2448));
    assert_eq!(kinds(&h.ledger(630).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!(h.balance(630).await, Credits(80));
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broken_and_bomb_uploads_get_clear_messages() {
    let fal = FakeFal::start().await;
    let h = Harness::start(fal_config(fal.base_url())).await;
    start_user(&h, 631, "en").await;
    h.push(serde_json::json!({"user": {"id": 631, "first_name": "U", "language_code": "en"},
        "document_base64": base64_file(&testdata("photos/corrupt_truncated_in_exif.jpg")),
        "file_name": "corrupt_truncated_in_exif.jpg"}));
    h.wait_text(631, "couldn't read this image").await;
    h.push(serde_json::json!({"user": {"id": 631, "first_name": "U", "language_code": "en"},
        "document_base64": base64_file(&testdata("photos/bomb_50000x50000_1bit.png")),
        "file_name": "bomb_50000x50000_1bit.png"}));
    h.wait_text(631, "too large").await;
    // A good photo without an edit model configured is accepted and explained.
    h.photo(631, "en", &testdata("photos/orientation/Landscape_6.jpg"), None);
    let m = h.wait_text(631, "No image-editing model").await;
    assert!(text_of(&m).contains("1800×1200"), "orientation applied before reporting size: {m}");
    assert_eq!(fal.submits_total(), 0);
    h.assert_no_rejections();
}
