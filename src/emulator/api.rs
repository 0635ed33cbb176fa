//! The Bot API side: read a request in any of Telegram's encodings, validate it against the
//! spec table, apply flood/block rules, run the method and record what happened.

use super::markup::{self, Parsed};
use super::media;
use super::spec::{FieldSpec, MethodSpec, Spec};
use super::state::{self, FileKind, Msg, State, now_ms};
use super::{CallRecord, CallbackAnswer, Emulator, InlineAnswer, MAX_BODY, Rejection};
use axum::extract::{FromRequest, Multipart, Path, Request, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::time::Duration;

/// Telegram's documented limits (Bot API: sendMessage, sendPhoto, sendDocument, getFile,
/// InlineKeyboardButton, answerCallbackQuery, setMyCommands).
const TEXT_MAX: usize = 4096;
const CAPTION_MAX: usize = 1024;
const CALLBACK_DATA_MAX: usize = 64;
const PHOTO_MAX_BYTES: usize = 10 * 1024 * 1024;
const DOCUMENT_MAX_BYTES: usize = 50 * 1024 * 1024;
const DOWNLOAD_MAX_BYTES: usize = crate::domain::MAX_DOWNLOAD_BYTES;
const PHOTO_MAX_SIDES_SUM: u32 = 10_000;
const PHOTO_MAX_RATIO: u32 = 20;
const CALLBACK_TEXT_MAX: usize = 200;
const LONG_POLL_MAX_S: i64 = 50;

const CHAT_ACTIONS: &[&str] = &[
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
];

/// Exactly one of these makes an inline keyboard button do something.
const BUTTON_ACTIONS: &[&str] = &[
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
];

/// A Bot API error answer. `reject`: the bot broke a rule (recorded as a [`Rejection`]).
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: u16,
    pub description: String,
    pub retry_after: Option<u64>,
    pub reject: bool,
}

