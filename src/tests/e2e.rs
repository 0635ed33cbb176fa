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
    let msgs = h.wait_for(501, 30, "photo and document", |_| h.photos(501).len() == 1 && h.documents(501).len() == 1).await;
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
    h.wait_for(504, 30, "photo", |_| h.photos(504).len() == 1).await;
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    let job = jobs.iter().find(|j| j.user_id == UserId(504)).expect("job");
    assert_eq!(job.model_id, "demo2");
    let crate::store::records::JobPayload::Generate { width, height, negative, .. } = &job.payload;
    assert_eq!((*width, *height), (640, 960));
    assert_eq!(negative.as_deref(), Some("fog"));
    assert_eq!(job.status, JobStatus::Succeeded);
    let doc = &h.documents(504)[0];
    assert_eq!(doc["document"]["file_name"], "mediabot.png");
    h.assert_no_rejections();
}
