//! The control API: what a test (or the sandbox page) does as the user, and what it reads back.
//! Routes and shapes are documented on the module (`emulator/mod.rs`).

use super::media;
use super::state::{CallbackRec, FileKind, Msg, State};
use super::{ControlUpdate, Emulator, FloodRule};
use axum::Json;
use axum::extract::{Path, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

enum Action {
    Text(String),
    Photo { bytes: Bytes, dims: (u32, u32), thumb: Option<(Vec<u8>, u32, u32)> },
    Document { bytes: Bytes, name: String },
    Callback { data: String, message_id: i64 },
    Inline(String),
    Chosen(super::ChosenInline),
}

/// See [`Emulator::push_update`].
pub(crate) fn push_update(emu: &Emulator, u: ControlUpdate) -> Result<i64, String> {
    if u.user.id <= 0 {
        return Err("user.id must be a positive integer".into());
    }
    if u.user.first_name.trim().is_empty() {
        return Err("user.first_name must not be empty".into());
    }
    let set = [
        u.text.is_some(),
        u.photo_base64.is_some(),
        u.document_base64.is_some(),
        u.callback_data.is_some(),
        u.inline_query.is_some(),
        u.chosen_inline_result.is_some(),
        u.pay.is_some(),
        u.replay_update.is_some(),
    ];
    if set.iter().filter(|x| **x).count() != 1 {
        return Err("set exactly one of text, photo_base64, document_base64, callback_data (with message_id), \
                    inline_query, chosen_inline_result, pay, replay_update"
            .into());
    }
    if let Some(id) = u.replay_update {
        return emu.replay_update(id);
    }
    if u.pay.is_some() {
        return Err("pay waits for the bot's pre-checkout answer: use Emulator::pay or the control route".into());
    }
    let action = load(&u)?;
    let user = u.user.clone();
    let chat_id = user.id;
    let mut st = emu.lock();
    st.users.insert(chat_id, user.clone());
    st.chats.entry(chat_id).or_default();
    let update_id = match action {
        Action::Text(text) => {
            let entities = command_entity(&text).into_iter().collect();
            let msg = Msg { text: Some(text), entities, ..Msg::default() };
            user_message(&mut st, chat_id, msg)
        }
        Action::Photo { bytes, dims, thumb } => {
            let mime = media::mime_type(None, &bytes);
            let mut ids = Vec::new();
            if let Some((t, w, h)) = thumb {
                ids.push(st.add_file(t.into(), FileKind::Photo, "image/jpeg".into(), None, (w, h)));
            }
            ids.push(st.add_file(bytes, FileKind::Photo, mime, None, dims));
            st.link_sizes(&ids);
            let msg = Msg {
                photo: Some(ids),
                caption: u.caption.clone(),
                media_group_id: u.media_group_id.clone(),
                ..Msg::default()
            };
            user_message(&mut st, chat_id, msg)
        }
        Action::Document { bytes, name } => {
            let mime = media::mime_type(Some(&name), &bytes);
            let dims = media::dimensions(&bytes).unwrap_or((0, 0));
            let id = st.add_file(bytes, FileKind::Document, mime, Some(name), dims);
            let msg = Msg {
                document: Some(id),
                caption: u.caption.clone(),
                media_group_id: u.media_group_id.clone(),
                ..Msg::default()
            };
            user_message(&mut st, chat_id, msg)
        }
        Action::Callback { data, message_id } => {
            let msg = st
                .message(chat_id, message_id)
                .filter(|m| m.from_bot)
                .ok_or_else(|| format!("chat {chat_id} has no bot message {message_id}"))?;
            let message = st.message_json(chat_id, msg, false);
            let query_id = format!("cq{}", st.next_update_id + 1);
            let query = json!({
                "id": query_id, "from": State::user_json(&user), "message": message,
                "chat_instance": format!("ci{chat_id}"), "data": data,
            });
            let update_id = st.enqueue("callback_query", query);
            st.callbacks.insert(query_id, CallbackRec { update_id, chat_id, message_id, answered: false });
            update_id
        }
        Action::Inline(query) => {
            let query_id = format!("iq{}", st.next_update_id + 1);
            let q = json!({
                "id": query_id, "from": State::user_json(&user), "query": query,
                "offset": "", "chat_type": "sender",
            });
            let update_id = st.enqueue("inline_query", q);
            st.inline_queries.insert(query_id, update_id);
            update_id
        }
        Action::Chosen(c) => {
            let r = json!({"result_id": c.result_id, "from": State::user_json(&user), "query": c.query});
            st.enqueue("chosen_inline_result", r)
        }
    };
    drop(st);
    emu.wake_pollers();
    Ok(update_id)
}

/// Reads and checks the payload outside the state lock (decoding, thumbnails).
fn load(u: &ControlUpdate) -> Result<Action, String> {
    if let Some(t) = &u.text {
        if t.trim().is_empty() {
            return Err("text must not be empty".into());
        }
        return Ok(Action::Text(t.clone()));
    }
    if let Some(data) = &u.callback_data {
        let message_id = u.message_id.ok_or("callback_data needs message_id")?;
        return Ok(Action::Callback { data: data.clone(), message_id });
    }
    if let Some(q) = &u.inline_query {
        return Ok(Action::Inline(q.clone()));
    }
    if let Some(c) = &u.chosen_inline_result {
        if c.result_id.is_empty() || c.result_id.len() > 64 {
            return Err("chosen_inline_result.result_id must be 1-64 bytes".into());
        }
        return Ok(Action::Chosen(c.clone()));
    }
    if let Some(b64) = &u.photo_base64 {
        let bytes = decode_base64(b64)?;
        let dims = media::dimensions(&bytes).ok_or("the photo is not an image the emulator can read")?;
        let thumb = media::thumbnail(&bytes, dims.0, dims.1);
        return Ok(Action::Photo { bytes, dims, thumb });
    }
    let bytes = decode_base64(u.document_base64.as_deref().ok_or("no file given")?)?;
    let name = u.file_name.clone().unwrap_or_else(|| "file".into());
    Ok(Action::Document { bytes, name })
}

/// Files come as bytes only: the emulator never reads a path it is given (anyone who reaches
/// the control API could read the process's files back through `/emulator/control/files`).
fn decode_base64(s: &str) -> Result<Bytes, String> {
    let s = s.split_once(";base64,").map_or(s, |(_, data)| data);
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(clean).map_err(|e| format!("bad base64: {e}"))?;
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    Ok(bytes.into())
}

fn user_message(st: &mut State, chat_id: i64, msg: Msg) -> i64 {
    let msg = st.add_message(chat_id, msg);
    let json = st.message_json(chat_id, &msg, false);
    st.enqueue("message", json)
}

/// Telegram marks a leading `/command` (with optional `@bot`) as a `bot_command` entity.
fn command_entity(text: &str) -> Option<Value> {
    if !text.starts_with('/') {
        return None;
    }
    let word = text.split(char::is_whitespace).next().unwrap_or_default();
    (word.len() > 1).then(|| json!({"type": "bot_command", "offset": 0, "length": super::markup::utf16_len(word)}))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// 400 for a control body that is not the documented shape. An unknown field is named alone
/// (`unknown field `foo``): serde's list of expected fields and the byte position only bury
/// the name a caller has to fix.
fn bad_body(what: &str, e: &serde_json::Error) -> Response {
    let text = e.to_string();
    // serde_json writes `unknown field `name`, expected …`; the name may hold any character.
    let name = text.strip_prefix("unknown field `").and_then(|rest| rest.find('`').map(|end| &rest[..end]));
    let message = match name {
        Some(name) => format!("unknown field `{name}`"),
        None => format!("bad {what}: {text}"),
    };
    error(StatusCode::BAD_REQUEST, message)
}

/// `POST /emulator/control/updates`.
pub(crate) async fn push(AxState(emu): AxState<Emulator>, body: Bytes) -> Response {
    let u: ControlUpdate = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => return bad_body("update", &e),
    };
    if let Some(target) = u.pay.clone() {
        let one = [u.text.is_some(), u.photo_base64.is_some(), u.callback_data.is_some(), u.replay_update.is_some()];
        if one.iter().any(|x| *x) || u.document_base64.is_some() || u.inline_query.is_some() {
            return error(StatusCode::BAD_REQUEST, "pay goes alone: set no other action");
        }
        return match emu.pay(u.user, target).await {
            Ok(out) => Json(out).into_response(),
            Err(e) => error(StatusCode::BAD_REQUEST, e),
        };
    }
    // Decoding and thumbnails are blocking work.
    let res = tokio::task::spawn_blocking(move || emu.push_update(u)).await;
    match res {
        Ok(Ok(update_id)) => Json(json!({"update_id": update_id})).into_response(),
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Refuses a control POST whose body is not declared JSON (415): a web page elsewhere can
/// POST `text/plain` or a form across sites without a preflight, but not JSON.
pub(crate) async fn require_json(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.method() == axum::http::Method::POST {
        let essence = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime::Mime>().ok())
            .map(|m| m.essence_str().to_ascii_lowercase());
        if essence.as_deref() != Some("application/json") {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "control requests must be Content-Type: application/json",
            );
        }
    }
    next.run(req).await
}

/// Refuses a request whose `Host` is not loopback (`localhost`, 127.0.0.0/8, `::1`) with 421,
/// unless the emulator was started for public use: a page on another site whose name is
/// re-pointed at 127.0.0.1 (DNS rebinding) reaches this listener with its own name as `Host`.
pub(crate) async fn require_loopback_host(
    AxState(emu): AxState<Emulator>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
    if !emu.inner.any_host.load(std::sync::atomic::Ordering::Relaxed) && !host.is_none_or(is_loopback_host) {
        return error(
            StatusCode::MISDIRECTED_REQUEST,
            "the emulator answers only on loopback (Host: 127.0.0.1 or localhost)",
        );
    }
    next.run(req).await
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host
            .rsplit_once(':')
            .map_or(host, |(name, port)| if port.chars().all(|c| c.is_ascii_digit()) { name } else { host }),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `GET /emulator/control/chats/{chat_id}`.
pub(crate) async fn chat(AxState(emu): AxState<Emulator>, Path(chat_id): Path<i64>) -> Response {
    Json(emu.lock().chat_status(chat_id)).into_response()
}

/// `GET /emulator/control/chats/{chat_id}/messages`.
pub(crate) async fn messages(AxState(emu): AxState<Emulator>, Path(chat_id): Path<i64>) -> Response {
    Json(emu.messages(chat_id)).into_response()
}

/// `GET /emulator/control/files/{file_id}`.
pub(crate) async fn file(AxState(emu): AxState<Emulator>, Path(file_id): Path<String>) -> Response {
    let st = emu.lock();
    match st.files.get(&file_id) {
        Some(f) => ([(header::CONTENT_TYPE, f.mime.clone())], f.bytes.clone()).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such file"),
    }
}

/// `POST /emulator/control/files/{file_id}/forget`.
pub(crate) async fn forget(AxState(emu): AxState<Emulator>, Path(file_id): Path<String>) -> Response {
    if emu.forget_file(&file_id) {
        Json(json!({"ok": true})).into_response()
    } else {
        error(StatusCode::NOT_FOUND, "no such file")
    }
}

/// `GET /emulator/control/rejections`.
pub(crate) async fn rejections(AxState(emu): AxState<Emulator>) -> Response {
    Json(emu.rejections()).into_response()
}

/// `GET /emulator/control/calls`.
pub(crate) async fn calls(AxState(emu): AxState<Emulator>) -> Response {
    Json(emu.calls()).into_response()
}

/// `GET /emulator/control/callback_answers`.
pub(crate) async fn callback_answers(AxState(emu): AxState<Emulator>) -> Response {
    Json(emu.callback_answers()).into_response()
}

/// `GET /emulator/control/inline_answers`.
pub(crate) async fn inline_answers(AxState(emu): AxState<Emulator>) -> Response {
    Json(emu.inline_answers()).into_response()
}

/// `GET /emulator/control/payments`.
pub(crate) async fn payments(AxState(emu): AxState<Emulator>) -> Response {
    Json(emu.payments()).into_response()
}

/// `POST /emulator/control/flood`.
pub(crate) async fn flood(AxState(emu): AxState<Emulator>, body: Bytes) -> Response {
    match serde_json::from_slice::<FloodRule>(&body) {
        Ok(rule) if rule.times > 0 => {
            emu.add_flood(rule);
            Json(json!({"ok": true})).into_response()
        }
        Ok(_) => error(StatusCode::BAD_REQUEST, "times must be at least 1"),
        Err(e) => bad_body("flood rule", &e),
    }
}

/// `POST /emulator/control/lose_answers`.
pub(crate) async fn lose_answers(AxState(emu): AxState<Emulator>, body: Bytes) -> Response {
    match serde_json::from_slice::<super::LostAnswer>(&body) {
        Ok(rule) if rule.times > 0 && !rule.method.is_empty() => {
            emu.lose_answers(rule);
            Json(json!({"ok": true})).into_response()
        }
        Ok(_) => error(StatusCode::BAD_REQUEST, "method must be named and times must be at least 1"),
        Err(e) => bad_body("lost answer rule", &e),
    }
}

/// `POST /emulator/control/users/{id}/block`.
pub(crate) async fn block(AxState(emu): AxState<Emulator>, Path(id): Path<i64>) -> Response {
    emu.set_blocked(id, true);
    Json(json!({"ok": true})).into_response()
}

/// `POST /emulator/control/users/{id}/unblock`.
pub(crate) async fn unblock(AxState(emu): AxState<Emulator>, Path(id): Path<i64>) -> Response {
    emu.set_blocked(id, false);
    Json(json!({"ok": true})).into_response()
}

/// `POST /emulator/control/reset`. Forgets users, chats, files and records, but keeps what
/// the bot configured at start-up (commands, name, webhook, allowed updates), and update ids
/// and message ids keep growing so a running bot's offset and drafts stay valid.
pub(crate) async fn reset(AxState(emu): AxState<Emulator>) -> Response {
    let mut st = emu.lock();
    let highest_message = st.chats.values().map(|c| c.next_message_id).max().unwrap_or(0);
    let fresh = State {
        bot_id: st.bot_id,
        next_update_id: st.next_update_id,
        message_id_floor: st.message_id_floor.max(highest_message),
        counters: std::mem::take(&mut st.counters),
        poll_generation: st.poll_generation,
        allowed_updates: st.allowed_updates.take(),
        webhook_url: std::mem::take(&mut st.webhook_url),
        settings: std::mem::take(&mut st.settings),
        next_file: st.next_file,
        ..State::default()
    };
    *st = fresh;
    Json(json!({"ok": true})).into_response()
}
