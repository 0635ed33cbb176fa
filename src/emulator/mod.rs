//! Bot API emulator: a fake Telegram spoken to over HTTP only, plus the sandbox chat page.
//!
//! The bot talks to it exactly as to `api.telegram.org`: point teloxide at the listener with
//! `Bot::new(token).set_api_url("http://127.0.0.1:PORT/".parse()?)` (any token works; the
//! number before `:` becomes the bot's user id). Every call is checked against the official
//! Bot API spec (`botapi_spec.json`, derived from api.json, see [`spec`]) and against the
//! limits Telegram enforces; a call Telegram would refuse gets Telegram's error and is also
//! recorded as a [`Rejection`], so tests can assert that the bot never sent anything invalid.
//!
//! # Bot API routes
//! - `GET|POST /bot{token}/{method}` — method names match case-insensitively (teloxide sends
//!   `SendMessage`). Bodies: JSON, `application/x-www-form-urlencoded`, query string, or
//!   `multipart/form-data` (uploads; nested objects arrive as JSON strings). Answers are
//!   `{"ok":true,"result":…}` or `{"ok":false,"error_code":N,"description":"…","parameters"?:{"retry_after":N}}`.
//!   Emulated: getMe, getUpdates (long poll), getWebhookInfo, setWebhook, deleteWebhook,
//!   logOut, close, setMyCommands, getMyCommands, deleteMyCommands, set/getMyName,
//!   set/getMyDescription, set/getMyShortDescription, set/getChatMenuButton, sendMessage,
//!   editMessageText, editMessageCaption, editMessageReplyMarkup, editMessageMedia,
//!   deleteMessage, deleteMessages, sendPhoto, sendDocument, sendMediaGroup (photos or
//!   documents), sendChatAction, answerCallbackQuery, answerInlineQuery, getFile, and the
//!   Telegram Stars methods (protocols.md §1.8, api.json): sendInvoice (currency `XTR` needs
//!   an empty or no `provider_token` and exactly one `LabeledPrice`; title 1–32 characters,
//!   description 1–255, payload 1–128 bytes; the message carries `invoice`), createInvoiceLink
//!   (the same checks; `subscription_period` only 2592000 with `XTR`; returns a
//!   `https://t.me/$…` link), answerPreCheckoutQuery (`error_message` required with
//!   `ok=false`; a query answered twice or after the payer's 10 s is refused),
//!   refundStarPayment (the charge must be the user's and not refunded yet; the user's chat
//!   then gets a `refunded_payment` message and its update) and getStarTransactions
//!   (`StarTransactions`: each charge with `source`, each refund with `receiver`, a
//!   `TransactionPartnerUser`; `offset`, `limit` 1–100). Any other
//!   spec method is validated, then refused with 400 "…does not emulate it" (recorded as a
//!   rejection), so a test notices at once.
//! - `GET /file/bot{token}/{file_path}` — downloads a file found with getFile.
//!
//! # Control API (JSON; for tests and the sandbox page — no auth, mount it only in sandbox/tests)
//! The control routes, `/sandbox` and its assets answer only requests whose `Host` is loopback
//! (421 otherwise; DNS rebinding) unless the emulator was made public
//! ([`Emulator::allow_any_host`]), and every control POST must be `Content-Type:
//! application/json` (415 otherwise; a cross-site form or `text/plain` POST cannot be).
//! Control bodies take only the fields documented here: an unknown one (a typo, or a field
//! this emulator does not have, like a file path) is refused with 400 `{"error": "unknown
//! field `name`"}` rather than dropped, so a test never passes by ignoring what it sent.
//! - `POST /emulator/control/updates` — a user does something. Body: a [`ControlUpdate`]:
//!   `{"user": {"id", "first_name", "username"?, "language_code"?}` plus exactly one of
//!   `"text"`, `"photo_base64"`, `"document_base64"` (with optional `"file_name"`;
//!   `"caption"` and `"media_group_id"` go with photos and documents: the messages of one
//!   album share a `media_group_id`, one update per file, in order),
//!   `"callback_data"` + `"message_id"` (a press on the inline button of that bot message), or
//!   `"inline_query"`, or `"chosen_inline_result": {"result_id", "query"}` (the user picked a
//!   result the bot offered; Telegram sends it when inline feedback is on). Answer
//!   `{"update_id": N}` or 400 `{"error": "…"}`. Files are sent as bytes (base64), never as a
//!   path. A user who wrote once is a known chat (`chat_id` = user id).
//!   `"pay": {"message_id": N}` (or `{"invoice_link": "…"}`) pays the invoice in that bot
//!   message: the emulator queues a `pre_checkout_query` and waits up to 10 s for
//!   answerPreCheckoutQuery; on `ok=true` it adds the user's message with `successful_payment`
//!   (a fresh `telegram_payment_charge_id`) and its update, otherwise nothing is paid. A
//!   createInvoiceLink link with `subscription_period` pays as a Stars subscription: the
//!   `successful_payment` carries `subscription_expiration_date` (one period on), `is_recurring`
//!   and, the first time, `is_first_recurring`; paying the same link again as the same user is
//!   a renewal (`is_first_recurring` absent, the date one period after the previous one). The
//!   answer is a [`PayOutcome`]: `{"paid", "pre_checkout_update_id",
//!   "successful_payment_update_id"?, "telegram_payment_charge_id"?, "reason"?: "declined" |
//!   "timeout", "error_message"?}`. `"replay_update": <update_id>` queues an update already sent
//!   once again, byte for byte (same `update_id`), as Telegram re-delivers after a crash; it is
//!   handed out at the next getUpdates whatever the offset. Answer `{"update_id": N}`.
//! - `GET /emulator/control/chats/{chat_id}/messages` — the chat transcript in order, user's and
//!   bot's, as [`TranscriptMessage`]s (deleted messages are gone, edits show the latest state).
//! - `GET /emulator/control/chats/{chat_id}` — [`ChatStatus`]: known, blocked, last chat action,
//!   the bot's commands for the chat's language.
//! - `GET /emulator/control/files/{file_id}` — the stored bytes with their content type.
//! - `POST /emulator/control/files/{file_id}/forget` — Telegram forgets that file_id (see
//!   [`Emulator::forget_file`]); 404 for an unknown id.
//! - `GET /emulator/control/rejections` — [`Rejection`]s, oldest first.
//! - `GET /emulator/control/calls` — every Bot API call as a [`CallRecord`], accepted or not.
//! - `GET /emulator/control/callback_answers` — [`CallbackAnswer`]s (answerCallbackQuery).
//! - `GET /emulator/control/inline_answers` — [`InlineAnswer`]s (answerInlineQuery).
//! - `POST /emulator/control/flood` — a [`FloodRule`]: `{"chat_id"?, "method"?, "retry_after",
//!   "times"}`; the next `times` matching calls answer 429 `Too Many Requests: retry after N`
//!   with `parameters.retry_after`. After a 429 the chat (or, for a call without a chat, the
//!   whole bot) is frozen for `retry_after` seconds and calls made meanwhile are recorded with
//!   `during_flood_wait: true`. A rule without `method` never matches getUpdates.
//! - `POST /emulator/control/lose_answers` — a [`LostAnswer`]: `{"method", "times"?}`; the
//!   next `times` (default 1) calls of that method are carried out, then answered 502 `Bad
//!   Gateway` (the answer is lost, the effect stays): the bot cannot know it happened.
//! - `POST /emulator/control/users/{id}/block` and `…/unblock` — while blocked, every call
//!   aimed at that chat answers 403 `Forbidden: bot was blocked by the user`.
//! - `GET /emulator/control/payments` — [`Payments`]: `charges` (each [`Charge`] with its
//!   `state`, `paid` or `refunded`, and `refunded_at_ms`) and `pre_checkouts` (each [`PreCheckout`] with the bot's
//!   answer, or `expired`), oldest first.
//! - `POST /emulator/control/reset` — forget users, chats, files and records; keep what the bot
//!   configured (commands, name, webhook) and keep update ids growing.
//!
//! # Sandbox
//! `GET /sandbox` is a chat page with the bot as user 10001 ("Sandbox"); its script and style
//! are `static/sandbox.{js,css}`, served at `/emulator/static/{path}`. Choosing several files
//! at once posts them as albums of up to 10 (one update per file, a shared `media_group_id`).

