//! The emulator's memory: users, chats and their messages, files, queued updates and the
//! records tests read. Plain data behind one `std::sync::Mutex`; nothing here awaits.

use super::{
    CallRecord, CallbackAnswer, ChatStatus, ControlUser, FloodRule, InlineAnswer, Rejection, TranscriptDocument,
    TranscriptMessage, TranscriptPhoto, TranscriptVideo,
};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

/// The bot's user id when the token does not start with a number.
pub(crate) const DEFAULT_BOT_ID: i64 = 7_000_000_001;
pub(crate) const BOT_FIRST_NAME: &str = "Mediabot (emulator)";
pub(crate) const BOT_USERNAME: &str = "mediabot_emulator_bot";

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FileKind {
    Photo,
    Document,
    /// sendVideo: shown inline as a video.
    Video,
    /// sendAnimation: a GIF or a silent MP4.
    Animation,
}

#[derive(Debug, Clone)]
pub(crate) struct FileRec {
    pub file_id: String,
    pub unique_id: String,
    pub bytes: Bytes,
    pub kind: FileKind,
    pub mime: String,
    pub file_name: Option<String>,
    pub width: u32,
    pub height: u32,
    pub file_path: String,
    /// For photos: every size of the same picture, smallest first (includes this one).
    pub sizes: Vec<String>,
    /// Videos and animations: length in seconds (the call's `duration`, else probed).
    pub duration: u32,
    /// Videos and animations: the `thumbnail` uploaded with the call, when Telegram would take
    /// it (a JPEG of at most 320 px).
    pub thumbnail: Option<Bytes>,
    /// sendVideo's `supports_streaming` of the upload.
    pub supports_streaming: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Msg {
    pub id: i64,
    pub date: i64,
    pub from_bot: bool,
    pub text: Option<String>,
    pub caption: Option<String>,
    /// Entities of the text or of the caption.
    pub entities: Vec<Value>,
    pub markup: Option<Value>,
    /// Photo sizes (file ids, smallest first).
    pub photo: Option<Vec<String>>,
    pub document: Option<String>,
    pub video: Option<String>,
    pub animation: Option<String>,
    pub reply_to: Option<i64>,
    pub media_group_id: Option<String>,
    pub edit_date: Option<i64>,
    pub edit_count: u32,
    pub by_file_id: bool,
    /// A sendInvoice message's invoice.
    pub invoice: Option<InvoiceRec>,
    /// A user's `successful_payment` or `refunded_payment` service message: (field, object).
    pub payment: Option<(&'static str, Value)>,
}

/// An invoice the bot made (sendInvoice or createInvoiceLink), as the payer's client knows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct InvoiceRec {
    pub title: String,
    pub description: String,
    pub payload: String,
    pub currency: String,
    pub total_amount: i64,
    pub start_parameter: String,
    pub subscription_period: Option<i64>,
}

/// A `pre_checkout_query` sent to the bot and what it answered.
#[derive(Debug, Clone)]
pub(crate) struct PreCheckoutRec {
    pub update_id: i64,
    pub user_id: i64,
    /// `(ok, error_message)` once answered.
    pub answer: Option<(bool, Option<String>)>,
    /// The payer gave up waiting (10 s): a later answer is refused like Telegram's.
    pub expired: bool,
}

/// One Stars charge and its refund state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Charge {
    pub telegram_payment_charge_id: String,
    pub provider_payment_charge_id: String,
    pub user_id: i64,
    pub currency: String,
    pub total_amount: i64,
    pub invoice_payload: String,
    /// The bot message with the invoice that was paid (`None` for an invoice link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<i64>,
    /// The update carrying the `successful_payment` message.
    pub update_id: i64,
    /// `paid` or `refunded`.
    pub state: String,
    pub paid_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refunded_at_ms: Option<u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Chat {
    pub next_message_id: i64,
    pub messages: Vec<Msg>,
    pub last_action: Option<(String, u64)>,
}

#[derive(Debug)]
pub(crate) struct Queued {
    pub id: i64,
    pub kind: &'static str,
    pub json: Value,
    /// Re-delivered by the control API (`replay_update`): its id is below the bot's offset,
    /// so it is handed out once and dropped at the next getUpdates instead of by offset.
    pub replay: bool,
    pub delivered: bool,
}

#[derive(Debug)]
pub(crate) struct CallbackRec {
    pub update_id: i64,
    pub chat_id: i64,
    pub message_id: i64,
    pub answered: bool,
}

/// File in the data dir that holds the emulator's id reservations.
pub(crate) const COUNTERS_FILE: &str = "emulator-ids.json";
/// Ids reserved per write of [`COUNTERS_FILE`]: the file is written once per this many new
/// update ids (or message ids), and a restart skips at most this many.
const RESERVE_BLOCK: i64 = 1000;

/// Update and message ids reserved on disk: every id handed out is at most the reserved one,
/// so an emulator started from the file continues above anything a bot has seen.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Counters {
    #[serde(skip)]
    path: Option<std::path::PathBuf>,
    /// Highest update id that may have been handed out.
    update_id: i64,
    /// Highest message id (in any chat) that may have been handed out.
    message_id: i64,
}

