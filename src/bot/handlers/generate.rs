//! Create flow: a text becomes a draft; then the bot asks for exactly what the chosen model
//! declares — the model (unless one fits), the format (when it has several), each option with
//! several values — and the last answer creates the job and turns that message into the
//! progress message. The edit flow (`edit`) ends in the same steps with its photos as inputs.

use super::{Caller, edit, input};
use crate::bot::{BotCtx, BotError, ChatDialogue, TgBot, keyboards, prompt};
use crate::config::ModelConfig;
use crate::domain::{Format, Task};
use crate::jobs::{NewJob, Submitted};
use crate::store::records::{Draft, JobPayload};
use std::sync::Arc;
use teloxide::prelude::*;
use teloxide::types::MessageId;

/// A message in no flow: a photo starts an edit, a text is a prompt to create from.
pub async fn on_message(
    bot: TgBot,
    msg: Message,
    ctx: Arc<BotCtx>,
    me: Caller,
    dialogue: ChatDialogue,
) -> Result<(), BotError> {
    if input::image_file(&msg).is_some() {
        if ctx.config.video.photo_starts_quick && super::video::quick_available(&ctx) {
            return super::video::on_photo(&bot, &msg, &ctx, &me, &dialogue, (true, vec![], None)).await;
        }
        return edit::add_photo(&bot, &msg, &ctx, &me, &dialogue, vec![], None).await;
    }
    match msg.text() {
        Some(text) => on_text(&bot, &msg, &ctx, &me, text).await,
        None => {
            bot.send_message(msg.chat.id, me.lang.t("not_text")).await?;
            Ok(())
        }
    }
}

/// A prompt (with the extended syntax `| model=… | size=…`): a draft and the model buttons.
pub async fn on_text(bot: &TgBot, msg: &Message, ctx: &BotCtx, me: &Caller, text: &str) -> Result<(), BotError> {
    create(bot, msg.chat.id, msg.id, ctx, me, text).await
}

/// [`on_text`] for a prompt that came by `message` in `chat` (typed, or a written prompt's
/// button): the draft is keyed by that message.
pub async fn create(
    bot: &TgBot,
    chat: ChatId,
    message: MessageId,
    ctx: &BotCtx,
    me: &Caller,
    text: &str,
) -> Result<(), BotError> {
    let lang = me.lang;
    let spec = prompt::parse(text);
    if spec.prompt.is_empty() {
        bot.send_message(chat, lang.t("create_hint")).await?;
        return Ok(());
    }
    if let Some(bad) = &spec.bad_size {
        bot.send_message(chat, lang.tf("bad_size", &[("size", bad)])).await?;
        return Ok(());
    }
    if !spec.unknown.is_empty() {
        bot.send_message(chat, lang.tf("unknown_options", &[("parts", &spec.unknown.join(" | "))])).await?;
    }
    let models = ctx.catalog.for_task(Task::TextToImage);
    let size = spec.size.or_else(|| spec.aspect_ratio.as_deref().and_then(prompt::size_for_ratio));
    let draft = Draft {
        size,
        aspect_ratio: spec.aspect_ratio.clone(),
        ..Draft::new(draft_id(chat, message), (me.id(), chat.0), (spec.prompt.clone(), spec.negative.clone()), vec![])
    };
    offer(bot, chat, ctx, me, draft, models, spec.model.as_deref(), Reply::New(None)).await
}

/// The draft id of a message: chat id in the high 64 bits, message id in the low ones.
///
/// Derived rather than random so a message handled twice (Telegram re-delivers an update whose
/// handler was cut off by a crash) rebuilds the same draft, and the draft's consumed marker
/// (`Draft::job_id`) makes the second job submission a duplicate instead of a second charge.
/// Ownership is still checked on every button press, so a guessable id grants nothing.
pub fn draft_id(chat: ChatId, message: MessageId) -> u128 {
    ((chat.0 as u64 as u128) << 64) | (message.0 as u32 as u128)
}

