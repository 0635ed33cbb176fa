//! Jobs and billing under faults (issue "nothing lost, nothing charged twice").

use super::fakes::fal::{FakeFal, FalScenario};
use super::harness::*;
use crate::config::ProviderKind;
use crate::domain::{Credits, JobStatus, UserId};
use crate::store::records::{ErrorClass, OpKind};
use std::time::Duration;

const ADMIN: i64 = 900;

fn two_models(base: String) -> impl FnOnce(&std::path::Path) -> crate::config::Config {
    move |dir| {
        let mut c = test_config(dir);
        c.telegram.admins = vec![ADMIN];
        c.providers.push(provider("fal", ProviderKind::Fal, &base));
        c.providers.push(provider("demo", ProviderKind::Demo, ""));
        c.models.push(model("flux", "fal", 30));
        c.models.push(model("spare", "demo", 10));
        c
    }
}

/// Submits one job on model "flux" (Square) for `user`, returns the progress message id.
async fn submit_flux(h: &Harness, user: i64, lang: &str) -> i64 {
    h.text(user, lang, "/start");
    h.wait_for(user, 20, "welcome", |m| m.iter().any(|x| x["from_bot"] == true)).await;
    h.create(user, lang, "a ship", "Model flux", if lang == "ru" { "Квадрат" } else { "Square" }).await
}

async fn last_job(h: &Harness, user: i64) -> crate::store::records::JobRecord {
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    jobs.into_iter().rev().find(|j| j.user_id == UserId(user)).expect("job")
}

