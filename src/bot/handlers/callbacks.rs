//! Inline button presses. Every query is answered (clients show a spinner until then), and
//! every action checks that the pressing user owns what the button refers to.

use super::Caller;
use super::commands::help_text;
use super::generate::{Reply, advance};
use crate::bot::keyboards::{self, Callback};
use crate::bot::{BotCtx, BotError, ChatDialogue, TgBot};
use crate::jobs::Submitted;
use crate::store::records::Draft;
use std::sync::Arc;
use teloxide::prelude::*;
use teloxide::types::MessageId;

/// Answer to a callback query: text and whether it is an alert.
type Answer = Option<(String, bool)>;

pub async fn route(bot: TgBot, q: CallbackQuery, ctx: Arc<BotCtx>, me: Caller) -> Result<(), BotError> {
    let lang = me.lang;
    let message = q.message.as_ref().map(|m| (m.chat().id, m.id()));
    let mut answer: Answer = None;
    let cb = q.data.as_deref().and_then(Callback::decode);
    match (cb, message) {
        (Some(Callback::MenuCreate | Callback::CreateMore), Some((chat, _))) => {
            ChatDialogue::new(ctx.dialogues.clone(), chat).exit().await?;
            bot.send_message(chat, lang.t("create_hint")).await?;
        }
        (Some(Callback::MenuAddText), Some((chat, _))) => {
            super::add_text::start(&bot, &ChatDialogue::new(ctx.dialogues.clone(), chat), &me).await?;
        }
        (Some(Callback::MenuBalance), Some((chat, _))) => {
            let text = super::levels::balance_text(&ctx, &me).await?;
            bot.send_message(chat, text).reply_markup(super::levels::balance_keyboard(&ctx, lang)).await?;
        }
        (Some(Callback::Subscribe), Some((chat, _))) => {
            super::levels::show_subscriptions(&bot, chat, &ctx, &me).await?;
        }
        (Some(Callback::History(page)), Some((chat, mid))) => {
            // The first page is a new message under the balance; paging edits it.
            let edit = (page > 0
                || q.message.as_ref().is_some_and(|m| {
                    m.regular_message().is_some_and(|m| m.text().is_some_and(|t| t.starts_with("📊")))
                }))
            .then_some(mid);
            super::history::show(&bot, chat, &ctx, &me, page, edit).await?;
        }
        (Some(Callback::TopUp), Some((chat, _))) => {
            super::pay::show_packages(&bot, chat, &ctx, &me).await?;
        }
        (Some(Callback::Buy(id)), Some((chat, _))) => {
            answer = super::pay::send_invoice(&bot, chat, &ctx, &me, &id).await?;
        }
        (Some(Callback::BuyCrypto(id)), Some((chat, _))) => {
            answer = super::pay::send_crypto_invoice(&bot, chat, &ctx, &me, &id).await?;
        }
        (Some(Callback::MenuInvite), Some((chat, _))) => {
            super::invite::show(&bot, chat, &ctx, &me).await?;
        }
        (Some(Callback::MenuHelp), Some((chat, _))) => {
            bot.send_message(chat, help_text(&ctx, lang)).await?;
        }
        (Some(Callback::Language(code)), Some((chat, _))) => {
            let chosen = crate::bot::i18n::Lang::from_code(Some(&code));
            ctx.billing.set_language(me.id(), Some(chosen.code().to_string())).await?;
            bot.send_message(chat, chosen.t("language_set")).await?;
        }
        (Some(Callback::Model { draft, model }), Some((chat, mid))) => {
            answer = match usable_draft(&ctx, &me, draft).await? {
                Err(refusal) => Some(refusal),
                Ok(mut d) => match ctx.catalog.model(&model).filter(|m| ctx.catalog.is_offered(&m.id)) {
                    None => Some((lang.t("no_models"), true)),
                    Some(m) => {
                        d.model_id = Some(m.id.clone());
                        started(&lang, advance(&bot, chat, &ctx, &me, d, &m, Reply::Edit(mid)).await?)
                    }
                },
            };
        }
        (Some(Callback::Format { draft, model, format }), Some((chat, mid))) => {
            answer = match usable_draft(&ctx, &me, draft).await? {
                Err(refusal) => Some(refusal),
                Ok(mut d) => match ctx.catalog.model(&model).filter(|m| ctx.catalog.is_offered(&m.id)) {
                    None => Some((lang.t("no_models"), true)),
                    Some(m) => {
                        d.model_id = Some(m.id.clone());
                        d.format = Some(format);
                        started(&lang, advance(&bot, chat, &ctx, &me, d, &m, Reply::Edit(mid)).await?)
                    }
                },
            };
        }
        (Some(Callback::Alternative { draft, model }), Some((chat, mid))) => {
            answer = alternative(&bot, &ctx, &me, chat, mid, draft, &model).await?;
        }
        (Some(Callback::Choice { draft, option, value }), Some((chat, mid))) => {
            answer = choose(&bot, &ctx, &me, chat, mid, draft, option, value).await?;
        }
        (Some(Callback::Cancel { draft }), _) => {
            let user = me.id();
            let job = ctx.dialogues.draft(draft).await?.filter(|d| d.user_id == user).and_then(|d| d.job_id);
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
            answer = resend(&bot, &ctx, &me, chat, id).await?;
        }
        (Some(Callback::UsePreset { draft, preset }), Some((chat, mid))) => {
            answer = use_preset(&bot, &ctx, &me, chat, mid, draft, preset).await?;
        }
        (Some(Callback::UseWritten { job, edit }), Some(at)) => {
            answer = super::write::use_written(&bot, &ctx, &me, at, job, edit).await?;
        }
        (Some(Callback::MenuWrite), Some((chat, _))) => {
            super::write::start(&bot, &ctx, &me, &ChatDialogue::new(ctx.dialogues.clone(), chat)).await?;
        }
        (Some(cb @ (Callback::MenuVideo | Callback::MenuQuick)), Some((chat, mid))) => {
            let dialogue = ChatDialogue::new(ctx.dialogues.clone(), chat);
            let quick = cb == Callback::MenuQuick;
            super::video::start(&bot, &ctx, &me, &dialogue, quick, vec![], mid).await?;
        }
        (Some(Callback::VideoStats), Some((chat, _))) => {
            super::video::stats(&bot, chat, &ctx, &me).await?;
        }
        (Some(Callback::VideoConfirm { draft }), Some((chat, mid))) => {
            answer = match usable_draft(&ctx, &me, draft).await? {
                Err(refusal) => Some(refusal),
                Ok(mut d) => {
                    let model = d.model_id.as_deref().and_then(|id| ctx.catalog.model(id));
                    match model.filter(|m| ctx.catalog.is_offered(&m.id)) {
                        None => Some((lang.t("no_models"), true)),
                        Some(m) => {
                            d.confirmed = true;
                            started(&lang, advance(&bot, chat, &ctx, &me, d, &m, Reply::Edit(mid)).await?)
                        }
                    }
                }
            };
        }
        (Some(Callback::MenuTools), Some((chat, _))) => {
            super::tools::menu(&bot, chat, &ctx, &me).await?;
        }
        (Some(Callback::Tool(task)), Some((chat, mid))) => {
            let dialogue = ChatDialogue::new(ctx.dialogues.clone(), chat);
            // Pressed under a received photo (or album): those photos are the mode's first.
            let carried = match ctx.dialogues.step(chat).await? {
                crate::bot::dialogue::Step::Photos { inputs, .. } => inputs,
                _ => vec![],
            };
            if !carried.is_empty() {
                // The offer under the photos is used up: its buttons go.
                let _ = bot.edit_message_reply_markup(chat, mid).await;
            }
            match task {
                crate::domain::Task::Edit => super::edit::with_photos(&bot, &ctx, &me, &dialogue, carried, mid).await?,
                crate::domain::Task::ImageToVideo => {
                    super::video::start(&bot, &ctx, &me, &dialogue, false, carried, mid).await?
                }
                _ => super::tools::start(&bot, &ctx, &me, &dialogue, task, carried, mid).await?,
            }
        }
        (Some(Callback::Subject(subject)), Some((chat, mid))) => {
            let dialogue = ChatDialogue::new(ctx.dialogues.clone(), chat);
            if !super::tools::subject(&bot, &ctx, &me, &dialogue, subject, mid).await? {
                answer = Some((lang.t("flow_gone"), false));
            }
        }
        (Some(Callback::ToolSkip), Some((chat, mid))) => {
            let dialogue = ChatDialogue::new(ctx.dialogues.clone(), chat);
            if !super::tools::skip(&bot, &ctx, &me, &dialogue, mid).await?
                && !super::video::skip(&bot, &ctx, &me, &dialogue, mid).await?
            {
                answer = Some((lang.t("nothing_to_skip"), false));
            }
        }
        (Some(Callback::FlowCancel), Some((chat, mid))) => {
            let step = ctx.dialogues.step(chat).await?;
            ChatDialogue::new(ctx.dialogues.clone(), chat).exit().await?;
            let key = if step == crate::bot::dialogue::Step::Idle { "nothing_to_cancel" } else { "flow_cancelled" };
            // The buttons go with the step they belonged to.
            let _ = bot.edit_message_reply_markup(chat, mid).await;
            answer = Some((lang.t(key), false));
        }
        (Some(Callback::TextOnPhoto), Some((chat, _))) => {
            let dialogue = ChatDialogue::new(ctx.dialogues.clone(), chat);
            match ctx.dialogues.step(chat).await? {
                crate::bot::dialogue::Step::Photos { inputs, .. } if !inputs.is_empty() => {
                    super::add_text::with_photo(&bot, &dialogue, &me, inputs[0].clone()).await?
                }
                _ => super::add_text::start(&bot, &dialogue, &me).await?,
            }
        }
        (Some(Callback::EditThis(id)), Some((chat, mid))) => {
            answer = match photo_of_item(&ctx, &me, id).await? {
                Err(refusal) => Some(refusal),
                Ok(sha) => {
                    let dialogue = ChatDialogue::new(ctx.dialogues.clone(), chat);
                    super::edit::with_photos(&bot, &ctx, &me, &dialogue, vec![sha], mid).await?;
                    None
                }
            };
        }
        (Some(Callback::UpscaleThis(id)), Some((chat, mid))) => {
            let upscale = crate::domain::Task::Upscale;
            answer = match photo_of_item(&ctx, &me, id).await? {
                Err(refusal) => Some(refusal),
                // No AI upscale model: the local 2×/4× resize instead.
                Ok(_) if ctx.catalog.for_task(upscale).is_empty() => {
                    super::library::on_callback(&bot, &ctx, &me, (chat, mid), Callback::ResizeMenu(id)).await?
                }
                Ok(sha) => {
                    let dialogue = ChatDialogue::new(ctx.dialogues.clone(), chat);
                    super::tools::start(&bot, &ctx, &me, &dialogue, upscale, vec![sha], mid).await?;
                    None
                }
            };
        }
        (Some(Callback::Failover { job, yes }), Some((chat, mid))) => {
            answer = failover_answer(&bot, &ctx, &me, chat, mid, job, yes).await?;
        }
        // Everything else is the library's: pages and the actions under pictures.
        (Some(cb), Some(at)) => {
            answer = super::library::on_callback(&bot, &ctx, &me, at, cb).await?;
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

/// The stored file of the pressing user's picture, to use as an input photo; the refusal to
/// show for someone else's item or one that is not a picture.
async fn photo_of_item(
    ctx: &BotCtx,
    me: &Caller,
    id: crate::domain::ImageId,
) -> Result<Result<String, (String, bool)>, BotError> {
    let lang = me.lang;
    Ok(match ctx.library.owned_item(me.id(), id).await? {
        None => Err((lang.t("not_yours"), true)),
        Some(item) if item.media != crate::domain::MediaKind::Image => Err((lang.t("not_a_picture"), true)),
        Some(item) => Ok(item.sha256),
    })
}

/// The pressing user's draft that has not made a job yet, or the refusal to show.
async fn usable_draft(ctx: &BotCtx, me: &Caller, id: u128) -> Result<Result<Draft, (String, bool)>, BotError> {
    let lang = me.lang;
    Ok(match ctx.dialogues.draft(id).await? {
        None => Err((lang.t("draft_gone"), true)),
        Some(d) if d.user_id != me.id() => Err((lang.t("not_yours"), true)),
        Some(d) if d.job_id.is_some() => Err((lang.t("already_started"), false)),
        Some(d) => Ok(d),
    })
}

/// "Already started" for a press that found its job already made.
fn started(lang: &crate::bot::i18n::Lang, outcome: Option<Submitted>) -> Answer {
    matches!(outcome, Some(Submitted::Duplicate(_))).then(|| (lang.t("already_started"), false))
}

/// An alternative model pressed under a failed job: the failed job's request (its draft, now
/// consumed) is copied into a new draft keyed by the pressed message, and runs on `model` —
/// a new job with a new hold at that model's price. Pressing twice makes one job.
async fn alternative(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    chat: ChatId,
    mid: MessageId,
    draft: u128,
    model: &str,
) -> Result<Answer, BotError> {
    let lang = me.lang;
    let Some(old) = ctx.dialogues.draft(draft).await?.filter(|d| d.user_id == me.id()) else {
        return Ok(Some((lang.t("draft_gone"), true)));
    };
    let id = super::generate::draft_id(chat, mid);
    let fresh = match ctx.dialogues.draft(id).await? {
        Some(d) if d.job_id.is_some() => return Ok(Some((lang.t("already_started"), false))),
        Some(d) => d,
        None => Draft { id, job_id: None, model_id: None, options: Default::default(), format: None, ..old },
    };
    let Some(m) = ctx.catalog.model(model).filter(|m| ctx.catalog.is_offered(&m.id)) else {
        return Ok(Some((lang.t("no_models"), true)));
    };
    let d = Draft { model_id: Some(m.id.clone()), created_at: crate::domain::now_ms(), ..fresh };
    Ok(started(&lang, advance(bot, chat, ctx, me, d, &m, Reply::Edit(mid)).await?))
}

/// A value pressed for one of the draft's model options: recorded, then the next question (or
/// the job).
#[allow(clippy::too_many_arguments)]
async fn choose(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    chat: ChatId,
    mid: MessageId,
    draft: u128,
    option: u8,
    value: u8,
) -> Result<Answer, BotError> {
    let lang = me.lang;
    let mut d = match usable_draft(ctx, me, draft).await? {
        Err(refusal) => return Ok(Some(refusal)),
        Ok(d) => d,
    };
    let model = d.model_id.as_deref().and_then(|id| ctx.catalog.model(id)).filter(|m| ctx.catalog.is_offered(&m.id));
    let Some(model) = model else { return Ok(Some((lang.t("no_models"), true))) };
    let Some(name) =
        model.options.get(usize::from(option)).filter(|o| usize::from(value) < o.values.len()).map(|o| o.name.clone())
    else {
        return Ok(Some((lang.t("draft_gone"), true)));
    };
    d.options.insert(name, value);
    Ok(started(&lang, advance(bot, chat, ctx, me, d, &model, Reply::Edit(mid)).await?))
}

/// A preset pressed under a draft: its model, format, negative and size fill what the prompt
/// left open, and the job starts.
async fn use_preset(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    chat: ChatId,
    mid: MessageId,
    draft: u128,
    preset: u32,
) -> Result<Answer, BotError> {
    let lang = me.lang;
    let mut d = match usable_draft(ctx, me, draft).await? {
        Err(refusal) => return Ok(Some(refusal)),
        Ok(d) => d,
    };
    let Some(p) = ctx.library.preset(me.id(), preset).await? else { return Ok(Some((lang.t("not_yours"), true))) };
    let Some(m) = ctx.catalog.model(&p.model_id).filter(|m| ctx.catalog.is_offered(&m.id)) else {
        return Ok(Some((lang.t("no_models"), true)));
    };
    d.model_id = Some(m.id.clone());
    d.negative = d.negative.or(p.negative);
    d.size = d.size.or(p.size);
    d.aspect_ratio = d.aspect_ratio.or(p.aspect_ratio);
    if d.size.is_none() {
        d.format = Some(crate::jobs::library::usable_format(p.format, &m.formats));
    }
    Ok(match advance(bot, chat, ctx, me, d, &m, Reply::Edit(mid)).await? {
        Some(Submitted::Duplicate(_)) => Some((lang.t("already_started"), false)),
        _ => Some((lang.tf("preset_applied", &[("name", &p.name)]), false)),
    })
}

/// Sends the owner's library item again: the stored file as a photo (fitted for Telegram) and
/// as the original document. Another user's item is refused as "not yours".
async fn resend(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    chat: ChatId,
    id: crate::domain::ImageId,
) -> Result<Answer, BotError> {
    use crate::jobs::StoredResult;
    let lang = me.lang;
    let (item, files) = match ctx.jobs.result_files(me.id(), id).await? {
        StoredResult::NotYours => return Ok(Some((lang.t("not_yours"), true))),
        StoredResult::Missing => return Ok(Some((lang.t("resend_missing"), true))),
        StoredResult::Ready(item, files) => (item, files),
    };
    let kb = keyboards::actions(lang, &item);
    crate::bot::notifier::send_files(bot, chat, files, None, kb).await?;
    Ok(None)
}

/// "Да" / "Нет" under a failover question. Only the job's owner is heard, and only once (the
/// engine checks both in the transaction that acts); a no, or a balance too low for the
/// difference, is told by the engine's failure message, which replaces the question.
async fn failover_answer(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    chat: ChatId,
    mid: MessageId,
    job: crate::domain::JobId,
    yes: bool,
) -> Result<Answer, BotError> {
    use crate::jobs::FailoverAnswer;
    let lang = me.lang;
    Ok(Some(match ctx.jobs.answer_failover(me.id(), job, yes).await? {
        FailoverAnswer::Running { model } => {
            let name = ctx.catalog.model(&model).map_or(model, |m| m.display_name);
            let text = lang.tf("failover_accepted", &[("model", &name)]);
            // The question's buttons go; progress edits take the message over from here.
            let _ = bot.edit_message_text(chat, mid, text.clone()).await;
            (text, false)
        }
        FailoverAnswer::Declined | FailoverAnswer::NoFunds => (lang.t("failover_released"), false),
        FailoverAnswer::AlreadyAnswered => (lang.t("failover_answered"), false),
        FailoverAnswer::NotFound => (lang.t("not_yours"), true),
    }))
}
