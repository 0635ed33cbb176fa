//! Telegram Stars refunds (issue 21, Top-ups 3), end to end through the emulator in Russian:
//! from the panel's payments page and with `/refund`, once however the answer goes (a lost
//! answer and a crash before the call are finished by the outbox at the next start), the
//! balance taken to zero with the shortfall recorded, Telegram's refusal giving the credits
//! back, and `verify-ledger` clean after each.

use super::harness::*;
use crate::billing::{self, StarPayment};
use crate::config::{Package, ProviderKind};
use crate::domain::{Credits, UserId};
use crate::emulator::{LostAnswer, PayInvoice};
use crate::store::records::{OpKind, PaymentRecord, PaymentState};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ADMIN: i64 = 3101;

fn config(dir: &std::path::Path) -> crate::config::Config {
    let mut c = test_config(dir);
    c.billing.currency = crate::config::BillingConfig::default().currency;
    c.telegram.admins = vec![ADMIN];
    c.providers.push(provider("demo", ProviderKind::Demo, ""));
    c.models.push(model("demo", "demo", 10));
    c.billing.packages =
        vec![Package { id: "small".into(), credits: Credits(100), stars: 50, crypto: None, bonus_percent: 10 }];
    c
}

fn user(id: i64) -> Value {
    json!({"id": id, "first_name": format!("User{id}"), "username": format!("user{id}"), "language_code": "ru"})
}

/// Sends `text` as `who` and returns the bot's next answer containing `needle`.
async fn ask(h: &Harness, who: i64, text: &str, needle: &str) -> String {
    let n = h.messages(who).len();
    h.text(who, "ru", text);
    let found =
        |m: &[Value]| m.iter().skip(n).find(|x| x["from_bot"] == true && text_of(x).contains(needle)).map(text_of);
    found(&h.wait_for(who, 20, needle, |m| found(m).is_some()).await).expect("answer")
}

/// `u` (registered) buys the 50-Star package (110 credits) and is credited: the charge id.
async fn buy(h: &Harness, u: i64) -> String {
    let invoices = |m: &[Value]| m.iter().filter(|x| !x["invoice"].is_null()).count();
    let (before, credited) =
        (invoices(&h.messages(u)), h.bot_messages(u).iter().filter(|m| text_of(m).contains("Зачислено")).count());
    h.text(u, "ru", "/buy");
    let list = h.wait_for_buttons(u, "⭐50").await;
    h.press(u, "ru", list["message_id"].as_i64().expect("id"), &Harness::button(&list, "⭐50"));
    let msgs = h.wait_for(u, 20, "the invoice", |m| invoices(m) > before).await;
    let inv = msgs.iter().rev().find(|x| !x["invoice"].is_null()).expect("invoice");
    let payer = serde_json::from_value(user(u)).expect("user");
    let out =
        h.emu.pay(payer, PayInvoice { message_id: inv["message_id"].as_i64(), invoice_link: None }).await.expect("pay");
    assert!(out.paid, "{out:?}");
    h.wait_for(u, 20, "the credit", |m| {
        m.iter().filter(|x| x["from_bot"] == true && text_of(x).contains("Зачислено 110")).count() > credited
    })
    .await;
    out.telegram_payment_charge_id.expect("charge")
}

async fn payment(h: &Harness, charge: &str) -> PaymentRecord {
    let c = charge.to_string();
    h.store().read(move |rx| rx.get_payment(&c)).await.expect("read").expect("stored charge")
}

