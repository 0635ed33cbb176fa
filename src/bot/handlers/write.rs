//! "✍️ Write": a short idea → the language model (`[llm]`) writes a detailed image prompt →
//! the reply carries "🎨 Create with this prompt" and "✏️ Edit with this prompt". Writing is a
//! job like any other (held at `billing.write_price`, captured only when the prompt is
//! written, released on a failure or a timeout), so a restart loses nothing.

use super::{Caller, input};
use crate::bot::dialogue::Step;
use crate::bot::{BotCtx, BotError, ChatDialogue, TgBot, keyboards};
use crate::domain::JobId;
use crate::jobs::NewJob;
use crate::store::records::JobPayload;
use std::sync::Arc;
use teloxide::prelude::*;
use teloxide::types::MessageId;

/// Longest idea taken, characters: an idea is a line or two; the model writes the rest.
pub const MAX_IDEA_CHARS: usize = 1000;

/// `/write` or the menu button: asks for the idea (or says the mode is off).
pub async fn start(bot: &TgBot, ctx: &BotCtx, me: &Caller, dialogue: &ChatDialogue) -> Result<(), BotError> {
    if ctx.jobs.llm().is_none() {
        bot.send_message(dialogue.chat_id(), me.lang.t("write_unavailable")).await?;
        return Ok(());
    }
    dialogue.update(Step::Write).await?;
    let kb = keyboards::flow_cancel(me.lang);
    bot.send_message(dialogue.chat_id(), me.lang.t("write_ask")).reply_markup(kb).await?;
    Ok(())
}

/// The idea: the job that writes the prompt, with its progress message.
pub async fn on_idea(
    bot: TgBot,
    msg: Message,
    ctx: Arc<BotCtx>,
    me: Caller,
    dialogue: ChatDialogue,
) -> Result<(), BotError> {
    let lang = me.lang;
    let Some(idea) = input::instruction(msg.text()) else {
        bot.send_message(msg.chat.id, lang.t("write_ask")).reply_markup(keyboards::flow_cancel(lang)).await?;
        return Ok(());
    };
    if idea.chars().count() > MAX_IDEA_CHARS {
        bot.send_message(msg.chat.id, lang.tf("write_too_long", &[("max", &MAX_IDEA_CHARS)])).await?;
        return Ok(());
    }
    dialogue.exit().await?;
    let user = me.id();
    let payload = JobPayload::WritePrompt { idea, written: None };
    let name = lang.t("write_name");
    let eta = ctx.jobs.eta_for_tool(crate::domain::WRITE_MODEL).await;
    let jobs = ctx.jobs.clone();
    super::library::submit_with_progress(&bot, msg.chat.id, &ctx, &me, (&name, eta), |to| async move {
        jobs.submit(NewJob {
            user_id: user,
            chat_id: to.chat_id,
            lang: to.lang,
            model_id: crate::domain::WRITE_MODEL.into(),
            payload,
            progress_message_id: to.progress_message_id,
            draft_id: None,
            priority: jobs.is_admin(user),
        })
        .await
        .map(Some)
    })
    .await
}

/// "🎨 Create" / "✏️ Edit" under a written prompt: the pressing user's own written prompt
/// starts a create (model buttons, as if typed) or an edit that waits for its photos.
/// Returns the refusal to show for someone else's job or one without a prompt.
pub async fn use_written(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    (chat, pressed): (ChatId, MessageId),
    job: JobId,
    edit: bool,
) -> Result<Option<(String, bool)>, BotError> {
    let lang = me.lang;
    let Some(written) = ctx.jobs.written_prompt(me.id(), job).await? else {
        return Ok(Some((lang.t("not_yours"), true)));
    };
    if edit {
        let dialogue = ChatDialogue::new(ctx.dialogues.clone(), chat);
        dialogue.update(Step::Photos { inputs: vec![], caption: Some(written) }).await?;
        bot.send_message(chat, lang.t("write_edit_send_photos")).reply_markup(keyboards::flow_cancel(lang)).await?;
    } else {
        super::generate::create(bot, chat, pressed, ctx, me, &written).await?;
    }
    Ok(None)
}
