//! Photo modes end to end in Russian (issue 19): the tools menu, photos asked for by role,
//! optional and required instructions, the request shapes fal receives, the ledger on success
//! and on a provider refusal, the cut-out's delivery, and the buttons under a result.

use super::fakes::fal::FakeFal;
use super::harness::*;
use crate::config::ProviderKind;
use crate::domain::{Credits, Task, UserId};
use crate::providers::SizeParam;
use crate::store::records::{JobPayload, OpKind};
use serde_json::Value;

/// fal plus one model per `(id, task, price)`, each with no size parameter (tools keep the
/// photo's size).
pub(super) async fn tools_harness(fal: &FakeFal, models: Vec<crate::config::ModelConfig>) -> Harness {
    let base = fal.base_url();
    Harness::start(move |d| {
        let mut c = test_config(d);
        c.billing.currency = crate::config::BillingConfig::default().currency;
        c.providers.push(provider("fal", ProviderKind::Fal, &base));
        c.models.extend(models);
        c
    })
    .await
}

pub(super) fn tool(id: &str, task: Task, price: i64, endpoint: &str) -> crate::config::ModelConfig {
    let mut m = model(id, "fal", price);
    m.task = task;
    m.endpoint = endpoint.into();
    m.size_param = SizeParam::None;
    m.display_name = format!("Модель {id}");
    m
}

/// The first bot message after the transcript's first `after` messages that carries a button
/// labelled `label` (an older menu with the same button must not be pressed by mistake).
pub(super) async fn new_buttons(h: &Harness, u: i64, after: usize, label: &str) -> Value {
    let found = |m: &[Value]| {
        m.iter().skip(after).find(|x| x["from_bot"] == true && x["reply_markup"].to_string().contains(label)).cloned()
    };
    found(&h.wait_for(u, 20, label, |m| found(m).is_some()).await).expect("found")
}

/// The first bot message after the first `after` ones whose text contains `needle`.
pub(super) async fn new_text(h: &Harness, u: i64, after: usize, needle: &str) -> Value {
    let found =
        |m: &[Value]| m.iter().skip(after).find(|x| x["from_bot"] == true && text_of(x).contains(needle)).cloned();
    found(&h.wait_for(u, 20, needle, |m| found(m).is_some()).await).expect("found")
}

/// /start, then "🧰 Фото-инструменты" → the tool's button; returns the tool's first prompt.
pub(super) async fn open_tool(h: &Harness, u: i64, label: &str, first_prompt: &str) -> Value {
    let n = h.messages(u).len();
    h.text(u, "ru", "/start");
    let menu = new_buttons(h, u, n, "Фото-инструменты").await;
    let n = h.messages(u).len();
    h.press(u, "ru", menu["message_id"].as_i64().expect("id"), &Harness::button(&menu, "Фото-инструменты"));
    let tools = new_buttons(h, u, n, label).await;
    let n = h.messages(u).len();
    h.press(u, "ru", tools["message_id"].as_i64().expect("id"), &Harness::button(&tools, label));
    new_text(h, u, n, first_prompt).await
}

