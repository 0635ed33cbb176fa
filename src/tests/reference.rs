//! "🧬 По референсам" end to end in Russian (issue 19): the subject type, 1–4 reference photos
//! (albums too), the `[n]` markers checked against the photos received, the request fal gets
//! (`image_urls` in order, the subject phrase leading the prompt), the ledger on success and on
//! a refusal; and, for every flow that takes several photos, what each sent photo looks like
//! (upright, within the API size, no EXIF) and a photo past the model's count refused. Last, the
//! main menu shows only the modes that have a model.

use super::fakes::fal::{FakeFal, FalScenario};
use super::harness::*;
use super::tools::{data_uri_image, new_buttons, new_text, open_tool, tool, tools_harness};
use crate::config::{ImageCount, ProviderKind};
use crate::domain::{Credits, Format, Task};
use crate::providers::SizeParam;
use crate::store::records::OpKind;
use serde_json::{Value, json};

/// fal's nano-banana edit endpoint as a reference model (1–4 photos by the task's default),
/// one format so nothing is asked after the prompt.
fn reference_model() -> crate::config::ModelConfig {
    let mut m = tool("ref", Task::Reference, 10, "fal-ai/nano-banana/edit");
    m.size_param = SizeParam::AspectRatio;
    m.formats = vec![Format::Square];
    m
}

/// Sends `paths` as one album (one `media_group_id`), `caption` on photo number `at` (0-based).
fn album(h: &Harness, u: i64, group: &str, paths: &[&str], caption: Option<(usize, &str)>) {
    for (i, p) in paths.iter().enumerate() {
        let mut v = json!({"user": {"id": u, "first_name": "U", "language_code": "ru"},
            "photo_base64": base64_file(&testdata(p)), "media_group_id": group});
        if let Some((_, text)) = caption.filter(|(at, _)| *at == i) {
            v["caption"] = json!(text);
        }
        h.push(v);
    }
}

/// Opens the mode and picks the subject type `label`; returns once the photos are asked for.
async fn open_reference(h: &Harness, u: i64, label: &str) {
    let ask = open_tool(h, u, "🧬 По референсам", "Кто или что на фото").await;
    assert!(ask["reply_markup"].to_string().contains("Отменить"), "{ask}");
    for subject in ["Человек", "Животное", "Предмет", "Другое"] {
        assert!(ask["reply_markup"].to_string().contains(subject), "{subject} offered: {ask}");
    }
    let n = h.messages(u).len();
    h.press(u, "ru", ask["message_id"].as_i64().expect("id"), &Harness::button(&ask, label));
    new_text(h, u, n, "фото-референсов").await;
}

/// The bytes a data URI carries.
fn data_uri_bytes(v: &Value) -> Vec<u8> {
    use base64::Engine;
    let uri = v.as_str().unwrap_or_else(|| panic!("a data URI, got {v}"));
    let b64 = uri.split_once(";base64,").map(|(_, b)| b).expect("data:<mime>;base64,");
    base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")
}

/// The APPn segments of a JPEG (marker, payload), read up to the start of the scan: the image
/// data after it is entropy-coded and may hold any byte string.
fn jpeg_app_segments(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    assert!(bytes.starts_with(&[0xFF, 0xD8]), "a JPEG");
    let (mut at, mut out) = (2, Vec::new());
    while at + 4 <= bytes.len() && bytes[at] == 0xFF {
        let marker = bytes[at + 1];
        if marker == 0xDA {
            break;
        }
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        if (0xE0..=0xEF).contains(&marker) {
            out.push((marker, bytes[at + 4..(at + 2 + len).min(bytes.len())].to_vec()));
        }
        at += 2 + len;
    }
    out
}