mod api;
mod control;
mod markup;
mod media;
mod payments;
mod sandbox;
mod spec;
mod state;
#[cfg(test)]
mod tests;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

#[allow(unused_imports, reason = "the control API's shapes, named in the module docs and read by tests")]
pub use payments::{PayInvoice, PayOutcome, Payments, PreCheckout};
#[allow(unused_imports, reason = "the control API's shapes, named in the module docs and read by tests")]
pub use state::Charge;

/// The largest request body accepted (documents may be up to 50 MB, plus multipart framing).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A fake Telegram Bot API server. Cheap to clone; clones share one state.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

struct Inner {
    spec: spec::Spec,
    state: Mutex<state::State>,
    /// Bumped on every new update (and on a competing getUpdates) to wake long pollers.
    wake: watch::Sender<u64>,
    /// The control API and the sandbox page accept any `Host` (a sandbox deliberately served
    /// on a public address); otherwise loopback names only.
    any_host: AtomicBool,
}

impl Emulator {
    /// An empty emulator (no users, no messages) validating against the embedded spec table.
    pub fn new() -> Emulator {
        Emulator::with_state(state::State::default())
    }

    fn with_state(state: state::State) -> Emulator {
        // The table is generated and checked by a test, so this cannot fail in a built binary;
        // an empty spec would refuse every call loudly rather than crash the appliance.
        let spec = spec::Spec::embedded().unwrap_or_else(|e| {
            tracing::error!(error = %e, "embedded Bot API spec table is unreadable");
            spec::Spec::empty()
        });
        let (wake, _) = watch::channel(0);
        let inner = Inner { spec, state: Mutex::new(state), wake, any_host: AtomicBool::new(false) };
        Emulator { inner: Arc::new(inner) }
    }

