//! Telegram Stars in the emulator: paying an invoice the bot sent (the payer's side of
//! protocols.md §1.8), re-delivering an update, and the charges record. The Bot API methods
//! (sendInvoice, createInvoiceLink, answerPreCheckoutQuery, refundStarPayment,
//! getStarTransactions) live with the other methods in `api`.

use super::state::{Charge, Msg, PreCheckoutRec, State, now_ms};
use super::{ControlUser, Emulator};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;

/// How long the payer's client waits for `answerPreCheckoutQuery` (Telegram: 10 s).
pub const PRE_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);

/// `pay` of a control update: the invoice to pay, by the bot message that carries it or by a
/// createInvoiceLink link. Exactly one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayInvoice {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice_link: Option<String>,
}

/// The answer to a `pay` control update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayOutcome {
    /// True when the bot accepted the pre-checkout and the `successful_payment` was queued.
    pub paid: bool,
    /// The update that carried the `pre_checkout_query`.
    pub pre_checkout_update_id: i64,
    /// The update that carries the user's `successful_payment` message (when paid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful_payment_update_id: Option<i64>,
    /// The new charge (when paid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram_payment_charge_id: Option<String>,
    /// Why not paid: `declined` (ok=false) or `timeout` (no answer within 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The bot's `error_message` when it declined (what the payer's client shows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
}

/// A pre-checkout query as `GET /emulator/control/payments` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreCheckout {
    pub id: String,
    pub update_id: i64,
    pub user_id: i64,
    pub answered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Not answered within 10 s: the payment did not happen.
    pub expired: bool,
}

/// `GET /emulator/control/payments`: every charge (with its refund state) and every
/// pre-checkout query, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payments {
    pub charges: Vec<Charge>,
    pub pre_checkouts: Vec<PreCheckout>,
}