impl ApiError {
    pub fn bad(description: impl Into<String>) -> ApiError {
        ApiError { status: 400, description: description.into(), retry_after: None, reject: true }
    }
    /// The request body stopped before its end: the client went away mid-request (a bot
    /// killed while uploading). Telegram never sees such a call, so it is no rule broken; the
    /// answer goes nowhere.
    fn aborted(e: impl std::fmt::Display) -> ApiError {
        ApiError::normal(400, format!("Bad Request: request body cut off: {e}"))
    }
    /// An error Telegram gives in normal operation (not the bot's fault).
    fn normal(status: u16, description: impl Into<String>) -> ApiError {
        ApiError { status, description: description.into(), retry_after: None, reject: false }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub file_name: Option<String>,
    pub bytes: Bytes,
}

enum Raw {
    Text(String),
    Json(Value),
    File(Upload),
}

/// A request as received, before validation.
struct Incoming {
    params: Vec<(String, Raw)>,
    excerpt: String,
}

/// A validated call: typed values, top-level uploads and `attach://` parts.
pub(crate) struct Call {
    pub values: Map<String, Value>,
    pub files: HashMap<String, Upload>,
    pub attachments: HashMap<String, Upload>,
}

impl Call {
    fn str(&self, k: &str) -> Option<&str> {
        self.values.get(k).and_then(Value::as_str)
    }
    fn i64(&self, k: &str) -> Option<i64> {
        self.values.get(k).and_then(Value::as_i64)
    }
    fn flag(&self, k: &str) -> bool {
        self.values.get(k).and_then(Value::as_bool).unwrap_or(false)
    }
    fn has(&self, k: &str) -> bool {
        self.values.contains_key(k)
    }
    /// `chat_id` as a number (Telegram also takes numeric strings).
    fn chat_id(&self) -> Option<i64> {
        match self.values.get("chat_id")? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

fn unauthorized() -> Response {
    let body = json!({"ok": false, "error_code": 401, "description": "Unauthorized"});
    (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
}

/// `GET|POST /bot{token}/{method}`.
pub(crate) async fn call(
    AxState(emu): AxState<Emulator>,
    Path((token, method)): Path<(String, String)>,
    req: Request,
) -> Response {
    let at_ms = now_ms();
    // Telegram answers 401 "Unauthorized" to anything that is not `<bot id>:<secret>`.
    let Some((id, secret)) = token.split_once(':').and_then(|(id, s)| Some((id.parse::<i64>().ok()?, s))) else {
        return unauthorized();
    };
    if secret.is_empty() || !secret.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return unauthorized();
    }
    emu.lock().bot_id = Some(id);
    let incoming = match read_request(req).await {
        Ok(i) => i,
        Err(e) => {
            let name = emu.inner.spec.method(&method).map_or(method.clone(), |m| m.name.clone());
            return emu.finish(&name, None, None, at_ms, false, "", Err(e));
        }
    };
    emu.handle(&method, incoming, at_ms).await
}

/// `GET /file/bot{token}/{file_path}`.
pub(crate) async fn download(
    AxState(emu): AxState<Emulator>,
    Path((_token, file_path)): Path<(String, String)>,
) -> Response {
    let st = emu.lock();
    let file = st.paths.get(&file_path).and_then(|id| st.files.get(id));
    match file {
        Some(f) => ([(header::CONTENT_TYPE, f.mime.clone())], f.bytes.clone()).into_response(),
        None => {
            (StatusCode::NOT_FOUND, axum::Json(json!({"ok": false, "error_code": 404, "description": "Not Found"})))
                .into_response()
        }
    }
}

async fn read_request(req: Request) -> Result<Incoming, ApiError> {
    let mut params = Vec::new();
    if let Some(q) = req.uri().query() {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            params.push((k.into_owned(), Raw::Text(v.into_owned())));
        }
    }
    let ct = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    if ct.starts_with("multipart/form-data") {
        // A body that arrived whole but is malformed is answered 400 by multer; a failed read
        // of the body stream (5xx) is a client that went away, and a length limit is 413.
        let unreadable = |e: axum::extract::multipart::MultipartError| {
            if e.status().is_server_error() {
                ApiError::aborted(e)
            } else {
                ApiError::bad(format!("Bad Request: unreadable multipart/form-data body: {e}"))
            }
        };
        let mut form =
            Multipart::from_request(req, &()).await.map_err(|e| ApiError::bad(format!("Bad Request: {e}")))?;
        while let Some(field) = form.next_field().await.map_err(unreadable)? {
            let name = field.name().unwrap_or_default().to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let bytes = field.bytes().await.map_err(unreadable)?;
            let raw = match file_name {
                // A part with a file name is an upload even when the name is empty.
                Some(n) => Raw::File(Upload { file_name: Some(n).filter(|n| !n.is_empty()), bytes }),
                None => Raw::Text(String::from_utf8_lossy(&bytes).into_owned()),
            };
            params.push((name, raw));
        }
    } else {
        let body = axum::body::to_bytes(req.into_body(), MAX_BODY).await.map_err(|e| {
            if e.to_string().contains("length limit exceeded") {
                ApiError::bad("Request Entity Too Large")
            } else {
                ApiError::aborted(e)
            }
        })?;
        if !body.is_empty() {
            if ct.starts_with("application/json") {
                let v: Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad(format!("Bad Request: body is not valid JSON: {e}")))?;
                let Value::Object(map) = v else {
                    return Err(ApiError::bad("Bad Request: JSON body must be an object"));
                };
                params.extend(map.into_iter().map(|(k, v)| (k, Raw::Json(v))));
            } else if ct.is_empty() || ct.starts_with("application/x-www-form-urlencoded") {
                for (k, v) in url::form_urlencoded::parse(&body) {
                    params.push((k.into_owned(), Raw::Text(v.into_owned())));
                }
            } else {
                return Err(ApiError::bad(format!("Bad Request: unsupported Content-Type {ct}")));
            }
        }
    }
    let excerpt = excerpt(&params);
    Ok(Incoming { params, excerpt })
}

/// `k=v&…` with uploads summarised, cut to 500 characters.
fn excerpt(params: &[(String, Raw)]) -> String {
    let parts: Vec<String> = params
        .iter()
        .map(|(k, v)| match v {
            Raw::Text(s) => format!("{k}={s}"),
            Raw::Json(j) => format!("{k}={j}"),
            Raw::File(u) => {
                format!("{k}=<file {} {} bytes>", u.file_name.as_deref().unwrap_or("(no name)"), u.bytes.len())
            }
        })
        .collect();
    let s = parts.join("&");
    match s.char_indices().nth(500) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// Checks every parameter against the method's spec and converts it to typed JSON.
fn validate(spec: &Spec, m: &MethodSpec, inc: Incoming) -> Result<Call, ApiError> {
    let mut call = Call { values: Map::new(), files: HashMap::new(), attachments: HashMap::new() };
    for (name, raw) in inc.params {
        let field = m.field(&name);
        match (raw, field) {
            (Raw::File(u), Some(f)) if f.accepts_file() => {
                call.files.insert(name, u);
            }
            (Raw::File(_), Some(f)) => {
                return Err(ApiError::bad(format!(
                    "Bad Request: parameter \"{name}\" must be {}, got an uploaded file",
                    f.types.join(" or ")
                )));
            }
            // An upload referenced elsewhere as attach://name.
            (Raw::File(u), None) => {
                call.attachments.insert(name, u);
            }
            (_, None) => {
                return Err(ApiError::bad(format!(
                    "Bad Request: parameter \"{name}\" is not a parameter of {} ({})",
                    m.name, spec.version
                )));
            }
            (Raw::Json(Value::Null), Some(_)) => {}
            (Raw::Json(v), Some(f)) => {
                call.values.insert(name, from_json(spec, f, v)?);
            }
            (Raw::Text(s), Some(f)) => {
                call.values.insert(name, from_text(spec, f, &s)?);
            }
        }
    }
    for f in m.fields.iter().filter(|f| f.required) {
        if !call.values.contains_key(&f.name) && !call.files.contains_key(&f.name) {
            return Err(ApiError::bad(format!("Bad Request: parameter \"{}\" is required", f.name)));
        }
    }
    Ok(call)
}

fn structured(t: &str) -> bool {
    !matches!(t, "Integer" | "Float" | "Boolean" | "String" | "InputFile")
}

fn invalid(f: &FieldSpec, detail: impl std::fmt::Display) -> ApiError {
    ApiError::bad(format!("Bad Request: invalid parameter \"{}\": {detail}", f.name))
}

/// A JSON body value. Scalars must have the JSON type the spec names (stricter than Telegram,
/// which also takes `"123"` for an Integer); an object may come JSON-serialized in a string,
/// as Telegram allows.
fn from_json(spec: &Spec, f: &FieldSpec, v: Value) -> Result<Value, ApiError> {
    let takes_string = f.types.iter().any(|t| t == "String" || t == "InputFile");
    let v = match v {
        Value::String(s) if !takes_string && f.types.iter().any(|t| structured(t)) => serde_json::from_str(&s)
            .map_err(|_| invalid(f, format!("must be a JSON-serialized {}", f.types.join(" or "))))?,
        v => v,
    };
    spec.check(&v, &f.types, &f.name).map_err(|e| invalid(f, e))?;
    Ok(v)
}

/// A form, query or multipart value: always text, parsed the way Telegram parses it.
fn from_text(spec: &Spec, f: &FieldSpec, s: &str) -> Result<Value, ApiError> {
    let t = s.trim();
    for ty in &f.types {
        let scalar = match ty.as_str() {
            "Integer" => t.parse::<i64>().ok().map(Value::from),
            "Float" => t.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number),
            "Boolean" => match t.to_ascii_lowercase().as_str() {
                "true" | "1" => Some(Value::Bool(true)),
                "false" | "0" => Some(Value::Bool(false)),
                _ => None,
            },
            _ => None,
        };
        if let Some(v) = scalar {
            return Ok(v);
        }
    }
    // Objects and arrays arrive JSON-serialized; check them against all alternatives at once
    // so a mistake is reported against the variant it most resembles.
    let shapes: Vec<String> = f.types.iter().filter(|t| structured(t)).cloned().collect();
    let mut err = None;
    if !shapes.is_empty() {
        match serde_json::from_str::<Value>(s) {
            Ok(v) => match spec.check(&v, &shapes, &f.name) {
                Ok(()) => return Ok(v),
                Err(e) => err = Some(e),
            },
            Err(_) => err = Some(format!("{} must be a JSON-serialized {}", f.name, shapes.join(" or "))),
        }
    }
    if f.types.iter().any(|t| t == "String" || t == "InputFile") {
        return Ok(Value::String(s.to_owned()));
    }
    Err(invalid(
        f,
        err.unwrap_or_else(|| {
            let shown: String = s.chars().take(40).collect();
            format!("{} must be {}, got \"{shown}\"", f.name, f.types.join(" or "))
        }),
    ))
}

impl Emulator {
    async fn handle(&self, method: &str, inc: Incoming, at_ms: u64) -> Response {
        let excerpt = inc.excerpt.clone();
        let Some(m) = self.inner.spec.method(method) else {
            let e = ApiError::bad(format!(
                "Bad Request: method \"{method}\" is not in the Bot API ({})",
                self.inner.spec.version
            ));
            return self.finish(method, None, None, at_ms, false, &excerpt, Err(e));
        };
        let name = m.name.clone();
        let call = match validate(&self.inner.spec, m, inc) {
            Ok(c) => c,
            Err(e) => return self.finish(&name, None, None, at_ms, false, &excerpt, Err(e)),
        };
        let chat_id = call.chat_id();
        let message_id = call.i64("message_id");
        let (during_wait, flood) = self.flood_check(&name, chat_id, at_ms);
        if let Some(retry_after) = flood {
            let e = ApiError {
                status: 429,
                description: format!("Too Many Requests: retry after {retry_after}"),
                retry_after: Some(retry_after),
                reject: false,
            };
            return self.finish(&name, chat_id, message_id, at_ms, during_wait, &excerpt, Err(e));
        }
        let mut result = self.dispatch(&name, &call).await;
        if result.is_ok() && self.answer_lost(&name) {
            result = Err(ApiError::normal(502, "Bad Gateway"));
        }
        // A call that created a message reports the new message.
        let message_id = match &result {
            Ok(v) => v.get("message_id").and_then(Value::as_i64).or(message_id),
            Err(_) => message_id,
        };
        self.finish(&name, chat_id, message_id, at_ms, during_wait, &excerpt, result)
    }

    /// Whether a `lose_answers` rule takes this call's answer (counting it down).
    fn answer_lost(&self, method: &str) -> bool {
        let mut st = self.lock();
        let Some(i) = st.lost_answers.iter().position(|r| r.method.eq_ignore_ascii_case(method)) else { return false };
        st.lost_answers[i].times = st.lost_answers[i].times.saturating_sub(1);
        if st.lost_answers[i].times == 0 {
            st.lost_answers.remove(i);
        }
        true
    }

