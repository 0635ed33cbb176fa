//! Crypto top-ups through @CryptoBot's Crypto Pay API (protocols.md §9).
//!
//! An invoice is created per tap (`createInvoice`, the package's crypto or fiat price, payload
//! `pkg:<package>:<user>`) and stored with the credits it was offered for. It is credited
//! through [`super::credit_package`] — the same path as a Stars charge — by whichever of two
//! sources sees it paid first: the `invoice_paid` webhook (signature checked on the raw body)
//! or the poller asking `getInvoices` about the open ones. The invoice's status turns `paid` in
//! the transaction that writes the ledger row, so every later sighting is a no-op; an invoice
//! we know as expired, an unknown one, or one whose price or payload differ from what we
//! stored is logged and never credited.

use super::{Billing, BillingError, credit_package, invoice_payload};
use crate::config::{CryptoPayConfig, Package};
use crate::domain::{Credits, UserId, now_ms};
use crate::store::records::{CryptoInvoice, CryptoStatus, UserRecord};
use crate::store::{Store, Tx};
use hmac::{Hmac, Mac};
use serde::{Deserialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `reason` prefix of a `Purchase` ledger row paid through Crypto Pay; the invoice id follows.
pub const CRYPTO_REASON: &str = "cryptopay:";
/// Header carrying the API token on every call.
pub const TOKEN_HEADER: &str = "Crypto-Pay-API-Token";
/// Header carrying the webhook body's signature (hex HMAC-SHA256, key = SHA-256(token)).
pub const SIGNATURE_HEADER: &str = "crypto-pay-api-signature";
/// The webhook route on the web listener.
pub const WEBHOOK_PATH: &str = "/crypto-pay/webhook";
/// Largest webhook body read (an `invoice_paid` update is about 1 KiB); beyond it 413.
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;
/// Largest API answer read (a `getInvoices` page of 100 invoices is ~100 KiB).
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Whole-exchange timeout of one API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Invoices asked about per `getInvoices` call.
const POLL_BATCH: usize = 100;
/// An open invoice Crypto Pay no longer lists this long after its expiry was deleted there:
/// it can no longer be paid, so it is marked expired.
const GONE_GRACE_MS: i64 = 10 * 60 * 1000;
/// An open invoice is sent again, instead of a new one, while at least this long is left to pay
/// it (ms): a payer who opens it from the second message still has time to finish.
const REUSE_MIN_LEFT_MS: i64 = 5 * 60 * 1000;

/// Errors talking to Crypto Pay. Messages never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum CryptoPayError {
    /// Connect, timeout, or a non-JSON answer.
    #[error("Crypto Pay unreachable: {0}")]
    Transport(String),
    /// `{"ok": false, "error": {"code", "name"}}`.
    #[error("Crypto Pay refused: {code} {name}")]
    Api { code: i64, name: String },
    #[error("Crypto Pay answer malformed: {0}")]
    Malformed(String),
    /// The package has no crypto price (or is gone).
    #[error("package {0:?} is not sold for crypto")]
    NotForSale(String),
    #[error(transparent)]
    Billing(#[from] BillingError),
}

impl From<crate::store::StoreError> for CryptoPayError {
    fn from(e: crate::store::StoreError) -> Self {
        CryptoPayError::Billing(e.into())
    }
}

/// Crypto Pay's `Invoice` object, the fields we read (protocols.md §9).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Invoice {
    pub invoice_id: i64,
    /// `active` | `paid` | `expired`.
    pub status: String,
    #[serde(default)]
    pub currency_type: Option<String>,
    #[serde(default)]
    pub asset: Option<String>,
    #[serde(default)]
    pub fiat: Option<String>,
    /// Decimal string.
    pub amount: String,
    #[serde(default)]
    pub paid_asset: Option<String>,
    #[serde(default)]
    pub paid_amount: Option<String>,
    /// Where the user pays (`pay_url` in API versions before 1.5).
    #[serde(default, alias = "pay_url")]
    pub bot_invoice_url: Option<String>,
    #[serde(default)]
    pub payload: Option<String>,
}

/// The webhook body: `{update_id, update_type, request_date, payload: Invoice}`.
#[derive(Debug, Deserialize)]
struct WebhookUpdate {
    update_type: String,
    payload: Invoice,
}

