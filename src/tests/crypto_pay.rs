//! Crypto Pay top-ups end to end, in Russian, against a fake Crypto Pay server: the "💎 Крипто"
//! button creating the invoice, the webhook's signature and size checks, a paid invoice
//! credited once whether the webhook comes twice, twice at once or after a poll, and expired
//! invoices never credited. `verify-ledger` is clean after each step.

use super::fakes::crypto_pay::FakeCryptoPay;
use super::harness::*;
use crate::billing::crypto_pay::{SIGNATURE_HEADER, WEBHOOK_PATH};
use crate::billing::referral_code;
use crate::config::{CryptoPayConfig, CryptoPrice, Package, ProviderKind, ReferralConfig, Secret};
use crate::domain::{Credits, UserId};
use crate::store::records::{CryptoStatus, OpKind};
use serde_json::Value;

const TOKEN: &str = "12345:AAzQcZWQqQAbsfgPnOLr4FHC8Doa4L7KryC";

fn small() -> Package {
    Package {
        id: "small".into(),
        credits: Credits(100),
        stars: 50,
        crypto: Some(CryptoPrice { amount: "1.5".into(), asset: "USDT".into(), fiat: String::new() }),
        bonus_percent: 10,
    }
}

/// A second crypto package (listed third).
fn mid() -> Package {
    Package {
        id: "mid".into(),
        credits: Credits(300),
        stars: 120,
        crypto: Some(CryptoPrice { amount: "4".into(), asset: "TON".into(), fiat: String::new() }),
        bonus_percent: 0,
    }
}

/// Stars only: no crypto button beside it.
fn stars_only() -> Package {
    Package { id: "big".into(), credits: Credits(500), stars: 200, crypto: None, bonus_percent: 0 }
}

/// A shop with Crypto Pay at `base_url`; `poll_secs` apart (tests that must not see a poll use
/// a long interval: the fake's invoices stay `active` there anyway).
fn shop(dir: &std::path::Path, base_url: &str, poll_secs: u64) -> crate::config::Config {
    let mut c = test_config(dir);
    c.billing.currency = crate::config::BillingConfig::default().currency;
    c.providers.push(provider("demo", ProviderKind::Demo, ""));
    c.models.push(model("demo", "demo", 10));
    c.billing.packages = vec![small(), stars_only(), mid()];
    c.billing.referral = ReferralConfig { purchase_percent: 10, ..Default::default() };
    c.billing.crypto_pay = Some(CryptoPayConfig {
        token: Secret::new(TOKEN),
        base_url: base_url.into(),
        poll_interval_secs: poll_secs,
        invoice_ttl_secs: 3600,
        webhook: true,
    });
    c
}

/// /start (if new), /buy, "💎 Крипто" on the first package: the invoice message.
async fn crypto_invoice(h: &Harness, u: i64) -> Value {
    crypto_invoice_on(h, u, "💎 Крипто (1.5 USDT)").await
}

/// As [`crypto_invoice`], tapping the crypto button labelled `label`.
async fn crypto_invoice_on(h: &Harness, u: i64, label: &str) -> Value {
    if h.messages(u).is_empty() {
        h.text(u, "ru", "/start");
        h.wait_text(u, "бонус").await;
    }
    let before = h.bot_messages(u).iter().filter(|m| text_of(m).contains("Счёт на")).count();
    h.text(u, "ru", "/buy");
    let list = h.wait_for_buttons(u, label).await;
    h.press(u, "ru", list["message_id"].as_i64().expect("id"), &Harness::button(&list, label));
    let msgs = h
        .wait_for(u, 20, "the crypto invoice", |m| {
            m.iter().filter(|x| x["from_bot"] == true && text_of(x).contains("Счёт на")).count() > before
        })
        .await;
    msgs.into_iter().rev().find(|x| x["from_bot"] == true && text_of(x).contains("Счёт на")).expect("invoice")
}

