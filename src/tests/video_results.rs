//! Video results through the real job engine (submit → provider → store → deliver → settle):
//! a SaveVideo MP4 is stored faststart with its size and a thumbnail from the input photo; a
//! 60 MB result becomes a signed download link with `web.public_url` (served by the panel's
//! `/download/` route, 404 for a bad signature, 403 once expired), and without it fails as
//! `too_large` with the hold released. The ledger is checked with `billing::verify`, as
//! `admin verify-ledger` does.

use crate::config::Config;
use crate::domain::{Credits, Format, JobStatus, MediaKind, Task, UserId, now_ms};
use crate::jobs::{DeliveredFiles, JobEngine, NewJob, NotifyError, ResultFiles, Submitted};
use crate::providers::{GenerateRequest, GeneratedFile, ImageProvider, ProgressFn, ProviderError, Submission};
use crate::store::Store;
use crate::store::records::{ErrorClass, JobPayload, JobRecord, LibraryItem, OpKind, UserRecord};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::ServiceExt;

const USER: i64 = 77;

/// A provider that returns fixed bytes.
struct Fixed(Vec<u8>);

#[async_trait::async_trait]
impl ImageProvider for Fixed {
    fn id(&self) -> &str {
        "demo"
    }
    async fn submit(&self, _req: &GenerateRequest, pre: Option<&str>) -> Result<Submission, ProviderError> {
        Ok(Submission { request_id: pre.unwrap_or("r").to_string(), data: serde_json::json!({}) })
    }
    async fn wait(&self, _sub: &Submission, _p: ProgressFn<'_>) -> Result<Vec<GeneratedFile>, ProviderError> {
        Ok(vec![GeneratedFile { bytes: self.0.clone(), mime: "video/mp4".into(), is_demo: false }])
    }
}

/// Records what the engine hands to Telegram.
#[derive(Default)]
struct Recorder {
    delivered: Mutex<Vec<ResultFiles>>,
    failed: Mutex<Vec<JobRecord>>,
}

#[async_trait::async_trait]
impl crate::jobs::Notifier for Recorder {
    async fn progress(&self, _job: &JobRecord, _p: crate::jobs::JobProgress) {}
    async fn before_delivery(&self, _job: &JobRecord) {}
    async fn deliver(
        &self,
        _job: &JobRecord,
        _item: &LibraryItem,
        files: ResultFiles,
        _sent: tokio::sync::oneshot::Sender<String>,
    ) -> Result<DeliveredFiles, NotifyError> {
        self.delivered.lock().expect("lock").push(files);
        Ok(DeliveredFiles::default())
    }
    async fn failed(&self, job: &JobRecord, _alt: &[crate::config::ModelConfig]) -> Result<(), NotifyError> {
        self.failed.lock().expect("lock").push(job.clone());
        Ok(())
    }
    async fn delivery_interrupted(&self, _job: &JobRecord, _item: &LibraryItem) -> Result<(), NotifyError> {
        Ok(())
    }
    async fn admin_alert(&self, _text: &str) {}
}

/// A playable MP4 padded with a trailing `free` box to 60 MB.
fn sixty_mb_mp4() -> Vec<u8> {
    let mut mp4 = crate::imaging::video::demo_video("big", 64, 48, 4, 4, 1).expect("clip");
    let pad = 60_000_000 - mp4.len();
    mp4.extend_from_slice(&u32::try_from(pad).expect("fits").to_be_bytes());
    mp4.extend_from_slice(b"free");
    mp4.resize(60_000_000, 0);
    mp4
}

fn config(dir: &std::path::Path, public_url: Option<&str>) -> Config {
    let mut c = Config::default().with_demo();
    c.models.truncate(1);
    c.models[0].task = Task::ImageToVideo;
    c.storage.data_dir = dir.to_path_buf();
    c.web.public_url = public_url.map(str::to_string);
    c
}

struct Env {
    store: Store,
    config: Config,
    engine: JobEngine,
    notifier: Arc<Recorder>,
    _dir: tempfile::TempDir,
    stop: tokio_util::sync::CancellationToken,
}

