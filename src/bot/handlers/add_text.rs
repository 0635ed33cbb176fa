//! "📝 Add text": menu button → photo → text → style wishes or /skip → a local job that draws
//! the caption (`imaging::overlay_text`) and delivers photo + document like any other job.
//!
//! The step the chat is at lives in the dialogues table, so a restart between messages does not
//! lose it. /cancel, /start and /menu leave the flow.

use super::generate::{download_input, image_file};
use crate::bot::i18n::Lang;
use crate::bot::{BotCtx, BotError, TgBot};
use crate::domain::UserId;
use crate::jobs::{NewJob, Submitted};
use crate::store::records::JobPayload;
use serde::{Deserialize, Serialize};
use teloxide::prelude::*;

/// Where a chat is in the flow. Stored as JSON under the chat id (dialogues table); the `flow`
/// tag leaves room for other multi-step flows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "flow", rename_all = "snake_case")]
pub enum Step {
    AddTextPhoto,
    AddTextText { input: String },
    AddTextWishes { input: String, text: String },
}

/// The chat's current step, if it is in the flow. An unreadable stored state (written by a
/// newer build) counts as none.
pub async fn current(ctx: &BotCtx, chat: ChatId) -> Result<Option<Step>, BotError> {
    let raw = ctx.store.read(move |rx| rx.get_dialogue(chat.0)).await?;
    Ok(raw.and_then(|b| serde_json::from_slice(&b).ok()))
}

async fn set(ctx: &BotCtx, chat: ChatId, step: &Step) -> Result<(), BotError> {
    let bytes = serde_json::to_vec(step).map_err(|e| crate::store::StoreError::Codec(e.to_string()))?;
    ctx.store.write(move |tx| tx.put_dialogue(chat.0, &bytes)).await?;
    Ok(())
}

/// Leaves the flow (no-op when the chat is not in it).
pub async fn clear(ctx: &BotCtx, chat: ChatId) -> Result<(), BotError> {
    ctx.store.write(move |tx| tx.delete_dialogue(chat.0)).await?;
    Ok(())
}

/// The menu button: start the flow by asking for a photo.
pub async fn start(bot: &TgBot, chat: ChatId, ctx: &BotCtx, lang: Lang) -> Result<(), BotError> {
    set(ctx, chat, &Step::AddTextPhoto).await?;
    bot.send_message(chat, lang.t("add_text_send_photo")).await?;
    Ok(())
}

/// A message while the chat is in the flow.
pub async fn on_message(bot: &TgBot, msg: &Message, ctx: &BotCtx, lang: Lang, step: Step) -> Result<(), BotError> {
    let chat = msg.chat.id;
    let text = msg.text().map(str::trim);
    if text.is_some_and(|t| t.eq_ignore_ascii_case("/cancel")) {
        clear(ctx, chat).await?;
        bot.send_message(chat, lang.t("add_text_cancelled")).await?;
        return Ok(());
    }
    match step {
        Step::AddTextPhoto => {
            let Some((file_id, size)) = image_file(msg) else {
                bot.send_message(chat, lang.t("add_text_need_photo")).await?;
                return Ok(());
            };
            let Some(info) = download_input(bot, chat, ctx, lang, file_id, size).await? else { return Ok(()) };
            // A caption on the photo is the text: one step fewer.
            match msg.caption().map(str::trim).filter(|c| !c.is_empty()) {
                Some(caption) => ask_wishes(bot, chat, ctx, lang, info.sha256, caption.to_string()).await,
                None => {
                    set(ctx, chat, &Step::AddTextText { input: info.sha256 }).await?;
                    bot.send_message(chat, lang.t("add_text_send_text")).await?;
                    Ok(())
                }
            }
        }
        Step::AddTextText { input } => match text.filter(|t| !t.is_empty() && !t.starts_with('/')) {
            Some(t) => ask_wishes(bot, chat, ctx, lang, input, t.to_string()).await,
            None => {
                bot.send_message(chat, lang.t("add_text_need_text")).await?;
                Ok(())
            }
        },
        Step::AddTextWishes { input, text: caption } => {
            let Some(t) = text else {
                bot.send_message(chat, lang.t("add_text_send_wishes")).await?;
                return Ok(());
            };
            let wishes = if t.eq_ignore_ascii_case("/skip") { String::new() } else { t.to_string() };
            let unknown = crate::imaging::parse_wishes(&wishes).unknown;
            if !unknown.is_empty() {
                bot.send_message(chat, lang.tf("add_text_unknown", &[("words", &unknown.join(", "))])).await?;
            }
            clear(ctx, chat).await?;
            let user = UserId(msg.from.as_ref().map(|u| u.id.0 as i64).unwrap_or(chat.0));
            submit(bot, chat, ctx, lang, user, JobPayload::AddText { input, text: caption, wishes }).await
        }
    }
}

async fn ask_wishes(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    lang: Lang,
    input: String,
    text: String,
) -> Result<(), BotError> {
    set(ctx, chat, &Step::AddTextWishes { input, text }).await?;
    bot.send_message(chat, lang.t("add_text_send_wishes")).await?;
    Ok(())
}

/// Creates the job (hold at `billing.add_text_price` + job in one transaction) with a progress
/// message that the worker edits to "done".
async fn submit(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    lang: Lang,
    user: UserId,
    payload: JobPayload,
) -> Result<(), BotError> {
    let name = lang.t("add_text_name");
    let queued = lang.tf("queued", &[("position", &1), ("model", &name), ("eta", &1)]);
    let progress = bot.send_message(chat, queued).await?.id;
    let outcome = ctx
        .jobs
        .submit(NewJob {
            user_id: user,
            chat_id: chat.0,
            lang: lang.code().into(),
            model_id: crate::domain::ADD_TEXT_MODEL.into(),
            payload,
            progress_message_id: Some(progress.0),
            draft_id: None,
            priority: ctx.jobs.is_admin(user),
        })
        .await?;
    if let Submitted::InsufficientFunds { balance, price } = &outcome {
        let currency = ctx.billing.currency().to_string();
        let text = lang.tf("insufficient", &[("balance", balance), ("price", price), ("currency", &currency)]);
        bot.edit_message_text(chat, progress, text).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_steps_keep_decoding() {
        // Literal states as this version stores them; never edit these, add new ones.
        let cases = [
            (r#"{"flow":"add_text_photo"}"#, Step::AddTextPhoto),
            (r#"{"flow":"add_text_text","input":"ab"}"#, Step::AddTextText { input: "ab".into() }),
            (
                r#"{"flow":"add_text_wishes","input":"ab","text":"hi"}"#,
                Step::AddTextWishes { input: "ab".into(), text: "hi".into() },
            ),
        ];
        for (stored, step) in cases {
            assert_eq!(serde_json::from_str::<Step>(stored).expect(stored), step);
            assert_eq!(serde_json::to_string(&step).expect("json"), stored);
        }
    }
}
