//! Typed records stored as redb values, with one codec: JSON of `{"v": N, ...}`.
//!
//! JSON keeps records readable in a dump and lets new optional fields arrive without a
//! migration (`#[serde(default)]`); `v` is bumped only when a field changes meaning.

use super::StoreError;
use crate::domain::{Credits, Format, ImageId, JobId, JobStatus, OperationId, UserId};
use crate::providers::Submission;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Encoding shared by every record.
pub trait Record: Serialize + DeserializeOwned {
    /// Layout version written with every record.
    const VERSION: u32;
    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let mut v = serde_json::to_value(self).map_err(|e| StoreError::Codec(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert("v".into(), Self::VERSION.into());
        }
        serde_json::to_vec(&v).map_err(|e| StoreError::Codec(e.to_string()))
    }
    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Codec(e.to_string()))
    }
}

/// A Telegram user as the bot knows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: UserId,
    pub first_name: String,
    #[serde(default)]
    pub username: Option<String>,
    /// IETF tag from Telegram (`ru`, `en-US`), used to pick the locale.
    #[serde(default)]
    pub language_code: Option<String>,
    /// Spendable credits (holds already subtracted). Never negative.
    pub balance: Credits,
    /// Credits currently held for unfinished jobs.
    #[serde(default)]
    pub held: Credits,
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
    /// Telegram answered 403 "bot was blocked by the user".
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub banned: bool,
    /// Access level id from `billing.levels`; empty = the first (default) level. Per-level
    /// rules such as daily limits hang off the level id, so they need no record change.
    #[serde(default)]
    pub level: String,
    /// Unix ms until which `level` holds (a Stars subscription: its
    /// `subscription_expiration_date`); `None` = until changed. Past it the user has the
    /// default level again (read as such at once; a sweep then stores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level_until: Option<i64>,
    /// Interface language the user chose with /language (`ru`, `en`); `None` = follow the
    /// Telegram client's `language_code`.
    #[serde(default)]
    pub language: Option<String>,
    /// Who invited this user and what their own invitations brought (absent in old records).
    #[serde(default)]
    pub referral: ReferralInfo,
}
impl Record for UserRecord {
    const VERSION: u32 = 1;
}

/// A user's side of the referral programme, kept on the user record so `/invite` reads one
/// record: both counters are written in the same transaction as the rows they count, and
/// `billing::verify` checks them against the ledger and the users.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReferralInfo {
    /// The referrer, set once, in the transaction that registered this user.
    pub by: Option<UserId>,
    /// How many users registered through this user's link.
    pub joined: u32,
    /// Credits this user earned as a referrer (the sum of their `Referral` ledger rows).
    pub earned: Credits,
}

/// What a row of the panel's user list shows, kept as the value of every name-index entry of
/// the user (`USER_NAMES_TABLE`), so a name search reads one page of rows in one index walk
/// instead of looking up and decoding each user's record.
///
/// Not JSON like the records: it is derived (rebuilt from `UserRecord` by the write path, the
/// rebuild and migration 006) and read 50 times per page, so it has a small fixed binary layout:
/// balance, held, created_at (i64 little-endian), a flags byte (1 = banned, 2 = has a
/// username), the name's length (u32 LE), the name, then the username (the rest).
#[derive(Debug, Clone, PartialEq)]
pub struct UserSummary {
    pub id: UserId,
    pub first_name: String,
    pub username: Option<String>,
    pub balance: Credits,
    pub held: Credits,
    pub created_at: i64,
    pub banned: bool,
}

impl UserSummary {
    const HEAD: usize = 8 * 3 + 1 + 4;

    /// The summary of a user record.
    pub fn of(u: &UserRecord) -> UserSummary {
        UserSummary {
            id: u.id,
            first_name: u.first_name.clone(),
            username: u.username.clone(),
            balance: u.balance,
            held: u.held,
            created_at: u.created_at,
            banned: u.banned,
        }
    }

    /// The stored form of `u`'s summary (written without building the summary first).
    pub fn encode(u: &UserRecord) -> Result<Vec<u8>, StoreError> {
        let username = u.username.as_deref();
        let name_len = u32::try_from(u.first_name.len()).map_err(|_| StoreError::Codec("name too long".into()))?;
        let mut out = Vec::with_capacity(Self::HEAD + u.first_name.len() + username.map_or(0, str::len));
        out.extend_from_slice(&u.balance.0.to_le_bytes());
        out.extend_from_slice(&u.held.0.to_le_bytes());
        out.extend_from_slice(&u.created_at.to_le_bytes());
        out.push(u8::from(u.banned) | if username.is_some() { 2 } else { 0 });
        out.extend_from_slice(&name_len.to_le_bytes());
        out.extend_from_slice(u.first_name.as_bytes());
        out.extend_from_slice(username.unwrap_or_default().as_bytes());
        Ok(out)
    }

