//! "📝 Add text": menu button → photo → text → style wishes or /skip → a local job that draws
//! the caption (`imaging::overlay_text`) and delivers photo + document like any other job.
//!
//! The step the chat is at lives in the dialogues table, so a restart between messages does not
//! lose it. /cancel, /start and /menu leave the flow.

use super::generate::{download_input, image_file};
use crate::bot::i18n::Lang;
use crate::bot::{BotCtx, BotError, TgBot};
use crate::domain::UserId;
use crate::jobs::NewJob;
use crate::store::records::JobPayload;
use teloxide::prelude::*;

use crate::bot::dialogue::set;
pub use crate::bot::dialogue::{Step, clear};

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
        // Library steps are routed to `library::on_step` before this is called.
        _ => Ok(()),
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
    super::library::submit_with_progress(bot, chat, ctx, lang, &name, |to| async move {
        ctx.jobs
            .submit(NewJob {
                user_id: user,
                chat_id: to.chat_id,
                lang: to.lang,
                model_id: crate::domain::ADD_TEXT_MODEL.into(),
                payload,
                progress_message_id: to.progress_message_id,
                draft_id: None,
                priority: ctx.jobs.is_admin(user),
            })
            .await
            .map(Some)
    })
    .await
}
