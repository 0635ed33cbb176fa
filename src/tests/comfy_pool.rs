//! A ComfyUI provider with several servers (`base_urls`): jobs spread over the healthy ones,
//! a server dying mid-job hands the job to another (delivered once), nothing up releases the
//! job, and a restart polls each job's own server. Users speak Russian; the database is a
//! real redb file that survives the restarts.

use super::fakes::comfyui::FakeComfy;
use super::fakes::eventually;
use super::harness::{Harness, kinds, model, provider, test_config, text_of};
use crate::config::{Config, ProviderKind};
use crate::domain::{Credits, JobStatus};
use crate::store::records::{ErrorClass, JobRecord, OpKind};
use std::time::Duration;

/// A weight-free workflow: a 64×64 picture, saved.
const WORKFLOW: &str = r#"{"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "pool"}}}"#;

/// One pool provider `gpus` over `urls`, one ComfyUI model (5 credits, one format: a text
/// message starts a job at once), room for 8 jobs at a time.
fn pool_config(urls: Vec<String>) -> impl FnOnce(&std::path::Path) -> Config {
    move |dir| {
        let wf = dir.join("wf.json");
        std::fs::write(&wf, WORKFLOW).expect("workflow");
        let mut c = test_config(dir);
        let mut p = provider("gpus", ProviderKind::Comfyui, "");
        p.base_urls = urls;
        p.max_concurrency = 8;
        c.providers.push(p);
        let mut m = model("local", "gpus", 5);
        m.workflow = Some(wf);
        m.size_param = crate::providers::SizeParam::None;
        m.formats = vec![crate::domain::Format::Square];
        c.models.push(m);
        c.jobs.per_user_running = 8;
        c
    }
}

async fn fakes(n: usize) -> Vec<FakeComfy> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(FakeComfy::start().await);
    }
    out
}

fn urls(f: &[FakeComfy]) -> Vec<String> {
    f.iter().map(FakeComfy::base_url).collect()
}

async fn start_user(h: &Harness, user: i64) {
    h.text(user, "ru", "/start");
    h.wait_for(user, 20, "приветствие", |m| m.iter().any(|x| x["from_bot"] == true)).await;
}

async fn jobs(h: &Harness) -> Vec<JobRecord> {
    h.store().read(|rx| rx.find_jobs()).await.expect("jobs")
}

/// The ComfyUI server stored with a job's submission.
fn server_of(job: &JobRecord) -> Option<String> {
    job.submission.as_ref()?.data.get("server")?.as_str().map(str::to_string)
}

/// Waits until the fakes together accepted `n` prompts.
async fn submitted(f: &[FakeComfy], n: usize) {
    let all = || f.iter().map(|x| x.submits().len()).sum::<usize>();
    assert!(eventually(Duration::from_secs(20), || all() >= n).await, "{} of {n} prompts submitted", all());
}