    /// An emulator whose update ids and message ids continue after those handed out by any
    /// earlier emulator on the same `data_dir` (a bot on that data dir remembers them: it
    /// would skip a reused update id as handled, and its drafts are keyed by message id).
    /// The ids are reserved in blocks in `data_dir/emulator-ids.json`, so a crash loses none.
    /// Errors: the file exists but cannot be read or parsed (the message names it).
    pub fn persistent(data_dir: &std::path::Path) -> Result<Emulator, String> {
        let counters = state::Counters::load(data_dir.join(state::COUNTERS_FILE))?;
        Ok(Emulator::with_state(state::State::continuing(counters)))
    }

    /// Lets the control API and `/sandbox` answer any `Host`, for a sandbox its operator
    /// serves on a non-loopback address on purpose (`--i-know-this-is-public`).
    pub fn allow_any_host(&self) {
        self.inner.any_host.store(true, Ordering::Relaxed);
    }

    /// All routes: the Bot API, file downloads, the control API, `/sandbox` and `/emulator/static/*`.
    /// Serve it at the root of a listener and give teloxide that listener's URL.
    /// The Bot API routes answer any `Host` (a bot reaches Telegram by any name); the control
    /// API and the sandbox page check it (see the module docs).
    pub fn router(&self) -> Router {
        let control = Router::new()
            .route("/emulator/control/updates", post(control::push))
            .route("/emulator/control/chats/{chat_id}", get(control::chat))
            .route("/emulator/control/chats/{chat_id}/messages", get(control::messages))
            .route("/emulator/control/files/{file_id}", get(control::file))
            .route("/emulator/control/files/{file_id}/forget", post(control::forget))
            .route("/emulator/control/rejections", get(control::rejections))
            .route("/emulator/control/calls", get(control::calls))
            .route("/emulator/control/callback_answers", get(control::callback_answers))
            .route("/emulator/control/inline_answers", get(control::inline_answers))
            .route("/emulator/control/flood", post(control::flood))
            .route("/emulator/control/lose_answers", post(control::lose_answers))
            .route("/emulator/control/users/{id}/block", post(control::block))
            .route("/emulator/control/users/{id}/unblock", post(control::unblock))
            .route("/emulator/control/reset", post(control::reset))
            .route("/emulator/control/payments", get(control::payments))
            .route_layer(from_fn(control::require_json))
            .route("/sandbox", get(sandbox::page))
            .route("/emulator/static/{*path}", get(sandbox::asset))
            .route_layer(from_fn_with_state(self.clone(), control::require_loopback_host));
        Router::new()
            .route("/bot{token}/{method}", get(api::call).post(api::call))
            .route("/file/bot{token}/{*file_path}", get(api::download))
            .merge(control)
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self.clone())
    }

    /// Queues what a user did as a Bot API `Update` and wakes waiting `getUpdates` calls.
    /// Decodes and thumbnails photos (blocking: call it off the async runtime when the file
    /// may be large). Errors: no or several actions, bad base64, photo that is not an image,
    /// `callback_data` without a bot `message_id` of that chat.
    pub fn push_update(&self, u: ControlUpdate) -> Result<i64, String> {
        control::push_update(self, u)
    }

    /// The chat transcript (user and bot messages, in order). Empty for an unknown chat.
    pub fn messages(&self, chat_id: i64) -> Vec<TranscriptMessage> {
        self.lock().transcript(chat_id)
    }

    /// Calls refused because they break the spec or Telegram's limits, oldest first.
    /// "message is not modified", 403 (blocked) and 429 (flood) are normal answers, not here.
    pub fn rejections(&self) -> Vec<Rejection> {
        self.lock().rejections.clone()
    }

    /// Every Bot API call received, accepted or not, oldest first.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().calls.clone()
    }

    /// Every answerCallbackQuery accepted, oldest first.
    pub fn callback_answers(&self) -> Vec<CallbackAnswer> {
        self.lock().callback_answers.clone()
    }

    /// What a chat looks like to its user (known, blocked, last action, the command menu).
    #[cfg(test)]
    pub fn chat_status(&self, chat_id: i64) -> ChatStatus {
        self.lock().chat_status(chat_id)
    }

    /// Every answerInlineQuery accepted, oldest first.
    pub fn inline_answers(&self) -> Vec<InlineAnswer> {
        self.lock().inline_answers.clone()
    }

    /// The bytes of a stored file (uploaded by the bot or by a user), by `file_id`.
    #[cfg(test)]
    pub fn file_bytes(&self, file_id: &str) -> Option<Vec<u8>> {
        self.lock().files.get(file_id).map(|f| f.bytes.to_vec())
    }

    /// Makes Telegram forget a file_id (and the other sizes of its photo): sending by it then
    /// fails with "wrong file identifier", as it does for ids of another bot or expired ones.
    /// Returns false for an unknown id.
    pub fn forget_file(&self, file_id: &str) -> bool {
        let mut st = self.lock();
        let Some(sizes) = st.files.get(file_id).map(|f| f.sizes.clone()) else { return false };
        st.forgotten.insert(file_id.to_string());
        st.forgotten.extend(sizes);
        true
    }

    /// The webhook the bot set, as `(url, secret_token)`; `None` while it long-polls.
    #[cfg(test)]
    pub fn webhook_set(&self) -> Option<(String, String)> {
        let st = self.lock();
        (!st.webhook_url.is_empty()).then(|| (st.webhook_url.clone(), st.webhook_secret.clone()))
    }

    /// Removes and returns the queued updates as Bot API `Update` JSON: what Telegram would
    /// POST to the webhook (the emulator does not connect out; the caller delivers them).
    #[cfg(test)]
    pub fn take_updates(&self) -> Vec<serde_json::Value> {
        self.lock().queue.drain(..).map(|q| q.json).collect()
    }

    /// Adds a flood-control rule (see the control API).
    pub fn add_flood(&self, rule: FloodRule) {
        self.lock().floods.push(rule);
    }

    /// Loses the answers of the next calls of a method (see [`LostAnswer`]).
    pub fn lose_answers(&self, rule: LostAnswer) {
        self.lock().lost_answers.push(rule);
    }

    /// Blocks (`true`) or unblocks the bot for a user.
    pub fn set_blocked(&self, user_id: i64, blocked: bool) {
        let mut st = self.lock();
        if blocked {
            st.blocked.insert(user_id);
        } else {
            st.blocked.remove(&user_id);
        }
    }

    fn lock(&self) -> MutexGuard<'_, state::State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake_pollers(&self) {
        self.inner.wake.send_modify(|n| *n = n.wrapping_add(1));
    }
}

