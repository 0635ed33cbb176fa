//! Video flows (seed 004's bot): "🎬 Create video" is a wizard — a photo (or, for a
//! `text_to_video` model, a description), an optional motion prompt, then exactly the options
//! the chosen model declares (duration, quality…), then a confirmation showing the price of that
//! combination before anything is held. "⚡ Quick mode" is one tap: a photo becomes a video at
//! once with the settings of `[video] quick` (10 s, medium quality by default). With
//! `[video] photo_starts_quick`, a photo sent outside any flow starts quick mode too.
//!
//! What has been gathered lives in the chat's step ([`Step::Video`]), so a restart between the
//! photo and the motion prompt loses nothing; after that the draft carries it (options,
//! confirmation), like every other job.

use super::generate::{self, Reply, draft_id};
use super::{Caller, input};
use crate::bot::dialogue::Step;
use crate::bot::{BotCtx, BotError, ChatDialogue, TgBot, keyboards};
use crate::config::{Choices, ModelConfig};
use crate::domain::{Format, Task};
use crate::jobs::video::VideoSettings;
use crate::store::records::Draft;
use std::sync::Arc;
use teloxide::prelude::*;
use teloxide::types::MessageId;

/// Usable models of a video task.
fn models(ctx: &BotCtx, task: Task) -> Vec<ModelConfig> {
    ctx.catalog.for_task(task)
}

/// Whether any video flow can run now (the main menu shows 🎬 and 📊 then).
pub fn available(ctx: &BotCtx) -> bool {
    !models(ctx, Task::ImageToVideo).is_empty() || !models(ctx, Task::TextToVideo).is_empty()
}

/// Whether ⚡ quick mode can run now (it needs an `image_to_video` model).
pub fn quick_available(ctx: &BotCtx) -> bool {
    quick_model(ctx).is_some()
}

/// The model ⚡ quick mode uses: `[video] quick_model` when usable, else the first usable
/// `image_to_video` model.
fn quick_model(ctx: &BotCtx) -> Option<ModelConfig> {
    let all = models(ctx, Task::ImageToVideo);
    let wanted = ctx.config.video.quick_model.as_deref();
    wanted.and_then(|id| all.iter().find(|m| m.id == id).cloned()).or_else(|| all.into_iter().next())
}

/// The option choices ⚡ quick mode makes on `model`: each option's value equal to
/// `[video] quick`'s (compared as numbers when both are numbers, so `"10"` matches `10`),
/// else its first value.
pub fn quick_choices(ctx: &BotCtx, model: &ModelConfig) -> Choices {
    let wanted = &ctx.config.video.quick;
    model
        .options
        .iter()
        .map(|o| {
            let index = wanted
                .get(&o.name)
                .and_then(|w| {
                    o.values.iter().position(|v| {
                        &v.value == w
                            || crate::providers::json_u32(&v.value)
                                .is_some_and(|n| Some(n) == crate::providers::json_u32(w))
                    })
                })
                .unwrap_or(0);
            (o.name.clone(), index as u8)
        })
        .collect()
}

/// Opens "🎬 Create video" (`quick` = "⚡ Quick mode") with `inputs` already given (a photo
/// received before the mode was picked), and asks for what is missing.
pub async fn start(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    dialogue: &ChatDialogue,
    quick: bool,
    inputs: Vec<String>,
    pressed: MessageId,
) -> Result<(), BotError> {
    let lang = me.lang;
    if (quick && !quick_available(ctx)) || !available(ctx) {
        dialogue.exit().await?;
        bot.send_message(dialogue.chat_id(), lang.t("no_models")).await?;
        return Ok(());
    }
    let inputs: Vec<String> = inputs.into_iter().take(1).collect();
    dialogue.update(Step::Video { quick, inputs: inputs.clone(), caption: None }).await?;
    let intro = lang.t(if quick { "video_quick_intro" } else { "video_intro" });
    next(bot, ctx, me, dialogue, (quick, inputs, None), pressed, Some(intro)).await
}

/// A message while a video flow waits: a photo is the one to animate (an album: its first);
/// a text is the motion prompt once the photo is in, or — with no photo and a
/// `text_to_video` model — the description of a video to make from nothing.
pub async fn on_message(
    bot: TgBot,
    msg: Message,
    ctx: Arc<BotCtx>,
    me: Caller,
    dialogue: ChatDialogue,
    (quick, inputs, caption): (bool, Vec<String>, Option<String>),
) -> Result<(), BotError> {
    if input::image_file(&msg).is_some() {
        return on_photo(&bot, &msg, &ctx, &me, &dialogue, (quick, inputs, caption)).await;
    }
    let text = input::instruction(msg.text());
    match text {
        Some(text) if !inputs.is_empty() || (!quick && !models(&ctx, Task::TextToVideo).is_empty()) => {
            dialogue.update(Step::Video { quick, inputs: inputs.clone(), caption: Some(text.clone()) }).await?;
            next(&bot, &ctx, &me, &dialogue, (quick, inputs, Some(text)), msg.id, None).await
        }
        _ => ask(&bot, &ctx, &me, &dialogue, quick, &inputs, None).await,
    }
}