    /// Whether the call falls inside an earlier 429's wait, and whether a rule floods it now.
    fn flood_check(&self, method: &str, chat_id: Option<i64>, now: u64) -> (bool, Option<u64>) {
        let mut st = self.lock();
        let frozen = |k: &Option<i64>| st.frozen.get(k).is_some_and(|&until| until > now);
        let during = frozen(&chat_id) || frozen(&None);
        let hit = st.floods.iter().position(|r| {
            let method_ok = match &r.method {
                Some(m) => m.eq_ignore_ascii_case(method),
                None => method != "getUpdates",
            };
            method_ok && r.chat_id.is_none_or(|c| chat_id == Some(c))
        });
        let Some(i) = hit else { return (during, None) };
        let retry_after = st.floods[i].retry_after;
        st.floods[i].times = st.floods[i].times.saturating_sub(1);
        if st.floods[i].times == 0 {
            st.floods.remove(i);
        }
        st.frozen.insert(chat_id, now + retry_after * 1000);
        (during, Some(retry_after))
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        method: &str,
        chat_id: Option<i64>,
        message_id: Option<i64>,
        at_ms: u64,
        during_flood_wait: bool,
        excerpt: &str,
        result: Result<Value, ApiError>,
    ) -> Response {
        let mut st = self.lock();
        let (status, description) = match &result {
            Ok(_) => (200, None),
            Err(e) => (e.status, Some(e.description.clone())),
        };
        st.calls.push(CallRecord {
            method: method.to_owned(),
            chat_id,
            message_id,
            status,
            description: description.clone(),
            at_ms,
            during_flood_wait,
        });
        if let Err(e) = &result {
            if e.reject {
                tracing::warn!(method, reason = %e.description, "emulator rejected a Bot API call");
                st.rejections.push(Rejection {
                    method: method.to_owned(),
                    reason: e.description.clone(),
                    status,
                    body: excerpt.to_owned(),
                    at_ms,
                });
            }
        }
        drop(st);
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = match result {
            Ok(v) => json!({"ok": true, "result": v}),
            Err(e) => {
                let mut b = json!({"ok": false, "error_code": e.status, "description": e.description});
                if let Some(r) = e.retry_after {
                    b["parameters"] = json!({"retry_after": r});
                }
                b
            }
        };
        (code, axum::Json(body)).into_response()
    }

    async fn dispatch(&self, name: &str, call: &Call) -> Result<Value, ApiError> {
        match name {
            "getMe" => Ok(self.get_me()),
            "getUpdates" => self.get_updates(call).await,
            "getWebhookInfo" | "setWebhook" | "deleteWebhook" | "logOut" | "close" => self.webhook(name, call),
            "setMyCommands" | "getMyCommands" | "deleteMyCommands" => self.commands(name, call),
            "setMyName"
            | "getMyName"
            | "setMyDescription"
            | "getMyDescription"
            | "setMyShortDescription"
            | "getMyShortDescription"
            | "setChatMenuButton"
            | "getChatMenuButton" => Ok(self.profile(name, call)),
            "sendMessage" => self.send_message(call),
            "editMessageText" | "editMessageCaption" | "editMessageReplyMarkup" => self.edit(name, call),
            "deleteMessage" | "deleteMessages" => self.delete(name, call),
            "sendPhoto" => self.send_file(FileKind::Photo, call).await,
            "sendDocument" => self.send_file(FileKind::Document, call).await,
            "sendVideo" => self.send_file(FileKind::Video, call).await,
            "sendAnimation" => self.send_file(FileKind::Animation, call).await,
            "sendMediaGroup" => self.send_media_group(call).await,
            "editMessageMedia" => self.edit_media(call).await,
            "sendChatAction" => self.chat_action(call),
            "answerCallbackQuery" => self.answer_callback(call),
            "answerInlineQuery" => self.answer_inline(call),
            "getFile" => self.get_file(call),
            "sendInvoice" => self.send_invoice(call),
            "createInvoiceLink" => self.create_invoice_link(call),
            "answerPreCheckoutQuery" => self.answer_pre_checkout(call),
            "refundStarPayment" => self.refund_star_payment(call),
            "getStarTransactions" => self.star_transactions(call),
            _ => Err(ApiError::bad(format!(
                "Bad Request: {name} is a valid Bot API method but the emulator does not emulate it"
            ))),
        }
    }

    fn get_me(&self) -> Value {
        let mut me = self.lock().bot_user();
        for (k, v) in [
            ("can_join_groups", true),
            ("can_read_all_group_messages", false),
            ("supports_inline_queries", true),
            ("can_connect_to_business", false),
            ("has_main_web_app", false),
        ] {
            me[k] = json!(v);
        }
        me
    }

    async fn get_updates(&self, call: &Call) -> Result<Value, ApiError> {
        let offset = call.i64("offset");
        let limit = call.i64("limit").unwrap_or(100).clamp(1, 100) as usize;
        let timeout = call.i64("timeout").unwrap_or(0).clamp(0, LONG_POLL_MAX_S) as u64;
        let mut rx = self.inner.wake.subscribe();
        let generation = {
            let mut st = self.lock();
            if !st.webhook_url.is_empty() {
                return Err(ApiError::normal(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use \
                     deleteWebhook to delete the webhook first",
                ));
            }
            if let Some(Value::Array(list)) = call.values.get("allowed_updates") {
                st.allowed_updates = Some(list.iter().filter_map(Value::as_str).map(str::to_owned).collect());
            }
            st.poll_generation += 1;
            st.poll_generation
        };
        // An older long poll wakes up, sees it was replaced and answers 409 like Telegram.
        self.wake_pollers();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        loop {
            rx.borrow_and_update();
            {
                let mut st = self.lock();
                if st.poll_generation != generation {
                    return Err(ApiError::normal(
                        409,
                        "Conflict: terminated by other getUpdates request; make sure that only \
                         one bot instance is running",
                    ));
                }
                let batch = take_updates(&mut st, offset, limit);
                if !batch.is_empty() || tokio::time::Instant::now() >= deadline {
                    return Ok(Value::Array(batch));
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(_)) => return Ok(json!([])),
            }
        }
    }

    fn webhook(&self, name: &str, call: &Call) -> Result<Value, ApiError> {
        let mut st = self.lock();
        match name {
            "getWebhookInfo" => Ok(json!({
                "url": st.webhook_url, "has_custom_certificate": false,
                "pending_update_count": st.queue.len(),
            })),
            "setWebhook" => {
                st.webhook_url = call.str("url").unwrap_or_default().to_owned();
                st.webhook_secret = call.str("secret_token").unwrap_or_default().to_owned();
                if call.flag("drop_pending_updates") {
                    st.queue.clear();
                }
                Ok(json!(true))
            }
            "deleteWebhook" => {
                st.webhook_url.clear();
                st.webhook_secret.clear();
                if call.flag("drop_pending_updates") {
                    st.queue.clear();
                }
                Ok(json!(true))
            }
            _ => Ok(json!(true)),
        }
    }

    fn commands(&self, name: &str, call: &Call) -> Result<Value, ApiError> {
        let key = state::commands_key(call.values.get("scope"), call.str("language_code").unwrap_or(""));
        let mut st = self.lock();
        match name {
            "getMyCommands" => Ok(st.settings.get(&key).cloned().unwrap_or_else(|| json!([]))),
            "deleteMyCommands" => {
                st.settings.remove(&key);
                Ok(json!(true))
            }
            _ => {
                let list = call.values.get("commands").and_then(Value::as_array).cloned().unwrap_or_default();
                if list.len() > 100 {
                    return Err(ApiError::bad("Bad Request: too many commands specified"));
                }
                for c in &list {
                    let cmd = c["command"].as_str().unwrap_or_default();
                    let ok = (1..=32).contains(&cmd.chars().count())
                        && cmd.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
                    if !ok {
                        return Err(ApiError::bad("Bad Request: BOT_COMMAND_INVALID"));
                    }
                    let desc = c["description"].as_str().unwrap_or_default().chars().count();
                    if !(1..=256).contains(&desc) {
                        return Err(ApiError::bad("Bad Request: BOT_COMMAND_DESCRIPTION_INVALID"));
                    }
                }
                st.settings.insert(key, Value::Array(list));
                Ok(json!(true))
            }
        }
    }