    /// Reads a stored summary of user `id`.
    pub fn decode(id: i64, b: &[u8]) -> Result<UserSummary, StoreError> {
        let bad = || StoreError::Codec(format!("user summary of {id}: {} bytes", b.len()));
        let head = b.get(..Self::HEAD).ok_or_else(bad)?;
        let i64_at = |at: usize| head.get(at..at + 8).and_then(|s| s.try_into().ok()).map(i64::from_le_bytes);
        let flags = head[24];
        let name_len: [u8; 4] = head[25..29].try_into().map_err(|_| bad())?;
        let name_end = usize::try_from(u32::from_le_bytes(name_len)).map_err(|_| bad())?.saturating_add(Self::HEAD);
        let name = b.get(Self::HEAD..name_end).ok_or_else(bad)?;
        let text = |s: &[u8]| std::str::from_utf8(s).map(str::to_owned).map_err(|_| bad());
        Ok(UserSummary {
            id: UserId(id),
            first_name: text(name)?,
            username: if flags & 2 != 0 { Some(text(&b[name_end..])?) } else { None },
            balance: Credits(i64_at(0).ok_or_else(bad)?),
            held: Credits(i64_at(8).ok_or_else(bad)?),
            created_at: i64_at(16).ok_or_else(bad)?,
            banned: flags & 1 != 0,
        })
    }
}

/// Kinds of ledger operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// One-time credit at first /start.
    SignupBonus,
    /// Credits reserved for a job (balance −amount).
    Hold,
    /// A hold turned into a charge (balance unchanged; the hold is consumed).
    Capture,
    /// A hold given back (balance +amount).
    Release,
    /// Manual change by an admin (either sign).
    Adjust,
    /// Credits bought (balance +amount); `reason` = `stars:<telegram_payment_charge_id>` (the
    /// `payments` table holds the charge) or `cryptopay:<invoice_id>` (the `crypto-invoices`
    /// table holds the invoice, turned `paid`), written in the same transaction.
    Purchase,
    /// A reward to a referrer (balance +amount), written in the same transaction as its cause:
    /// `reason` = `ref:<referee id>` for the referee's signup, `ref:<referee id>:<purchase
    /// reason>` (`stars:<charge id>`, `cryptopay:<invoice id>`) for a share of a purchase.
    Referral,
    /// A Telegram Stars charge refunded by an admin: the credits it bought taken back out
    /// (balance −min(credits, balance)). `reason` = `stars:<charge id>`; `amount` = the
    /// charge's credits, `−delta` = what the balance had, so `amount + delta` is the shortfall
    /// (also on the payment, `refund_shortfall`). Written with the payment's `refund_pending`.
    Refund,
    /// A refund Telegram refused: the credits its `Refund` row took are given back (balance
    /// +amount, `reason` = `stars:<charge id>`), with the payment's `refund_failed`.
    RefundReversal,
    /// A job's hold resized when the job moved to a fallback model (`JobRecord::failover`):
    /// `hold_id` = the hold, `amount` = the difference, `delta` = +difference for a cheaper
    /// fallback (given back) or −difference for a pricier one the user agreed to (held too).
    /// At most one per hold, before its capture or release, which then settle the new price.
    HoldAdjust,
}

/// One ledger row. `delta` is the change to the spendable balance; replaying every row's
/// delta in order reproduces the balance (`admin verify-ledger`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub id: OperationId,
    pub user_id: UserId,
    pub kind: OpKind,
    /// Size of the operation (always ≥ 0).
    pub amount: Credits,
    /// Effect on the spendable balance.
    pub delta: Credits,
    /// Balance after this row.
    pub balance_after: Credits,
    #[serde(default)]
    pub job_id: Option<JobId>,
    /// For capture/release: the hold it settles.
    #[serde(default)]
    pub hold_id: Option<OperationId>,
    /// Who did it: `system`, `user`, or `admin:<name>`.
    pub actor: String,
    #[serde(default)]
    pub reason: Option<String>,
    pub created_at: i64,
}
impl Record for Operation {
    const VERSION: u32 = 1;
}

/// Where a paid charge stands. The refund states are the refund outbox: a refund is recorded
/// as pending (with its ledger debit) before `refundStarPayment` is called, then done or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// Credited once; the Stars are ours.
    Paid,
    /// A refund was decided and its ledger debit written; `refundStarPayment` not yet confirmed.
    /// (`refunding` is how an earlier build spelled it; none was ever written.)
    #[serde(alias = "refunding")]
    RefundPending,
    /// Telegram confirmed the refund.
    Refunded,
    /// Telegram refused the refund (the debit was given back).
    RefundFailed,
}

