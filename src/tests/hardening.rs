//! Issue 17, items 17–23, end to end through the emulator (in Russian where users read it):
//! a model that needs payment, ComfyUI down, a workflow ComfyUI refuses, the workflow inside
//! result files, uploads' retention, and the ETA of jobs started from the library.

use super::fakes::{FakeComfy, FakeFal, FalScenario};
use super::harness::*;
use crate::config::{Config, ModelConfig, ProviderKind};
use crate::domain::{Credits, JobStatus, Switch, UserId};
use crate::store::records::{ErrorClass, JobRecord, OpKind};
use serde_json::Value;
use std::time::Duration;

const ADMIN: i64 = 900;

/// `/start` in Russian; waits for the greeting.
async fn start_ru(h: &Harness, user: i64) {
    h.text(user, "ru", "/start");
    h.wait_text(user, "Привет").await;
}

async fn last_job(h: &Harness, user: i64) -> JobRecord {
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    jobs.into_iter().rev().find(|j| j.user_id == UserId(user)).expect("job")
}

/// Waits until the user's last job has its final message recorded (the job's last write).
async fn settled(h: &Harness, user: i64) -> JobRecord {
    for _ in 0..400 {
        let job = last_job(h, user).await;
        if job.delivery == crate::store::records::Delivery::Delivered {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the job of {user} never settled");
}

/// Sends `prompt` and presses "Квадрат" (one model configured: no model question).
async fn create_square(h: &Harness, user: i64, prompt: &str) {
    h.text(user, "ru", prompt);
    let f = h.wait_for_buttons(user, "Квадрат").await;
    h.press(user, "ru", f["message_id"].as_i64().expect("id"), &Harness::button(&f, "Квадрат"));
}

async fn disabled(h: &Harness) -> Vec<Switch> {
    h.store().read(|rx| rx.find_disabled()).await.expect("read").into_iter().map(|(s, _)| s).collect()
}

/// Admin messages containing `needle`.
fn alerts(h: &Harness, needle: &str) -> usize {
    h.bot_messages(ADMIN).iter().filter(|m| text_of(m).contains(needle)).count()
}

/// A ComfyUI provider at `base` with model `local` running `workflow`, and a demo model
/// `spare` to offer instead.
fn comfy_config(base: String, workflow: &'static str) -> impl FnOnce(&std::path::Path) -> Config {
    move |dir| {
        let wf = dir.join("wf.json");
        std::fs::write(&wf, workflow).expect("workflow");
        let mut c = test_config(dir);
        c.telegram.admins = vec![ADMIN];
        c.providers.push(provider("comfy", ProviderKind::Comfyui, &base));
        c.providers.push(provider("demo", ProviderKind::Demo, ""));
        let mut m = model("local", "comfy", 5);
        m.workflow = Some(wf);
        c.models.push(m);
        c.models.push(model("spare", "demo", 10));
        c
    }
}

/// A fal provider at `base` with `models` on it; admins as everywhere here.
fn fal_config(base: String, models: Vec<ModelConfig>) -> impl FnOnce(&std::path::Path) -> Config {
    move |dir| {
        let mut c = test_config(dir);
        c.telegram.admins = vec![ADMIN];
        c.providers.push(provider("fal", ProviderKind::Fal, &base));
        c.models.extend(models);
        c
    }
}

const EMPTY_WORKFLOW: &str = r#"{"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 255}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "mb"}}}"#;

/// `http://127.0.0.1:<port>` with nobody listening: ComfyUI stopped.
fn stopped_server() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("http://{}", l.local_addr().expect("addr"))
}

/// Item 17: a 402 for one model switches that model off; the provider's other models go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn payment_required_switches_off_the_model_not_its_provider() {
    let fal = FakeFal::start().await;
    fal.push_scenario(FalScenario::SubmitError {
        status: 402,
        body: r#"{"detail":"Payment required: this model is not in your plan"}"#.into(),
    });
    let h =
        Harness::start(fal_config(fal.base_url(), vec![model("flux", "fal", 30), model("schnell", "fal", 10)])).await;
    h.text(ADMIN, "en", "/start");
    h.wait_text(ADMIN, "Welcome").await;
    start_ru(&h, 1701).await;
    h.create(1701, "ru", "корабль", "Model flux", "Квадрат").await;
    let m = h.wait_text(1701, "Эта модель сейчас недоступна").await;
    let keyboard = m["reply_markup"].to_string();
    assert!(keyboard.contains("Model schnell"), "the same provider's other model is offered: {m}");
    assert!(!keyboard.contains("Model flux"), "{m}");
    h.wait_for(ADMIN, 10, "admin alert", |_| alerts(&h, "needs a payment") == 1).await;
    let off = disabled(&h).await;
    assert!(off.contains(&Switch::Model("flux".into())), "{off:?}");
    assert!(!off.contains(&Switch::Provider("fal".into())), "the provider stays on: {off:?}");
    assert_eq!(last_job(&h, 1701).await.error.expect("error").class, ErrorClass::PaymentRequired);

    // The offered model on the same provider runs the request.
    h.press(1701, "ru", m["message_id"].as_i64().expect("id"), &Harness::button(&m, "Model schnell"));
    let f = h.wait_for_buttons(1701, "Квадрат").await;
    h.press(1701, "ru", f["message_id"].as_i64().expect("id"), &Harness::button(&f, "Квадрат"));
    h.wait_for(1701, 30, "the picture from schnell", |_| h.photos(1701).len() == 1).await;
    assert_eq!(fal.submits_total(), 2);
    assert_eq!(
        kinds(&h.ledger(1701).await),
        [OpKind::SignupBonus, OpKind::Hold, OpKind::Release, OpKind::Hold, OpKind::Capture]
    );
    assert_eq!(alerts(&h, "needs a payment"), 1, "admins alerted once");
    h.verify_clean().await;
    h.assert_no_rejections();
}

