//! `jobs::Notifier` over Telegram: progress edits (rate-limited per chat), result delivery as
//! photo + document, and failure notices.

use super::TgBot;
use super::i18n::Lang;
use super::keyboards;
use crate::domain::now_ms;
use crate::jobs::{DeliveredFiles, JobProgress, Notifier, NotifyError, ResultFiles, VideoFacts};
use crate::store::records::{ErrorClass, JobRecord, LibraryItem, Translation};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use teloxide::payloads::{SendAnimationSetters, SendDocumentSetters, SendVideoSetters};
use teloxide::prelude::*;
use teloxide::types::{ChatAction, InputFile, MessageId};
use teloxide::{ApiError, RequestError};

const SPINNER: [&str; 4] = ["◐", "◓", "◑", "◒"];
/// Characters of a prompt's translation shown under the progress (the rest is cut, "…").
const TRANSLATION_SHOWN: usize = 300;

/// Telegram side of job notifications.
pub struct BotNotifier {
    bot: TgBot,
    currency: crate::config::Currency,
    admins: Vec<i64>,
    model_names: HashMap<String, String>,
    edits: EditLimiter,
    /// Pacing for result sends, which bypass teloxide's Throttle (its queue would sit between
    /// our "attempted" marker and the actual request): one per second per chat.
    sends: EditLimiter,
    ticks: Mutex<u64>,
    /// `telegram.caption_link` (`auto`, empty, or a line to write).
    caption_link: String,
    /// The bot's `t.me/<username>` link once `getMe` answered (for `caption_link = "auto"`).
    own_link: tokio::sync::OnceCell<String>,
}

/// Rate limit for progress edits, which teloxide's Throttle does not cover: at most one edit
/// per `min_interval` per chat, a global budget per second, and a chat that got 429
/// `retry_after` is left alone for that long — only that chat (Bot API FAQ: limits are per
/// chat; protocols.md §1.9).
pub struct EditLimiter {
    min_interval: Duration,
    per_sec: u32,
    state: Mutex<EditState>,
}

#[derive(Default)]
struct EditState {
    next_allowed: HashMap<i64, Instant>,
    window_start: Option<Instant>,
    in_window: u32,
}

impl EditLimiter {
    pub fn new(min_interval: Duration, per_sec: u32) -> EditLimiter {
        EditLimiter { min_interval, per_sec: per_sec.max(1), state: Mutex::default() }
    }

    /// True if an edit in `chat` may go out now; records it.
    pub fn try_acquire(&self, chat: i64) -> bool {
        let Ok(mut st) = self.state.lock() else { return false };
        let now = Instant::now();
        if st.next_allowed.get(&chat).is_some_and(|t| now < *t) {
            return false;
        }
        match st.window_start {
            Some(w) if now.duration_since(w) < Duration::from_secs(1) => {
                if st.in_window >= self.per_sec {
                    return false;
                }
                st.in_window += 1;
            }
            _ => {
                st.window_start = Some(now);
                st.in_window = 1;
            }
        }
        st.next_allowed.insert(chat, now + self.min_interval);
        true
    }

    /// For edits that must happen (the final "done"/"failed" text): waits until the chat may
    /// be edited again (interval and any 429 back-off; at most 30 s), then records the edit.
    pub async fn acquire(&self, chat: i64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let wait = {
                let Ok(mut st) = self.state.lock() else { return };
                let now = Instant::now();
                match st.next_allowed.get(&chat) {
                    Some(t) if now < *t && now < deadline => *t - now,
                    _ => {
                        st.next_allowed.insert(chat, now + self.min_interval);
                        return;
                    }
                }
            };
            tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
        }
    }

    /// Telegram said 429 for this chat: hold its edits for `retry_after`.
    pub fn back_off(&self, chat: i64, retry_after: Duration) {
        if let Ok(mut st) = self.state.lock() {
            let until = Instant::now() + retry_after.max(self.min_interval);
            st.next_allowed.insert(chat, until);
        }
    }
}

impl BotNotifier {
    pub fn new(bot: TgBot, config: &crate::config::Config) -> BotNotifier {
        BotNotifier {
            bot,
            currency: config.billing.currency.clone(),
            admins: config.telegram.admins.clone(),
            model_names: config.models.iter().map(|m| (m.id.clone(), m.display_name.clone())).collect(),
            edits: EditLimiter::new(Duration::from_millis(config.jobs.progress_interval_ms), config.jobs.edits_per_sec),
            sends: EditLimiter::new(Duration::from_secs(1), 25),
            ticks: Mutex::default(),
            caption_link: config.telegram.caption_link.clone(),
            own_link: tokio::sync::OnceCell::new(),
        }
    }