/// One Telegram Stars charge (`SuccessfulPayment`), keyed by `telegram_payment_charge_id` in
/// `PAYMENTS_TABLE`. Written in the same transaction as its `Purchase` ledger row, so a charge
/// present here has been credited exactly once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub telegram_payment_charge_id: String,
    #[serde(default)]
    pub provider_payment_charge_id: String,
    pub user_id: UserId,
    /// `[[billing.packages]]` id at the time of payment.
    pub package_id: String,
    /// Credits added (package credits + bonus).
    pub credits: Credits,
    /// Stars paid (`total_amount`, currency XTR).
    pub stars: i64,
    /// The `Purchase` ledger row.
    pub operation_id: OperationId,
    pub state: PaymentState,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms of the last state change.
    #[serde(default)]
    pub updated_at: i64,
    /// The `Refund` ledger row, once a refund was decided.
    #[serde(default)]
    pub refund_operation_id: Option<OperationId>,
    /// Credits the refund could not take back because the balance was smaller (it went to 0).
    #[serde(default)]
    pub refund_shortfall: Credits,
    /// Who asked for the refund (`admin:<login>`, `tg:<id>`, `cli`).
    #[serde(default)]
    pub refund_actor: String,
    /// Telegram's description when it refused the refund (`refund_failed`).
    #[serde(default)]
    pub refund_error: Option<String>,
}
impl Record for PaymentRecord {
    const VERSION: u32 = 1;
}

/// Where a Crypto Pay invoice stands (Crypto Pay's `status`, as we last learnt it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CryptoStatus {
    /// Created and payable; the poller asks about it.
    Active,
    /// Paid and credited (the `Purchase` row is `operation_id`).
    Paid,
    /// Expired unpaid (or deleted at Crypto Pay): never credited.
    Expired,
}

/// One Crypto Pay invoice we created (protocols.md §9 `Invoice`), keyed by `invoice_id` in
/// `CRYPTO_INVOICES_TABLE`. The price and credits are fixed when it is created: a payment is
/// checked against them and credits what the user was offered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CryptoInvoice {
    pub invoice_id: i64,
    pub user_id: UserId,
    /// `[[billing.packages]]` id when the invoice was made.
    pub package_id: String,
    /// Credits a payment adds (package credits + bonus at creation).
    pub credits: Credits,
    /// `crypto` or `fiat` (Crypto Pay's `currency_type`).
    pub currency_type: String,
    /// The asset (`USDT`) or fiat code (`RUB`) of `amount`.
    pub currency: String,
    /// Decimal string as sent to `createInvoice`.
    pub amount: String,
    /// The `payload` sent (`pkg:<package>:<user>`).
    pub payload: String,
    pub status: CryptoStatus,
    /// Where the user pays (`bot_invoice_url`).
    pub pay_url: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms after which Crypto Pay no longer accepts payment.
    pub expires_at: i64,
    /// Unix ms when we credited it.
    #[serde(default)]
    pub paid_at: Option<i64>,
    /// What the payer actually paid with (`paid_asset`, `paid_amount`), for the panel.
    #[serde(default)]
    pub paid_asset: Option<String>,
    #[serde(default)]
    pub paid_amount: Option<String>,
    /// The `Purchase` ledger row, once paid.
    #[serde(default)]
    pub operation_id: Option<OperationId>,
    /// Unix ms of the last status change.
    #[serde(default)]
    pub updated_at: i64,
}
impl Record for CryptoInvoice {
    const VERSION: u32 = 1;
}

/// How a job's hold ended. Recorded on the job in the same transaction as the ledger row, so a
/// hold is settled at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settlement {
    Captured(OperationId),
    Released(OperationId),
}

/// What the job does. One variant per family of work; new modes add variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum JobPayload {
    /// Text→image (and, with `inputs`, image edits).
    Generate {
        prompt: String,
        #[serde(default)]
        negative: Option<String>,
        format: Format,
        width: u32,
        height: u32,
        #[serde(default)]
        aspect_ratio: Option<String>,
        seed: u64,
        /// sha256 of input files under `media/`.
        #[serde(default)]
        inputs: Vec<String>,
        /// Declared options the user chose (`[[models.options]]` name → value index).
        #[serde(default)]
        options: crate::config::Choices,
    },
    /// "📝 Add text": a caption drawn locally onto one input image; no provider involved.
    AddText {
        /// sha256 of the input file under `media/` (already stripped of metadata).
        input: String,
        /// The caption, as the user typed it (newlines kept).
        text: String,
        /// Free-text style wishes in Russian or English; empty for the default style.
        #[serde(default)]
        wishes: String,
    },
    /// "🔍 Resize" of a library item: a local 2× or 4× Lanczos enlargement (`imaging::enlarge`).
    Resize {
        /// sha256 of the source item's file under `media/`.
        input: String,
        /// The source item's prompt, kept for the new item's caption and inline search.
        #[serde(default)]
        prompt: String,
        /// 2 or 4.
        factor: u32,
        /// The library item resized.
        #[serde(default)]
        source: Option<ImageId>,
    },
    /// "✍️ Write": the language model (`[llm]`) turns a short idea into a detailed image
    /// prompt; the result is text, kept here once written (no library item, no file).
    WritePrompt {
        /// The user's idea, as typed.
        idea: String,
        /// The prompt the model wrote; set in the transaction that captures the hold.
        #[serde(default)]
        written: Option<String>,
    },
}

impl JobPayload {
    /// The user's text for lists and captions: the prompt, or the caption to draw.
    pub fn prompt(&self) -> &str {
        match self {
            JobPayload::Generate { prompt, .. } => prompt,
            JobPayload::AddText { text, .. } => text,
            JobPayload::Resize { prompt, .. } => prompt,
            JobPayload::WritePrompt { idea, .. } => idea,
        }
    }

