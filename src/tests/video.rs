//! Video flows end to end in Russian (issue 20): the 🎬 wizard asks the model's declared
//! options, shows the price of the chosen combination before anything is held, holds and
//! captures exactly that; ⚡ quick mode and a bare photo (with `[video] photo_starts_quick`)
//! ask nothing; text → video; 📊 and the caption link. fal answers with the MP4 a real
//! ComfyUI SaveVideo wrote (../shared/testdata/comfyui/recorded-video-0.3.64.json).

use super::fakes::fal::FakeFal;
use super::harness::*;
use super::tools::{new_buttons, new_text, tool, tools_harness};
use crate::config::{ModelConfig, ModelOption, OptionValue};
use crate::domain::{Credits, Task, UserId};
use crate::store::records::{JobPayload, OpKind};
use serde_json::{Value, json};

/// The MP4 file of the recorded SaveVideo session (`GET /view` answer): ftyp, free, mdat, moov.
pub(super) fn recorded_mp4() -> Vec<u8> {
    super::fakes::comfyui::recorded_video_bytes("video_from_image")
}

/// An option with values (value, price).
fn option(name: &str, values: &[(i64, i64)]) -> ModelOption {
    ModelOption {
        name: name.into(),
        field: None,
        values: values.iter().map(|(v, p)| OptionValue { value: json!(v), label: None, price: Credits(*p) }).collect(),
    }
}

/// Seed 004's video model: duration 5 / 10 / 15 s for 5 / 10 / 15 credits, quality
/// 300 / 600 / 832 px at no extra price.
fn kling(id: &str, task: Task) -> ModelConfig {
    let mut m = tool(id, task, 0, "fal-ai/kling-video/v2.1/standard/image-to-video");
    m.display_name = "Kling".into();
    m.options =
        vec![option("duration", &[(5, 5), (10, 10), (15, 15)]), option("quality", &[(300, 0), (600, 0), (832, 0)])];
    m
}

/// The bot's video messages in the chat.
fn videos(h: &Harness, u: i64) -> Vec<Value> {
    h.bot_messages(u).into_iter().filter(|m| !m["video"].is_null()).collect()
}

/// Presses the button labelled `label` on `msg`; returns the transcript length before.
fn press(h: &Harness, u: i64, msg: &Value, label: &str) -> usize {
    let n = h.messages(u).len();
    h.press(u, "ru", msg["message_id"].as_i64().expect("id"), &Harness::button(msg, label));
    n
}

/// The message `msg` once an edit made its text or buttons contain `needle` (each answer of
/// the wizard edits the pressed message).
async fn edited(h: &Harness, u: i64, msg: &Value, needle: &str) -> Value {
    let id = msg["message_id"].clone();
    let found = |m: &[Value]| {
        m.iter()
            .find(|x| {
                x["message_id"] == id && (text_of(x).contains(needle) || x["reply_markup"].to_string().contains(needle))
            })
            .cloned()
    };
    found(&h.wait_for(u, 20, needle, |m| found(m).is_some()).await).expect("found")
}