impl Emulator {
    /// The payer pays an invoice: queues a `pre_checkout_query`, waits up to 10 s for the bot's
    /// answer and, when it is ok, adds the user's `successful_payment` message (a fresh
    /// `telegram_payment_charge_id`) and its update. Errors: no such invoice.
    pub async fn pay(&self, user: ControlUser, target: PayInvoice) -> Result<PayOutcome, String> {
        let mut rx = self.inner.wake.subscribe();
        let (query_id, update_id, invoice, message_id) = {
            let mut st = self.lock();
            let chat_id = user.id;
            let (invoice, message_id) = match (&target.message_id, &target.invoice_link) {
                (Some(mid), None) => {
                    let m = st
                        .message(chat_id, *mid)
                        .filter(|m| m.from_bot)
                        .ok_or_else(|| format!("chat {chat_id} has no bot message {mid}"))?;
                    let inv = m.invoice.clone().ok_or_else(|| format!("message {mid} is not an invoice"))?;
                    (inv, Some(*mid))
                }
                (None, Some(link)) => {
                    (st.invoice_links.get(link).cloned().ok_or_else(|| format!("no invoice link {link:?}"))?, None)
                }
                _ => return Err("pay needs exactly one of message_id, invoice_link".into()),
            };
            st.users.insert(chat_id, user.clone());
            st.chats.entry(chat_id).or_default();
            let query_id = format!("pcq{}", st.next_update_id + 1);
            let query = json!({
                "id": query_id, "from": State::user_json(&user), "currency": invoice.currency,
                "total_amount": invoice.total_amount, "invoice_payload": invoice.payload,
            });
            let update_id = st.enqueue("pre_checkout_query", query);
            st.pre_checkouts
                .insert(query_id.clone(), PreCheckoutRec { update_id, user_id: chat_id, answer: None, expired: false });
            (query_id, update_id, invoice, message_id)
        };
        self.wake_pollers();
        let deadline = tokio::time::Instant::now() + PRE_CHECKOUT_TIMEOUT;
        let answer = loop {
            rx.borrow_and_update();
            if let Some(a) = self.lock().pre_checkouts.get(&query_id).and_then(|r| r.answer.clone()) {
                break Some(a);
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                break self.lock().pre_checkouts.get(&query_id).and_then(|r| r.answer.clone());
            }
        };
        let mut out = PayOutcome {
            paid: false,
            pre_checkout_update_id: update_id,
            successful_payment_update_id: None,
            telegram_payment_charge_id: None,
            reason: None,
            error_message: None,
        };
        match answer {
            None => {
                if let Some(r) = self.lock().pre_checkouts.get_mut(&query_id) {
                    r.expired = true;
                }
                out.reason = Some("timeout".into());
                return Ok(out);
            }
            Some((false, message)) => {
                out.reason = Some("declined".into());
                out.error_message = message;
                return Ok(out);
            }
            Some((true, _)) => {}
        }
        let charge_id = {
            let mut st = self.lock();
            st.next_file += 1;
            let charge_id = format!("stxemu{:06}{}", st.next_file, hex::encode(rand::random::<[u8; 8]>()));
            let provider_id = String::new();
            let mut payment = json!({
                "currency": invoice.currency, "total_amount": invoice.total_amount,
                "invoice_payload": invoice.payload, "telegram_payment_charge_id": charge_id,
                "provider_payment_charge_id": provider_id,
            });
            // A subscription invoice (api.json SuccessfulPayment): the first payment is
            // recurring and first-recurring and ends one period from now; paying it again is
            // Telegram's renewal, one period after the previous end.
            if let Some(period) = invoice.subscription_period {
                let key = (user.id, invoice.payload.clone());
                let previous = st.subscriptions.get(&key).copied();
                let expires = previous.map_or(super::state::now_s(), |p| p.max(super::state::now_s())) + period;
                st.subscriptions.insert(key, expires);
                payment["subscription_expiration_date"] = json!(expires);
                payment["is_recurring"] = json!(true);
                if previous.is_none() {
                    payment["is_first_recurring"] = json!(true);
                }
            }
            let msg = st.add_message(user.id, Msg { payment: Some(("successful_payment", payment)), ..Msg::default() });
            let json = st.message_json(user.id, &msg, false);
            let sp_update = st.enqueue("message", json);
            st.charges.push(Charge {
                telegram_payment_charge_id: charge_id.clone(),
                provider_payment_charge_id: provider_id,
                user_id: user.id,
                currency: invoice.currency.clone(),
                total_amount: invoice.total_amount,
                invoice_payload: invoice.payload.clone(),
                message_id,
                update_id: sp_update,
                state: "paid".into(),
                paid_at_ms: now_ms(),
                refunded_at_ms: None,
            });
            out.successful_payment_update_id = Some(sp_update);
            charge_id
        };
        self.wake_pollers();
        out.paid = true;
        out.telegram_payment_charge_id = Some(charge_id);
        Ok(out)
    }

    /// Queues update `update_id` again exactly as it was first sent (Telegram re-delivers
    /// updates whose offset was never confirmed, e.g. after the bot crashed). Errors: an id
    /// never handed out.
    pub fn replay_update(&self, update_id: i64) -> Result<i64, String> {
        let mut st = self.lock();
        let (kind, json) = st.sent.get(&update_id).cloned().ok_or_else(|| format!("no update {update_id} was sent"))?;
        st.queue.push_back(super::state::Queued { id: update_id, kind, json, replay: true, delivered: false });
        drop(st);
        self.wake_pollers();
        Ok(update_id)
    }

    /// Charges and pre-checkout queries so far (see [`Payments`]).
    pub fn payments(&self) -> Payments {
        let st = self.lock();
        let mut pre: Vec<PreCheckout> = st
            .pre_checkouts
            .iter()
            .map(|(id, r)| PreCheckout {
                id: id.clone(),
                update_id: r.update_id,
                user_id: r.user_id,
                answered: r.answer.is_some(),
                ok: r.answer.as_ref().map(|a| a.0),
                error_message: r.answer.as_ref().and_then(|a| a.1.clone()),
                expired: r.expired,
            })
            .collect();
        pre.sort_by_key(|p| p.update_id);
        Payments { charges: st.charges.clone(), pre_checkouts: pre }
    }
}