    /// The line every result caption ends with (`telegram.caption_link`), so a forwarded
    /// result advertises the bot: `auto` → `t.me/<username>` (asked once with `getMe`; a
    /// failed ask leaves the line out this time and asks again next time), empty → none.
    async fn caption_line(&self) -> Option<String> {
        match self.caption_link.as_str() {
            "" => None,
            "auto" => self
                .own_link
                .get_or_try_init(|| async {
                    let me = self.bot.get_me().await?;
                    Ok::<_, RequestError>(format!("t.me/{}", me.username()))
                })
                .await
                .ok()
                .cloned(),
            line => Some(line.to_string()),
        }
    }

    /// Sends a request built by `make`, retrying (up to 3 times) when Telegram answers 429:
    /// a refused request was not delivered, so sending it again cannot duplicate it.
    async fn paced<R, F>(&self, chat: ChatId, make: F) -> Result<teloxide::requests::Output<R>, RequestError>
    where
        F: Fn() -> R,
        R: teloxide::requests::Request<Err = RequestError>,
    {
        let mut tries = 0;
        loop {
            match make().send().await {
                Err(RequestError::RetryAfter(secs)) if tries < 3 => {
                    tries += 1;
                    self.sends.back_off(chat.0, secs.duration());
                    self.sends.acquire(chat.0).await;
                }
                other => return other,
            }
        }
    }

    /// Display name of the job's model; built-in tools are named in the user's language.
    /// The last edit of a progress message (done, failed, cancelled). It goes out as soon as
    /// Telegram's per-chat pace allows (the send limiter, ~1 s) rather than after the
    /// progress-edit interval (the job's progress ticker has stopped by then).
    async fn final_edit(
        &self,
        chat: ChatId,
        mid: MessageId,
        text: String,
        keyboard: Option<teloxide::types::InlineKeyboardMarkup>,
    ) -> Result<(), RequestError> {
        self.sends.acquire(chat.0).await;
        let raw = self.bot.inner();
        self.paced(chat, || {
            let req = raw.edit_message_text(chat, mid, text.clone());
            match &keyboard {
                Some(kb) => req.reply_markup(kb.clone()),
                None => req,
            }
        })
        .await
        .map(|_| ())
    }

    /// Display name of a configured model (its id when it is gone from the config).
    fn name_of(&self, model: &str) -> String {
        self.model_names.get(model).cloned().unwrap_or_else(|| model.to_string())
    }

    fn model_name(&self, job: &JobRecord, lang: Lang) -> String {
        match job.model_id.as_str() {
            crate::domain::ADD_TEXT_MODEL => return lang.t("add_text_name"),
            crate::domain::RESIZE_MODEL => return lang.t("resize_name"),
            _ => {}
        }
        self.model_names.get(&job.model_id).cloned().unwrap_or_else(|| job.model_id.clone())
    }
}

/// `text` cut to `max` characters, with "…" in place of what was cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

fn bar(percent: u8) -> String {
    let filled = (percent as usize).min(100) / 10;
    format!("{}{}", "▓".repeat(filled), "░".repeat(10 - filled))
}

fn is_not_modified(e: &RequestError) -> bool {
    matches!(e, RequestError::Api(ApiError::MessageNotModified))
}

fn map_err(e: RequestError) -> NotifyError {
    match e {
        RequestError::Api(ApiError::BotBlocked | ApiError::UserDeactivated) => NotifyError::Blocked,
        e => NotifyError::Other(e.to_string()),
    }
}

/// Seconds from job creation to finish.
fn secs(job: &JobRecord) -> i64 {
    ((job.finished_at.unwrap_or_else(now_ms) - job.created_at).max(0) + 500) / 1000
}

#[async_trait::async_trait]
impl Notifier for BotNotifier {
    async fn before_delivery(&self, job: &JobRecord) {
        let _ = self.bot.inner().send_chat_action(ChatId(job.chat_id), ChatAction::UploadPhoto).await;
        self.sends.acquire(job.chat_id).await;
    }