/// POSTs a webhook delivery to the app's listener: `(status)`.
async fn deliver(h: &Harness, body: impl Into<reqwest::Body>, signature: Option<&str>) -> u16 {
    let addr = h.app.as_ref().expect("app").addr;
    let mut req = reqwest::Client::new()
        .post(format!("http://{addr}{WEBHOOK_PATH}"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(s) = signature {
        req = req.header(SIGNATURE_HEADER, s);
    }
    req.send().await.expect("the listener answers").status().as_u16()
}

fn credited_messages(h: &Harness, u: i64) -> usize {
    h.bot_messages(u).iter().filter(|m| text_of(m).contains("Зачислено")).count()
}

async fn invoice_status(h: &Harness, id: i64) -> Option<CryptoStatus> {
    h.store().read(move |rx| rx.get_crypto_invoice(id)).await.expect("read").map(|i| i.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_crypto_button_makes_an_invoice_and_a_signed_webhook_credits_it_once() {
    let fake = FakeCryptoPay::start(TOKEN).await;
    let url = fake.base_url();
    let h = Harness::start(|d| shop(d, &url, 3600)).await;
    let u = 2401;
    let inv = crypto_invoice(&h, u).await;

    // The package list: the crypto price beside the Stars one, none for a Stars-only package.
    let list = h.bot_messages(u).into_iter().find(|m| text_of(m).contains("Выберите пакет")).expect("list");
    assert!(text_of(&list).contains("криптовалютой"), "{list}");
    let rows = &list["reply_markup"]["inline_keyboard"];
    assert_eq!(rows[0][0]["text"], "100 кредитов (+10) — ⭐50 · ≈ 11 генераций");
    assert_eq!(rows[0][1]["text"], "💎 Крипто (1.5 USDT)");
    assert_eq!(rows[1].as_array().map(Vec::len), Some(1), "no crypto button without a crypto price: {rows}");

    // createInvoice got the price, the payload naming package and user, and the token.
    let calls = fake.calls("createInvoice");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].header("crypto-pay-api-token").as_deref(), Some(TOKEN));
    let body = calls[0].json();
    assert_eq!(
        (&body["currency_type"], &body["asset"], &body["amount"], &body["payload"], &body["expires_in"]),
        (&"crypto".into(), &"USDT".into(), &"1.5".into(), &format!("pkg:small:{u}").into(), &3600.into())
    );
    assert_eq!(body["description"], "Пополнение баланса бота на 110 кредитов. Кредиты тратятся на генерации.");
    let id = 1000;
    assert_eq!(
        text_of(&inv),
        "💎 Счёт на 1.5 USDT — 110 кредитов.\nОплатите его в @CryptoBot в течение 60 мин.: кредиты зачислятся сами, и мы напишем вам."
    );
    let button = &inv["reply_markup"]["inline_keyboard"][0][0];
    assert_eq!(button["text"], "💎 Оплатить 1.5 USDT");
    assert_eq!(button["url"], fake.invoice(id)["bot_invoice_url"]);
    assert_eq!(invoice_status(&h, id).await, Some(CryptoStatus::Active));

    // Refused before anything is credited: a wrong signature, none, a body over 64 KiB (declared
    // or streamed without a length), a signed update whose price differs from ours.
    let paid = fake.paid_update(id);
    assert_eq!(deliver(&h, paid.clone(), Some(&fake.sign("something else"))).await, 401);
    assert_eq!(deliver(&h, paid.clone(), Some("not hex")).await, 401);
    assert_eq!(deliver(&h, paid.clone(), None).await, 401);
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    assert_eq!(deliver(&h, huge.clone(), Some(&fake.sign(&huge))).await, 413);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..2).map(|_| Ok(vec![b' '; 34 * 1024])).collect();
    let streamed = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    assert_eq!(deliver(&h, streamed, Some(&fake.sign(&huge))).await, 413);
    let cheaper = paid.replace("\"amount\":\"1.5\"", "\"amount\":\"0.5\"");
    assert_ne!(cheaper, paid);
    assert_eq!(deliver(&h, cheaper.clone(), Some(&fake.sign(&cheaper))).await, 200, "signed: acknowledged");
    let unknown = paid.replace(&format!("\"invoice_id\":{id}"), "\"invoice_id\":999999");
    assert_eq!(deliver(&h, unknown.clone(), Some(&fake.sign(&unknown))).await, 200);
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus], "nothing credited");
    assert_eq!(invoice_status(&h, id).await, Some(CryptoStatus::Active));
    h.verify_clean().await;

    // The genuine delivery credits; the same again, and two at once, change nothing.
    assert_eq!(deliver(&h, paid.clone(), Some(&fake.sign(&paid))).await, 200);
    let done = h.wait_text(u, "Зачислено").await;
    assert_eq!(text_of(&done), "✅ Зачислено 110 кредитов, баланс 210 кредитов.");
    assert_eq!(deliver(&h, paid.clone(), Some(&fake.sign(&paid))).await, 200);
    let sig = fake.sign(&paid);
    let (a, b) = tokio::join!(deliver(&h, paid.clone(), Some(&sig)), deliver(&h, paid.clone(), Some(&sig)));
    assert_eq!((a, b), (200, 200));
    let ledger = h.ledger(u).await;
    assert_eq!(kinds(&ledger), [OpKind::SignupBonus, OpKind::Purchase], "credited once");
    assert_eq!(ledger[1].reason.as_deref(), Some("cryptopay:1000"));
    assert_eq!(h.balance(u).await, Credits(210));
    let stored = h.store().read(move |rx| rx.get_crypto_invoice(id)).await.expect("read").expect("stored");
    assert_eq!(
        (stored.status, stored.user_id, stored.credits, stored.operation_id),
        (CryptoStatus::Paid, UserId(u), Credits(110), Some(ledger[1].id))
    );
    assert_eq!(stored.paid_asset.as_deref(), Some("USDT"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(credited_messages(&h, u), 1, "told once");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn polling_credits_a_paid_invoice_once_and_an_expired_one_never() {
    let fake = FakeCryptoPay::start(TOKEN).await;
    let url = fake.base_url();
    // Polling every second: config validation asks for 5 s at least, tests need not wait.
    let h = Harness::start(|d| shop(d, &url, 1)).await;
    let (referrer, u) = (2410, 2411);
    h.text(referrer, "ru", "/start");
    h.wait_text(referrer, "бонус").await;
    h.text(u, "ru", &format!("/start ref_{}", referral_code(UserId(referrer))));
    h.wait_text(u, "бонус").await;
    crypto_invoice(&h, u).await;
    crypto_invoice_on(&h, u, "💎 Крипто (4 TON)").await;
    let (paid, expired) = (1000, 1001);
    assert_eq!(fake.calls("createInvoice").len(), 2);

    // No webhook comes: the poller sees one paid and the other expired.
    fake.pay(paid);
    fake.expire(expired);
    let done = h.wait_text(u, "Зачислено").await;
    assert_eq!(text_of(&done), "✅ Зачислено 110 кредитов, баланс 210 кредитов.");
    for _ in 0..100 {
        if invoice_status(&h, expired).await == Some(CryptoStatus::Expired) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(invoice_status(&h, paid).await, Some(CryptoStatus::Paid));
    assert_eq!(invoice_status(&h, expired).await, Some(CryptoStatus::Expired));
    let polls = fake.calls("getInvoices");
    assert!(!polls.is_empty());
    assert_eq!(polls[0].header("crypto-pay-api-token").as_deref(), Some(TOKEN));
    assert!(polls.iter().any(|p| p.json()["invoice_ids"] == "1000,1001"), "the open invoices in one batch");

    // A late webhook for the paid one and a "paid" for the expired one credit nothing more,
    // and further polls ask only about invoices still open (none).
    for id in [paid, expired] {
        let body = fake.paid_update(id);
        assert_eq!(deliver(&h, body.clone(), Some(&fake.sign(&body))).await, 200);
    }
    let asked = fake.calls("getInvoices").len();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(fake.calls("getInvoices").len(), asked, "nothing open, nothing asked");
    let ledger = h.ledger(u).await;
    assert_eq!(kinds(&ledger), [OpKind::SignupBonus, OpKind::Purchase], "the paid one once, the expired one never");
    assert_eq!(h.balance(u).await, Credits(210));
    assert_eq!(credited_messages(&h, u), 1);
    // The referrer's share of the crypto purchase, through the same credit path as Stars.
    let shares: Vec<_> = h.ledger(referrer).await.into_iter().filter(|o| o.kind == OpKind::Referral).collect();
    assert_eq!(shares.len(), 1);
    assert_eq!(shares[0].amount, Credits(11));
    assert_eq!(shares[0].reason.as_deref(), Some(format!("ref:{u}:cryptopay:1000").as_str()));
    h.verify_clean().await;
    // The panel's payments page lists both invoices with their state.
    let (status, page) = super::refunds::Panel::login(&h).await.get("/admin/payments").await;
    assert_eq!(status, 200);
    let table = &page[page.find("id=\"crypto-invoices\"").expect("the crypto table")..];
    for (id, state) in [(paid, "paid"), (expired, "expired")] {
        let row = &table[table.find(&format!("<code>{id}</code>")).expect("a row per invoice")..];
        let row = &row[..row.find("</tr>").expect("row end")];
        assert!(row.contains(&format!(">{state}<")), "{row}");
    }
    assert!(table.contains("1.5 USDT") && table.contains("4 TON"), "{table}");
    assert!(table.contains(&format!("/admin/users/{u}")), "{table}");
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_crypto_pay_stores_nothing_and_says_so() {
    // The fake knows another token: createInvoice answers 401 UNAUTHORIZED.
    let fake = FakeCryptoPay::start("999:other").await;
    let url = fake.base_url();
    let h = Harness::start(|d| shop(d, &url, 3600)).await;
    let u = 2420;
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    h.text(u, "ru", "/buy");
    let list = h.wait_for_buttons(u, "💎 Крипто").await;
    h.press(u, "ru", list["message_id"].as_i64().expect("id"), &Harness::button(&list, "💎 Крипто"));
    let alerted = super::fakes::eventually(std::time::Duration::from_secs(20), || {
        h.emu.callback_answers().iter().any(|a| {
            a.chat_id == u
                && a.show_alert
                && a.text.as_deref().is_some_and(|t| t.contains("Оплата криптовалютой сейчас недоступна"))
        })
    })
    .await;
    assert!(alerted, "answers: {:?}", h.emu.callback_answers());
    assert_eq!(fake.calls("createInvoice").len(), 1);
    let stored = h.store().read(|rx| rx.find_crypto_invoices()).await.expect("read");
    assert!(stored.is_empty(), "{stored:?}");
    h.verify_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_tap_sends_the_open_invoice_again_and_a_paid_one_is_never_reused() {
    let fake = FakeCryptoPay::start(TOKEN).await;
    let url = fake.base_url();
    let h = Harness::start(|d| shop(d, &url, 3600)).await;
    let u = 2430;
    let first = crypto_invoice(&h, u).await;
    let again = crypto_invoice(&h, u).await;
    assert_ne!(first["message_id"], again["message_id"], "a new message");
    assert_eq!(fake.calls("createInvoice").len(), 1, "one invoice for one package");
    let url_of = |m: &Value| m["reply_markup"]["inline_keyboard"][0][0]["url"].clone();
    assert_eq!(url_of(&again), url_of(&first));
    assert_eq!(url_of(&again), fake.invoice(1000)["bot_invoice_url"]);
    // What is left of the hour, rounded up: 60 minutes, or 59 on a slow machine.
    let text = text_of(&again);
    assert!(text.starts_with("💎 Счёт на 1.5 USDT — 110 кредитов."), "{text}");
    assert!(text.contains("в течение 60 мин.") || text.contains("в течение 59 мин."), "{text}");

    // Another package is another invoice.
    crypto_invoice_on(&h, u, "💎 Крипто (4 TON)").await;
    assert_eq!(fake.calls("createInvoice").len(), 2);

    // Once paid, the invoice is closed: the next tap makes a new one.
    let paid = fake.paid_update(1000);
    assert_eq!(deliver(&h, paid.clone(), Some(&fake.sign(&paid))).await, 200);
    h.wait_text(u, "Зачислено").await;
    let next = crypto_invoice(&h, u).await;
    let calls = fake.calls("createInvoice");
    assert_eq!(calls.len(), 3, "a new invoice after the payment");
    assert_eq!(calls[2].json()["payload"], format!("pkg:small:{u}"));
    assert_eq!(url_of(&next), fake.invoice(1002)["bot_invoice_url"]);
    assert_ne!(url_of(&next), url_of(&first));
    let ledger = h.ledger(u).await;
    assert_eq!(kinds(&ledger), [OpKind::SignupBonus, OpKind::Purchase], "paid once");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fiat_priced_package_is_invoiced_in_roubles_and_credited_when_paid_in_usdt() {
    let fake = FakeCryptoPay::start(TOKEN).await;
    let url = fake.base_url();
    let rub = Package {
        id: "rub".into(),
        credits: Credits(200),
        stars: 100,
        crypto: Some(CryptoPrice { amount: "150".into(), asset: String::new(), fiat: "RUB".into() }),
        bonus_percent: 0,
    };
    let h = Harness::start(move |d| {
        let mut c = shop(d, &url, 3600);
        c.billing.packages = vec![rub];
        c
    })
    .await;
    let u = 2440;
    let inv = crypto_invoice_on(&h, u, "💎 Крипто (150 RUB)").await;
    let calls = fake.calls("createInvoice");
    assert_eq!(calls.len(), 1);
    let body = calls[0].json();
    assert_eq!(
        (&body["currency_type"], &body["fiat"], &body["amount"]),
        (&"fiat".into(), &"RUB".into(), &"150".into())
    );
    assert!(body.get("asset").is_none(), "a fiat invoice names no asset: {body}");
    assert!(text_of(&inv).starts_with("💎 Счёт на 150 RUB — 200 кредитов."), "{}", text_of(&inv));
    assert_eq!(inv["reply_markup"]["inline_keyboard"][0][0]["text"], "💎 Оплатить 150 RUB");

    // Paid in USDT at Crypto Pay's rate: the fiat price is what is compared, and credited once.
    let paid = fake.paid_update(1000);
    assert!(paid.contains("\"paid_asset\":\"USDT\"") && paid.contains("\"paid_fiat_rate\""), "{paid}");
    // First a signed sighting in another fiat currency: not what was sold, never credited.
    let usd = paid.replace("\"fiat\":\"RUB\"", "\"fiat\":\"USD\"");
    assert_ne!(usd, paid);
    assert_eq!(deliver(&h, usd.clone(), Some(&fake.sign(&usd))).await, 200);
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus], "a USD sighting credits nothing");
    assert_eq!(invoice_status(&h, 1000).await, Some(CryptoStatus::Active));
    assert_eq!(deliver(&h, paid.clone(), Some(&fake.sign(&paid))).await, 200);
    let done = h.wait_text(u, "Зачислено").await;
    assert_eq!(text_of(&done), "✅ Зачислено 200 кредитов, баланс 300 кредитов.");
    assert_eq!(deliver(&h, paid.clone(), Some(&fake.sign(&paid))).await, 200);
    let stored = h.store().read(|rx| rx.get_crypto_invoice(1000)).await.expect("read").expect("stored");
    assert_eq!(
        (stored.status, stored.currency_type.as_str(), stored.currency.as_str()),
        (CryptoStatus::Paid, "fiat", "RUB")
    );
    assert_eq!((stored.paid_asset.as_deref(), stored.paid_amount.as_deref()), (Some("USDT"), Some("1.57894737")));
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus, OpKind::Purchase], "credited once");
    assert_eq!(h.balance(u).await, Credits(300));
    h.verify_clean().await;
    h.assert_no_rejections();
}
