//! An emulator that outlives app restarts, an app started against it over HTTP, and helpers to
//! talk as a user and wait for the bot's answers.

use crate::app::{self, Mode, RunningApp};
use crate::config::{Config, ModelConfig, ProviderConfig, ProviderKind, Secret};
use crate::domain::{Credits, Format, Task, UserId};
use crate::emulator::Emulator;
use crate::providers::SizeParam;
use crate::store::records::{OpKind, Operation};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// Path of a file in ../shared/testdata.
pub fn testdata(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata").join(rel)
}

pub struct Harness {
    pub emu: Emulator,
    pub emu_url: String,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub app: Option<RunningApp>,
    emu_task: tokio::task::JoinHandle<()>,
    /// The clock the app's quotas and subscriptions read (`None`: the system clock).
    pub clock: Option<crate::billing::levels::Clock>,
}

/// A config tuned for fast tests: short polls, short backoff, progress every 200 ms.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.storage.data_dir = dir.to_path_buf();
    c.web.listen = "127.0.0.1:0".into();
    c.telegram.poll_timeout_secs = 1;
    c.billing.signup_bonus = Credits(100);
    c.billing.currency = "credits".into();
    c.jobs.retry_base_ms = 10;
    c.jobs.max_attempts = 3;
    c.jobs.progress_interval_ms = 200;
    c
}

pub fn provider(id: &str, kind: ProviderKind, base_url: &str) -> ProviderConfig {
    ProviderConfig {
        id: id.into(),
        kind,
        base_url: base_url.into(),
        base_urls: vec![],
        api_key: Secret::new("test-key-123"),
        api_key_env: None,
        max_concurrency: 2,
        timeout_secs: 30,
        poll_interval_ms: 20,
        key_concurrency: None,
        proxy: None,
    }
}

pub fn model(id: &str, provider: &str, price: i64) -> ModelConfig {
    ModelConfig {
        id: id.into(),
        provider: provider.into(),
        display_name: format!("Model {id}"),
        task: Task::TextToImage,
        endpoint: "fal-ai/flux/dev".into(),
        workflow: None,
        price: Credits(price),
        formats: Format::ALL.to_vec(),
        aliases: vec![],
        size_param: SizeParam::ImageSize,
        params: Default::default(),
        timeout_secs: None,
        enabled: true,
        images: None,
        mask: false,
        options: vec![],
        image_fields: vec![],
        instruction: None,
        translate: false,
        fallbacks: vec![],
    }
}

/// A fresh Bot API emulator on a free loopback port: (emulator, base URL, server task to abort).
pub async fn serve_emulator() -> (Emulator, String, tokio::task::JoinHandle<()>) {
    let emu = Emulator::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let router = emu.router();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (emu, url, task)
}

impl Harness {
    pub async fn start(config: impl FnOnce(&std::path::Path) -> Config) -> Harness {
        Self::start_with_clock(config, None).await
    }

