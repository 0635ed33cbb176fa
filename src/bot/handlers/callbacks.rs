//! Inline button presses. Every query is answered (clients show a spinner until then), and
//! every action checks that the pressing user owns what the button refers to.

use super::touch_user;
use crate::bot::handlers::commands::{balance_text, help_text};
use crate::bot::handlers::generate::{show_formats, start_job};
use crate::bot::keyboards::{self, Callback};
use crate::bot::{BotCtx, BotError, TgBot};
use crate::domain::UserId;
use crate::jobs::Submitted;
use std::sync::Arc;
use teloxide::prelude::*;

pub async fn route(bot: TgBot, q: CallbackQuery, ctx: Arc<BotCtx>) -> Result<(), BotError> {
    let (rec, _, lang) = touch_user(&ctx, &q.from).await?;
    let user = UserId(q.from.id.0 as i64);
    let message = q.message.as_ref().map(|m| (m.chat().id, m.id()));
    let mut answer: Option<(String, bool)> = None;
    let cb = q.data.as_deref().and_then(Callback::decode);
    match (cb, message) {
        (Some(Callback::MenuCreate | Callback::CreateMore), Some((chat, _))) => {
            super::add_text::clear(&ctx, chat).await?;
            bot.send_message(chat, lang.t("create_hint")).await?;
        }
        (Some(Callback::MenuAddText), Some((chat, _))) => super::add_text::start(&bot, chat, &ctx, lang).await?,
        (Some(Callback::MenuBalance), Some((chat, _))) => {
            bot.send_message(chat, balance_text(&rec, lang, ctx.billing.currency())).await?;
        }
        (Some(Callback::MenuHelp), Some((chat, _))) => {
            bot.send_message(chat, help_text(&ctx, lang)).await?;
        }
        (Some(Callback::Model { draft, model }), Some((chat, mid))) => match ctx.jobs.get_draft(draft).await? {
            None => answer = Some((lang.t("draft_gone"), true)),
            Some(d) if d.user_id != user => answer = Some((lang.t("not_yours"), true)),
            Some(d) if d.job_id.is_some() => answer = Some((lang.t("already_started"), false)),
            Some(mut d) => match ctx.jobs.models(&ctx.config).into_iter().find(|m| m.id == model) {
                None => answer = Some((lang.t("no_models"), true)),
                Some(m) if d.size.is_some() || m.formats.len() == 1 => {
                    d.model_id = Some(m.id.clone());
                    let format = d.size.map(|(w, h)| crate::domain::Format::from_dims(w, h)).unwrap_or(m.formats[0]);
                    if let Submitted::Duplicate(_) =
                        start_job(&bot, chat, &ctx, lang, &d, &m, format, Some(mid)).await?
                    {
                        answer = Some((lang.t("already_started"), false));
                    }
                }
                Some(m) => show_formats(&bot, chat, &ctx, lang, &d, &m, Some(mid)).await?,
            },
        },
        (Some(Callback::Format { draft, model, format }), Some((chat, mid))) => {
            match ctx.jobs.get_draft(draft).await? {
                None => answer = Some((lang.t("draft_gone"), true)),
                Some(d) if d.user_id != user => answer = Some((lang.t("not_yours"), true)),
                Some(d) if d.job_id.is_some() => answer = Some((lang.t("already_started"), false)),
                Some(d) => match ctx.jobs.models(&ctx.config).into_iter().find(|m| m.id == model) {
                    None => answer = Some((lang.t("no_models"), true)),
                    Some(m) => {
                        if let Submitted::Duplicate(_) =
                            start_job(&bot, chat, &ctx, lang, &d, &m, format, Some(mid)).await?
                        {
                            answer = Some((lang.t("already_started"), false));
                        }
                    }
                },
            }
        }
        (Some(Callback::Cancel { draft }), _) => {
            let job = ctx.jobs.get_draft(draft).await?.filter(|d| d.user_id == user).and_then(|d| d.job_id);
            let outcome = match job {
                Some(job) => ctx.jobs.cancel(user, job).await?,
                None => crate::jobs::CancelOutcome::NotFound,
            };
            answer = Some(match outcome {
                crate::jobs::CancelOutcome::Cancelling => (lang.t("cancelling"), false),
                crate::jobs::CancelOutcome::AlreadyFinished => (lang.t("cancel_too_late"), false),
                crate::jobs::CancelOutcome::NotFound => (lang.t("not_yours"), true),
            });
        }
        (Some(Callback::Resend(id)), Some((chat, _))) => {
            answer = resend(&bot, &ctx, lang, user, chat, id).await?;
        }
        (Some(Callback::UsePreset { draft, preset }), Some((chat, mid))) => {
            answer = use_preset(&bot, &ctx, lang, user, chat, mid, draft, preset).await?;
        }
        // Everything else is the library's: pages and the actions under pictures.
        (Some(cb), Some(at)) => {
            answer = super::library::on_callback(&bot, &ctx, lang, user, at, cb).await?;
        }
        _ => {}
    }
    let mut req = bot.answer_callback_query(q.id.clone());
    if let Some((text, alert)) = answer {
        req = req.text(text).show_alert(alert);
    }
    req.await?;
    Ok(())
}

