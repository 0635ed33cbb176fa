//! The image library end to end through the emulator: actions under results, /my pages and
//! filters, re-send by file_id, re-run, resize, presets, delete with confirmation, inline mode;
//! isolation between users; retention.

use super::harness::*;
use crate::config::ProviderKind;
use crate::domain::{Credits, ImageId, JobStatus, UserId};
use crate::emulator::{CallbackAnswer, ChosenInline};
use crate::store::library::INLINE_CHOSEN;
use crate::store::records::{Delivery, JobPayload, LibraryItem, OpKind};
use serde_json::{Value, json};

fn config(dir: &std::path::Path) -> crate::config::Config {
    let mut c = test_config(dir);
    c.providers.push(provider("demo", ProviderKind::Demo, ""));
    c.models.push(model("demo", "demo", 10));
    c.models.push(model("demo2", "demo", 15));
    c.billing.resize_price = Credits(3);
    c
}

/// /start as `user`; returns the welcome message.
async fn welcome(h: &Harness, user: i64) -> Value {
    h.text(user, "en", "/start");
    h.wait_text(user, "Welcome").await
}

/// Waits for the answer to the callback query carried by `update_id`.
async fn answer(h: &Harness, update_id: i64) -> CallbackAnswer {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(a) = h.emu.callback_answers().into_iter().find(|a| a.update_id == update_id) {
            return a;
        }
        assert!(std::time::Instant::now() < deadline, "no answer to update {update_id}");
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
}

/// Presses the button labelled `label` under `msg` and returns the callback answer.
async fn press(h: &Harness, user: i64, msg: &Value, label: &str) -> CallbackAnswer {
    let mid = msg["message_id"].as_i64().expect("message id");
    let update = h.press(user, "en", mid, &Harness::button(msg, label));
    answer(h, update).await
}

/// The latest state of a message.
fn message(h: &Harness, chat: i64, id: i64) -> Value {
    h.messages(chat).into_iter().find(|m| m["message_id"].as_i64() == Some(id)).expect("message")
}

async fn library(h: &Harness, user: i64) -> Vec<LibraryItem> {
    h.store().read(move |rx| rx.find_library(UserId(user))).await.expect("library")
}

/// Creates a picture and waits for its photo; returns the photo message.
async fn create(h: &Harness, user: i64, prompt: &str) -> Value {
    let before = h.photos(user).len();
    h.create(user, "en", prompt, "Model demo ·", "Square").await;
    h.wait_for(user, 30, "the result photo", |_| h.photos(user).len() == before + 1).await;
    settled(h, user).await;
    h.photos(user).pop().expect("photo")
}

/// Waits until every job of `user` has its delivery recorded (file_ids stored), which happens
/// just after the emulator got the files.
async fn settled(h: &Harness, user: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
        let open = jobs.iter().filter(|j| j.user_id == UserId(user) && j.delivery != Delivery::Delivered).count();
        if open == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{open} deliveries of {user} not recorded");
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
}

/// Library items stored directly (same file as `like`), to have more than one page.
async fn seed_items(h: &Harness, like: &LibraryItem, n: usize) {
    let like = like.clone();
    h.store()
        .write(move |tx| {
            for i in 0..n {
                let mut it = like.clone();
                it.id = ImageId::new();
                it.prompt = format!("extra picture {i}");
                it.favourite = false;
                it.categories = vec![];
                it.photo_file_id = None;
                it.document_file_id = None;
                tx.insert_library_item(&it)?;
            }
            Ok::<_, crate::store::StoreError>(())
        })
        .await
        .expect("seed");
}