impl Default for Emulator {
    fn default() -> Self {
        Emulator::new()
    }
}

/// A Telegram user as the control API describes them (`User` in the spec, minus bot flags).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlUser {
    pub id: i64,
    pub first_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// IETF language tag as Telegram sends it (`en`, `ru`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_code: Option<String>,
}

/// Something a user does, turned into one Bot API `Update` by [`Emulator::push_update`].
/// Set exactly one action: `text`, `photo_base64`, `document_base64`, `callback_data` (with
/// `message_id`), `inline_query`, `chosen_inline_result`, `pay` or `replay_update`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlUpdate {
    pub user: ControlUser,
    /// A text message; one starting with `/` gets a `bot_command` entity like in Telegram.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A photo (standard base64; a `data:…;base64,` prefix is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_base64: Option<String>,
    /// A file sent "as document" (base64, like `photo_base64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_base64: Option<String>,
    /// Document name (default `file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    /// Caption of a photo or document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// Makes a photo or document part of an album: every message of one album carries the same
    /// `media_group_id` (as Telegram sends an album: one message per file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_group_id: Option<String>,
    /// Data of the pressed inline button; needs `message_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_data: Option<String>,
    /// The bot message whose button was pressed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<i64>,
    /// An inline query typed as `@bot query`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline_query: Option<String>,
    /// A result the user picked from an inline answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_inline_result: Option<ChosenInline>,
    /// Pay an invoice (see [`Emulator::pay`]); answered by the async control route only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pay: Option<PayInvoice>,
    /// Re-deliver an update exactly as first sent (see [`Emulator::replay_update`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_update: Option<i64>,
}

