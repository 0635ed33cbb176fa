//! "📝 Add text": menu button → photo → text → style wishes or /skip → a local job that draws
//! the caption (`imaging::overlay_text`) and delivers photo + document like any other job.
//!
//! Each step is its own endpoint, picked in `bot::schema` by the chat's stored step, so a
//! restart between messages does not lose the flow. /cancel, /start and /menu leave it.

use super::{Caller, input};
use crate::bot::dialogue::Step;
use crate::bot::{BotCtx, BotError, ChatDialogue, TgBot};
use crate::jobs::NewJob;
use crate::store::records::JobPayload;
use std::sync::Arc;
use teloxide::prelude::*;

/// The menu button: start the flow by asking for a photo.
pub async fn start(bot: &TgBot, dialogue: &ChatDialogue, me: &Caller) -> Result<(), BotError> {
    dialogue.update(Step::AddTextPhoto).await?;
    bot.send_message(dialogue.chat_id(), me.lang.t("add_text_send_photo")).await?;
    Ok(())
}

/// "📝 Add text" pressed under a photo already received: that photo, and the text is next.
pub async fn with_photo(bot: &TgBot, dialogue: &ChatDialogue, me: &Caller, input: String) -> Result<(), BotError> {
    dialogue.update(Step::AddTextText { input }).await?;
    bot.send_message(dialogue.chat_id(), me.lang.t("add_text_send_text")).await?;
    Ok(())
}

/// Waiting for the photo. A caption on it is the text: one step fewer.
pub async fn on_photo(
    bot: TgBot,
    msg: Message,
    ctx: Arc<BotCtx>,
    me: Caller,
    dialogue: ChatDialogue,
) -> Result<(), BotError> {
    if input::image_file(&msg).is_none() {
        bot.send_message(msg.chat.id, me.lang.t("add_text_need_photo")).await?;
        return Ok(());
    }
    let Some(info) = input::image_of(&bot, &msg, &ctx, &me).await? else { return Ok(()) };
    match input::instruction(msg.caption()) {
        Some(caption) => ask_wishes(&bot, &dialogue, &me, info.sha256, caption).await,
        None => {
            dialogue.update(Step::AddTextText { input: info.sha256 }).await?;
            bot.send_message(msg.chat.id, me.lang.t("add_text_send_text")).await?;
            Ok(())
        }
    }
}

/// Waiting for the text to draw.
pub async fn on_text(
    bot: TgBot,
    msg: Message,
    me: Caller,
    dialogue: ChatDialogue,
    input: String,
) -> Result<(), BotError> {
    match input::instruction(msg.text()) {
        Some(text) => ask_wishes(&bot, &dialogue, &me, input, text).await,
        None => {
            bot.send_message(msg.chat.id, me.lang.t("add_text_need_text")).await?;
            Ok(())
        }
    }
}

/// Waiting for style wishes (`/skip` arrives as a command and ends in [`finish`] too).
pub async fn on_wishes(
    bot: TgBot,
    msg: Message,
    ctx: Arc<BotCtx>,
    me: Caller,
    dialogue: ChatDialogue,
    (input, text): (String, String),
) -> Result<(), BotError> {
    let Some(wishes) = msg.text().map(str::trim) else {
        bot.send_message(msg.chat.id, me.lang.t("add_text_send_wishes")).await?;
        return Ok(());
    };
    finish(&bot, &ctx, &me, &dialogue, input, text, wishes.to_string()).await
}

async fn ask_wishes(
    bot: &TgBot,
    dialogue: &ChatDialogue,
    me: &Caller,
    input: String,
    text: String,
) -> Result<(), BotError> {
    dialogue.update(Step::AddTextWishes { input, text }).await?;
    bot.send_message(dialogue.chat_id(), me.lang.t("add_text_send_wishes")).await?;
    Ok(())
}

/// Leaves the flow and creates the job (hold at `billing.add_text_price` + job in one
/// transaction) with a progress message that the worker edits to "done". Empty `wishes` is
/// the default style.
pub async fn finish(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    dialogue: &ChatDialogue,
    input: String,
    text: String,
    wishes: String,
) -> Result<(), BotError> {
    let (lang, chat) = (me.lang, dialogue.chat_id());
    let unknown = crate::imaging::parse_wishes(&wishes).unknown;
    if !unknown.is_empty() {
        bot.send_message(chat, lang.tf("add_text_unknown", &[("words", &unknown.join(", "))])).await?;
    }
    dialogue.exit().await?;
    let user = me.id();
    let payload = JobPayload::AddText { input, text, wishes };
    let name = lang.t("add_text_name");
    let eta = ctx.jobs.eta_for_tool(crate::domain::ADD_TEXT_MODEL).await;
    super::library::submit_with_progress(bot, chat, ctx, me, (&name, eta), |to| async move {
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
