//! Photo modes ("🧰 Фото-инструменты"): upscale, remove background, retouch, face swap,
//! variations, style transfer, sketch. Each is a task whose models declare their inputs; the
//! flow asks for exactly those: the photos in the task's slot order ([`Task::slots`]: the face
//! first, then the photo to change), the instruction where the task takes one, then the model
//! — and ends in the create flow's steps ([`generate::offer`]).
//!
//! The photos gathered so far live in the chat's step ([`Step::Tool`]), so a restart between
//! two photos loses nothing. An album is one set, answered once after its last photo.

use super::generate::{self, Reply, draft_id};
use super::{Caller, input};
use crate::bot::dialogue::Step;
use crate::bot::{BotCtx, BotError, ChatDialogue, TgBot, keyboards};
use crate::domain::{Format, Instruction, Task};
use crate::store::records::Draft;
use std::sync::Arc;
use teloxide::prelude::*;
use teloxide::types::MessageId;

/// The photo modes a user can open now: those with a usable model, in menu order.
pub fn available(ctx: &BotCtx) -> Vec<Task> {
    Task::TOOLS.into_iter().filter(|t| !ctx.catalog.for_task(*t).is_empty()).collect()
}

/// "🧰 Photo tools": the modes as buttons, or why there are none.
pub async fn menu(bot: &TgBot, chat: ChatId, ctx: &BotCtx, me: &Caller) -> Result<(), BotError> {
    let tasks = available(ctx);
    if tasks.is_empty() {
        bot.send_message(chat, me.lang.t("no_models")).await?;
    } else {
        bot.send_message(chat, me.lang.t("tools_choose")).reply_markup(keyboards::tools(me.lang, &tasks)).await?;
    }
    Ok(())
}

/// Opens `task` with `inputs` already given (none from the menu; a received photo or a
/// library item otherwise), and asks for what is still missing.
pub async fn start(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    dialogue: &ChatDialogue,
    task: Task,
    inputs: Vec<String>,
    pressed: MessageId,
) -> Result<(), BotError> {
    if ctx.catalog.for_task(task).is_empty() {
        dialogue.exit().await?;
        bot.send_message(dialogue.chat_id(), me.lang.t("no_models")).await?;
        return Ok(());
    }
    let intro = me.lang.t(&format!("tool_{}_intro", task.as_str()));
    dialogue.update(Step::Tool { task, inputs: inputs.clone(), caption: None }).await?;
    next(bot, ctx, me, dialogue, task, inputs, None, pressed, Some(intro)).await
}

/// A message while a photo mode waits: a photo joins the set (albums answered once); a text
/// is the instruction once the photos are in; anything else is asked for again.
pub async fn on_message(
    bot: TgBot,
    msg: Message,
    ctx: Arc<BotCtx>,
    me: Caller,
    dialogue: ChatDialogue,
    (task, mut inputs, caption): (Task, Vec<String>, Option<String>),
) -> Result<(), BotError> {
    if input::image_file(&msg).is_some() {
        let Some(info) = input::image_of(&bot, &msg, &ctx, &me).await? else { return Ok(()) };
        inputs.push(info.sha256);
        let caption = caption.or_else(|| input::instruction(msg.caption()));
        dialogue.update(Step::Tool { task, inputs: inputs.clone(), caption: caption.clone() }).await?;
        if msg.media_group_id().is_none() {
            return next(&bot, &ctx, &me, &dialogue, task, inputs, caption, msg.id, None).await;
        }
        let (bot, ctx2, me, dialogue, mid) = (bot.clone(), ctx.clone(), me.clone(), dialogue.clone(), msg.id);
        input::after_album(ctx.clone(), dialogue.chat_id(), inputs.len(), move |inputs, caption| async move {
            next(&bot, &ctx2, &me, &dialogue, task, inputs, caption, mid, None).await
        });
        return Ok(());
    }
    match input::instruction(msg.text()) {
        Some(text) if task.instruction() != Instruction::None && enough(&ctx, task, inputs.len()) => {
            dialogue.update(Step::Tool { task, inputs: inputs.clone(), caption: Some(text.clone()) }).await?;
            next(&bot, &ctx, &me, &dialogue, task, inputs, Some(text), msg.id, None).await
        }
        _ => ask(&bot, &ctx, &me, &dialogue, task, &inputs, None).await,
    }
}