    /// set/get of the bot's name, descriptions and menu button (stored per language).
    fn profile(&self, name: &str, call: &Call) -> Value {
        let (family, field) = match name {
            "setMyName" | "getMyName" => ("name", "name"),
            "setMyDescription" | "getMyDescription" => ("description", "description"),
            "setMyShortDescription" | "getMyShortDescription" => ("short", "short_description"),
            _ => ("menu", "menu_button"),
        };
        let key = format!("{family}|{}|{}", call.str("language_code").unwrap_or(""), call.chat_id().unwrap_or(0));
        let mut st = self.lock();
        if name.starts_with("set") {
            let v = call.values.get(field).cloned().unwrap_or(Value::Null);
            st.settings.insert(key, v);
            return json!(true);
        }
        let stored = st.settings.get(&key).cloned().filter(|v| !v.is_null());
        match family {
            "menu" => stored.unwrap_or_else(|| json!({"type": "commands"})),
            "name" => json!({"name": stored.unwrap_or_else(|| json!(state::BOT_FIRST_NAME))}),
            _ => json!({ field: stored.unwrap_or_else(|| json!("")) }),
        }
    }

    fn send_message(&self, call: &Call) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let chat = chat_of(&st, call)?;
        let parsed = parse_text(call, "text", "parse_mode", "entities")?;
        check_text(&parsed.text, "Bad Request: message is too long")?;
        let markup = check_markup(call.values.get("reply_markup"))?;
        let reply_to = reply_target(&st, chat, call)?;
        let msg = Msg {
            from_bot: true,
            text: Some(parsed.text),
            entities: parsed.entities,
            markup,
            reply_to,
            ..Msg::default()
        };
        let msg = st.add_message(chat, msg);
        Ok(st.message_json(chat, &msg, true))
    }

    fn edit(&self, name: &str, call: &Call) -> Result<Value, ApiError> {
        if call.has("inline_message_id") {
            return Err(ApiError::bad(format!("Bad Request: {name} with inline_message_id is not emulated")));
        }
        let mut st = self.lock();
        let chat = chat_of(&st, call)?;
        let id =
            call.i64("message_id").ok_or_else(|| ApiError::bad("Bad Request: message identifier is not specified"))?;
        let markup = check_markup(call.values.get("reply_markup"))?;
        let new_text = match name {
            "editMessageText" => {
                let p = parse_text(call, "text", "parse_mode", "entities")?;
                check_text(&p.text, "Bad Request: MESSAGE_TOO_LONG")?;
                Some(p)
            }
            "editMessageCaption" => {
                let p = parse_text(call, "caption", "parse_mode", "caption_entities")?;
                if p.text.chars().count() > CAPTION_MAX {
                    return Err(ApiError::bad("Bad Request: MESSAGE_TOO_LONG"));
                }
                Some(p)
            }
            _ => None,
        };
        let msg = st.message_mut(chat, id).ok_or_else(|| ApiError::bad("Bad Request: message to edit not found"))?;
        if !msg.from_bot {
            return Err(ApiError::bad("Bad Request: message can't be edited"));
        }
        let mut next = msg.clone();
        next.markup = markup;
        match name {
            "editMessageText" => {
                if msg.text.is_none() {
                    return Err(ApiError::bad("Bad Request: there is no text in the message to edit"));
                }
                let p = new_text.unwrap_or_default();
                next.text = Some(p.text);
                next.entities = p.entities;
            }
            "editMessageCaption" => {
                if msg.photo.is_none() && msg.document.is_none() {
                    return Err(ApiError::bad("Bad Request: there is no caption in the message to edit"));
                }
                let p = new_text.unwrap_or_default();
                next.caption = Some(p.text).filter(|c| !c.is_empty());
                next.entities = p.entities;
            }
            _ => {}
        }
        if next.text == msg.text
            && next.caption == msg.caption
            && next.entities == msg.entities
            && next.markup == msg.markup
        {
            return Err(not_modified());
        }
        next.edit_date = Some(state::now_s());
        next.edit_count += 1;
        *msg = next.clone();
        Ok(st.message_json(chat, &next, true))
    }