/// The image a data URI in a request body carries.
pub(super) fn data_uri_image(v: &Value) -> image::DynamicImage {
    use base64::Engine;
    let uri = v.as_str().unwrap_or_else(|| panic!("a data URI, got {v}"));
    let b64 = uri.split_once(";base64,").map(|(_, b)| b).expect("data:<mime>;base64,");
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
    image::load_from_memory(&bytes).expect("an image")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upscale_in_russian_captures_on_success_and_releases_on_a_refusal() {
    let fal = FakeFal::start().await;
    let h = tools_harness(&fal, vec![tool("crisp", Task::Upscale, 7, "fal-ai/recraft/upscale/crisp")]).await;
    let u = 901;
    let ask = open_tool(&h, u, "⬆️ Улучшить", "фотографией или файлом").await;
    assert!(text_of(&ask).contains("нейросеть увеличит"), "the mode says what it does: {ask}");
    assert!(ask["reply_markup"].to_string().contains("Отменить"), "every step has Cancel: {ask}");
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    h.wait_for(u, 30, "the upscaled picture", |_| h.photos(u).len() == 1).await;
    let body = fal.last_submit_body().expect("submitted");
    assert!(body.get("prompt").is_none(), "an upscale takes no prompt: {body}");
    assert!(body.get("image_size").is_none() && body.get("aspect_ratio").is_none(), "{body}");
    let sent = data_uri_image(&body["image_url"]);
    assert_eq!((sent.width(), sent.height()), (1800, 1200), "the upright photo");
    assert_eq!(fal.submits("fal-ai/recraft/upscale/crisp"), 1);
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!(h.balance(u).await, Credits(93));

    // A refusal (422): a plain message and the hold released.
    fal.push_scenario(super::fakes::fal::FalScenario::SubmitError {
        status: 422,
        body: r#"{"detail":[{"loc":["body","image_url"],"msg":"Image too small","type":"value_error"}]}"#.into(),
    });
    open_tool(&h, u, "⬆️ Улучшить", "фотографией или файлом").await;
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    h.wait_text(u, "Image too small").await;
    assert_eq!(
        kinds(&h.ledger(u).await),
        [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture, OpKind::Hold, OpKind::Release]
    );
    assert_eq!(h.balance(u).await, Credits(93));
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn face_swap_asks_for_the_face_then_the_photo_and_sends_them_in_that_order() {
    let fal = FakeFal::start().await;
    let mut swap = tool("swap", Task::FaceSwap, 5, "fal-ai/face-swap");
    swap.image_fields = vec!["swap_image_url".into(), "base_image_url".into()];
    let h = tools_harness(&fal, vec![swap]).await;
    let u = 902;
    let ask = open_tool(&h, u, "🔄 Заменить лицо", "фото лица").await;
    assert!(text_of(&ask).contains("(фото 1 из 2)"), "{ask}");
    // The face (a landscape photo), then the photo to change (upright a portrait one: its
    // EXIF orientation turns it).
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    let second = h.wait_text(u, "на котором заменить лицо").await;
    assert!(text_of(&second).contains("(фото 2 из 2)"), "{second}");
    h.photo(u, "ru", &testdata("photos/canon_sx60_orient6_gpsifd.jpg"), None);
    h.wait_for(u, 30, "the swapped picture", |_| h.photos(u).len() == 1).await;
    let body = fal.last_submit_body().expect("submitted");
    let (face, target) = (data_uri_image(&body["swap_image_url"]), data_uri_image(&body["base_image_url"]));
    assert!(face.width() > face.height(), "the face is the first photo sent");
    assert!(target.height() > target.width(), "the photo to change is the second");
    assert!(body.get("image_url").is_none() && body.get("image_urls").is_none(), "{body:?}");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn remove_background_sends_the_cut_out_as_a_png_with_a_checkerboard_preview() {
    let png = std::fs::read(testdata("photos/alpha_dice_rgba.png")).expect("testdata");
    let fal = FakeFal::start().await;
    fal.set_result_file(png, "image/png");
    let h = tools_harness(&fal, vec![tool("birefnet", Task::RemoveBackground, 3, "fal-ai/birefnet")]).await;
    let u = 903;
    open_tool(&h, u, "✂️ Убрать фон", "фотографией или файлом").await;
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    h.wait_for(u, 30, "preview and file", |_| h.photos(u).len() == 1 && h.documents(u).len() == 1).await;
    let doc = &h.documents(u)[0];
    assert_eq!(doc["document"]["mime_type"], "image/png", "{doc}");
    let bytes = h.emu.file_bytes(doc["document"]["file_id"].as_str().expect("id")).expect("bytes");
    let cut = image::load_from_memory(&bytes).expect("PNG").to_rgba8();
    assert!(cut.pixels().any(|p| p.0[3] == 0), "transparent pixels in the document");
    // The preview shows the transparent corner as a checkerboard, not as white.
    let photo = h.photos(u).remove(0);
    let largest = photo["photo"]["file_id"].as_str().expect("the photo's file_id");
    let preview = image::load_from_memory(&h.emu.file_bytes(largest).expect("bytes")).expect("JPEG").to_rgb8();
    assert_eq!(preview.dimensions(), cut.dimensions(), "the preview keeps the size");
    assert!(cut.get_pixel(0, 0).0[3] == 0 && cut.get_pixel(24, 8).0[3] == 0, "the corner is transparent");
    let grey = |x: u32, y: u32| preview.get_pixel(x, y).0.iter().map(|c| i32::from(*c)).sum::<i32>() / 3;
    assert!(grey(8, 8) > 245, "a white square: {}", grey(8, 8));
    assert!((195..=213).contains(&grey(24, 8)), "then a grey one: {}", grey(24, 8));
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retouch_takes_an_optional_wish_after_the_models_own_instruction() {
    let fal = FakeFal::start().await;
    let soft = tool("soft", Task::Retouch, 5, "fal-ai/retoucher");
    let mut enhance = tool("enhance", Task::Retouch, 10, "fal-ai/nano-banana/edit");
    enhance.display_name = "Усилить черты".into();
    enhance.instruction = Some("Keep the age, lips and structure; add nothing.".into());
    let h = tools_harness(&fal, vec![soft, enhance]).await;
    let u = 904;
    open_tool(&h, u, "✨ Ретушь", "фотографией или файлом").await;
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    let wish = h.wait_for_buttons(u, "Пропустить").await;
    assert!(text_of(&wish).contains("оставить веснушки"), "{wish}");
    h.press(u, "ru", wish["message_id"].as_i64().expect("id"), &Harness::button(&wish, "Пропустить"));
    let models = h.wait_for_buttons(u, "Усилить черты").await;
    h.press(u, "ru", models["message_id"].as_i64().expect("id"), &Harness::button(&models, "Усилить черты"));
    h.wait_for(u, 30, "the retouched picture", |_| h.photos(u).len() == 1).await;
    let body = fal.last_submit_body().expect("submitted");
    assert_eq!(body["prompt"], "Keep the age, lips and structure; add nothing.", "skipped: the model's own");
    assert_eq!(data_uri_image(&body["image_url"]).width(), 1800, "one photo: image_url");

    // With a wish, it follows the model's instruction.
    open_tool(&h, u, "✨ Ретушь", "фотографией или файлом").await;
    let n = h.messages(u).len();
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    new_buttons(&h, u, n, "Пропустить").await;
    let n = h.messages(u).len();
    h.text(u, "ru", "оставь веснушки");
    let again = new_buttons(&h, u, n, "Усилить черты").await;
    h.press(u, "ru", again["message_id"].as_i64().expect("id"), &Harness::button(&again, "Усилить черты"));
    h.wait_for(u, 30, "the second picture", |_| h.photos(u).len() == 2).await;
    let body = fal.last_submit_body().expect("submitted");
    assert_eq!(body["prompt"], "Keep the age, lips and structure; add nothing.\nоставь веснушки");
    let ops = kinds(&h.ledger(u).await);
    assert_eq!(ops.iter().filter(|k| **k == OpKind::Capture).count(), 2, "{ops:?}");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sketch_needs_a_description_and_asks_for_the_format() {
    let fal = FakeFal::start().await;
    let mut sketch = tool("sketch", Task::Sketch, 10, "fal-ai/nano-banana/edit");
    sketch.size_param = SizeParam::AspectRatio;
    sketch.instruction = Some("Turn this sketch into a finished picture of:".into());
    let h = tools_harness(&fal, vec![sketch]).await;
    let u = 905;
    open_tool(&h, u, "✍️ Из наброска", "фотографией или файлом").await;
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    let ask = h.wait_text(u, "опишите, чем должен стать набросок").await;
    assert!(!ask["reply_markup"].to_string().contains("Пропустить"), "a description is needed: {ask}");
    h.text(u, "ru", "красная машина на закате");
    let formats = h.wait_for_buttons(u, "Квадрат").await;
    h.press(u, "ru", formats["message_id"].as_i64().expect("id"), &Harness::button(&formats, "Квадрат"));
    h.wait_for(u, 30, "the picture", |_| h.photos(u).len() == 1).await;
    let body = fal.last_submit_body().expect("submitted");
    assert_eq!(body["prompt"], "Turn this sketch into a finished picture of:\nкрасная машина на закате");
    assert_eq!(body["aspect_ratio"], "1:1");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_photo_sent_with_no_flow_offers_the_tools_and_a_result_can_be_edited_or_upscaled() {
    let fal = FakeFal::start().await;
    let mut edit = tool("edit", Task::Edit, 10, "fal-ai/nano-banana/edit");
    edit.display_name = "Правка".into();
    let h = tools_harness(&fal, vec![tool("crisp", Task::Upscale, 7, "fal-ai/recraft/upscale/crisp"), edit]).await;
    let u = 906;
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    let offer = h.wait_for_buttons(u, "⬆️ Улучшить").await;
    assert!(text_of(&offer).contains("напишите, что изменить"), "{offer}");
    assert!(offer["reply_markup"].to_string().contains("Добавить текст"), "{offer}");
    h.press(u, "ru", offer["message_id"].as_i64().expect("id"), &Harness::button(&offer, "⬆️ Улучшить"));
    h.wait_for(u, 30, "the upscaled photo", |_| h.photos(u).len() == 1).await;
    assert_eq!(fal.submits("fal-ai/recraft/upscale/crisp"), 1, "the photo already sent was used");

    // Under the result: "✏️ Редактировать" makes it the first photo of an edit.
    let result = h.photos(u).remove(0);
    let n = h.messages(u).len();
    h.press(u, "ru", result["message_id"].as_i64().expect("id"), &Harness::button(&result, "✏️ Редактировать"));
    let receipt = new_text(&h, u, n, "напишите, что изменить").await;
    assert!(text_of(&receipt).contains("512×768"), "the result's own size: {receipt}");
    h.text(u, "ru", "добавь радугу");
    h.wait_for(u, 30, "the edited result", |_| h.photos(u).len() == 2).await;
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    let edit_job = jobs.iter().find(|j| j.model_id == "edit").expect("the edit job");
    let lib = h.store().read(move |rx| rx.find_library(UserId(u))).await.expect("library");
    let first = lib.iter().find(|i| i.model_id == "crisp").expect("the upscale result");
    let JobPayload::Generate { inputs, prompt, .. } = &edit_job.payload else { panic!("{edit_job:?}") };
    assert_eq!((inputs.as_slice(), prompt.as_str()), (std::slice::from_ref(&first.sha256), "добавь радугу"));

    // "⬆️ Улучшить" under a result runs the AI upscale on it.
    let second = h.photos(u).remove(1);
    h.press(u, "ru", second["message_id"].as_i64().expect("id"), &Harness::button(&second, "⬆️ Улучшить"));
    h.wait_for(u, 30, "the third result", |_| h.photos(u).len() == 3).await;
    assert_eq!(fal.submits("fal-ai/recraft/upscale/crisp"), 2);
    assert_eq!(kinds(&h.ledger(u).await).iter().filter(|k| **k == OpKind::Capture).count(), 3);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_ends_a_photo_mode_and_a_text_is_a_prompt_again() {
    let fal = FakeFal::start().await;
    let mut swap = tool("swap", Task::FaceSwap, 5, "fal-ai/face-swap");
    swap.image_fields = vec!["swap_image_url".into(), "base_image_url".into()];
    let mut create = model("flux", "fal", 10);
    create.formats = vec![crate::domain::Format::Square];
    let h = tools_harness(&fal, vec![swap, create]).await;
    let u = 907;
    let ask = open_tool(&h, u, "🔄 Заменить лицо", "фото лица").await;
    h.press(u, "ru", ask["message_id"].as_i64().expect("id"), &Harness::button(&ask, "Отменить"));
    // The step is gone: a text makes a picture, it is not taken as a wish.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while h.store().read(move |rx| rx.get_dialogue(u)).await.expect("step").is_some() {
        assert!(std::time::Instant::now() < deadline, "the step stays");
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    h.text(u, "ru", "маяк");
    h.wait_for(u, 30, "the picture", |_| h.photos(u).len() == 1).await;
    assert_eq!(fal.submits("fal-ai/face-swap"), 0);
    h.assert_no_rejections();
}

/// Opens a photo mode from the menu and gives it what it asks for: `photos` photos, then the
/// wish (`Some("Пропустить")` presses Skip; another text is a sketch's description, after
/// which the square format is pressed).
async fn run_mode(h: &Harness, u: i64, label: &str, photos: usize, wish: Option<&str>) {
    open_tool(h, u, label, "Пришлите фото").await;
    let n = h.messages(u).len();
    for _ in 0..photos {
        h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    }
    match wish {
        Some("Пропустить") => {
            let m = new_buttons(h, u, n, "Пропустить").await;
            h.press(u, "ru", m["message_id"].as_i64().expect("id"), &Harness::button(&m, "Пропустить"));
        }
        Some(text) => {
            new_text(h, u, n, "опишите").await;
            let n = h.messages(u).len();
            h.text(u, "ru", text);
            let f = new_buttons(h, u, n, "Квадрат").await;
            h.press(u, "ru", f["message_id"].as_i64().expect("id"), &Harness::button(&f, "Квадрат"));
        }
        None => {}
    }
}

/// Every photo mode, as the menu labels it: (label, photos, wish) for [`run_mode`].
const MODES: [(&str, usize, Option<&str>); 7] = [
    ("⬆️ Улучшить", 1, None),
    ("✂️ Убрать фон", 1, None),
    ("✨ Ретушь", 1, Some("Пропустить")),
    ("🔄 Заменить лицо", 2, None),
    ("🎲 Вариации", 1, None),
    ("🖼 Перенос стиля", 2, Some("Пропустить")),
    ("✍️ Из наброска", 1, Some("кот")),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refusal_in_any_mode_is_said_plainly_and_releases_the_hold() {
    let fal = FakeFal::start().await;
    fal.set_scenario(super::fakes::fal::FalScenario::SubmitError {
        status: 422,
        body: r#"{"detail":[{"loc":["body","image_url"],"msg":"Unsupported image content","type":"value_error"}]}"#
            .into(),
    });
    // The modes of MODES (references have their own tests, in reference.rs).
    let models: Vec<_> = Task::TOOLS
        .into_iter()
        .filter(|t| *t != Task::Reference)
        .map(|t| {
            let mut m = tool(t.as_str(), t, 4, "fal-ai/some/tool");
            if t.slots().is_some() {
                m.image_fields = vec!["image_url".into(), "second_image_url".into()];
            }
            m
        })
        .collect();
    let mut edit = tool("edit", Task::Edit, 4, "fal-ai/some/edit");
    edit.size_param = SizeParam::AspectRatio;
    let h = tools_harness(&fal, models.into_iter().chain([edit]).collect()).await;
    // ✏️ Edit: a photo with its instruction as the caption.
    h.text(929, "ru", "/start");
    h.wait_text(929, "бонус").await;
    h.photo(929, "ru", &testdata("photos/orientation/Landscape_1.jpg"), Some("сделай небо розовым"));
    let told = h.wait_text(929, "Провайдер отклонил запрос").await;
    assert!(text_of(&told).contains("Unsupported image content"), "edit: {told}");
    assert_eq!(kinds(&h.ledger(929).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Release], "edit");
    for (u, (label, photos, wish)) in (930..).zip(MODES) {
        run_mode(&h, u, label, photos, wish).await;
        let told = h.wait_text(u, "Провайдер отклонил запрос").await;
        assert!(text_of(&told).contains("Unsupported image content"), "{label}: {told}");
        assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Release], "{label}");
        assert_eq!(h.balance(u).await, Credits(100), "{label}");
    }
    assert_eq!(fal.submits_total(), 8, "one submit per mode, none retried");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sandbox_demo_serves_every_photo_mode() {
    // `sandbox` with nothing configured: the demo provider and one demo model per mode.
    let h = Harness::start(|d| test_config(d).with_demo()).await;
    // One user per mode: Telegram (and teloxide's Throttle) allow a chat 20 messages a minute.
    for (u, (label, photos, wish)) in (910..).zip(MODES) {
        let before = h.photos(u).len();
        run_mode(&h, u, label, photos, wish).await;
        h.wait_for(u, 30, label, |_| h.photos(u).len() == before + 1).await;
        let last = h.photos(u).pop().expect("result");
        assert!(text_of(&last).to_lowercase().contains("демо"), "labelled a demo: {label}: {last}");
    }
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[test]
fn the_shipped_catalog_passes_check_config_once_uncommented() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/config.toml")).expect("config");
    let (_, rest) = text.split_once("# catalog:begin\n").expect("catalog start");
    let (block, _) = rest.split_once("# catalog:end").expect("catalog end");
    let toml: String = block
        .lines()
        .map(|l| l.strip_prefix("# ").or_else(|| l.strip_prefix('#')).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("config.toml");
    let data = dir.path().join("data");
    std::fs::write(&path, format!("[storage]\ndata_dir = {:?}\n\n{toml}\n", data.display().to_string()))
        .expect("write");
    // The ComfyUI example's workflow ships beside the config (/etc/mediabot/workflows/).
    std::fs::create_dir(dir.path().join("workflows")).expect("mkdir");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/workflows/video.json"),
        dir.path().join("workflows/video.json"),
    )
    .expect("copy the workflow");
    let config = crate::config::Config::load(Some(&path)).expect("the catalog parses");
    config.validate().expect("the catalog validates");
    let tasks: std::collections::HashSet<Task> = config.models.iter().map(|m| m.task).collect();
    for task in Task::HANDLED {
        assert!(tasks.contains(&task), "the catalog has a {} model", task.as_str());
    }
    let swap = config.models.iter().find(|m| m.task == Task::FaceSwap).expect("face swap");
    assert_eq!(swap.image_fields, ["swap_image_url", "base_image_url"], "the face first");
    // Seedream takes English only: its models translate, with the catalog's own fal any-llm
    // (check-config would refuse `translate` without it).
    let translating: Vec<&str> = config.models.iter().filter(|m| m.translate).map(|m| m.id.as_str()).collect();
    assert_eq!(translating, ["seedream", "seedream-edit", "ws-seedream-edit"]);
    // Video: prices by duration (model 0 + 5 / 10 / 15), quality 300 / 600 / 832 px for free,
    // and the shipped workflow fills with nothing unknown.
    for m in config.models.iter().filter(|m| m.task.is_video()) {
        let duration = m.options.iter().find(|o| o.name == "duration").expect("a duration option");
        for (i, v) in duration.values.iter().enumerate() {
            let choices: crate::config::Choices = [("duration".to_string(), i as u8)].into();
            let secs = crate::providers::json_u32(&v.value).expect("seconds");
            assert_eq!(m.quote(m.price, &choices), Some(Credits(i64::from(secs))), "{}: {secs} s", m.id);
        }
        if let Some(q) = m.options.iter().find(|o| o.name == "quality") {
            let px: Vec<u32> = q.values.iter().filter_map(|v| crate::providers::json_u32(&v.value)).collect();
            assert_eq!((px, q.values.iter().all(|v| v.price == Credits(0))), (vec![300, 600, 832], true), "{}", m.id);
        }
    }
    let comfy = config.models.iter().find(|m| m.id == "comfy-video").expect("the ComfyUI video model");
    let wf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(comfy.workflow.as_ref().expect("workflow")).expect("read"))
            .expect("json");
    assert!(crate::providers::comfyui::unknown_placeholders(&wf).is_empty());
    let connect = config.providers.iter().find(|p| p.kind == crate::config::ProviderKind::ComfyuiConnect);
    assert!(connect.is_some(), "a ComfyUI-Connect provider");
    let llm = config.llm.as_ref().expect("the catalog's [llm]");
    assert_eq!((llm.kind, llm.api_key_env.as_deref()), (crate::config::LlmKind::Fal, Some("FAL_KEY")));
    // Issue 22: an example per provider kind, each with its key in the environment.
    use crate::config::ProviderKind as K;
    for (kind, var) in [
        (K::Openai, "OPENAI_API_KEY"),
        (K::Gemini, "GEMINI_API_KEY"),
        (K::Replicate, "REPLICATE_API_TOKEN"),
        (K::Huggingface, "HF_TOKEN"),
    ] {
        let p = config.providers.iter().find(|p| p.kind == kind).unwrap_or_else(|| panic!("a {kind:?} provider"));
        assert_eq!(p.api_key_env.as_deref(), Some(var));
        assert!(config.models.iter().any(|m| m.provider == p.id && m.task == Task::TextToImage), "{kind:?}");
    }
}

/// The WaveSpeed fake plus its face swap model, configured as the shipped catalog does.
async fn wavespeed_harness(ws: &super::fakes::FakeWavespeed) -> Harness {
    let base = ws.base_url();
    Harness::start(move |d| {
        let mut c = test_config(d);
        c.billing.currency = crate::config::BillingConfig::default().currency;
        c.providers.push(provider("wavespeed", ProviderKind::Wavespeed, &base));
        let mut swap = model("ws-swap", "wavespeed", 5);
        swap.task = Task::FaceSwap;
        swap.endpoint = "wavespeed-ai/image-face-swap".into();
        swap.image_fields = vec!["face_image".into(), "image".into()];
        swap.size_param = SizeParam::None;
        swap.display_name = "WaveSpeed".into();
        c.models.push(swap);
        c
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn face_swap_on_wavespeed_sends_the_face_then_the_photo_and_delivers_the_result() {
    let ws = super::fakes::FakeWavespeed::start().await;
    let h = wavespeed_harness(&ws).await;
    let u = 911;
    open_tool(&h, u, "🔄 Заменить лицо", "фото лица").await;
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    h.wait_text(u, "на котором заменить лицо").await;
    // A portrait photo once upright (stored 2048×1536 with EXIF orientation 6).
    h.photo(u, "ru", &testdata("photos/canon_sx60_orient6_gpsifd.jpg"), None);
    h.wait_for(u, 30, "the swapped picture", |_| h.photos(u).len() == 1).await;
    let body = ws.last_submit_body().expect("submitted");
    let (face, target) = (data_uri_image(&body["face_image"]), data_uri_image(&body["image"]));
    assert!(face.width() > face.height(), "the face is the first photo sent");
    assert!(target.height() > target.width(), "the photo to change is the second");
    assert_eq!(ws.last_auth().as_deref(), Some("Bearer test-key-123"));
    assert_eq!((ws.submits(), ws.file_fetches()), (1, 1));
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!(h.balance(u).await, Credits(95));
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn face_swap_on_wavespeed_without_a_face_is_refused_in_russian_and_the_hold_released() {
    let ws = super::fakes::FakeWavespeed::start().await;
    ws.set_scenario(super::fakes::WavespeedScenario::Failed { error: "no face detected".into() });
    let h = wavespeed_harness(&ws).await;
    let u = 912;
    open_tool(&h, u, "🔄 Заменить лицо", "фото лица").await;
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    h.wait_text(u, "на котором заменить лицо").await;
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_6.jpg"), None);
    let refusal = h.wait_text(u, "не найдено лицо").await;
    let text = text_of(&refusal);
    assert!(text.contains("Провайдер отклонил запрос"), "the bot's own refusal sentence: {text}");
    assert!(!text.contains("detected"), "no English provider text: {text}");
    assert!(h.photos(u).is_empty());
    assert_eq!(ws.submits(), 1, "a refusal is not retried");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Release]);
    assert_eq!(h.balance(u).await, Credits(100));
    h.verify_clean().await;
    h.assert_no_rejections();
}
