//! `jobs::Notifier` over Telegram: progress edits (rate-limited per chat), result delivery as
//! photo + document, and failure notices.

use super::TgBot;
use super::i18n::Lang;
use super::keyboards;
use crate::domain::now_ms;
use crate::jobs::{DeliveredFiles, JobProgress, Notifier, NotifyError, ResultFiles};
use crate::store::records::{ErrorClass, JobRecord, LibraryItem};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use teloxide::prelude::*;
use teloxide::types::{ChatAction, InputFile, MessageId};
use teloxide::{ApiError, RequestError};

const SPINNER: [&str; 4] = ["◐", "◓", "◑", "◒"];

/// Telegram side of job notifications.
pub struct BotNotifier {
    bot: TgBot,
    currency: String,
    model_names: HashMap<String, String>,
    /// Minimum time between progress edits in one chat (flood control; Telegram publishes no
    /// exact edit limit, ~1/s per chat is the documented message rate).
    min_interval: Duration,
    last_edit: Mutex<HashMap<i64, Instant>>,
    ticks: Mutex<u64>,
}

impl BotNotifier {
    pub fn new(bot: TgBot, config: &crate::config::Config) -> BotNotifier {
        BotNotifier {
            bot,
            currency: config.billing.currency.clone(),
            model_names: config.models.iter().map(|m| (m.id.clone(), m.display_name.clone())).collect(),
            min_interval: Duration::from_millis(config.jobs.progress_interval_ms),
            last_edit: Mutex::default(),
            ticks: Mutex::default(),
        }
    }

    fn model_name<'a>(&'a self, job: &'a JobRecord) -> &'a str {
        self.model_names.get(&job.model_id).map(String::as_str).unwrap_or(&job.model_id)
    }

    /// True if an edit in this chat is allowed now (and records it).
    fn may_edit(&self, chat: i64) -> bool {
        let Ok(mut map) = self.last_edit.lock() else { return false };
        let now = Instant::now();
        match map.get(&chat) {
            Some(t) if now.duration_since(*t) < self.min_interval => false,
            _ => {
                map.insert(chat, now);
                true
            }
        }
    }
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
    async fn progress(&self, job: &JobRecord, p: JobProgress) {
        let Some(mid) = job.progress_message_id else { return };
        if !self.may_edit(job.chat_id) {
            return;
        }
        let lang = Lang::from_code(Some(&job.lang));
        let tick = self.ticks.lock().map(|mut t| {
            *t += 1;
            *t
        });
        let spinner = SPINNER[(tick.unwrap_or(0) % 4) as usize];
        let model = self.model_name(job);
        let text = match (p.running, p.queue_position) {
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
        if let Err(e) = self.bot.edit_message_text(ChatId(job.chat_id), MessageId(mid), text).await {
            if !is_not_modified(&e) {
                tracing::debug!(error = %e, "progress edit failed");
            }
        }
    }

    async fn deliver(
        &self,
        job: &JobRecord,
        item: &LibraryItem,
        files: ResultFiles,
    ) -> Result<DeliveredFiles, NotifyError> {
        let lang = Lang::from_code(Some(&job.lang));
        let chat = ChatId(job.chat_id);
        let s = secs(job);
        let caption = if item.is_demo {
            lang.tf("caption_demo", &[("secs", &s)])
        } else {
            lang.tf("caption", &[("model", &self.model_name(job)), ("secs", &s)])
        };
        let _ = self.bot.send_chat_action(chat, ChatAction::UploadPhoto).await;
        let mut out = DeliveredFiles::default();
        let kb = keyboards::result(lang, item.id, item.favourite);
        let mut keyboard_placed = false;
        if let Some(photo) = files.photo {
            let sent = self
                .bot
                .send_photo(chat, InputFile::memory(photo).file_name("result.jpg"))
                .caption(caption.clone())
                .reply_markup(kb.clone())
                .await;
            match sent {
                Ok(m) => {
                    out.photo_file_id = m.photo().and_then(|p| p.last()).map(|p| p.file.id.to_string());
                    keyboard_placed = true;
                }
                // A photo Telegram refuses still reaches the user as a document below.
                Err(RequestError::Api(e)) if !matches!(e, ApiError::BotBlocked | ApiError::UserDeactivated) => {
                    tracing::warn!(error = %e, "photo refused; sending as document only");
                }
                Err(e) => return Err(map_err(e)),
            }
        }
        let mut doc = self
            .bot
            .send_document(chat, InputFile::memory(files.document).file_name(files.document_name))
            .caption(caption);
        if !keyboard_placed {
            doc = doc.reply_markup(kb);
        }
        let sent = doc.await.map_err(map_err)?;
        out.document_file_id = sent.document().map(|d| d.file.id.to_string());
        if let Some(mid) = job.progress_message_id {
            let _ = self.bot.edit_message_text(chat, MessageId(mid), lang.tf("done", &[("secs", &s)])).await;
        }
        Ok(out)
    }

    async fn failed(&self, job: &JobRecord) -> Result<(), NotifyError> {
        let lang = Lang::from_code(Some(&job.lang));
        let class = job.error.as_ref().map(|e| e.class).unwrap_or(ErrorClass::Failed);
        let detail = job.error.as_ref().map(|e| e.detail.clone()).unwrap_or_default();
        let detail = detail.strip_prefix("request rejected: ").unwrap_or(&detail).to_string();
        let key = match class {
            ErrorClass::Transient => "failed_transient",
            ErrorClass::Rejected => "failed_rejected",
            ErrorClass::Retired => "failed_retired",
            ErrorClass::Unauthorized => "failed_unauthorized",
            ErrorClass::Timeout => "failed_timeout",
            ErrorClass::Cancelled => "cancelled",
            _ => "failed_generic",
        };
        let text = lang.tf(key, &[("price", &job.price), ("currency", &self.currency), ("detail", &detail)]);
        let chat = ChatId(job.chat_id);
        if let Some(mid) = job.progress_message_id {
            match self.bot.edit_message_text(chat, MessageId(mid), text.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if is_not_modified(&e) => return Ok(()),
                Err(e) => tracing::debug!(error = %e, "could not edit; sending instead"),
            }
        }
        self.bot.send_message(chat, text).await.map_err(map_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_bar_has_ten_cells() {
        assert_eq!(bar(0), "░░░░░░░░░░");
        assert_eq!(bar(45), "▓▓▓▓░░░░░░");
        assert_eq!(bar(250).chars().count(), 10);
    }
}