/// A preset pressed under a draft: its model, format, negative and size fill what the prompt
/// left open, and the job starts.
#[allow(clippy::too_many_arguments)]
async fn use_preset(
    bot: &TgBot,
    ctx: &BotCtx,
    lang: crate::bot::i18n::Lang,
    user: UserId,
    chat: ChatId,
    mid: teloxide::types::MessageId,
    draft: u128,
    preset: u32,
) -> Result<Option<(String, bool)>, BotError> {
    let Some(mut d) = ctx.jobs.get_draft(draft).await? else { return Ok(Some((lang.t("draft_gone"), true))) };
    if d.user_id != user {
        return Ok(Some((lang.t("not_yours"), true)));
    }
    if d.job_id.is_some() {
        return Ok(Some((lang.t("already_started"), false)));
    }
    let Some(p) = ctx.jobs.preset(user, preset).await? else { return Ok(Some((lang.t("not_yours"), true))) };
    let Some(m) = ctx.jobs.models(&ctx.config).into_iter().find(|m| m.id == p.model_id) else {
        return Ok(Some((lang.t("no_models"), true)));
    };
    d.model_id = Some(m.id.clone());
    d.negative = d.negative.or(p.negative);
    d.size = d.size.or(p.size);
    d.aspect_ratio = d.aspect_ratio.or(p.aspect_ratio);
    let format = match d.size {
        Some((w, h)) => crate::domain::Format::from_dims(w, h),
        None => crate::jobs::library::usable_format(p.format, &m.formats),
    };
    ctx.jobs.put_draft(d.clone()).await?;
    Ok(match start_job(bot, chat, ctx, lang, &d, &m, format, Some(mid)).await? {
        Submitted::Duplicate(_) => Some((lang.t("already_started"), false)),
        _ => Some((lang.tf("preset_applied", &[("name", &p.name)]), false)),
    })
}

/// Sends the owner's library item again: the stored file as a photo (fitted for Telegram) and
/// as the original document. Another user's item is refused as "not yours".
async fn resend(
    bot: &TgBot,
    ctx: &BotCtx,
    lang: crate::bot::i18n::Lang,
    user: UserId,
    chat: ChatId,
    id: crate::domain::ImageId,
) -> Result<Option<(String, bool)>, BotError> {
    use crate::jobs::StoredResult;
    let (item, files) = match ctx.jobs.result_files(user, id).await? {
        StoredResult::NotYours => return Ok(Some((lang.t("not_yours"), true))),
        StoredResult::Missing => return Ok(Some((lang.t("resend_missing"), true))),
        StoredResult::Ready(item, files) => (item, files),
    };
    let kb = keyboards::actions(lang, &item);
    if let Some(photo) = files.photo {
        bot.send_photo(chat, teloxide::types::InputFile::memory(photo).file_name("result.jpg"))
            .reply_markup(kb.clone())
            .await?;
    }
    bot.send_document(chat, teloxide::types::InputFile::memory(files.document).file_name(files.document_name)).await?;
    Ok(None)
}