/// Item 20: with ComfyUI stopped, every check counts as an attempt and the job ends after
/// `jobs.max_attempts`, released.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn comfyui_down_fails_after_max_attempts_and_releases() {
    let h = Harness::start(comfy_config(stopped_server(), EMPTY_WORKFLOW)).await;
    start_ru(&h, 1702).await;
    h.create(1702, "ru", "хижина", "Model local", "Квадрат").await;
    h.wait_text(1702, "Провайдер сейчас не отвечает").await;
    let job = last_job(&h, 1702).await;
    assert_eq!((job.status, job.error.expect("error").class), (JobStatus::Failed, ErrorClass::Transient));
    assert_eq!(job.attempts, h.config.jobs.max_attempts, "the submit and each failed check count");
    assert_eq!(kinds(&h.ledger(1702).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Release]);
    assert_eq!(h.balance(1702).await, Credits(100));
    h.verify_clean().await;
    h.assert_no_rejections();
}

/// Item 20: attempts to spare do not outlive the model's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn comfyui_down_fails_at_the_timeout_whatever_attempts_are_left() {
    let base = stopped_server();
    let h = Harness::start(move |dir| {
        let mut c = comfy_config(base, EMPTY_WORKFLOW)(dir);
        c.jobs.max_attempts = 1000;
        c.jobs.retry_base_ms = 300;
        c.models[0].timeout_secs = Some(2);
        c
    })
    .await;
    start_ru(&h, 1703).await;
    h.create(1703, "ru", "хижина", "Model local", "Квадрат").await;
    h.wait_text(1703, "Провайдер не успел ответить").await;
    let job = last_job(&h, 1703).await;
    assert_eq!(job.error.as_ref().expect("error").class, ErrorClass::Timeout, "{job:?}");
    assert!(job.attempts < 20, "backed off, not hammered: {}", job.attempts);
    let took = job.finished_at.expect("finished") - job.started_at.expect("started");
    assert!((2000..15_000).contains(&took), "ended at the 2 s timeout: {took} ms");
    assert_eq!(h.balance(1703).await, Credits(100));
    h.verify_clean().await;
}