    fn delete(&self, name: &str, call: &Call) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let chat = chat_of(&st, call)?;
        let ids: Vec<i64> = if name == "deleteMessages" {
            let list = call.values.get("message_ids").and_then(Value::as_array);
            list.map(|l| l.iter().filter_map(Value::as_i64).collect()).unwrap_or_default()
        } else {
            call.i64("message_id").into_iter().collect()
        };
        let messages = &mut st.chats.entry(chat).or_default().messages;
        let before = messages.len();
        messages.retain(|m| !ids.contains(&m.id));
        // deleteMessages skips missing ones; deleteMessage reports them.
        if name == "deleteMessage" && messages.len() == before {
            return Err(ApiError::bad("Bad Request: message to delete not found"));
        }
        Ok(json!(true))
    }

    async fn send_file(&self, kind: FileKind, call: &Call) -> Result<Value, ApiError> {
        let field = match kind {
            FileKind::Photo => "photo",
            FileKind::Document => "document",
            FileKind::Video => "video",
            FileKind::Animation => "animation",
        };
        // 1. Everything cheap, under the lock: chat, text, keyboard, where the file comes from.
        let (chat, caption, markup, reply_to, source) = {
            let st = self.lock();
            let chat = chat_of(&st, call)?;
            let caption = parse_text(call, "caption", "parse_mode", "caption_entities")?;
            if caption.text.chars().count() > CAPTION_MAX {
                return Err(ApiError::bad("Bad Request: message caption is too long"));
            }
            let markup = check_markup(call.values.get("reply_markup"))?;
            let reply_to = reply_target(&st, chat, call)?;
            let source = file_source(&st, call, field, kind)?;
            (chat, caption, markup, reply_to, source)
        };
        // 2. Check the upload and make the thumbnail off the runtime.
        let prepared = prepare(kind, source).await?;
        // 3. Store and send.
        let mut st = self.lock();
        let (ids, by_file_id) = store(&mut st, kind, prepared);
        if matches!(kind, FileKind::Video | FileKind::Animation) && !by_file_id {
            if let Some(f) = ids.last().and_then(|id| st.files.get_mut(id)) {
                video_facts(f, call, kind);
            }
        }
        let mut msg = media_msg(kind, ids, by_file_id, caption);
        msg.markup = markup;
        msg.reply_to = reply_to;
        let msg = st.add_message(chat, msg);
        Ok(st.message_json(chat, &msg, true))
    }

    async fn send_media_group(&self, call: &Call) -> Result<Value, ApiError> {
        let items = call.values.get("media").and_then(Value::as_array).cloned().unwrap_or_default();
        if items.len() > 10 {
            return Err(ApiError::bad("Bad Request: Too much messages to send as an album"));
        }
        if items.len() < 2 {
            // Documented as 2-10 items; Telegram's exact wording for fewer is not known here.
            return Err(ApiError::bad("Bad Request: an album must contain 2-10 media"));
        }
        let (chat, reply_to, planned) = {
            let st = self.lock();
            let chat = chat_of(&st, call)?;
            let reply_to = reply_target(&st, chat, call)?;
            let mut planned = Vec::new();
            for item in &items {
                let kind = media_kind(item)?;
                let caption = item_caption(item)?;
                let media = item["media"].as_str().unwrap_or_default();
                planned.push((kind, caption, source_from(&st, call, None, media, kind)?));
            }
            let docs = planned.iter().filter(|p| p.0 == FileKind::Document).count();
            if docs != 0 && docs != planned.len() {
                return Err(ApiError::bad("Bad Request: documents can't be mixed with other media types in an album"));
            }
            (chat, reply_to, planned)
        };
        let mut prepared = Vec::new();
        for (kind, caption, source) in planned {
            prepared.push((kind, caption, prepare(kind, source).await?));
        }
        let mut st = self.lock();
        st.next_file += 1;
        let group = format!("{}", 10_000_000_000_000u64 + st.next_file);
        let mut out = Vec::new();
        for (i, (kind, caption, p)) in prepared.into_iter().enumerate() {
            let (ids, by_file_id) = store(&mut st, kind, p);
            let mut msg = media_msg(kind, ids, by_file_id, caption);
            msg.media_group_id = Some(group.clone());
            if i == 0 {
                msg.reply_to = reply_to;
            }
            let msg = st.add_message(chat, msg);
            out.push(st.message_json(chat, &msg, true));
        }
        Ok(Value::Array(out))
    }

    async fn edit_media(&self, call: &Call) -> Result<Value, ApiError> {
        if call.has("inline_message_id") {
            return Err(ApiError::bad("Bad Request: editMessageMedia with inline_message_id is not emulated"));
        }
        let media = call.values.get("media").cloned().unwrap_or(Value::Null);
        let (chat, id, kind, caption, markup, source) = {
            let st = self.lock();
            let chat = chat_of(&st, call)?;
            let id = call
                .i64("message_id")
                .ok_or_else(|| ApiError::bad("Bad Request: message identifier is not specified"))?;
            let kind = media_kind(&media)?;
            let caption = item_caption(&media)?;
            let markup = check_markup(call.values.get("reply_markup"))?;
            let msg = st.message(chat, id).ok_or_else(|| ApiError::bad("Bad Request: message to edit not found"))?;
            if !msg.from_bot {
                return Err(ApiError::bad("Bad Request: message can't be edited"));
            }
            if msg.photo.is_none() && msg.document.is_none() {
                return Err(ApiError::bad("Bad Request: there is no media in the message to edit"));
            }
            let file = media["media"].as_str().unwrap_or_default();
            let source = source_from(&st, call, None, file, kind)?;
            (chat, id, kind, caption, markup, source)
        };
        let prepared = prepare(kind, source).await?;
        let mut st = self.lock();
        let current =
            st.message(chat, id).cloned().ok_or_else(|| ApiError::bad("Bad Request: message to edit not found"))?;
        let caption_text = Some(caption.text.clone()).filter(|c| !c.is_empty());
        if let Prepared::Existing(ids) = &prepared {
            let same_file = match kind {
                FileKind::Photo => current.photo.as_ref() == Some(ids),
                FileKind::Document => current.document.as_ref() == ids.last(),
                FileKind::Video => current.video.as_ref() == ids.last(),
                FileKind::Animation => current.animation.as_ref() == ids.last(),
            };
            if same_file
                && current.caption == caption_text
                && current.entities == caption.entities
                && current.markup == markup
            {
                return Err(not_modified());
            }
        }
        let (ids, by_file_id) = store(&mut st, kind, prepared);
        let fresh = media_msg(kind, ids, by_file_id, caption);
        let next = Msg {
            photo: fresh.photo,
            document: fresh.document,
            caption: fresh.caption,
            entities: fresh.entities,
            by_file_id,
            markup,
            edit_date: Some(state::now_s()),
            edit_count: current.edit_count + 1,
            ..current
        };
        if let Some(m) = st.message_mut(chat, id) {
            *m = next.clone();
        }
        Ok(st.message_json(chat, &next, true))
    }

    fn chat_action(&self, call: &Call) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let chat = chat_of(&st, call)?;
        let action = call.str("action").unwrap_or_default().to_owned();
        if !CHAT_ACTIONS.contains(&action.as_str()) {
            return Err(ApiError::bad("Bad Request: wrong parameter action in request"));
        }
        st.chats.entry(chat).or_default().last_action = Some((action, now_ms()));
        Ok(json!(true))
    }

    fn answer_callback(&self, call: &Call) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let id = call.str("callback_query_id").unwrap_or_default().to_owned();
        let text = call.str("text").map(str::to_owned);
        if text.as_ref().is_some_and(|t| t.chars().count() > CALLBACK_TEXT_MAX) {
            return Err(ApiError::bad("Bad Request: MESSAGE_TOO_LONG"));
        }
        let rec = st.callbacks.get_mut(&id).filter(|r| !r.answered).ok_or_else(|| {
            ApiError::bad("Bad Request: query is too old and response timeout expired or query id is invalid")
        })?;
        rec.answered = true;
        let answer = CallbackAnswer {
            callback_query_id: id,
            update_id: rec.update_id,
            chat_id: rec.chat_id,
            message_id: rec.message_id,
            text,
            show_alert: call.flag("show_alert"),
            url: call.str("url").map(str::to_owned),
            at_ms: now_ms(),
        };
        st.callback_answers.push(answer);
        Ok(json!(true))
    }

    fn answer_inline(&self, call: &Call) -> Result<Value, ApiError> {
        let mut st = self.lock();
        let id = call.str("inline_query_id").unwrap_or_default().to_owned();
        let update_id = *st.inline_queries.get(&id).ok_or_else(|| {
            ApiError::bad("Bad Request: query is too old and response timeout expired or query id is invalid")
        })?;
        let results = call.values.get("results").cloned().unwrap_or_else(|| json!([]));
        if results.as_array().is_some_and(|r| r.len() > 50) {
            return Err(ApiError::bad("Bad Request: RESULTS_TOO_MUCH"));
        }
        // Beyond the types: result ids are unique within an answer, and a cached photo must
        // name a photo Telegram has.
        let mut ids = std::collections::HashSet::new();
        for r in results.as_array().into_iter().flatten() {
            if !ids.insert(r.get("id").and_then(Value::as_str).unwrap_or_default().to_owned()) {
                return Err(ApiError::bad("Bad Request: RESULT_ID_DUPLICATE"));
            }
            if let Some(fid) = r.get("photo_file_id").and_then(Value::as_str) {
                if st.files.get(fid).is_none_or(|f| f.kind != FileKind::Photo) {
                    return Err(ApiError::bad("Bad Request: wrong file identifier/HTTP URL specified"));
                }
            }
        }
        st.inline_queries.remove(&id);
        st.inline_answers.push(InlineAnswer {
            inline_query_id: id,
            update_id,
            results,
            next_offset: call.str("next_offset").map(str::to_owned),
            is_personal: call.flag("is_personal"),
            cache_time: call.i64("cache_time"),
            button: call.values.get("button").cloned(),
            at_ms: now_ms(),
        });
        Ok(json!(true))
    }

    /// sendInvoice: an invoice message in the chat (protocols.md §1.8).
    fn send_invoice(&self, call: &Call) -> Result<Value, ApiError> {
        let invoice = invoice_of(call)?;
        if call.has("subscription_period") {
            return Err(ApiError::bad("Bad Request: SUBSCRIPTION_PERIOD_INVALID"));
        }
        let markup = check_markup(call.values.get("reply_markup"))?;
        if let Some(m) = &markup {
            let first = m.pointer("/inline_keyboard/0/0");
            if first.is_none_or(|b| b.get("pay").and_then(Value::as_bool) != Some(true)) {
                return Err(ApiError::bad("Bad Request: the first button of an invoice must be a pay button"));
            }
        }
        let mut st = self.lock();
        let chat = chat_of(&st, call)?;
        let reply_to = reply_target(&st, chat, call)?;
        let msg = Msg { from_bot: true, invoice: Some(invoice), markup, reply_to, ..Msg::default() };
        let msg = st.add_message(chat, msg);
        Ok(st.message_json(chat, &msg, true))
    }

    /// createInvoiceLink: a link the user can pay through `pay.invoice_link`.
    fn create_invoice_link(&self, call: &Call) -> Result<Value, ApiError> {
        let mut invoice = invoice_of(call)?;
        if let Some(period) = call.i64("subscription_period") {
            if period != SUBSCRIPTION_PERIOD || invoice.currency != "XTR" || invoice.total_amount > 10_000 {
                return Err(ApiError::bad("Bad Request: SUBSCRIPTION_PERIOD_INVALID"));
            }
            invoice.subscription_period = Some(period);
        }
        let mut st = self.lock();
        st.next_file += 1;
        let link = format!("https://t.me/$emu{:06}{}", st.next_file, hex::encode(rand::random::<[u8; 6]>()));
        st.invoice_links.insert(link.clone(), invoice);
        Ok(json!(link))
    }

    /// answerPreCheckoutQuery: the bot's verdict on a payment the emulator is waiting on.
    fn answer_pre_checkout(&self, call: &Call) -> Result<Value, ApiError> {
        let ok = call.flag("ok");
        let message = call.str("error_message").map(str::to_owned).filter(|m| !m.trim().is_empty());
        if !ok && message.is_none() {
            return Err(ApiError::bad("Bad Request: ERROR_MESSAGE_EMPTY"));
        }
        let mut st = self.lock();
        let id = call.str("pre_checkout_query_id").unwrap_or_default();
        let rec = st.pre_checkouts.get_mut(id).filter(|r| r.answer.is_none() && !r.expired).ok_or_else(|| {
            ApiError::bad("Bad Request: query is too old and response timeout expired or query id is invalid")
        })?;
        rec.answer = Some((ok, if ok { None } else { message }));
        drop(st);
        self.wake_pollers();
        Ok(json!(true))
    }

    /// refundStarPayment: the charge goes back to its payer, who gets a `refunded_payment`.
    fn refund_star_payment(&self, call: &Call) -> Result<Value, ApiError> {
        let user = call.i64("user_id").unwrap_or_default();
        let charge_id = call.str("telegram_payment_charge_id").unwrap_or_default().to_owned();
        let mut st = self.lock();
        let charge = st
            .charges
            .iter_mut()
            .find(|c| c.telegram_payment_charge_id == charge_id && c.user_id == user)
            .ok_or_else(|| ApiError::normal(400, "Bad Request: CHARGE_NOT_FOUND"))?;
        if charge.state == "refunded" {
            return Err(ApiError::normal(400, "Bad Request: CHARGE_ALREADY_REFUNDED"));
        }
        charge.state = "refunded".into();
        charge.refunded_at_ms = Some(now_ms());
        let refunded = json!({
            "currency": charge.currency, "total_amount": charge.total_amount,
            "invoice_payload": charge.invoice_payload, "telegram_payment_charge_id": charge.telegram_payment_charge_id,
            "provider_payment_charge_id": charge.provider_payment_charge_id,
        });
        if st.users.contains_key(&user) {
            let msg = st.add_message(user, Msg { payment: Some(("refunded_payment", refunded)), ..Msg::default() });
            let json = st.message_json(user, &msg, false);
            st.enqueue("message", json);
            drop(st);
            self.wake_pollers();
        }
        Ok(json!(true))
    }

    /// getStarTransactions: charges (`source` = the payer) and refunds (`receiver` = the
    /// payer), oldest first.
    fn star_transactions(&self, call: &Call) -> Result<Value, ApiError> {
        let offset = call.i64("offset").unwrap_or(0).max(0) as usize;
        let limit = call.i64("limit").unwrap_or(100);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad("Bad Request: LIMIT_INVALID"));
        }
        let st = self.lock();
        let partner = |c: &state::Charge| {
            let user = st.users.get(&c.user_id).map(State::user_json).unwrap_or_else(
                || json!({"id": c.user_id, "is_bot": false, "first_name": format!("User {}", c.user_id)}),
            );
            json!({"type": "user", "transaction_type": "invoice_payment", "user": user, "invoice_payload": c.invoice_payload})
        };
        let mut list: Vec<(u64, Value)> = Vec::new();
        for c in &st.charges {
            let date = (c.paid_at_ms / 1000) as i64;
            let id = &c.telegram_payment_charge_id;
            list.push((c.paid_at_ms, json!({"id": id, "amount": c.total_amount, "date": date, "source": partner(c)})));
            if let Some(at) = c.refunded_at_ms {
                let date = (at / 1000) as i64;
                list.push((at, json!({"id": id, "amount": c.total_amount, "date": date, "receiver": partner(c)})));
            }
        }
        list.sort_by_key(|(at, _)| *at);
        let page: Vec<Value> = list.into_iter().skip(offset).take(limit as usize).map(|(_, v)| v).collect();
        Ok(json!({ "transactions": page }))
    }

    fn get_file(&self, call: &Call) -> Result<Value, ApiError> {
        let st = self.lock();
        let id = call.str("file_id").unwrap_or_default();
        let f = st.files.get(id).ok_or_else(|| ApiError::bad("Bad Request: invalid file_id"))?;
        if f.bytes.len() > DOWNLOAD_MAX_BYTES {
            return Err(ApiError::bad("Bad Request: file is too big"));
        }
        Ok(json!({
            "file_id": f.file_id, "file_unique_id": f.unique_id,
            "file_size": f.bytes.len(), "file_path": f.file_path,
        }))
    }
}

