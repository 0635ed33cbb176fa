//! `sandbox` mode as `app` wires it (built-in emulator on the web listener, demo renderer): the
//! control API takes no file paths, no cross-site requests and no foreign `Host`, `/sandbox`
//! gets the panel's security headers, and a sandbox restarted on its data dir keeps numbering
//! updates and messages past what the bot has seen.

use super::harness::{test_config, text_of};
use crate::app::{self, Mode, RunningApp};
use crate::emulator::Emulator;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const USER: i64 = 4101;

async fn start(dir: &std::path::Path) -> RunningApp {
    app::start(test_config(dir), Mode::Sandbox).await.expect("sandbox starts")
}

fn emulator(app: &RunningApp) -> &Emulator {
    app.emulator.as_ref().expect("sandbox mode has an emulator")
}

fn say(emu: &Emulator, text: &str) -> i64 {
    let u = json!({"user": {"id": USER, "first_name": "Sam", "language_code": "en"}, "text": text});
    emu.push_update(serde_json::from_value(u).expect("update")).expect("accepted")
}

/// Waits until the bot has sent more than `after` messages to `USER`; returns them all.
async fn bot_messages_beyond(emu: &Emulator, after: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let msgs: Vec<Value> = emu
            .messages(USER)
            .iter()
            .map(|m| serde_json::to_value(m).expect("json"))
            .filter(|m| m["from_bot"] == true)
            .collect();
        if msgs.len() > after {
            return msgs;
        }
        assert!(Instant::now() < deadline, "the bot did not answer; transcript: {:?}", emu.messages(USER));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_api_takes_no_paths_no_cross_site_posts_and_no_foreign_host() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = start(dir.path()).await;
    let base = format!("http://{}", app.addr);
    let http = reqwest::Client::new();
    let secret_file = dir.path().join("admin-password");
    assert!(secret_file.exists(), "the app wrote its admin password");

    // A path is not a way to send a file: nothing is read, nothing reaches the chat.
    for field in ["document_path", "photo_path"] {
        let body = json!({"user": {"id": USER, "first_name": "Sam"}, field: secret_file.to_string_lossy()});
        let r = http.post(format!("{base}/emulator/control/updates")).json(&body).send().await.expect("post");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{field}");
    }
    let messages = emulator(&app).messages(USER);
    assert!(messages.iter().all(|m| m.document.is_none() && m.photo.is_none()), "{messages:?}");

    // A page on another site can POST text/plain or a form without a preflight: refused.
    let update = json!({"user": {"id": USER, "first_name": "Sam"}, "text": "/start"}).to_string();
    for ct in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let r = http
            .post(format!("{base}/emulator/control/updates"))
            .header("content-type", ct)
            .body(update.clone())
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
    }
    let r = http.post(format!("{base}/emulator/control/reset")).send().await.expect("post");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "a body-less control POST needs the header too");
    assert!(emulator(&app).messages(USER).is_empty(), "nothing was queued");
    let r = http
        .post(format!("{base}/emulator/control/updates"))
        .header("content-type", "application/json; charset=utf-8")
        .body(update)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::OK);

    // DNS rebinding: a foreign name pointed at 127.0.0.1 arrives with its own Host.
    let port = app.addr.port();
    for path in ["/emulator/control/chats/4101/messages", "/sandbox", "/emulator/static/sandbox.js"] {
        let r = http.get(format!("{base}{path}")).header("host", format!("rebind.example:{port}")).send().await;
        assert_eq!(r.expect("get").status(), StatusCode::MISDIRECTED_REQUEST, "{path}");
        for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
            let r = http.get(format!("{base}{path}")).header("host", host.as_str()).send().await.expect("get");
            assert_eq!(r.status(), StatusCode::OK, "{path} with Host {host}");
        }
    }
    // The Bot API itself answers any name (a bot reaches Telegram by whatever name it is given).
    let r = http.get(format!("{base}/bot1:X/getMe")).header("host", "api.example").send().await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_page_has_the_panels_csp_and_no_framing() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = start(dir.path()).await;
    let r = reqwest::get(format!("http://{}/sandbox", app.addr)).await.expect("get");
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers();
    let csp = h.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp:?}");
    assert_eq!(h.get("x-frame-options").and_then(|v| v.to_str().ok()), Some("DENY"));
    assert_eq!(h.get("x-content-type-options").and_then(|v| v.to_str().ok()), Some("nosniff"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_restarted_on_its_data_dir_continues_update_and_message_ids() {
    let dir = tempfile::tempdir().expect("tmp");
    let app = start(dir.path()).await;
    let first_update = say(emulator(&app), "/start");
    let before = bot_messages_beyond(emulator(&app), 0).await;
    let first_ids: Vec<i64> = before.iter().filter_map(|m| m["message_id"].as_i64()).collect();
    app.stop().await;

    // A new emulator, the same bot database: before the fix it numbered from 1 again, the bot
    // skipped update 1 as handled and never answered.
    let app = start(dir.path()).await;
    let again = say(emulator(&app), "/start");
    assert!(again > first_update, "update ids continue: {again} after {first_update}");
    let after = bot_messages_beyond(emulator(&app), 0).await;
    assert!(after.iter().any(|m| !text_of(m).is_empty()), "the bot answered: {after:?}");
    let max_before = first_ids.iter().max().copied().unwrap_or(0);
    assert!(
        after.iter().filter_map(|m| m["message_id"].as_i64()).all(|id| id > max_before),
        "message ids continue past {max_before}: {after:?}"
    );
    app.stop().await;
}