/// Item 23: a workflow ComfyUI's validation refuses is the operator's fault: the model goes
/// off, admins get the node errors once, the user is told the model is unavailable and
/// offered another.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workflow_comfyui_refuses_switches_the_model_off_and_tells_the_admins() {
    let comfy = FakeComfy::start().await;
    let bad = r#"{"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "bogus", "scale_by": 2.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}}}"#;
    let h = Harness::start(comfy_config(comfy.base_url(), bad)).await;
    h.text(ADMIN, "en", "/start");
    h.wait_text(ADMIN, "Welcome").await;
    start_ru(&h, 1704).await;
    h.create(1704, "ru", "хижина", "Model local", "Квадрат").await;
    let m = h.wait_text(1704, "Эта модель сейчас недоступна").await;
    let text = text_of(&m);
    assert!(!text.contains("ImageScaleBy") && !text.contains("переформулировать"), "not blamed on the user: {text}");
    assert!(m["reply_markup"].to_string().contains("Model spare"), "another model offered: {m}");
    h.wait_for(ADMIN, 10, "admin alert", |_| alerts(&h, "misconfigured") == 1).await;
    let alert = h.bot_messages(ADMIN).into_iter().find(|x| text_of(x).contains("misconfigured")).expect("alert");
    assert!(text_of(&alert).contains("node 2 (ImageScaleBy): Value not in list"), "the node errors: {alert}");
    assert!(disabled(&h).await.contains(&Switch::Model("local".into())));
    assert_eq!(last_job(&h, 1704).await.error.expect("error").class, ErrorClass::Misconfigured);
    assert!(comfy.submits().is_empty(), "ComfyUI queued nothing");
    // The next user cannot pick it, and the admins hear nothing more.
    start_ru(&h, 1705).await;
    h.text(1705, "ru", "ещё одна хижина | model=local");
    h.wait_text(1705, "Я не знаю модель").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(alerts(&h, "misconfigured"), 1);
    assert_eq!(h.balance(1704).await, Credits(100));
    h.verify_clean().await;
    h.assert_no_rejections();
}

/// PNG chunk types in file order.
fn png_chunks(png: &[u8]) -> Vec<String> {
    let (mut at, mut out) = (8, Vec::new());
    while let Some(head) = png.get(at..at + 8) {
        out.push(String::from_utf8_lossy(&head[4..8]).into_owned());
        at += 12 + u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    }
    out
}

/// Item 22: ComfyUI's PNG carries the whole graph in a `prompt` chunk; what is stored and
/// sent has the same pixels and no text chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn comfyui_results_reach_the_user_without_the_workflow() {
    let comfy = FakeComfy::start().await;
    let h = Harness::start(comfy_config(comfy.base_url(), EMPTY_WORKFLOW)).await;
    start_ru(&h, 1706).await;
    h.create(1706, "ru", "секретный промпт", "Model local", "Квадрат").await;
    h.wait_for(1706, 30, "photo and document", |_| h.photos(1706).len() == 1 && h.documents(1706).len() == 1).await;
    let original = comfy.output_file("", "mb_00001_.png").expect("ComfyUI's output");
    assert!(png_chunks(&original).contains(&"tEXt".to_string()), "the fake writes the graph like ComfyUI");
    let doc = &h.documents(1706)[0]["document"];
    let sent = h.emu.file_bytes(doc["file_id"].as_str().expect("file id")).expect("document bytes");
    assert_eq!(png_chunks(&sent), ["IHDR", "IDAT", "IEND"], "no text chunks in what the user got");
    assert!(!sent.windows(9).any(|w| w == b"EmptyImage"), "no trace of the graph");
    let decode = |b: &[u8]| image::load_from_memory(b).expect("png").to_rgba8();
    assert_eq!(decode(&sent), decode(&original), "same pixels");
    let item = h.store().read(|rx| rx.find_library(UserId(1706))).await.expect("library").remove(0);
    let stored = std::fs::read(h.dir.path().join("media").join(format!("{}.{}", item.sha256, item.ext))).expect("file");
    assert_eq!(stored, sent, "stored as sent");
    assert_eq!(item.sha256, crate::imaging::sha256_hex(&stored));
    h.assert_no_rejections();
}