/// Waits until every job is stored as submitted (the submission is saved after the answer).
async fn stored_submitted(h: &Harness, n: usize) {
    for _ in 0..400 {
        let j = jobs(h).await;
        if j.len() == n && j.iter().all(|j| j.status == JobStatus::Submitted) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("jobs not all submitted: {:?}", jobs(h).await.iter().map(|j| j.status).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_server_down_and_the_jobs_spread_over_the_other_two() {
    let f = fakes(3).await;
    f[1].set_down(true);
    f[0].hold();
    f[2].hold();
    let h = Harness::start(pool_config(urls(&f))).await;
    let users = [701, 702, 703, 704];
    for u in users {
        start_user(&h, u).await;
    }
    for u in users {
        h.text(u, "ru", "кот в сапогах");
    }
    submitted(&f, 4).await;
    stored_submitted(&h, 4).await;
    // Held, all four stay in flight: fewest-in-flight puts two on each healthy server.
    assert_eq!((f[0].submits().len(), f[1].submits().len(), f[2].submits().len()), (2, 0, 2));
    assert!(f[1].stats_probes() >= 1, "the down server was probed and refused");
    let stored: Vec<String> = jobs(&h).await.iter().filter_map(server_of).collect();
    assert_eq!(stored.iter().filter(|s| **s == f[0].base_url()).count(), 2, "{stored:?}");
    assert_eq!(stored.iter().filter(|s| **s == f[2].base_url()).count(), 2, "{stored:?}");

    f[0].release();
    f[2].release();
    for u in users {
        h.wait_for(u, 30, "картинка", |_| h.photos(u).len() == 1 && h.documents(u).len() == 1).await;
        assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
        assert_eq!(h.balance(u).await, Credits(95));
    }
    assert!(f[1].submits().is_empty() && f[1].uploads().is_empty(), "nothing reached the down server");
    h.verify_clean().await;
    h.assert_no_rejections();
}

/// A job lands on server 0 (held there); `break_it` takes server 0 away; the job must finish
/// on server 1, once. Returns the fakes and the harness for more checks.
async fn lose_server_zero_mid_job(user: i64, break_it: impl FnOnce(&FakeComfy)) -> (Vec<FakeComfy>, Harness) {
    let f = fakes(3).await;
    f[0].hold();
    let h = Harness::start(pool_config(urls(&f))).await;
    start_user(&h, user).await;
    h.text(user, "ru", "маяк на скале");
    submitted(&f, 1).await;
    stored_submitted(&h, 1).await;
    let first = f[0].submits()[0].prompt_id.clone();
    assert!(eventually(Duration::from_secs(10), || f[0].is_running(&first)).await, "held on server 0");
    break_it(&f[0]);

    h.wait_for(user, 30, "картинка с другого сервера", |_| h.photos(user).len() == 1).await;
    let moved = f[1].submits();
    assert_eq!(moved.len(), 1, "resubmitted once, to the least loaded healthy server");
    assert_ne!(moved[0].prompt_id, first, "a new prompt id: the old one is never polled again");
    assert!(f[2].submits().is_empty());
    let job = &jobs(&h).await[0];
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(server_of(job).as_deref(), Some(f[1].base_url().as_str()));
    assert_eq!(job.submission.as_ref().map(|s| s.request_id.as_str()), Some(moved[0].prompt_id.as_str()));
    (f, h)
}

/// Delivered exactly once: one photo, one document, one hold and one capture.
async fn assert_delivered_once(h: &Harness, user: i64) {
    h.wait_for(user, 30, "документ", |_| h.documents(user).len() == 1).await;
    // Anything late would arrive in this window (polls run every 20 ms).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!((h.photos(user).len(), h.documents(user).len()), (1, 1), "delivered exactly once");
    assert_eq!(kinds(&h.ledger(user).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!(h.balance(user).await, Credits(95));
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_mid_job_loses_it_to_another_and_it_is_delivered_once() {
    let (f, h) = lose_server_zero_mid_job(711, FakeComfy::kill).await;
    assert_delivered_once(&h, 711).await;
    drop(f);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_result_from_a_server_that_came_back_is_never_delivered() {
    // Wedged, not dead: the server keeps the prompt, answers 500 for a while, then comes back
    // and finishes it.
    let (f, h) = lose_server_zero_mid_job(712, |s| s.set_down(true)).await;
    let first = f[0].submits()[0].prompt_id.clone();
    let polls_before = f[0].history_ids().len();
    f[0].set_down(false);
    f[0].release();
    assert!(eventually(Duration::from_secs(10), || f[0].is_finished(&first)).await, "the old prompt finished");
    assert_delivered_once(&h, 712).await;
    assert_eq!(f[0].history_ids().len(), polls_before, "nobody polls the old server for the old prompt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_server_down_releases_the_job_and_tells_the_user() {
    let f = fakes(3).await;
    for s in &f {
        s.set_down(true);
    }
    let h = Harness::start(pool_config(urls(&f))).await;
    start_user(&h, 721).await;
    h.text(721, "ru", "закат");
    let m = h.wait_text(721, "Провайдер сейчас не отвечает").await;
    assert!(text_of(&m).contains('5'), "the price came back: {m}");
    assert!(h.photos(721).is_empty());
    assert_eq!(kinds(&h.ledger(721).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Release]);
    assert_eq!(h.balance(721).await, Credits(100));
    let job = &jobs(&h).await[0];
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.as_ref().map(|e| e.class), Some(ErrorClass::Transient));
    assert_eq!(job.attempts, 3, "jobs.max_attempts submits were tried");
    for s in &f {
        assert!(s.stats_probes() >= 1, "each server was probed");
        assert!(s.submits().is_empty());
    }
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_polls_each_jobs_own_server_even_in_another_order() {
    let f = fakes(3).await;
    for s in &f {
        s.hold();
    }
    let mut h = Harness::start(pool_config(urls(&f))).await;
    let users = [731, 732, 733];
    for u in users {
        start_user(&h, u).await;
    }
    for u in users {
        h.text(u, "ru", "горы");
    }
    submitted(&f, 3).await;
    stored_submitted(&h, 3).await;
    let own: Vec<String> = f.iter().map(|s| s.submits()[0].prompt_id.clone()).collect();

    h.stop_app().await;
    let before: Vec<usize> = f.iter().map(|s| s.history_ids().len()).collect();
    h.config.providers[0].base_urls.reverse();
    h.start_app().await;
    for s in &f {
        s.release();
    }
    for u in users {
        h.wait_for(u, 30, "картинка после перезапуска", |_| h.photos(u).len() == 1).await;
        assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    }
    for (i, s) in f.iter().enumerate() {
        assert_eq!(s.submits().len(), 1, "server {i}: never resubmitted");
        let after = &s.history_ids()[before[i]..];
        assert!(!after.is_empty(), "server {i} was polled after the restart");
        assert!(after.iter().all(|id| *id == own[i]), "server {i} was asked only about its own prompt: {after:?}");
    }
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_whose_server_left_the_config_is_lost_and_released() {
    let f = fakes(2).await;
    f[0].hold();
    let mut h = Harness::start(pool_config(urls(&f))).await;
    start_user(&h, 741).await;
    h.text(741, "ru", "река");
    submitted(&f, 1).await;
    stored_submitted(&h, 1).await;
    assert_eq!(f[0].submits().len(), 1);

    h.stop_app().await;
    h.config.providers[0].base_urls = vec![f[1].base_url()];
    h.start_app().await;
    let m = h.wait_text(741, "Не удалось сгенерировать").await;
    assert!(text_of(&m).contains('5'), "the price came back: {m}");
    assert!(h.photos(741).is_empty());
    assert_eq!(kinds(&h.ledger(741).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Release]);
    assert_eq!(h.balance(741).await, Credits(100));
    let job = &jobs(&h).await[0];
    assert_eq!(job.status, JobStatus::Failed);
    let detail = job.error.as_ref().map(|e| e.detail.clone()).unwrap_or_default();
    assert!(detail.contains("no longer configured"), "{detail}");
    assert!(f[1].submits().is_empty(), "not moved to a server that never had it");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[test]
fn base_urls_are_validated_and_shown_without_credentials() {
    let dir = tempfile::tempdir().expect("tmp");
    let with = |urls: Vec<&str>, base_url: &str, kind: ProviderKind| {
        let mut c = pool_config(urls.into_iter().map(str::to_string).collect())(dir.path());
        c.providers[0].base_url = base_url.into();
        c.providers[0].kind = kind;
        c
    };
    let err = |c: Config| c.validate().expect_err("refused").to_string();
    assert!(with(vec!["http://gpu1:8188", "https://gpu2:8188/comfy/"], "", ProviderKind::Comfyui).validate().is_ok());
    let e = err(with(vec!["http://gpu1:8188"], "http://gpu1:8188", ProviderKind::Comfyui));
    assert!(e.contains("providers[0].base_urls") && e.contains("not both"), "{e}");
    let e = err(with(vec!["http://gpu1:8188", "http://gpu1:8188/"], "", ProviderKind::Comfyui));
    assert!(e.contains("providers[0].base_urls[1]") && e.contains("twice"), "{e}");
    let e = err(with(vec!["http://gpu1:8188", "ftp://u:hunter2@gpu2"], "", ProviderKind::Comfyui));
    assert!(e.contains("providers[0].base_urls[1]") && !e.contains("hunter2"), "{e}");
    let many: Vec<String> = (0..33).map(|i| format!("http://gpu{i}:8188")).collect();
    let e = err(with(many.iter().map(String::as_str).collect(), "", ProviderKind::Comfyui));
    assert!(e.contains("at most 32"), "{e}");
    let e = err(with(vec!["http://gpu1:8188"], "", ProviderKind::Fal));
    assert!(e.contains("only a comfyui provider"), "{e}");

    let c = with(vec!["http://admin:s3cret@gpu1:8188/?token=abc", "http://gpu2:8188"], "", ProviderKind::Comfyui);
    assert!(c.validate().is_ok());
    assert_eq!(crate::cli::server_lines(&c), ["provider gpus: 2 ComfyUI servers: http://gpu1:8188, http://gpu2:8188"]);
    let p = crate::providers::comfyui::ComfyProvider::new(&c.providers[0]).expect("provider");
    assert_eq!(p.server_keys(), ["http://gpu1:8188", "http://gpu2:8188"]);
    assert!(!format!("{p:?}").contains("s3cret"));
    let single = with(vec![], "http://127.0.0.1:8188/", ProviderKind::Comfyui);
    assert_eq!(crate::cli::server_lines(&single), ["provider gpus: 1 ComfyUI server: http://127.0.0.1:8188"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_provider_counts_jobs_in_flight_per_server_and_routes_by_the_stored_server() {
    use crate::providers::ImageProvider as _;
    let f = fakes(3).await;
    f[1].set_down(true);
    f[0].hold();
    f[2].hold();
    let mut cfg = super::providers::cfg_keyed(ProviderKind::Comfyui, "", "unused");
    cfg.base_urls = urls(&f);
    cfg.poll_interval_ms = 20;
    let p = crate::providers::comfyui::ComfyProvider::new(&cfg).expect("provider");
    let wf: serde_json::Value = serde_json::from_str(WORKFLOW).expect("json");
    let mut subs = vec![];
    for _ in 0..4 {
        let id = p.preassign_id().expect("id");
        subs.push(p.submit(&super::providers::comfy_request(wf.clone()), Some(&id)).await.expect("submit"));
    }
    assert_eq!(p.in_flight(), [2, 0, 2]);
    assert!(p.is_healthy(0) && !p.is_healthy(1) && p.is_healthy(2));
    let on = |s: &crate::providers::Submission| s.data["server"].as_str().map(str::to_string);
    assert_eq!(on(&subs[0]), Some(f[0].base_url()));
    assert_eq!(on(&subs[1]), Some(f[2].base_url()));

    // is_known and cancel go to the stored server only.
    assert!(p.is_known(&subs[1].request_id, &subs[1].data).await.expect("asked"));
    assert!(!p.is_known(&subs[1].request_id, &subs[0].data).await.expect("asked"), "server 0 never had it");
    p.cancel(&subs[3]).await.expect("cancelled");
    assert_eq!(f[2].deletes(), [subs[3].request_id.clone()]);
    assert!(f[0].deletes().is_empty());
    assert_eq!(p.in_flight(), [2, 0, 1], "a cancelled job no longer counts");

    // A finished wait stops counting its job; the result came from its own server.
    f[0].release();
    let files = p.wait(&subs[0], &|_| {}).await.expect("result");
    assert_eq!(files.len(), 1);
    assert_eq!(p.in_flight(), [1, 0, 1]);
    assert!(f[0].history_ids().contains(&subs[0].request_id));
    assert!(!f[2].history_ids().contains(&subs[0].request_id));

    // A bare prompt id (restored after a crash mid-submit) is found on whichever server has it.
    let bare = crate::providers::Submission { request_id: subs[1].request_id.clone(), data: serde_json::Value::Null };
    assert!(p.is_known(&bare.request_id, &bare.data).await.expect("asked"));
    f[2].release();
    assert_eq!(p.wait(&bare, &|_| {}).await.expect("result").len(), 1);
}
