//! Telegram Stars top-ups end to end, in Russian: 💳 under the balance and under "not enough
//! credits", /buy, the invoice, the emulator paying it, and the credit landing once however
//! often Telegram delivers the payment.

use super::harness::*;
use crate::config::{Package, ProviderKind};
use crate::domain::{Credits, UserId};
use crate::emulator::{PayInvoice, PayOutcome};
use crate::store::records::{OpKind, PaymentState};
use serde_json::{Value, json};

fn small() -> Package {
    Package { id: "small".into(), credits: Credits(100), stars: 50, crypto: None, bonus_percent: 10 }
}

fn shop_config(dir: &std::path::Path) -> crate::config::Config {
    let mut c = test_config(dir);
    c.billing.currency = crate::config::BillingConfig::default().currency;
    c.providers.push(provider("demo", ProviderKind::Demo, ""));
    c.models.push(model("demo", "demo", 10));
    c.billing.packages = vec![small()];
    c
}

fn user(id: i64) -> Value {
    json!({"id": id, "first_name": format!("User{id}"), "username": format!("user{id}"), "language_code": "ru"})
}

async fn pay(h: &Harness, id: i64, message_id: i64) -> PayOutcome {
    let u = serde_json::from_value(user(id)).expect("user");
    h.emu.pay(u, PayInvoice { message_id: Some(message_id), invoice_link: None }).await.expect("an invoice to pay")
}

/// /start, then /buy and the package button: the invoice message.
async fn invoice(h: &Harness, u: i64) -> Value {
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    h.text(u, "ru", "/buy");
    let list = h.wait_for_buttons(u, "⭐50").await;
    h.press(u, "ru", list["message_id"].as_i64().expect("id"), &Harness::button(&list, "⭐50"));
    let msgs = h.wait_for(u, 20, "the invoice", |m| m.iter().any(|x| !x["invoice"].is_null())).await;
    msgs.into_iter().find(|x| !x["invoice"].is_null()).expect("invoice")
}

/// Sends /balance and waits for its answer: every update queued before it was handled by then
/// (one chat's updates are handled in order).
async fn settle(h: &Harness, u: i64, expect_balance: &str) {
    let before = h.bot_messages(u).iter().filter(|m| text_of(m).contains("Баланс")).count();
    h.text(u, "ru", "/balance");
    let msgs = h
        .wait_for(u, 20, "the balance answer", |m| {
            m.iter().filter(|x| x["from_bot"] == true && text_of(x).contains("Баланс")).count() > before
        })
        .await;
    let last = msgs.iter().rev().find(|x| x["from_bot"] == true && text_of(x).contains("Баланс")).expect("balance");
    assert!(text_of(last).contains(expect_balance), "{last}");
}

