//! Automatic translation end to end in Russian (issue 19): a `translate = true` model on fal
//! gets the user's prompt in English from the `[llm]` language model ([`FakeChat`]), the
//! progress message shows it, a language model that hangs or fails leaves the original prompt,
//! other models never ask, and a retry after a restart reuses the stored translation.

use super::fakes::{ChatScenario, FakeChat, FakeFal, FalScenario};
use super::harness::*;
use crate::config::{Config, LlmConfig, ProviderKind};
use crate::store::records::{JobRecord, OpKind, Translation};
use serde_json::json;
use std::time::{Duration, Instant};

const PROMPT: &str = "рыжая лиса на снегу";
const ENGLISH: &str = "a red fox in the snow";

fn llm_section(base_url: &str, translate_timeout_secs: u64) -> LlmConfig {
    toml::from_str(&format!(
        "kind = \"openai\"\nbase_url = \"{base_url}\"\nmodel = \"gpt-test\"\ntranslate_timeout_secs = {translate_timeout_secs}\n"
    ))
    .expect("llm section")
}

/// fal with one model (`translate` as given) and `[llm]` on the chat fake.
async fn translate_harness(fal: &FakeFal, chat: &FakeChat, translate: bool, tune: impl FnOnce(&mut Config)) -> Harness {
    let (fal_url, chat_url) = (fal.base_url(), chat.base_url());
    Harness::start(move |d| {
        let mut c = test_config(d);
        c.providers.push(provider("fal", ProviderKind::Fal, &fal_url));
        let mut m = model("seedream", "fal", 10);
        m.display_name = "Seedream 4".into();
        m.endpoint = "fal-ai/bytedance/seedream/v4/text-to-image".into();
        m.translate = translate;
        c.models.push(m);
        c.llm = Some(llm_section(&chat_url, 8));
        tune(&mut c);
        c
    })
    .await
}

/// /start, the prompt, "⬛ Квадрат"; returns the progress message's id.
async fn order(h: &Harness, u: i64, prompt: &str) -> i64 {
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    h.text(u, "ru", prompt);
    let f = h.wait_for_buttons(u, "Квадрат").await;
    let id = f["message_id"].as_i64().expect("id");
    h.press(u, "ru", id, &Harness::button(&f, "Квадрат"));
    id
}

async fn only_job(h: &Harness) -> JobRecord {
    let jobs = h.store().read(|rx| rx.find_jobs()).await.expect("jobs");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    jobs.into_iter().next().expect("one job")
}