/// Confirms updates below `offset` (a negative offset keeps only the last -offset), drops
/// kinds outside `allowed_updates`, and returns up to `limit` pending updates.
fn take_updates(st: &mut State, offset: Option<i64>, limit: usize) -> Vec<Value> {
    match offset {
        Some(off) if off < 0 => {
            let keep = off.unsigned_abs() as usize;
            while st.queue.len() > keep {
                st.queue.pop_front();
            }
        }
        // Replayed updates sit below the offset on purpose: they go once they were handed out.
        Some(off) => st.queue.retain(|q| if q.replay { !q.delivered } else { q.id >= off }),
        None => {}
    }
    if let Some(allowed) = st.allowed_updates.clone().filter(|a| !a.is_empty()) {
        st.queue.retain(|q| allowed.iter().any(|a| a == q.kind));
    }
    st.queue
        .iter_mut()
        .take(limit)
        .map(|q| {
            q.delivered = true;
            q.json.clone()
        })
        .collect()
}

/// The only `subscription_period` Telegram takes (30 days, in seconds).
const SUBSCRIPTION_PERIOD: i64 = 2_592_000;

/// The invoice fields of sendInvoice / createInvoiceLink, checked as Telegram does for Stars
/// (protocols.md §1.8): title 1–32 characters, description 1–255, payload 1–128 bytes;
/// `XTR` with an empty or no provider token and exactly one positive price; other currencies
/// need a provider token, which the emulator has none of.
fn invoice_of(call: &Call) -> Result<state::InvoiceRec, ApiError> {
    let title = call.str("title").unwrap_or_default();
    if !(1..=32).contains(&title.chars().count()) {
        return Err(ApiError::bad("Bad Request: INVOICE_TITLE_INVALID"));
    }
    let description = call.str("description").unwrap_or_default();
    if !(1..=255).contains(&description.chars().count()) {
        return Err(ApiError::bad("Bad Request: INVOICE_DESCRIPTION_INVALID"));
    }
    let payload = call.str("payload").unwrap_or_default();
    if !(1..=128).contains(&payload.len()) {
        return Err(ApiError::bad("Bad Request: INVOICE_PAYLOAD_INVALID"));
    }
    let currency = call.str("currency").unwrap_or_default();
    if currency != "XTR" || call.str("provider_token").is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::bad("Bad Request: PAYMENT_PROVIDER_INVALID"));
    }
    let prices = call.values.get("prices").and_then(Value::as_array).cloned().unwrap_or_default();
    if prices.len() != 1 {
        return Err(ApiError::bad("Bad Request: STARS_INVOICE_INVALID"));
    }
    let amount = prices[0].get("amount").and_then(Value::as_i64).unwrap_or(0);
    if amount <= 0 || amount > 100_000 {
        return Err(ApiError::bad("Bad Request: CURRENCY_TOTAL_AMOUNT_INVALID"));
    }
    Ok(state::InvoiceRec {
        title: title.to_owned(),
        description: description.to_owned(),
        payload: payload.to_owned(),
        currency: currency.to_owned(),
        total_amount: amount,
        start_parameter: call.str("start_parameter").unwrap_or_default().to_owned(),
        subscription_period: None,
    })
}

/// The private chat the call addresses: known (a user wrote from it) and not blocked.
fn chat_of(st: &State, call: &Call) -> Result<i64, ApiError> {
    let id = call
        .chat_id()
        .filter(|id| st.users.contains_key(id))
        .ok_or_else(|| ApiError::bad("Bad Request: chat not found"))?;
    if st.blocked.contains(&id) {
        return Err(ApiError::normal(403, "Forbidden: bot was blocked by the user"));
    }
    Ok(id)
}

