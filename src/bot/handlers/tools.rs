//! Photo modes ("🧰 Фото-инструменты"): upscale, remove background, retouch, face swap,
//! variations, style transfer, sketch, and "🧬 From references". Each is a task whose models
//! declare their inputs; the flow asks for exactly those: the photos in the task's slot order
//! ([`Task::slots`]: the face first, then the photo to change), the instruction where the task
//! takes one, then the model — and ends in the create flow's steps ([`generate::offer`]).
//!
//! "From references" ([`Task::Reference`]) asks first what the photos show ([`Subject`]), then
//! for 1–4 photos, then a prompt whose `[1]`…`[4]` markers name the photos: a marker beyond
//! the photos received is refused and the prompt asked again. The subject reaches the
//! provider as an English phrase leading the prompt ([`Subject::prompt`]).
//!
//! The photos gathered so far live in the chat's step ([`Step::Tool`]), so a restart between
//! two photos loses nothing. An album is one set, answered once after its last photo.

use super::generate::{self, Reply, draft_id};
use super::{Caller, input};
use crate::bot::dialogue::Step;
use crate::bot::{BotCtx, BotError, ChatDialogue, TgBot, keyboards};
use crate::domain::{Format, Instruction, Subject, Task};
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
    dialogue.update(Step::Tool { task, inputs: inputs.clone(), caption: None, subject: None }).await?;
    let set = Set { task, inputs, caption: None, subject: None };
    next(bot, ctx, me, dialogue, set, pressed, Some(intro)).await
}

/// The subject type pressed in "🧬 From references": recorded in the step, then the photos
/// (or the prompt) are asked for. `false` when no such mode is open (an old keyboard).
pub async fn subject(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    dialogue: &ChatDialogue,
    subject: Subject,
    pressed: MessageId,
) -> Result<bool, BotError> {
    let Step::Tool { task: task @ Task::Reference, inputs, caption, .. } =
        ctx.dialogues.step(dialogue.chat_id()).await?
    else {
        return Ok(false);
    };
    let set = Set { task, inputs, caption, subject: Some(subject) };
    dialogue.update(set.step()).await?;
    // The question is answered: its buttons go.
    let _ = bot.edit_message_reply_markup(dialogue.chat_id(), pressed).await;
    next(bot, ctx, me, dialogue, set, pressed, None).await?;
    Ok(true)
}

/// What a photo mode has gathered: the chat's [`Step::Tool`] in parts.
#[derive(Clone)]
struct Set {
    task: Task,
    inputs: Vec<String>,
    caption: Option<String>,
    subject: Option<Subject>,
}

impl Set {
    fn step(&self) -> Step {
        Step::Tool {
            task: self.task,
            inputs: self.inputs.clone(),
            caption: self.caption.clone(),
            subject: self.subject,
        }
    }

    /// Whether the mode still needs its subject type picked.
    fn needs_subject(&self) -> bool {
        self.task == Task::Reference && self.subject.is_none()
    }
}