impl Counters {
    /// Reads `path` (zeros when it does not exist yet).
    pub fn load(path: std::path::PathBuf) -> Result<Counters, String> {
        let mut c = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Counters>(&bytes).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Counters::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        c.path = Some(path);
        Ok(c)
    }

    /// Makes sure `update_id` and `message_id` are reserved, writing the next block to the
    /// file when either is not (rarely: once per [`RESERVE_BLOCK`] ids).
    fn reserve(&mut self, update_id: i64, message_id: i64) {
        let Some(path) = &self.path else { return };
        if update_id <= self.update_id && message_id <= self.message_id {
            return;
        }
        let next = Counters {
            path: None,
            update_id: self.update_id.max(update_id.saturating_add(RESERVE_BLOCK)),
            message_id: self.message_id.max(message_id.saturating_add(RESERVE_BLOCK)),
        };
        // Written beside and renamed over, so a crash leaves the old or the new file.
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec(&next)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        match written {
            Ok(()) => (self.update_id, self.message_id) = (next.update_id, next.message_id),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "emulator ids not saved; a restart may reuse them")
            }
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct State {
    pub bot_id: Option<i64>,
    pub next_update_id: i64,
    /// New chats number their messages after this (kept across `reset` and, with
    /// [`Counters`], across restarts).
    pub message_id_floor: i64,
    pub counters: Counters,
    pub queue: VecDeque<Queued>,
    pub allowed_updates: Option<Vec<String>>,
    pub webhook_url: String,
    /// `secret_token` of the last setWebhook (sent back in `X-Telegram-Bot-Api-Secret-Token`).
    pub webhook_secret: String,
    /// Bumped by every getUpdates; an older long poll that sees a newer value answers 409.
    pub poll_generation: u64,
    pub users: HashMap<i64, ControlUser>,
    pub chats: HashMap<i64, Chat>,
    pub files: HashMap<String, FileRec>,
    /// `file_path` → `file_id`.
    pub paths: HashMap<String, String>,
    pub next_file: u64,
    pub callbacks: HashMap<String, CallbackRec>,
    pub inline_queries: HashMap<String, i64>,
    pub callback_answers: Vec<CallbackAnswer>,
    pub inline_answers: Vec<InlineAnswer>,
    /// file_ids Telegram "forgot" (control API): sending by them fails like an unknown id,
    /// while the messages that carry them stay readable.
    pub forgotten: std::collections::HashSet<String>,
    pub rejections: Vec<Rejection>,
    pub calls: Vec<CallRecord>,
    pub floods: Vec<FloodRule>,
    /// Methods whose next answers are lost (control API `lose_answers`).
    pub lost_answers: Vec<super::LostAnswer>,
    /// Chat (or `None` for the whole bot) → frozen until this Unix ms, after a 429.
    pub frozen: HashMap<Option<i64>, u64>,
    pub blocked: HashSet<i64>,
    /// setMy* values and command lists, keyed by method family, scope and language.
    pub settings: HashMap<String, Value>,
    /// Every update as first enqueued (`replay_update` sends one again).
    pub sent: HashMap<i64, (&'static str, Value)>,
    /// Links made by createInvoiceLink.
    pub invoice_links: HashMap<String, InvoiceRec>,
    /// Pre-checkout queries by id.
    pub pre_checkouts: HashMap<String, PreCheckoutRec>,
    /// Stars charges, oldest first.
    pub charges: Vec<Charge>,
    /// Stars subscriptions by (payer, invoice payload) → the current period's
    /// `subscription_expiration_date` (Unix s): paying the same subscription invoice again is
    /// its renewal.
    pub subscriptions: HashMap<(i64, String), i64>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

pub(crate) fn now_s() -> i64 {
    (now_ms() / 1000) as i64
}

impl State {
    /// A fresh state numbering updates and messages after everything `counters` reserved.
    pub fn continuing(counters: Counters) -> State {
        State {
            next_update_id: counters.update_id,
            message_id_floor: counters.message_id,
            counters,
            ..State::default()
        }
    }

    pub fn bot_id(&self) -> i64 {
        self.bot_id.unwrap_or(DEFAULT_BOT_ID)
    }

    pub fn bot_user(&self) -> Value {
        json!({"id": self.bot_id(), "is_bot": true, "first_name": BOT_FIRST_NAME, "username": BOT_USERNAME})
    }

    pub fn user_json(u: &ControlUser) -> Value {
        let mut v = json!({"id": u.id, "is_bot": false, "first_name": u.first_name});
        for (k, x) in [("last_name", &u.last_name), ("username", &u.username), ("language_code", &u.language_code)] {
            if let Some(x) = x {
                v[k] = json!(x);
            }
        }
        v
    }

    pub fn chat_json(&self, chat_id: i64) -> Value {
        let mut v = json!({"id": chat_id, "type": "private"});
        if let Some(u) = self.users.get(&chat_id) {
            v["first_name"] = json!(u.first_name);
            if let Some(x) = &u.last_name {
                v["last_name"] = json!(x);
            }
            if let Some(x) = &u.username {
                v["username"] = json!(x);
            }
        }
        v
    }

    /// Stores a new file and returns its id. `file_unique_id` depends on the bytes only,
    /// as in Telegram (the same picture uploaded twice has one unique id).
    pub fn add_file(
        &mut self,
        bytes: Bytes,
        kind: FileKind,
        mime: String,
        file_name: Option<String>,
        dims: (u32, u32),
    ) -> String {
        use sha2::Digest;
        self.next_file += 1;
        let n = self.next_file;
        let prefix = match kind {
            FileKind::Photo => "AgAC",
            FileKind::Document => "BQAC",
            FileKind::Video => "BAAC",
            FileKind::Animation => "CgAC",
        };
        let file_id = format!("{prefix}emu{n:06}{}", &hex::encode(rand::random::<[u8; 6]>()));
        let unique_id = format!("AQAD{}", &hex::encode(sha2::Sha256::digest(&bytes))[..16]);
        let folder = match kind {
            FileKind::Photo => "photos",
            FileKind::Document => "documents",
            FileKind::Video => "videos",
            FileKind::Animation => "animations",
        };
        let file_path = format!("{folder}/file_{n}.{}", super::media::extension(&mime));
        self.paths.insert(file_path.clone(), file_id.clone());
        self.files.insert(
            file_id.clone(),
            FileRec {
                file_id: file_id.clone(),
                unique_id,
                bytes,
                kind,
                mime,
                file_name,
                width: dims.0,
                height: dims.1,
                file_path,
                sizes: Vec::new(),
                duration: 0,
                thumbnail: None,
                supports_streaming: false,
            },
        );
        file_id
    }

    /// Links photo sizes (smallest first) so any of them re-sends the whole set.
    pub fn link_sizes(&mut self, ids: &[String]) {
        for id in ids {
            if let Some(f) = self.files.get_mut(id) {
                f.sizes = ids.to_vec();
            }
        }
    }

    pub fn add_message(&mut self, chat_id: i64, mut msg: Msg) -> Msg {
        let chat = self.chats.entry(chat_id).or_default();
        if msg.from_bot {
            // Telegram clears the chat action when the bot's message arrives.
            chat.last_action = None;
        }
        chat.next_message_id = chat.next_message_id.max(self.message_id_floor) + 1;
        msg.id = chat.next_message_id;
        msg.date = now_s();
        chat.messages.push(msg.clone());
        self.counters.reserve(self.next_update_id, msg.id);
        msg
    }

    pub fn message_mut(&mut self, chat_id: i64, id: i64) -> Option<&mut Msg> {
        self.chats.get_mut(&chat_id)?.messages.iter_mut().find(|m| m.id == id)
    }

    pub fn message(&self, chat_id: i64, id: i64) -> Option<&Msg> {
        self.chats.get(&chat_id)?.messages.iter().find(|m| m.id == id)
    }

    fn photo_size_json(&self, file_id: &str) -> Value {
        match self.files.get(file_id) {
            Some(f) => json!({
                "file_id": f.file_id, "file_unique_id": f.unique_id, "file_size": f.bytes.len(),
                "width": f.width, "height": f.height,
            }),
            None => json!({"file_id": file_id, "file_unique_id": file_id, "width": 0, "height": 0}),
        }
    }

    fn document_json(&self, file_id: &str) -> Value {
        let Some(f) = self.files.get(file_id) else {
            return json!({"file_id": file_id, "file_unique_id": file_id});
        };
        let mut v = json!({
            "file_id": f.file_id, "file_unique_id": f.unique_id, "file_size": f.bytes.len(),
            "mime_type": f.mime,
        });
        if let Some(n) = &f.file_name {
            v["file_name"] = json!(n);
        }
        v
    }

    /// The Bot API `Message` object for a stored message (`with_reply`: include the message
    /// it replies to, one level deep, like Telegram).
    pub fn message_json(&self, chat_id: i64, m: &Msg, with_reply: bool) -> Value {
        let mut v = Map::new();
        v.insert("message_id".into(), json!(m.id));
        let from = if m.from_bot {
            self.bot_user()
        } else {
            self.users.get(&chat_id).map(Self::user_json).unwrap_or(Value::Null)
        };
        v.insert("from".into(), from);
        v.insert("chat".into(), self.chat_json(chat_id));
        v.insert("date".into(), json!(m.date));
        if let Some(d) = m.edit_date {
            v.insert("edit_date".into(), json!(d));
        }
        if let Some(g) = &m.media_group_id {
            v.insert("media_group_id".into(), json!(g));
        }
        if let (Some(r), true) = (m.reply_to, with_reply) {
            if let Some(orig) = self.message(chat_id, r) {
                v.insert("reply_to_message".into(), self.message_json(chat_id, orig, false));
            }
        }
        if let Some(t) = &m.text {
            v.insert("text".into(), json!(t));
            if !m.entities.is_empty() {
                v.insert("entities".into(), json!(m.entities));
            }
        }
        if let Some(sizes) = &m.photo {
            let list: Vec<Value> = sizes.iter().map(|id| self.photo_size_json(id)).collect();
            v.insert("photo".into(), json!(list));
        }
        if let Some(doc) = &m.document {
            v.insert("document".into(), self.document_json(doc));
        }
        // Video and Animation objects: the document fields plus the required width, height
        // and duration (from the call, else probed from the container; 0 when unknown).
        for (key, id) in [("video", &m.video), ("animation", &m.animation)] {
            if let Some(id) = id {
                let mut f = self.document_json(id);
                let (w, h, d) = self.files.get(id).map_or((0, 0, 0), |f| (f.width, f.height, f.duration));
                f["width"] = json!(w);
                f["height"] = json!(h);
                f["duration"] = json!(d);
                v.insert(key.into(), f);
            }
        }
        if let Some(c) = &m.caption {
            v.insert("caption".into(), json!(c));
            if !m.entities.is_empty() {
                v.insert("caption_entities".into(), json!(m.entities));
            }
        }
        if let Some(inv) = &m.invoice {
            v.insert("invoice".into(), invoice_json(inv));
        }
        if let Some((field, obj)) = &m.payment {
            v.insert((*field).into(), obj.clone());
        }
        // Only inline keyboards are part of a Message; reply keyboards live in the client.
        if let Some(mk) = &m.markup {
            if mk.get("inline_keyboard").is_some() {
                v.insert("reply_markup".into(), mk.clone());
            }
        }
        Value::Object(v)
    }

    pub fn transcript(&self, chat_id: i64) -> Vec<TranscriptMessage> {
        let Some(chat) = self.chats.get(&chat_id) else {
            return Vec::new();
        };
        chat.messages
            .iter()
            .map(|m| TranscriptMessage {
                message_id: m.id,
                from_bot: m.from_bot,
                date: m.date,
                text: m.text.clone(),
                caption: m.caption.clone(),
                entities: m.entities.clone(),
                reply_markup: m.markup.clone(),
                reply_to_message_id: m.reply_to,
                media_group_id: m.media_group_id.clone(),
                photo: m.photo.as_ref().and_then(|s| s.last()).and_then(|id| {
                    let f = self.files.get(id)?;
                    Some(TranscriptPhoto {
                        file_id: f.file_id.clone(),
                        width: f.width,
                        height: f.height,
                        size: f.bytes.len() as u64,
                        url: file_url(&f.file_id),
                    })
                }),
                document: m.document.as_ref().and_then(|id| self.transcript_file(id)),
                video: m.video.as_ref().and_then(|id| self.transcript_video(id)),
                animation: m.animation.as_ref().and_then(|id| self.transcript_video(id)),
                invoice: m.invoice.as_ref().map(|i| super::TranscriptInvoice {
                    title: i.title.clone(),
                    description: i.description.clone(),
                    currency: i.currency.clone(),
                    total_amount: i.total_amount,
                    invoice_payload: i.payload.clone(),
                }),
                successful_payment: m.payment.as_ref().filter(|p| p.0 == "successful_payment").map(|p| p.1.clone()),
                refunded_payment: m.payment.as_ref().filter(|p| p.0 == "refunded_payment").map(|p| p.1.clone()),
                edit_count: m.edit_count,
                sent_by_file_id: m.by_file_id,
            })
            .collect()
    }

    fn transcript_video(&self, id: &str) -> Option<TranscriptVideo> {
        let f = self.files.get(id)?;
        Some(TranscriptVideo {
            file_id: f.file_id.clone(),
            file_name: f.file_name.clone(),
            mime_type: f.mime.clone(),
            size: f.bytes.len() as u64,
            url: file_url(&f.file_id),
            duration: f.duration,
            width: f.width,
            height: f.height,
            has_thumbnail: f.thumbnail.is_some(),
            supports_streaming: f.supports_streaming,
        })
    }

    fn transcript_file(&self, id: &str) -> Option<TranscriptDocument> {
        let f = self.files.get(id)?;
        Some(TranscriptDocument {
            file_id: f.file_id.clone(),
            file_name: f.file_name.clone(),
            mime_type: f.mime.clone(),
            size: f.bytes.len() as u64,
            url: file_url(&f.file_id),
        })
    }

    pub fn chat_status(&self, chat_id: i64) -> ChatStatus {
        let action = self.chats.get(&chat_id).and_then(|c| c.last_action.clone());
        let lang = self.users.get(&chat_id).and_then(|u| u.language_code.clone());
        ChatStatus {
            chat_id,
            known: self.users.contains_key(&chat_id),
            blocked: self.blocked.contains(&chat_id),
            last_action: action.as_ref().map(|a| a.0.clone()),
            last_action_at_ms: action.map(|a| a.1),
            commands: self.commands_for(chat_id, lang.as_deref()),
        }
    }

    /// Commands a private chat would show: the most specific scope and language set.
    fn commands_for(&self, chat_id: i64, lang: Option<&str>) -> Vec<Value> {
        let chat_scope = json!({"type": "chat", "chat_id": chat_id});
        let private = json!({"type": "all_private_chats"});
        for scope in [Some(&chat_scope), Some(&private), None] {
            for l in [lang.unwrap_or(""), ""] {
                if let Some(Value::Array(list)) = self.settings.get(&commands_key(scope, l)) {
                    return list.clone();
                }
            }
        }
        Vec::new()
    }

    /// Queues an update and returns its id.
    pub fn enqueue(&mut self, kind: &'static str, payload: Value) -> i64 {
        self.next_update_id += 1;
        let id = self.next_update_id;
        self.counters.reserve(id, 0);
        let mut json = json!({"update_id": id});
        json[kind] = payload;
        self.sent.insert(id, (kind, json.clone()));
        self.queue.push_back(Queued { id, kind, json, replay: false, delivered: false });
        id
    }
}

/// Settings key of a command list: the scope (default when absent) and the language.
pub(crate) fn commands_key(scope: Option<&Value>, lang: &str) -> String {
    let field = |k: &str| scope.and_then(|s| s.get(k)).map(|v| v.to_string()).unwrap_or_default();
    let kind = scope.and_then(|s| s["type"].as_str()).unwrap_or("default");
    format!("commands|{kind}|{}|{}|{lang}", field("chat_id"), field("user_id"))
}

/// The Bot API `Invoice` object of an invoice message.
pub(crate) fn invoice_json(i: &InvoiceRec) -> Value {
    json!({
        "title": i.title, "description": i.description, "start_parameter": i.start_parameter,
        "currency": i.currency, "total_amount": i.total_amount,
    })
}

pub(crate) fn file_url(file_id: &str) -> String {
    format!("/emulator/control/files/{file_id}")
}
