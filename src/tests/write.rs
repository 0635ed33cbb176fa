//! "✍️ Написать" end to end in Russian: an idea → the language model (an OpenAI-compatible
//! fake) writes the prompt → its buttons start a create or an edit with it; the hold is
//! captured only when the prompt is written, and released when the model fails or is late.

use super::fakes::fal::FakeFal;
use super::fakes::{ChatScenario, FakeChat};
use super::harness::*;
use crate::config::ProviderKind;
use crate::domain::{Credits, Task};
use crate::store::records::{JobPayload, OpKind};

async fn write_harness(chat: &FakeChat, fal: &FakeFal, timeout_secs: u64) -> Harness {
    let (llm_url, fal_url) = (chat.base_url(), fal.base_url());
    Harness::start(move |d| {
        let mut c = test_config(d);
        c.billing.currency = crate::config::BillingConfig::default().currency;
        c.billing.write_price = Credits(2);
        c.llm = Some(
            toml::from_str(&format!(
                "kind = \"openai\"\nbase_url = \"{llm_url}\"\nmodel = \"gpt-test\"\ntimeout_secs = {timeout_secs}\n"
            ))
            .expect("[llm]"),
        );
        c.providers.push(provider("fal", ProviderKind::Fal, &fal_url));
        let mut flux = model("flux", "fal", 10);
        flux.formats = vec![crate::domain::Format::Square];
        let mut edit = model("edit", "fal", 10);
        edit.task = Task::Edit;
        edit.endpoint = "fal-ai/nano-banana/edit".into();
        c.models.extend([flux, edit]);
        c
    })
    .await
}

fn answer(text: &str) -> ChatScenario {
    ChatScenario::Answer { content: text.into(), finish_reason: "stop".into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_written_prompt_is_charged_once_and_its_buttons_create_and_edit_with_it() {
    let chat = FakeChat::start().await;
    let written = "A ginger cat in a silver spacesuit floating above a garden, soft morning light, watercolour.";
    chat.set_scenario(answer(written));
    let fal = FakeFal::start().await;
    let h = write_harness(&chat, &fal, 10).await;
    let u = 951;
    h.text(u, "ru", "/start");
    let menu = h.wait_for_buttons(u, "✍️ Написать").await;
    h.press(u, "ru", menu["message_id"].as_i64().expect("id"), &Harness::button(&menu, "✍️ Написать"));
    h.wait_text(u, "пришлите короткую идею").await;
    h.text(u, "ru", "кот-космонавт в саду");
    let reply = h.wait_for_buttons(u, "Создать с этим промптом").await;
    assert_eq!(super::harness::text_of(&reply), written);
    assert!(reply["reply_markup"].to_string().contains("Изменить с этим промптом"), "{reply}");
    h.wait_text(u, "Промпт написан за").await;
    let sent = chat.requests();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].body.to_string().contains("кот-космонавт в саду"), "the idea reaches the model: {:?}", sent[0]);
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!(h.balance(u).await, Credits(98));

    // "🎨 Создать": the written prompt goes to the create flow as if typed.
    h.press(u, "ru", reply["message_id"].as_i64().expect("id"), &Harness::button(&reply, "Создать с этим"));
    h.wait_for(u, 30, "the picture", |_| h.photos(u).len() == 1).await;
    assert_eq!(fal.last_submit_body().expect("submitted")["prompt"], written);

    // "✏️ Изменить": the photos sent next are edited with it.
    h.press(u, "ru", reply["message_id"].as_i64().expect("id"), &Harness::button(&reply, "Изменить с этим"));
    h.wait_text(u, "изменю их по этому промпту").await;
    h.photo(u, "ru", &testdata("photos/orientation/Landscape_1.jpg"), None);
    h.wait_for(u, 30, "the edited photo", |_| h.photos(u).len() == 2).await;
    let body = fal.last_submit_body().expect("submitted");
    assert_eq!(body["prompt"], written);
    assert!(body["image_urls"].as_array().is_some_and(|a| a.len() == 1), "{body}");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_that_does_not_answer_in_time_costs_nothing() {
    let chat = FakeChat::start().await;
    chat.set_scenario(ChatScenario::Hang);
    let fal = FakeFal::start().await;
    let h = write_harness(&chat, &fal, 1).await;
    let u = 952;
    h.text(u, "ru", "/write");
    h.wait_text(u, "пришлите короткую идею").await;
    h.text(u, "ru", "маяк в шторм");
    let told = h.wait_text(u, "не успел").await;
    assert!(super::harness::text_of(&told).contains("2 кредита"), "the hold comes back: {told}");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Hold, OpKind::Release]);
    assert_eq!(h.balance(u).await, Credits(100));
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_prompt_is_split_at_sentences_and_the_buttons_go_under_the_last_part() {
    let chat = FakeChat::start().await;
    let sentence = "Большой рыжий кот в серебристом скафандре парит над цветущим садом. ";
    let long = sentence.repeat(80); // ~5,400 characters: two Telegram messages
    chat.set_scenario(answer(&long));
    let fal = FakeFal::start().await;
    let h = write_harness(&chat, &fal, 10).await;
    let u = 953;
    h.text(u, "ru", "/write");
    h.wait_text(u, "пришлите короткую идею").await;
    h.text(u, "ru", "кот");
    let last = h.wait_for_buttons(u, "Создать с этим промптом").await;
    let parts: Vec<String> =
        h.bot_messages(u).iter().map(super::harness::text_of).filter(|t| t.starts_with("Большой рыжий кот")).collect();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert!(parts.iter().all(|p| p.encode_utf16().count() <= 4096 && p.ends_with('.')), "cut at sentence ends");
    assert_eq!(parts.join(" "), long.trim_end(), "nothing lost");
    assert_eq!(super::harness::text_of(&last), parts[1]);
    // The button still creates with the whole prompt.
    let job = h.store().read(|rx| rx.find_jobs()).await.expect("jobs").into_iter().next().expect("job");
    assert!(matches!(&job.payload, JobPayload::WritePrompt { written: Some(w), .. } if w == long.trim_end()));
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_language_model_write_says_so_and_help_leaves_it_out() {
    let h = Harness::start(test_config).await;
    let u = 954;
    h.text(u, "ru", "/start");
    let menu = h.wait_text(u, "бонус").await;
    assert!(!menu["reply_markup"].to_string().contains("Написать"), "no menu entry: {menu}");
    h.text(u, "ru", "/write");
    h.wait_text(u, "не настроено").await;
    h.text(u, "ru", "/help");
    let help = h.wait_text(u, "Что я умею").await;
    assert!(!super::harness::text_of(&help).contains("✍️ Написать"), "{help}");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus]);
    h.assert_no_rejections();
}
