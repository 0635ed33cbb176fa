//! Failover to a fallback model (issue 22, "Failover"): a Russian user, the Bot API emulator,
//! two fake fal servers (one per provider) answering in fal's real shapes, real redb.

use super::fakes::fal::{FakeFal, FalScenario};
use super::harness::*;
use crate::config::ProviderKind;
use crate::domain::{Credits, JobStatus, Switch, UserId};
use crate::store::records::{ErrorClass, JobRecord, OpKind, Operation};
use std::time::Duration;

const ADMIN: i64 = 900;

/// "flux" (price 10, on fake fal A) falls back to "seedream" (`seedream_price`, on fake fal B).
fn config(a: String, b: String, seedream_price: i64) -> impl FnOnce(&std::path::Path) -> crate::config::Config {
    move |dir| {
        let mut c = test_config(dir);
        c.telegram.admins = vec![ADMIN];
        c.providers.push(provider("fal", ProviderKind::Fal, &a));
        c.providers.push(provider("fal2", ProviderKind::Fal, &b));
        let mut flux = model("flux", "fal", 10);
        flux.fallbacks = vec!["seedream".into()];
        c.models.push(flux);
        c.models.push(model("seedream", "fal2", seedream_price));
        c
    }
}

const UNAUTHORIZED: &str = r#"{"detail":"Invalid key"}"#;

/// /start, then a job on "flux" (Квадрат); returns the progress message id.
async fn order_flux(h: &Harness, user: i64, prompt: &str) -> i64 {
    // The admins hear of a switched-off provider: their chat must exist.
    if h.bot_messages(ADMIN).is_empty() {
        h.text(ADMIN, "en", "/start");
        h.wait_text(ADMIN, "Welcome").await;
    }
    h.text(user, "ru", "/start");
    h.wait_for(user, 20, "welcome", |m| m.iter().any(|x| x["from_bot"] == true)).await;
    h.create(user, "ru", prompt, "Model flux", "Квадрат").await
}

async fn jobs_of(h: &Harness, user: i64) -> Vec<JobRecord> {
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    jobs.into_iter().filter(|j| j.user_id == UserId(user)).collect()
}