#[derive(Debug, Deserialize)]
struct Envelope<T> {
    ok: bool,
    result: Option<T>,
    error: Option<ApiErrorBody>,
}

#[derive(Debug, Deserialize)]
struct ApiErrorBody {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
struct Items {
    items: Vec<Invoice>,
}

/// What one sighting of a paid invoice did.
#[derive(Debug, Clone, PartialEq)]
pub enum CryptoOutcome {
    /// Credited now: credits added, the payer's record after.
    Credited { credits: Credits, user: Box<UserRecord> },
    /// Credited before (a second webhook, a poll after the webhook): nothing written.
    AlreadyCredited,
    /// We never created this invoice (another app's, or a forged id): nothing credited.
    Unknown,
    /// We marked it expired: a late payment is not credited (an admin settles it by hand).
    Expired,
    /// The paid invoice's price or payload differ from what we stored: nothing credited.
    Mismatch(String),
    /// The invoice is not paid (`active` / `expired` in the sighting): nothing to credit.
    NotPaid,
}

/// What the webhook route answers.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookVerdict {
    /// Missing or wrong signature: 401, nothing read further.
    Unauthorized,
    /// Signed, but not JSON we understand, or not `invoice_paid`: 200 (a retry cannot help).
    Ignored,
    /// Signed `invoice_paid`, handled (whatever the outcome): 200.
    Handled(CryptoOutcome),
    /// The store failed: 500, so Crypto Pay delivers it again.
    Retry,
}

/// Tells a payer their crypto top-up landed (implemented by `bot`, wired in `app`).
#[async_trait::async_trait]
pub trait PurchaseNotifier: Send + Sync {
    /// `user` is the payer's record after the credit.
    async fn credited(&self, user: &UserRecord, credits: Credits);
}

/// The key of the webhook signature: SHA-256 of the token, raw 32 bytes.
pub fn signature_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `signature` (hex, either case) is HMAC-SHA256 of `body` under `key`. The MAC
/// comparison is constant-time (`Mac::verify_slice`); a header that is not 64 hex digits fails.
pub fn signature_ok(key: &[u8; 32], body: &[u8], signature: &[u8]) -> bool {
    let Ok(given) = hex::decode(signature.trim_ascii()) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return false };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// Decimal strings compare by value: `"1.50"` is `"1.5"`, `"02"` is `"2"`.
fn same_amount(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> String {
        let s = s.trim();
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        format!("{}.{frac}", if int.is_empty() { "0" } else { int })
    }
    norm(a) == norm(b)
}

/// Why a sighting of a paid invoice does not match the stored one, if it does not.
fn mismatch(stored: &CryptoInvoice, seen: &Invoice) -> Option<String> {
    let code = if stored.currency_type == "fiat" { seen.fiat.as_deref() } else { seen.asset.as_deref() };
    if code != Some(stored.currency.as_str()) {
        return Some(format!("currency {code:?}, stored {}", stored.currency));
    }
    if !same_amount(&seen.amount, &stored.amount) {
        return Some(format!("amount {:?}, stored {}", seen.amount, stored.amount));
    }
    if seen.payload.as_deref() != Some(stored.payload.as_str()) {
        return Some(format!("payload {:?}, stored {:?}", seen.payload, stored.payload));
    }
    None
}

/// Inside `tx`: credits a sighting `seen` with status `paid` once (see [`CryptoOutcome`]).
fn settle_paid(tx: &mut Tx, seen: &Invoice, terms: &super::ReferralTerms) -> Result<CryptoOutcome, BillingError> {
    if seen.status != "paid" {
        return Ok(CryptoOutcome::NotPaid);
    }
    let Some(mut inv) = tx.get_crypto_invoice(seen.invoice_id)? else { return Ok(CryptoOutcome::Unknown) };
    match inv.status {
        CryptoStatus::Paid => return Ok(CryptoOutcome::AlreadyCredited),
        CryptoStatus::Expired => return Ok(CryptoOutcome::Expired),
        CryptoStatus::Active => {}
    }
    if let Some(why) = mismatch(&inv, seen) {
        return Ok(CryptoOutcome::Mismatch(why));
    }
    let reason = format!("{CRYPTO_REASON}{}", inv.invoice_id);
    let (op, user) = credit_package(tx, inv.user_id, inv.credits, &reason, terms)?;
    let now = now_ms();
    inv.status = CryptoStatus::Paid;
    inv.paid_at = Some(now);
    inv.updated_at = now;
    inv.operation_id = Some(op.id);
    inv.paid_asset = seen.paid_asset.clone();
    inv.paid_amount = seen.paid_amount.clone();
    tx.put_crypto_invoice(&inv)?;
    Ok(CryptoOutcome::Credited { credits: inv.credits, user: Box::new(user) })
}

