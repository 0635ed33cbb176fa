//! End-to-end tests: the router on 127.0.0.1:0, driven by teloxide (the way the bot will use
//! it) and by raw HTTP (to send what teloxide never would).

use super::spec::Spec;
use super::*;
use serde_json::json;
use std::time::{Duration, Instant};
use teloxide::ApiError as TgApiError;
use teloxide::RequestError;
use teloxide::net::Download;
use teloxide::prelude::*;
use teloxide::types::{FileId, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, ParseMode, UpdateKind};

const USER: i64 = 42;

struct Env {
    emu: Emulator,
    base: String,
    http: reqwest::Client,
}

async fn start() -> Env {
    let emu = Emulator::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = emu.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Env { emu, base: format!("http://{addr}/"), http: reqwest::Client::new() }
}

impl Env {
    fn bot(&self) -> Bot {
        Bot::new("123:TEST").set_api_url(self.base.parse().expect("url"))
    }

    /// A user writes `text` (making the chat known); returns the update id.
    fn say(&self, id: i64, text: &str) -> i64 {
        self.emu
            .push_update(ControlUpdate { user: user(id), text: Some(text.into()), ..ControlUpdate::default() })
            .expect("push text")
    }

    /// A raw JSON Bot API call: (HTTP status, body).
    async fn raw(&self, method: &str, body: Value) -> (u16, Value) {
        let url = format!("{}bot123:TEST/{method}", self.base);
        let r = self.http.post(url).json(&body).send().await.expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }

    async fn raw_form(&self, method: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let url = format!("{}bot123:TEST/{method}", self.base);
        let r = self.http.post(url).form(form).send().await.expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json body"))
    }

    async fn control_get(&self, path: &str) -> Value {
        let r = self.http.get(format!("{}{path}", self.base)).send().await.expect("get");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.expect("json")
    }

    async fn control_post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.http.post(format!("{}{path}", self.base)).json(&body).send().await.expect("post");
        let status = r.status().as_u16();
        (status, r.json().await.expect("json"))
    }

    fn last_rejection(&self) -> Rejection {
        self.emu.rejections().last().cloned().expect("a rejection was recorded")
    }
}

fn user(id: i64) -> ControlUser {
    ControlUser {
        id,
        first_name: "Tess".into(),
        username: Some("tess".into()),
        language_code: Some("en".into()),
        ..ControlUser::default()
    }
}

/// A test photo as (base64 for the control API, bytes).
fn test_photo(name: &str) -> (String, Vec<u8>) {
    use base64::Engine;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/photos").join(name);
    let bytes = std::fs::read(&path).expect("test photo");
    (base64::engine::general_purpose::STANDARD.encode(&bytes), bytes)
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::new(width, height);
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).expect("encode png");
    out.into_inner()
}