/// Waits until the user has `n` jobs and the last one satisfies `pred`.
async fn wait_job(h: &Harness, user: i64, n: usize, what: &str, pred: impl Fn(&JobRecord) -> bool) -> JobRecord {
    for _ in 0..600 {
        let jobs = jobs_of(h, user).await;
        if jobs.len() == n && jobs.last().is_some_and(&pred) {
            return jobs.last().cloned().expect("job");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: jobs {:?}", jobs_of(h, user).await);
}

/// (kind, amount, delta) of each ledger row.
fn rows(ops: &[Operation]) -> Vec<(OpKind, i64, i64)> {
    ops.iter().map(|o| (o.kind, o.amount.0, o.delta.0)).collect()
}

fn answers(h: &Harness) -> String {
    serde_json::to_string(&h.emu.callback_answers()).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_key_moves_the_job_to_the_cheaper_fallback_and_later_jobs_go_straight_there() {
    let (a, b) = (FakeFal::start().await, FakeFal::start().await);
    a.set_scenario(FalScenario::SubmitError { status: 401, body: UNAUTHORIZED.into() });
    let h = Harness::start(config(a.base_url(), b.base_url(), 8)).await;
    order_flux(&h, 801, "маяк в тумане").await;
    h.wait_for(801, 30, "the picture from the fallback", |_| h.photos(801).len() == 1).await;
    let job = wait_job(&h, 801, 1, "delivered", |j| j.delivery == crate::store::records::Delivery::Delivered).await;
    assert_eq!((a.submits_total(), b.submits_total()), (1, 1), "no retry against a refusing key");
    assert_eq!(
        (job.status, job.model_id.as_str(), job.provider_id.as_str()),
        (JobStatus::Succeeded, "seedream", "fal2")
    );
    let f = job.failover.as_ref().expect("failover recorded");
    assert_eq!(
        (f.from_model.as_str(), f.from_price, f.to_price, f.confirmed),
        ("flux", Credits(10), Credits(8), Some(true))
    );
    assert!(f.reason.starts_with("unauthorized: "), "{}", f.reason);
    let caption = text_of(&h.photos(801)[0]);
    assert!(caption.contains("Model seedream") && caption.contains("Model flux была недоступна"), "{caption}");
    // One hold of the original price, the difference given back, the fallback's price captured.
    assert_eq!(
        rows(&h.ledger(801).await),
        [(OpKind::SignupBonus, 100, 100), (OpKind::Hold, 10, -10), (OpKind::HoldAdjust, 2, 2), (OpKind::Capture, 8, 0),]
    );
    assert_eq!(h.balance(801).await, Credits(92));
    h.wait_text(ADMIN, "refuses requests").await;
    let disabled = h.store().read(|rx| rx.find_disabled()).await.expect("read");
    assert!(disabled.iter().any(|(k, _)| *k == Switch::Provider("fal".into())), "{disabled:?}");
    h.verify_clean().await;

    // FLUX stays in the menu; its next job goes to Seedream without touching fal A.
    h.create(801, "ru", "маяк на закате", "Model flux", "Квадрат").await;
    h.wait_for(801, 30, "the second picture", |_| h.photos(801).len() == 2).await;
    let second = wait_job(&h, 801, 2, "second delivered", |j| j.status == JobStatus::Succeeded).await;
    assert_eq!((a.submits_total(), b.submits_total()), (1, 2));
    let reason = second.failover.as_ref().map(|f| f.reason.clone()).unwrap_or_default();
    assert!(reason.starts_with("provider switched off"), "{reason}");
    assert_eq!(h.balance(801).await, Credits(84));
    assert_eq!(h.photos(801).len(), 2, "each result delivered once");
    h.verify_clean().await;
    h.assert_no_rejections();

    // The dashboard counts and lists both moves.
    let html = dashboard(&h).await;
    assert!(html.contains(r#"id="failovers-24h">2<"#) && html.contains(r#"id="failovers-total">2<"#), "{html}");
    assert!(html.contains("flux → seedream"), "{html}");
    assert!(html.contains(&second.id.short()) && html.contains(&job.id.short()));
    assert!(html.contains("unauthorized: HTTP 401"), "why it moved: {html}");
}

/// `GET /admin` through the panel's real router over the app's store.
async fn dashboard(h: &Harness) -> String {
    let store = h.store();
    let s = store.clone();
    tokio::task::spawn_blocking(move || {
        crate::admin::set_password_blocking(&s, &crate::admin::Actor::Cli, super::web::PASSWORD)
    })
    .await
    .expect("join")
    .expect("set password");
    let config = std::sync::Arc::new(h.config.clone());
    let catalog = crate::catalog::Catalog::open(store.clone(), &config).expect("catalog");
    let health = std::sync::Arc::new(crate::health::Health::new(crate::health::BotState::NoToken));
    let app = crate::web::router(crate::web::WebState::new(store, config, catalog, health));
    let (cookie, _) = super::web::login(&app).await;
    let page = super::web::send(&app, super::web::get("/admin", Some(&cookie))).await;
    assert_eq!(page.status(), axum::http::StatusCode::OK);
    super::web::text(page).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transient_failure_after_the_retries_moves_the_job_at_the_same_price() {
    let (a, b) = (FakeFal::start().await, FakeFal::start().await);
    a.set_scenario(FalScenario::SubmitError { status: 503, body: r#"{"detail":"Service Unavailable"}"#.into() });
    let h = Harness::start(config(a.base_url(), b.base_url(), 10)).await;
    order_flux(&h, 802, "кот в шляпе").await;
    h.wait_for(802, 30, "the picture from the fallback", |_| h.photos(802).len() == 1).await;
    let job = wait_job(&h, 802, 1, "succeeded", |j| j.status == JobStatus::Succeeded).await;
    assert_eq!(a.submits_total(), 3, "jobs.max_attempts tries on the model first");
    assert_eq!(b.submits_total(), 1);
    let f = job.failover.expect("moved");
    assert!(f.reason.starts_with("transient: "), "{}", f.reason);
    // Same price: nothing to adjust.
    assert_eq!(
        rows(&h.ledger(802).await),
        [(OpKind::SignupBonus, 100, 100), (OpKind::Hold, 10, -10), (OpKind::Capture, 10, 0)]
    );
    let disabled = h.store().read(|rx| rx.find_disabled()).await.expect("read");
    assert!(disabled.is_empty(), "a transient failure switches nothing off: {disabled:?}");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pricier_fallback_asks_first_and_yes_runs_it_at_the_new_price_once() {
    let (a, b) = (FakeFal::start().await, FakeFal::start().await);
    a.set_scenario(FalScenario::SubmitError { status: 401, body: UNAUTHORIZED.into() });
    let h = Harness::start(config(a.base_url(), b.base_url(), 12)).await;
    let progress = order_flux(&h, 803, "сова на ветке").await;
    let q = h.wait_text(803, "недоступна; выполнить на Model seedream за 12").await;
    assert!(text_of(&q).contains("вместо 10"), "{q}");
    assert_eq!(q["message_id"].as_i64(), Some(progress), "the progress message becomes the question");
    let job = wait_job(&h, 803, 1, "asking", |j| j.status == JobStatus::AwaitingConfirmation).await;
    assert_eq!(b.submits_total(), 0, "nothing runs before the answer");
    assert_eq!(rows(&h.ledger(803).await), [(OpKind::SignupBonus, 100, 100), (OpKind::Hold, 10, -10)]);
    h.verify_clean().await;
    let yes = Harness::button(&q, "Да");
    // Someone else pressing the same data (under a message of their own) is refused.
    h.text(850, "ru", "/start");
    let theirs = h.wait_for(850, 20, "welcome", |m| m.iter().any(|x| x["from_bot"] == true)).await;
    let their_mid = theirs.iter().find(|x| x["from_bot"] == true).and_then(|x| x["message_id"].as_i64()).expect("id");
    h.press(850, "ru", their_mid, &yes);
    h.wait_for(850, 10, "refusal", |_| answers(&h).contains("Эта кнопка не ваша")).await;
    assert_eq!(wait_job(&h, 803, 1, "still asking", |_| true).await.status, JobStatus::AwaitingConfirmation);
    // The owner's double tap acts once.
    h.press(803, "ru", progress, &yes);
    h.press(803, "ru", progress, &yes);
    h.wait_for(803, 30, "the picture", |_| h.photos(803).len() == 1).await;
    let done = wait_job(&h, 803, 1, "succeeded", |j| j.status == JobStatus::Succeeded).await;
    assert_eq!(done.id, job.id);
    assert_eq!((done.price, done.model_id.as_str()), (Credits(12), "seedream"));
    assert!(answers(&h).contains("Уже отвечено"), "{}", answers(&h));
    assert_eq!(b.submits_total(), 1);
    assert_eq!(
        rows(&h.ledger(803).await),
        [
            (OpKind::SignupBonus, 100, 100),
            (OpKind::Hold, 10, -10),
            (OpKind::HoldAdjust, 2, -2),
            (OpKind::Capture, 12, 0),
        ]
    );
    assert_eq!(h.balance(803).await, Credits(88));
    assert_eq!(h.photos(803).len(), 1);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_releases_the_hold_and_says_so() {
    let (a, b) = (FakeFal::start().await, FakeFal::start().await);
    a.set_scenario(FalScenario::SubmitError { status: 401, body: UNAUTHORIZED.into() });
    let h = Harness::start(config(a.base_url(), b.base_url(), 12)).await;
    let progress = order_flux(&h, 804, "дом у реки").await;
    let q = h.wait_text(804, "недоступна; выполнить на").await;
    h.press(804, "ru", progress, &Harness::button(&q, "Нет"));
    h.wait_text(804, "Хорошо, не выполняем. Возвращено на счёт").await;
    let job = wait_job(&h, 804, 1, "failed", |j| j.status == JobStatus::Failed).await;
    assert_eq!(job.error.map(|e| e.class), Some(ErrorClass::Declined));
    assert_eq!(job.failover.and_then(|f| f.confirmed), Some(false));
    assert_eq!(b.submits_total(), 0);
    assert_eq!(
        rows(&h.ledger(804).await),
        [(OpKind::SignupBonus, 100, 100), (OpKind::Hold, 10, -10), (OpKind::Release, 10, 10)]
    );
    assert_eq!(h.balance(804).await, Credits(100));
    // A late "Да" changes nothing.
    h.press(804, "ru", progress, &Harness::button(&q, "Да"));
    h.wait_for(804, 10, "already answered", |_| answers(&h).contains("Уже отвечено")).await;
    assert_eq!(h.ledger(804).await.len(), 3);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn yes_without_the_difference_on_the_balance_releases() {
    let (a, b) = (FakeFal::start().await, FakeFal::start().await);
    a.set_scenario(FalScenario::SubmitError { status: 401, body: UNAUTHORIZED.into() });
    // The signup bonus is 100: a fallback at 105 needs 95 more than the hold of 10, and the
    // balance has 90 left.
    let h = Harness::start(config(a.base_url(), b.base_url(), 105)).await;
    let progress = order_flux(&h, 805, "горы").await;
    let q = h.wait_text(805, "недоступна; выполнить на Model seedream за 105").await;
    h.press(805, "ru", progress, &Harness::button(&q, "Да"));
    h.wait_text(805, "Не хватает кредитов, чтобы выполнить на Model seedream").await;
    let job = wait_job(&h, 805, 1, "failed", |j| j.status == JobStatus::Failed).await;
    assert_eq!(job.error.map(|e| e.class), Some(ErrorClass::InsufficientFunds));
    assert_eq!(b.submits_total(), 0);
    assert_eq!(
        rows(&h.ledger(805).await),
        [(OpKind::SignupBonus, 100, 100), (OpKind::Hold, 10, -10), (OpKind::Release, 10, 10)]
    );
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_question_survives_a_restart_and_expires_unanswered() {
    let (a, b) = (FakeFal::start().await, FakeFal::start().await);
    a.set_scenario(FalScenario::SubmitError { status: 401, body: UNAUTHORIZED.into() });
    let mut h = Harness::start(config(a.base_url(), b.base_url(), 12)).await;
    order_flux(&h, 806, "звёзды").await;
    h.wait_text(806, "недоступна; выполнить на").await;
    let job = wait_job(&h, 806, 1, "asked", |j| j.failover.as_ref().is_some_and(|f| f.asked)).await;
    h.restart().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = wait_job(&h, 806, 1, "still asking", |_| true).await;
    assert_eq!(after.status, JobStatus::AwaitingConfirmation, "durable across a restart");
    let questions = h.bot_messages(806).iter().filter(|m| text_of(m).contains("недоступна")).count();
    assert_eq!(questions, 1, "asked once");
    // A day passes without an answer.
    let id = job.id;
    h.store()
        .write(move |tx| {
            let mut j = tx.get_job(id)?.expect("job");
            if let Some(f) = j.failover.as_mut() {
                f.at -= 86_400_000;
            }
            tx.put_job(&j)
        })
        .await
        .expect("age the question");
    h.wait_text(806, "Ответа не было, задание отменено").await;
    let job = wait_job(&h, 806, 1, "expired", |j| j.status == JobStatus::Failed).await;
    assert_eq!(
        (job.error.map(|e| e.class), job.failover.and_then(|f| f.confirmed)),
        (Some(ErrorClass::Declined), None)
    );
    assert_eq!(
        rows(&h.ledger(806).await),
        [(OpKind::SignupBonus, 100, 100), (OpKind::Hold, 10, -10), (OpKind::Release, 10, 10)]
    );
    assert_eq!(b.submits_total(), 0);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_usable_fallback_the_job_fails_as_before() {
    let (a, b) = (FakeFal::start().await, FakeFal::start().await);
    a.set_scenario(FalScenario::SubmitError { status: 401, body: UNAUTHORIZED.into() });
    let (ua, ub) = (a.base_url(), b.base_url());
    let h = Harness::start(move |d| {
        let mut c = config(ua, ub, 8)(d);
        c.models[1].enabled = false;
        // A model that is not a fallback, so the menu still asks which model.
        c.providers.push(provider("demo", ProviderKind::Demo, ""));
        c.models.push(model("spare", "demo", 5));
        c
    })
    .await;
    order_flux(&h, 807, "лес").await;
    h.wait_text(807, "Провайдер недоступен").await;
    let job = wait_job(&h, 807, 1, "failed", |j| j.status == JobStatus::Failed).await;
    assert!(job.failover.is_none());
    assert_eq!((a.submits_total(), b.submits_total()), (1, 0));
    assert_eq!(
        rows(&h.ledger(807).await),
        [(OpKind::SignupBonus, 100, 100), (OpKind::Hold, 10, -10), (OpKind::Release, 10, 10)]
    );
    h.verify_clean().await;
    h.assert_no_rejections();
}
