//! Create flow: a text (or a photo with a caption) becomes a draft; model and format buttons
//! follow; the format press creates the job and turns that message into the progress message.

use super::touch_user;
use crate::bot::i18n::Lang;
use crate::bot::{BotCtx, BotError, TgBot, keyboards, prompt};
use crate::config::ModelConfig;
use crate::domain::{Format, Task, UserId, now_ms};
use crate::jobs::{NewJob, Submitted};
use crate::store::records::{Draft, JobPayload};
use std::sync::Arc;
use teloxide::net::Download;
use teloxide::prelude::*;
use teloxide::types::MessageId;

/// Bot API cloud limit for getFile downloads (protocols.md §1.4).
const MAX_DOWNLOAD: u32 = 20 * 1024 * 1024;

pub async fn on_message(bot: TgBot, msg: Message, ctx: Arc<BotCtx>) -> Result<(), BotError> {
    let Some(user) = msg.from.as_ref() else { return Ok(()) };
    let (_, _, lang) = touch_user(&ctx, user).await?;
    if let Some(step) = crate::bot::dialogue::current(&ctx, msg.chat.id).await? {
        use crate::bot::dialogue::Step;
        return match step {
            Step::AddTextPhoto | Step::AddTextText { .. } | Step::AddTextWishes { .. } => {
                super::add_text::on_message(&bot, &msg, &ctx, lang, step).await
            }
            other => super::library::on_step(&bot, &msg, &ctx, lang, other).await,
        };
    }
    if let Some((file_id, size)) = image_file(&msg) {
        return on_image(&bot, &msg, &ctx, lang, file_id, size).await;
    }
    match msg.text() {
        Some(text) => on_text(&bot, &msg, &ctx, lang, text).await,
        None => {
            bot.send_message(msg.chat.id, lang.t("not_text")).await?;
            Ok(())
        }
    }
}

fn models_for(ctx: &BotCtx, task: Task) -> Vec<ModelConfig> {
    ctx.jobs.models(&ctx.config).into_iter().filter(|m| m.task == task).collect()
}

async fn on_text(bot: &TgBot, msg: &Message, ctx: &BotCtx, lang: Lang, text: &str) -> Result<(), BotError> {
    let spec = prompt::parse(text);
    if spec.prompt.is_empty() {
        bot.send_message(msg.chat.id, lang.t("create_hint")).await?;
        return Ok(());
    }
    if let Some(bad) = &spec.bad_size {
        bot.send_message(msg.chat.id, lang.tf("bad_size", &[("size", bad)])).await?;
        return Ok(());
    }
    if !spec.unknown.is_empty() {
        bot.send_message(msg.chat.id, lang.tf("unknown_options", &[("parts", &spec.unknown.join(" | "))])).await?;
    }
    let models = models_for(ctx, Task::TextToImage);
    let size = spec.size.or_else(|| spec.aspect_ratio.as_deref().and_then(prompt::size_for_ratio));
    let draft = Draft {
        id: draft_id_for(msg),
        user_id: UserId(msg.from.as_ref().map(|u| u.id.0 as i64).unwrap_or(msg.chat.id.0)),
        chat_id: msg.chat.id.0,
        prompt: spec.prompt.clone(),
        negative: spec.negative.clone(),
        model_id: None,
        size,
        aspect_ratio: spec.aspect_ratio.clone(),
        inputs: vec![],
        created_at: now_ms(),
        job_id: None,
    };
    offer(bot, msg.chat.id, ctx, lang, draft, models, spec.model.as_deref()).await
}

/// The draft id of a message: chat id in the high 64 bits, message id in the low ones.
///
/// Derived rather than random so a message handled twice (Telegram re-delivers an update whose
/// handler was cut off by a crash) rebuilds the same draft, and the draft's consumed marker
/// (`Draft::job_id`) makes the second job submission a duplicate instead of a second charge.
/// Ownership is still checked on every button press, so a guessable id grants nothing.
pub fn draft_id_for(msg: &Message) -> u128 {
    ((msg.chat.id.0 as u64 as u128) << 64) | (msg.id.0 as u32 as u128)
}

