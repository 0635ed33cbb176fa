//! Edit flow: photos (one, several, or an album) plus an instruction → the edit models whose
//! declared image count fits → the create flow's remaining steps with the photos as inputs.
//!
//! The photos gathered so far live in the chat's step ([`Step::Photos`]), so the set survives a
//! restart and a model that takes 2–4 photos is offered once the second arrives. An album gets
//! one answer, after its last photo ([`input::after_album`]).

use super::generate::{Reply, draft_id, offer};
use super::{Caller, input};
use crate::bot::dialogue::Step;
use crate::bot::{BotCtx, BotError, ChatDialogue, TgBot, keyboards};
use crate::domain::Task;
use crate::jobs::InputInfo;
use crate::store::records::Draft;
use std::sync::Arc;
use teloxide::prelude::*;
use teloxide::types::MessageId;

/// A message while photos are being gathered: another photo joins the set; a text is the
/// instruction when none was given yet, otherwise it starts over as a prompt to create from.
pub async fn on_message(
    bot: TgBot,
    msg: Message,
    ctx: Arc<BotCtx>,
    me: Caller,
    dialogue: ChatDialogue,
    (inputs, caption): (Vec<String>, Option<String>),
) -> Result<(), BotError> {
    if input::image_file(&msg).is_some() {
        return add_photo(&bot, &msg, &ctx, &me, &dialogue, inputs, caption).await;
    }
    let editable = !ctx.catalog.for_task(Task::Edit).is_empty();
    match (caption, input::instruction(msg.text())) {
        (None, Some(instruction)) if editable => {
            dialogue.update(Step::Photos { inputs: inputs.clone(), caption: Some(instruction.clone()) }).await?;
            let single = single(&ctx, &inputs).await;
            respond(&bot, &ctx, &me, &dialogue, msg.id, inputs, Some(instruction), single).await
        }
        (_, Some(_)) => {
            dialogue.exit().await?;
            super::generate::on_text(&bot, &msg, &ctx, &me, msg.text().unwrap_or_default()).await
        }
        (_, None) => {
            bot.send_message(msg.chat.id, me.lang.t("not_text")).await?;
            Ok(())
        }
    }
}

/// Adds the photo of `msg` to the chat's set and answers (at once, or after the album settles).
pub async fn add_photo(
    bot: &TgBot,
    msg: &Message,
    ctx: &Arc<BotCtx>,
    me: &Caller,
    dialogue: &ChatDialogue,
    mut inputs: Vec<String>,
    caption: Option<String>,
) -> Result<(), BotError> {
    let Some(info) = input::image_of(bot, msg, ctx, me).await? else { return Ok(()) };
    inputs.push(info.sha256.clone());
    let caption = caption.or_else(|| input::instruction(msg.caption()));
    dialogue.update(Step::Photos { inputs: inputs.clone(), caption: caption.clone() }).await?;
    if msg.media_group_id().is_none() {
        return respond(bot, ctx, me, dialogue, msg.id, inputs, caption, Some(info)).await;
    }
    let (bot, ctx2, me, dialogue, mid) = (bot.clone(), ctx.clone(), me.clone(), dialogue.clone(), msg.id);
    input::after_album(ctx.clone(), dialogue.chat_id(), inputs.len(), move |inputs, caption| async move {
        respond(&bot, &ctx2, &me, &dialogue, mid, inputs, caption, None).await
    });
    Ok(())
}

/// "✏️ Edit" with photos already there (a result's "Edit this", or photos received before
/// the mode was picked): the set is these photos, and the instruction is asked for. With none,
/// asks for the photos.
pub async fn with_photos(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    dialogue: &ChatDialogue,
    inputs: Vec<String>,
    pressed: MessageId,
) -> Result<(), BotError> {
    dialogue.update(Step::Photos { inputs: inputs.clone(), caption: None }).await?;
    if inputs.is_empty() {
        let kb = crate::bot::keyboards::flow_cancel(me.lang);
        bot.send_message(dialogue.chat_id(), me.lang.t("tool_edit_intro")).reply_markup(kb).await?;
        return Ok(());
    }
    let single = single(ctx, &inputs).await;
    respond(bot, ctx, me, dialogue, pressed, inputs, None, single).await
}