    async fn progress(&self, job: &JobRecord, p: JobProgress) {
        let Some(mid) = job.progress_message_id else { return };
        if !self.edits.try_acquire(job.chat_id) {
            return;
        }
        let lang = Lang::from_code(Some(&job.lang));
        let tick = self.ticks.lock().map(|mut t| {
            *t += 1;
            *t
        });
        let spinner = SPINNER[(tick.unwrap_or(0) % 4) as usize];
        let model = self.model_name(job, lang);
        let mut text = match (p.running, p.queue_position) {
            (false, Some(pos)) if job.submission.is_none() => {
                lang.tf("queued", &[("position", &pos), ("model", &model), ("eta", &p.eta_secs)])
            }
            (false, Some(pos)) => {
                lang.tf("running_queue", &[("spinner", &spinner), ("position", &pos), ("model", &model)])
            }
            _ => lang.tf(
                "running",
                &[
                    ("spinner", &spinner),
                    ("bar", &bar(p.percent)),
                    ("percent", &p.percent),
                    ("model", &model),
                    ("eta", &p.eta_secs),
                ],
            ),
        };
        // The job's number, for `/status <id>` and for telling support which job it was; once it
        // left our queue (the "queued" text must stay what the first message said, so the
        // scheduler's edit of it changes nothing).
        if job.submission.is_some() || p.running {
            text.push('\n');
            text.push_str(&lang.tf("job_number", &[("id", &job.id.short())]));
        }
        if let Some(Translation::English { text: english }) = &job.translation {
            // Substituted last and alone: the model's words never pass through another template.
            text.push('\n');
            text.push_str(&lang.tf("translated", &[("text", &shorten(english, TRANSLATION_SHOWN))]));
        }
        let mut req = self.bot.edit_message_text(ChatId(job.chat_id), MessageId(mid), text);
        if let Some(draft) = job.draft_id {
            req = req.reply_markup(keyboards::cancel(lang, draft));
        }
        match req.await {
            Ok(_) => {}
            Err(e) if is_not_modified(&e) => {}
            Err(RequestError::RetryAfter(secs)) => self.edits.back_off(job.chat_id, secs.duration()),
            Err(e) => tracing::debug!(error = %e, "progress edit failed"),
        }
    }