/// Waits until the user's last job is terminal (and first, until it exists).
async fn wait_terminal(h: &Harness, user: i64) -> crate::store::records::JobRecord {
    for _ in 0..400 {
        let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
        if jobs.iter().any(|j| j.user_id == UserId(user)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..400 {
        let j = last_job(h, user).await;
        if j.status.is_terminal() {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job never finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejected_is_not_retried_and_says_why() {
    let fal = FakeFal::start().await;
    fal.set_scenario(FalScenario::SubmitError {
        status: 422,
        body:
            r#"{"detail":[{"loc":["body","prompt"],"msg":"prompt violates the content policy","type":"value_error"}]}"#
                .into(),
    });
    let h = Harness::start(two_models(fal.base_url())).await;
    submit_flux(&h, 701, "en").await;
    let m = h.wait_text(701, "refused this request").await;
    assert!(super::harness::text_of(&m).contains("content policy"), "plain words from the provider: {m}");
    assert_eq!(fal.submits_total(), 1, "no retry for a rejection");
    assert_eq!(kinds(&h.ledger(701).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Release]);
    assert_eq!(last_job(&h, 701).await.error.expect("error").class, ErrorClass::Rejected);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retired_model_is_disabled_alternatives_offered_admins_alerted_once() {
    let fal = FakeFal::start().await;
    fal.set_scenario(FalScenario::SubmitError {
        status: 404,
        body: r#"{"detail":"models/imagen-3.0-capability-001 is not found for API version v1beta"}"#.into(),
    });
    let h = Harness::start(two_models(fal.base_url())).await;
    h.text(ADMIN, "en", "/start");
    h.wait_text(ADMIN, "Welcome").await;
    submit_flux(&h, 702, "en").await;
    let m = h.wait_text(702, "no longer available").await;
    assert!(m["reply_markup"].to_string().contains("Model spare"), "enabled alternative offered: {m}");
    assert!(!m["reply_markup"].to_string().contains("Model flux"));
    assert_eq!(kinds(&h.ledger(702).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Release]);
    let alerts = |h: &Harness| h.bot_messages(ADMIN).iter().filter(|x| text_of(x).contains("retired")).count();
    h.wait_for(ADMIN, 10, "admin alert", |_| alerts(&h) == 1).await;
    // The model is gone from the menu, and a second failure does not alert again.
    h.text(703, "en", "/start");
    h.wait_text(703, "Welcome").await;
    h.text(703, "en", "another ship | model=flux");
    let again = h.wait_text(703, "don't know the model").await;
    assert!(again["reply_markup"].to_string().contains("Model spare"));
    assert_eq!(fal.submits_total(), 1);
    // Disabled state survives a restart.
    let store = h.store();
    let disabled = store.read(|rx| rx.find_disabled()).await.expect("read");
    assert!(disabled.iter().any(|(k, _)| *k == crate::domain::Switch::Model("flux".into())), "{disabled:?}");
    assert_eq!(alerts(&h), 1, "admins alerted once");
    // The offered alternative runs the same request on that model (issue 17, item 16): a new
    // job, a new hold at its price, the picture.
    let data = Harness::button(&m, "Model spare");
    let mid = m["message_id"].as_i64().expect("id");
    h.press(702, "en", mid, &data);
    let f = h.wait_for_buttons(702, "Square").await;
    h.press(702, "en", f["message_id"].as_i64().expect("id"), &Harness::button(&f, "Square"));
    h.wait_for(702, 30, "the picture from the alternative", |_| h.photos(702).len() == 1).await;
    h.press(702, "en", mid, &data);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let ops = kinds(&h.ledger(702).await);
    assert_eq!(
        ops,
        [OpKind::SignupBonus, OpKind::Hold, OpKind::Release, OpKind::Hold, OpKind::Capture],
        "one more job"
    );
    let holds: Vec<_> = h.ledger(702).await.into_iter().filter(|o| o.kind == OpKind::Hold).map(|o| o.amount).collect();
    assert_eq!(holds, [Credits(30), Credits(10)], "the alternative's own price");
    let job = last_job(&h, 702).await;
    assert_eq!((job.model_id.as_str(), job.payload.prompt()), ("spare", "a ship"));
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unauthorized_disables_the_provider_and_alerts_admins() {
    for (status, body) in [(401, r#"{"detail":"Invalid key"}"#), (403, r#"{"detail":"Forbidden: locked account"}"#)] {
        let fal = FakeFal::start().await;
        fal.set_scenario(FalScenario::SubmitError { status, body: body.into() });
        let mut h = Harness::start(two_models(fal.base_url())).await;
        h.text(ADMIN, "en", "/start");
        h.wait_text(ADMIN, "Welcome").await;
        submit_flux(&h, 704, "ru").await;
        h.wait_text(704, "Провайдер недоступен").await;
        h.wait_text(ADMIN, "refuses requests").await;
        assert_eq!(fal.submits_total(), 1, "no retry against a refusing provider");
        assert_eq!(h.balance(704).await, Credits(100));
        h.restart().await;
        let disabled = h.store().read(|rx| rx.find_disabled()).await.expect("read");
        assert!(
            disabled.iter().any(|(k, _)| *k == crate::domain::Switch::Provider("fal".into())),
            "HTTP {status}: {disabled:?}"
        );
        h.verify_clean().await;
        h.assert_no_rejections();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_while_running_tells_the_provider_and_releases_and_twice_is_harmless() {
    let fal = FakeFal::start().await;
    fal.set_scenario(FalScenario::NeverCompletes);
    let h = Harness::start(two_models(fal.base_url())).await;
    let progress = submit_flux(&h, 705, "en").await;
    assert!(super::fakes::eventually(Duration::from_secs(10), || fal.submits_total() == 1).await);
    let msg = h.wait_for_buttons(705, "Cancel").await;
    assert_eq!(msg["message_id"].as_i64(), Some(progress));
    let data = Harness::button(&msg, "Cancel");
    h.press(705, "en", progress, &data);
    h.wait_text(705, "Cancelled").await;
    let j = wait_terminal(&h, 705).await;
    assert_eq!(j.status, JobStatus::Cancelled);
    assert_eq!(fal.cancels().len(), 1, "the provider was told");
    h.press(705, "en", progress, &data);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(kinds(&h.ledger(705).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Release]);
    assert_eq!(h.balance(705).await, Credits(100));
    let answers = h.emu.callback_answers();
    assert!(serde_json::to_string(&answers).expect("json").contains("nothing to cancel"), "{answers:?}");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fair_queue_one_users_burst_does_not_starve_another() {
    let fal = FakeFal::start().await;
    fal.hold();
    let base = fal.base_url();
    let h = Harness::start(move |d| {
        let mut c = two_models(base)(d);
        c.providers[0].max_concurrency = 2;
        c.jobs.per_user_running = 2;
        // This test is about queue order; Telegram's per-chat send limit would only slow it.
        c.telegram.throttle = false;
        c
    })
    .await;
    for u in [710, 711] {
        h.text(u, "en", "/start");
        h.wait_text(u, "Welcome").await;
    }
    for i in 0..20 {
        h.text(710, "en", &format!("job {i} | model=flux | size=512x512"));
    }
    // All 20 of A's jobs exist before B asks.
    for _ in 0..400 {
        let n = h.store().read(|rx| rx.find_jobs()).await.expect("jobs").len();
        if n == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.text(711, "en", "b's job | model=flux | size=512x512");
    for _ in 0..400 {
        let n = h.store().read(|rx| rx.find_jobs()).await.expect("jobs").len();
        if n == 21 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fal.release();
    // Wait until B's job has started, then count how many of A's started before it.
    let mut b_start = None;
    for _ in 0..600 {
        let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
        b_start = jobs.iter().find(|j| j.user_id == UserId(711)).and_then(|j| j.started_at);
        if b_start.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b_start = b_start.expect("B's job started");
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    let a_before_b =
        jobs.iter().filter(|j| j.user_id == UserId(710)).filter_map(|j| j.started_at).filter(|t| *t < b_start).count();
    assert!(a_before_b <= 2, "B's job started after {a_before_b} of A's jobs (must be before A's last 18)");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flood_on_one_chat_does_not_delay_others_and_edits_respect_limits() {
    let fal = FakeFal::start().await;
    let base = fal.base_url();
    let h = Harness::start(move |d| {
        let mut c = two_models(base)(d);
        c.providers[0].poll_interval_ms = 1500;
        c.providers[0].max_concurrency = 4;
        c.jobs.progress_interval_ms = 3000;
        c
    })
    .await;
    for u in [720, 721] {
        h.text(u, "en", "/start");
        h.wait_text(u, "Welcome").await;
    }
    let flood: crate::emulator::FloodRule = serde_json::from_value(serde_json::json!({
        "chat_id": 720, "method": "editMessageText", "retry_after": 3, "times": 1000
    }))
    .expect("rule");
    h.emu.add_flood(flood);
    h.text(720, "en", "flooded | model=flux | size=512x512");
    h.text(721, "en", "calm | model=flux | size=512x512");
    h.wait_for(721, 30, "calm chat's photo", |_| h.photos(721).len() == 1).await;
    h.wait_for(720, 30, "flooded chat's photo", |_| h.photos(720).len() == 1).await;
    let calls = h.emu.calls();
    let calls: Vec<serde_json::Value> = calls.iter().map(|c| serde_json::to_value(c).expect("json")).collect();
    let edits = |chat: i64| -> Vec<&serde_json::Value> {
        calls.iter().filter(|c| c["method"] == "editMessageText" && c["chat_id"] == chat).collect()
    };
    let during = edits(720).iter().filter(|c| c["during_flood_wait"] == true).count();
    assert_eq!(during, 0, "no edit while Telegram asked us to wait");
    for chat in [720, 721] {
        // Progress edits (not counting the bot's own queued/done edits in the same second)
        // never come closer than the per-chat interval.
        let times: Vec<i64> = edits(chat).iter().filter_map(|c| c["at_ms"].as_i64()).collect();
        let too_close = times.windows(2).filter(|w| w[1] - w[0] < 2900).count();
        assert!(too_close <= 2, "chat {chat}: edits too close: {times:?}");
    }
    h.verify_clean().await;
}

/// A 429 from the provider is retried no sooner than its `Retry-After`, then succeeds once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_waits_for_retry_after_then_succeeds() {
    let fal = FakeFal::start().await;
    fal.push_scenario(FalScenario::RateLimited { retry_after_secs: 2 });
    let h = Harness::start(two_models(fal.base_url())).await;
    submit_flux(&h, 730, "en").await;
    let job = wait_terminal(&h, 730).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let times = fal.submit_times();
    assert_eq!(times.len(), 2, "one refused submit, one retry");
    let gap = times[1].duration_since(times[0]);
    // retry_base_ms is 10 in tests: only Retry-After can explain a 2 s pause.
    assert!(gap >= Duration::from_secs(2), "retried after {gap:?}, before Retry-After: 2");
    assert_eq!(kinds(&h.ledger(730).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    h.wait_for(730, 20, "photo", |_| h.photos(730).len() == 1).await;
    h.verify_clean().await;
    h.assert_no_rejections();
}

/// Two provider entries sharing one fal key with `key_concurrency = 1`: never two requests in
/// flight on that key, and every job still finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_concurrency_is_shared_across_providers_with_the_same_key() {
    let fal = FakeFal::start().await;
    fal.hold();
    let base = fal.base_url();
    let h = Harness::start(move |dir| {
        let mut c = test_config(dir);
        for id in ["fal-a", "fal-b"] {
            let mut p = provider(id, ProviderKind::Fal, &base);
            p.key_concurrency = Some(1);
            p.max_concurrency = 4;
            c.providers.push(p);
        }
        c.jobs.per_user_running = 4;
        let mut a = model("a", "fal-a", 5);
        a.endpoint = "fal-ai/a".into();
        let mut b = model("b", "fal-b", 5);
        b.endpoint = "fal-ai/b".into();
        c.models.push(a);
        c.models.push(b);
        c
    })
    .await;
    h.text(740, "en", "/start");
    h.wait_text(740, "Welcome").await;
    for (i, m) in ["a", "b", "a"].iter().enumerate() {
        h.text(740, "en", &format!("job {i} | model={m} | size=512x512"));
    }
    assert!(super::fakes::eventually(Duration::from_secs(20), || fal.submits_total() >= 1).await);
    // While the first request is held in progress, nothing else may use the key.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(fal.submits_total(), 1, "a second request went out on a key limited to 1");
    fal.release();
    assert!(super::fakes::eventually(Duration::from_secs(30), || h.photos(740).len() == 3).await, "all three finished");
    assert_eq!((fal.submits("fal-ai/a"), fal.submits("fal-ai/b")), (2, 1));
    h.verify_clean().await;
    h.assert_no_rejections();
}

/// A provider with `proxy` set sends its requests through that proxy (and only that one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_proxy_carries_its_requests() {
    use axum::body::Body;
    use axum::extract::Request;
    use std::sync::{Arc, Mutex};
    let fal = FakeFal::start().await;
    // A minimal forward proxy for http:// targets: requests arrive in absolute form.
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let proxy = {
        let seen = seen.clone();
        let client = reqwest::Client::builder().no_proxy().build().expect("client");
        axum::Router::new().fallback(move |req: Request| {
            let (seen, client) = (seen.clone(), client.clone());
            async move {
                let uri = req.uri().to_string();
                seen.lock().expect("lock").push(format!("{} {uri}", req.method()));
                let mut out = client.request(req.method().clone(), &uri);
                for (k, v) in req.headers() {
                    if k != axum::http::header::HOST {
                        out = out.header(k, v);
                    }
                }
                let body = axum::body::to_bytes(req.into_body(), 64 << 20).await.expect("body");
                let resp = out.body(body).send().await.expect("upstream");
                let mut b = axum::http::Response::builder().status(resp.status().as_u16());
                for (k, v) in resp.headers() {
                    b = b.header(k.as_str(), v.as_bytes());
                }
                b.body(Body::from(resp.bytes().await.expect("bytes"))).expect("response")
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let proxy_url = format!("http://{}", listener.local_addr().expect("addr"));
    let proxy_task = tokio::spawn(async move {
        let _ = axum::serve(listener, proxy).await;
    });
    let base = fal.base_url();
    let h = Harness::start(move |dir| {
        let mut c = two_models(base)(dir);
        c.providers[0].proxy = Some(proxy_url);
        c
    })
    .await;
    submit_flux(&h, 750, "en").await;
    let job = wait_terminal(&h, 750).await;
    assert_eq!(job.status, JobStatus::Succeeded, "{:?}", job.error);
    let seen = seen.lock().expect("lock").clone();
    let fal_host = fal.base_url();
    assert!(
        seen.iter().any(|l| l.starts_with("POST ") && l.contains(&fal_host)),
        "submit went through the proxy: {seen:?}"
    );
    assert!(seen.iter().any(|l| l.contains("/status")), "status polls went through the proxy: {seen:?}");
    assert_eq!(fal.submits_total(), 1);
    proxy_task.abort();
    h.verify_clean().await;
}

/// The final "🚫 Cancelled" edit goes out at once, not after the progress-edit interval
/// (issue 17, item 25): with progress edits 30 s apart, the cancel is shown within seconds of
/// the press even right after a progress edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_final_edit_does_not_wait_for_the_progress_interval() {
    let fal = FakeFal::start().await;
    fal.set_scenario(FalScenario::NeverCompletes);
    let h = Harness::start(|d| {
        let mut c = two_models(fal.base_url())(d);
        c.jobs.progress_interval_ms = 30_000;
        c
    })
    .await;
    let progress = submit_flux(&h, 712, "ru").await;
    // The job's first progress edit (status running) has used the chat's progress slot.
    h.wait_for(712, 20, "a progress edit", |m| {
        m.iter().any(|x| x["message_id"].as_i64() == Some(progress) && x["edit_count"].as_u64() >= Some(2))
    })
    .await;
    let msg = h.wait_for_buttons(712, "Отменить").await;
    let pressed = std::time::Instant::now();
    h.press(712, "ru", progress, &Harness::button(&msg, "Отменить"));
    h.wait_for(712, 20, "the cancel", |m| {
        m.iter().any(|x| x["message_id"].as_i64() == Some(progress) && text_of(x).contains("Отменено"))
    })
    .await;
    assert!(pressed.elapsed() < Duration::from_secs(10), "shown after {:?}", pressed.elapsed());
    h.assert_no_rejections();
}