fn api_error(e: RequestError) -> TgApiError {
    match e {
        RequestError::Api(a) => a,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn teloxide_talks_to_the_emulator() {
    let env = start().await;
    let bot = env.bot();

    let me = bot.get_me().await.expect("getMe");
    assert_eq!(me.id.0, 123, "bot id comes from the token");
    assert_eq!(me.username(), state::BOT_USERNAME);

    bot.set_my_commands([teloxide::types::BotCommand::new("start", "Start")]).await.expect("setMyCommands");
    let cmds = bot.get_my_commands().await.expect("getMyCommands");
    assert_eq!(cmds[0].command, "start");

    env.say(USER, "/start now");
    let updates = bot.get_updates().await.expect("getUpdates");
    assert_eq!(updates.len(), 1);
    let UpdateKind::Message(m) = &updates[0].kind else { panic!("not a message: {:?}", updates[0]) };
    assert_eq!(m.text(), Some("/start now"));
    assert_eq!(m.from.as_ref().map(|u| u.id.0), Some(USER as u64));
    let entities = m.entities().expect("command entity");
    assert_eq!((entities[0].offset, entities[0].length), (0, 6));

    let kb = InlineKeyboardMarkup::new([[
        InlineKeyboardButton::callback("Go", "go:1"),
        InlineKeyboardButton::url("Docs", "https://example.com".parse().expect("url")),
    ]]);
    let sent = bot
        .send_message(ChatId(USER), "<b>Hello</b> there")
        .parse_mode(ParseMode::Html)
        .reply_markup(kb.clone())
        .await
        .expect("sendMessage");
    assert_eq!(sent.text(), Some("Hello there"), "parse_mode is applied");
    assert_eq!(sent.reply_markup(), Some(&kb));
    assert_eq!(sent.from.as_ref().map(|u| u.id.0), Some(123));

    bot.send_chat_action(ChatId(USER), teloxide::types::ChatAction::Typing).await.expect("action");

    let edited = bot
        .edit_message_text(ChatId(USER), sent.id, "Working… 50%")
        .reply_markup(kb.clone())
        .await
        .expect("editMessageText");
    assert!(edited.edit_date().is_some());
    assert_eq!(edited.text(), Some("Working… 50%"));
    let same = bot
        .edit_message_text(ChatId(USER), sent.id, "Working… 50%")
        .reply_markup(kb.clone())
        .await
        .expect_err("unchanged edit");
    assert_eq!(api_error(same), TgApiError::MessageNotModified);

    // A user presses the button; the bot answers the callback.
    env.emu
        .push_update(ControlUpdate {
            user: user(USER),
            callback_data: Some("go:1".into()),
            message_id: Some(sent.id.0.into()),
            ..ControlUpdate::default()
        })
        .expect("push callback");
    let offset = updates[0].id.0 as i32 + 1;
    let updates = bot.get_updates().offset(offset).await.expect("getUpdates");
    let UpdateKind::CallbackQuery(q) = &updates[0].kind else { panic!("not a callback") };
    assert_eq!(q.data.as_deref(), Some("go:1"));
    assert_eq!(q.regular_message().map(|m| m.id), Some(sent.id));
    bot.answer_callback_query(q.id.clone()).text("Started").await.expect("answer");
    let answers = env.emu.callback_answers();
    assert_eq!(answers[0].text.as_deref(), Some("Started"));
    assert_eq!(answers[0].message_id, i64::from(sent.id.0));
    let again = bot.answer_callback_query(q.id.clone()).await.expect_err("second answer");
    assert_eq!(api_error(again), TgApiError::InvalidQueryId);

    // Upload a photo, then download it back through getFile.
    let (_, jpeg) = test_photo("canon_sx60_orient6_gpsifd.jpg");
    let photo_msg = bot
        .send_photo(ChatId(USER), InputFile::memory(jpeg.clone()).file_name("result.jpg"))
        .caption("Your image")
        .await
        .expect("sendPhoto");
    let sizes = photo_msg.photo().expect("photo sizes");
    let largest = sizes.last().expect("largest");
    assert_eq!((largest.width, largest.height), (2048, 1536));
    assert!(sizes.len() == 2 && sizes[0].width <= 320, "a thumbnail comes first: {sizes:?}");
    assert_eq!(photo_msg.caption(), Some("Your image"));
    let file = bot.get_file(largest.file.id.clone()).await.expect("getFile");
    let mut downloaded = Vec::new();
    bot.download_file(&file.path, &mut downloaded).await.expect("download");
    assert_eq!(downloaded, jpeg);
    assert_eq!(env.emu.file_bytes(&largest.file.id.0), Some(jpeg.clone()));

    // Re-send by file_id: no upload, flagged in the transcript.
    let resent =
        bot.send_photo(ChatId(USER), InputFile::file_id(largest.file.id.clone())).await.expect("re-send by file_id");
    assert_eq!(resent.photo().and_then(|p| p.last()).map(|p| p.file.id.clone()), Some(largest.file.id.clone()));

    let doc = bot
        .send_document(ChatId(USER), InputFile::memory(&b"%PDF-1.4 tiny"[..]).file_name("a.pdf"))
        .await
        .expect("sendDocument");
    let d = doc.document().expect("document");
    assert_eq!(d.file_name.as_deref(), Some("a.pdf"));
    assert_eq!(d.mime_type.as_ref().map(|m| m.essence_str().to_owned()).as_deref(), Some("application/pdf"));

    let cap = bot.edit_message_caption(ChatId(USER), photo_msg.id).caption("Done").await.expect("caption");
    assert_eq!(cap.caption(), Some("Done"));
    bot.edit_message_reply_markup(ChatId(USER), sent.id).await.expect("drop keyboard");
    bot.delete_message(ChatId(USER), doc.id).await.expect("delete");
    let gone = bot.delete_message(ChatId(USER), doc.id).await.expect_err("twice");
    assert_eq!(api_error(gone), TgApiError::MessageToDeleteNotFound);

    let transcript = env.emu.messages(USER);
    let ids: Vec<i64> = transcript.iter().map(|m| m.message_id).collect();
    assert!(!ids.contains(&i64::from(doc.id.0)), "deleted message is gone");
    let first_bot = transcript.iter().find(|m| m.from_bot).expect("bot message");
    assert_eq!(first_bot.edit_count, 2, "text edit + keyboard removal");
    assert_eq!(first_bot.reply_markup, None);
    let by_id = transcript.iter().filter(|m| m.sent_by_file_id).count();
    assert_eq!(by_id, 1);
    assert!(!transcript[0].from_bot && transcript[0].text.as_deref() == Some("/start now"));

    // Only the two deliberate mistakes above were rejections; "not modified" is not one.
    let reasons: Vec<String> = env.emu.rejections().into_iter().map(|r| r.reason).collect();
    assert_eq!(
        reasons,
        vec![
            "Bad Request: query is too old and response timeout expired or query id is invalid",
            "Bad Request: message to delete not found",
        ]
    );
    let calls = env.emu.calls();
    assert!(calls.iter().any(|c| c.method == "editMessageText" && c.status == 400));
    assert!(calls.iter().all(|c| !c.during_flood_wait));
}

#[tokio::test]
async fn spec_violations_are_rejected_and_recorded() {
    let env = start().await;
    env.say(USER, "hi");

    let (status, body) = env.raw("sendMessagee", json!({"chat_id": USER, "text": "x"})).await;
    assert_eq!((status, body["ok"].clone()), (400, json!(false)));
    assert_eq!(env.last_rejection().method, "sendMessagee");

    let (status, body) = env.raw("sendMessage", json!({"chat_id": USER, "text": "x", "colour": 1})).await;
    assert_eq!(status, 400);
    assert!(body["description"].as_str().expect("desc").contains("\"colour\""), "{body}");
    assert_eq!(env.last_rejection().method, "sendMessage");
    assert!(env.last_rejection().body.contains("colour"));

    let (status, _) = env.raw("sendMessage", json!({"chat_id": USER})).await;
    assert_eq!(status, 400);
    assert!(env.last_rejection().reason.contains("\"text\" is required"), "{:?}", env.last_rejection());

    let (status, _) = env.raw("sendMessage", json!({"chat_id": true, "text": "x"})).await;
    assert_eq!(status, 400);
    assert!(env.last_rejection().reason.contains("chat_id must be Integer or String"));

    let (status, _) =
        env.raw_form("sendMessage", &[("chat_id", "42"), ("text", "x"), ("disable_notification", "maybe")]).await;
    assert_eq!(status, 400);
    assert!(env.last_rejection().reason.contains("disable_notification"));
    let (status, _) =
        env.raw_form("sendMessage", &[("chat_id", "42"), ("text", "form ok"), ("disable_notification", "true")]).await;
    assert_eq!(status, 200, "form values are parsed like Telegram does");

    let nested = json!({"inline_keyboard": [[{"text": "a", "callback_data": "b", "colour": "red"}]]});
    let (status, _) = env.raw("sendMessage", json!({"chat_id": USER, "text": "x", "reply_markup": nested})).await;
    assert_eq!(status, 400);
    let r = env.last_rejection().reason;
    assert!(r.contains("colour") && r.contains("InlineKeyboardButton"), "{r}");

    let wrong_scope = json!({"commands": [{"command": "a", "description": "b"}], "scope": {"type": "chat"}});
    let (status, _) = env.raw("setMyCommands", wrong_scope).await;
    assert_eq!(status, 400, "abstract BotCommandScope: the chat variant needs chat_id");

    let kb = json!({"inline_keyboard": [[{"text": "a", "callback_data": "x".repeat(65)}]]});
    let (status, body) = env.raw("sendMessage", json!({"chat_id": USER, "text": "x", "reply_markup": kb})).await;
    assert_eq!((status, body["description"].clone()), (400, json!("Bad Request: BUTTON_DATA_INVALID")));

    let (status, body) = env.raw("sendMessage", json!({"chat_id": USER, "text": "x".repeat(4097)})).await;
    assert_eq!((status, body["description"].clone()), (400, json!("Bad Request: message is too long")));
    let (status, _) = env.raw("sendMessage", json!({"chat_id": USER, "text": "я".repeat(4096)})).await;
    assert_eq!(status, 200, "4096 characters (not bytes) is fine");

    let (status, _) = env.raw("sendMessage", json!({"chat_id": 999, "text": "x"})).await;
    assert_eq!(status, 400);
    assert_eq!(env.last_rejection().reason, "Bad Request: chat not found");

    let (status, _) = env.raw("editMessageText", json!({"chat_id": USER, "message_id": 777, "text": "x"})).await;
    assert_eq!(status, 400);
    assert_eq!(env.last_rejection().reason, "Bad Request: message to edit not found");

    let (status, _) = env.raw("sendMessage", json!({"chat_id": USER, "text": "a < b", "parse_mode": "HTML"})).await;
    assert_eq!(status, 400);
    assert!(env.last_rejection().reason.starts_with("Bad Request: can't parse entities"));

    let (status, body) = env.raw("sendPhoto", json!({"chat_id": USER, "photo": "https://example.com/a.jpg"})).await;
    assert_eq!((status, body["description"].clone()), (400, json!("Bad Request: failed to get HTTP URL content")));

    let (status, _) = env.raw("sendChatAction", json!({"chat_id": USER, "action": "dancing"})).await;
    assert_eq!(status, 400);

    let (status, _) = env.raw("getChatMemberCount", json!({"chat_id": USER})).await;
    assert_eq!(status, 400);
    assert!(env.last_rejection().reason.contains("does not emulate"));

    // Oversized and extreme photos, through teloxide's multipart upload.
    let bot = env.bot();
    for (w, h) in [(10_001, 20), (2100, 100)] {
        let err = bot
            .send_photo(ChatId(USER), InputFile::memory(png(w, h)).file_name("wide.png"))
            .await
            .expect_err("bad dimensions");
        assert!(matches!(api_error(err), TgApiError::Unknown(ref s) if s == "Bad Request: PHOTO_INVALID_DIMENSIONS"));
    }
    let err = bot
        .send_photo(ChatId(USER), InputFile::memory(&b"not an image"[..]).file_name("x.jpg"))
        .await
        .expect_err("not an image");
    assert_eq!(api_error(err), TgApiError::ImageProcessFailed);
    let ok = bot.send_photo(ChatId(USER), InputFile::memory(png(400, 20)).file_name("ok.png")).await;
    assert!(ok.is_ok(), "ratio 20 is allowed: {ok:?}");

    let all = env.emu.rejections();
    assert_eq!(all.len(), 18, "{all:#?}");
    assert!(all.iter().all(|r| r.status == 400 && r.at_ms > 0));
    let calls = env.emu.calls();
    assert_eq!(calls.iter().filter(|c| c.status == 400).count(), 18);
    assert_eq!(calls.len(), 21);

    let over_http = env.control_get("emulator/control/rejections").await;
    assert_eq!(over_http.as_array().map(Vec::len), Some(18));
}

#[tokio::test]
async fn emulator_output_conforms_to_the_spec() {
    let env = start().await;
    let spec = Spec::embedded().expect("spec");
    let (b64, _) = test_photo("alpha_dice_rgba.png");
    env.say(USER, "/start");
    env.emu
        .push_update(ControlUpdate {
            user: user(USER),
            photo_base64: Some(b64),
            caption: Some("c".into()),
            ..ControlUpdate::default()
        })
        .expect("photo");
    let kb = json!({"inline_keyboard": [[{"text": "a", "callback_data": "b"}]]});
    let (_, sent) = env
        .raw("sendMessage", json!({"chat_id": USER, "text": "*hi*", "parse_mode": "MarkdownV2", "reply_markup": kb, "reply_parameters": {"message_id": 1}}))
        .await;
    let message = &sent["result"];
    spec.check_named(message, "Message").expect("Message matches the spec");
    assert_eq!(message["entities"][0]["type"], "bold");
    assert_eq!(message["reply_to_message"]["message_id"], 1);
    env.emu
        .push_update(ControlUpdate {
            user: user(USER),
            callback_data: Some("b".into()),
            message_id: message["message_id"].as_i64(),
            ..ControlUpdate::default()
        })
        .expect("callback");
    env.emu
        .push_update(ControlUpdate { user: user(USER), inline_query: Some("cats".into()), ..ControlUpdate::default() })
        .expect("inline");
    let (_, updates) = env.raw("getUpdates", json!({})).await;
    let updates = updates["result"].as_array().expect("updates").clone();
    assert_eq!(updates.len(), 4);
    for u in &updates {
        spec.check_named(u, "Update").expect("Update matches the spec");
    }
    let (_, me) = env.raw("getMe", json!({})).await;
    spec.check_named(&me["result"], "User").expect("User");
    let file_id = updates[1]["message"]["photo"][0]["file_id"].as_str().expect("file id");
    let (_, file) = env.raw("getFile", json!({"file_id": file_id})).await;
    spec.check_named(&file["result"], "File").expect("File");
    let (_, info) = env.raw("getWebhookInfo", json!({})).await;
    spec.check_named(&info["result"], "WebhookInfo").expect("WebhookInfo");

    let inline_id = updates[3]["inline_query"]["id"].as_str().expect("inline id");
    let results =
        json!([{"type": "article", "id": "1", "title": "Cats", "input_message_content": {"message_text": "meow"}}]);
    let (status, _) = env.raw("answerInlineQuery", json!({"inline_query_id": inline_id, "results": results})).await;
    assert_eq!(status, 200);
    let bad = json!([{"type": "article", "id": "1", "title": "Cats"}]);
    let (status, body) = env.raw("answerInlineQuery", json!({"inline_query_id": inline_id, "results": bad})).await;
    assert_eq!(status, 400, "article without input_message_content: {body}");
    assert_eq!(env.emu.inline_answers()[0].results, results);
}

#[tokio::test]
async fn long_poll_wakes_on_push_and_offset_confirms() {
    let env = start().await;
    let bot = env.bot();

    let started = Instant::now();
    let empty = bot.get_updates().timeout(1).await.expect("empty poll");
    assert!(empty.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900), "waited for the timeout");

    let poller = {
        let bot = bot.clone();
        tokio::spawn(async move { bot.get_updates().timeout(10).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pushed_at = Instant::now();
    let id1 = env.say(USER, "one");
    let got = poller.await.expect("join").expect("poll");
    assert!(pushed_at.elapsed() < Duration::from_secs(2), "woken by the push, not the timeout");
    assert_eq!(got.len(), 1);
    assert_eq!(i64::from(got[0].id.0), id1);

    let id2 = env.say(USER, "two");
    let id3 = env.say(USER, "three");
    let all = bot.get_updates().await.expect("unconfirmed stay");
    assert_eq!(all.iter().map(|u| i64::from(u.id.0)).collect::<Vec<_>>(), vec![id1, id2, id3]);
    let rest = bot.get_updates().offset(id2 as i32).await.expect("offset");
    assert_eq!(rest.len(), 2, "offset confirms updates below it");
    let limited = bot.get_updates().offset(id2 as i32).limit(1).await.expect("limit");
    assert_eq!(limited.len(), 1);
    let none = bot.get_updates().offset(id3 as i32 + 1).await.expect("all confirmed");
    assert!(none.is_empty());
    let again = bot.get_updates().await.expect("stay confirmed");
    assert!(again.is_empty());

    // A second poller replaces the first, which gets Telegram's 409.
    let first = {
        let bot = bot.clone();
        tokio::spawn(async move { bot.get_updates().timeout(10).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = {
        let bot = bot.clone();
        tokio::spawn(async move { bot.get_updates().timeout(10).await })
    };
    let err = first.await.expect("join").expect_err("terminated");
    assert_eq!(api_error(err), TgApiError::TerminatedByOtherGetUpdates);
    let id4 = env.say(USER, "four");
    let got = second.await.expect("join").expect("second poll");
    assert_eq!(i64::from(got[0].id.0), id4);

    // allowed_updates filters what is delivered.
    env.say(USER, "five");
    let msgs = bot
        .get_updates()
        .offset(id4 as i32 + 1)
        .allowed_updates([teloxide::types::AllowedUpdate::CallbackQuery])
        .await
        .expect("filtered");
    assert!(msgs.is_empty(), "messages are not allowed");
}

#[tokio::test]
async fn user_photo_round_trips_through_get_file() {
    let env = start().await;
    let bot = env.bot();
    let (b64, bytes) = test_photo("canon_sx60_orient6_gpsifd.jpg");
    let (status, body) = env
        .control_post(
            "emulator/control/updates",
            json!({"user": {"id": USER, "first_name": "Tess"}, "photo_base64": b64, "caption": "make it pop"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["update_id"].as_i64().is_some());

    let updates = bot.get_updates().await.expect("getUpdates");
    let UpdateKind::Message(m) = &updates[0].kind else { panic!("message expected") };
    assert_eq!(m.caption(), Some("make it pop"));
    let sizes = m.photo().expect("photo");
    let big = sizes.last().expect("largest");
    assert_eq!((big.width, big.height), (2048, 1536));
    assert!(sizes[0].width <= 320 && sizes[0].height <= 320);
    let file = bot.get_file(big.file.id.clone()).await.expect("getFile");
    assert_eq!(file.size as usize, bytes.len());
    let mut got = Vec::new();
    bot.download_file(&file.path, &mut got).await.expect("download");
    assert_eq!(got, bytes);

    let bad = bot.get_file(FileId("nope".into())).await.expect_err("unknown file");
    assert!(matches!(api_error(bad), TgApiError::Unknown(_)));

    // The control API serves the same bytes for the sandbox page.
    let transcript = env.control_get(&format!("emulator/control/chats/{USER}/messages")).await;
    let url = transcript[0]["photo"]["url"].as_str().expect("url").to_owned();
    let r = env.http.get(format!("{}{}", env.base, &url[1..])).send().await.expect("file");
    assert_eq!(r.headers()[reqwest::header::CONTENT_TYPE], "image/jpeg");
    assert_eq!(r.bytes().await.expect("bytes").to_vec(), bytes);

    // base64 (what the sandbox page sends) and documents.
    let (_, png_bytes) = test_photo("alpha_dice_rgba.png");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png_bytes);
    let (status, _) = env
        .control_post(
            "emulator/control/updates",
            json!({"user": {"id": USER, "first_name": "Tess"}, "photo_base64": format!("data:image/png;base64,{b64}")}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = env
        .control_post(
            "emulator/control/updates",
            json!({"user": {"id": USER, "first_name": "Tess"}, "document_base64": b64, "file_name": "dice.png"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = env
        .control_post(
            "emulator/control/updates",
            json!({"user": {"id": USER, "first_name": "Tess"}, "text": "a", "photo_base64": "x"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let msgs = env.emu.messages(USER);
    assert_eq!(msgs[1].photo.as_ref().map(|p| (p.width, p.height)), Some((200, 150)));
    assert_eq!(msgs[2].document.as_ref().map(|d| d.mime_type.as_str()), Some("image/png"));
    let updates = bot.get_updates().offset(updates[0].id.0 as i32 + 1).await.expect("more");
    let UpdateKind::Message(doc) = &updates[1].kind else { panic!("message expected") };
    assert_eq!(doc.document().and_then(|d| d.file_name.clone()).as_deref(), Some("dice.png"));
}

/// A control body with a field the API does not have is refused and the field is named,
/// wherever it sits (update, user, chosen result, flood rule); nothing reaches the bot.
#[tokio::test]
async fn control_posts_with_unknown_fields_are_refused_naming_the_field() {
    let env = start().await;
    let tess = json!({"id": USER, "first_name": "Tess"});
    let cases = [
        ("emulator/control/updates", json!({"user": tess, "text": "hi", "foo": 1}), "foo"),
        (
            "emulator/control/updates",
            json!({"user": {"id": USER, "first_name": "Tess", "nick": "t"}, "text": "hi"}),
            "nick",
        ),
        ("emulator/control/updates", json!({"user": tess, "photo_path": "/etc/passwd"}), "photo_path"),
        (
            "emulator/control/updates",
            json!({"user": tess, "chosen_inline_result": {"result_id": "a", "offset": "1"}}),
            "offset",
        ),
        ("emulator/control/flood", json!({"method": "sendMessage", "retries": 2}), "retries"),
    ];
    for (path, body, field) in cases {
        let (status, answer) = env.control_post(path, body).await;
        assert_eq!(status, 400, "{path} {field}: {answer}");
        assert_eq!(answer["error"], format!("unknown field `{field}`"), "{path}");
    }
    assert!(env.emu.messages(USER).is_empty());
    assert!(env.emu.calls().is_empty());
    // Other shape errors keep serde's detail.
    let (status, answer) = env.control_post("emulator/control/updates", json!({"user": tess, "text": 5})).await;
    assert_eq!(status, 400);
    assert!(answer["error"].as_str().is_some_and(|e| e.starts_with("bad update: invalid type")), "{answer}");
}

/// The album shape the sandbox page posts when several files are chosen: one update per file,
/// all with the same `media_group_id`, in order; the bot gets one message per file.
#[tokio::test]
async fn an_album_posted_through_the_control_api_shares_one_media_group_id() {
    use base64::Engine;
    let env = start().await;
    let bot = env.bot();
    let b64 =
        |bytes: &[u8]| format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes));
    let tess = json!({"id": USER, "first_name": "Tess"});
    for (i, side) in [30u32, 40, 50].into_iter().enumerate() {
        let mut body = json!({"user": tess, "photo_base64": b64(&png(side, side)), "media_group_id": "sb-1"});
        if i == 0 {
            body["caption"] = json!("three cats");
        }
        let (status, answer) = env.control_post("emulator/control/updates", body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let (status, _) = env
        .control_post(
            "emulator/control/updates",
            json!({"user": tess, "document_base64": b64(&png(8, 8)), "file_name": "a.png", "media_group_id": "sb-2"}),
        )
        .await;
    assert_eq!(status, 200);
    let updates = bot.get_updates().await.expect("getUpdates");
    let messages: Vec<_> = updates
        .iter()
        .map(|u| match &u.kind {
            UpdateKind::Message(m) => m.clone(),
            other => panic!("message expected, got {other:?}"),
        })
        .collect();
    assert_eq!(messages.len(), 4);
    let sides: Vec<_> = messages[..3].iter().map(|m| m.photo().and_then(|p| p.last()).map(|p| p.width)).collect();
    assert_eq!(sides, [Some(30), Some(40), Some(50)], "in the order posted");
    assert!(messages[..3].iter().all(|m| m.media_group_id().map(|g| g.0.as_str()) == Some("sb-1")));
    assert_eq!(messages[0].caption(), Some("three cats"));
    assert_eq!(messages[3].media_group_id().map(|g| g.0.as_str()), Some("sb-2"));
    assert!(messages[3].document().is_some());
}

#[tokio::test]
async fn flood_control_answers_429_then_recovers() {
    let env = start().await;
    let bot = env.bot();
    env.say(USER, "hi");
    let msg = bot.send_message(ChatId(USER), "Queued").await.expect("send");
    let (status, _) = env
        .control_post(
            "emulator/control/flood",
            json!({"chat_id": USER, "method": "editMessageText", "retry_after": 1, "times": 1}),
        )
        .await;
    assert_eq!(status, 200);

    // Other methods are not affected by a method-specific rule.
    bot.send_chat_action(ChatId(USER), teloxide::types::ChatAction::Typing).await.expect("action");
    let err = bot.edit_message_text(ChatId(USER), msg.id, "10%").await.expect_err("flood");
    match err {
        RequestError::RetryAfter(s) => assert_eq!(s.duration(), Duration::from_secs(1)),
        other => panic!("expected RetryAfter, got {other:?}"),
    }
    // Too early: accepted (the rule is used up) but marked as made during the wait.
    bot.edit_message_text(ChatId(USER), msg.id, "20%").await.expect("early edit");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    bot.edit_message_text(ChatId(USER), msg.id, "30%").await.expect("after the wait");

    let edits: Vec<CallRecord> = env.emu.calls().into_iter().filter(|c| c.method == "editMessageText").collect();
    assert_eq!(edits.iter().map(|c| c.status).collect::<Vec<_>>(), vec![429, 200, 200]);
    assert_eq!(edits.iter().map(|c| c.during_flood_wait).collect::<Vec<_>>(), vec![false, true, false]);
    assert_eq!(edits[0].description.as_deref(), Some("Too Many Requests: retry after 1"));
    assert!(env.emu.rejections().is_empty(), "429 is not a rejection");
    assert_eq!(env.emu.messages(USER)[1].text.as_deref(), Some("30%"));

    // A raw 429 carries parameters.retry_after.
    env.emu.add_flood(FloodRule { chat_id: None, method: Some("sendMessage".into()), retry_after: 3, times: 1 });
    let (status, body) = env.raw("sendMessage", json!({"chat_id": USER, "text": "x"})).await;
    assert_eq!(status, 429);
    assert_eq!(body["parameters"]["retry_after"], 3);
    assert_eq!(body["error_code"], 429);
}

#[tokio::test]
async fn blocked_user_gets_403() {
    let env = start().await;
    let bot = env.bot();
    env.say(USER, "hi");
    let (status, _) = env.control_post(&format!("emulator/control/users/{USER}/block"), json!({})).await;
    assert_eq!(status, 200);
    let err = bot.send_message(ChatId(USER), "hello?").await.expect_err("blocked");
    assert_eq!(api_error(err), TgApiError::BotBlocked);
    let status = env.control_get(&format!("emulator/control/chats/{USER}")).await;
    assert_eq!(status["blocked"], true);
    assert!(env.emu.rejections().is_empty(), "403 is not a rejection");
    assert_eq!(env.emu.calls().last().map(|c| c.status), Some(403));

    env.control_post(&format!("emulator/control/users/{USER}/unblock"), json!({})).await;
    bot.send_message(ChatId(USER), "back").await.expect("unblocked");
}

#[tokio::test]
async fn sandbox_page_and_assets_are_served() {
    let env = start().await;
    let r = env.http.get(format!("{}sandbox", env.base)).send().await.expect("page");
    assert_eq!(r.status(), 200);
    assert!(r.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap_or("").starts_with("text/html"));
    let html = r.text().await.expect("html");
    for needle in
        ["id=\"input\"", "id=\"send\"", "id=\"photo\"", "data-user-id=\"10001\"", "/emulator/static/sandbox.js?v="]
    {
        assert!(html.contains(needle), "missing {needle}");
    }
    // Both file pickers take several files (an album).
    for id in ["photo", "document"] {
        let tag = html.split(&format!("id=\"{id}\"")).nth(1).and_then(|t| t.split('>').next()).unwrap_or("");
        assert!(tag.contains("multiple"), "#{id} lacks multiple: {tag}");
    }
    // No inline script or style: every <script> has a src.
    assert_eq!(html.matches("<script").count(), html.matches("<script src=").count());
    assert!(!html.contains("<style") && !html.contains("style=\""));

    let js = env.http.get(format!("{}emulator/static/sandbox.js", env.base)).send().await.expect("js");
    assert_eq!(js.status(), 200);
    assert!(js.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap_or("").contains("javascript"));
    let js = js.text().await.expect("js text");
    for needle in [
        "button",
        "'kb'",
        "'photo'",
        "/emulator/control/updates",
        "callback_data",
        "media_group_id",
        "pay(btn, { message_id",
        "pay(btn, { invoice_link",
        "pay: target",
    ] {
        assert!(js.contains(needle), "sandbox.js lacks {needle}");
    }
    let css = env.http.get(format!("{}emulator/static/sandbox.css", env.base)).send().await.expect("css");
    assert_eq!(css.status(), 200);
    let missing = env.http.get(format!("{}emulator/static/nope.js", env.base)).send().await.expect("404");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn reset_keeps_update_ids_growing() {
    let env = start().await;
    let first = env.say(USER, "a");
    let bot = env.bot();
    bot.set_my_commands([teloxide::types::BotCommand::new("start", "Start")]).await.expect("commands");
    bot.send_chat_action(ChatId(USER), teloxide::types::ChatAction::Typing).await.expect("action");
    let status = env.control_get(&format!("emulator/control/chats/{USER}")).await;
    assert_eq!((status["known"].clone(), status["last_action"].clone()), (json!(true), json!("typing")));
    bot.send_message(ChatId(USER), "done").await.expect("send");
    let status = env.control_get(&format!("emulator/control/chats/{USER}")).await;
    assert!(status.get("last_action").is_none(), "a bot message clears the chat action");
    let (status, _) = env.control_post("emulator/control/reset", json!({})).await;
    assert_eq!(status, 200);
    assert!(env.emu.messages(USER).is_empty());
    let status = env.control_get(&format!("emulator/control/chats/{USER}")).await;
    assert_eq!(status["known"], false);
    assert_eq!(status["commands"][0]["command"], "start", "bot configuration survives a reset");
    assert!(env.emu.calls().is_empty());
    let second = env.say(USER, "b");
    assert!(second > first);
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole teloxide stack (Dispatcher + long polling), as the bot module will run it.
#[tokio::test]
async fn teloxide_dispatcher_runs_against_the_emulator() {
    use teloxide::types::{CallbackQuery, Message};
    let env = start().await;
    let handler = dptree::entry()
        .branch(Update::filter_message().endpoint(|bot: Bot, msg: Message| async move {
            let kb = InlineKeyboardMarkup::new([[InlineKeyboardButton::callback("Again", "again")]]);
            let text = format!("echo: {}", msg.text().unwrap_or_default());
            bot.send_message(msg.chat.id, text).reply_markup(kb).await?;
            respond(())
        }))
        .branch(Update::filter_callback_query().endpoint(|bot: Bot, q: CallbackQuery| async move {
            bot.answer_callback_query(q.id.clone()).text("ok").await?;
            if let Some(m) = q.regular_message() {
                bot.edit_message_text(m.chat.id, m.id, "pressed").await?;
            }
            respond(())
        }));
    let mut dispatcher = Dispatcher::builder(env.bot(), handler).build();
    let shutdown = dispatcher.shutdown_token();
    let task = tokio::spawn(async move { dispatcher.dispatch().await });

    env.say(USER, "hello");
    wait_for("the echo", || env.emu.messages(USER).iter().any(|m| m.from_bot)).await;
    let reply = env.emu.messages(USER).into_iter().find(|m| m.from_bot).expect("reply");
    assert_eq!(reply.text.as_deref(), Some("echo: hello"));
    env.emu
        .push_update(ControlUpdate {
            user: user(USER),
            callback_data: Some("again".into()),
            message_id: Some(reply.message_id),
            ..ControlUpdate::default()
        })
        .expect("press");
    wait_for("the edit", || env.emu.messages(USER).iter().any(|m| m.edit_count == 1)).await;
    assert_eq!(env.emu.callback_answers()[0].text.as_deref(), Some("ok"));

    shutdown.shutdown().expect("running").await;
    task.await.expect("dispatcher task");
    assert!(env.emu.rejections().is_empty(), "{:?}", env.emu.rejections());
    let methods: Vec<String> = env.emu.calls().into_iter().map(|c| c.method).collect();
    assert!(methods.contains(&"getWebhookInfo".to_owned()) && methods.contains(&"getUpdates".to_owned()));
}

/// For trying the sandbox page by hand before the `sandbox` command exists: serves the
/// emulator with a small echo bot on 127.0.0.1:8089 (or `$EMULATOR_ADDR`) for
/// `$EMULATOR_SECS` seconds (default 600), then open http://127.0.0.1:8089/sandbox.
/// `cargo test emulator::tests::manual_sandbox -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn manual_sandbox() {
    use teloxide::types::{CallbackQuery, KeyboardButton, KeyboardMarkup, Message};
    let addr = std::env::var("EMULATOR_ADDR").unwrap_or_else(|_| "127.0.0.1:8089".into());
    let secs: u64 = std::env::var("EMULATOR_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let emu = Emulator::new();
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    let app = emu.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let bot = Bot::new("123:SANDBOX").set_api_url(format!("http://{addr}/").parse().expect("url"));
    bot.set_my_commands([
        teloxide::types::BotCommand::new("start", "Start"),
        teloxide::types::BotCommand::new("doc", "Send a document"),
    ])
    .await
    .expect("commands");
    let handler = dptree::entry()
        .branch(Update::filter_message().endpoint(|bot: Bot, msg: Message| async move {
            bot.send_chat_action(msg.chat.id, teloxide::types::ChatAction::Typing).await?;
            if let Some(p) = msg.photo().and_then(|p| p.last()) {
                bot.send_photo(msg.chat.id, InputFile::file_id(p.file.id.clone()))
                    .caption(format!("got <b>{}×{}</b>", p.width, p.height))
                    .parse_mode(ParseMode::Html)
                    .await?;
            } else if msg.text() == Some("/doc") {
                bot.send_document(msg.chat.id, InputFile::memory(&b"hello"[..]).file_name("hello.txt")).await?;
            } else {
                let kb = InlineKeyboardMarkup::new([
                    vec![
                        InlineKeyboardButton::callback("Press me", "press"),
                        InlineKeyboardButton::callback("Alert", "alert"),
                    ],
                    vec![InlineKeyboardButton::url(
                        "Docs ↗",
                        "https://core.telegram.org/bots/api".parse().expect("url"),
                    )],
                ]);
                let text = format!("echo: <i>{}</i>", msg.text().unwrap_or("(no text)").replace('<', "&lt;"));
                bot.send_message(msg.chat.id, text).parse_mode(ParseMode::Html).reply_markup(kb).await?;
                let reply =
                    KeyboardMarkup::new([[KeyboardButton::new("Hi"), KeyboardButton::new("/doc")]]).resize_keyboard();
                bot.send_message(msg.chat.id, "reply keyboard below").reply_markup(reply).await?;
            }
            respond(())
        }))
        .branch(Update::filter_callback_query().endpoint(|bot: Bot, q: CallbackQuery| async move {
            let alert = q.data.as_deref() == Some("alert");
            bot.answer_callback_query(q.id.clone()).text("pressed!").show_alert(alert).await?;
            if let Some(m) = q.regular_message() {
                bot.edit_message_text(m.chat.id, m.id, "pressed ✅").await?;
            }
            respond(())
        }));
    let mut dispatcher = Dispatcher::builder(bot, handler).build();
    tokio::spawn(async move { dispatcher.dispatch().await });
    tracing::info!("sandbox at http://{addr}/sandbox");
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[tokio::test]
async fn albums_and_media_edits() {
    use teloxide::types::{InputMedia, InputMediaDocument, InputMediaPhoto};
    let env = start().await;
    let bot = env.bot();
    env.say(USER, "hi");
    let (_, jpeg) = test_photo("canon_sx60_orient6_gpsifd.jpg");
    let album = bot
        .send_media_group(
            ChatId(USER),
            [
                InputMedia::Photo(
                    InputMediaPhoto::new(InputFile::memory(jpeg.clone()).file_name("a.jpg"))
                        .caption("<b>one</b>")
                        .parse_mode(ParseMode::Html),
                ),
                InputMedia::Photo(InputMediaPhoto::new(InputFile::memory(png(640, 480)).file_name("b.png"))),
            ],
        )
        .await
        .expect("sendMediaGroup");
    assert_eq!(album.len(), 2);
    assert!(album[0].media_group_id().is_some() && album[0].media_group_id() == album[1].media_group_id());
    assert_eq!(album[0].caption(), Some("one"));
    assert_eq!(album[1].photo().and_then(|p| p.last()).map(|p| (p.width, p.height)), Some((640, 480)));

    // Swap a placeholder for the result, as the bot does when a job finishes.
    let placeholder = bot
        .send_photo(ChatId(USER), InputFile::memory(png(64, 64)).file_name("wait.png"))
        .caption("working…")
        .await
        .expect("placeholder");
    let done = bot
        .edit_message_media(
            ChatId(USER),
            placeholder.id,
            InputMedia::Photo(InputMediaPhoto::new(InputFile::memory(jpeg.clone()).file_name("r.jpg")).caption("done")),
        )
        .await
        .expect("editMessageMedia");
    assert_eq!(done.caption(), Some("done"));
    assert!(done.edit_date().is_some());
    let big = done.photo().and_then(|p| p.last()).expect("photo").clone();
    assert_eq!((big.width, big.height), (2048, 1536));
    let same = bot
        .edit_message_media(
            ChatId(USER),
            placeholder.id,
            InputMedia::Photo(InputMediaPhoto::new(InputFile::file_id(big.file.id.clone())).caption("done")),
        )
        .await
        .expect_err("unchanged");
    assert_eq!(api_error(same), TgApiError::MessageNotModified);
    let as_doc = bot
        .edit_message_media(
            ChatId(USER),
            placeholder.id,
            InputMedia::Document(InputMediaDocument::new(InputFile::memory(jpeg.clone()).file_name("full.jpg"))),
        )
        .await
        .expect("photo → document");
    assert_eq!(as_doc.document().and_then(|d| d.file_name.clone()).as_deref(), Some("full.jpg"));
    assert!(as_doc.photo().is_none());

    let one = bot
        .send_media_group(ChatId(USER), [InputMedia::Photo(InputMediaPhoto::new(InputFile::memory(png(10, 10))))])
        .await;
    assert!(one.is_err(), "an album needs 2-10 items");
    let mixed = bot
        .send_media_group(
            ChatId(USER),
            [
                InputMedia::Photo(InputMediaPhoto::new(InputFile::memory(png(10, 10)))),
                InputMedia::Document(InputMediaDocument::new(InputFile::memory(&b"x"[..]).file_name("x.txt"))),
            ],
        )
        .await;
    assert!(mixed.is_err(), "documents don't mix with photos");
    let text = env.emu.messages(USER);
    let last = text.iter().find(|m| m.message_id == i64::from(placeholder.id.0)).expect("edited");
    assert_eq!(last.edit_count, 2);
    assert!(last.document.is_some() && last.photo.is_none());
    assert_eq!(env.emu.rejections().len(), 2, "{:?}", env.emu.rejections());
}

#[tokio::test]
async fn query_strings_and_method_case() {
    let env = start().await;
    env.say(USER, "hi");
    let url = format!("{}bot1:X/SENDMESSAGE?chat_id={USER}&text=from%20a%20query", env.base);
    let body: Value = env.http.get(url).send().await.expect("get").json().await.expect("json");
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(body["result"]["text"], "from a query");
    assert_eq!(body["result"]["from"]["id"], 1, "bot id from the token");
    let call = env.emu.calls().pop().expect("call");
    assert_eq!((call.method.as_str(), call.chat_id, call.message_id), ("sendMessage", Some(USER), Some(2)));

    let missing = env.http.get(format!("{}file/bot1:X/photos/nope.jpg", env.base)).send().await.expect("get");
    assert_eq!(missing.status(), 404);
    let (status, body) =
        env.control_post("emulator/control/updates", json!({"user": {"id": USER, "first_name": "T"}})).await;
    assert_eq!(status, 400, "no action: {body}");
    let (status, _) = env
        .control_post(
            "emulator/control/updates",
            json!({"user": {"id": USER, "first_name": "T"}, "callback_data": "x", "message_id": 1}),
        )
        .await;
    assert_eq!(status, 400, "message 1 is the user's, not the bot's");
}

#[tokio::test]
async fn inline_answers_are_checked_and_chosen_results_can_be_injected() {
    let env = start().await;
    let spec = Spec::embedded().expect("spec");
    let (b64, _) = test_photo("alpha_dice_rgba.png");
    env.emu
        .push_update(ControlUpdate { user: user(USER), photo_base64: Some(b64), ..ControlUpdate::default() })
        .expect("photo");
    env.emu
        .push_update(ControlUpdate { user: user(USER), inline_query: Some("dice".into()), ..ControlUpdate::default() })
        .expect("inline");
    let chosen = ChosenInline { result_id: "abc".into(), query: "dice".into() };
    env.emu
        .push_update(ControlUpdate { user: user(USER), chosen_inline_result: Some(chosen), ..ControlUpdate::default() })
        .expect("chosen");
    let (_, updates) = env.raw("getUpdates", json!({})).await;
    let updates = updates["result"].as_array().expect("updates").clone();
    assert_eq!(updates.len(), 3);
    for u in &updates {
        spec.check_named(u, "Update").expect("Update matches the spec");
    }
    assert_eq!(updates[2]["chosen_inline_result"]["result_id"], "abc");
    let sizes = updates[0]["message"]["photo"].as_array().expect("sizes");
    let photo_id = sizes.last().and_then(|p| p["file_id"].as_str()).expect("photo id");
    let query_id = updates[1]["inline_query"]["id"].as_str().expect("inline id");

    let unknown = json!([{"type": "photo", "id": "1", "photo_file_id": "nope"}]);
    let (status, _) = env.raw("answerInlineQuery", json!({"inline_query_id": query_id, "results": unknown})).await;
    assert_eq!(status, 400, "a cached photo Telegram does not have");
    let twice = json!([
        {"type": "photo", "id": "1", "photo_file_id": photo_id},
        {"type": "photo", "id": "1", "photo_file_id": photo_id}
    ]);
    let (status, _) = env.raw("answerInlineQuery", json!({"inline_query_id": query_id, "results": twice})).await;
    assert_eq!(status, 400, "duplicate result ids");
    let good = json!([{"type": "photo", "id": "1", "photo_file_id": photo_id}]);
    let body = json!({"inline_query_id": query_id, "results": good, "is_personal": true, "cache_time": 5});
    let (status, _) = env.raw("answerInlineQuery", body).await;
    assert_eq!(status, 200);
    let answer = &env.emu.inline_answers()[0];
    assert_eq!((answer.is_personal, answer.cache_time, &answer.results), (true, Some(5), &good));

    let bad = ControlUpdate {
        user: user(USER),
        chosen_inline_result: Some(ChosenInline { result_id: String::new(), query: String::new() }),
        ..ControlUpdate::default()
    };
    assert!(env.emu.push_update(bad).is_err(), "result_id must not be empty");
}

/// Sends `head` + `body` on a raw connection: with `close_early` the connection is dropped
/// before the declared body length arrives (a bot killed mid-upload); otherwise the answer's
/// status line is read back.
async fn raw_http(base: &str, head: &str, body: &[u8], close_early: bool) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(body).await.expect("body");
    if close_early {
        drop(s);
        return None;
    }
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.expect("read");
    String::from_utf8_lossy(&answer).lines().next().map(str::to_owned)
}

#[tokio::test]
async fn a_body_cut_off_by_a_dying_client_is_no_rejection_but_a_malformed_one_is() {
    let env = start().await;
    env.say(USER, "hi");
    let part = "--XX\r\nContent-Disposition: form-data; name=\"chat_id\"\r\n\r\n42\r\n--XX\r\n\
                Content-Disposition: form-data; name=\"photo\"; filename=\"a.jpg\"\r\n\r\nJFIF-bytes";
    let upload = |len: usize| {
        format!(
            "POST /bot123:TEST/sendPhoto HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
             Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: {len}\r\n\r\n"
        )
    };
    // Killed mid-upload: 100,000 bytes declared, a few hundred sent, the socket closed.
    raw_http(&env.base, &upload(100_000), part.as_bytes(), true).await;
    let json = "POST /bot123:TEST/sendMessage HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                Content-Type: application/json\r\nContent-Length: 500\r\n\r\n";
    raw_http(&env.base, json, br#"{"chat_id": 42, "te"#, true).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let cut_off = |c: &CallRecord| c.description.as_deref().is_some_and(|d| d.contains("request body cut off"));
    while env.emu.calls().iter().filter(|c| cut_off(c)).count() < 2 {
        assert!(Instant::now() < deadline, "both cut-off calls are recorded: {:?}", env.emu.calls());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let methods: Vec<String> = env.emu.calls().into_iter().filter(cut_off).map(|c| c.method).collect();
    assert_eq!(methods.len(), 2);
    assert!(methods.contains(&"sendPhoto".to_owned()) && methods.contains(&"sendMessage".to_owned()), "{methods:?}");
    assert!(env.emu.rejections().is_empty(), "{:?}", env.emu.rejections());
    // The whole body arrived but the multipart has no closing boundary: the bot's fault.
    let status = raw_http(&env.base, &upload(part.len()), part.as_bytes(), false).await;
    assert!(status.as_deref().is_some_and(|s| s.contains(" 400 ")), "{status:?}");
    assert!(env.last_rejection().reason.contains("unreadable multipart/form-data body"), "{:?}", env.last_rejection());
}

#[test]
fn a_persistent_emulator_continues_the_ids_of_the_last_run() {
    let dir = tempfile::tempdir().expect("tmp");
    let first = Emulator::persistent(dir.path()).expect("fresh dir");
    let push = |emu: &Emulator, text: &str| {
        emu.push_update(ControlUpdate { user: user(USER), text: Some(text.into()), ..ControlUpdate::default() })
            .expect("push")
    };
    let u1 = push(&first, "a");
    let m1 = first.messages(USER).last().expect("message").message_id;
    let u2 = push(&first, "b");
    drop(first);
    // A crash or restart: nothing but the file carries over.
    let second = Emulator::persistent(dir.path()).expect("same dir");
    let u3 = push(&second, "c");
    let m3 = second.messages(USER).last().expect("message").message_id;
    assert!(u3 > u2 && u2 > u1, "{u1} {u2} {u3}");
    assert!(m3 > m1 + 1, "message ids continue too: {m1} then {m3}");
    // A reset keeps message ids growing as it keeps update ids growing.
    let before_reset = second.messages(USER).last().expect("message").message_id;
    let reset = tokio::runtime::Builder::new_current_thread().build().expect("rt");
    reset.block_on(super::control::reset(axum::extract::State(second.clone())));
    push(&second, "d");
    assert!(second.messages(USER).last().expect("message").message_id > before_reset);
    std::fs::write(dir.path().join("emulator-ids.json"), "not json").expect("write");
    assert!(Emulator::persistent(dir.path()).is_err(), "a damaged file is reported, not guessed past");
}

/// A file ComfyUI 0.3.64 served in the recorded video session (`GET /view (<session>)`).
fn recorded_video(session: &str) -> Vec<u8> {
    use base64::Engine;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata/comfyui/recorded-video-0.3.64.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("recording")).expect("json");
    let label = format!("GET /view ({session})");
    let entry = json["transcript"].as_array().expect("transcript").iter().find(|e| e["label"] == label.as_str());
    let b64 = entry.and_then(|e| e["response"]["body_base64"].as_str()).expect("body");
    base64::engine::general_purpose::STANDARD.decode(b64).expect("base64")
}

#[tokio::test]
async fn videos_and_animations_are_stored_probed_shown_and_downloadable() {
    let env = start().await;
    env.say(USER, "hi");
    let bot = env.bot();
    let chat = ChatId(USER);
    let mp4 = crate::imaging::video::demo_video("clip", 96, 64, 12, 8, 1).expect("demo clip");
    let thumb = crate::imaging::thumbnail(&png(200, 100), 320, &crate::imaging::Limits::default()).expect("jpeg");

    // sendVideo with a thumbnail and streaming, without sizes: probed from the MP4.
    let sent = bot
        .send_video(chat, InputFile::memory(mp4.clone()).file_name("clip.mp4"))
        .thumbnail(InputFile::memory(thumb.clone()).file_name("t.jpg"))
        .supports_streaming(true)
        .await
        .expect("sendVideo");
    let v = sent.video().expect("a video message");
    assert_eq!((v.width, v.height, v.duration.seconds()), (96, 64, 2), "12 frames at 8 fps ≈ 2 s");
    // The call's own fields win over the probe.
    let told = bot
        .send_video(chat, InputFile::memory(mp4.clone()).file_name("clip.mp4"))
        .duration(7)
        .width(320)
        .height(240)
        .await
        .expect("sendVideo with sizes");
    assert_eq!(told.video().map(|v| (v.width, v.height, v.duration.seconds())), Some((320, 240, 7)));
    // Re-sent by file_id: the same facts.
    let again = bot.send_video(chat, InputFile::file_id(v.file.id.clone())).await.expect("by file_id");
    assert_eq!(again.video().map(|v| v.duration.seconds()), Some(2));

    // sendAnimation: an animated WebP (ComfyUI SaveAnimatedWEBP) and a GIF.
    let webp = recorded_video("video_animated_webp");
    let anim =
        bot.send_animation(chat, InputFile::memory(webp.clone()).file_name("anim.webp")).await.expect("animated WebP");
    let a = anim.animation().expect("an animation message");
    assert_eq!((a.width, a.height, a.duration.seconds()), (64, 48, 2));
    let mut gif = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut gif);
        let frame =
            image::Frame::from_parts(image::RgbaImage::new(8, 8), 0, 0, image::Delay::from_numer_denom_ms(1000, 1));
        enc.encode_frame(frame).expect("gif");
    }
    bot.send_animation(chat, InputFile::memory(gif).file_name("a.gif")).await.expect("GIF");

    // WebM is not shown inline: sendVideo refuses it, sendDocument takes it as video/webm.
    let webm = recorded_video("video_webm");
    let refused = bot.send_video(chat, InputFile::memory(webm.clone()).file_name("v.webm")).await;
    assert!(refused.is_err(), "WebM through sendVideo");
    let doc = bot.send_document(chat, InputFile::memory(webm.clone()).file_name("v.webm")).await.expect("document");
    assert_eq!(doc.document().and_then(|d| d.mime_type.as_ref()).map(|m| m.to_string()), Some("video/webm".into()));
    // A PNG is no animation.
    let png_anim = bot.send_animation(chat, InputFile::memory(png(8, 8)).file_name("x.png")).await;
    assert!(png_anim.is_err());

    // The control API's transcript and files route.
    let t = env.control_get(&format!("emulator/control/chats/{USER}/messages")).await;
    let bot_msgs: Vec<&Value> = t.as_array().expect("list").iter().filter(|m| m["from_bot"] == true).collect();
    let video = &bot_msgs[0]["video"];
    assert_eq!(video["file_id"], json!(v.file.id.to_string()));
    assert_eq!(
        (video["width"].clone(), video["height"].clone(), video["duration"].clone()),
        (json!(96), json!(64), json!(2))
    );
    assert_eq!(video["has_thumbnail"], true);
    assert_eq!(video["supports_streaming"], true);
    assert_eq!(video["mime_type"], "video/mp4");
    assert_eq!(bot_msgs[1]["video"]["duration"], 7);
    assert_eq!(bot_msgs[1]["video"]["supports_streaming"], false);
    assert_eq!(bot_msgs[1]["video"]["has_thumbnail"], false);
    let animation = &bot_msgs[3]["animation"];
    assert_eq!((animation["width"].clone(), animation["duration"].clone()), (json!(64), json!(2)));
    assert_eq!(animation["mime_type"], "image/webp");
    for (url, bytes, mime) in [(&video["url"], &mp4, "video/mp4"), (&animation["url"], &webp, "image/webp")] {
        let url = format!("{}{}", env.base.trim_end_matches('/'), url.as_str().expect("url"));
        let r = env.http.get(url).send().await.expect("download");
        assert_eq!(r.headers()["content-type"], mime);
        assert_eq!(&r.bytes().await.expect("bytes")[..], &bytes[..]);
    }
}

#[tokio::test]
async fn stars_invoices_are_paid_refunded_and_replayed_like_telegram() {
    let env = start().await;
    let spec = Spec::embedded().expect("spec");
    env.say(USER, "/buy");
    let invoice = json!({
        "chat_id": USER, "title": "100 credits", "description": "Top-up", "payload": "pkg:small:42",
        "provider_token": "", "currency": "XTR", "prices": [{"label": "100 credits", "amount": 50}],
    });
    let (status, sent) = env.raw("sendInvoice", invoice.clone()).await;
    assert_eq!(status, 200, "{sent}");
    spec.check_named(&sent["result"], "Message").expect("an invoice Message matches the spec");
    assert_eq!(sent["result"]["invoice"]["total_amount"], 50);
    let mid = sent["result"]["message_id"].as_i64().expect("id");
    let shown = env.emu.messages(USER).into_iter().find(|m| m.message_id == mid).expect("in the transcript");
    let inv = shown.invoice.expect("invoice fields in the transcript");
    assert_eq!((inv.currency.as_str(), inv.total_amount, inv.invoice_payload.as_str()), ("XTR", 50, "pkg:small:42"));
    // Telegram's Stars rules.
    for (field, value, reason) in [
        ("provider_token", json!("tok"), "PAYMENT_PROVIDER_INVALID"),
        ("currency", json!("USD"), "PAYMENT_PROVIDER_INVALID"),
        ("prices", json!([{"label": "a", "amount": 1}, {"label": "b", "amount": 1}]), "STARS_INVOICE_INVALID"),
        ("payload", json!("x".repeat(129)), "INVOICE_PAYLOAD_INVALID"),
        ("title", json!("t".repeat(33)), "INVOICE_TITLE_INVALID"),
    ] {
        let mut bad = invoice.clone();
        bad[field] = value;
        let (status, body) = env.raw("sendInvoice", bad).await;
        assert_eq!(status, 400, "{field}: {body}");
        assert!(env.last_rejection().reason.contains(reason), "{field}: {:?}", env.last_rejection());
    }
    let rejected = env.emu.rejections().len();

    // Pay: the bot sees the pre-checkout, answers ok, then gets the successful_payment.
    let emu = env.emu.clone();
    let payer = user(USER);
    let pay = tokio::spawn(async move {
        emu.pay(payer, PayInvoice { message_id: Some(mid), invoice_link: None }).await.expect("pay")
    });
    let (_, first) = env.raw("getUpdates", json!({"timeout": 5})).await;
    let first = first["result"].as_array().expect("updates").clone();
    let pcq = first.iter().find(|u| u.get("pre_checkout_query").is_some()).expect("a pre_checkout_query").clone();
    spec.check_named(&pcq, "Update").expect("pre_checkout_query Update");
    assert_eq!(pcq["pre_checkout_query"]["invoice_payload"], "pkg:small:42");
    let qid = pcq["pre_checkout_query"]["id"].as_str().expect("qid").to_string();
    let (status, body) = env.raw("answerPreCheckoutQuery", json!({"pre_checkout_query_id": qid, "ok": false})).await;
    assert_eq!(status, 400, "ok=false needs an error_message: {body}");
    let (status, _) = env.raw("answerPreCheckoutQuery", json!({"pre_checkout_query_id": qid, "ok": true})).await;
    assert_eq!(status, 200);
    let out = pay.await.expect("join");
    assert!(out.paid, "{out:?}");
    let charge = out.telegram_payment_charge_id.clone().expect("charge id");
    let offset = pcq["update_id"].as_i64().expect("id") + 1;
    let (_, next) = env.raw("getUpdates", json!({"offset": offset})).await;
    let next = next["result"].as_array().expect("updates").clone();
    assert_eq!(next.len(), 1, "{next:?}");
    spec.check_named(&next[0], "Update").expect("successful_payment Update");
    assert_eq!(next[0]["update_id"].as_i64(), out.successful_payment_update_id);
    assert_eq!(next[0]["message"]["successful_payment"]["telegram_payment_charge_id"], charge.as_str());

    // Replay: the same update, byte for byte, once more, though the offset is past it.
    let sp_id = out.successful_payment_update_id.expect("id");
    let (_, none) = env.raw("getUpdates", json!({"offset": sp_id + 1})).await;
    assert_eq!(none["result"], json!([]));
    let (status, replayed) =
        env.control_post("emulator/control/updates", json!({"user": user(USER), "replay_update": sp_id})).await;
    assert_eq!((status, replayed["update_id"].as_i64()), (200, Some(sp_id)));
    let (_, again) = env.raw("getUpdates", json!({"offset": sp_id + 1})).await;
    assert_eq!(again["result"], json!([next[0].clone()]));
    let (_, gone) = env.raw("getUpdates", json!({"offset": sp_id + 1})).await;
    assert_eq!(gone["result"], json!([]), "a replay is delivered once");

    // A declined payment pays nothing and says why.
    let emu = env.emu.clone();
    let pay = tokio::spawn(async move {
        emu.pay(user(USER), PayInvoice { message_id: Some(mid), invoice_link: None }).await.expect("pay")
    });
    let (_, upd) = env.raw("getUpdates", json!({"offset": sp_id + 1, "timeout": 5})).await;
    let qid = upd["result"][0]["pre_checkout_query"]["id"].as_str().expect("query").to_string();
    let answer = json!({"pre_checkout_query_id": qid, "ok": false, "error_message": "Sold out"});
    assert_eq!(env.raw("answerPreCheckoutQuery", answer).await.0, 200);
    let out = pay.await.expect("join");
    assert_eq!(
        (out.paid, out.reason.as_deref(), out.error_message.as_deref()),
        (false, Some("declined"), Some("Sold out"))
    );

    // Refund once; the payer gets a refunded_payment; a second refund is refused.
    let refund = json!({"user_id": USER, "telegram_payment_charge_id": charge});
    assert_eq!(env.raw("refundStarPayment", refund.clone()).await.0, 200);
    let (status, body) = env.raw("refundStarPayment", refund).await;
    assert_eq!(status, 400);
    assert!(body["description"].as_str().unwrap_or("").contains("CHARGE_ALREADY_REFUNDED"), "{body}");
    assert!(env.emu.messages(USER).iter().any(|m| m.refunded_payment.is_some()), "refund message");
    let (_, tx) = env.raw("getStarTransactions", json!({"limit": 10})).await;
    spec.check_named(&tx["result"], "StarTransactions").expect("StarTransactions");
    assert_eq!(tx["result"]["transactions"].as_array().map(Vec::len), Some(2), "the charge and its refund");
    let payments = env.control_get("emulator/control/payments").await;
    assert_eq!(payments["charges"][0]["state"], "refunded");
    assert_eq!(payments["pre_checkouts"].as_array().map(Vec::len), Some(2));
    assert_eq!(payments["pre_checkouts"][1]["error_message"], "Sold out");

    // An invoice link is paid the same way.
    let mut for_link = invoice.clone();
    for_link.as_object_mut().expect("object").remove("chat_id");
    let (status, link) = env.raw("createInvoiceLink", for_link).await;
    assert_eq!(status, 200, "{link}");
    let link = link["result"].as_str().expect("link").to_string();
    let emu = env.emu.clone();
    let pay =
        tokio::spawn(
            async move { emu.pay(user(USER), PayInvoice { message_id: None, invoice_link: Some(link) }).await },
        );
    let (_, upd) = env.raw("getUpdates", json!({"offset": sp_id + 1, "timeout": 5})).await;
    let list = upd["result"].as_array().expect("list");
    let qid = list.iter().rev().find_map(|u| u["pre_checkout_query"]["id"].as_str()).expect("query").to_string();
    assert_eq!(env.raw("answerPreCheckoutQuery", json!({"pre_checkout_query_id": qid, "ok": true})).await.0, 200);
    let paid = pay.await.expect("join").expect("pay");
    assert!(paid.paid);
    assert_eq!(env.emu.rejections().len(), rejected + 1, "only the ok=false without a message was refused since");

    // A lost answer: the refund happens, the bot hears 502; asking again says it was done.
    let (status, _) = env.control_post("emulator/control/lose_answers", json!({"method": "refundstarpayment"})).await;
    assert_eq!(status, 200);
    let (status, _) = env.control_post("emulator/control/lose_answers", json!({"method": "x", "times": 0})).await;
    assert_eq!(status, 400);
    let second = json!({"user_id": USER, "telegram_payment_charge_id": paid.telegram_payment_charge_id});
    let (status, body) = env.raw("refundStarPayment", second.clone()).await;
    assert_eq!((status, body["description"].as_str()), (502, Some("Bad Gateway")), "{body}");
    let payments = env.control_get("emulator/control/payments").await;
    assert_eq!(payments["charges"][1]["state"], "refunded", "{payments}");
    assert!(payments["charges"][1]["refunded_at_ms"].is_u64(), "{payments}");
    let (status, body) = env.raw("refundStarPayment", second).await;
    assert_eq!((status, body["description"].as_str()), (400, Some("Bad Request: CHARGE_ALREADY_REFUNDED")));
    assert_eq!(
        env.emu.rejections().len(),
        rejected + 1,
        "lost answers and refusals are Telegram's answers, not rejections"
    );
}