    /// The media files (sha256) the job reads: edit inputs, the photo to caption or enlarge.
    pub fn input_files(&self) -> impl Iterator<Item = &str> {
        let files: &[String] = match self {
            JobPayload::Generate { inputs, .. } => inputs,
            JobPayload::AddText { input, .. } | JobPayload::Resize { input, .. } => std::slice::from_ref(input),
            JobPayload::WritePrompt { .. } => &[],
        };
        files.iter().map(String::as_str)
    }

    /// Second key of the processing-time statistics (after the model id): the output format
    /// for generations, `local` for local tools, whose time does not depend on a format.
    pub fn stats_key(&self) -> &'static str {
        match self {
            JobPayload::Generate { format, .. } => format.as_str(),
            JobPayload::AddText { .. } | JobPayload::Resize { .. } | JobPayload::WritePrompt { .. } => LOCAL_STATS_KEY,
        }
    }
}

/// [`JobPayload::stats_key`] of local tool jobs.
pub const LOCAL_STATS_KEY: &str = "local";

/// Error classes, decided once per provider answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Transient,
    Rejected,
    Retired,
    Unauthorized,
    /// HTTP 402 for one model: that model is switched off, not its provider.
    PaymentRequired,
    /// The provider refused the model's configuration (a ComfyUI workflow that fails
    /// validation): the model is switched off until an admin fixes it.
    Misconfigured,
    Failed,
    Timeout,
    Internal,
    InsufficientFunds,
    Cancelled,
    /// The result is over Telegram's 50 MB upload limit and no `web.public_url` is set to send
    /// a download link instead: the hold is released.
    TooLarge,
    /// The job's fallback model costs more and the owner said no, or did not answer within
    /// `jobs.failover_answer_secs` (`Failover::confirmed` tells which): the hold is released.
    Declined,
}

/// Last error of a job: the class drives the user text, `detail` is for logs and admins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    pub class: ErrorClass,
    pub detail: String,
}

/// Delivery of a finished job's result to Telegram. `Attempted` is written before the send,
/// so a crash mid-send never leads to a second delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    #[default]
    Pending,
    Attempted,
    Delivered,
    Failed,
    /// The process died between `Attempted` and the end of the send, so nobody knows whether
    /// the result arrived. Rather than risk a second copy the user was told and offered a
    /// "send it" button.
    Interrupted,
}

/// What was decided about translating a job's prompt (stored as `{"kind": "english", "text":
/// "…"}` or `{"kind": "original"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Translation {
    /// The language model's English text: sent to the provider instead of the user's words.
    English { text: String },
    /// The user's words are sent as written: already English-looking, or the language model
    /// failed or ran out of time.
    Original,
}

/// A durable job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub user_id: UserId,
    pub chat_id: i64,
    /// User's language at submit time (for messages sent by the worker).
    pub lang: String,
    pub model_id: String,
    pub provider_id: String,
    pub price: Credits,
    pub payload: JobPayload,
    pub status: JobStatus,
    #[serde(default)]
    pub hold_id: Option<OperationId>,
    #[serde(default)]
    pub settlement: Option<Settlement>,
    /// A request id chosen by us and persisted before submitting (ComfyUI prompt_id).
    #[serde(default)]
    pub preassigned_id: Option<String>,
    /// The provider's handle, stored as soon as the provider accepted.
    #[serde(default)]
    pub submission: Option<Submission>,
    /// The message edited with progress.
    #[serde(default)]
    pub progress_message_id: Option<i32>,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub error: Option<JobError>,
    pub created_at: i64,
    #[serde(default)]
    pub started_at: Option<i64>,
    #[serde(default)]
    pub submitted_at: Option<i64>,
    #[serde(default)]
    pub finished_at: Option<i64>,
    #[serde(default)]
    pub result: Option<ImageId>,
    #[serde(default)]
    pub delivery: Delivery,
    /// The draft the job came from (its Cancel button refers to it).
    #[serde(default, with = "opt_u128_string")]
    pub draft_id: Option<u128>,
    /// Worker (process) that runs the job and its last heartbeat. redb admits one process per
    /// database, so a claim by another worker id is always from a dead process.
    #[serde(default)]
    pub claimed_by: Option<String>,
    #[serde(default)]
    pub heartbeat_at: Option<i64>,
    /// Submitted by an admin: runs before everyone else's jobs.
    #[serde(default)]
    pub priority: bool,
    /// The prompt's English translation for a model with `translate = true`, decided once
    /// before the first submit and kept so a retry or a restart sends the same words without
    /// asking the language model again. `None`: not decided yet (or not a translating model).
    #[serde(default)]
    pub translation: Option<Translation>,
    /// The local day (`yyyymmdd` in `billing.time_zone`) whose daily quota this job counts
    /// against; given back to that day when the hold is released. `None`: not counted (an
    /// unlimited level, a local tool, or a job from before quotas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_day: Option<i32>,
    /// Set when the job left the model it was created for for a fallback
    /// (`[[models]] fallbacks`); `model_id`, `provider_id` and `price` then describe the
    /// fallback, this the original. A job moves at most once.
    #[serde(default)]
    pub failover: Option<Failover>,
}
impl Record for JobRecord {
    const VERSION: u32 = 1;
}

