//! A fake Crypto Pay API (protocols.md §9) over the request-recording server of `recorder`.
//!
//! - `POST /api/createInvoice` (JSON body): checks `Crypto-Pay-API-Token` (401
//!   `UNAUTHORIZED` otherwise), the `currency_type` / `asset` / `fiat` / `amount` rules, and
//!   answers an `Invoice` (`status: active`, ids from 1000 up, `bot_invoice_url`);
//! - `POST /api/getInvoices` (`invoice_ids` comma list): `{"items": [Invoice…]}` in their
//!   current state;
//! - [`FakeCryptoPay::pay`] / [`FakeCryptoPay::expire`] change an invoice as a payer or the
//!   clock would, and [`FakeCryptoPay::paid_update`] + [`FakeCryptoPay::sign`] build the
//!   `invoice_paid` webhook delivery Crypto Pay would send for it.
//!
//! Every answer is `{"ok": true, "result": …}` or `{"ok": false, "error": {"code", "name"}}`.

use super::recorder::{self, Recorded, Recorder};
use axum::response::Response;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub struct FakeCryptoPay {
    pub rec: Recorder,
    token: String,
    invoices: Arc<Mutex<BTreeMap<i64, Value>>>,
}

fn error(status: u16, code: i64, name: &str) -> Response {
    recorder::json(status, json!({"ok": false, "error": {"code": code, "name": name}}))
}

fn answer(req: &Recorded, token: &str, invoices: &Mutex<BTreeMap<i64, Value>>) -> Response {
    if req.header("crypto-pay-api-token").as_deref() != Some(token) {
        return error(401, 401, "UNAUTHORIZED");
    }
    let body = req.json();
    let mut all = invoices.lock().unwrap_or_else(|e| e.into_inner());
    match req.path.as_str() {
        "/api/createInvoice" => {
            let kind = body["currency_type"].as_str().unwrap_or("crypto");
            let code = if kind == "fiat" { &body["fiat"] } else { &body["asset"] };
            let amount_ok = body["amount"].as_str().is_some_and(|a| a.parse::<f64>().is_ok_and(|v| v > 0.0));
            if !code.is_string() || !amount_ok {
                return error(400, 400, "AMOUNT_INVALID");
            }
            let id = 1000 + i64::try_from(all.len()).unwrap_or(0);
            let hash = format!("IV{id}abc");
            let mut inv = json!({
                "invoice_id": id,
                "hash": hash,
                "currency_type": kind,
                "amount": body["amount"],
                "bot_invoice_url": format!("https://t.me/CryptoBot?start={hash}"),
                "mini_app_invoice_url": format!("https://t.me/CryptoBot/app?startapp=invoice-{hash}"),
                "web_app_invoice_url": format!("https://app.send.tg/invoices/{hash}"),
                "description": body["description"],
                "status": "active",
                "created_at": "2026-12-06T01:00:00.000Z",
                "allow_comments": false,
                "allow_anonymous": false,
                "payload": body["payload"],
            });
            inv[if kind == "fiat" { "fiat" } else { "asset" }] = code.clone();
            all.insert(id, inv.clone());
            recorder::json(200, json!({"ok": true, "result": inv}))
        }
        "/api/getInvoices" => {
            let ids: Vec<i64> =
                body["invoice_ids"].as_str().unwrap_or("").split(',').filter_map(|s| s.trim().parse().ok()).collect();
            let items: Vec<Value> = ids.iter().filter_map(|id| all.get(id).cloned()).collect();
            recorder::json(200, json!({"ok": true, "result": {"items": items}}))
        }
        _ => error(404, 405, "METHOD_NOT_FOUND"),
    }
}

impl FakeCryptoPay {
    /// A fake that accepts only `token`.
    pub async fn start(token: &str) -> FakeCryptoPay {
        let invoices: Arc<Mutex<BTreeMap<i64, Value>>> = Arc::default();
        let (t, inv) = (token.to_string(), invoices.clone());
        let rec = Recorder::start(Arc::new(move |req, _base| answer(req, &t, &inv))).await;
        FakeCryptoPay { rec, token: token.to_string(), invoices }
    }

    /// `http://127.0.0.1:<port>` (the methods are under `/api/`).
    pub fn base_url(&self) -> String {
        self.rec.root()
    }

    /// Calls of one method, oldest first.
    pub fn calls(&self, method: &str) -> Vec<Recorded> {
        let path = format!("/api/{method}");
        self.rec.requests().into_iter().filter(|r| r.path == path).collect()
    }

    /// An invoice as the API would answer it now.
    pub fn invoice(&self, id: i64) -> Value {
        self.invoices.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned().unwrap_or(Value::Null)
    }

    fn update(&self, id: i64, f: impl FnOnce(&mut Value)) {
        if let Some(v) = self.invoices.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&id) {
            f(v);
        }
    }

    /// The payer pays invoice `id` (in its own asset, or USDT for a fiat price).
    pub fn pay(&self, id: i64) {
        self.update(id, |v| {
            mark_paid(v);
            v["paid_at"] = json!("2026-12-06T01:05:00.000Z");
        });
    }

    /// Invoice `id` runs out of time unpaid.
    pub fn expire(&self, id: i64) {
        self.update(id, |v| v["status"] = json!("expired"));
    }

    /// The `invoice_paid` webhook body for invoice `id` as if paid now (the stored invoice is
    /// not changed: a delivery can come before a poll sees it).
    pub fn paid_update(&self, id: i64) -> String {
        let mut inv = self.invoice(id);
        mark_paid(&mut inv);
        json!({"update_id": id * 10, "update_type": "invoice_paid", "request_date": "2026-12-06T01:05:00.000Z", "payload": inv})
            .to_string()
    }

    /// `crypto-pay-api-signature` for `body`: hex HMAC-SHA256 with key SHA-256(token).
    pub fn sign(&self, body: &str) -> String {
        let key = Sha256::digest(self.token.as_bytes());
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
        mac.update(body.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// `status` paid with what was paid: a crypto price in its own asset; a fiat price in USDT at a
/// fixed rate (`paid_fiat_rate`, fiat units per USDT: 95 for RUB, else 1), as Crypto Pay reports
/// a fiat invoice paid in crypto.
fn mark_paid(inv: &mut Value) {
    inv["status"] = json!("paid");
    if let Some(asset) = inv["asset"].as_str().map(str::to_string) {
        inv["paid_asset"] = json!(asset);
        inv["paid_amount"] = inv["amount"].clone();
    } else {
        let rate = if inv["fiat"] == "RUB" { 95.0 } else { 1.0 };
        let amount: f64 = inv["amount"].as_str().and_then(|a| a.parse().ok()).unwrap_or(0.0);
        inv["paid_asset"] = json!("USDT");
        inv["paid_amount"] = json!(format!("{:.8}", amount / rate));
        inv["paid_fiat_rate"] = json!(format!("{rate:.8}"));
    }
}