/// The one job of user `u`.
async fn only_job(h: &Harness, u: i64) -> crate::store::records::JobRecord {
    let jobs = h.store().read(move |rx| rx.find_user_jobs(UserId(u), 10)).await.expect("jobs");
    assert_eq!(jobs.len(), 1, "one job: {jobs:?}");
    jobs.into_iter().next().expect("job")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wizard_in_russian_shows_the_price_then_holds_and_captures_it() {
    let fal = FakeFal::start().await;
    fal.set_result_file(recorded_mp4(), "video/mp4");
    let h = tools_harness(&fal, vec![kling("kling", Task::ImageToVideo)]).await;
    let u = 2001;
    let n = h.messages(u).len();
    h.text(u, "ru", "/start");
    let menu = new_buttons(&h, u, n, "🎬 Создать видео").await;
    assert!(menu["reply_markup"].to_string().contains("⚡ Быстрый режим"), "{menu}");
    assert!(menu["reply_markup"].to_string().contains("📊 Статистика"), "{menu}");
    let n = press(&h, u, &menu, "🎬 Создать видео");
    let ask = new_text(&h, u, n, "Пришлите фото").await;
    assert!(text_of(&ask).contains("Цену покажу перед запуском"), "{ask}");

    let n = h.messages(u).len();
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    let motion = new_text(&h, u, n, "Как фото должно двигаться").await;
    assert!(motion["reply_markup"].to_string().contains("Пропустить"), "the motion prompt is optional: {motion}");
    let n = h.messages(u).len();
    h.text(u, "ru", "камера медленно приближается");
    let durations = new_buttons(&h, u, n, "15").await;
    assert!(text_of(&durations).contains("длительность"), "{durations}");
    press(&h, u, &durations, "15");
    let qualities = edited(&h, u, &durations, "качество").await;
    press(&h, u, &qualities, "832");
    let confirm = edited(&h, u, &durations, "Создать за").await;
    let text = text_of(&confirm);
    assert!(text.contains("Длительность: 15 с") && text.contains("Качество: 832 px"), "{text}");
    assert!(text.contains("15 кредитов"), "the price of this combination: {text}");
    assert!(Harness::button(&confirm, "Создать за 15 кредитов").starts_with('2'), "the button names the price");
    // Nothing is held before the confirmation.
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus]);

    press(&h, u, &confirm, "Создать за");
    h.wait_for(u, 30, "the video", |_| videos(&h, u).len() == 1).await;
    let ops = h.ledger(u).await;
    assert_eq!(kinds(&ops), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!(
        (ops[1].amount, ops[2].amount),
        (Credits(15), Credits(15)),
        "held and captured the price shown: {ops:?}"
    );
    assert_eq!(h.balance(u).await, Credits(85));
    let body = fal.last_submit_body().expect("submitted");
    assert_eq!(body["duration"], json!(15), "{body}");
    assert_eq!(body["quality"], json!(832), "{body}");
    assert_eq!(body["prompt"], json!("камера медленно приближается"), "{body}");
    assert!(body["image_url"].as_str().is_some_and(|u| u.starts_with("data:image/")), "the photo goes along");
    let job = only_job(&h, u).await;
    let JobPayload::Generate { width, height, .. } = job.payload else { panic!("a provider job") };
    // Landscape_1 is 1800×1200: the longer side is the quality chosen, both sides even.
    assert_eq!((width, height), (832, 554));
    let video = &videos(&h, u)[0];
    assert!(video["reply_markup"].to_string().contains("🎬 Создать ещё"), "{video}");
    // The recorded SaveVideo clip: 64×48, 2 s, made faststart, with the photo as thumbnail.
    let v = &video["video"];
    assert_eq!(
        (v["duration"].clone(), v["width"].clone(), v["height"].clone()),
        (json!(2), json!(64), json!(48)),
        "{v}"
    );
    assert_eq!((v["supports_streaming"].clone(), v["has_thumbnail"].clone()), (json!(true), json!(true)), "{v}");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sandbox_wizard_makes_a_real_clip_without_a_gpu() {
    // `sandbox` with nothing configured: the demo models, the video ones among them.
    let h = Harness::start(|d| {
        let mut c = test_config(d).with_demo();
        c.billing.currency = crate::config::BillingConfig::default().currency;
        c
    })
    .await;
    let u = 2006;
    let n = h.messages(u).len();
    h.text(u, "ru", "/video");
    new_text(&h, u, n, "Пришлите фото").await;
    let n = h.messages(u).len();
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), Some("листья кружатся"));
    let durations = new_buttons(&h, u, n, "15").await;
    press(&h, u, &durations, "15");
    let qualities = edited(&h, u, &durations, "качество").await;
    press(&h, u, &qualities, "832");
    let confirm = edited(&h, u, &durations, "Создать за 15 кредитов").await;
    press(&h, u, &confirm, "Создать за");
    h.wait_for(u, 60, "the demo clip", |_| videos(&h, u).len() == 1).await;
    let v = &videos(&h, u)[0]["video"];
    // The demo clip keeps the length asked for and the photo's shape, at most 256 px.
    assert_eq!(v["duration"], json!(15), "{v}");
    assert_eq!((v["width"].clone(), v["height"].clone()), (json!(256), json!(170)), "{v}");
    let bytes = h.emu.file_bytes(v["file_id"].as_str().expect("file id")).expect("stored");
    assert_eq!(&bytes[4..8], b"ftyp", "a real MP4");
    let ops = h.ledger(u).await;
    assert_eq!(kinds(&ops), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!(ops[1].amount, Credits(15));
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quick_mode_and_a_bare_photo_ask_nothing_and_cost_ten() {
    let fal = FakeFal::start().await;
    fal.set_result_file(recorded_mp4(), "video/mp4");
    let base = fal.base_url();
    let h = Harness::start(move |d| {
        let mut c = test_config(d);
        c.billing.currency = crate::config::BillingConfig::default().currency;
        c.providers.push(provider("fal", crate::config::ProviderKind::Fal, &base));
        c.models.push(kling("kling", Task::ImageToVideo));
        c.video.photo_starts_quick = true;
        c
    })
    .await;

    // ⚡ from the menu: a photo, and the job runs with 10 s / 600 px.
    let u = 2002;
    let n = h.messages(u).len();
    h.text(u, "ru", "/start");
    let menu = new_buttons(&h, u, n, "⚡ Быстрый режим").await;
    let n = press(&h, u, &menu, "⚡ Быстрый режим");
    new_text(&h, u, n, "видео начнётся сразу").await;
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_6.jpg"), None);
    h.wait_for(u, 30, "the quick video", |_| videos(&h, u).len() == 1).await;
    let ops = h.ledger(u).await;
    assert_eq!(kinds(&ops), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!((ops[1].amount, ops[2].amount), (Credits(10), Credits(10)));
    let body = fal.last_submit_body().expect("submitted");
    assert_eq!((body["duration"].clone(), body["quality"].clone()), (json!(10), json!(600)), "{body}");
    let job = only_job(&h, u).await;
    let JobPayload::Generate { width, height, .. } = job.payload else { panic!("a provider job") };
    assert_eq!((width, height), (600, 400), "Landscape_6 upright is 1800×1200: 600 px on the longer side");
    assert!(
        !h.bot_messages(u).iter().any(|m| m["reply_markup"].to_string().contains("Создать за")),
        "quick mode asks no confirmation"
    );

    // A bare photo with the switch on: the same, no menu at all.
    let u = 2003;
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), Some("волны"));
    h.wait_for(u, 30, "the video from a bare photo", |_| videos(&h, u).len() == 1).await;
    let ops = h.ledger(u).await;
    assert_eq!(kinds(&ops), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!((ops[1].amount, ops[2].amount), (Credits(10), Credits(10)));
    assert_eq!(fal.last_submit_body().expect("submitted")["prompt"], json!("волны"), "the caption is the motion");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_switch_off_a_photo_is_offered_animation_among_the_modes() {
    let fal = FakeFal::start().await;
    fal.set_result_file(recorded_mp4(), "video/mp4");
    let h = tools_harness(&fal, vec![kling("kling", Task::ImageToVideo)]).await;
    let u = 2004;
    let n = h.messages(u).len();
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    let offer = new_buttons(&h, u, n, "🎬 Оживить фото").await;
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus], "an offer, no job");
    // The photo is carried into the wizard: the motion prompt is asked next.
    let n = press(&h, u, &offer, "🎬 Оживить фото");
    let motion = new_text(&h, u, n, "Как фото должно двигаться").await;
    let n = press(&h, u, &motion, "Пропустить");
    let durations = new_buttons(&h, u, n, "5").await;
    press(&h, u, &durations, "5");
    let qualities = edited(&h, u, &durations, "качество").await;
    press(&h, u, &qualities, "300");
    let confirm = edited(&h, u, &durations, "Создать за 5 кредитов").await;
    press(&h, u, &confirm, "Создать за");
    h.wait_for(u, 30, "the video", |_| videos(&h, u).len() == 1).await;
    assert_eq!(h.balance(u).await, Credits(95));
    h.verify_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_to_video_then_statistics_and_the_caption_link() {
    let fal = FakeFal::start().await;
    fal.set_result_file(recorded_mp4(), "video/mp4");
    let mut t2v = kling("seedance", Task::TextToVideo);
    t2v.endpoint = "fal-ai/bytedance/seedance/v1/lite/text-to-video".into();
    t2v.formats = vec![crate::domain::Format::Horizontal];
    let h = tools_harness(&fal, vec![t2v]).await;
    let u = 2005;
    let n = h.messages(u).len();
    h.text(u, "ru", "/video");
    new_text(&h, u, n, "Опишите видео словами").await;
    assert!(
        !h.bot_messages(u).iter().any(|m| m["reply_markup"].to_string().contains("Быстрый")),
        "no quick mode without an image_to_video model"
    );
    let n = h.messages(u).len();
    h.text(u, "ru", "волны разбиваются о скалы на закате");
    let durations = new_buttons(&h, u, n, "10").await;
    press(&h, u, &durations, "10");
    let qualities = edited(&h, u, &durations, "качество").await;
    press(&h, u, &qualities, "600");
    let confirm = edited(&h, u, &durations, "Создать за 10 кредитов").await;
    press(&h, u, &confirm, "Создать за");
    h.wait_for(u, 30, "the video", |_| videos(&h, u).len() == 1).await;
    let body = fal.last_submit_body().expect("submitted");
    assert!(body.get("image_url").is_none(), "text → video sends no photo: {body}");
    let job = only_job(&h, u).await;
    let JobPayload::Generate { width, height, ref inputs, .. } = job.payload else { panic!("a provider job") };
    assert!(inputs.is_empty());
    assert_eq!((width, height), (600, 342), "horizontal 1344×768 at 600 px, even");

    // The caption ends with the bot's own link (telegram.caption_link = "auto").
    let video = &videos(&h, u)[0];
    let caption = text_of(video);
    assert!(caption.lines().last().is_some_and(|l| l.starts_with("t.me/")), "{caption}");

    // 📊: one video made, and the time of its settings.
    let n = h.messages(u).len();
    h.text(u, "ru", "/stats");
    let stats = new_text(&h, u, n, "Вы создали").await;
    let text = text_of(&stats);
    assert!(text.contains("Вы создали 1 видео"), "{text}");
    assert!(text.contains("Kling · 10 с · 600 px") && text.contains("замеров: 1"), "{text}");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test]
async fn the_eta_of_a_video_comes_from_runs_of_the_same_settings() {
    use crate::jobs::video::VideoSettings;
    let m = kling("kling", Task::ImageToVideo);
    let choose = |d: u8, q: u8| -> crate::config::Choices {
        [("duration".to_string(), d), ("quality".to_string(), q)].into_iter().collect()
    };
    let (short, long) = (VideoSettings::of(&m, &choose(0, 0)), VideoSettings::of(&m, &choose(2, 2)));
    assert_eq!(short.key(), "v:5s:300p");
    assert_eq!(long.key(), "v:15s:832p");
    assert_eq!(VideoSettings::all(&m).len(), 9);
    let dir = tempfile::tempdir().expect("dir");
    let store = crate::store::Store::open(dir.path()).expect("store");
    // Ten 5 s runs of ~30 s and three 15 s runs of ~200 s.
    let (s, l) = (short.key(), long.key());
    store
        .write(move |tx| {
            for i in 0..10u128 {
                tx.insert_duration("kling", &s, crate::domain::JobId(i), 30_000 + i as u64 * 100)?;
            }
            for i in 10..13u128 {
                tx.insert_duration("kling", &l, crate::domain::JobId(i), 200_000)?;
            }
            Ok::<_, crate::store::StoreError>(())
        })
        .await
        .expect("write");
    let eta = |key: String| crate::jobs::eta_from(&store, "kling".into(), key);
    assert_eq!(eta(short.key()).await, 31, "mean of the same settings' runs, rounded up");
    assert_eq!(eta(long.key()).await, 200);
    // Settings never run: the model's mean over every run (10×~30 s + 3×200 s).
    let unseen = VideoSettings::of(&m, &choose(1, 1)).key();
    assert_eq!(eta(unseen).await, 70, "(304.5 s + 600 s) / 13 runs");
    // Another model entirely: the default.
    assert_eq!(crate::jobs::eta_from(&store, "other".into(), short.key()).await, crate::jobs::DEFAULT_ETA_SECS);
}