/// A job's move to a fallback model, kept on the job for its caption, `/status`, the
/// dashboard and `billing::verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failover {
    /// The model (and its provider) the job was created for.
    pub from_model: String,
    pub from_provider: String,
    /// What the hold was placed for (the original model's price with the chosen options).
    pub from_price: Credits,
    /// The fallback and its price for this job (its options as far as it declares them).
    pub to_model: String,
    pub to_price: Credits,
    /// Why the job moved, for admins: the switch's reason or the provider's last error.
    pub reason: String,
    /// When it moved (or the user was asked), ms since the epoch.
    pub at: i64,
    /// The fallback costs more than the hold: `None` while the owner has not answered,
    /// then their answer. Always `Some(true)` for a move that needed no question.
    #[serde(default)]
    pub confirmed: Option<bool>,
    /// The question went out (or was tried); false after a crash between the move and the
    /// question, which the scheduler then asks again.
    #[serde(default)]
    pub asked: bool,
}

/// A result in a user's library. The bytes live in `media/<sha256>.<ext>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LibraryItem {
    pub id: ImageId,
    pub owner: UserId,
    #[serde(default)]
    pub job_id: Option<JobId>,
    /// What made it: `create`, `add_text`, `resize`; later `edit`, …
    pub kind: String,
    pub prompt: String,
    #[serde(default)]
    pub negative: Option<String>,
    pub model_id: String,
    pub format: Format,
    pub seed: u64,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    pub sha256: String,
    /// File extension under media/ (`png`, `jpg`, `webp`).
    pub ext: String,
    pub mime: String,
    pub created_at: i64,
    #[serde(default)]
    pub favourite: bool,
    #[serde(default)]
    pub categories: Vec<String>,
    /// Telegram file_id of the sent photo (images), once sent.
    #[serde(default)]
    pub photo_file_id: Option<String>,
    /// Telegram file_id of the sent document, or of the video / animation itself.
    #[serde(default)]
    pub document_file_id: Option<String>,
    #[serde(default)]
    pub is_demo: bool,
    /// The library item this one was made from (a resize's source).
    #[serde(default)]
    pub source: Option<ImageId>,
    /// What kind of file it is (sniffed when stored); decides how it is sent. Items stored
    /// before kinds existed are images.
    #[serde(default)]
    pub media: crate::domain::MediaKind,
}
impl Record for LibraryItem {
    const VERSION: u32 = 1;
}

/// A prompt waiting for the user to press model and format buttons. Consumed (deleted) in the
/// transaction that creates the job, so a double tap cannot start two jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    #[serde(with = "u128_string")]
    pub id: u128,
    pub user_id: UserId,
    pub chat_id: i64,
    pub prompt: String,
    #[serde(default)]
    pub negative: Option<String>,
    /// Model picked by `| model=…` or by a button.
    #[serde(default)]
    pub model_id: Option<String>,
    /// Explicit `size=WxH`.
    #[serde(default)]
    pub size: Option<(u32, u32)>,
    #[serde(default)]
    pub aspect_ratio: Option<String>,
    /// sha256 of input images under `media/` (photo with a caption → edit).
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Declared options chosen so far (name → value index); the rest are still to ask.
    #[serde(default)]
    pub options: crate::config::Choices,
    /// Format chosen by a button (before the options were asked).
    #[serde(default)]
    pub format: Option<Format>,
    pub created_at: i64,
    /// Set once a job was created from it.
    #[serde(default)]
    pub job_id: Option<JobId>,
    /// A video draft's price was shown and accepted ("✅ Create for N"); quick mode sets it
    /// at once. Other drafts never ask.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub confirmed: bool,
}
impl Draft {
    /// A fresh draft of `user` in `chat` (a Telegram chat id) keyed `id`: the prompt and
    /// photos (sha256 of stored inputs) given, everything the buttons choose still open,
    /// created now.
    pub fn new(
        id: u128,
        (user_id, chat_id): (UserId, i64),
        (prompt, negative): (String, Option<String>),
        inputs: Vec<String>,
    ) -> Draft {
        Draft {
            id,
            user_id,
            chat_id,
            prompt,
            negative,
            model_id: None,
            size: None,
            aspect_ratio: None,
            inputs,
            options: Default::default(),
            format: None,
            created_at: crate::domain::now_ms(),
            job_id: None,
            confirmed: false,
        }
    }
}

impl Record for Draft {
    const VERSION: u32 = 1;
}