async fn env(result: Vec<u8>, public_url: Option<&str>) -> Env {
    let dir = tempfile::tempdir().expect("tmp");
    let config = config(dir.path(), public_url);
    let store = Store::open(dir.path()).expect("open");
    store
        .write(|tx| {
            tx.put_user(&UserRecord {
                id: UserId(USER),
                first_name: "Vera".into(),
                username: None,
                language_code: Some("ru".into()),
                balance: Credits(0),
                held: Credits(0),
                created_at: now_ms(),
                updated_at: 0,
                blocked: false,
                banned: false,
                level: String::new(),
                level_until: None,
                language: None,
                referral: Default::default(),
            })?;
            crate::billing::adjust(tx, UserId(USER), Credits(100), "system", "seed")
        })
        .await
        .expect("seed");
    let catalog = crate::catalog::Catalog::open(store.clone(), &config).expect("catalog");
    let mut providers: std::collections::HashMap<String, crate::providers::DynProvider> = Default::default();
    providers.insert("demo".into(), Arc::new(Fixed(result)));
    let notifier = Arc::new(Recorder::default());
    let engine = JobEngine::new(store.clone(), &config, catalog, providers, notifier.clone()).expect("engine");
    let stop = tokio_util::sync::CancellationToken::new();
    {
        let (engine, stop) = (engine.clone(), stop.clone());
        tokio::spawn(async move { engine.run(stop).await });
    }
    Env { store, config, engine, notifier, _dir: dir, stop }
}

