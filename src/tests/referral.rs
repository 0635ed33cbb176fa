//! Referral links end to end, in Russian: the link under "👥 Пригласить" and /invite, a new
//! user's `/start ref_…` paying the referrer a signup reward, a share of the referee's Stars
//! purchase paid once however often Telegram delivers it, refusals (oneself, an existing user,
//! an unknown code) and the daily cap.

use super::harness::*;
use crate::billing::referral_code;
use crate::config::{Package, ProviderKind, ReferralConfig};
use crate::domain::{Credits, UserId};
use crate::emulator::PayInvoice;
use crate::store::records::{OpKind, Operation};
use serde_json::{Value, json};

/// The emulator's bot username (`getMe`).
const BOT: &str = "mediabot_emulator_bot";

fn config(dir: &std::path::Path, referral: ReferralConfig) -> crate::config::Config {
    let mut c = test_config(dir);
    c.billing.currency = crate::config::BillingConfig::default().currency;
    c.billing.signup_bonus = Credits(100);
    c.providers.push(provider("demo", ProviderKind::Demo, ""));
    c.models.push(model("demo", "demo", 10));
    c.billing.packages =
        vec![Package { id: "small".into(), credits: Credits(100), stars: 50, crypto: None, bonus_percent: 10 }];
    c.billing.referral = referral;
    c
}

fn user(id: i64) -> Value {
    json!({"id": id, "first_name": format!("User{id}"), "username": format!("user{id}"), "language_code": "ru"})
}

/// Sends `/invite` and returns the answer (the n-th invite card of the chat).
async fn invite(h: &Harness, u: i64) -> String {
    let before = h.bot_messages(u).iter().filter(|m| text_of(m).contains("Приглашайте")).count();
    h.text(u, "ru", "/invite");
    let msgs = h
        .wait_for(u, 20, "the invite card", |m| {
            m.iter().filter(|x| x["from_bot"] == true && text_of(x).contains("Приглашайте")).count() > before
        })
        .await;
    text_of(msgs.iter().rev().find(|x| x["from_bot"] == true && text_of(x).contains("Приглашайте")).expect("card"))
}

/// `/start` (with `payload`) from a user; waits for its welcome.
async fn start(h: &Harness, u: i64, payload: &str) {
    let count = |m: &[Value]| m.iter().filter(|x| x["from_bot"] == true && text_of(x).starts_with("Привет")).count();
    let before = count(&h.messages(u));
    h.text(u, "ru", format!("/start {payload}").trim_end());
    h.wait_for(u, 20, "the welcome", |m| count(m) > before).await;
}

/// Sends /balance and waits for its answer: everything queued before it was handled by then.
async fn settle(h: &Harness, u: i64) {
    let count = |m: &[Value]| m.iter().filter(|x| x["from_bot"] == true && text_of(x).contains("Баланс")).count();
    let before = count(&h.messages(u));
    h.text(u, "ru", "/balance");
    h.wait_for(u, 20, "the balance answer", |m| count(m) > before).await;
}

fn referrals(ops: &[Operation]) -> Vec<(i64, String)> {
    ops.iter()
        .filter(|o| o.kind == OpKind::Referral)
        .map(|o| (o.amount.0, o.reason.clone().unwrap_or_default()))
        .collect()
}

