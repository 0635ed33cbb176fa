//! The shape every flow builds on, end to end through the emulator: commands that are not
//! prompts, bans, the language switch, declared model inputs and options, and results of any
//! kind.

use super::fakes::fal::FakeFal;
use super::harness::*;
use crate::config::{ImageCount, ModelOption, OptionValue, ProviderKind};
use crate::domain::{Credits, MediaKind, Task, UserId};
use crate::store::records::OpKind;
use serde_json::{Value, json};

fn demo_config(dir: &std::path::Path) -> crate::config::Config {
    let mut c = test_config(dir);
    // The shipped currency: its Russian plural forms are part of what is tested here.
    c.billing.currency = crate::config::BillingConfig::default().currency;
    c.providers.push(provider("demo", ProviderKind::Demo, ""));
    c.models.push(model("demo", "demo", 10));
    c
}

/// No draft for the message, no job, no ledger row but the signup bonus.
async fn nothing_started(h: &Harness, user: i64, message_id: i64) {
    let draft = crate::bot::handlers::generate::draft_id(
        teloxide::types::ChatId(user),
        teloxide::types::MessageId(message_id as i32),
    );
    let store = h.store();
    let found = store.read(move |rx| rx.get_draft(draft)).await.expect("draft");
    assert!(found.is_none(), "no draft for message {message_id}: {found:?}");
    let jobs = store.read(|rx| rx.find_jobs()).await.expect("jobs");
    assert!(jobs.iter().all(|j| j.user_id != UserId(user)), "no job: {jobs:?}");
    assert_eq!(kinds(&h.ledger(user).await), [OpKind::SignupBonus], "no hold");
}