/// Where the next step's message goes.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A new message, after this line when given (one message instead of two: Telegram paces a
    /// chat to about one message a second, so a second message would start the job late).
    New(Option<String>),
    /// An edit of the message whose button was pressed.
    Edit(MessageId),
}

impl Reply {
    fn text(&self, text: String) -> String {
        match self {
            Reply::New(Some(intro)) => format!("{intro}\n\n{text}"),
            _ => text,
        }
    }
}

/// Stores the draft and shows the next step: model buttons, or (when the model is already
/// known) what that model still needs.
#[allow(clippy::too_many_arguments)]
pub async fn offer(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    me: &Caller,
    mut draft: Draft,
    models: Vec<ModelConfig>,
    wanted: Option<&str>,
    reply: Reply,
) -> Result<(), BotError> {
    let lang = me.lang;
    if models.is_empty() {
        bot.send_message(chat, reply.text(lang.t("no_models"))).await?;
        return Ok(());
    }
    let presets = if draft.inputs.is_empty() { ctx.library.presets(draft.user_id).await? } else { vec![] };
    let price = |m: &ModelConfig| me.money(ctx, m.price);
    let chosen = match wanted {
        Some(name) => {
            let found = ctx.catalog.find(name).filter(|m| models.iter().any(|x| x.id == m.id));
            if found.is_none() {
                ctx.dialogues.put_draft(draft.clone()).await?;
                let text = reply.text(lang.tf("unknown_model", &[("model", &name)]));
                send_or_edit(bot, chat, &reply, text, keyboards::models(draft.id, &models, &presets, price)).await?;
                return Ok(());
            }
            found
        }
        // A user with presets always sees the list: the presets sit beside the models.
        None if models.len() == 1 && presets.is_empty() => models.first().cloned(),
        None => None,
    };
    let Some(model) = chosen else {
        ctx.dialogues.put_draft(draft.clone()).await?;
        let text = reply.text(lang.tf("choose_model", &[("prompt", &draft.prompt)]));
        let kb = keyboards::models(draft.id, &models, &presets, price);
        send_or_edit(bot, chat, &reply, text, kb).await?;
        return Ok(());
    };
    draft.model_id = Some(model.id.clone());
    advance(bot, chat, ctx, me, draft, &model, reply).await.map(|_| ())
}

/// Asks for the next thing `model` declares that the draft lacks — the format, then each
/// option with more than one value — or, when nothing is missing, starts the job, its
/// message going where `reply` says. Returns the job outcome when one was submitted.
pub async fn advance(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    me: &Caller,
    draft: Draft,
    model: &ModelConfig,
    reply: Reply,
) -> Result<Option<Submitted>, BotError> {
    let lang = me.lang;
    ctx.dialogues.put_draft(draft.clone()).await?;
    let format = match (draft.size, draft.format) {
        (Some((w, h)), _) => Format::from_dims(w, h),
        (None, Some(f)) => f,
        (None, None) if model.formats.len() == 1 => model.formats[0],
        (None, None) => {
            let price = ctx.catalog.quote(&model.id, &draft.options).unwrap_or(model.price);
            let text = lang.tf("choose_format", &[("model", &model.display_name), ("price", &me.money(ctx, price))]);
            send_or_edit(bot, chat, &reply, reply.text(text), keyboards::formats(lang, draft.id, model)).await?;
            return Ok(None);
        }
    };
    let pending = model.options.iter().position(|o| o.values.len() > 1 && !draft.options.contains_key(&o.name));
    if let Some(index) = pending {
        let option = &model.options[index];
        let title = match lang.t(&format!("option_{}", option.name)) {
            t if t.starts_with("option_") => option.name.clone(),
            t => t,
        };
        let text = lang.tf("choose_option", &[("option", &title), ("model", &model.display_name)]);
        let kb = keyboards::choices(draft.id, model, index, |c| me.money(ctx, c));
        send_or_edit(bot, chat, &reply, reply.text(text), kb).await?;
        return Ok(None);
    }
    if model.task.is_video() && !draft.confirmed {
        let (text, kb) = super::video::confirmation(ctx, me, &draft, model);
        send_or_edit(bot, chat, &reply, reply.text(text), kb).await?;
        return Ok(None);
    }
    start_job(bot, chat, ctx, me, &draft, model, format, reply).await.map(Some)
}