async fn referral_info(h: &Harness, u: i64) -> crate::store::records::ReferralInfo {
    h.store().read(move |rx| rx.get_user(UserId(u))).await.expect("read").expect("user").referral
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_referral_pays_the_signup_reward_and_a_purchase_share_once() {
    let rules = ReferralConfig { signup_bonus: Credits(20), purchase_percent: 10, daily_cap: Credits::ZERO };
    let h = Harness::start(|d| config(d, rules)).await;
    let (a, b) = (2201, 2202);
    start(&h, a, "").await;
    // The link under "👥 Пригласить" in the main menu and /invite.
    h.text(a, "ru", "/menu");
    let menu = h.wait_for_buttons(a, "👥 Пригласить").await;
    h.press(a, "ru", menu["message_id"].as_i64().expect("id"), &Harness::button(&menu, "👥 Пригласить"));
    let card = text_of(&h.wait_text(a, "Приглашайте").await);
    let code = referral_code(UserId(a));
    let link = format!("t.me/{BOT}?start=ref_{code}");
    assert!(card.contains(&link), "{card}");
    assert!(card.contains("Присоединились: 0"), "{card}");
    assert!(card.contains("За каждого нового пользователя — 20 кредитов"), "{card}");
    assert!(card.contains("10% купленных кредитов"), "{card}");

    // A new user opens the link: attributed in the registration, the referrer gets 20.
    start(&h, b, &format!("ref_{code}")).await;
    assert_eq!(referrals(&h.ledger(a).await), [(20, format!("ref:{b}"))]);
    assert_eq!(h.balance(a).await, Credits(120));
    assert_eq!(h.balance(b).await, Credits(100), "the referee gets the usual signup bonus");
    assert_eq!(referral_info(&h, b).await.by, Some(UserId(a)));
    h.verify_clean().await;

    // The referee buys 110 credits: 10% (11) to the referrer, linked to the charge.
    h.text(b, "ru", "/buy");
    let list = h.wait_for_buttons(b, "⭐50").await;
    h.press(b, "ru", list["message_id"].as_i64().expect("id"), &Harness::button(&list, "⭐50"));
    let msgs = h.wait_for(b, 20, "the invoice", |m| m.iter().any(|x| !x["invoice"].is_null())).await;
    let inv = msgs.into_iter().find(|x| !x["invoice"].is_null()).expect("invoice");
    let payer = serde_json::from_value(user(b)).expect("user");
    let pay = PayInvoice { message_id: inv["message_id"].as_i64(), invoice_link: None };
    let out = h.emu.pay(payer, pay).await.expect("paid");
    assert!(out.paid, "{out:?}");
    h.wait_text(b, "Зачислено").await;
    let charge = out.telegram_payment_charge_id.clone().expect("charge");
    let expected = [(20, format!("ref:{b}")), (11, format!("ref:{b}:stars:{charge}"))];
    assert_eq!(referrals(&h.ledger(a).await), expected);
    assert_eq!(h.balance(a).await, Credits(131));
    h.verify_clean().await;

    // Telegram delivers the payment again: neither the purchase nor the share is paid twice.
    let update = out.successful_payment_update_id.expect("update id");
    for _ in 0..3 {
        h.push(json!({"user": user(b), "replay_update": update}));
    }
    settle(&h, b).await;
    assert_eq!(referrals(&h.ledger(a).await), expected, "the share is paid once");
    assert_eq!(h.balance(a).await, Credits(131));
    assert_eq!(h.balance(b).await, Credits(210));
    h.verify_clean().await;

    // The referrer's history names both rewards.
    h.text(a, "ru", "/history");
    let history = text_of(&h.wait_text(a, "История операций, страница").await);
    assert!(history.contains("+20 кредитов · за приглашение"), "{history}");
    assert!(history.contains("+11 кредитов · за приглашение"), "{history}");

    let card = invite(&h, a).await;
    assert!(card.contains("Присоединились: 1"), "{card}");
    assert!(card.contains("Заработано: 31 кредит"), "{card}");
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oneself_an_existing_user_and_unknown_codes_are_refused_and_the_daily_cap_holds() {
    let rules = ReferralConfig { signup_bonus: Credits(20), purchase_percent: 0, daily_cap: Credits(30) };
    let h = Harness::start(|d| config(d, rules)).await;
    let (a, c) = (2211, 2212);
    start(&h, a, "").await;
    start(&h, c, "").await;
    let code = format!("ref_{}", referral_code(UserId(a)));

    // A new user opening their own link, an existing user opening a link, an unknown code, and
    // the referrer opening their own link again: nobody is attributed, nobody is paid.
    let own = 2213;
    start(&h, own, &format!("ref_{}", referral_code(UserId(own)))).await;
    start(&h, c, &code).await;
    start(&h, 2214, "ref_zzzzzzz").await;
    start(&h, 2215, "ref_").await;
    start(&h, a, &code).await;
    for u in [own, c, 2214, 2215, a] {
        assert_eq!(referral_info(&h, u).await.by, None, "user {u}");
    }
    assert!(referrals(&h.ledger(a).await).is_empty());
    assert!(referrals(&h.ledger(own).await).is_empty());
    assert_eq!(referral_info(&h, a).await.joined, 0);
    h.verify_clean().await;

    // The cap (30 a day): 20, then the 10 left, then nothing — but each still joins.
    for u in [2216, 2217, 2218] {
        start(&h, u, &code).await;
    }
    let paid: Vec<i64> = referrals(&h.ledger(a).await).iter().map(|r| r.0).collect();
    assert_eq!(paid, [20, 10]);
    assert_eq!(h.balance(a).await, Credits(130));
    let info = referral_info(&h, a).await;
    assert_eq!((info.joined, info.earned), (3, Credits(30)));
    h.verify_clean().await;
    let card = invite(&h, a).await;
    assert!(card.contains("Присоединились: 3"), "{card}");
    assert!(card.contains("Заработано: 30 кредитов"), "{card}");
    assert!(card.contains("Не больше 30 кредитов в день"), "{card}");

    // The next day (the day's rows moved back 25 hours, no sleeping) the cap starts again.
    h.store()
        .write(move |tx| {
            for mut op in tx.find_operations(UserId(a))?.into_iter().filter(|o| o.kind == OpKind::Referral) {
                op.created_at -= 25 * 3600 * 1000;
                tx.insert_operation(&op)?;
            }
            Ok::<_, crate::store::StoreError>(())
        })
        .await
        .expect("yesterday");
    start(&h, 2219, &code).await;
    let paid: Vec<i64> = referrals(&h.ledger(a).await).iter().map(|r| r.0).collect();
    assert_eq!(paid, [20, 10, 20]);
    h.verify_clean().await;
    h.assert_no_rejections();
}