/// The one photo of a set of one, with its size: an edit of one photo keeps its size (no
/// format is asked), however the instruction came.
async fn single(ctx: &BotCtx, inputs: &[String]) -> Option<InputInfo> {
    let [one] = inputs else { return None };
    let (width, height) = ctx.jobs.input_size(one).await?;
    Some(InputInfo { sha256: one.clone(), width, height, bytes: 0 })
}

/// Offers the edit models that take this many photos, or says what is missing: the
/// instruction, more photos, or that there are more than any model takes (the first ones are
/// kept).
#[allow(clippy::too_many_arguments)]
async fn respond(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    dialogue: &ChatDialogue,
    last: MessageId,
    mut inputs: Vec<String>,
    caption: Option<String>,
    single: Option<InputInfo>,
) -> Result<(), BotError> {
    let (lang, chat) = (me.lang, dialogue.chat_id());
    let received = match &single {
        Some(info) if inputs.len() == 1 => {
            lang.tf("photo_received_one", &[("width", &info.width), ("height", &info.height)])
        }
        _ => lang.tf("photos_received", &[("count", &lang.counted(inputs.len() as i64, "photos"))]),
    };
    let models = ctx.catalog.for_task(Task::Edit);
    // What else can be done with the photos: the photo modes and "📝 Add text".
    let mut modes = super::tools::available(ctx);
    if !ctx.catalog.for_task(Task::ImageToVideo).is_empty() {
        modes.insert(0, Task::ImageToVideo);
    }
    let others = keyboards::photo_actions(lang, &modes);
    let Some(most) = models.iter().map(|m| usize::from(m.image_range().1)).max() else {
        // The photos stay in the step for the buttons.
        bot.send_message(chat, lang.tf("photo_no_edit_models", &[("received", &received)]))
            .reply_markup(others)
            .await?;
        return Ok(());
    };
    if inputs.len() > most {
        inputs.truncate(most);
        dialogue.update(Step::Photos { inputs: inputs.clone(), caption: caption.clone() }).await?;
        bot.send_message(chat, lang.tf("photos_too_many", &[("count", &lang.counted(most as i64, "photos"))])).await?;
    }
    let fitting: Vec<_> = models.iter().filter(|m| m.takes_images(inputs.len())).cloned().collect();
    if fitting.is_empty() {
        let need = models.iter().map(|m| usize::from(m.image_range().0)).filter(|n| *n > inputs.len()).min();
        let more = need.unwrap_or(1).saturating_sub(inputs.len()) as i64;
        let text = lang.tf("photos_need_more", &[("received", &received), ("more", &lang.counted(more, "photos"))]);
        bot.send_message(chat, text).await?;
        return Ok(());
    }
    let Some(instruction) = caption else {
        bot.send_message(chat, lang.tf("photo_need_caption", &[("received", &received)])).reply_markup(others).await?;
        return Ok(());
    };
    let spec = crate::bot::prompt::parse(&instruction);
    // One photo keeps its size; for several the model's formats are offered.
    let size = single.filter(|_| inputs.len() == 1).map(|i| (i.width, i.height));
    let draft =
        Draft { size, ..Draft::new(draft_id(chat, last), (me.id(), chat.0), (spec.prompt, spec.negative), inputs) };
    // One message: the receipt leads whatever comes next (the model buttons, or the progress
    // message of a job that needs nothing more).
    let reply = Reply::New(Some(received));
    offer(bot, chat, ctx, me, draft, fitting, spec.model.as_deref(), reply).await
}

/// Ends the chat's photo set once a job was made from exactly these photos, so the next photo
/// starts a new set (a photo set still being gathered for another draft is left alone).
pub async fn used(ctx: &BotCtx, chat: ChatId, inputs: &[String]) -> Result<(), BotError> {
    if let Step::Photos { inputs: gathered, .. } = ctx.dialogues.step(chat).await? {
        if gathered == inputs {
            use teloxide::dispatching::dialogue::Storage;
            ctx.dialogues.clone().remove_dialogue(chat).await?;
        }
    }
    Ok(())
}