/// Inside `tx`: an `active` invoice becomes `expired` (never credited from then on). Returns
/// whether it changed.
fn mark_expired(tx: &mut Tx, invoice_id: i64) -> Result<bool, BillingError> {
    let Some(mut inv) = tx.get_crypto_invoice(invoice_id)? else { return Ok(false) };
    if inv.status != CryptoStatus::Active {
        return Ok(false);
    }
    inv.status = CryptoStatus::Expired;
    inv.updated_at = now_ms();
    tx.put_crypto_invoice(&inv)?;
    Ok(true)
}

/// What one poll did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PollReport {
    /// Open invoices asked about.
    pub asked: usize,
    pub credited: usize,
    pub expired: usize,
}

/// The Crypto Pay service: API client, invoice creation, crediting, webhook check, poller.
/// Cheap to clone.
#[derive(Clone)]
pub struct CryptoPay {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    api: String,
    cfg: CryptoPayConfig,
    key: [u8; 32],
    billing: Billing,
    store: Store,
    notifier: OnceLock<Arc<dyn PurchaseNotifier>>,
}

impl std::fmt::Debug for CryptoPay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CryptoPay").field("api", &self.inner.api).finish_non_exhaustive()
    }
}

impl CryptoPay {
    /// A service over `billing`'s store with the validated `[billing.crypto_pay]` section.
    /// Errors: the HTTP client cannot be built.
    pub fn new(billing: Billing, cfg: CryptoPayConfig) -> Result<CryptoPay, CryptoPayError> {
        // Built here rather than from `providers::http` (billing does not depend on providers),
        // with the same settings: rustls, hickory DNS (never glibc NSS in the static binary).
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .hickory_dns(true)
            .connect_timeout(Duration::from_secs(10))
            .timeout(CALL_TIMEOUT)
            .user_agent(concat!("mediabot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CryptoPayError::Transport(format!("cannot build HTTP client: {e}")))?;
        let api = format!("{}/api", cfg.base_url.trim_end_matches('/'));
        let key = signature_key(cfg.token.expose());
        let store = billing.store.clone();
        Ok(CryptoPay { inner: Arc::new(Inner { http, api, cfg, key, billing, store, notifier: OnceLock::new() }) })
    }

    /// Who tells payers about credits (the bot, once it runs). Set once; later calls are ignored.
    pub fn set_notifier(&self, n: Arc<dyn PurchaseNotifier>) {
        let _ = self.inner.notifier.set(n);
    }

    /// Whether the webhook route is to be served.
    pub fn webhook_enabled(&self) -> bool {
        self.inner.cfg.webhook
    }

    /// The packages sold for crypto, in config order.
    pub fn packages(&self) -> impl Iterator<Item = &Package> {
        self.inner.billing.packages().iter().filter(|p| p.crypto.is_some())
    }

    /// Calls `method` with a JSON body; reads at most [`MAX_RESPONSE_BYTES`] of the answer.
    async fn call<T: DeserializeOwned>(&self, method: &str, body: serde_json::Value) -> Result<T, CryptoPayError> {
        let url = format!("{}/{method}", self.inner.api);
        let mut res = self
            .inner
            .http
            .post(&url)
            .header(TOKEN_HEADER, self.inner.cfg.token.expose())
            .json(&body)
            .send()
            .await
            .map_err(|e| CryptoPayError::Transport(e.without_url().to_string()))?;
        let status = res.status();
        let mut buf = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| CryptoPayError::Transport(e.without_url().to_string()))? {
            if buf.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(CryptoPayError::Malformed(format!("{method}: answer over {MAX_RESPONSE_BYTES} bytes")));
            }
            buf.extend_from_slice(&chunk);
        }
        let env: Envelope<T> = serde_json::from_slice(&buf)
            .map_err(|e| CryptoPayError::Malformed(format!("{method}: HTTP {status}, not the API's JSON: {e}")))?;
        match (env.ok, env.result, env.error) {
            (true, Some(r), _) => Ok(r),
            (false, _, Some(e)) => Err(CryptoPayError::Api { code: e.code, name: e.name }),
            _ => Err(CryptoPayError::Malformed(format!("{method}: HTTP {status}, neither result nor error"))),
        }
    }