/// "⏭ Skip" (or /skip) at an optional instruction: the job runs with the model's own.
pub async fn skip(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    dialogue: &ChatDialogue,
    pressed: MessageId,
) -> Result<bool, BotError> {
    match ctx.dialogues.step(dialogue.chat_id()).await? {
        Step::Tool { task, inputs, caption: None }
            if task.instruction() == Instruction::Optional && enough(ctx, task, inputs.len()) =>
        {
            let skipped = Some(String::new());
            dialogue.update(Step::Tool { task, inputs: inputs.clone(), caption: skipped.clone() }).await?;
            next(bot, ctx, me, dialogue, task, inputs, skipped, pressed, None).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Whether `count` photos are enough for some model of `task`.
fn enough(ctx: &BotCtx, task: Task, count: usize) -> bool {
    ctx.catalog.for_task(task).iter().any(|m| count >= usize::from(m.image_range().0))
}

/// Asks for the next photo (by its role) or the instruction, with Cancel (and Skip where the
/// instruction is optional). `intro` leads the message when given.
async fn ask(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    dialogue: &ChatDialogue,
    task: Task,
    inputs: &[String],
    intro: Option<String>,
) -> Result<(), BotError> {
    let lang = me.lang;
    let (text, kb) = if enough(ctx, task, inputs.len()) {
        match task.instruction() {
            Instruction::Optional => (lang.t(&format!("tool_{}_text", task.as_str())), keyboards::skip_or_cancel(lang)),
            _ => (lang.t(&format!("tool_{}_text", task.as_str())), keyboards::flow_cancel(lang)),
        }
    } else {
        let need = ctx.catalog.for_task(task).iter().map(|m| usize::from(m.image_range().0)).min().unwrap_or(1);
        let what = lang.t(task.slot(inputs.len()).key());
        let text = if need > 1 {
            lang.tf("tool_send_nth", &[("what", &what), ("n", &(inputs.len() + 1)), ("of", &need)])
        } else {
            what
        };
        (text, keyboards::flow_cancel(lang))
    };
    let text = match intro {
        Some(intro) => format!("{intro}\n\n{text}"),
        None => text,
    };
    bot.send_message(dialogue.chat_id(), text).reply_markup(kb).await?;
    Ok(())
}

/// With the photos (and the instruction, where the task takes one) all in: ends the step,
/// makes the draft and offers the models that take this many photos. Otherwise asks for the
/// rest. More photos than any model takes: says so and keeps the first ones.
#[allow(clippy::too_many_arguments)]
async fn next(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    dialogue: &ChatDialogue,
    task: Task,
    mut inputs: Vec<String>,
    caption: Option<String>,
    last: MessageId,
    intro: Option<String>,
) -> Result<(), BotError> {
    let (lang, chat) = (me.lang, dialogue.chat_id());
    // A caption on a photo is no prompt for a mode that takes none (an upscale of a photo
    // captioned "me at the sea" must not send that text).
    let caption = caption.filter(|_| task.instruction() != Instruction::None);
    let models = ctx.catalog.for_task(task);
    let Some(most) = models.iter().map(|m| usize::from(m.image_range().1)).max() else {
        dialogue.exit().await?;
        bot.send_message(chat, lang.t("no_models")).await?;
        return Ok(());
    };
    if inputs.len() > most {
        inputs.truncate(most);
        dialogue.update(Step::Tool { task, inputs: inputs.clone(), caption: caption.clone() }).await?;
        bot.send_message(chat, lang.tf("photos_too_many", &[("count", &lang.counted(most as i64, "photos"))])).await?;
    }
    let wants_text = task.instruction() != Instruction::None;
    if !enough(ctx, task, inputs.len()) || (wants_text && caption.is_none()) {
        return ask(bot, ctx, me, dialogue, task, &inputs, intro).await;
    }
    if task.instruction() == Instruction::Required && caption.as_deref().is_none_or(|c| c.trim().is_empty()) {
        return ask(bot, ctx, me, dialogue, task, &inputs, intro).await;
    }
    let fitting: Vec<_> = models.into_iter().filter(|m| m.takes_images(inputs.len())).collect();
    if fitting.is_empty() {
        return ask(bot, ctx, me, dialogue, task, &inputs, intro).await;
    }
    dialogue.exit().await?;
    let spec = crate::bot::prompt::parse(caption.as_deref().unwrap_or_default());
    // A tool changes the photo it gets: the result keeps the (first) photo's size, so no
    // format is asked. A sketch is redrawn: its format is asked like a new picture's.
    let size = match task.keeps_size() {
        true => input_size(ctx, &inputs[0]).await,
        false => None,
    };
    let draft = Draft {
        size,
        format: task.keeps_size().then_some(Format::Square).filter(|_| size.is_none()),
        ..Draft::new(draft_id(chat, last), (me.id(), chat.0), (spec.prompt, spec.negative), inputs)
    };
    let received = lang.tf("tool_ready", &[("tool", &lang.t(&format!("tool_{}", task.as_str())))]);
    generate::offer(bot, chat, ctx, me, draft, fitting, spec.model.as_deref(), Reply::New(Some(received))).await
}

/// Width and height of a stored input photo (the provider's size for a tool that keeps it).
pub(super) async fn input_size(ctx: &BotCtx, sha256: &str) -> Option<(u32, u32)> {
    let (store, sha) = (ctx.store.clone(), sha256.to_string());
    tokio::task::spawn_blocking(move || {
        let (path, _) = store.find_media_file(&sha)?;
        let bytes = std::fs::read(path).ok()?;
        crate::imaging::probe(&bytes).ok().map(|i| (i.width, i.height))
    })
    .await
    .ok()
    .flatten()
}