    async fn delivery_interrupted(&self, job: &JobRecord, item: &LibraryItem) -> Result<(), NotifyError> {
        let lang = Lang::from_code(Some(&job.lang));
        let prompt: String = item.prompt.chars().take(200).collect();
        self.bot
            .send_message(ChatId(job.chat_id), lang.tf("delivery_interrupted", &[("prompt", &prompt)]))
            .reply_markup(keyboards::resend(lang, item.id))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn library_full(&self, job: &JobRecord, max_items: u32) {
        let lang = Lang::from_code(Some(&job.lang));
        let text = lang.tf("library_full", &[("max", &lang.counted(i64::from(max_items), "pictures"))]);
        if let Err(e) = self.bot.send_message(ChatId(job.chat_id), text).await {
            tracing::warn!(error = %e, "library-full notice not delivered");
        }
    }

    async fn broadcast(&self, chat_id: i64, text: &str, photo: Option<Vec<u8>>) -> Result<(), NotifyError> {
        let chat = ChatId(chat_id);
        // The broadcast sender paces itself; the raw bot keeps Throttle's queue out of the way
        // and `paced` waits out a RetryAfter.
        let raw = self.bot.inner();
        match photo {
            Some(bytes) => {
                let caption: String = text.chars().take(1024).collect();
                self.paced(chat, || {
                    raw.send_photo(chat, InputFile::memory(bytes.clone()).file_name("broadcast.jpg"))
                        .caption(caption.clone())
                })
                .await
                .map_err(map_err)?;
            }
            None => {
                self.paced(chat, || raw.send_message(chat, text.to_string())).await.map_err(map_err)?;
            }
        }
        Ok(())
    }

    async fn ask_failover(&self, job: &JobRecord) -> Result<(), NotifyError> {
        let Some(f) = &job.failover else { return Err(NotifyError::Other("the job has not moved".into())) };
        let lang = Lang::from_code(Some(&job.lang));
        let text = lang.tf(
            "failover_ask",
            &[
                ("from", &self.name_of(&f.from_model)),
                ("to", &self.name_of(&f.to_model)),
                ("new", &lang.money(f.to_price, &self.currency)),
                ("old", &lang.money(f.from_price, &self.currency)),
            ],
        );
        let kb = keyboards::failover(lang, job.id);
        let chat = ChatId(job.chat_id);
        if let Some(mid) = job.progress_message_id {
            match self.final_edit(chat, MessageId(mid), text.clone(), Some(kb.clone())).await {
                Ok(()) => return Ok(()),
                Err(e) => tracing::debug!(error = %e, "could not edit; sending the question instead"),
            }
        }
        self.bot.send_message(chat, text).reply_markup(kb).await.map_err(map_err)?;
        Ok(())
    }

    async fn admin_alert(&self, text: &str) {
        for admin in &self.admins {
            if let Err(e) = self.bot.send_message(ChatId(*admin), text.to_string()).await {
                tracing::warn!(error = %e, admin, "admin alert not delivered");
            }
        }
    }

    async fn deliver(
        &self,
        job: &JobRecord,
        item: &LibraryItem,
        files: ResultFiles,
        photo_sent: tokio::sync::oneshot::Sender<String>,
    ) -> Result<DeliveredFiles, NotifyError> {
        let lang = Lang::from_code(Some(&job.lang));
        let chat = ChatId(job.chat_id);
        let s = secs(job);
        let mut caption = if item.is_demo {
            lang.tf("caption_demo", &[("secs", &s)])
        } else {
            lang.tf("caption", &[("model", &self.model_name(job, lang)), ("secs", &s)])
        };
        if let Some(f) = &job.failover {
            caption.push('\n');
            caption.push_str(&lang.tf("caption_failover", &[("from", &self.name_of(&f.from_model))]));
        }
        if let Some(line) = self.caption_line().await {
            caption.push('\n');
            caption.push_str(&line);
        }
        // The raw bot: each send is paced here (and retried after a RetryAfter) instead of
        // waiting in Throttle's queue behind other chats.
        let raw = self.bot.inner();
        let mut out = DeliveredFiles::default();
        let mut photo_sent = Some(photo_sent);
        let kb = keyboards::actions(lang, item);
        let file = |bytes: &Vec<u8>, name: &String| InputFile::memory(bytes.clone()).file_name(name.clone());
        let sent = match files {
            ResultFiles::Image { photo, document, name } => {
                let mut keyboard_placed = false;
                if let Some(photo) = photo {
                    let sent = self
                        .paced(chat, || {
                            raw.send_photo(chat, InputFile::memory(photo.clone()).file_name("result.jpg"))
                                .caption(caption.clone())
                                .reply_markup(kb.clone())
                        })
                        .await;
                    match sent {
                        Ok(m) => {
                            out.photo_file_id = m.photo().and_then(|p| p.last()).map(|p| p.file.id.to_string());
                            if let (Some(id), Some(tx)) = (&out.photo_file_id, photo_sent.take()) {
                                let _ = tx.send(id.clone());
                            }
                            keyboard_placed = true;
                        }
                        // A photo Telegram refuses still reaches the user as a document below.
                        Err(RequestError::Api(e)) if !matches!(e, ApiError::BotBlocked | ApiError::UserDeactivated) => {
                            tracing::warn!(error = %e, "photo refused; sending as document only");
                        }
                        Err(e) => return Err(map_err(e)),
                    }
                    self.sends.acquire(chat.0).await;
                }
                self.paced(chat, || {
                    let doc = raw.send_document(chat, file(&document, &name)).caption(caption.clone());
                    if keyboard_placed { doc } else { doc.reply_markup(kb.clone()) }
                })
                .await
            }
            ResultFiles::Video { bytes, name, video } if video.mp4 => {
                self.paced(chat, || {
                    with_video_facts(raw.send_video(chat, file(&bytes, &name)), &video)
                        .caption(caption.clone())
                        .reply_markup(kb.clone())
                })
                .await
            }
            // WebM: Telegram clients play only MPEG-4 inline; other videos go as documents.
            ResultFiles::Video { bytes, name, video } => {
                self.paced(chat, || {
                    with_document_thumbnail(raw.send_document(chat, file(&bytes, &name)), &video)
                        .caption(caption.clone())
                        .reply_markup(kb.clone())
                })
                .await
            }
            ResultFiles::Animation { bytes, name, video } => {
                self.paced(chat, || {
                    with_animation_facts(raw.send_animation(chat, file(&bytes, &name)), &video)
                        .caption(caption.clone())
                        .reply_markup(kb.clone())
                })
                .await
            }
            ResultFiles::Link { url, size, .. } => {
                let text = link_text(lang, &caption, &url, size);
                self.paced(chat, || raw.send_message(chat, text.clone()).reply_markup(kb.clone())).await
            }
            ResultFiles::File { bytes, name } => {
                self.paced(chat, || {
                    raw.send_document(chat, file(&bytes, &name)).caption(caption.clone()).reply_markup(kb.clone())
                })
                .await
            }
        };
        out.document_file_id = file_id_of(&sent.map_err(map_err)?);
        if let (Some(id), Some(tx)) = (&out.document_file_id, photo_sent.take()) {
            if out.photo_file_id.is_none() {
                let _ = tx.send(id.clone());
            }
        }
        if let Some(mid) = job.progress_message_id {
            let done = lang.tf("done", &[("secs", &s)]);
            if let Err(e) = self.final_edit(chat, MessageId(mid), done, None).await {
                tracing::debug!(error = %e, "could not mark the progress message done");
            }
        }
        Ok(out)
    }

    async fn deliver_text(&self, job: &JobRecord, text: &str) -> Result<(), NotifyError> {
        let lang = Lang::from_code(Some(&job.lang));
        let chat = ChatId(job.chat_id);
        let pieces = crate::llm::split_for_telegram(text, crate::llm::TELEGRAM_TEXT_LIMIT);
        let last = pieces.len().saturating_sub(1);
        for (i, piece) in pieces.into_iter().enumerate() {
            // The written prompt is sent as plain text (no parse mode): nothing in it is markup.
            let sent = self
                .paced(chat, || {
                    let req = self.bot.inner().send_message(chat, piece.clone());
                    if i == last { req.reply_markup(keyboards::use_written(lang, job.id)) } else { req }
                })
                .await;
            sent.map_err(map_err)?;
        }
        if let Some(mid) = job.progress_message_id {
            let done = lang.tf("write_done", &[("secs", &secs(job))]);
            if let Err(e) = self.final_edit(chat, MessageId(mid), done, None).await {
                tracing::debug!(error = %e, "could not mark the progress message done");
            }
        }
        Ok(())
    }

    async fn failed(&self, job: &JobRecord, alternatives: &[crate::config::ModelConfig]) -> Result<(), NotifyError> {
        let lang = Lang::from_code(Some(&job.lang));
        let class = job.error.as_ref().map(|e| e.class).unwrap_or(ErrorClass::Failed);
        let detail = job.error.as_ref().map(|e| e.detail.clone()).unwrap_or_default();
        let detail = refusal(lang, detail.strip_prefix("request rejected: ").unwrap_or(&detail));
        let key = match class {
            ErrorClass::Transient => "failed_transient",
            ErrorClass::Rejected => "failed_rejected",
            ErrorClass::Retired => "failed_retired",
            ErrorClass::Unauthorized => "failed_unauthorized",
            ErrorClass::PaymentRequired | ErrorClass::Misconfigured => "failed_model_unavailable",
            ErrorClass::Timeout => "failed_timeout",
            ErrorClass::Cancelled => "cancelled",
            ErrorClass::TooLarge => "failed_too_large",
            ErrorClass::InsufficientFunds if job.failover.is_some() => "failover_no_funds",
            ErrorClass::Declined if job.failover.as_ref().is_some_and(|f| f.confirmed == Some(false)) => {
                "failover_declined"
            }
            ErrorClass::Declined => "failover_expired",
            _ => "failed_generic",
        };
        let price = lang.money(job.price, &self.currency);
        let fallback = job.failover.as_ref().map(|f| self.name_of(&f.to_model)).unwrap_or_default();
        let mut text = lang.tf(key, &[("price", &price), ("detail", &detail), ("model", &fallback)]);
        let chat = ChatId(job.chat_id);
        // A model or provider switched off: offer what still works for the same task.
        let offer = match (job.draft_id, alternatives.is_empty()) {
            (Some(draft), false) => {
                text.push_str("\n\n");
                text.push_str(&lang.t("alternatives"));
                Some(keyboards::alternatives(draft, alternatives, |m| lang.money(m.price, &self.currency)))
            }
            _ => None,
        };
        if let Some(mid) = job.progress_message_id {
            match self.final_edit(chat, MessageId(mid), text.clone(), offer.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if is_not_modified(&e) => return Ok(()),
                Err(e) => tracing::debug!(error = %e, "could not edit; sending instead"),
            }
        }
        let mut req = self.bot.send_message(chat, text);
        if let Some(kb) = offer {
            req = req.reply_markup(kb);
        }
        req.await.map_err(map_err)?;
        Ok(())
    }
}

/// A provider's reason for refusing a request, in the user's language: the kinds we recognise
/// are said in our words; anything else is quoted as the provider said it.
pub fn refusal(lang: Lang, detail: &str) -> String {
    let d = detail.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| d.contains(w));
    let detail: String = detail.chars().take(300).collect();
    if has(&["content policy", "nsfw", "safety", "moderation", "inappropriate", "not allowed", "prohibited"]) {
        lang.t("refusal_policy")
    } else if has(&["no face", "face not", "faces not", "could not detect", "no faces"]) {
        lang.t("refusal_no_face")
    } else if has(&["too long", "too many characters", "maximum length"]) {
        lang.t("refusal_too_long")
    } else {
        lang.tf("refusal_other", &[("detail", &detail)])
    }
}