/// An uploaded input photo under `media/<sha256>.<ext>` (`inputs-1`, keyed by the sha256):
/// kept while a job or a draft uses it, and for `library.input_retention_days` after its last
/// use; never removed while a library item or an active job references the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputRecord {
    /// File extension (`jpg`, `png`, `webp`, `gif`).
    pub ext: String,
    /// File size in bytes (counted in `library.disk_budget_mb`).
    pub bytes: u64,
    /// When it was last accepted, or written in a job or a draft (ms since the epoch).
    pub last_used_at: i64,
}
impl Record for InputRecord {
    const VERSION: u32 = 1;
}

/// A named set of generation settings ("💾 Save as preset" under a result), offered beside the
/// models when the user creates. Keyed by (owner, number) in `presets-1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preset {
    pub owner: UserId,
    /// 1-based per owner; what callback data carries.
    pub number: u32,
    pub name: String,
    pub model_id: String,
    pub format: Format,
    #[serde(default)]
    pub negative: Option<String>,
    /// Explicit pixel size the source job asked for (`size=WxH`), if any.
    #[serde(default)]
    pub size: Option<(u32, u32)>,
    #[serde(default)]
    pub aspect_ratio: Option<String>,
    pub created_at: i64,
}
impl Record for Preset {
    const VERSION: u32 = 1;
}

/// One admin action, as the audit log shows it: who, what, on what, before → after.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// UUIDv7, so it carries the time too. A decimal string: JSON numbers stop at 64 bits.
    #[serde(with = "u128_string")]
    pub id: u128,
    /// `admin:<name>`.
    pub actor: String,
    /// Short verb: `login`, `adjust_balance`, `ban`, `unban`, …
    pub action: String,
    /// What it was done to (`user:42`), empty for session actions.
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub before: String,
    #[serde(default)]
    pub after: String,
    pub created_at: i64,
}
impl Record for AuditEntry {
    const VERSION: u32 = 1;
}

/// Who a broadcast goes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BroadcastTarget {
    All,
    /// Users whose level id is this (empty = the default level).
    Level {
        level: String,
    },
    /// Users who created a job on this day (day number since 1970-01-01 UTC) or later.
    ActiveSince {
        day: i64,
    },
}

/// Where a broadcast is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastState {
    /// Composed and previewed, not started.
    Draft,
    /// Being sent; resumed from `cursor` after a restart.
    Sending,
    Done,
    Cancelled,
}

/// An admin message to many users, with its progress. The sender walks recipients in user id
/// order and stores `cursor` (the last user id handled) with the counters after each send, so a
/// restart resumes after the last user handled and sends nobody a second copy, except the one
/// send that was in flight at the crash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broadcast {
    #[serde(with = "u128_string")]
    pub id: u128,
    /// `admin:<name>`.
    pub actor: String,
    pub text: String,
    /// Optional photo: sha256 and extension of a file under `media/` (sent with `text` as caption).
    #[serde(default)]
    pub image: Option<(String, String)>,
    pub target: BroadcastTarget,
    pub state: BroadcastState,
    /// Recipients counted when sending started.
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub cursor: Option<i64>,
    #[serde(default)]
    pub sent: u64,
    /// Telegram answered 403 (the user blocked the bot); those users are marked blocked.
    #[serde(default)]
    pub blocked: u64,
    #[serde(default)]
    pub failed: u64,
    pub created_at: i64,
    #[serde(default)]
    pub finished_at: Option<i64>,
}
impl Record for Broadcast {
    const VERSION: u32 = 1;
}

impl Broadcast {
    /// A new draft with a fresh time-ordered id and zero counters.
    pub fn draft(
        actor: String,
        text: String,
        image: Option<(String, String)>,
        target: BroadcastTarget,
        now: i64,
    ) -> Self {
        Broadcast {
            id: uuid::Uuid::now_v7().as_u128(),
            actor,
            text,
            image,
            target,
            state: BroadcastState::Draft,
            total: 0,
            cursor: None,
            sent: 0,
            blocked: 0,
            failed: 0,
            created_at: now,
            finished_at: None,
        }
    }
    /// Recipients handled so far.
    pub fn handled(&self) -> u64 {
        self.sent + self.blocked + self.failed
    }
    /// Whether `u` is a recipient (banned users and users known to have blocked the bot never are).
    pub fn wants(&self, u: &UserRecord) -> bool {
        if u.banned || u.blocked {
            return false;
        }
        match &self.target {
            BroadcastTarget::All | BroadcastTarget::ActiveSince { .. } => true,
            BroadcastTarget::Level { level } => &u.level == level,
        }
    }
}