    /// [`Harness::start`] with the clock the app's quotas and subscriptions read.
    pub async fn start_with_clock(
        config: impl FnOnce(&std::path::Path) -> Config,
        clock: Option<crate::billing::levels::Clock>,
    ) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config(dir.path());
        let (emu, emu_url, emu_task) = serve_emulator().await;
        let mut h = Harness { emu, emu_url, dir, config, app: None, emu_task, clock };
        h.start_app().await;
        h
    }

    pub async fn start_app(&mut self) {
        let clock = self.clock.clone().unwrap_or_else(crate::billing::levels::Clock::system);
        let app = app::start_with_clock(self.config.clone(), Mode::External { api_url: self.emu_url.clone() }, clock)
            .await
            .expect("app starts");
        self.app = Some(app);
    }

    pub async fn stop_app(&mut self) {
        if let Some(a) = self.app.take() {
            a.stop().await;
        }
    }

    pub async fn restart(&mut self) {
        self.stop_app().await;
        self.start_app().await;
    }

    pub fn store(&self) -> crate::store::Store {
        self.app.as_ref().expect("app running").store.clone()
    }

    fn user(id: i64, lang: &str) -> Value {
        json!({"id": id, "first_name": format!("User{id}"), "username": format!("user{id}"), "language_code": lang})
    }

    pub fn push(&self, v: Value) -> i64 {
        self.emu.push_update(serde_json::from_value(v).expect("control update shape")).expect("update accepted")
    }

    pub fn text(&self, user: i64, lang: &str, text: &str) -> i64 {
        self.push(json!({"user": Self::user(user, lang), "text": text}))
    }

    pub fn press(&self, user: i64, lang: &str, message_id: i64, data: &str) -> i64 {
        self.push(json!({"user": Self::user(user, lang), "callback_data": data, "message_id": message_id}))
    }

    pub fn photo(&self, user: i64, lang: &str, path: &std::path::Path, caption: Option<&str>) -> i64 {
        let mut v = json!({"user": Self::user(user, lang), "photo_base64": base64_file(path)});
        if let Some(c) = caption {
            v["caption"] = json!(c);
        }
        self.push(v)
    }

    /// The chat transcript as JSON values (shape documented by the emulator's control API).
    pub fn messages(&self, chat: i64) -> Vec<Value> {
        self.emu.messages(chat).iter().map(|m| serde_json::to_value(m).expect("json")).collect()
    }

    pub fn bot_messages(&self, chat: i64) -> Vec<Value> {
        self.messages(chat).into_iter().filter(|m| m["from_bot"] == true).collect()
    }

    /// Waits until `pred` holds for the chat's transcript; panics with the transcript after `secs`.
    pub async fn wait_for(&self, chat: i64, secs: u64, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let msgs = self.messages(chat);
            if pred(&msgs) {
                return msgs;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; transcript:\n{}",
                    serde_json::to_string_pretty(&msgs).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    /// Waits for a bot message whose text contains `needle`; returns it.
    pub async fn wait_text(&self, chat: i64, needle: &str) -> Value {
        let msgs = self
            .wait_for(chat, 20, needle, |m| m.iter().any(|x| x["from_bot"] == true && text_of(x).contains(needle)))
            .await;
        msgs.into_iter().rev().find(|x| x["from_bot"] == true && text_of(x).contains(needle)).expect("found")
    }

    pub async fn ledger(&self, user: i64) -> Vec<Operation> {
        self.store().read(move |rx| rx.find_operations(UserId(user))).await.expect("ledger")
    }

    pub async fn balance(&self, user: i64) -> Credits {
        self.store().read(move |rx| rx.get_user(UserId(user))).await.expect("read").expect("user").balance
    }

    pub async fn verify_clean(&self) {
        let problems = self.store().read(crate::billing::verify).await.expect("verify");
        assert!(problems.is_empty(), "ledger problems: {problems:?}");
    }

    pub fn assert_no_rejections(&self) {
        let r = self.emu.rejections();
        assert!(r.is_empty(), "emulator rejected calls: {r:?}");
    }

    /// Finds an inline button whose text contains `label` in a message; returns its callback data.
    pub fn button(msg: &Value, label: &str) -> String {
        msg["reply_markup"]["inline_keyboard"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row.as_array().into_iter().flatten())
            .find(|b| b["text"].as_str().unwrap_or("").contains(label))
            .and_then(|b| b["callback_data"].as_str())
            .unwrap_or_else(|| panic!("no button {label:?} in {msg}"))
            .to_string()
    }

    /// /start → prompt → model → format. Returns the message id of the progress message.
    pub async fn create(&self, user: i64, lang: &str, prompt: &str, model_label: &str, format_label: &str) -> i64 {
        let choose = self.text(user, lang, prompt);
        let _ = choose;
        let m = self.wait_for_buttons(user, model_label).await;
        let mid = m["message_id"].as_i64().expect("id");
        self.press(user, lang, mid, &Self::button(&m, model_label));
        let f = self.wait_for_buttons(user, format_label).await;
        let fid = f["message_id"].as_i64().expect("id");
        self.press(user, lang, fid, &Self::button(&f, format_label));
        fid
    }

    /// Waits for the newest bot message carrying a button labelled `label`.
    pub async fn wait_for_buttons(&self, chat: i64, label: &str) -> Value {
        let has = |x: &Value| x["from_bot"] == true && x["reply_markup"].to_string().contains(label);
        let msgs = self.wait_for(chat, 20, label, |m| m.iter().any(has)).await;
        msgs.into_iter().rev().find(|x| has(x)).expect("found")
    }

    pub fn photos(&self, chat: i64) -> Vec<Value> {
        self.bot_messages(chat).into_iter().filter(|m| !m["photo"].is_null()).collect()
    }

    pub fn documents(&self, chat: i64) -> Vec<Value> {
        self.bot_messages(chat).into_iter().filter(|m| !m["document"].is_null()).collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.emu_task.abort();
    }
}

/// A file's bytes in base64, as the control API takes files.
pub fn base64_file(path: &std::path::Path) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).expect("test file"))
}

pub fn text_of(m: &Value) -> String {
    m["text"].as_str().or_else(|| m["caption"].as_str()).unwrap_or("").to_string()
}

pub fn kinds(ops: &[Operation]) -> Vec<OpKind> {
    ops.iter().map(|o| o.kind).collect()
}