/// Sends stored result files to `chat` with `keyboard` (on the first message): an image as a
/// photo and a document, other kinds as their one message. For "📥 Send it" and re-opening a
/// library item whose file_id Telegram no longer knows. Returns the photo's file_id, if one
/// was sent.
pub async fn send_files(
    bot: &TgBot,
    chat: ChatId,
    files: ResultFiles,
    caption: Option<String>,
    keyboard: teloxide::types::InlineKeyboardMarkup,
) -> Result<Option<String>, RequestError> {
    let file = |bytes: Vec<u8>, name: String| InputFile::memory(bytes).file_name(name);
    // An empty caption is no caption.
    let caption = caption.unwrap_or_default();
    match files {
        ResultFiles::Image { photo: Some(photo), document, name } => {
            let m =
                bot.send_photo(chat, file(photo, "result.jpg".into())).caption(caption).reply_markup(keyboard).await?;
            bot.send_document(chat, file(document, name)).await?;
            return Ok(m.photo().and_then(|p| p.last()).map(|p| p.file.id.to_string()));
        }
        ResultFiles::Image { photo: None, document: bytes, name } | ResultFiles::File { bytes, name } => {
            bot.send_document(chat, file(bytes, name)).caption(caption).reply_markup(keyboard).await?;
        }
        ResultFiles::Video { bytes, name, video } if video.mp4 => {
            let req = with_video_facts(bot.send_video(chat, file(bytes, name)), &video);
            req.caption(caption).reply_markup(keyboard).await?;
        }
        ResultFiles::Video { bytes, name, video } => {
            let req = with_document_thumbnail(bot.send_document(chat, file(bytes, name)), &video);
            req.caption(caption).reply_markup(keyboard).await?;
        }
        ResultFiles::Animation { bytes, name, video } => {
            let req = with_animation_facts(bot.send_animation(chat, file(bytes, name)), &video);
            req.caption(caption).reply_markup(keyboard).await?;
        }
        ResultFiles::Link { url, size, .. } => {
            // The handlers' resend passes no language: the default one.
            let text = link_text(Lang::from_code(None), &caption, &url, size);
            bot.send_message(chat, text).reply_markup(keyboard).await?;
        }
    }
    Ok(None)
}