/// Stores the draft and shows the next step: model buttons, format buttons, or (when model and
/// size are already known) the job itself.
async fn offer(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    lang: Lang,
    mut draft: Draft,
    models: Vec<ModelConfig>,
    wanted: Option<&str>,
) -> Result<(), BotError> {
    if models.is_empty() {
        bot.send_message(chat, lang.t("no_models")).await?;
        return Ok(());
    }
    let presets = ctx.jobs.presets(draft.user_id).await?;
    let chosen = match wanted {
        Some(name) => {
            let found = ctx.config.find_model(name).filter(|m| models.iter().any(|x| x.id == m.id)).cloned();
            if found.is_none() {
                ctx.jobs.put_draft(draft.clone()).await?;
                bot.send_message(chat, lang.tf("unknown_model", &[("model", &name)]))
                    .reply_markup(keyboards::models(draft.id, &models, &presets, ctx.billing.currency()))
                    .await?;
                return Ok(());
            }
            found
        }
        // A user with presets always sees the list: the presets sit beside the models.
        None if models.len() == 1 && presets.is_empty() => models.first().cloned(),
        None => None,
    };
    let Some(model) = chosen else {
        ctx.jobs.put_draft(draft.clone()).await?;
        let text = lang.tf("choose_model", &[("prompt", &draft.prompt)]);
        let kb = keyboards::models(draft.id, &models, &presets, ctx.billing.currency());
        bot.send_message(chat, text).reply_markup(kb).await?;
        return Ok(());
    };
    draft.model_id = Some(model.id.clone());
    ctx.jobs.put_draft(draft.clone()).await?;
    if draft.size.is_some() || model.formats.len() == 1 {
        let format = draft.size.map(|(w, h)| Format::from_dims(w, h)).unwrap_or(model.formats[0]);
        start_job(bot, chat, ctx, lang, &draft, &model, format, None).await?;
        return Ok(());
    }
    show_formats(bot, chat, ctx, lang, &draft, &model, None).await
}

/// Shows format buttons, editing `edit` if given.
pub async fn show_formats(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    lang: Lang,
    draft: &Draft,
    model: &ModelConfig,
    edit: Option<MessageId>,
) -> Result<(), BotError> {
    let text = lang.tf(
        "choose_format",
        &[("model", &model.display_name), ("price", &model.price), ("currency", &ctx.billing.currency())],
    );
    let kb = keyboards::formats(lang, draft.id, model);
    match edit {
        Some(id) => bot.edit_message_text(chat, id, text).reply_markup(kb).await.map(|_| ())?,
        None => bot.send_message(chat, text).reply_markup(kb).await.map(|_| ())?,
    }
    Ok(())
}