impl Env {
    /// Submits an image-to-video job (with `inputs`) and waits until it is terminal.
    async fn run_job(&self, inputs: Vec<String>) -> JobRecord {
        let payload = JobPayload::Generate {
            prompt: "the cat walks".into(),
            negative: None,
            format: Format::Horizontal,
            width: 64,
            height: 48,
            aspect_ratio: None,
            seed: 1,
            inputs,
            options: Default::default(),
        };
        let new = NewJob {
            user_id: UserId(USER),
            chat_id: USER,
            lang: "ru".into(),
            model_id: "demo".into(),
            payload,
            progress_message_id: None,
            draft_id: None,
            priority: false,
        };
        let Submitted::Queued { job, .. } = self.engine.submit(new).await.expect("submit") else {
            panic!("not queued")
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let id = job.id;
            let j = self.store.read(move |rx| rx.get_job(id)).await.expect("read").expect("job");
            let settled = !self.notifier.delivered.lock().expect("lock").is_empty()
                || !self.notifier.failed.lock().expect("lock").is_empty();
            if j.status.is_terminal() && settled {
                return j;
            }
            assert!(Instant::now() < deadline, "job did not finish: {j:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ledger(&self) -> Vec<OpKind> {
        let ops = self.store.read(|rx| rx.find_operations(UserId(USER))).await.expect("ledger");
        ops.iter().map(|o| o.kind).collect()
    }

    async fn ledger_is_consistent(&self) {
        let mismatches = self.store.read(crate::billing::verify).await.expect("verify");
        assert!(mismatches.is_empty(), "{mismatches:?}");
    }

    fn web(&self) -> axum::Router {
        let catalog = crate::catalog::Catalog::open(self.store.clone(), &self.config).expect("catalog");
        let health = Arc::new(crate::health::Health::new(crate::health::BotState::NoToken));
        let state = crate::web::WebState::new(self.store.clone(), Arc::new(self.config.clone()), catalog, health);
        crate::web::router(state)
    }
}

async fn get(app: &axum::Router, uri: &str) -> axum::response::Response {
    app.clone().oneshot(Request::get(uri).body(Body::empty()).expect("req")).await.expect("response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savevideo_mp4_is_stored_faststart_and_sent_with_its_facts() {
    let e = env(super::video::recorded_mp4(), None).await;
    // The input photo, as an upload would have stored it.
    let photo = crate::imaging::render_demo("photo", 640, 480, 3).expect("png");
    let sha = crate::imaging::sha256_hex(&photo);
    e.store.put_media_file(&sha, "png", &photo).expect("input");
    let job = e.run_job(vec![sha]).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    let id = job.result.expect("item");
    let item = e.store.read(move |rx| rx.get_library_item(id)).await.expect("read").expect("item");
    assert_eq!((item.media, item.mime.as_str(), item.ext.as_str()), (MediaKind::Video, "video/mp4", "mp4"));
    assert_eq!((item.width, item.height), (64, 48));
    let stored = std::fs::read(e.store.media_path(&item.sha256, &item.ext)).expect("file");
    assert!(crate::imaging::video::is_faststart(&stored), "the library keeps the streamable MP4");
    assert_eq!(stored.len(), super::video::recorded_mp4().len());

    let delivered = e.notifier.delivered.lock().expect("lock").pop().expect("delivered");
    let ResultFiles::Video { bytes, video, .. } = delivered else { panic!("a video: {delivered:?}") };
    assert_eq!(bytes, stored);
    assert!(video.mp4 && video.faststart);
    let meta = video.meta.expect("probed");
    assert_eq!((meta.width, meta.height, meta.duration_secs), (64, 48, 2));
    let thumb = video.thumbnail.expect("from the input photo");
    let t = image::load_from_memory_with_format(&thumb, image::ImageFormat::Jpeg).expect("a JPEG");
    assert_eq!((t.width(), t.height()), (320, 240));
    assert_eq!(e.ledger().await, [OpKind::Adjust, OpKind::Hold, OpKind::Capture]);
    e.ledger_is_consistent().await;
    e.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_mb_with_a_public_url_goes_as_a_signed_link() {
    let e = env(sixty_mb_mp4(), Some("https://bot.example.org/")).await;
    let job = e.run_job(vec![]).await;
    assert_eq!(job.status, JobStatus::Succeeded);
    assert_eq!(e.ledger().await, [OpKind::Adjust, OpKind::Hold, OpKind::Capture]);
    e.ledger_is_consistent().await;
    let delivered = e.notifier.delivered.lock().expect("lock").pop().expect("delivered");
    let ResultFiles::Link { url, size } = delivered else { panic!("a link: {delivered:?}") };
    assert_eq!(size, 60_000_000);
    let path = url.strip_prefix("https://bot.example.org").expect("under public_url").to_string();
    assert!(path.starts_with(&format!("/download/{}?e=", job.result.expect("item").short())), "{path}");

    // The link message in the user's language.
    let ru = crate::bot::notifier::link_text(crate::bot::i18n::Lang::Ru, "Модель · 3 с", &url, size);
    assert!(
        ru.starts_with("Модель · 3 с") && ru.contains("60 МБ") && ru.contains("7 дн.") && ru.ends_with(&url),
        "{ru}"
    );
    let en = crate::bot::notifier::link_text(crate::bot::i18n::Lang::En, "", &url, size);
    assert!(en.starts_with("📦 The file is 60 MB") && en.contains("7 days"), "{en}");

    // The panel streams the file by that link.
    let app = e.web();
    let r = get(&app, &path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "video/mp4");
    assert_eq!(r.headers()["content-length"], "60000000");
    let cd = r.headers()["content-disposition"].to_str().expect("ascii").to_string();
    assert!(cd.starts_with("attachment; filename=\"mediabot-") && cd.ends_with(".mp4\""), "{cd}");
    let body = axum::body::to_bytes(r.into_body(), usize::MAX).await.expect("body");
    assert_eq!(body.len(), 60_000_000);
    assert_eq!(&body[4..8], b"ftyp");

    // A changed signature, item or expiry is not found; a correctly signed old link is refused.
    let bad_sig = format!("{}0", &path[..path.len() - 1]);
    let bad_sig = if bad_sig == path { format!("{}1", &path[..path.len() - 1]) } else { bad_sig };
    assert_eq!(get(&app, &bad_sig).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get(&app, &path.replacen("?e=", "?e=1", 1)).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get(&app, "/download/zz?e=1&s=00").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(get(&app, "/download/../../etc/passwd").await.status(), StatusCode::NOT_FOUND);
    let key = crate::downloads::LinkKey::load_or_create(&e.config.storage.data_dir).expect("key");
    let old = key.url("", job.result.expect("item"), now_ms() / 1000 - 10);
    assert_eq!(get(&app, &old).await.status(), StatusCode::FORBIDDEN);
    e.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_mb_without_a_public_url_fails_and_releases_the_hold() {
    let e = env(sixty_mb_mp4(), None).await;
    let job = e.run_job(vec![]).await;
    assert_eq!(job.status, JobStatus::Failed);
    assert_eq!(job.error.as_ref().map(|x| x.class), Some(ErrorClass::TooLarge));
    assert!(job.result.is_none(), "nothing stored");
    assert_eq!(e.notifier.failed.lock().expect("lock").len(), 1, "the user is told");
    assert_eq!(e.ledger().await, [OpKind::Adjust, OpKind::Hold, OpKind::Release]);
    e.ledger_is_consistent().await;
    let balance = e.store.read(|rx| rx.get_user(UserId(USER))).await.expect("r").expect("user").balance;
    assert_eq!(balance, Credits(100));
    // The user's text for that class.
    let ru = crate::bot::i18n::Lang::Ru.tf("failed_too_large", &[("price", &"10")]);
    assert!(ru.contains("50 МБ") && ru.contains("10"), "{ru}");
    // Without public_url the download route does not exist.
    let key = crate::downloads::LinkKey::load_or_create(&e.config.storage.data_dir).expect("key");
    let link = key.url("", crate::domain::ImageId::new(), now_ms() / 1000 + 60);
    assert_eq!(get(&e.web(), &link).await.status(), StatusCode::NOT_FOUND);
    e.stop.cancel();
}

#[test]
fn public_url_must_be_https_without_query() {
    let dir = tempfile::tempdir().expect("tmp");
    for (url, ok) in [
        ("https://bot.example.org", true),
        ("https://bot.example.org/mediabot/", true),
        ("http://bot.example.org", false),
        ("https://bot.example.org/?a=1", false),
        ("bot.example.org", false),
    ] {
        let c = config(dir.path(), Some(url));
        match c.validate() {
            Ok(()) => assert!(ok, "{url} accepted"),
            Err(e) => {
                assert!(!ok, "{url}: {e:?}");
                assert_eq!(e.key, "web.public_url");
            }
        }
    }
}

/// Runs a job whose provider returns `result` (with an input photo), then hands what the
/// engine prepared to the real `BotNotifier` talking to an emulator; returns the bot's
/// messages as the control API shows them.
async fn delivered_through_bot(result: Vec<u8>, public_url: Option<&str>) -> Vec<serde_json::Value> {
    let e = env(result, public_url).await;
    let photo = crate::imaging::render_demo("photo", 640, 480, 3).expect("png");
    let sha = crate::imaging::sha256_hex(&photo);
    e.store.put_media_file(&sha, "png", &photo).expect("input");
    let job = e.run_job(vec![sha]).await;
    e.stop.cancel();
    let id = job.result.expect("item");
    let item = e.store.read(move |rx| rx.get_library_item(id)).await.expect("read").expect("item");
    let files = e.notifier.delivered.lock().expect("lock").pop().expect("prepared");

    let emu = crate::emulator::Emulator::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = emu.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let hello = serde_json::json!({"user": {"id": USER, "first_name": "Vera", "language_code": "ru"}, "text": "hi"});
    emu.push_update(serde_json::from_value(hello).expect("update")).expect("pushed");
    let raw = teloxide::Bot::new("123:TEST").set_api_url(format!("http://{addr}/").parse().expect("url"));
    let tg = teloxide::adaptors::Throttle::new_spawn(raw, teloxide::adaptors::throttle::Limits::default());
    let notifier = crate::bot::notifier::BotNotifier::new(tg, &e.config);
    let (tx, _rx) = tokio::sync::oneshot::channel();
    crate::jobs::Notifier::deliver(&notifier, &job, &item, files, tx).await.expect("delivered");
    assert!(emu.rejections().is_empty(), "{:?}", emu.rejections());
    emu.messages(USER)
        .iter()
        .map(|m| serde_json::to_value(m).expect("json"))
        .filter(|m| m["from_bot"] == true)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bot_sends_each_kind_the_way_telegram_shows_it() {
    // SaveVideo MP4: sendVideo with duration, size, the input photo's thumbnail and streaming.
    let msgs = delivered_through_bot(super::fakes::comfyui::recorded_video_bytes("video_from_image"), None).await;
    let video = &msgs[0]["video"];
    assert_eq!(video["mime_type"], "video/mp4");
    assert_eq!(
        (video["duration"].as_u64(), video["width"].as_u64(), video["height"].as_u64()),
        (Some(2), Some(64), Some(48))
    );
    assert_eq!(video["has_thumbnail"], true);
    assert_eq!(video["supports_streaming"], true);
    assert!(msgs[0]["reply_markup"].is_object(), "the result's buttons");

    // WebM: a document (Telegram clients play only MPEG-4 inline).
    let msgs = delivered_through_bot(super::fakes::comfyui::recorded_video_bytes("video_webm"), None).await;
    assert_eq!(msgs[0]["document"]["mime_type"], "video/webm");
    assert!(msgs[0]["video"].is_null());

    // Animated WebP: sendAnimation with its size and length.
    let msgs = delivered_through_bot(super::fakes::comfyui::recorded_video_bytes("video_animated_webp"), None).await;
    let anim = &msgs[0]["animation"];
    assert_eq!((anim["duration"].as_u64(), anim["width"].as_u64()), (Some(2), Some(64)));

    // Over 50 MB with public_url: a text message with the link, in the user's language.
    let msgs = delivered_through_bot(sixty_mb_mp4(), Some("https://bot.example.org")).await;
    let text = msgs[0]["text"].as_str().expect("a text message");
    assert!(text.contains("60 МБ") && text.contains("https://bot.example.org/download/"), "{text}");
    assert!(msgs[0]["reply_markup"].is_object());
}