/// The message that stands in for a result over Telegram's upload limit: the caption, the
/// size in MB (rounded up) and the download link with its validity in days.
pub fn link_text(lang: Lang, caption: &str, url: &str, size: u64) -> String {
    let mb = size.div_ceil(1_000_000);
    let days = crate::downloads::LINK_VALID_SECS / 86_400;
    let text = lang.tf("result_link", &[("caption", &caption), ("size", &mb), ("days", &days), ("url", &url)]);
    text.trim_start().to_string()
}

/// sendVideo's `duration`, `width`, `height` (when probed), `thumbnail` (when there is one)
/// and `supports_streaming` (only for a faststart MP4).
fn with_video_facts<R: SendVideoSetters>(mut req: R, v: &VideoFacts) -> R {
    if let Some(m) = v.meta {
        if m.duration_secs > 0 {
            req = req.duration(m.duration_secs);
        }
        req = req.width(m.width).height(m.height);
    }
    if let Some(t) = &v.thumbnail {
        req = req.thumbnail(InputFile::memory(t.clone()).file_name("thumbnail.jpg"));
    }
    if v.faststart {
        req = req.supports_streaming(true);
    }
    req
}

/// sendAnimation's `duration`, `width`, `height` and `thumbnail`, when known.
fn with_animation_facts<R: SendAnimationSetters>(mut req: R, v: &VideoFacts) -> R {
    if let Some(m) = v.meta {
        if m.duration_secs > 0 {
            req = req.duration(m.duration_secs);
        }
        req = req.width(m.width).height(m.height);
    }
    if let Some(t) = &v.thumbnail {
        req = req.thumbnail(InputFile::memory(t.clone()).file_name("thumbnail.jpg"));
    }
    req
}