/// A photo for a video flow (also a bare photo when `[video] photo_starts_quick` is on): the
/// first photo of a set is the one animated; an album is answered once, after its last photo.
pub async fn on_photo(
    bot: &TgBot,
    msg: &Message,
    ctx: &Arc<BotCtx>,
    me: &Caller,
    dialogue: &ChatDialogue,
    (quick, mut inputs, caption): (bool, Vec<String>, Option<String>),
) -> Result<(), BotError> {
    let Some(info) = input::image_of(bot, msg, ctx, me).await? else { return Ok(()) };
    inputs.push(info.sha256);
    let caption = caption.or_else(|| input::instruction(msg.caption()));
    dialogue.update(Step::Video { quick, inputs: inputs.clone(), caption: caption.clone() }).await?;
    if msg.media_group_id().is_none() {
        return next(bot, ctx, me, dialogue, (quick, inputs, caption), msg.id, None).await;
    }
    let (bot, ctx2, me, dialogue, mid) = (bot.clone(), ctx.clone(), me.clone(), dialogue.clone(), msg.id);
    input::after_album(ctx.clone(), dialogue.chat_id(), inputs.len(), move |inputs, caption| async move {
        next(&bot, &ctx2, &me, &dialogue, (quick, inputs, caption), mid, None).await
    });
    Ok(())
}