    /// `createInvoice` for `package` bought by `user`, stored `active` with the credits it
    /// offers now; `describe(credits)` is the description the payer sees in @CryptoBot (in
    /// their language; cut to Crypto Pay's 1024 characters). When the user already has an
    /// `active` invoice for the same package, price and credits with at least 5 minutes left,
    /// that one is returned and Crypto Pay is not called: a second tap on "💎" does not leave
    /// two open invoices to pay by mistake. Errors: [`CryptoPayError::NotForSale`], API and
    /// transport errors (nothing stored), store errors.
    pub async fn create_invoice(
        &self,
        user: UserId,
        package_id: &str,
        describe: impl FnOnce(Credits) -> String,
    ) -> Result<CryptoInvoice, CryptoPayError> {
        let package = self.inner.billing.package(package_id).cloned();
        let Some((package, price)) = package.and_then(|p| p.crypto.clone().map(|c| (p, c))) else {
            return Err(CryptoPayError::NotForSale(package_id.to_string()));
        };
        let payload = invoice_payload(&package.id, user);
        let credits = package.total();
        let (pid, amount, currency, now) =
            (package.id.clone(), price.amount.clone(), price.currency().to_string(), now_ms());
        let open = self
            .inner
            .store
            .read(move |rx| {
                let open = rx.find_active_crypto_invoices()?;
                Ok::<_, crate::store::StoreError>(
                    open.into_iter()
                        .filter(|i| {
                            i.user_id == user
                                && i.package_id == pid
                                && i.amount == amount
                                && i.currency == currency
                                && i.credits == credits
                                && i.expires_at.saturating_sub(now) >= REUSE_MIN_LEFT_MS
                        })
                        .max_by_key(|i| i.expires_at),
                )
            })
            .await?;
        if let Some(inv) = open {
            tracing::info!(user = user.0, invoice = inv.invoice_id, package = %inv.package_id, "open crypto invoice sent again");
            return Ok(inv);
        }
        let ttl = self.inner.cfg.invoice_ttl_secs;
        let mut body = serde_json::json!({
            "amount": price.amount,
            "payload": payload,
            "description": describe(credits).chars().take(1024).collect::<String>(),
            "expires_in": ttl,
            "allow_comments": false,
            "allow_anonymous": false,
        });
        let currency_type = if price.is_fiat() { "fiat" } else { "crypto" };
        body["currency_type"] = currency_type.into();
        body[if price.is_fiat() { "fiat" } else { "asset" }] = price.currency().into();
        let created = now_ms();
        let inv: Invoice = self.call("createInvoice", body).await?;
        let pay_url = inv.bot_invoice_url.clone().unwrap_or_default();
        if !pay_url.starts_with("https://") {
            return Err(CryptoPayError::Malformed(format!("invoice {} has no https pay URL", inv.invoice_id)));
        }
        let record = CryptoInvoice {
            invoice_id: inv.invoice_id,
            user_id: user,
            package_id: package.id.clone(),
            credits,
            currency_type: currency_type.into(),
            currency: price.currency().into(),
            amount: price.amount.clone(),
            payload,
            status: CryptoStatus::Active,
            pay_url,
            created_at: created,
            expires_at: created.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX).saturating_mul(1000)),
            paid_at: None,
            paid_asset: None,
            paid_amount: None,
            operation_id: None,
            updated_at: created,
        };
        let stored = record.clone();
        self.inner
            .store
            .write(move |tx| {
                // A re-used id would be Crypto Pay's bug; never overwrite a paid record.
                if tx.get_crypto_invoice(stored.invoice_id)?.is_some() {
                    return Err(crate::store::StoreError::Refused(format!("invoice {} exists", stored.invoice_id)));
                }
                tx.put_crypto_invoice(&stored)
            })
            .await?;
        tracing::info!(user = user.0, invoice = record.invoice_id, package = %record.package_id, "crypto invoice created");
        Ok(record)
    }

    /// Credits a sighting of a paid invoice once (webhook or poll), logs what happened, and
    /// tells the payer when it was credited now.
    pub async fn credit(&self, seen: Invoice) -> Result<CryptoOutcome, BillingError> {
        let terms = self.inner.billing.referral_terms();
        let id = seen.invoice_id;
        let outcome = self.inner.store.write(move |tx| settle_paid(tx, &seen, &terms)).await?;
        match &outcome {
            CryptoOutcome::Credited { credits, user } => {
                tracing::info!(invoice = id, user = user.id.0, credits = credits.0, "crypto invoice credited");
                if let Some(n) = self.inner.notifier.get() {
                    let (n, user, credits) = (n.clone(), user.clone(), *credits);
                    // The webhook answers at once; the message goes out on its own.
                    tokio::spawn(async move { n.credited(&user, credits).await });
                }
            }
            CryptoOutcome::AlreadyCredited => tracing::debug!(invoice = id, "crypto invoice seen paid again"),
            CryptoOutcome::NotPaid => {}
            CryptoOutcome::Unknown => {
                tracing::warn!(invoice = id, "a paid crypto invoice we never created: not credited")
            }
            CryptoOutcome::Expired => tracing::error!(
                invoice = id,
                "a crypto invoice we marked expired was paid: not credited; settle it by hand (admin adjust)"
            ),
            CryptoOutcome::Mismatch(why) => {
                tracing::error!(invoice = id, %why, "a paid crypto invoice differs from the stored one: not credited")
            }
        }
        Ok(outcome)
    }

    /// Checks and handles one webhook delivery: the signature over the raw `body` first
    /// (nothing is parsed before), then `invoice_paid` is credited.
    pub async fn webhook(&self, body: &[u8], signature: &[u8]) -> WebhookVerdict {
        if !signature_ok(&self.inner.key, body, signature) {
            return WebhookVerdict::Unauthorized;
        }
        let update: WebhookUpdate = match serde_json::from_slice(body) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(error = %e, "crypto pay webhook: signed but not an update we understand");
                return WebhookVerdict::Ignored;
            }
        };
        if update.update_type != "invoice_paid" {
            return WebhookVerdict::Ignored;
        }
        match self.credit(update.payload).await {
            Ok(o) => WebhookVerdict::Handled(o),
            Err(e) => {
                tracing::error!(error = %e, "crypto pay webhook: could not credit; Crypto Pay will retry");
                WebhookVerdict::Retry
            }
        }
    }

    /// One poll: `getInvoices` for the open invoices (batches of [`POLL_BATCH`]); paid ones are
    /// credited, expired ones marked, ones Crypto Pay no longer lists well past their expiry
    /// marked expired. Errors: the store, or the first API call that failed (later batches are
    /// left to the next poll).
    pub async fn poll_once(&self) -> Result<PollReport, CryptoPayError> {
        let open = self.inner.store.read(|rx| rx.find_active_crypto_invoices()).await?;
        let mut report = PollReport { asked: open.len(), ..Default::default() };
        for batch in open.chunks(POLL_BATCH) {
            let ids: Vec<String> = batch.iter().map(|i| i.invoice_id.to_string()).collect();
            let body = serde_json::json!({"invoice_ids": ids.join(","), "count": POLL_BATCH});
            let listed: Items = self.call("getInvoices", body).await?;
            for stored in batch {
                let seen = listed.items.iter().find(|i| i.invoice_id == stored.invoice_id);
                let expire = match seen {
                    Some(i) if i.status == "paid" => {
                        if matches!(self.credit(i.clone()).await?, CryptoOutcome::Credited { .. }) {
                            report.credited += 1;
                        }
                        false
                    }
                    Some(i) => i.status == "expired",
                    None => now_ms() > stored.expires_at.saturating_add(GONE_GRACE_MS),
                };
                let id = stored.invoice_id;
                if expire && self.inner.store.write(move |tx| mark_expired(tx, id)).await? {
                    tracing::info!(invoice = id, user = stored.user_id.0, "crypto invoice expired unpaid");
                    report.expired += 1;
                }
            }
        }
        Ok(report)
    }

    /// Polls every `poll_interval_secs` until `shutdown`. A failed poll is logged and retried
    /// at the next tick.
    pub async fn run_poller(self, shutdown: CancellationToken) {
        let every = Duration::from_secs(self.inner.cfg.poll_interval_secs);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.poll_once().await {
                Ok(r) if r.credited > 0 || r.expired > 0 => tracing::info!(?r, "crypto invoices polled"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "crypto invoice poll failed; retrying next interval"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_an_independently_computed_vector() {
        // python3: key = hashlib.sha256(b"12345:AAzQcZWQqQAbsfgPnOLr4FHC8Doa4L7KryC").digest();
        // hmac.new(key, body, hashlib.sha256).hexdigest()
        let token = "12345:AAzQcZWQqQAbsfgPnOLr4FHC8Doa4L7KryC";
        let body = br#"{"update_id":1,"update_type":"invoice_paid","request_date":"2026-01-01T00:00:00.000Z","payload":{"invoice_id":42}}"#;
        let key = signature_key(token);
        assert_eq!(hex::encode(key), KEY_HEX);
        assert!(signature_ok(&key, body, SIGNATURE_HEX.as_bytes()));
        assert!(signature_ok(&key, body, SIGNATURE_HEX.to_uppercase().as_bytes()), "hex case does not matter");
        assert!(!signature_ok(&key, &body[1..], SIGNATURE_HEX.as_bytes()), "another body");
        assert!(!signature_ok(&signature_key("other"), body, SIGNATURE_HEX.as_bytes()), "another token");
        assert!(!signature_ok(&key, body, &SIGNATURE_HEX.as_bytes()[..62]), "truncated");
        assert!(!signature_ok(&key, body, b""), "missing");
        assert!(!signature_ok(&key, body, b"zz"), "not hex");
    }

    const KEY_HEX: &str = "1f9caa71b19721138ebe7678ffa9819b98b45359a469b3daf6b5ecf1502c4d16";
    const SIGNATURE_HEX: &str = "4092fc487a1f0dc34223054af37377c5e06aa5ac9e87090bb32d8b94dacd8963";

    fn stored(id: i64, user: i64, status: CryptoStatus) -> CryptoInvoice {
        CryptoInvoice {
            invoice_id: id,
            user_id: UserId(user),
            package_id: "small".into(),
            credits: Credits(110),
            currency_type: "crypto".into(),
            currency: "USDT".into(),
            amount: "1.5".into(),
            payload: invoice_payload("small", UserId(user)),
            status,
            pay_url: "https://t.me/CryptoBot?start=IV1".into(),
            created_at: 1,
            expires_at: 2,
            paid_at: None,
            paid_asset: None,
            paid_amount: None,
            operation_id: None,
            updated_at: 1,
        }
    }

    fn seen(id: i64, user: i64, amount: &str) -> Invoice {
        Invoice {
            invoice_id: id,
            status: "paid".into(),
            currency_type: Some("crypto".into()),
            asset: Some("USDT".into()),
            fiat: None,
            amount: amount.into(),
            paid_asset: Some("USDT".into()),
            paid_amount: Some(amount.into()),
            bot_invoice_url: None,
            payload: Some(invoice_payload("small", UserId(user))),
        }
    }

    #[tokio::test]
    async fn a_paid_invoice_is_credited_once_and_never_when_expired_or_different() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let cfg = crate::config::BillingConfig { signup_bonus: Credits(100), ..Default::default() };
        let billing = Billing::new(store.clone(), cfg);
        let profile =
            crate::billing::Profile { id: UserId(5), first_name: "U".into(), username: None, language_code: None };
        billing.register(profile, None).await.expect("reg");
        let cp = CryptoPay::new(
            billing.clone(),
            CryptoPayConfig { token: crate::config::Secret::new("1:x"), ..Default::default() },
        )
        .expect("client");
        store
            .write(|tx| {
                tx.put_crypto_invoice(&stored(1, 5, CryptoStatus::Active))?;
                tx.put_crypto_invoice(&stored(2, 5, CryptoStatus::Active))?;
                tx.put_crypto_invoice(&stored(3, 5, CryptoStatus::Active))
            })
            .await
            .expect("store");
        let open = store.read(|rx| rx.find_active_crypto_invoices()).await.expect("open");
        assert_eq!(open.iter().map(|i| i.invoice_id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(
            cp.credit(seen(1, 5, "0.5")).await.expect("x"),
            CryptoOutcome::Mismatch("amount \"0.5\", stored 1.5".into())
        );
        let mut other = seen(1, 5, "1.5");
        other.payload = Some(invoice_payload("small", UserId(6)));
        assert!(matches!(cp.credit(other).await.expect("x"), CryptoOutcome::Mismatch(_)));
        let (a, b) = tokio::join!(cp.credit(seen(1, 5, "1.50")), cp.credit(seen(1, 5, "1.5")));
        let outcomes = [a.expect("a"), b.expect("b")];
        assert_eq!(outcomes.iter().filter(|o| matches!(o, CryptoOutcome::Credited { .. })).count(), 1, "{outcomes:?}");
        assert!(outcomes.contains(&CryptoOutcome::AlreadyCredited));
        assert_eq!(cp.credit(seen(9, 5, "1.5")).await.expect("x"), CryptoOutcome::Unknown);
        assert!(store.write(|tx| mark_expired(tx, 2)).await.expect("expire"));
        assert!(!store.write(|tx| mark_expired(tx, 1)).await.expect("a paid one stays paid"));
        assert_eq!(cp.credit(seen(2, 5, "1.5")).await.expect("x"), CryptoOutcome::Expired);
        let mut active = seen(3, 5, "1.5");
        active.status = "active".into();
        assert_eq!(cp.credit(active).await.expect("x"), CryptoOutcome::NotPaid);
        let open = store.read(|rx| rx.find_active_crypto_invoices()).await.expect("open");
        assert_eq!(open.iter().map(|i| i.invoice_id).collect::<Vec<_>>(), [3], "the index follows the status");
        let user = store.read(|rx| rx.get_user(UserId(5))).await.expect("r").expect("user");
        assert_eq!(user.balance, Credits(210));
        assert!(billing.verify().await.expect("verify").is_empty());
        // A paid invoice whose purchase row is missing, or credited to someone else, is reported.
        store
            .write(|tx| {
                let mut inv = tx.get_crypto_invoice(3)?.expect("3");
                inv.status = CryptoStatus::Paid;
                tx.put_crypto_invoice(&inv)
            })
            .await
            .expect("tamper");
        let problems = billing.verify().await.expect("verify");
        assert!(
            problems.iter().any(|m| m.problem.contains("crypto invoice 3 is Paid but has no purchase row")),
            "{problems:?}"
        );
    }

    #[test]
    fn amounts_compare_by_value() {
        assert!(same_amount("1.5", "1.50"));
        assert!(same_amount("2", "2.0"));
        assert!(same_amount("0.10", ".1"));
        assert!(!same_amount("1.5", "15"));
        assert!(!same_amount("1.5", "1.05"));
    }

    #[test]
    fn api_shapes_parse() {
        let ok: Envelope<Invoice> = serde_json::from_str(
            r#"{"ok":true,"result":{"invoice_id":528890,"hash":"IVabc","currency_type":"crypto","asset":"USDT","amount":"1.5","bot_invoice_url":"https://t.me/CryptoBot?start=IVabc","status":"active","created_at":"2026-01-01T00:00:00.000Z","payload":"pkg:small:7"}}"#,
        )
        .expect("ok");
        let inv = ok.result.expect("result");
        assert_eq!((inv.invoice_id, inv.asset.as_deref(), inv.status.as_str()), (528_890, Some("USDT"), "active"));
        let old: Invoice = serde_json::from_str(
            r#"{"invoice_id":1,"status":"paid","amount":"2","pay_url":"https://t.me/CryptoBot?start=IV1"}"#,
        )
        .expect("the older field name");
        assert_eq!(old.bot_invoice_url.as_deref(), Some("https://t.me/CryptoBot?start=IV1"));
        let err: Envelope<Invoice> =
            serde_json::from_str(r#"{"ok":false,"error":{"code":401,"name":"UNAUTHORIZED"}}"#).expect("error");
        assert_eq!((err.ok, err.error.map(|e| (e.code, e.name))), (false, Some((401, "UNAUTHORIZED".into()))));
    }
}