/// sendDocument's `thumbnail` for a video sent as a file (WebM).
fn with_document_thumbnail<R: SendDocumentSetters>(req: R, v: &VideoFacts) -> R {
    match &v.thumbnail {
        Some(t) => req.thumbnail(InputFile::memory(t.clone()).file_name("thumbnail.jpg")),
        None => req,
    }
}

/// The file_id of a sent document, video or animation message.
fn file_id_of(m: &teloxide::types::Message) -> Option<String> {
    let id = m.video().map(|v| &v.file.id).or(m.animation().map(|a| &a.file.id)).or(m.document().map(|d| &d.file.id));
    id.map(ToString::to_string)
}

/// Sends a file Telegram already has (by its file_id) the way its kind was delivered: a
/// video that is not MPEG-4 (`mime` `video/webm`) went as a document, so it goes as one again.
pub async fn send_by_file_id(
    bot: &TgBot,
    chat: ChatId,
    (media, mime): (crate::domain::MediaKind, &str),
    file_id: String,
    caption: String,
    keyboard: teloxide::types::InlineKeyboardMarkup,
) -> Result<(), RequestError> {
    use crate::domain::MediaKind;
    let file = InputFile::file_id(file_id.into());
    match media {
        MediaKind::Image => bot.send_photo(chat, file).caption(caption).reply_markup(keyboard).await.map(|_| ()),
        MediaKind::Video if mime == "video/mp4" || mime == "video/quicktime" => {
            bot.send_video(chat, file).caption(caption).reply_markup(keyboard).await.map(|_| ())
        }
        MediaKind::Animation => {
            bot.send_animation(chat, file).caption(caption).reply_markup(keyboard).await.map(|_| ())
        }
        MediaKind::Video | MediaKind::File => {
            bot.send_document(chat, file).caption(caption).reply_markup(keyboard).await.map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_limiter_per_chat_interval_global_budget_and_back_off() {
        let l = EditLimiter::new(Duration::from_millis(200), 3);
        assert!(l.try_acquire(1));
        assert!(!l.try_acquire(1), "second edit in the same chat within the interval");
        assert!(l.try_acquire(2));
        assert!(l.try_acquire(3));
        assert!(!l.try_acquire(4), "global budget of 3 per second spent");
        l.back_off(2, Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(1050));
        assert!(l.try_acquire(1), "chat 1 free again");
        assert!(!l.try_acquire(2), "chat 2 still inside its retry_after");
    }

    #[test]
    fn refusals_are_said_in_the_users_language() {
        let policy = "prompt violates the content policy";
        assert!(refusal(Lang::Ru, policy).contains("правила"), "{}", refusal(Lang::Ru, policy));
        assert!(refusal(Lang::En, policy).contains("content policy"));
        assert!(refusal(Lang::Ru, "No face detected in the image").contains("лицо"));
        let other = refusal(Lang::Ru, "image_size must be a multiple of 8");
        assert!(other.contains("провайдер") && other.contains("«image_size must be a multiple of 8»"), "{other}");
    }

    #[test]
    fn progress_bar_has_ten_cells() {
        assert_eq!(bar(0), "░░░░░░░░░░");
        assert_eq!(bar(45), "▓▓▓▓░░░░░░");
        assert_eq!(bar(250).chars().count(), 10);
    }

    #[test]
    fn a_long_translation_is_cut_at_300_characters() {
        assert_eq!(shorten("a red fox", TRANSLATION_SHOWN), "a red fox");
        let long = "лиса ".repeat(100);
        let shown = shorten(&long, TRANSLATION_SHOWN);
        assert!(shown.chars().count() <= TRANSLATION_SHOWN && shown.ends_with("а…"), "{shown}");
        assert_eq!(shorten(&"x".repeat(300), 300), "x".repeat(300));
    }
}
