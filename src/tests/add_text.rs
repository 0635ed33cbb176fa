//! "📝 Add text" end to end: menu button → photo → text → wishes or /skip → a local job through
//! the queue and the ledger → photo + document in the chat.

use super::harness::*;
use crate::domain::{ADD_TEXT_MODEL, Credits, JobStatus, UserId};
use crate::store::records::OpKind;
use image::GenericImageView;

/// Mean luma of rows `y0..y1` of an RGB image.
fn band_luma(img: &image::RgbImage, y0: u32, y1: u32) -> f64 {
    let mut sum = 0u64;
    for y in y0..y1 {
        for x in 0..img.width() {
            let [r, g, b] = img.get_pixel(x, y).0;
            sum += (299 * u64::from(r) + 587 * u64::from(g) + 114 * u64::from(b)) / 1000;
        }
    }
    sum as f64 / f64::from((y1 - y0) * img.width())
}

fn file_of(h: &Harness, msg: &serde_json::Value) -> Vec<u8> {
    let id = msg["document"]["file_id"]
        .as_str()
        .or_else(|| msg["photo"]["file_id"].as_str())
        .unwrap_or_else(|| panic!("no file in {msg}"));
    h.emu.file_bytes(id).expect("stored file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_text_flow_draws_the_caption_and_settles_the_price() {
    assert_eq!(crate::config::Config::default().billing.add_text_price, Credits::ZERO, "free unless configured");
    let h = Harness::start(|d| {
        let mut c = test_config(d);
        c.billing.add_text_price = Credits(7);
        c
    })
    .await;
    h.text(701, "ru", "/start");
    let menu = h.wait_for_buttons(701, "Добавить текст").await;
    h.press(701, "ru", menu["message_id"].as_i64().expect("id"), &Harness::button(&menu, "Добавить текст"));
    h.wait_text(701, "пришлите фото").await;
    h.text(701, "ru", "а где фото?");
    h.wait_text(701, "Пришлите фото (или картинку файлом)").await;
    let input = testdata("photos/orientation/Landscape_6.jpg");
    h.photo(701, "ru", &input, None);
    h.wait_text(701, "Теперь пришлите текст").await;
    h.text(701, "ru", "Привет, мир! 🔥\nвторая строка");
    h.wait_text(701, "Как оформить?").await;
    h.text(701, "ru", "крупный белый текст сверху на чёрной плашке 50% бантик");
    let unknown = h.wait_text(701, "Не понял").await;
    assert!(text_of(&unknown).contains("бантик") && !text_of(&unknown).contains("крупный"), "{unknown}");
    h.wait_for(701, 30, "photo + document", |_| h.photos(701).len() == 1 && h.documents(701).len() == 1).await;

    let photo = &h.photos(701)[0];
    assert!(text_of(photo).contains("Текст на фото"), "caption names the tool: {photo}");
    let doc = file_of(&h, &h.documents(701)[0]);
    assert!(!doc.windows(4).any(|w| w == b"Exif"), "no metadata in the result");
    let result = image::load_from_memory(&doc).expect("JPEG").to_rgb8();
    assert_eq!(result.dimensions(), (1800, 1200), "upright, full size");
    let shown = image::load_from_memory(&file_of(&h, photo)).expect("photo");
    assert_eq!(shown.dimensions(), (1800, 1200));
    // The caption went to the top on a black plate: the top band got darker, the bottom did not.
    let original =
        crate::imaging::decode(&std::fs::read(&input).expect("input"), &Default::default()).expect("decode").to_rgb8();
    let (top_before, top_after) = (band_luma(&original, 80, 200), band_luma(&result, 80, 200));
    let (low_before, low_after) = (band_luma(&original, 1000, 1150), band_luma(&result, 1000, 1150));
    assert!(top_after < top_before - 20.0, "plate at the top: {top_before} → {top_after}");
    assert!((low_after - low_before).abs() < 3.0, "bottom untouched: {low_before} → {low_after}");

    assert_eq!(kinds(&h.ledger(701).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!(h.balance(701).await, Credits(93), "priced by billing.add_text_price");
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    let job = jobs.iter().find(|j| j.user_id == UserId(701)).expect("job");
    assert_eq!((job.model_id.as_str(), job.status), (ADD_TEXT_MODEL, JobStatus::Succeeded));
    let lib = h.store().read(|rx| rx.find_library(UserId(701))).await.expect("library");
    assert_eq!((lib.len(), lib[0].kind.as_str()), (1, "add_text"));
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_text_takes_a_caption_skip_and_cancel() {
    let h = Harness::start(test_config).await;
    h.text(702, "en", "/start");
    let menu = h.wait_for_buttons(702, "Add text").await;
    let mid = menu["message_id"].as_i64().expect("id");
    let data = Harness::button(&menu, "Add text");
    // /cancel leaves the flow: a photo afterwards is not taken for it.
    h.press(702, "en", mid, &data);
    h.wait_text(702, "send me the photo").await;
    h.text(702, "en", "/cancel");
    h.wait_text(702, "Add text cancelled").await;

    h.press(702, "en", mid, &data);
    h.wait_for(702, 20, "second prompt", |m| {
        m.iter().filter(|x| text_of(x).contains("send me the photo")).count() == 2
    })
    .await;
    // The photo's caption is the text; /skip keeps the default style.
    h.photo(702, "en", &testdata("photos/alpha_dice_rgba.png"), Some("Hello 👋"));
    h.wait_text(702, "How should it look?").await;
    h.text(702, "en", "/skip");
    h.wait_for(702, 30, "photo + document", |_| h.photos(702).len() == 1 && h.documents(702).len() == 1).await;
    let doc = image::load_from_memory(&file_of(&h, &h.documents(702)[0])).expect("JPEG");
    assert_eq!(doc.dimensions(), (200, 150));
    assert!(!h.messages(702).iter().any(|m| text_of(m).contains("didn't understand")), "nothing unknown in /skip");
    assert_eq!(kinds(&h.ledger(702).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!(h.balance(702).await, Credits(100), "free by default");
    h.verify_clean().await;
    h.assert_no_rejections();
}