/// `chosen_inline_result` of a [`ControlUpdate`] (Bot API `ChosenInlineResult`, without
/// location or inline_message_id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChosenInline {
    pub result_id: String,
    #[serde(default)]
    pub query: String,
}

/// One message of a chat as a person would see it (text after `parse_mode`, latest edit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptMessage {
    pub message_id: i64,
    pub from_bot: bool,
    /// Unix time (seconds) it was sent.
    pub date: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// `MessageEntity` objects of the text or caption (UTF-16 offsets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<Value>,
    /// Inline keyboard, reply keyboard, keyboard removal or force-reply, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_markup: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_message_id: Option<i64>,
    /// Shared by the messages of one album (sendMediaGroup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_group_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo: Option<TranscriptPhoto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<TranscriptDocument>,
    /// A sendVideo message's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<TranscriptVideo>,
    /// A sendAnimation message's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub animation: Option<TranscriptVideo>,
    /// A sendInvoice message's invoice (the Bot API `Invoice` fields plus the hidden payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<TranscriptInvoice>,
    /// A user's payment message: the `SuccessfulPayment` object the bot received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successful_payment: Option<Value>,
    /// The `RefundedPayment` message Telegram adds after refundStarPayment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded_payment: Option<Value>,
    /// How many accepted edits the message had.
    pub edit_count: u32,
    /// True when the bot sent it by re-using an existing `file_id` (no upload).
    pub sent_by_file_id: bool,
}

/// An invoice as its message shows it (api.json `Invoice`), with the payload the bot set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptInvoice {
    pub title: String,
    pub description: String,
    /// `XTR` for Telegram Stars.
    pub currency: String,
    /// Smallest units; whole Stars for `XTR`.
    pub total_amount: i64,
    pub invoice_payload: String,
}