/// Text (or caption) after parse_mode, or with the entities given explicitly.
fn parse_text(call: &Call, key: &str, mode_key: &str, entities_key: &str) -> Result<Parsed, ApiError> {
    let text = call.str(key).unwrap_or_default();
    parse_parts(text, call.str(mode_key), call.values.get(entities_key))
}

fn parse_parts(text: &str, mode: Option<&str>, given: Option<&Value>) -> Result<Parsed, ApiError> {
    if let Some(Value::Array(given)) = given {
        let len = markup::utf16_len(text) as u64;
        for e in given {
            let end = e["offset"].as_u64().unwrap_or(0) + e["length"].as_u64().unwrap_or(0);
            if end > len {
                return Err(ApiError::bad("Bad Request: can't parse entities: entity ends after the end of the text"));
            }
        }
        return Ok(Parsed { text: text.to_owned(), entities: given.clone() });
    }
    markup::parse(text, mode).map_err(ApiError::bad)
}

fn check_text(text: &str, too_long: &str) -> Result<(), ApiError> {
    if text.trim().is_empty() {
        return Err(ApiError::bad("Bad Request: message text is empty"));
    }
    if text.chars().count() > TEXT_MAX {
        return Err(ApiError::bad(too_long));
    }
    Ok(())
}

/// Telegram's rules for inline keyboards beyond the spec's types.
fn check_markup(markup: Option<&Value>) -> Result<Option<Value>, ApiError> {
    let Some(m) = markup else { return Ok(None) };
    let rows = m.get("inline_keyboard").and_then(Value::as_array);
    for button in rows.into_iter().flatten().filter_map(Value::as_array).flatten() {
        if let Some(data) = button.get("callback_data").and_then(Value::as_str) {
            if data.is_empty() || data.len() > CALLBACK_DATA_MAX {
                return Err(ApiError::bad("Bad Request: BUTTON_DATA_INVALID"));
            }
        }
        if let Some(url) = button.get("url").and_then(Value::as_str) {
            let ok = ["http://", "https://", "tg://"].iter().any(|p| url.starts_with(p)) && url.len() > 8;
            if !ok {
                return Err(ApiError::bad("Bad Request: BUTTON_URL_INVALID"));
            }
        }
        match BUTTON_ACTIONS.iter().filter(|k| button.get(**k).is_some()).count() {
            0 => {
                return Err(ApiError::bad(
                    "Bad Request: can't parse inline keyboard button: Text buttons are unallowed \
                     in the inline keyboard",
                ));
            }
            1 => {}
            _ => {
                return Err(ApiError::bad(
                    "Bad Request: can't parse inline keyboard button: exactly one of the optional \
                     fields must be used",
                ));
            }
        }
    }
    Ok(Some(m.clone()))
}

fn reply_target(st: &State, chat: i64, call: &Call) -> Result<Option<i64>, ApiError> {
    let Some(rp) = call.values.get("reply_parameters") else {
        return Ok(None);
    };
    let id = rp["message_id"].as_i64().unwrap_or(0);
    let target_chat = rp.get("chat_id").and_then(Value::as_i64).unwrap_or(chat);
    if target_chat == chat && st.message(chat, id).is_some() {
        return Ok(Some(id));
    }
    if rp["allow_sending_without_reply"].as_bool().unwrap_or(false) {
        return Ok(None);
    }
    Err(ApiError::bad("Bad Request: message to be replied not found"))
}

enum Source {
    Upload(Upload),
    /// File ids of an existing file (all photo sizes, or the document).
    Existing(Vec<String>),
}

struct Ready {
    upload: Upload,
    dims: (u32, u32),
    thumb: Option<(Vec<u8>, u32, u32)>,
}

enum Prepared {
    Existing(Vec<String>),
    New(Ready),
}

fn file_source(st: &State, call: &Call, field: &str, kind: FileKind) -> Result<Source, ApiError> {
    source_from(st, call, call.files.get(field), call.str(field).unwrap_or_default(), kind)
}

/// Where a file comes from: a direct upload, an `attach://` part, a URL (refused: no internet
/// here, as Telegram would fail to fetch it) or an existing `file_id` of the right kind.
fn source_from(st: &State, call: &Call, upload: Option<&Upload>, s: &str, kind: FileKind) -> Result<Source, ApiError> {
    if let Some(u) = upload {
        return Ok(Source::Upload(u.clone()));
    }
    let wrong = || ApiError::bad("Bad Request: wrong file identifier/HTTP URL specified");
    if let Some(part) = s.strip_prefix("attach://") {
        return call.attachments.get(part).cloned().map(Source::Upload).ok_or_else(wrong);
    }
    if s.starts_with("http://") || s.starts_with("https://") {
        return Err(ApiError::bad("Bad Request: failed to get HTTP URL content"));
    }
    let f = st.files.get(s).filter(|_| !st.forgotten.contains(s)).ok_or_else(wrong)?;
    if f.kind != kind {
        let name = |k: FileKind| match k {
            FileKind::Photo => "Photo",
            FileKind::Document => "Document",
            FileKind::Video => "Video",
            FileKind::Animation => "Animation",
        };
        return Err(ApiError::bad(format!("Bad Request: can't use file of type {} as {}", name(f.kind), name(kind))));
    }
    Ok(Source::Existing(match kind {
        FileKind::Photo => f.sizes.clone(),
        FileKind::Document | FileKind::Video | FileKind::Animation => vec![f.file_id.clone()],
    }))
}

async fn prepare(kind: FileKind, source: Source) -> Result<Prepared, ApiError> {
    Ok(match source {
        Source::Existing(ids) => Prepared::Existing(ids),
        Source::Upload(u) => Prepared::New(check_upload(kind, u).await?),
    })
}

/// Stores a new upload (photo: thumbnail + original) or reuses existing ids. Returns the file
/// ids (photo sizes smallest first) and whether it was a re-send by `file_id`.
fn store(st: &mut State, kind: FileKind, prepared: Prepared) -> (Vec<String>, bool) {
    match prepared {
        Prepared::Existing(ids) => (ids, true),
        Prepared::New(p) => {
            let mime = media::mime_type(p.upload.file_name.as_deref(), &p.upload.bytes);
            let mut ids = Vec::new();
            if let (FileKind::Photo, Some((thumb, w, h))) = (kind, p.thumb) {
                ids.push(st.add_file(thumb.into(), kind, "image/jpeg".into(), None, (w, h)));
            }
            ids.push(st.add_file(p.upload.bytes, kind, mime, p.upload.file_name, p.dims));
            st.link_sizes(&ids);
            (ids, false)
        }
    }
}

/// A new video or animation upload's `duration`, `width` and `height` (the call's own, else
/// probed from the file), its `thumbnail` (kept when Telegram would take it: a JPEG of at most
/// 320 px under 200 kB; otherwise ignored, as Telegram does) and `supports_streaming`.
fn video_facts(f: &mut super::state::FileRec, call: &Call, kind: FileKind) {
    let probed = crate::imaging::video::probe(&f.bytes).unwrap_or_default();
    let field = |k: &str, probed: u32| call.i64(k).and_then(|v| u32::try_from(v).ok()).unwrap_or(probed);
    f.duration = field("duration", probed.duration_secs);
    f.width = field("width", f.width.max(probed.width));
    f.height = field("height", f.height.max(probed.height));
    let thumb = call.files.get("thumbnail").or_else(|| {
        let part = call.str("thumbnail")?.strip_prefix("attach://")?;
        call.attachments.get(part)
    });
    f.thumbnail = thumb.map(|t| t.bytes.clone()).filter(|b| {
        let small = media::dimensions(b).is_some_and(|(w, h)| w.max(h) <= media::THUMB_SIDE);
        b.starts_with(&[0xFF, 0xD8, 0xFF]) && b.len() < 200 * 1024 && small
    });
    f.supports_streaming = kind == FileKind::Video && call.flag("supports_streaming");
}