fn credited_messages(h: &Harness, u: i64) -> usize {
    h.bot_messages(u).iter().filter(|m| text_of(m).contains("Зачислено")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stars_purchase_is_credited_once_however_often_it_is_delivered() {
    let h = Harness::start(shop_config).await;
    let u = 2101;
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    // 💳 under the balance → the packages, priced in generations of the cheapest model (10).
    h.text(u, "ru", "/balance");
    let balance = h.wait_for_buttons(u, "💳 Пополнить").await;
    h.press(u, "ru", balance["message_id"].as_i64().expect("id"), &Harness::button(&balance, "Пополнить"));
    let list = h.wait_for_buttons(u, "⭐50").await;
    assert!(text_of(&list).contains("Выберите пакет"), "{list}");
    let label = list["reply_markup"]["inline_keyboard"][0][0]["text"].as_str().expect("label").to_string();
    assert_eq!(label, "100 кредитов (+10) — ⭐50 · ≈ 11 генераций");
    h.press(u, "ru", list["message_id"].as_i64().expect("id"), &Harness::button(&list, "⭐50"));
    let msgs = h.wait_for(u, 20, "the invoice", |m| m.iter().any(|x| !x["invoice"].is_null())).await;
    let inv = msgs.iter().find(|x| !x["invoice"].is_null()).expect("invoice");
    assert_eq!(inv["invoice"]["currency"], "XTR");
    assert_eq!(inv["invoice"]["total_amount"], 50);
    assert_eq!(inv["invoice"]["invoice_payload"], format!("pkg:small:{u}"));
    assert_eq!(inv["invoice"]["title"], "110 кредитов");

    let out = pay(&h, u, inv["message_id"].as_i64().expect("id")).await;
    assert!(out.paid, "{out:?}");
    let done = h.wait_text(u, "Зачислено").await;
    assert_eq!(text_of(&done), "✅ Зачислено 110 кредитов, баланс 210 кредитов.");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Purchase]);
    assert_eq!(h.balance(u).await, Credits(210));
    h.verify_clean().await;

    // Telegram delivers the same successful_payment update three more times, then twice at once.
    let update = out.successful_payment_update_id.expect("update id");
    for _ in 0..3 {
        h.push(json!({"user": user(u), "replay_update": update}));
    }
    settle(&h, u, "210").await;
    let replay = json!({"user": user(u), "replay_update": update});
    let (a, b) = tokio::join!(async { h.push(replay.clone()) }, async { h.push(replay.clone()) });
    assert_eq!((a, b), (update, update));
    settle(&h, u, "210").await;
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Purchase], "credited once");
    assert_eq!(credited_messages(&h, u), 1, "told once");
    let payments = h.store().read(|rx| rx.find_payments()).await.expect("payments");
    assert_eq!(payments.len(), 1);
    let p = &payments[0];
    assert_eq!(Some(&p.telegram_payment_charge_id), out.telegram_payment_charge_id.as_ref());
    assert_eq!(
        (p.user_id, p.package_id.as_str(), p.credits, p.stars, p.state),
        (UserId(u), "small", Credits(110), 50, PaymentState::Paid)
    );
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_handled_again_after_a_restart_is_not_credited_twice() {
    let mut h = Harness::start(shop_config).await;
    let u = 2102;
    let inv = invoice(&h, u).await;
    let out = pay(&h, u, inv["message_id"].as_i64().expect("id")).await;
    assert!(out.paid, "{out:?}");
    h.wait_text(u, "Зачислено").await;
    // The process died after crediting but before recording the update as handled: on the
    // next start the update is handled again; the charge id stops a second credit.
    let update = out.successful_payment_update_id.expect("update id");
    h.store().write(move |tx| tx.mark_update_interrupted(update)).await.expect("mark unfinished");
    h.restart().await;
    h.push(json!({"user": user(u), "replay_update": update}));
    settle(&h, u, "210").await;
    let handled = h.store().read(move |rx| rx.update_finished(update)).await.expect("read");
    assert!(handled, "the re-delivered payment was handled again (and found already credited)");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Purchase]);
    assert_eq!(credited_messages(&h, u), 1);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pre_checkout_for_a_removed_package_is_refused_and_nothing_is_credited() {
    let mut h = Harness::start(shop_config).await;
    let u = 2103;
    let inv = invoice(&h, u).await;
    h.config.billing.packages.clear();
    h.restart().await;
    let out = pay(&h, u, inv["message_id"].as_i64().expect("id")).await;
    assert!(!out.paid, "{out:?}");
    assert_eq!(out.reason.as_deref(), Some("declined"));
    assert_eq!(out.error_message.as_deref(), Some("Этот пакет больше не продаётся. Откройте /buy и выберите снова."));
    assert_eq!(out.successful_payment_update_id, None);
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus]);
    assert!(h.store().read(|rx| rx.find_payments()).await.expect("payments").is_empty());
    // Without packages there is nothing to buy.
    h.text(u, "ru", "/buy");
    h.wait_text(u, "Пополнение пока недоступно").await;
    settle(&h, u, "100").await;
    let last = h.bot_messages(u).into_iter().rev().find(|m| text_of(m).contains("Баланс")).expect("balance");
    assert!(!last["reply_markup"].to_string().contains("Пополнить"), "no top-up button without packages: {last}");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_banned_payer_gets_a_refusal_not_silence() {
    let h = Harness::start(shop_config).await;
    let u = 2104;
    let inv = invoice(&h, u).await;
    h.store()
        .write(move |tx| {
            let mut rec = tx.get_user(UserId(u))?.expect("user");
            rec.banned = true;
            tx.put_user(&rec)
        })
        .await
        .expect("ban");
    let out = pay(&h, u, inv["message_id"].as_i64().expect("id")).await;
    assert_eq!((out.paid, out.reason.as_deref()), (false, Some("declined")), "{out:?}");
    assert_eq!(out.error_message.as_deref(), Some("Доступ к боту приостановлен, оплата недоступна."));
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus]);
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn not_enough_credits_offers_a_top_up_and_payment_commands_answer() {
    let h = Harness::start(|d| {
        let mut c = shop_config(d);
        c.models[0].price = Credits(500);
        c.billing.support = "@shop_help".into();
        c
    })
    .await;
    let u = 2105;
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    h.create(u, "ru", "дорогой кот | model=demo", "Квадрат", "Квадрат").await;
    let refusal = h.wait_text(u, "Недостаточно средств").await;
    h.press(u, "ru", refusal["message_id"].as_i64().expect("id"), &Harness::button(&refusal, "💳 Пополнить"));
    let list = h.wait_for_buttons(u, "⭐50").await;
    let label = list["reply_markup"]["inline_keyboard"][0][0]["text"].as_str().expect("label").to_string();
    assert!(!label.contains('≈'), "110 credits buy no 500-credit generation: {label}");
    h.text(u, "ru", "/paysupport");
    let support = h.wait_text(u, "Вопросы по оплате").await;
    assert!(text_of(&support).contains("@shop_help"), "{support}");
    h.text(u, "ru", "/terms");
    h.wait_text(u, "Условия оплаты").await;
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus]);
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_payment_in_the_middle_of_a_flow_is_credited_and_the_flow_goes_on() {
    let h = Harness::start(shop_config).await;
    let u = 2106;
    let inv = invoice(&h, u).await;
    // The user opens "📝 Добавить текст" (the chat now waits for a photo), then pays.
    h.text(u, "ru", "/menu");
    let menu = h.wait_for_buttons(u, "Добавить текст").await;
    h.press(u, "ru", menu["message_id"].as_i64().expect("id"), &Harness::button(&menu, "Добавить текст"));
    h.wait_text(u, "пришлите фото").await;
    let out = pay(&h, u, inv["message_id"].as_i64().expect("id")).await;
    assert!(out.paid, "{out:?}");
    h.wait_text(u, "Зачислено 110 кредитов").await;
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Purchase]);
    // The step is untouched: /cancel still ends the add-text flow.
    h.text(u, "ru", "/cancel");
    h.wait_text(u, "Добавление текста отменено").await;
    h.verify_clean().await;
    h.assert_no_rejections();
}