/// Creates the job (hold + job in one transaction) and turns `edit` (or a new message) into
/// its progress message. Returns the outcome so a repeated press can be answered.
#[allow(clippy::too_many_arguments)]
pub async fn start_job(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    lang: Lang,
    draft: &Draft,
    model: &ModelConfig,
    format: Format,
    edit: Option<MessageId>,
) -> Result<Submitted, BotError> {
    // A re-handled message whose draft already became a job: say nothing more.
    if let Some(existing) = ctx.jobs.get_draft(draft.id).await?.and_then(|d| d.job_id) {
        return Ok(Submitted::Duplicate(existing));
    }
    let (width, height) = draft.size.unwrap_or_else(|| format.default_size());
    // The progress message exists (showing "queued") before the job does, so the worker always
    // knows its id and nothing here can overwrite the worker's later edits.
    let eta = ctx.jobs.eta_for(&model.id, format).await;
    let queued = lang.tf("queued", &[("position", &1), ("model", &model.display_name), ("eta", &eta)]);
    let cancel = keyboards::cancel(lang, draft.id);
    let progress = match edit {
        Some(id) => {
            bot.edit_message_text(chat, id, queued).reply_markup(cancel).await?;
            id
        }
        None => bot.send_message(chat, queued).reply_markup(cancel).await?.id,
    };
    let payload = JobPayload::Generate {
        prompt: draft.prompt.clone(),
        negative: draft.negative.clone(),
        format,
        width,
        height,
        aspect_ratio: draft.aspect_ratio.clone(),
        seed: rand::random::<u32>() as u64,
        inputs: draft.inputs.clone(),
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
    if let Submitted::InsufficientFunds { balance, price } = &outcome {
        let currency = ctx.billing.currency().to_string();
        let text = lang.tf("insufficient", &[("balance", balance), ("price", price), ("currency", &currency)]);
        bot.edit_message_text(chat, progress, text).await?;
    }
    Ok(outcome)
}

/// The largest photo size or an image document of `msg`: (file id, size in bytes).
pub(super) fn image_file(msg: &Message) -> Option<(teloxide::types::FileId, u32)> {
    if let Some(largest) = msg.photo().and_then(|sizes| sizes.iter().max_by_key(|p| p.width * p.height)) {
        return Some((largest.file.id.clone(), largest.file.size));
    }
    msg.document()
        .filter(|doc| doc.mime_type.as_ref().is_some_and(|m| m.type_() == mime::IMAGE))
        .map(|doc| (doc.file.id.clone(), doc.file.size))
}

/// Downloads a user's image and stores it as a job input (metadata stripped). When the image
/// is refused, tells the user why and returns `None`.
pub(super) async fn download_input(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    lang: Lang,
    file_id: teloxide::types::FileId,
    size: u32,
) -> Result<Option<crate::jobs::InputInfo>, BotError> {
    if size > MAX_DOWNLOAD {
        bot.send_message(chat, lang.tf("photo_too_big", &[("detail", &format!("{} MB", size / 1_048_576))])).await?;
        return Ok(None);
    }
    let file = bot.get_file(file_id).await?;
    let mut bytes = Vec::with_capacity(file.size as usize);
    bot.download_file(&file.path, &mut bytes).await?;
    match ctx.jobs.accept_input(bytes).await {
        Ok(info) => Ok(Some(info)),
        Err(crate::jobs::InputError::Imaging(e)) => {
            let text = match &e {
                crate::imaging::ImagingError::TooLarge { .. } | crate::imaging::ImagingError::TooManyPixels { .. } => {
                    lang.tf("photo_too_big", &[("detail", &e)])
                }
                _ => lang.tf("photo_bad", &[("reason", &e)]),
            };
            bot.send_message(chat, text).await?;
            Ok(None)
        }
        Err(crate::jobs::InputError::Store(e)) => Err(e.into()),
    }
}

async fn on_image(
    bot: &TgBot,
    msg: &Message,
    ctx: &BotCtx,
    lang: Lang,
    file_id: teloxide::types::FileId,
    size: u32,
) -> Result<(), BotError> {
    let Some(info) = download_input(bot, msg.chat.id, ctx, lang, file_id, size).await? else { return Ok(()) };
    let dims: [(&str, &(dyn std::fmt::Display + Sync)); 2] = [("width", &info.width), ("height", &info.height)];
    let models = models_for(ctx, Task::Edit);
    if models.is_empty() {
        bot.send_message(msg.chat.id, lang.tf("photo_no_edit_models", &dims)).await?;
        return Ok(());
    }
    let Some(caption) = msg.caption().map(str::trim).filter(|c| !c.is_empty()) else {
        bot.send_message(msg.chat.id, lang.tf("photo_need_caption", &dims)).await?;
        return Ok(());
    };
    let spec = prompt::parse(caption);
    let draft = Draft {
        id: draft_id_for(msg),
        user_id: UserId(msg.from.as_ref().map(|u| u.id.0 as i64).unwrap_or(msg.chat.id.0)),
        chat_id: msg.chat.id.0,
        prompt: spec.prompt,
        negative: spec.negative,
        model_id: None,
        size: Some((info.width, info.height)),
        aspect_ratio: None,
        inputs: vec![info.sha256],
        created_at: now_ms(),
        job_id: None,
    };
    bot.send_message(msg.chat.id, lang.tf("photo_received", &dims)).await?;
    offer(bot, msg.chat.id, ctx, lang, draft, models, spec.model.as_deref()).await
}