/// Item 18: an edit's uploaded photo is pruned a retention time after its job, the result
/// stays, and "🔁 Ещё раз" then says why it cannot run (nothing held).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_are_pruned_after_the_retention_and_a_rerun_says_so() {
    let fal = FakeFal::start().await;
    let mut edit = model("banana-edit", "fal", 20);
    edit.task = crate::domain::Task::Edit;
    edit.endpoint = "fal-ai/nano-banana/edit".into();
    edit.size_param = crate::providers::SizeParam::None;
    let mut h = Harness::start(fal_config(fal.base_url(), vec![edit])).await;
    start_ru(&h, 1707).await;
    h.photo(1707, "ru", &testdata("photos/orientation/Landscape_1.jpg"), Some("сделай зиму"));
    h.wait_for(1707, 30, "edited photo", |_| h.photos(1707).len() == 1 && h.documents(1707).len() == 1).await;
    let job = settled(&h, 1707).await;
    let input = job.payload.input_files().next().expect("an input").to_string();
    let store = h.store();
    let sha = input.clone();
    let rec = store.read(move |rx| rx.get_input(&sha)).await.expect("read").expect("a live input");
    assert!(store.find_media_file(&input).is_some());
    // Eight days pass.
    let (sha, ext, bytes) = (input.clone(), rec.ext.clone(), rec.bytes);
    let eight_days_ago = crate::domain::now_ms() - 8 * 86_400_000;
    store.write(move |tx| tx.put_input(&sha, &ext, bytes, eight_days_ago)).await.expect("age");
    // The app is restarted below: no handle of ours may keep the database open.
    drop(store);
    h.restart().await;
    let store = h.store();
    // The prune commits after removing the file: wait for the record to go.
    let mut pruned = false;
    for _ in 0..200 {
        let sha = input.clone();
        pruned = store.read(move |rx| rx.get_input(&sha)).await.expect("read").is_none();
        if pruned {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pruned, "the upload's record is pruned at start");
    assert!(store.find_media_file(&input).is_none(), "and its file");
    let item = store.read(|rx| rx.find_library(UserId(1707))).await.expect("library").remove(0);
    assert!(store.media_path(&item.sha256, &item.ext).exists(), "the result stays");

    let photo = h.photos(1707).remove(0);
    h.press(1707, "ru", photo["message_id"].as_i64().expect("id"), &Harness::button(&photo, "Ещё раз"));
    h.wait_text(1707, "Фото, из которых это сделано, больше не хранятся").await;
    assert_eq!(kinds(&h.ledger(1707).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture], "nothing held");
    assert_eq!(fal.submits_total(), 1);
    h.assert_no_rejections();
}

/// Item 19: "🔁 Ещё раз" shows the model's expected time from the start, not "about 1 s".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rerun_from_the_library_shows_the_models_eta() {
    let fal = FakeFal::start().await;
    let fal_config = fal_config(fal.base_url(), vec![model("flux", "fal", 10)]);
    let h = Harness::start(move |dir| {
        let mut c = fal_config(dir);
        c.providers[0].max_concurrency = 1;
        c
    })
    .await;
    start_ru(&h, 1708).await;
    create_square(&h, 1708, "маяк").await;
    h.wait_for(1708, 30, "the picture", |_| h.photos(1708).len() == 1).await;
    settled(&h, 1708).await;
    h.store()
        .write(|tx| {
            for _ in 0..crate::jobs::ETA_SAME_SETTINGS {
                tx.insert_duration("flux", "square", crate::domain::JobId::new(), 40_000)?;
            }
            Ok::<_, crate::store::StoreError>(())
        })
        .await
        .expect("durations");
    // Another user's job holds fal's only slot, so the rerun waits in our queue and its
    // first message stays what the user reads.
    fal.hold();
    start_ru(&h, 1709).await;
    create_square(&h, 1709, "другой маяк").await;
    assert!(super::fakes::eventually(Duration::from_secs(20), || fal.submits_total() == 2).await);
    let photo = h.photos(1708).remove(0);
    h.press(1708, "ru", photo["message_id"].as_i64().expect("id"), &Harness::button(&photo, "Ещё раз"));
    let queued = h.wait_text(1708, "В очереди").await;
    assert!(text_of(&queued).contains("примерно 40 с"), "{queued}");
    // The scheduler's own "in queue" edit finds nothing to correct.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let id = queued["message_id"].as_i64();
    let now: Value = h.messages(1708).into_iter().find(|m| m["message_id"].as_i64() == id).expect("message");
    assert!(text_of(&now).contains("примерно 40 с"), "{now}");
    assert_eq!(now["edit_count"].as_u64(), Some(0), "{now}");
    fal.release();
    h.wait_for(1708, 30, "the rerun's picture", |_| h.photos(1708).len() == 2).await;
    h.assert_no_rejections();
}