/// The job runs on `prompt` as written: one photo, the fal body's prompt is the Russian text,
/// the ledger is bonus, hold, capture.
async fn ran_with_original(h: &Harness, fal: &FakeFal, u: i64) -> JobRecord {
    h.wait_for(u, 30, "the picture", |_| h.photos(u).len() == 1).await;
    assert_eq!(fal.last_submit_body().expect("submitted")["prompt"], PROMPT);
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    let job = only_job(h).await;
    assert_eq!(job.translation, Some(Translation::Original), "decided once: as written");
    assert!(h.messages(u).iter().all(|m| !text_of(m).contains("🌐")), "no translation shown");
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_translate_model_gets_the_english_prompt_and_the_progress_shows_it() {
    let (fal, chat) = (FakeFal::start().await, FakeChat::start().await);
    fal.hold();
    let h = translate_harness(&fal, &chat, true, |_| {}).await;
    let u = 1101;
    let progress = order(&h, u, PROMPT).await;
    let shown = h.wait_text(u, "🌐 Перевод: a red fox in the snow").await;
    assert_eq!(shown["message_id"].as_i64(), Some(progress), "in the progress message: {shown}");
    assert!(text_of(&shown).contains("Seedream 4"), "under the usual progress: {shown}");
    fal.release();
    h.wait_for(u, 30, "the picture", |_| h.photos(u).len() == 1).await;

    let body = fal.last_submit_body().expect("submitted");
    assert_eq!(body["prompt"], ENGLISH, "{body}");
    let asked = chat.requests();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].body["messages"][1], json!({"role": "user", "content": PROMPT}));
    assert_eq!(asked[0].body["messages"][0]["content"], crate::config::default_translate_prompt());
    let job = only_job(&h).await;
    assert_eq!(job.translation, Some(Translation::English { text: ENGLISH.into() }));
    let items = h.store().read(move |rx| rx.find_library(crate::domain::UserId(u))).await.expect("library");
    assert_eq!(items.iter().map(|i| i.prompt.as_str()).collect::<Vec<_>>(), [PROMPT], "the library keeps her words");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_language_model_that_never_answers_costs_at_most_the_translate_timeout() {
    let (fal, chat) = (FakeFal::start().await, FakeChat::start().await);
    chat.set_scenario(ChatScenario::Hang);
    let h = translate_harness(&fal, &chat, true, |c| {
        c.llm = c.llm.take().map(|l| LlmConfig { translate_timeout_secs: 1, ..l });
    })
    .await;
    let u = 1102;
    order(&h, u, PROMPT).await;
    let pressed = Instant::now();
    assert!(super::fakes::eventually(Duration::from_secs(20), || fal.submits_total() == 1).await, "submitted");
    let waited = pressed.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "bounded by 1 s: {waited:?}");
    ran_with_original(&h, &fal, u).await;
    assert_eq!(chat.requests().len(), 1);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_language_model_leaves_the_original_prompt() {
    let (fal, chat) = (FakeFal::start().await, FakeChat::start().await);
    chat.set_scenario(ChatScenario::Status { status: 500, body: json!({"error": {"message": "boom"}}) });
    let h = translate_harness(&fal, &chat, true, |_| {}).await;
    let u = 1103;
    order(&h, u, PROMPT).await;
    ran_with_original(&h, &fal, u).await;
    assert_eq!(chat.requests().len(), 1, "asked once, not retried");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn models_without_translate_and_english_prompts_never_ask_the_language_model() {
    let (fal, chat) = (FakeFal::start().await, FakeChat::start().await);
    let mut h = translate_harness(&fal, &chat, false, |_| {}).await;
    let u = 1104;
    order(&h, u, PROMPT).await;
    h.wait_for(u, 30, "the picture", |_| h.photos(u).len() == 1).await;
    assert_eq!(fal.last_submit_body().expect("submitted")["prompt"], PROMPT);
    assert_eq!(only_job(&h).await.translation, None, "nothing to decide");
    assert_eq!(chat.requests().len(), 0);
    h.verify_clean().await;
    h.assert_no_rejections();
    h.stop_app().await;

    // A translate model with an English-looking prompt (ASCII letters, an emoji) is not asked.
    let fal = FakeFal::start().await;
    let h = translate_harness(&fal, &chat, true, |_| {}).await;
    order(&h, u, "a lighthouse at dusk 🌅").await;
    h.wait_for(u, 30, "the picture", |_| h.photos(u).len() == 1).await;
    assert_eq!(fal.last_submit_body().expect("submitted")["prompt"], "a lighthouse at dusk 🌅");
    assert_eq!(only_job(&h).await.translation, Some(Translation::Original));
    assert_eq!(chat.requests().len(), 0);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[test]
fn english_looking_prompts_are_the_ascii_letter_ones() {
    use crate::jobs::generate::needs_translation;
    for english in ["a red fox", "cat, 4k, --ar 16:9", "🐱 + 🌅", ""] {
        assert!(!needs_translation(english), "{english}");
    }
    for other in [PROMPT, "Лиса", "café au lait", "狐狸", "fox на снегу"] {
        assert!(needs_translation(other), "{other}");
    }
}

#[test]
fn check_config_refuses_translate_without_llm_and_bounds_the_timeout() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("c.toml");
    let catalog = "[[providers]]\nid = \"fal\"\nkind = \"fal\"\nbase_url = \"https://queue.fal.run\"\n\n\
                   [[models]]\nid = \"seedream\"\nprovider = \"fal\"\ndisplay_name = \"Seedream 4\"\n\
                   endpoint = \"fal-ai/bytedance/seedream/v4/text-to-image\"\nprice = 10\ntranslate = true\n";
    std::fs::write(&p, catalog).expect("write");
    let e = Config::load(Some(&p)).expect_err("translate needs [llm]");
    assert_eq!(e.key, "models[0].translate", "{e}");
    assert!(e.to_string().contains("[llm]"), "{e}");

    let llm = "\n[llm]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:8081/v1\"\nmodel = \"local\"\n";
    std::fs::write(&p, format!("{catalog}{llm}")).expect("write");
    let c = Config::load(Some(&p)).expect("with [llm]");
    assert!(c.models[0].translate);
    assert_eq!(c.llm.expect("llm").translate_timeout_secs, 8, "the default");
    for bad in [0, 61] {
        std::fs::write(&p, format!("{catalog}{llm}translate_timeout_secs = {bad}\n")).expect("write");
        assert_eq!(Config::load(Some(&p)).expect_err("out of range").key, "llm.translate_timeout_secs");
    }
    // Not set: false, and no [llm] needed.
    std::fs::write(&p, catalog.replace("translate = true\n", "")).expect("write");
    assert!(!Config::load(Some(&p)).expect("plain model").models[0].translate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_a_restart_reuses_the_stored_translation() {
    let (fal, chat) = (FakeFal::start().await, FakeChat::start().await);
    // The first submit fails (500): the job waits out a long backoff, and the app restarts
    // meanwhile, so the new process resumes the job from what was stored.
    fal.push_scenario(FalScenario::SubmitError { status: 500, body: json!({"detail": "busy"}).to_string() });
    let mut h = translate_harness(&fal, &chat, true, |c| c.jobs.retry_base_ms = 20_000).await;
    let u = 1106;
    order(&h, u, PROMPT).await;
    let store = h.store();
    let mut stored = None;
    for _ in 0..500 {
        let jobs = store.read(|rx| rx.find_jobs()).await.expect("jobs");
        if let Some(j) = jobs.into_iter().find(|j| j.error.is_some()) {
            stored = Some(j);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored = stored.expect("the failed submit was recorded");
    assert_eq!(stored.translation, Some(Translation::English { text: ENGLISH.into() }), "stored with the job");
    assert_eq!((fal.submits_total(), chat.requests().len()), (1, 1));
    drop(store);
    h.restart().await;
    h.wait_for(u, 30, "the picture after the restart", |_| h.photos(u).len() == 1).await;
    assert_eq!(fal.submits_total(), 2, "submitted again");
    assert_eq!(fal.last_submit_body().expect("submitted")["prompt"], ENGLISH);
    assert_eq!(chat.requests().len(), 1, "translated once");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    h.verify_clean().await;
    h.assert_no_rejections();
}