/// A bot message carrying a photo or document.
fn media_msg(kind: FileKind, ids: Vec<String>, by_file_id: bool, caption: Parsed) -> Msg {
    let mut msg = Msg {
        from_bot: true,
        caption: Some(caption.text).filter(|c| !c.is_empty()),
        entities: caption.entities,
        by_file_id,
        ..Msg::default()
    };
    match kind {
        FileKind::Photo => msg.photo = Some(ids),
        FileKind::Document => msg.document = ids.last().cloned(),
        FileKind::Video => msg.video = ids.last().cloned(),
        FileKind::Animation => msg.animation = ids.last().cloned(),
    }
    msg
}

/// `InputMedia*.type` → the kind of file; only photos and documents are emulated.
fn media_kind(item: &Value) -> Result<FileKind, ApiError> {
    match item["type"].as_str() {
        Some("photo") => Ok(FileKind::Photo),
        Some("document") => Ok(FileKind::Document),
        other => Err(ApiError::bad(format!(
            "Bad Request: {} media is not emulated (photo and document are)",
            other.unwrap_or("unknown")
        ))),
    }
}

/// An `InputMedia*` item's caption after its own parse_mode.
fn item_caption(item: &Value) -> Result<Parsed, ApiError> {
    let text = item["caption"].as_str().unwrap_or_default();
    let p = parse_parts(text, item["parse_mode"].as_str(), item.get("caption_entities"))?;
    if p.text.chars().count() > CAPTION_MAX {
        return Err(ApiError::bad("Bad Request: message caption is too long"));
    }
    Ok(p)
}

fn not_modified() -> ApiError {
    ApiError::normal(
        400,
        "Bad Request: message is not modified: specified new message content and reply markup \
         are exactly the same as a current content and reply markup of the message",
    )
}

/// Size, format and dimension limits of an upload; photos also get a thumbnail size.
async fn check_upload(kind: FileKind, upload: Upload) -> Result<Ready, ApiError> {
    if upload.bytes.is_empty() {
        return Err(ApiError::bad("Bad Request: file must be non-empty"));
    }
    if kind == FileKind::Video && !media::is_mp4(&upload.bytes) {
        // Telegram takes other containers, but shows only MPEG-4 inline; the bot must send
        // those as documents, so an emulated refusal keeps it honest.
        return Err(ApiError::bad("Bad Request: the emulator takes only MPEG-4 (ftyp) videos"));
    }
    // api.json: "GIF or H.264/MPEG-4 AVC video without sound". An animated WebP is taken too:
    // the bot sends one with sendAnimation (an assumption about Telegram's servers, which
    // convert animations; noted where the bot does it).
    let animated_webp =
        crate::domain::MediaKind::sniff(&upload.bytes) == (crate::domain::MediaKind::Animation, "image/webp", "webp");
    if kind == FileKind::Animation
        && !(upload.bytes.starts_with(b"GIF8") || media::is_mp4(&upload.bytes) || animated_webp)
    {
        return Err(ApiError::bad("Bad Request: an animation must be a GIF or an MPEG-4 video"));
    }
    if kind != FileKind::Photo {
        if upload.bytes.len() > DOCUMENT_MAX_BYTES {
            return Err(ApiError { status: 413, ..ApiError::bad("Request Entity Too Large") });
        }
        let probed = match kind {
            FileKind::Video | FileKind::Animation => {
                crate::imaging::video::probe(&upload.bytes).map(|m| (m.width, m.height))
            }
            _ => None,
        };
        let dims = probed.or_else(|| media::dimensions(&upload.bytes)).unwrap_or((0, 0));
        return Ok(Ready { upload, dims, thumb: None });
    }
    if upload.bytes.len() > PHOTO_MAX_BYTES {
        // MTProto's name for an oversized photo; the Bot API wording is not documented.
        return Err(ApiError::bad("Bad Request: PHOTO_SAVE_FILE_INVALID"));
    }
    let (w, h) = media::dimensions(&upload.bytes).ok_or_else(|| ApiError::bad("Bad Request: IMAGE_PROCESS_FAILED"))?;
    let (long, short) = (w.max(h), w.min(h).max(1));
    if w == 0 || h == 0 || w + h > PHOTO_MAX_SIDES_SUM || long > short * PHOTO_MAX_RATIO {
        return Err(ApiError::bad("Bad Request: PHOTO_INVALID_DIMENSIONS"));
    }
    let bytes = upload.bytes.clone();
    let thumb = tokio::task::spawn_blocking(move || media::thumbnail(&bytes, w, h)).await.unwrap_or(None);
    Ok(Ready { upload, dims: (w, h), thumb })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec::embedded().expect("spec")
    }

    fn field(m: &str, f: &str) -> FieldSpec {
        let s = spec();
        s.method(m).and_then(|m| m.field(f)).cloned().expect("field")
    }

    #[test]
    fn form_values_are_parsed_like_telegram() {
        let s = spec();
        assert_eq!(from_text(&s, &field("sendMessage", "chat_id"), "42").ok(), Some(json!(42)));
        assert_eq!(from_text(&s, &field("sendMessage", "chat_id"), "@chan").ok(), Some(json!("@chan")));
        assert_eq!(from_text(&s, &field("sendMessage", "disable_notification"), "True").ok(), Some(json!(true)));
        assert!(from_text(&s, &field("sendMessage", "disable_notification"), "yes").is_err());
        assert!(from_text(&s, &field("editMessageText", "message_id"), "12a").is_err());
        let markup = r#"{"inline_keyboard":[[{"text":"a","callback_data":"b"}]]}"#;
        assert!(from_text(&s, &field("sendMessage", "reply_markup"), markup).is_ok());
        let e = from_text(&s, &field("sendMessage", "reply_markup"), r#"{"inline_keyboard":[[{"text":"a","x":1}]]}"#)
            .expect_err("unknown nested field");
        assert!(
            e.description.contains("unknown field \"x\"") && e.description.contains("InlineKeyboardButton"),
            "{}",
            e.description
        );
        let reply_kb = r#"{"keyboard":[[{"txt":"a"}]]}"#;
        let e = from_text(&s, &field("sendMessage", "reply_markup"), reply_kb).expect_err("typo");
        assert!(e.description.contains("KeyboardButton") && e.description.contains("txt"), "{}", e.description);
        let e = from_text(&s, &field("sendMessage", "reply_markup"), "{oops").expect_err("json");
        assert!(e.description.contains("JSON-serialized"), "{}", e.description);
    }

    #[test]
    fn json_scalars_are_strict() {
        let s = spec();
        assert!(from_json(&s, &field("sendMessage", "disable_notification"), json!("true")).is_err());
        assert!(from_json(&s, &field("sendMessage", "text"), json!(5)).is_err());
        let as_string = json!(r#"{"remove_keyboard":true}"#);
        assert_eq!(
            from_json(&s, &field("sendMessage", "reply_markup"), as_string).ok(),
            Some(json!({"remove_keyboard": true}))
        );
    }

    #[test]
    fn keyboard_rules() {
        let kb = |b: Value| json!({"inline_keyboard": [[b]]});
        assert!(check_markup(Some(&kb(json!({"text": "a", "callback_data": "x".repeat(64)})))).is_ok());
        let e = check_markup(Some(&kb(json!({"text": "a", "callback_data": "é".repeat(33)})))).expect_err("66 bytes");
        assert_eq!(e.description, "Bad Request: BUTTON_DATA_INVALID");
        assert!(check_markup(Some(&kb(json!({"text": "a"})))).is_err());
        assert!(check_markup(Some(&kb(json!({"text": "a", "url": "ftp://x"})))).is_err());
        assert!(check_markup(Some(&json!({"keyboard": [[{"text": "a"}]]}))).is_ok());
    }
}