/// A message while a photo mode waits: a photo joins the set (albums answered once); a text
/// is the instruction once the photos are in; anything else is asked for again.
pub async fn on_message(
    bot: TgBot,
    msg: Message,
    ctx: Arc<BotCtx>,
    me: Caller,
    dialogue: ChatDialogue,
    (task, inputs, caption, subject): (Task, Vec<String>, Option<String>, Option<Subject>),
) -> Result<(), BotError> {
    let mut set = Set { task, inputs, caption, subject };
    if input::image_file(&msg).is_some() {
        let Some(info) = input::image_of(&bot, &msg, &ctx, &me).await? else { return Ok(()) };
        set.inputs.push(info.sha256);
        set.caption = set.caption.or_else(|| input::instruction(msg.caption()));
        dialogue.update(set.step()).await?;
        if msg.media_group_id().is_none() {
            return next(&bot, &ctx, &me, &dialogue, set, msg.id, None).await;
        }
        let (bot, ctx2, me, dialogue, mid) = (bot.clone(), ctx.clone(), me.clone(), dialogue.clone(), msg.id);
        input::after_album(ctx.clone(), dialogue.chat_id(), set.inputs.len(), move |inputs, caption| async move {
            next(&bot, &ctx2, &me, &dialogue, Set { task, inputs, caption, subject }, mid, None).await
        });
        return Ok(());
    }
    match input::instruction(msg.text()) {
        Some(text) if task.instruction() != Instruction::None && enough(&ctx, task, set.inputs.len()) => {
            set.caption = Some(text);
            dialogue.update(set.step()).await?;
            next(&bot, &ctx, &me, &dialogue, set, msg.id, None).await
        }
        _ => ask(&bot, &ctx, &me, &dialogue, &set, None).await,
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
        Step::Tool { task, inputs, caption: None, subject }
            if task.instruction() == Instruction::Optional && enough(ctx, task, inputs.len()) =>
        {
            let set = Set { task, inputs, caption: Some(String::new()), subject };
            dialogue.update(set.step()).await?;
            next(bot, ctx, me, dialogue, set, pressed, None).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Whether `count` photos are enough for some model of `task`.
fn enough(ctx: &BotCtx, task: Task, count: usize) -> bool {
    ctx.catalog.for_task(task).iter().any(|m| count >= usize::from(m.image_range().0))
}

/// Asks for the subject type (references), the next photo (by its role) or the instruction,
/// with Cancel (and Skip where the instruction is optional). `intro` leads the message when
/// given.
async fn ask(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    dialogue: &ChatDialogue,
    set: &Set,
    intro: Option<String>,
) -> Result<(), BotError> {
    let (lang, task, inputs) = (me.lang, set.task, &set.inputs);
    let (text, kb) = if set.needs_subject() {
        (lang.t("reference_subject"), keyboards::subjects(lang))
    } else if enough(ctx, task, inputs.len()) {
        match task.instruction() {
            Instruction::Optional => (lang.t(&format!("tool_{}_text", task.as_str())), keyboards::skip_or_cancel(lang)),
            _ => (lang.t(&format!("tool_{}_text", task.as_str())), keyboards::flow_cancel(lang)),
        }
    } else {
        let need = ctx.catalog.for_task(task).iter().map(|m| usize::from(m.image_range().0)).min().unwrap_or(1);
        let what = match task {
            Task::Reference => lang.t("reference_photos"),
            _ => lang.t(task.slot(inputs.len()).key()),
        };
        let text = if need > 1 {
            lang.tf("tool_send_nth", &[("what", &what), ("n", &(inputs.len() + 1)), ("of", &need)])
        } else {
            what
        };
        (text, keyboards::flow_cancel(lang))
    };
    input::ask(bot, dialogue.chat_id(), intro, text, kb).await
}

/// With the subject type (references), the photos and the instruction (where the task takes
/// one) all in: ends the step, makes the draft and offers the models that take this many
/// photos. Otherwise asks for the rest. More photos than any model takes: says so and keeps
/// the first ones. A reference prompt naming a photo beyond those received (`[5]` with two):
/// says so and asks for the prompt again.
async fn next(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    dialogue: &ChatDialogue,
    mut set: Set,
    last: MessageId,
    intro: Option<String>,
) -> Result<(), BotError> {
    let (lang, chat, task) = (me.lang, dialogue.chat_id(), set.task);
    // A caption on a photo is no prompt for a mode that takes none (an upscale of a photo
    // captioned "me at the sea" must not send that text).
    set.caption = set.caption.filter(|_| task.instruction() != Instruction::None);
    let models = ctx.catalog.for_task(task);
    let Some(most) = models.iter().map(|m| usize::from(m.image_range().1)).max() else {
        dialogue.exit().await?;
        bot.send_message(chat, lang.t("no_models")).await?;
        return Ok(());
    };
    if set.inputs.len() > most {
        set.inputs.truncate(most);
        dialogue.update(set.step()).await?;
        bot.send_message(chat, lang.tf("photos_too_many", &[("count", &lang.counted(most as i64, "photos"))])).await?;
    }
    if set.needs_subject() {
        return ask(bot, ctx, me, dialogue, &set, intro).await;
    }
    let wants_text = task.instruction() != Instruction::None;
    if !enough(ctx, task, set.inputs.len()) || (wants_text && set.caption.is_none()) {
        return ask(bot, ctx, me, dialogue, &set, intro).await;
    }
    if task.instruction() == Instruction::Required && set.caption.as_deref().is_none_or(|c| c.trim().is_empty()) {
        return ask(bot, ctx, me, dialogue, &set, intro).await;
    }
    if task == Task::Reference {
        let count = set.inputs.len();
        let markers = crate::domain::reference_markers(set.caption.as_deref().unwrap_or_default());
        if let Some(bad) = markers.into_iter().find(|n| *n == 0 || *n as usize > count) {
            set.caption = None;
            dialogue.update(set.step()).await?;
            let photos = lang.counted(count as i64, "photos");
            bot.send_message(
                chat,
                lang.tf(
                    "reference_marker_beyond",
                    &[("marker", &format!("[{bad}]")), ("count", &photos), ("max", &count)],
                ),
            )
            .await?;
            return ask(bot, ctx, me, dialogue, &set, None).await;
        }
    }
    let fitting: Vec<_> = models.into_iter().filter(|m| m.takes_images(set.inputs.len())).collect();
    if fitting.is_empty() {
        return ask(bot, ctx, me, dialogue, &set, intro).await;
    }
    dialogue.exit().await?;
    let Set { inputs, caption, subject, .. } = set;
    let mut spec = crate::bot::prompt::parse(caption.as_deref().unwrap_or_default());
    if let Some(subject) = subject.filter(|_| task == Task::Reference) {
        spec.prompt = subject.prompt(&spec.prompt);
    }
    // A tool changes the photo it gets: the result keeps the (first) photo's size, so no
    // format is asked. A sketch is redrawn: its format is asked like a new picture's.
    let size = match task.keeps_size() {
        true => ctx.jobs.input_size(&inputs[0]).await,
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