/// The largest size of a photo message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptPhoto {
    pub file_id: String,
    pub width: u32,
    pub height: u32,
    /// Bytes.
    pub size: u64,
    /// `/emulator/control/files/{file_id}`.
    pub url: String,
}

/// A document, video or animation message's file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptDocument {
    pub file_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    pub mime_type: String,
    pub size: u64,
    pub url: String,
}

/// A video or animation message's file: the document fields plus what a client shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptVideo {
    pub file_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    pub mime_type: String,
    pub size: u64,
    /// The control API's files route for the bytes.
    pub url: String,
    /// Seconds: the call's `duration`, else probed from the file (0 when unknown).
    pub duration: u32,
    /// Pixels: the call's `width` / `height`, else probed.
    pub width: u32,
    pub height: u32,
    /// Whether the call uploaded a usable `thumbnail` (JPEG, at most 320 px).
    #[serde(default)]
    pub has_thumbnail: bool,
    /// sendVideo's `supports_streaming`.
    #[serde(default)]
    pub supports_streaming: bool,
}

/// A call Telegram would refuse (spec violation or broken limit), with the error sent back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// Canonical camelCase name, or the name as sent when it is not a Bot API method.
    pub method: String,
    /// The `description` answered (e.g. `Bad Request: BUTTON_DATA_INVALID`).
    pub reason: String,
    pub status: u16,
    /// The start of the request body (uploads summarised), for debugging.
    pub body: String,
    /// Unix time in milliseconds.
    pub at_ms: u64,
}

/// One Bot API call as received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Canonical camelCase name (`editMessageText`), or as sent when unknown.
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<i64>,
    /// The message addressed, or the message the call created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<i64>,
    /// HTTP status answered (200, 400, 403, 429 …).
    pub status: u16,
    /// The error description when `status` is not 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// Made while its chat (or the bot) was still inside a 429's `retry_after`.
    pub during_flood_wait: bool,
}

/// An accepted answerCallbackQuery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackAnswer {
    pub callback_query_id: String,
    /// The update that carried the query.
    pub update_id: i64,
    pub chat_id: i64,
    pub message_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub show_alert: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub at_ms: u64,
}

/// An accepted answerInlineQuery (results as sent, already validated against the spec).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InlineAnswer {
    pub inline_query_id: String,
    pub update_id: i64,
    pub results: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<String>,
    /// `is_personal` as sent (false when absent).
    #[serde(default)]
    pub is_personal: bool,
    /// `cache_time` in seconds as sent (Telegram's default 300 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_time: Option<i64>,
    /// The `InlineQueryResultsButton` shown above the results, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub button: Option<Value>,
    pub at_ms: u64,
}

/// Flood control to inject: the next `times` calls matching `chat_id` and `method` (both
/// optional) answer 429 with `retry_after` seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloodRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<i64>,
    /// Method name, any case (`editMessageText`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default = "one")]
    pub retry_after: u64,
    #[serde(default = "one_u32")]
    pub times: u32,
}

/// A lost answer to inject: the next `times` calls of `method` (any case) are carried out as
/// usual, then answered 502 `Bad Gateway` instead of their result, as when the connection
/// drops after Telegram acted (a bot that crashed between the call and its record sees the
/// same: nothing). Tests use it on refundStarPayment for the refund outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LostAnswer {
    pub method: String,
    #[serde(default = "one_u32")]
    pub times: u32,
}

fn one() -> u64 {
    1
}

fn one_u32() -> u32 {
    1
}

/// What the control API reports about one chat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatStatus {
    pub chat_id: i64,
    /// A user with this id has written to the bot.
    pub known: bool,
    pub blocked: bool,
    /// Last sendChatAction (`typing`, `upload_photo` …) and when (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action_at_ms: Option<u64>,
    /// The bot's commands as this user's client would show them (`BotCommand` objects).
    pub commands: Vec<Value>,
}