/// Sends `text` with `kb`, or edits the pressed message to them; returns the message id.
async fn send_or_edit(
    bot: &TgBot,
    chat: ChatId,
    reply: &Reply,
    text: String,
    kb: teloxide::types::InlineKeyboardMarkup,
) -> Result<MessageId, BotError> {
    Ok(match reply {
        Reply::Edit(id) => {
            bot.edit_message_text(chat, *id, text).reply_markup(kb).await?;
            *id
        }
        Reply::New(_) => bot.send_message(chat, text).reply_markup(kb).await?.id,
    })
}

/// Creates the job (hold + job in one transaction) with its progress message (the pressed
/// message edited, or a new one). Returns the outcome so a repeated press can be answered.
#[allow(clippy::too_many_arguments)]
pub async fn start_job(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    me: &Caller,
    draft: &Draft,
    model: &ModelConfig,
    format: Format,
    reply: Reply,
) -> Result<Submitted, BotError> {
    let lang = me.lang;
    // A re-handled message whose draft already became a job: say nothing more.
    if let Some(existing) = ctx.dialogues.draft(draft.id).await?.and_then(|d| d.job_id) {
        return Ok(Submitted::Duplicate(existing));
    }
    let (width, height) = draft.size.unwrap_or_else(|| format.default_size());
    // A clip's longer side is the quality chosen; it keeps the photo's (or format's) shape.
    let (width, height) = match model.task.is_video() {
        true => crate::jobs::video::VideoSettings::of(model, &draft.options).size((width, height)),
        false => (width, height),
    };
    // The progress message exists (showing "queued") before the job does, so the worker always
    // knows its id and nothing here can overwrite the worker's later edits.
    let eta = ctx.jobs.eta_for_choices(model, format, &draft.options).await;
    let queued = lang.tf("queued", &[("position", &1), ("model", &model.display_name), ("eta", &eta)]);
    let progress = send_or_edit(bot, chat, &reply, reply.text(queued), keyboards::cancel(lang, draft.id)).await?;
    let payload = JobPayload::Generate {
        prompt: draft.prompt.clone(),
        negative: draft.negative.clone(),
        format,
        width,
        height,
        aspect_ratio: draft.aspect_ratio.clone(),
        seed: rand::random::<u32>() as u64,
        inputs: draft.inputs.clone(),
        options: draft.options.clone(),
    };
    let outcome = ctx
        .jobs
        .submit(NewJob {
            user_id: draft.user_id,
            chat_id: chat.0,
            lang: lang.code().into(),
            model_id: model.id.clone(),
            payload,
            progress_message_id: Some(progress.0),
            draft_id: Some(draft.id),
            priority: ctx.jobs.is_admin(draft.user_id),
        })
        .await?;
    if matches!(outcome, Submitted::Queued { .. }) && !draft.inputs.is_empty() {
        edit::used(ctx, chat, &draft.inputs).await?;
    }
    if let Submitted::LevelRefused(r) = &outcome {
        let (text, markup) = super::levels::refusal(ctx, me, r);
        let mut req = bot.edit_message_text(chat, progress, text);
        if let Some(markup) = markup {
            req = req.reply_markup(markup);
        }
        req.await?;
    }
    if let Submitted::InsufficientFunds { balance, price } = &outcome {
        let text = lang.tf("insufficient", &[("balance", &me.money(ctx, *balance)), ("price", &me.money(ctx, *price))]);
        let mut req = bot.edit_message_text(chat, progress, text);
        if let Some(markup) = super::pay::top_up_button(ctx, lang) {
            req = req.reply_markup(markup);
        }
        req.await?;
    }
    Ok(outcome)
}