/// A queued text→image job for tests (one fixture instead of a copy per module).
#[cfg(test)]
pub fn test_job(user: UserId, price: i64) -> JobRecord {
    JobRecord {
        id: JobId::new(),
        user_id: user,
        chat_id: user.0,
        lang: "en".into(),
        model_id: "m".into(),
        provider_id: "p".into(),
        price: Credits(price),
        payload: JobPayload::Generate {
            prompt: "x".into(),
            negative: None,
            format: Format::Square,
            width: 1,
            height: 1,
            aspect_ratio: None,
            seed: 1,
            inputs: vec![],
            options: Default::default(),
        },
        status: JobStatus::Queued,
        hold_id: None,
        settlement: None,
        preassigned_id: None,
        submission: None,
        progress_message_id: None,
        attempts: 0,
        error: None,
        created_at: crate::domain::now_ms(),
        started_at: None,
        submitted_at: None,
        finished_at: None,
        result: None,
        delivery: Delivery::Pending,
        draft_id: None,
        claimed_by: None,
        heartbeat_at: None,
        priority: false,
        translation: None,
        quota_day: None,
        failover: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_summaries_round_trip_and_refuse_damaged_bytes() {
        let mut u = UserRecord {
            id: UserId(-42),
            first_name: "Вера <b>&".into(),
            username: Some("vera_7".into()),
            language_code: None,
            balance: Credits(i64::MAX),
            held: Credits(-1),
            created_at: 1_764_000_000_123,
            updated_at: 5,
            blocked: true,
            banned: true,
            level: "vip".into(),
            level_until: None,
            language: None,
            referral: Default::default(),
        };
        for (name, username, banned) in [("Вера <b>&", Some("vera_7"), true), ("", None, false), ("x", Some(""), false)]
        {
            u.first_name = name.into();
            u.username = username.map(Into::into);
            u.banned = banned;
            let bytes = UserSummary::encode(&u).expect("encode");
            assert_eq!(UserSummary::decode(-42, &bytes).expect("decode"), UserSummary::of(&u), "{name:?}");
            for cut in 0..bytes.len() {
                if let Ok(s) = UserSummary::decode(-42, &bytes[..cut]) {
                    // Only the username (the tail) can be cut without the length noticing.
                    assert_eq!((s.first_name.as_str(), s.banned), (name, banned), "cut at {cut}");
                    assert_ne!(s.username.as_deref(), username, "cut at {cut}");
                }
            }
        }
        let mut bad = UserSummary::encode(&u).expect("encode");
        bad.push(0xff);
        assert!(UserSummary::decode(1, &bad).is_err(), "a username that is not UTF-8");
    }

    #[test]
    fn records_round_trip_and_old_shapes_decode() {
        let u = UserRecord {
            id: UserId(7),
            first_name: "Анна".into(),
            username: Some("anna".into()),
            language_code: Some("ru".into()),
            balance: Credits(90),
            held: Credits(10),
            created_at: 1,
            updated_at: 2,
            blocked: false,
            banned: false,
            level: "vip".into(),
            level_until: None,
            language: None,
            referral: Default::default(),
        };
        let bytes = u.encode().expect("encode");
        assert!(String::from_utf8_lossy(&bytes).contains("\"v\":1"));
        assert_eq!(UserRecord::decode(&bytes).expect("decode"), u);
        // A v1 record written before `held`/`blocked` existed still decodes.
        let old = br#"{"v":1,"id":7,"first_name":"A","balance":5,"created_at":1}"#;
        let d = UserRecord::decode(old).expect("old");
        assert_eq!(d.held, Credits(0));
        assert!(!d.blocked);

        // Jobs: the translation round-trips in its tagged shape, and a job stored before
        // `translation` existed decodes as undecided (a resumed job translates then, once).
        let mut job = test_job(UserId(7), 10);
        job.translation = Some(Translation::English { text: "a red fox".into() });
        let bytes = job.encode().expect("encode");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["translation"], serde_json::json!({"kind": "english", "text": "a red fox"}));
        assert_eq!(JobRecord::decode(&bytes).expect("decode"), job);
        job.translation = Some(Translation::Original);
        let v = serde_json::to_value(&job).expect("json");
        assert_eq!(v["translation"], serde_json::json!({"kind": "original"}));
        let mut old = serde_json::to_value(&job).expect("json");
        old.as_object_mut().expect("object").remove("translation");
        let old = JobRecord::decode(&serde_json::to_vec(&old).expect("bytes")).expect("a job stored before");
        assert_eq!(old, JobRecord { translation: None, ..job });
        // A job as the version before translation stored it; the literal must keep decoding.
        let stored = r#"{"v":1,"id":"0190f5a2-7c3e-7000-8000-000000000001","user_id":7,"chat_id":7,"lang":"ru","model_id":"seedream","provider_id":"fal","price":10,"payload":{"kind":"generate","prompt":"лиса","negative":null,"format":"square","width":1024,"height":1024,"aspect_ratio":null,"seed":3},"status":"submitting","attempts":1,"created_at":1}"#;
        let old = JobRecord::decode(stored.as_bytes()).expect("the stored literal");
        assert_eq!((old.status, old.translation, old.payload.prompt()), (JobStatus::Submitting, None, "лиса"));
    }

    #[test]
    fn records_with_uuid_ids_round_trip() {
        let op = Operation {
            id: OperationId::new(),
            user_id: UserId(1),
            kind: OpKind::Hold,
            amount: Credits(5),
            delta: Credits(-5),
            balance_after: Credits(95),
            job_id: Some(JobId::new()),
            hold_id: None,
            actor: "user".into(),
            reason: None,
            created_at: 1,
        };
        assert_eq!(Operation::decode(&op.encode().expect("enc")).expect("dec"), op);
        let pay = PaymentRecord {
            telegram_payment_charge_id: "stxABC".into(),
            provider_payment_charge_id: "p-1".into(),
            user_id: UserId(7),
            package_id: "small".into(),
            credits: Credits(110),
            stars: 50,
            operation_id: OperationId::new(),
            state: PaymentState::Paid,
            created_at: 5,
            updated_at: 5,
            refund_operation_id: None,
            refund_shortfall: Credits::ZERO,
            refund_actor: String::new(),
            refund_error: None,
        };
        let bytes = pay.encode().expect("enc");
        assert!(String::from_utf8_lossy(&bytes).contains(r#""state":"paid""#), "states are snake_case words");
        assert_eq!(PaymentRecord::decode(&bytes).expect("dec"), pay);
        for state in [PaymentState::RefundPending, PaymentState::Refunded, PaymentState::RefundFailed] {
            let p = PaymentRecord { state, ..pay.clone() };
            assert_eq!(PaymentRecord::decode(&p.encode().expect("enc")).expect("dec"), p);
        }
        // A charge as stored before refunds (no refund fields) still reads, and the state's
        // earlier spelling too.
        let stored = r#"{"v":1,"telegram_payment_charge_id":"stxOLD","user_id":7,"package_id":"small","credits":110,"stars":50,"operation_id":"0190f5a2-7c3e-7000-8000-000000000001","state":"refunding","created_at":5}"#;
        let old = PaymentRecord::decode(stored.as_bytes()).expect("the stored literal");
        assert_eq!(
            (old.state, old.refund_operation_id, old.refund_shortfall),
            (PaymentState::RefundPending, None, Credits::ZERO)
        );
        let refunded = PaymentRecord {
            state: PaymentState::Refunded,
            refund_operation_id: Some(OperationId::new()),
            refund_shortfall: Credits(30),
            refund_actor: "tg:1".into(),
            refund_error: Some("x".into()),
            ..pay.clone()
        };
        let bytes = refunded.encode().expect("enc");
        assert!(String::from_utf8_lossy(&bytes).contains(r#""state":"refunded""#));
        assert_eq!(PaymentRecord::decode(&bytes).expect("dec"), refunded);
        let pending = PaymentRecord { state: PaymentState::RefundPending, ..pay.clone() };
        assert!(String::from_utf8_lossy(&pending.encode().expect("enc")).contains(r#""state":"refund_pending""#));
        let inv = CryptoInvoice {
            invoice_id: 528_890,
            user_id: UserId(7),
            package_id: "small".into(),
            credits: Credits(110),
            currency_type: "crypto".into(),
            currency: "USDT".into(),
            amount: "1.5".into(),
            payload: "pkg:small:7".into(),
            status: CryptoStatus::Paid,
            pay_url: "https://t.me/CryptoBot?start=IVabc".into(),
            created_at: 1,
            expires_at: 2,
            paid_at: Some(2),
            paid_asset: Some("USDT".into()),
            paid_amount: Some("1.5".into()),
            operation_id: Some(OperationId::new()),
            updated_at: 2,
        };
        let bytes = inv.encode().expect("enc");
        assert!(String::from_utf8_lossy(&bytes).contains(r#""status":"paid""#));
        assert_eq!(CryptoInvoice::decode(&bytes).expect("dec"), inv);
        let d = Draft {
            id: u128::MAX,
            user_id: UserId(1),
            chat_id: 1,
            prompt: "p".into(),
            negative: None,
            model_id: None,
            size: Some((64, 64)),
            aspect_ratio: None,
            inputs: vec![],
            options: Default::default(),
            format: None,
            created_at: 0,
            job_id: Some(JobId::new()),
            confirmed: true,
        };
        assert_eq!(Draft::decode(&d.encode().expect("enc")).expect("dec"), d);
    }

    #[test]
    fn job_payload_is_tagged() {
        let p = JobPayload::Generate {
            prompt: "cat".into(),
            negative: None,
            format: Format::Square,
            width: 1,
            height: 1,
            aspect_ratio: None,
            seed: 3,
            inputs: vec![],
            options: Default::default(),
        };
        let j = serde_json::to_value(&p).expect("json");
        assert_eq!(j["kind"], "generate");
        // Add-text jobs stored by this version; the literal must keep decoding.
        let stored = r#"{"kind":"add_text","input":"ab12","text":"Привет\nмир"}"#;
        let back: JobPayload = serde_json::from_str(stored).expect("decodes");
        assert_eq!(
            back,
            JobPayload::AddText { input: "ab12".into(), text: "Привет\nмир".into(), wishes: String::new() }
        );
        assert_eq!((back.prompt(), back.stats_key(), p.stats_key()), ("Привет\nмир", "local", "square"));
    }
}

/// u128 as a decimal string (JSON numbers stop at 64 bits).
mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Option<u128> as an optional decimal string.
mod opt_u128_string {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<u128>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u128>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        s.map(|s| s.parse().map_err(serde::de::Error::custom)).transpose()
    }
}
