//! Webhook mode: setWebhook passes the emulator's spec check, the route refuses a missing or
//! wrong secret header without processing anything, and handles the right one exactly once.

use super::harness::*;
use crate::domain::UserId;
use crate::webhook::SECRET_HEADER;
use std::time::Duration;

const URL: &str = "https://bot.example.test/telegram/webhook";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_route_checks_the_secret_and_handles_an_update_once() {
    let mut h = Harness::start(|dir| {
        let mut c = test_config(dir);
        c.telegram.webhook_url = URL.into();
        c
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (url, secret) = loop {
        if let Some(set) = h.emu.webhook_set() {
            break set;
        }
        assert!(std::time::Instant::now() < deadline, "setWebhook was not called");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(url, URL);
    assert!(!secret.is_empty(), "a random secret_token is sent when none is configured");
    let calls: Vec<String> = h.emu.calls().iter().map(|c| c.method.to_lowercase()).collect();
    assert!(!calls.iter().any(|m| m == "getupdates"), "no long polling in webhook mode: {calls:?}");

    // The user writes; Telegram (the emulator) would now POST this update to the webhook.
    h.text(7701, "en", "/start");
    let updates = h.emu.take_updates();
    assert_eq!(updates.len(), 1, "{updates:?}");
    let body = serde_json::to_vec(&updates[0]).expect("json");

    let addr = h.app.as_ref().expect("app").addr;
    let route = format!("http://{addr}/telegram/webhook");
    let client = reqwest::Client::new();
    let post = |secret: Option<&str>| {
        let mut r = client.post(&route).header("content-type", "application/json").body(body.clone());
        if let Some(s) = secret {
            r = r.header(SECRET_HEADER, s);
        }
        r.send()
    };
    assert_eq!(post(None).await.expect("post").status(), 401, "missing secret");
    assert_eq!(post(Some("wrong-secret")).await.expect("post").status(), 401, "wrong secret");
    let with_prefix = format!("{secret}x");
    assert_eq!(post(Some(&with_prefix)).await.expect("post").status(), 401, "longer secret");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.bot_messages(7701).is_empty(), "nothing processed: {:?}", h.bot_messages(7701));
    let user = h.store().read(|rx| rx.get_user(UserId(7701))).await.expect("read");
    assert!(user.is_none(), "no user registered by a refused request");

    assert_eq!(post(Some(&secret)).await.expect("post").status(), 200);
    h.wait_text(7701, "Welcome").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answered = h.bot_messages(7701).len();
    // Telegram re-delivers when it misses our answer; the bot must not handle it twice.
    assert_eq!(post(Some(&secret)).await.expect("post").status(), 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(h.bot_messages(7701).len(), answered, "handled once: {:?}", h.bot_messages(7701));
    assert_eq!(kinds(&h.ledger(7701).await), [crate::store::records::OpKind::SignupBonus], "one signup bonus");
    h.verify_clean().await;
    let inbox = h.store().read(|rx| rx.inbox()).await.expect("inbox");
    assert!(inbox.is_empty(), "a handled update leaves the inbox: {inbox:?}");

    // An update that was acknowledged to Telegram but not handled when the process died is
    // in the inbox; the next start handles it.
    h.stop_app().await;
    let before = h.bot_messages(7701).len();
    {
        let store = crate::store::Store::open(h.dir.path()).expect("open stopped store");
        let update = serde_json::json!({"update_id": 900000, "message": {
            "message_id": 900, "date": 1_700_000_000, "text": "/balance",
            "chat": {"id": 7701, "type": "private", "first_name": "W"},
            "from": {"id": 7701, "is_bot": false, "first_name": "W", "language_code": "en"},
            "entities": [{"type": "bot_command", "offset": 0, "length": 8}]}});
        let json = serde_json::to_vec(&update).expect("json");
        assert!(store.write_blocking(|tx| tx.inbox_put(900000, &json)).expect("store"));
    }
    h.start_app().await;
    h.wait_for(7701, 20, "the stored update handled after the restart", |m| {
        m.iter().filter(|x| x["from_bot"] == true).count() > before
    })
    .await;
    assert!(h.store().read(|rx| rx.inbox()).await.expect("inbox").is_empty());
    h.assert_no_rejections();
}