async fn wait_counter(h: &Harness, name: &'static str, want: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = h.store().read(move |rx| rx.get_counter(name)).await.expect("counter");
        if v == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "counter {name} is {v}, want {want}");
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn library_actions_pages_resend_rerun_resize_presets_delete_and_inline() {
    let h = Harness::start(config).await;
    let u = 801;
    welcome(&h, u).await;
    let fox = create(&h, u, "a red fox in snow").await;
    let owl = create(&h, u, "an owl at night").await;
    let cat = create(&h, u, "a cat on a roof").await;
    let items = library(&h, u).await;
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|i| i.kind == "create" && i.photo_file_id.is_some() && i.sha256.len() == 64));
    let by_prompt = |p: &str| items.iter().find(|i| i.prompt == p).cloned().expect("item");
    let (fox_item, owl_item, cat_item) =
        (by_prompt("a red fox in snow"), by_prompt("an owl at night"), by_prompt("a cat on a roof"));
    assert_eq!((fox_item.model_id.as_str(), fox_item.format.as_str()), ("demo", "square"));
    for label in ["⭐", "🔁 Again", "🔍 Resize", "🏷 Category", "💾 Save as preset", "🗑 Delete"] {
        Harness::button(&fox, label);
    }

    // ⭐ the fox.
    let a = press(&h, u, &fox, "⭐").await;
    assert_eq!(a.text.as_deref(), Some("Added to favourites ⭐"));
    assert!(h.store().read(move |rx| rx.get_library_item(fox_item.id)).await.expect("r").expect("item").favourite);
    let fox_now = message(&h, u, fox["message_id"].as_i64().expect("id"));
    Harness::button(&fox_now, "★ Starred");

    // 🏷 the owl into a new category typed by the user.
    press(&h, u, &owl, "🏷 Category").await;
    let owl_cats = message(&h, u, owl["message_id"].as_i64().expect("id"));
    press(&h, u, &owl_cats, "New category").await;
    h.wait_text(u, "name for the new category").await;
    h.text(u, "en", "Night  birds");
    h.wait_text(u, "Added to «Night birds»").await;
    let owl_id = owl_item.id;
    let stored = h.store().read(move |rx| rx.get_library_item(owl_id)).await.expect("r").expect("item");
    assert_eq!(stored.categories, ["Night birds"]);

    // More than a page: 7 more items (sharing the cat's file) → 10 items, pages of 8.
    seed_items(&h, &cat_item, 7).await;
    h.text(u, "en", "/my");
    let page1 = h.wait_text(u, "page 1/2").await;
    assert!(text_of(&page1).contains("All: 10 pictures"), "{page1}");
    assert!(text_of(&page1).contains("8. "), "eight on the first page: {page1}");
    assert!(!text_of(&page1).contains("9. "));
    assert!(!page1["reply_markup"].to_string().contains('◀'), "no ◀ on the first page");
    press(&h, u, &page1, "▶").await;
    let page2 = message(&h, u, page1["message_id"].as_i64().expect("id"));
    assert!(text_of(&page2).contains("page 2/2") && text_of(&page2).contains("10. "), "{page2}");
    assert!(!page2["reply_markup"].to_string().contains('▶'), "no ▶ on the last page");
    // Newest first: the three created pictures are the oldest, so they are on page 2.
    assert!(text_of(&page2).contains("a red fox in snow"), "{page2}");
    press(&h, u, &page2, "◀").await;
    assert!(text_of(&message(&h, u, page1["message_id"].as_i64().expect("id"))).contains("page 1/2"));

    // Filters: favourites, then the category.
    let list = message(&h, u, page1["message_id"].as_i64().expect("id"));
    press(&h, u, &list, "⭐ Favourites").await;
    let favs = message(&h, u, page1["message_id"].as_i64().expect("id"));
    assert!(text_of(&favs).contains("Favourites: 1 picture ·"), "{favs}");
    assert!(text_of(&favs).contains("a red fox in snow") && !text_of(&favs).contains("owl"), "{favs}");
    press(&h, u, &favs, "🏷 Night birds").await;
    let birds = message(&h, u, page1["message_id"].as_i64().expect("id"));
    assert!(text_of(&birds).contains("Night birds: 1 picture ·") && text_of(&birds).contains("an owl at night"));

    // Re-send the starred fox from the favourites page: by file_id, prompt and model in the caption.
    press(&h, u, &birds, "⭐ Favourites").await;
    let favs = message(&h, u, page1["message_id"].as_i64().expect("id"));
    let photos_before = h.photos(u).len();
    press(&h, u, &favs, "1⭐").await;
    h.wait_for(u, 20, "the re-sent photo", |_| h.photos(u).len() == photos_before + 1).await;
    let resent = h.photos(u).pop().expect("photo");
    assert_eq!(resent["sent_by_file_id"], true, "re-sent by file_id, not uploaded: {resent}");
    assert_eq!(resent["photo"]["file_id"], json!(fox_item.photo_file_id), "the stored file_id");
    assert!(text_of(&resent).contains("a red fox in snow") && text_of(&resent).contains("Model demo"), "{resent}");
    Harness::button(&resent, "★ Starred");
    // A seeded item has no file_id yet: it is uploaded once, and its new file_id kept.
    let page = message(&h, u, page1["message_id"].as_i64().expect("id"));
    press(&h, u, &page, "All").await;
    let all = message(&h, u, page1["message_id"].as_i64().expect("id"));
    press(&h, u, &all, "1").await;
    h.wait_for(u, 20, "the uploaded photo", |_| h.photos(u).len() == photos_before + 2).await;
    let uploaded = h.photos(u).pop().expect("photo");
    assert_eq!(uploaded["sent_by_file_id"], false);
    let newest = library(&h, u).await.into_iter().next().expect("newest");
    assert_eq!(newest.photo_file_id.as_deref(), uploaded["photo"]["file_id"].as_str(), "file_id kept for next time");

    // 🔁 re-run the fox: a new job with the same settings and a new seed, held and captured.
    let jobs_before = h.store().read(|rx| rx.find_jobs()).await.expect("jobs").len();
    let photos_before = h.photos(u).len();
    press(&h, u, &resent, "🔁 Again").await;
    h.wait_for(u, 30, "the re-run photo", |_| h.photos(u).len() == photos_before + 1).await;
    settled(&h, u).await;
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    assert_eq!(jobs.len(), jobs_before + 1);
    let rerun = jobs.last().expect("job");
    let original = jobs.iter().find(|j| Some(j.id) == fox_item.job_id).expect("fox job");
    match (&rerun.payload, &original.payload) {
        (
            JobPayload::Generate { prompt, format, width, seed, .. },
            JobPayload::Generate { prompt: p0, format: f0, width: w0, seed: s0, .. },
        ) => {
            assert_eq!((prompt, format, width), (p0, f0, w0), "same settings");
            assert_ne!(seed, s0, "a new seed");
        }
        other => panic!("re-run payloads: {other:?}"),
    }
    assert_eq!((rerun.model_id.as_str(), rerun.status, rerun.price), ("demo", JobStatus::Succeeded, Credits(10)));

    // 🔍 resize the cat 2× as a local job priced by billing.resize_price.
    let photos_before = h.photos(u).len();
    press(&h, u, &cat, "🔍 Resize").await;
    let sizes = message(&h, u, cat["message_id"].as_i64().expect("id"));
    press(&h, u, &sizes, "2×").await;
    h.wait_for(u, 60, "the resized photo", |_| h.photos(u).len() == photos_before + 1).await;
    settled(&h, u).await;
    let delivered = h.photos(u).pop().expect("resized photo");
    assert!(delivered["caption"].as_str().unwrap_or("").starts_with("🔍 Resize"), "named in the caption: {delivered}");
    let resized = library(&h, u).await.into_iter().find(|i| i.kind == "resize").expect("resize item");
    assert_eq!((resized.width, resized.height), (cat_item.width * 2, cat_item.height * 2));
    assert_eq!((resized.source, resized.prompt.as_str()), (Some(cat_item.id), "a cat on a roof"));
    let resize_job = h.store().read(|rx| rx.find_jobs()).await.expect("jobs").pop().expect("job");
    assert_eq!((resize_job.model_id.as_str(), resize_job.price), (crate::domain::RESIZE_MODEL, Credits(3)));

    // 💾 save the owl's settings as a preset, then create with it.
    press(&h, u, &owl, "💾 Save as preset").await;
    h.wait_text(u, "name for this preset").await;
    h.text(u, "en", "Owl style");
    h.wait_text(u, "Preset «Owl style» saved").await;
    h.text(u, "en", "a heron by a lake");
    let offer = h.wait_for_buttons(u, "💾 Owl style").await;
    assert!(offer["reply_markup"].to_string().contains("Model demo2"), "presets sit beside the models");
    let photos_before = h.photos(u).len();
    let a = press(&h, u, &offer, "💾 Owl style").await;
    assert_eq!(a.text.as_deref(), Some("Preset «Owl style» applied"));
    h.wait_for(u, 30, "the preset's photo", |_| h.photos(u).len() == photos_before + 1).await;
    settled(&h, u).await;
    let heron = library(&h, u).await.into_iter().find(|i| i.prompt == "a heron by a lake").expect("heron");
    assert_eq!((heron.model_id.as_str(), heron.format), (owl_item.model_id.as_str(), owl_item.format));
    // Presets are renamed and deleted from /presets.
    h.text(u, "en", "/presets");
    let list = h.wait_for_buttons(u, "✏️ Owl style").await;
    press(&h, u, &list, "✏️ Owl style").await;
    h.wait_text(u, "new name for the preset").await;
    h.text(u, "en", "Owls");
    h.wait_text(u, "Renamed to «Owls»").await;
    let presets = h.store().read(|rx| rx.find_presets(UserId(801))).await.expect("presets");
    assert_eq!(presets.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["Owls"]);

    // 🗑 delete the cat: asks first; its file is shared with the seeded items, so it stays.
    let a = press(&h, u, &cat, "🗑 Delete").await;
    assert_eq!(a.text.as_deref(), Some("Delete this picture for good?"));
    let confirm = message(&h, u, cat["message_id"].as_i64().expect("id"));
    assert!(h.store().read(move |rx| rx.get_library_item(cat_item.id)).await.expect("r").is_some(), "not before yes");
    let a = press(&h, u, &confirm, "Yes, delete").await;
    assert_eq!(a.text.as_deref(), Some("🗑 Deleted"));
    let cat_id = cat_item.id;
    assert!(h.store().read(move |rx| rx.get_library_item(cat_id)).await.expect("r").is_none());
    assert!(h.store().media_path(&cat_item.sha256, &cat_item.ext).exists(), "shared file stays");
    // The owl's file is its own: deleting the owl removes it from disk.
    let a = press(&h, u, &owl, "🗑 Delete").await;
    assert!(a.text.is_some());
    let confirm = message(&h, u, owl["message_id"].as_i64().expect("id"));
    press(&h, u, &confirm, "Yes, delete").await;
    assert!(!h.store().media_path(&owl_item.sha256, &owl_item.ext).exists(), "last reference gone → file gone");

    // Inline mode: the starred fox, personal and briefly cached; an empty query gives favourites.
    for (query, n) in [("fox", 0usize), ("", 1)] {
        h.push(json!({"user": {"id": u, "first_name": "User801", "language_code": "en"}, "inline_query": query}));
        h.wait_for(u, 20, "inline answer", |_| h.emu.inline_answers().len() > n).await;
        let ans = h.emu.inline_answers()[n].clone();
        assert!(ans.is_personal && ans.cache_time.is_some_and(|c| c <= 10), "{ans:?}");
        let results = ans.results.as_array().expect("results").clone();
        assert_eq!(results[0]["id"], fox_item.id.short(), "the star first: {results:?}");
        assert_eq!(results[0]["type"], "photo");
        assert_eq!(results[0]["photo_file_id"], json!(fox_item.photo_file_id));
        if query.is_empty() {
            assert!(results.iter().all(|r| r["id"] == fox_item.id.short()), "favourites only: {results:?}");
        } else {
            assert!(results.len() >= 2, "the re-run fox matches too: {results:?}");
        }
    }
    let chosen = ChosenInline { result_id: fox_item.id.short(), query: "fox".into() };
    h.push(json!({"user": {"id": u, "first_name": "User801"}, "chosen_inline_result": chosen}));
    wait_counter(&h, INLINE_CHOSEN, 1).await;

    // Money: three creates, a re-run, a preset create at 10 each, a resize at 3.
    assert_eq!(h.balance(u).await, Credits(100 - 5 * 10 - 3));
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_users_callback_data_is_refused_for_every_action() {
    use crate::bot::keyboards::{Callback, Shelf};
    let h = Harness::start(config).await;
    let (a, b) = (811, 812);
    welcome(&h, a).await;
    let photo = create(&h, a, "a private lighthouse").await;
    let item = library(&h, a).await.pop().expect("item");
    // A has a category and a preset, so their numbers exist (for A).
    h.store()
        .write(move |tx| {
            tx.put_category(UserId(811), "Mine")?;
            Ok::<_, crate::store::StoreError>(())
        })
        .await
        .expect("category");
    press(&h, a, &photo, "💾 Save as preset").await;
    h.wait_text(a, "name for this preset").await;
    h.text(a, "en", "A's preset");
    h.wait_text(a, "saved").await;

    let snapshot = |h: &Harness| {
        let store = h.store();
        async move {
            store
                .read(|rx| {
                    Ok::<_, crate::store::StoreError>((
                        rx.find_library(UserId(811))?,
                        rx.find_presets(UserId(811))?,
                        rx.find_categories(UserId(811))?,
                        rx.find_jobs()?.len(),
                        rx.find_library(UserId(812))?.len(),
                        rx.get_counter(INLINE_CHOSEN)?,
                        rx.get_dialogue(812)?,
                    ))
                })
                .await
                .expect("snapshot")
        }
    };
    let before = snapshot(&h).await;

    let b_mid = welcome(&h, b).await["message_id"].as_i64().expect("id");
    // Every action A's keyboards carry, replayed by B on a message in B's chat.
    let mut payloads: Vec<String> = photo["reply_markup"]["inline_keyboard"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row.as_array().into_iter().flatten())
        .filter_map(|b| b["callback_data"].as_str().map(String::from))
        .filter(|d| Callback::decode(d) != Some(Callback::CreateMore))
        .collect();
    assert!(payloads.len() >= 6, "{payloads:?}");
    let id = item.id;
    payloads.extend(
        [
            Callback::Open(id),
            Callback::Resize { item: id, factor: 2 },
            Callback::Resize { item: id, factor: 4 },
            Callback::Categorise { item: id, category: 1 },
            Callback::CategoryNew(id),
            Callback::DeleteYes(id),
            Callback::DeleteNo(id),
            Callback::Resend(id),
            Callback::Library { filter: Shelf::Category(1), page: 0 },
            Callback::PresetRename(1),
            Callback::PresetDelete(1),
        ]
        .map(|c| c.encode()),
    );
    // A's draft (its id comes from A's prompt message) with A's preset, and B's own draft with
    // A's preset number, which B does not have.
    let a_prompt = h
        .messages(a)
        .into_iter()
        .find(|m| m["from_bot"] == false && text_of(m) == "a private lighthouse")
        .expect("A's prompt");
    let a_draft = (811u128 << 64) | a_prompt["message_id"].as_u64().map(u128::from).expect("id");
    payloads.push(Callback::UsePreset { draft: a_draft, preset: 1 }.encode());
    h.text(b, "en", "a lighthouse of my own");
    let b_models = h.wait_for_buttons(b, "Model demo ·").await;
    let b_draft = match Callback::decode(&Harness::button(&b_models, "Model demo ·")) {
        Some(Callback::Model { draft, .. }) => draft,
        other => panic!("model button: {other:?}"),
    };
    payloads.push(Callback::UsePreset { draft: b_draft, preset: 1 }.encode());
    for data in &payloads {
        let update = h.press(b, "en", b_mid, data);
        let ans = answer(&h, update).await;
        assert!(ans.show_alert, "{data}: refusal is an alert: {ans:?}");
        assert_eq!(ans.text.as_deref(), Some("This button belongs to someone else."), "{data}");
    }
    // Inline: B's queries never show A's pictures, and B "choosing" A's item is not counted.
    for q in ["", "lighthouse"] {
        let n = h.emu.inline_answers().len();
        h.push(json!({"user": {"id": b, "first_name": "User812"}, "inline_query": q}));
        h.wait_for(b, 20, "inline answer", |_| h.emu.inline_answers().len() > n).await;
        assert_eq!(h.emu.inline_answers()[n].results, json!([]), "nothing of A's for {q:?}");
    }
    let chosen =
        h.push(json!({"user": {"id": b, "first_name": "User812"}, "chosen_inline_result": {"result_id": id.short()}}));
    h.wait_handled(chosen).await;

    assert_eq!(snapshot(&h).await, before, "nothing changed in the store");
    assert_eq!(kinds(&h.ledger(b).await), [OpKind::SignupBonus], "B paid for nothing");
    assert!(h.photos(b).is_empty(), "B received none of A's pictures");
    assert!(h.media_file_exists(&item), "A's file is still there");
    h.assert_no_rejections();
}