/// Waits (polling the store) until the charge reaches `state`.
async fn wait_state(h: &Harness, charge: &str, state: PaymentState) -> PaymentRecord {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = payment(h, charge).await;
        if p.state == state {
            return p;
        }
        assert!(Instant::now() < deadline, "charge {charge} stayed {:?}, expected {state:?}", p.state);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// The emulator's view of a charge: (state, refundStarPayment calls for it, refund messages).
fn telegram_side(h: &Harness, u: i64, charge: &str) -> (String, usize, usize) {
    let state = h
        .emu
        .payments()
        .charges
        .iter()
        .find(|c| c.telegram_payment_charge_id == charge)
        .map(|c| c.state.clone())
        .unwrap_or_default();
    let calls = h.emu.calls().iter().filter(|c| c.method == "refundStarPayment").count();
    let refunded = h.emu.messages(u).iter().filter(|m| m.refunded_payment.is_some()).count();
    (state, calls, refunded)
}

/// The admin panel over HTTP with the password the app wrote at first start.
pub(super) struct Panel {
    base: String,
    http: reqwest::Client,
    cookie: String,
}

fn set_cookie(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")).map(|v| v.split(';').next().unwrap_or("").to_string()))
        .unwrap_or_else(|| panic!("no {name} cookie"))
}

fn csrf_in(html: &str) -> String {
    let i = html.find("name=\"csrf\" value=\"").expect("csrf field");
    let rest = &html[i + 19..];
    rest[..rest.find('"').expect("end")].to_string()
}

impl Panel {
    pub(super) async fn login(h: &Harness) -> Panel {
        let base = format!("http://{}", h.app.as_ref().expect("app").addr);
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        let password = std::fs::read_to_string(h.dir.path().join("admin-password")).expect("password file");
        let r = http.get(format!("{base}/admin/login")).send().await.expect("login page");
        let token = set_cookie(&r, crate::web::auth::LOGIN_COOKIE);
        let form = format!(
            "csrf={token}&password={}",
            url::form_urlencoded::byte_serialize(password.trim().as_bytes()).collect::<String>()
        );
        let r = http
            .post(format!("{base}/admin/login"))
            .header("cookie", format!("{}={token}", crate::web::auth::LOGIN_COOKIE))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), 303, "signed in");
        let cookie =
            format!("{}={}", crate::web::auth::SESSION_COOKIE, set_cookie(&r, crate::web::auth::SESSION_COOKIE));
        Panel { base, http, cookie }
    }

    pub(super) async fn get(&self, path: &str) -> (u16, String) {
        let r = self.http.get(format!("{}{path}", self.base)).header("cookie", &self.cookie).send().await.expect("get");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    /// Presses "Refund" for `charge` as the page's form would: (status, Location or body).
    async fn refund(&self, charge: &str) -> (u16, String) {
        let (_, page) = self.get("/admin/payments").await;
        let form = format!(
            "csrf={}&charge={}&page=0",
            csrf_in(&page),
            url::form_urlencoded::byte_serialize(charge.as_bytes()).collect::<String>()
        );
        let r = self
            .http
            .post(format!("{}/admin/payments/refund", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .expect("post");
        let status = r.status().as_u16();
        match r.headers().get("location").and_then(|l| l.to_str().ok()) {
            Some(l) => (status, l.to_string()),
            None => (status, r.text().await.unwrap_or_default()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panel_refund_returns_the_stars_once_and_takes_the_credits_once() {
    let h = Harness::start(config).await;
    let u = 3102;
    ask(&h, u, "/start", "бонус").await;
    let charge = buy(&h, u).await;
    let panel = Panel::login(&h).await;
    let (status, page) = panel.get("/admin/payments").await;
    assert_eq!(status, 200);
    assert!(page.contains(&charge) && page.contains("href=\"/admin/users/3102\"") && page.contains("⭐50"), "{page}");
    assert!(page.contains(">paid<") && page.contains("/admin/payments/refund"), "a paid charge has its Refund button");
    assert!(page.contains("href=\"/admin/payments\""), "the nav links the page");

    // A refund needs the session's CSRF token.
    let r = panel
        .http
        .post(format!("{}/admin/payments/refund", panel.base))
        .header("cookie", &panel.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf=forged&charge={charge}"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 403);
    assert_eq!(payment(&h, &charge).await.state, PaymentState::Paid);

    let (status, location) = panel.refund(&charge).await;
    assert_eq!(status, 303, "{location}");
    assert!(location.contains("done=refunded"), "{location}");
    let (_, page) = panel.get(&location).await;
    assert!(page.contains("id=\"flash\"") && page.contains("refunded: the Stars went back"), "{page}");
    assert!(page.contains(">refunded<") && !page.contains("/admin/payments/refund\""), "no button once refunded");

    let p = payment(&h, &charge).await;
    assert_eq!(
        (p.state, p.refund_shortfall, p.refund_actor.as_str()),
        (PaymentState::Refunded, Credits(0), "admin:admin")
    );
    let ops = h.ledger(u).await;
    assert_eq!(kinds(&ops), [OpKind::SignupBonus, OpKind::Purchase, OpKind::Refund]);
    assert_eq!(
        (ops[2].amount, ops[2].delta, ops[2].reason.clone()),
        (Credits(110), Credits(-110), Some(format!("stars:{charge}")))
    );
    assert_eq!(p.refund_operation_id, Some(ops[2].id));
    assert_eq!(h.balance(u).await, Credits(100));
    assert_eq!(telegram_side(&h, u, &charge), ("refunded".into(), 1, 1), "refunded once on Telegram's side");
    let told = h.wait_text(u, "вернули").await;
    assert_eq!(text_of(&told), "↩️ Вам вернули ⭐50 за покупку; 110 кредитов списано с баланса. Баланс: 100 кредитов.");
    let audit = h.store().read(|rx| rx.find_audit(10)).await.expect("audit");
    assert!(
        audit
            .iter()
            .any(|a| a.action == "refund" && a.actor == "admin:admin" && a.target == format!("charge:{charge}"))
    );
    h.verify_clean().await;

    // A second refund of the same charge is refused and changes nothing.
    let (status, body) = panel.refund(&charge).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("refunded already"), "{body}");
    let (status, _) = panel.refund("stx-no-such-charge").await;
    assert_eq!(status, 422);
    assert_eq!(kinds(&h.ledger(u).await).len(), 3);
    assert_eq!(telegram_side(&h, u, &charge).1, 1, "Telegram was not asked again");
    assert!(h.bot_messages(u).iter().filter(|m| text_of(m).contains("вернули")).count() == 1);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_interrupted_between_the_call_and_the_record_is_finished_once_after_a_restart() {
    let mut h = Harness::start(config).await;
    let u = 3103;
    ask(&h, ADMIN, "/start", "бонус").await;
    ask(&h, u, "/start", "бонус").await;
    let charge = buy(&h, u).await;
    // Telegram refunds, but its answer never reaches the bot (as if it crashed right after).
    h.emu.lose_answers(LostAnswer { method: "refundStarPayment".into(), times: 1 });
    let pending = ask(&h, ADMIN, &format!("/refund {charge}"), "⏳").await;
    assert!(pending.contains("повторён автоматически"), "{pending}");
    let p = payment(&h, &charge).await;
    assert_eq!(p.state, PaymentState::RefundPending, "the debit is recorded, the outcome is not");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Purchase, OpKind::Refund]);
    assert_eq!(h.balance(u).await, Credits(100));
    assert_eq!(telegram_side(&h, u, &charge), ("refunded".into(), 1, 1));
    h.verify_clean().await;

    // A second charge whose refund was decided, then the process died before calling Telegram.
    let second = buy(&h, u).await;
    let s = second.clone();
    h.store()
        .write(move |tx| billing::begin_refund(tx, &s, "cli").map(|r| r.expect("paid")))
        .await
        .expect("pending refund");

    // The restart's outbox pass asks again: CHARGE_ALREADY_REFUNDED counts as done for the
    // first, the second is refunded now.
    h.restart().await;
    let p = wait_state(&h, &charge, PaymentState::Refunded).await;
    assert_eq!(p.refund_actor, format!("tg:{ADMIN}"));
    wait_state(&h, &second, PaymentState::Refunded).await;
    let calls: Vec<_> = h.emu.calls().into_iter().filter(|c| c.method == "refundStarPayment").collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(
        calls.iter().any(|c| c.description.as_deref() == Some("Bad Request: CHARGE_ALREADY_REFUNDED")),
        "the first charge was asked again and Telegram said it was done: {calls:?}"
    );
    let charges = h.emu.payments().charges;
    assert!(charges.iter().all(|c| c.state == "refunded" && c.refunded_at_ms.is_some()), "{charges:?}");
    assert_eq!(h.emu.messages(u).iter().filter(|m| m.refunded_payment.is_some()).count(), 2, "each refunded once");
    assert_eq!(
        kinds(&h.ledger(u).await),
        [OpKind::SignupBonus, OpKind::Purchase, OpKind::Refund, OpKind::Purchase, OpKind::Refund],
        "one debit per charge"
    );
    assert_eq!(h.balance(u).await, Credits(100));
    h.wait_for(u, 20, "two refund notices", |m| m.iter().filter(|x| text_of(x).contains("вернули")).count() == 2).await;
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refund_command_zeroes_a_short_balance_refuses_bad_arguments_and_non_admins() {
    let h = Harness::start(config).await;
    let (u, other) = (3104, 3105);
    ask(&h, ADMIN, "/start", "бонус").await;
    ask(&h, other, "/start", "бонус").await;
    ask(&h, u, "/start", "бонус").await;
    let charge = buy(&h, u).await;
    // The user spends most of it: 210 − 180 = 30 left, less than the 110 the refund takes.
    ask(&h, ADMIN, &format!("/add_balance {u} -180 потрачено"), "✅").await;

    // Usage lines, a non-admin, an unknown charge: nothing happens.
    for bad in ["/refund", "/refund a b"] {
        let usage = ask(&h, ADMIN, bad, "Использование: /refund").await;
        assert!(usage.contains("НОМЕР_ПЛАТЕЖА"), "{bad}: {usage}");
    }
    let refused = ask(&h, other, &format!("/refund {charge}"), "только для администраторов").await;
    assert_eq!(refused, "Эта команда только для администраторов.");
    assert!(ask(&h, ADMIN, "/refund stx-unknown", "Возврат невозможен").await.contains("stx-unknown"));
    assert_eq!(payment(&h, &charge).await.state, PaymentState::Paid);
    assert_eq!(telegram_side(&h, u, &charge).1, 0, "Telegram not asked");

    let done = ask(&h, ADMIN, &format!("/refund {charge}"), "✅").await;
    assert!(done.contains("⭐50") && done.contains("30 кредитов") && done.contains("недостача 80 кредитов"), "{done}");
    let p = payment(&h, &charge).await;
    assert_eq!((p.state, p.refund_shortfall), (PaymentState::Refunded, Credits(80)));
    let ops = h.ledger(u).await;
    let refund = ops.last().expect("row");
    assert_eq!(
        (refund.kind, refund.amount, refund.delta, refund.balance_after),
        (OpKind::Refund, Credits(110), Credits(-30), Credits(0))
    );
    assert_eq!(h.balance(u).await, Credits(0), "never below zero");
    let charged =
        h.emu.payments().charges.into_iter().find(|c| c.telegram_payment_charge_id == charge).expect("charge");
    assert_eq!((charged.state.as_str(), charged.total_amount), ("refunded", 50), "the Stars go back in full");
    let told = h.wait_text(u, "вернули").await;
    assert!(text_of(&told).contains("30 кредитов списано") && text_of(&told).contains("Баланс: 0 кредитов"), "{told}");
    assert!(ask(&h, ADMIN, &format!("/refund {charge}"), "Возврат невозможен").await.contains("refunded already"));
    let audit = h.store().read(|rx| rx.find_audit(20)).await.expect("audit");
    assert!(audit.iter().any(|a| a.action == "refund" && a.actor == format!("tg:{ADMIN}")), "{audit:?}");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refund_telegram_refuses_gives_the_credits_back() {
    let h = Harness::start(config).await;
    let u = 3106;
    ask(&h, ADMIN, "/start", "бонус").await;
    ask(&h, u, "/start", "бонус").await;
    // A charge the bot stored that Telegram does not know (CHARGE_NOT_FOUND when refunded).
    let b = billing::Billing::new(h.store(), h.config.billing.clone());
    let paid = StarPayment {
        payer: UserId(u),
        currency: billing::STARS_CURRENCY.into(),
        total_amount: 50,
        invoice_payload: billing::invoice_payload("small", UserId(u)),
        telegram_payment_charge_id: "stx-unknown-to-telegram".into(),
        provider_payment_charge_id: String::new(),
    };
    b.credit_purchase(paid).await.expect("credited");
    let failed = ask(&h, ADMIN, "/refund stx-unknown-to-telegram", "⚠️").await;
    assert!(failed.contains("CHARGE_NOT_FOUND") && failed.contains("вернулись"), "{failed}");
    let p = payment(&h, "stx-unknown-to-telegram").await;
    assert_eq!(p.state, PaymentState::RefundFailed);
    assert!(p.refund_error.as_deref().is_some_and(|e| e.contains("CHARGE_NOT_FOUND")), "{p:?}");
    assert_eq!(
        kinds(&h.ledger(u).await),
        [OpKind::SignupBonus, OpKind::Purchase, OpKind::Refund, OpKind::RefundReversal]
    );
    assert_eq!(h.balance(u).await, Credits(210), "the credits came back");
    assert!(!h.bot_messages(u).iter().any(|m| text_of(m).contains("вернули")), "the payer is not told of a refund");
    h.verify_clean().await;
    // The refused refund is recorded: a retry is refused rather than debiting again.
    assert!(ask(&h, ADMIN, "/refund stx-unknown-to-telegram", "Возврат невозможен").await.contains("refund_failed"));
    h.verify_clean().await;
}