/// The id of the user's own newest message (the one just sent).
fn last_user_message(h: &Harness, chat: i64) -> i64 {
    h.messages(chat).iter().rev().find(|m| m["from_bot"] == false).and_then(|m| m["message_id"].as_i64()).expect("sent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_commands_are_never_prompts() {
    let h = Harness::start(demo_config).await;
    let ru = 601;
    h.text(ru, "ru", "/start");
    h.wait_text(ru, "бонус").await;
    for (i, cmd) in ["/statuss 12", "/foo", "/add_balances 500"].into_iter().enumerate() {
        h.text(ru, "ru", cmd);
        let answer = h
            .wait_for(ru, 20, "the unknown-command answer", |m| {
                m.iter().filter(|x| x["from_bot"] == true && text_of(x).contains("Я не знаю команду")).count() > i
            })
            .await;
        let last = answer.iter().rev().find(|x| x["from_bot"] == true).expect("answer");
        let word = cmd.split(' ').next().unwrap_or_default();
        assert!(text_of(last).contains(word) && text_of(last).contains("/help — как пользоваться ботом"), "{last}");
        assert!(last["reply_markup"].is_null(), "no model buttons: {last}");
        nothing_started(&h, ru, last_user_message(&h, ru) - 0).await;
    }
    // The user messages were /status etc.: the drafts that would have been made from them.
    for m in h.messages(ru).iter().filter(|m| m["from_bot"] == false) {
        nothing_started(&h, ru, m["message_id"].as_i64().expect("id")).await;
    }
    // Help lists the commands and the flows that have a model: no edit model here.
    h.text(ru, "ru", "/help");
    let help = h.wait_text(ru, "Что я умею").await;
    assert!(text_of(&help).contains("🎨 Создать") && text_of(&help).contains("/language — язык интерфейса"), "{help}");
    assert!(!text_of(&help).contains("✏️ Изменить"), "no edit model, no edit flow: {help}");
    // /new is /create; /cancel outside a flow says there is nothing to cancel.
    h.text(ru, "ru", "/new");
    h.wait_text(ru, "Пришлите описание картинки").await;
    h.text(ru, "ru", "/cancel");
    h.wait_text(ru, "Отменять нечего").await;
    let en = 602;
    h.text(en, "en", "/foo");
    h.wait_text(en, "I don't know the command /foo").await;
    nothing_started(&h, en, last_user_message(&h, en)).await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_command_menu_is_registered_in_russian_too() {
    let h = Harness::start(demo_config).await;
    for (user, lang, help) in [(620, "ru", "как пользоваться ботом"), (621, "en", "how to use the bot")]
    {
        h.text(user, lang, "/ping");
        h.wait_for(user, 20, "pong", |m| m.iter().any(|x| text_of(x).contains("🏓"))).await;
        let menu = h.emu.chat_status(user).commands;
        assert!(menu.iter().any(|c| c["command"] == "help" && c["description"] == help), "{lang}: {menu:?}");
        assert!(menu.iter().any(|c| c["command"] == "language"), "{menu:?}");
        assert!(!menu.iter().any(|c| c["command"] == "skip"), "hidden commands stay hidden: {menu:?}");
    }
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_ends_any_flow() {
    let h = Harness::start(demo_config).await;
    let u = 603;
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    let menu = h.wait_for_buttons(u, "Добавить текст").await;
    h.press(u, "ru", menu["message_id"].as_i64().expect("id"), &Harness::button(&menu, "Добавить текст"));
    h.wait_text(u, "пришлите фото").await;
    h.text(u, "ru", "/cancel");
    h.wait_text(u, "Добавление текста отменено").await;
    // Out of the flow, a text is a prompt again.
    h.text(u, "ru", "маяк на закате");
    h.wait_for_buttons(u, "Квадрат").await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_banned_user_gets_one_answer_and_nothing_else() {
    let h = Harness::start(demo_config).await;
    let u = 604;
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    // A keyboard made before the ban, pressed after it.
    h.text(u, "ru", "кот в сапогах");
    let formats = h.wait_for_buttons(u, "Квадрат").await;
    let admin = admin_service(&h);
    assert!(admin.set_banned(crate::admin::Actor::Cli, UserId(u), true).await.expect("ban"));

    h.text(u, "ru", "собака в шляпе");
    h.wait_text(u, "Доступ приостановлен").await;
    h.press(u, "ru", formats["message_id"].as_i64().expect("id"), &Harness::button(&formats, "Квадрат"));
    h.push(json!({"user": {"id": u, "first_name": "User604", "language_code": "ru"}, "inline_query": "кот"}));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (callback, inline) = loop {
        let c = h.emu.callback_answers().into_iter().find(|a| a.chat_id == u);
        let i = h.emu.inline_answers().into_iter().last();
        if let (Some(c), Some(i)) = (c, i) {
            break (c, i);
        }
        assert!(std::time::Instant::now() < deadline, "no answers to the press and the inline query");
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    };
    assert!(callback.text.as_deref().is_some_and(|t| t.contains("Доступ приостановлен")) && callback.show_alert);
    assert_eq!(inline.results, json!([]), "no pictures for a banned user");
    assert!(inline.button.as_ref().is_some_and(|b| b["text"].as_str().unwrap_or("").contains("Доступ")), "{inline:?}");
    // The press would have started a job: nothing was held, nothing queued, no photo.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    assert!(jobs.is_empty(), "{jobs:?}");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus]);
    let suspended = h.bot_messages(u).iter().filter(|m| text_of(m).contains("Доступ приостановлен")).count();
    assert_eq!(suspended, 1, "one message answer for one message");
    assert!(h.photos(u).is_empty());

    // Unbanned, the same press works again.
    admin.set_banned(crate::admin::Actor::Cli, UserId(u), false).await.expect("unban");
    h.press(u, "ru", formats["message_id"].as_i64().expect("id"), &Harness::button(&formats, "Квадрат"));
    h.wait_for(u, 30, "the picture", |_| h.photos(u).len() == 1).await;
    h.verify_clean().await;
    h.assert_no_rejections();
}

fn admin_service(h: &Harness) -> crate::admin::Admin {
    let catalog = crate::catalog::Catalog::open(h.store(), &h.config).expect("catalog");
    crate::admin::Admin::new(h.store(), catalog, &h.config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_language_switch_is_kept_per_user() {
    let h = Harness::start(demo_config).await;
    let u = 605;
    h.text(u, "en", "/start");
    h.wait_text(u, "Welcome bonus").await;
    h.text(u, "en", "/language");
    let choose = h.wait_for_buttons(u, "Русский").await;
    h.press(u, "en", choose["message_id"].as_i64().expect("id"), &Harness::button(&choose, "Русский"));
    h.wait_text(u, "Теперь говорю по-русски").await;
    // The client still says "en"; the choice wins, also for what the job engine sends.
    h.text(u, "en", "/balance");
    h.wait_text(u, "Баланс: 100 кредитов").await;
    h.text(u, "en", "маяк | model=demo | size=640x640");
    h.wait_text(u, "Готово за").await;
    h.assert_no_rejections();
}

fn edit_config(dir: &std::path::Path) -> crate::config::Config {
    let mut c = demo_config(dir);
    let mut multi = model("multi", "demo", 20);
    multi.display_name = "Коллаж".into();
    multi.task = Task::Edit;
    multi.images = Some(ImageCount::Range { min: 2, max: 4 });
    c.models.push(multi);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_taking_two_to_four_photos_is_offered_once_the_second_arrives() {
    let h = Harness::start(edit_config).await;
    let u = 606;
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    let photo = testdata("photos/orientation/Landscape_1.jpg");
    h.photo(u, "ru", &photo, Some("объедини в коллаж"));
    let first = h.wait_text(u, "нужно больше фото").await;
    assert!(text_of(&first).contains("ещё 1 фото"), "{first}");
    assert!(!h.messages(u).iter().any(|m| m.to_string().contains("Коллаж")), "not offered yet");
    assert!(h.store().read(|rx| rx.find_jobs()).await.expect("jobs").is_empty());
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_6.jpg"), None);
    // The only model that fits is picked; two photos have no one size, so its formats are asked.
    let formats = h.wait_for_buttons(u, "Квадрат").await;
    assert!(text_of(&formats).contains("Коллаж, 20 кредитов"), "{formats}");
    h.press(u, "ru", formats["message_id"].as_i64().expect("id"), &Harness::button(&formats, "Квадрат"));
    h.wait_for(u, 30, "the edit", |_| h.photos(u).len() == 1).await;
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    let crate::store::records::JobPayload::Generate { inputs, prompt, .. } = &jobs[0].payload else {
        panic!("an edit job: {jobs:?}")
    };
    assert_eq!((inputs.len(), prompt.as_str(), jobs[0].model_id.as_str()), (2, "объедини в коллаж", "multi"));
    assert_eq!(h.balance(u).await, Credits(80));
    // The set was used: the next photo starts a new one.
    h.photo(u, "ru", &photo, Some("ещё раз"));
    h.wait_for(u, 20, "a new set", |m| {
        m.iter().filter(|x| x["from_bot"] == true && text_of(x).contains("нужно больше фото")).count() == 2
    })
    .await;
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn declared_options_are_asked_and_priced() {
    let h = Harness::start(|d| {
        let mut c = demo_config(d);
        c.models[0].formats = vec![crate::domain::Format::Square];
        c.models[0].options = vec![ModelOption {
            name: "duration".into(),
            field: None,
            values: [(5, 5), (10, 10), (15, 15)]
                .into_iter()
                .map(|(v, p)| OptionValue { value: v.into(), label: Some(format!("{v} с")), price: Credits(p) })
                .collect(),
        }];
        c
    })
    .await;
    let u = 607;
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    h.text(u, "ru", "волны на берегу");
    let ask = h.wait_for_buttons(u, "10 с").await;
    assert!(text_of(&ask).contains("длительность"), "{ask}");
    assert!(ask["reply_markup"].to_string().contains("10 с · +10 кредитов"), "{ask}");
    h.press(u, "ru", ask["message_id"].as_i64().expect("id"), &Harness::button(&ask, "10 с"));
    h.wait_for(u, 30, "the result", |_| h.photos(u).len() == 1).await;
    let ops = h.ledger(u).await;
    let hold = ops.iter().find(|o| o.kind == OpKind::Hold).expect("hold");
    assert_eq!(hold.amount, Credits(20), "base 10 + 10 for the second value");
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    let crate::store::records::JobPayload::Generate { options, .. } = &jobs[0].payload else { panic!("{jobs:?}") };
    assert_eq!(options.get("duration"), Some(&1));
    h.verify_clean().await;
    h.assert_no_rejections();
}

async fn fal_harness(fal: &FakeFal) -> Harness {
    let base = fal.base_url();
    Harness::start(move |d| {
        let mut c = test_config(d);
        c.providers.push(provider("fal", ProviderKind::Fal, &base));
        c.models.push(model("flux", "fal", 30));
        c
    })
    .await
}

/// A minimal MPEG-4 file: an `ftyp` box and an empty `mdat`.
fn tiny_mp4() -> Vec<u8> {
    let mut b = vec![0, 0, 0, 0x18];
    b.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2");
    b.extend_from_slice(&[0, 0, 0, 8]);
    b.extend_from_slice(b"mdat");
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_mp4_result_is_stored_and_sent_as_a_video() {
    let fal = FakeFal::start().await;
    fal.set_result_file(tiny_mp4(), "video/mp4");
    let h = fal_harness(&fal).await;
    let u = 608;
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    h.text(u, "ru", "котёнок играет | model=flux | size=640x640");
    let msgs = h.wait_for(u, 30, "a video", |m| m.iter().any(|x| !x["video"].is_null())).await;
    let video = msgs.iter().find(|x| !x["video"].is_null()).expect("video");
    assert!(video["reply_markup"].to_string().contains("Создать ещё"), "the actions are under it: {video}");
    let sent = h.emu.file_bytes(video["video"]["file_id"].as_str().expect("file id")).expect("bytes");
    assert_eq!(sent, tiny_mp4());
    assert!(h.photos(u).is_empty() && h.documents(u).is_empty(), "one message, by sendVideo");
    // The file_id is recorded once Telegram's answer is back: the message can show up in the
    // chat a moment before that write.
    let file_id = video["video"]["file_id"].as_str().map(str::to_string);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lib = loop {
        let lib = h.store().read(move |rx| rx.find_library(UserId(u))).await.expect("library");
        if lib[0].document_file_id == file_id || std::time::Instant::now() > deadline {
            break lib;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    };
    assert_eq!((lib[0].media, lib[0].ext.as_str(), lib[0].mime.as_str()), (MediaKind::Video, "mp4", "video/mp4"));
    assert_eq!(lib[0].document_file_id, file_id, "its file_id is kept");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transparent_png_result_keeps_its_alpha_in_the_document() {
    let png = std::fs::read(testdata("photos/alpha_dice_rgba.png")).expect("testdata");
    let fal = FakeFal::start().await;
    fal.set_result_file(png.clone(), "image/png");
    let h = fal_harness(&fal).await;
    let u = 609;
    h.text(u, "en", "/start");
    h.wait_text(u, "Welcome").await;
    h.text(u, "en", "dice | model=flux | size=640x640");
    h.wait_for(u, 30, "photo and document", |_| h.photos(u).len() == 1 && h.documents(u).len() == 1).await;
    let doc = &h.documents(u)[0];
    assert_eq!(doc["document"]["mime_type"], "image/png", "{doc}");
    let bytes = h.emu.file_bytes(doc["document"]["file_id"].as_str().expect("id")).expect("bytes");
    let decoded = image::load_from_memory(&bytes).expect("a PNG").to_rgba8();
    assert!(decoded.pixels().any(|p| p.0[3] < 255), "transparent pixels survive in the document");
    let lib = h.store().read(move |rx| rx.find_library(UserId(u))).await.expect("library");
    assert_eq!(lib[0].media, MediaKind::Image);
    h.verify_clean().await;
    h.assert_no_rejections();
}

/// Stopping an idle bot never waits out the 25 s shutdown budget (issue 17, item 27): the
/// dispatcher used to be told to stop in a loop that never ended once the poller had already
/// closed its stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_bot_stops_at_once_every_time() {
    let mut h = Harness::start(demo_config).await;
    for round in 0..5 {
        h.text(610, "en", "/ping");
        h.wait_for(610, 20, "pong", |m| m.iter().filter(|x| text_of(x).contains("pong")).count() > round).await;
        let t = std::time::Instant::now();
        h.stop_app().await;
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "round {round}: stopped in {:?}", t.elapsed());
        h.start_app().await;
    }
    h.assert_no_rejections();
}

/// An album is one input set: three photos with the caption on the second reach the model as
/// three inputs in order, with one answer after the last photo.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_album_is_one_input_set_in_order() {
    let h = Harness::start(|d| {
        let mut c = edit_config(d);
        c.models.last_mut().map(|m| m.formats = vec![crate::domain::Format::Square]);
        c
    })
    .await;
    let u = 611;
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    let photos = ["photos/orientation/Landscape_1.jpg", "photos/tiny_1x1.jpg", "photos/orientation/Landscape_6.jpg"];
    for (i, p) in photos.iter().enumerate() {
        let mut v = json!({"user": {"id": u, "first_name": "U", "language_code": "ru"},
            "photo_base64": base64_file(&testdata(p)), "media_group_id": "album-1"});
        if i == 1 {
            v["caption"] = json!("сделай коллаж");
        }
        h.push(v);
    }
    h.wait_for(u, 30, "the edit", |_| h.photos(u).len() == 1).await;
    // The welcome, then one message for the album (its receipt, turned into the progress
    // message), then the result: no answer per photo.
    let texts: Vec<Value> = h.bot_messages(u).into_iter().filter(|m| m["photo"].is_null()).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[1]["reply_markup"].to_string().contains("Отменить"), "{texts:?}");
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    let crate::store::records::JobPayload::Generate { inputs, prompt, .. } = &jobs[0].payload else { panic!() };
    let expected: Vec<String> = photos
        .iter()
        .map(|p| {
            let bytes = std::fs::read(testdata(p)).expect("photo");
            let clean = crate::imaging::strip_metadata(&bytes, &crate::imaging::Limits::default()).expect("strip");
            crate::imaging::sha256_hex(&clean)
        })
        .collect();
    assert_eq!(inputs, &expected, "the three photos, in the order sent");
    assert_eq!(prompt, "сделай коллаж");
    h.verify_clean().await;
    h.assert_no_rejections();
}