/// "⏭ Skip" at the motion prompt: the video is made without one. `false` when no video flow
/// waits for it.
pub async fn skip(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    dialogue: &ChatDialogue,
    pressed: MessageId,
) -> Result<bool, BotError> {
    match ctx.dialogues.step(dialogue.chat_id()).await? {
        Step::Video { quick, inputs, caption: None } if !inputs.is_empty() => {
            let caption = Some(String::new());
            dialogue.update(Step::Video { quick, inputs: inputs.clone(), caption: caption.clone() }).await?;
            let _ = bot.edit_message_reply_markup(dialogue.chat_id(), pressed).await;
            next(bot, ctx, me, dialogue, (quick, inputs, caption), pressed, None).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Asks for the photo (or, where a `text_to_video` model exists, a description instead), or
/// for the motion prompt with Skip. `intro` leads the message when given.
async fn ask(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    dialogue: &ChatDialogue,
    quick: bool,
    inputs: &[String],
    intro: Option<String>,
) -> Result<(), BotError> {
    let lang = me.lang;
    let photo_models = !models(ctx, Task::ImageToVideo).is_empty();
    let text_models = !quick && !models(ctx, Task::TextToVideo).is_empty();
    let (text, kb) = match (inputs.is_empty(), photo_models, text_models) {
        (false, _, _) => (lang.t("video_motion"), keyboards::skip_or_cancel(lang)),
        (true, true, true) => (lang.t("video_send_photo_or_text"), keyboards::flow_cancel(lang)),
        (true, true, false) => (lang.t("video_send_photo"), keyboards::flow_cancel(lang)),
        (true, false, _) => (lang.t("video_send_text"), keyboards::flow_cancel(lang)),
    };
    input::ask(bot, dialogue.chat_id(), intro, text, kb).await
}

/// With the photo and the motion prompt (or its skip) in — or a description for text → video
/// — ends the step and makes the draft: ⚡ quick mode starts the job at once; the wizard goes
/// on to the model, its options and the confirmation ([`generate::offer`]).
async fn next(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    dialogue: &ChatDialogue,
    (quick, mut inputs, caption): (bool, Vec<String>, Option<String>),
    last: MessageId,
    intro: Option<String>,
) -> Result<(), BotError> {
    let (lang, chat) = (me.lang, dialogue.chat_id());
    if inputs.len() > 1 {
        inputs.truncate(1);
        dialogue.update(Step::Video { quick, inputs: inputs.clone(), caption: caption.clone() }).await?;
        bot.send_message(chat, lang.tf("photos_too_many", &[("count", &lang.counted(1, "photos"))])).await?;
    }
    let task = if inputs.is_empty() { Task::TextToVideo } else { Task::ImageToVideo };
    let has_text = caption.as_deref().is_some_and(|c| !c.trim().is_empty());
    // Quick mode asks nothing but the photo; the wizard asks for a motion prompt (or Skip),
    // and text → video needs its description.
    let ready = match task {
        Task::ImageToVideo => quick || caption.is_some(),
        _ => has_text,
    };
    if !ready {
        return ask(bot, ctx, me, dialogue, quick, &inputs, intro).await;
    }
    let fitting = if quick { quick_model(ctx).into_iter().collect() } else { models(ctx, task) };
    if fitting.is_empty() {
        dialogue.exit().await?;
        bot.send_message(chat, lang.t("no_models")).await?;
        return Ok(());
    }
    dialogue.exit().await?;
    let spec = crate::bot::prompt::parse(caption.as_deref().unwrap_or_default());
    // The clip takes the photo's proportions; its size comes from the quality chosen.
    let size = match inputs.first() {
        Some(sha) => ctx.jobs.input_size(sha).await,
        None => None,
    };
    let mut draft = Draft {
        size,
        format: size.is_none().then_some(Format::Square).filter(|_| task == Task::ImageToVideo),
        ..Draft::new(draft_id(chat, last), (me.id(), chat.0), (spec.prompt, spec.negative), inputs)
    };
    let received = intro
        .unwrap_or_else(|| lang.t(if task == Task::ImageToVideo { "video_photo_ready" } else { "video_text_ready" }));
    if quick {
        let model = &fitting[0];
        draft.model_id = Some(model.id.clone());
        draft.options = quick_choices(ctx, model);
        draft.confirmed = true;
        return generate::advance(bot, chat, ctx, me, draft, model, Reply::New(Some(received))).await.map(|_| ());
    }
    generate::offer(bot, chat, ctx, me, draft, fitting, spec.model.as_deref(), Reply::New(Some(received))).await
}

/// The confirmation of a video draft whose options are all chosen: the settings and the
/// price of this combination, with "✅ Create for N" and Cancel.
pub fn confirmation(
    ctx: &BotCtx,
    me: &Caller,
    draft: &Draft,
    model: &ModelConfig,
) -> (String, teloxide::types::InlineKeyboardMarkup) {
    let lang = me.lang;
    let price = ctx.catalog.quote(&model.id, &draft.options).unwrap_or(model.price);
    let settings = settings_text(lang, model, &draft.options);
    let money = me.money(ctx, price);
    let text = lang.tf("video_confirm", &[("model", &model.display_name), ("settings", &settings), ("price", &money)]);
    (text, keyboards::video_confirm(lang, draft.id, &money))
}

/// "Длительность: 15 с · Качество: 832 px": each declared option with its chosen label.
pub fn settings_text(lang: crate::bot::i18n::Lang, model: &ModelConfig, choices: &Choices) -> String {
    model
        .options
        .iter()
        .filter_map(|o| {
            let v = o.values.get(usize::from(choices.get(&o.name).copied().unwrap_or(0)))?;
            Some(format!("{}: {}", option_title(lang, &o.name), value_label(lang, &o.name, &v.label(), v)))
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// The short title of an option (`video_option_duration` → "Длительность"), else its name.
fn option_title(lang: crate::bot::i18n::Lang, name: &str) -> String {
    match lang.t(&format!("video_option_{name}")) {
        t if t.starts_with("video_option_") => name.to_string(),
        t => t,
    }
}

/// A value with its unit where the option has one and the label is a bare number.
fn value_label(lang: crate::bot::i18n::Lang, name: &str, label: &str, v: &crate::config::OptionValue) -> String {
    let bare = v.label.is_none() && crate::providers::json_u32(&v.value).is_some();
    match name {
        "duration" if bare => lang.tf("video_secs", &[("n", &label)]),
        "quality" if bare => lang.tf("video_px", &[("n", &label)]),
        _ => label.to_string(),
    }
}

/// "📊 Statistics": how many videos the user made and the average time of each model's
/// settings (all users' runs).
pub async fn stats(bot: &TgBot, chat: ChatId, ctx: &BotCtx, me: &Caller) -> Result<(), BotError> {
    let lang = me.lang;
    let stats = ctx.jobs.video_stats(me.id()).await?;
    let mut text = lang.tf("video_stats_made", &[("count", &lang.counted(stats.made as i64, "videos"))]);
    text.push_str("\n\n");
    if stats.times.is_empty() {
        text.push_str(&lang.t("video_stats_none"));
    } else {
        text.push_str(&lang.t("video_stats_times"));
        for t in &stats.times {
            text.push('\n');
            text.push_str(&lang.tf(
                "video_stats_line",
                &[
                    ("model", &t.model_name),
                    ("settings", &settings_label(lang, t.settings)),
                    ("secs", &t.mean_secs),
                    ("runs", &t.runs),
                ],
            ));
        }
    }
    let kb = if available(ctx) { Some(keyboards::video_more(lang, quick_available(ctx))) } else { None };
    match kb {
        Some(kb) => bot.send_message(chat, text).reply_markup(kb).await?,
        None => bot.send_message(chat, text).await?,
    };
    Ok(())
}

/// "10 с · 600 px" of stored settings.
fn settings_label(lang: crate::bot::i18n::Lang, s: VideoSettings) -> String {
    let mut parts = Vec::new();
    if let Some(d) = s.duration_secs {
        parts.push(lang.tf("video_secs", &[("n", &d)]));
    }
    if let Some(q) = s.quality_px {
        parts.push(lang.tf("video_px", &[("n", &q)]));
    }
    if parts.is_empty() { "—".to_string() } else { parts.join(" · ") }
}