fn image_urls(body: &Value) -> Vec<Value> {
    body["image_urls"].as_array().unwrap_or_else(|| panic!("image_urls is a list: {body}")).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reference_from_an_album_sends_the_photos_in_order_with_the_subject_phrase() {
    let fal = FakeFal::start().await;
    let h = tools_harness(&fal, vec![reference_model()]).await;
    let u = 931;
    open_reference(&h, u, "Человек").await;
    let n = h.messages(u).len();
    let photos = ["photos/orientation/Landscape_1.jpg", "photos/tiny_1x1.jpg", "photos/canon_sx60_orient6_gpsifd.jpg"];
    album(&h, u, "ref-album", &photos, None);
    let ask = new_text(&h, u, n, "Метки [1]…[4]").await;
    assert!(ask["reply_markup"].to_string().contains("Отменить"), "{ask}");
    h.text(u, "ru", "[1] и [3] в кафе");
    h.wait_for(u, 30, "the picture", |_| h.photos(u).len() == 1).await;
    let body = fal.last_submit_body().expect("submitted");
    let urls = image_urls(&body);
    let sizes: Vec<(u32, u32)> = urls.iter().map(data_uri_image).map(|i| (i.width(), i.height())).collect();
    assert_eq!(sizes, [(1800, 1200), (1, 1), (1536, 2048)], "the album's photos, in order, upright");
    let prompt = body["prompt"].as_str().expect("prompt");
    assert!(prompt.starts_with("Reference images show a person"), "the subject leads: {prompt}");
    assert!(prompt.ends_with("[1] и [3] в кафе"), "the user's words with their markers: {prompt}");
    assert_eq!(body["aspect_ratio"], "1:1");
    assert!(body.get("image_url").is_none(), "{body}");
    assert_eq!(fal.submits("fal-ai/nano-banana/edit"), 1);
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!(h.balance(u).await, Credits(90));
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_marker_beyond_the_photos_is_refused_and_the_prompt_asked_again() {
    let fal = FakeFal::start().await;
    let h = tools_harness(&fal, vec![reference_model()]).await;
    let u = 932;
    open_reference(&h, u, "Животное").await;
    let n = h.messages(u).len();
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    new_text(&h, u, n, "Метки [1]…[4]").await;
    let n = h.messages(u).len();
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_3.jpg"), None);
    new_text(&h, u, n, "Метки [1]…[4]").await;
    let n = h.messages(u).len();
    h.text(u, "ru", "[5] на пляже");
    let refusal = new_text(&h, u, n, "[5]").await;
    let text = text_of(&refusal);
    assert!(text.contains("получено 2 фото") && text.contains("от [1] до [2]"), "the count is named: {text}");
    new_text(&h, u, n, "Метки [1]…[4]").await;
    assert_eq!(fal.submits_total(), 0, "nothing sent");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus], "nothing held");

    // A prompt within the photos (and one without markers is fine too) goes through.
    h.text(u, "ru", "[2] на пляже, [1] рядом");
    h.wait_for(u, 30, "the picture", |_| h.photos(u).len() == 1).await;
    let body = fal.last_submit_body().expect("submitted");
    assert_eq!(image_urls(&body).len(), 2);
    let prompt = body["prompt"].as_str().expect("prompt");
    assert!(prompt.starts_with("Reference images show an animal") && prompt.ends_with("[2] на пляже, [1] рядом"));
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_reference_job_says_so_plainly_and_releases_the_hold() {
    let fal = FakeFal::start().await;
    fal.push_scenario(FalScenario::SubmitError {
        status: 422,
        body: r#"{"detail":[{"loc":["body","image_urls"],"msg":"Image too small","type":"value_error"}]}"#.into(),
    });
    let h = tools_harness(&fal, vec![reference_model()]).await;
    let u = 933;
    open_reference(&h, u, "Предмет").await;
    let n = h.messages(u).len();
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    new_text(&h, u, n, "Метки [1]…[4]").await;
    h.text(u, "ru", "[1] на витрине");
    let refusal = h.wait_text(u, "Image too small").await;
    assert!(text_of(&refusal).contains("Провайдер отклонил запрос"), "{refusal}");
    assert!(h.photos(u).is_empty());
    let body = fal.last_submit_body().expect("submitted");
    assert!(body["prompt"].as_str().expect("prompt").starts_with("Reference images show a product"));
    assert_eq!(image_urls(&body).len(), 1, "one reference still goes as a list");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Release]);
    assert_eq!(h.balance(u).await, Credits(100));
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edit_album_reaches_fal_in_order_upright_small_and_without_exif() {
    let fal = FakeFal::start().await;
    let mut edit = tool("edit", Task::Edit, 10, "fal-ai/nano-banana/edit");
    edit.images = Some(ImageCount::Range { min: 1, max: 4 });
    edit.size_param = SizeParam::AspectRatio;
    edit.formats = vec![Format::Square];
    let h = tools_harness(&fal, vec![edit]).await;
    let u = 934;
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    // A photo with GPS EXIF, a plain one, and one stored sideways (2048×1536, orientation 6).
    let photos =
        ["photos/iphone6_8mp_gps.jpg", "photos/orientation/Landscape_1.jpg", "photos/canon_sx60_orient6_gpsifd.jpg"];
    album(&h, u, "edit-album", &photos, Some((1, "сделай коллаж")));
    h.wait_for(u, 60, "the edit", |_| h.photos(u).len() == 1).await;
    let body = fal.last_submit_body().expect("submitted");
    assert_eq!(body["prompt"], "сделай коллаж", "the caption on the second photo");
    let urls = image_urls(&body);
    assert_eq!(urls.len(), 3, "{body}");
    let sent: Vec<Vec<u8>> = urls.iter().map(data_uri_bytes).collect();
    for (i, bytes) in sent.iter().enumerate() {
        assert!(bytes.len() <= 4 * 1024 * 1024, "photo {i} is {} bytes", bytes.len());
        for (marker, payload) in jpeg_app_segments(bytes) {
            assert!(!payload.starts_with(b"Exif"), "photo {i} keeps an EXIF APP{}", marker - 0xE0);
            assert!(!payload.windows(3).any(|w| w == b"GPS"), "photo {i} keeps GPS in APP{}", marker - 0xE0);
        }
    }
    let dims: Vec<(u32, u32)> =
        sent.iter().map(|b| image::load_from_memory(b).expect("an image")).map(|i| (i.width(), i.height())).collect();
    assert_eq!(dims[1], (1800, 1200), "the plain photo second: {dims:?}");
    assert_eq!(dims[2], (1536, 2048), "the sideways photo last, upright: {dims:?}");
    assert!(dims[0].0 * dims[0].1 > 2_000_000 && dims[0] != dims[2], "the 8 MP photo first: {dims:?}");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fifth_reference_photo_is_refused_with_the_count_named() {
    let fal = FakeFal::start().await;
    let h = tools_harness(&fal, vec![reference_model()]).await;
    let u = 935;
    open_reference(&h, u, "Другое").await;
    let n = h.messages(u).len();
    let four = [
        "photos/orientation/Landscape_1.jpg",
        "photos/orientation/Landscape_2.jpg",
        "photos/orientation/Landscape_3.jpg",
        "photos/orientation/Landscape_4.jpg",
    ];
    album(&h, u, "four", &four, None);
    new_text(&h, u, n, "Метки [1]…[4]").await;
    let n = h.messages(u).len();
    h.photo(u, "ru", &testdata("photos/tiny_1x1.jpg"), None);
    let refusal = new_text(&h, u, n, "не больше").await;
    assert!(text_of(&refusal).contains("не больше 4 фото"), "the count is named: {refusal}");
    new_text(&h, u, n, "Метки [1]…[4]").await;
    h.text(u, "ru", "[4] и [1] вместе");
    h.wait_for(u, 30, "the picture", |_| h.photos(u).len() == 1).await;
    let body = fal.last_submit_body().expect("submitted");
    let sizes: Vec<(u32, u32)> =
        image_urls(&body).iter().map(data_uri_image).map(|i| (i.width(), i.height())).collect();
    assert_eq!(sizes.len(), 4, "the first four, not the fifth");
    assert!(!sizes.contains(&(1, 1)), "the 1×1 fifth photo stayed out: {sizes:?}");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_main_menu_shows_only_modes_with_a_model() {
    let fal = FakeFal::start().await;
    let base = fal.base_url();
    // Only a create model: no photo tools.
    let h = Harness::start(|d| {
        let mut c = test_config(d);
        c.providers.push(provider("fal", ProviderKind::Fal, &base));
        c.models.push(model("flux", "fal", 10));
        c
    })
    .await;
    let u = 936;
    h.text(u, "ru", "/start");
    let menu = new_buttons(&h, u, 0, "Баланс").await;
    let buttons = menu["reply_markup"].to_string();
    assert!(buttons.contains("Создать"), "{buttons}");
    assert!(!buttons.contains("Фото-инструменты"), "no tool model, no tools button: {buttons}");
    h.text(u, "ru", "/help");
    let help = h.wait_text(u, "Команды").await;
    assert!(!text_of(&help).contains("По референсам"), "{help}");
    h.assert_no_rejections();
    drop(h);

    // Only a reference model: the tools, no "Создать"; /help names the mode.
    let h = tools_harness(&fal, vec![reference_model()]).await;
    h.text(u, "ru", "/menu");
    let menu = new_buttons(&h, u, 0, "Баланс").await;
    let buttons = menu["reply_markup"].to_string();
    assert!(buttons.contains("Фото-инструменты") && !buttons.contains("Создать"), "{buttons}");
    h.text(u, "ru", "/help");
    let help = h.wait_text(u, "По референсам").await;
    assert!(text_of(&help).contains("[1]…[4]"), "{help}");
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sandbox_demo_serves_references() {
    let h = Harness::start(|d| test_config(d).with_demo()).await;
    let u = 937;
    open_reference(&h, u, "Человек").await;
    let n = h.messages(u).len();
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    new_text(&h, u, n, "Метки [1]…[4]").await;
    let n = h.messages(u).len();
    h.text(u, "ru", "[1] в кафе");
    let f = new_buttons(&h, u, n, "Квадрат").await;
    h.press(u, "ru", f["message_id"].as_i64().expect("id"), &Harness::button(&f, "Квадрат"));
    h.wait_for(u, 30, "the demo picture", |_| h.photos(u).len() == 1).await;
    let last = h.photos(u).pop().expect("result");
    assert!(text_of(&last).to_lowercase().contains("демо"), "labelled a demo: {last}");
    h.verify_clean().await;
    h.assert_no_rejections();
}