impl Harness {
    fn media_file_exists(&self, item: &LibraryItem) -> bool {
        self.store().media_path(&item.sha256, &item.ext).exists()
    }

    /// Waits until the bot finished handling an update.
    async fn wait_handled(&self, update_id: i64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !self.store().read(move |rx| rx.update_finished(update_id)).await.expect("read") {
            assert!(std::time::Instant::now() < deadline, "update {update_id} never handled");
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quota_full_of_favourites_is_told_not_purged() {
    let h = Harness::start(|d| {
        let mut c = config(d);
        c.library.max_items_per_user = 1;
        c
    })
    .await;
    let u = 821;
    welcome(&h, u).await;
    let first = create(&h, u, "a kept star").await;
    press(&h, u, &first, "⭐").await;
    create(&h, u, "one more").await;
    h.wait_text(u, "Your library is full (1 picture)").await;
    let lib = library(&h, u).await;
    assert_eq!(lib.len(), 2, "the favourite stays, and so does the new picture");
    assert!(lib.iter().any(|i| i.favourite && i.prompt == "a kept star"));
    // Unstarred, it is the oldest non-favourite: the next picture pushes it out, file and all.
    let starred = message(&h, u, first["message_id"].as_i64().expect("id"));
    press(&h, u, &starred, "★ Starred").await;
    let old = lib.iter().find(|i| i.prompt == "a kept star").cloned().expect("old");
    create(&h, u, "the newest").await;
    let lib = library(&h, u).await;
    assert_eq!(lib.iter().map(|i| i.prompt.as_str()).collect::<Vec<_>>(), ["the newest"]);
    assert!(!h.media_file_exists(&old), "purged from disk");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_id_telegram_forgot_is_replaced_by_an_upload() {
    let h = Harness::start(config).await;
    let u = 831;
    welcome(&h, u).await;
    create(&h, u, "a forgotten harbour").await;
    let item = library(&h, u).await.pop().expect("item");
    let old = item.photo_file_id.clone().expect("file_id stored at delivery");
    assert!(h.emu.forget_file(&old));
    h.text(u, "en", "/my");
    let list = h.wait_text(u, "page 1/1").await;
    press(&h, u, &list, "1").await;
    h.wait_for(u, 20, "the uploaded photo", |_| h.photos(u).len() == 2).await;
    let sent = h.photos(u).pop().expect("photo");
    assert_eq!(sent["sent_by_file_id"], false, "uploaded: {sent}");
    let rejected = h.emu.rejections();
    assert_eq!(rejected.len(), 1, "only the forgotten file_id: {rejected:?}");
    assert_eq!(rejected[0].method, "sendPhoto");
    let new = library(&h, u).await.pop().expect("item").photo_file_id.expect("new file_id");
    assert_ne!(new, old);
    assert_eq!(sent["photo"]["file_id"], new.as_str(), "the new file_id is kept");
    // Next time it goes by the new file_id again.
    press(&h, u, &list, "1").await;
    h.wait_for(u, 20, "the re-sent photo", |_| h.photos(u).len() == 3).await;
    assert_eq!(h.photos(u).pop().expect("photo")["sent_by_file_id"], true);
}
