//! "📚 Library" and /my: pages of the user's results, opening one (sent again by file_id), and
//! the actions under every result — star, re-run, resize, category, preset, delete — plus the
//! preset list (/presets). Every action is checked against the pressing user by `jobs`.

use super::Caller;
use crate::bot::dialogue::Step;
use crate::bot::i18n::Lang;
use crate::bot::keyboards::{self, Callback, Shelf};
use crate::bot::{BotCtx, BotError, ChatDialogue, TgBot};
use crate::domain::{ImageId, UserId};
use crate::jobs::library::JobTarget;
use crate::jobs::{JobsError, Submitted};
use crate::store::library::LibraryFilter;
use crate::store::records::LibraryItem;
use std::sync::Arc;
use teloxide::prelude::*;
use teloxide::types::MessageId;
use teloxide::{ApiError, RequestError};

/// Answer to a callback query: text and whether it is an alert.
pub type Answer = Option<(String, bool)>;

/// Longest prompt shown in a caption (Bot API captions stop at 1024 characters).
const CAPTION_PROMPT_CHARS: usize = 900;

/// Display name of a model id; built-in tools are named in the user's language.
pub fn model_label(ctx: &BotCtx, lang: Lang, model_id: &str) -> String {
    match model_id {
        crate::domain::ADD_TEXT_MODEL => lang.t("add_text_name"),
        crate::domain::RESIZE_MODEL => lang.t("resize_name"),
        id => ctx.catalog.configured(id).map_or_else(|| id.to_string(), |m| m.display_name.clone()),
    }
}

/// The caption of an opened item: prompt and model.
pub fn caption(ctx: &BotCtx, lang: Lang, item: &LibraryItem) -> String {
    let prompt: String = item.prompt.chars().take(CAPTION_PROMPT_CHARS).collect();
    lang.tf("library_caption", &[("prompt", &prompt), ("model", &model_label(ctx, lang, &item.model_id))])
}

/// Shows page `page` of `shelf`, editing `edit` when given (◀ ▶ and filters edit in place).
#[allow(clippy::too_many_arguments)]
pub async fn show(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    lang: Lang,
    user: UserId,
    shelf: Shelf,
    page: usize,
    edit: Option<MessageId>,
) -> Result<Answer, BotError> {
    let cats = ctx.library.categories(user).await?;
    let (filter, label) = match shelf {
        Shelf::All => (LibraryFilter::All, lang.t("library_all")),
        Shelf::Favourites => (LibraryFilter::Favourites, lang.t("library_favourites")),
        Shelf::Category(n) => match cats.iter().find(|(k, _)| *k == n) {
            Some((_, name)) => (LibraryFilter::Category(name.clone()), format!("🏷 {name}")),
            None => return Ok(Some((lang.t("not_yours"), true))),
        },
    };
    let p = ctx.library.library_page(user, filter, page).await?;
    let first = p.page * crate::library::PAGE_SIZE;
    let list: Vec<String> = p
        .items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let prompt: String = it.prompt.chars().take(60).collect();
            let star = if it.favourite { "⭐ " } else { "" };
            format!("{}. {star}{prompt} · {}", first + i + 1, model_label(ctx, lang, &it.model_id))
        })
        .collect();
    let text = if p.total == 0 {
        lang.tf("library_empty", &[("filter", &label)])
    } else {
        lang.tf(
            "library_title",
            &[
                ("filter", &label),
                ("total", &lang.counted(p.total as i64, "pictures")),
                ("page", &(p.page + 1)),
                ("pages", &p.pages),
                ("list", &list.join("\n")),
            ],
        )
    };
    let kb = keyboards::library(lang, &p.items, shelf, p.page, p.pages, &cats);
    send_or_edit(bot, chat, edit, text, kb).await?;
    Ok(None)
}

/// Edits message `edit` to `text` and `kb`, or sends them as a new message.
async fn send_or_edit(
    bot: &TgBot,
    chat: ChatId,
    edit: Option<MessageId>,
    text: String,
    kb: teloxide::types::InlineKeyboardMarkup,
) -> Result<(), BotError> {
    match edit {
        Some(mid) => match bot.edit_message_text(chat, mid, text).reply_markup(kb).await {
            Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(e.into()),
        },
        None => bot.send_message(chat, text).reply_markup(kb).await.map(|_| ()).map_err(Into::into),
    }
}

/// Sends a user's item again with its actions: by the stored photo file_id (no upload); when
/// Telegram no longer knows that file_id, or there is none, the stored file is uploaded and
/// its new file_id kept.
async fn open(
    bot: &TgBot,
    ctx: &BotCtx,
    lang: Lang,
    user: UserId,
    chat: ChatId,
    id: ImageId,
) -> Result<Answer, BotError> {
    let Some(item) = ctx.library.owned_item(user, id).await? else { return Ok(Some((lang.t("not_yours"), true))) };
    let (caption, kb) = (caption(ctx, lang, &item), keyboards::actions(lang, &item));
    let known = match item.media {
        crate::domain::MediaKind::Image => item.photo_file_id.clone(),
        _ => item.document_file_id.clone(),
    };
    if let Some(file_id) = known {
        let sent = crate::bot::notifier::send_by_file_id(
            bot,
            chat,
            (item.media, &item.mime),
            file_id,
            caption.clone(),
            kb.clone(),
        )
        .await;
        match sent {
            Ok(_) => return Ok(None),
            Err(RequestError::Api(e)) if !matches!(e, ApiError::BotBlocked | ApiError::UserDeactivated) => {
                tracing::info!(error = %e, "stored file_id refused; uploading the file");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let files = match ctx.jobs.result_files(user, id).await? {
        crate::jobs::StoredResult::Ready(_, files) => files,
        crate::jobs::StoredResult::NotYours => return Ok(Some((lang.t("not_yours"), true))),
        crate::jobs::StoredResult::Missing => return Ok(Some((lang.t("resend_missing"), true))),
    };
    if let Some(photo) = crate::bot::notifier::send_files(bot, chat, files, Some(caption), kb).await? {
        ctx.library.record_photo_file_id(id, photo).await?;
    }
    Ok(None)
}

/// Sends the "queued" message (with the job's expected duration, `eta` seconds) a new job
/// will edit with its progress, creates the job with `submit`, and reports a refusal
/// (credits, model gone, photos pruned) on that message.
pub(super) async fn submit_with_progress<F, Fut>(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    me: &Caller,
    (model_name, eta): (&str, u64),
    submit: F,
) -> Result<(), BotError>
where
    F: FnOnce(JobTarget) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Submitted>, JobsError>>,
{
    let lang = me.lang;
    let queued = lang.tf("queued", &[("position", &1), ("model", &model_name), ("eta", &eta)]);
    let progress = bot.send_message(chat, queued).await?.id;
    let target = JobTarget { chat_id: chat.0, lang: lang.code().into(), progress_message_id: Some(progress.0) };
    let mut markup = None;
    let text = match submit(target).await {
        Ok(Some(Submitted::InsufficientFunds { balance, price })) => {
            markup = super::pay::top_up_button(ctx, lang);
            lang.tf("insufficient", &[("balance", &me.money(ctx, balance)), ("price", &me.money(ctx, price))])
        }
        Ok(Some(Submitted::LevelRefused(r))) => {
            let (text, more) = super::levels::refusal(ctx, me, &r);
            markup = more;
            text
        }
        Ok(Some(_)) => return Ok(()),
        Ok(None) => lang.t("not_yours"),
        Err(JobsError::UnknownModel(_) | JobsError::ModelDisabled(_)) => lang.t("no_models"),
        Err(JobsError::InputsGone) => lang.t("inputs_gone"),
        Err(e) => return Err(e.into()),
    };
    let mut req = bot.edit_message_text(chat, progress, text);
    if let Some(markup) = markup {
        req = req.reply_markup(markup);
    }
    req.await?;
    Ok(())
}

/// Restores an item's actions under the pressed message.
async fn restore_actions(
    bot: &TgBot,
    chat: ChatId,
    mid: MessageId,
    lang: Lang,
    item: &LibraryItem,
) -> Result<(), BotError> {
    match bot.edit_message_reply_markup(chat, mid).reply_markup(keyboards::actions(lang, item)).await {
        Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Replaces the keyboard under the pressed message.
async fn set_keyboard(
    bot: &TgBot,
    chat: ChatId,
    mid: MessageId,
    kb: teloxide::types::InlineKeyboardMarkup,
) -> Result<(), BotError> {
    match bot.edit_message_reply_markup(chat, mid).reply_markup(kb).await {
        Ok(_) | Err(RequestError::Api(ApiError::MessageNotModified)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Shows the user's presets with rename/delete buttons (editing `edit` when given).
pub async fn show_presets(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    lang: Lang,
    user: UserId,
    edit: Option<MessageId>,
) -> Result<(), BotError> {
    let presets = ctx.library.presets(user).await?;
    let text = if presets.is_empty() {
        lang.t("presets_empty")
    } else {
        let lines: Vec<String> = presets
            .iter()
            .map(|p| {
                let fmt = lang.t(&format!("format_{}", p.format.as_str()));
                format!("💾 {} — {} · {fmt}", p.name, model_label(ctx, lang, &p.model_id))
            })
            .collect();
        lang.tf("presets_title", &[("list", &lines.join("\n"))])
    };
    send_or_edit(bot, chat, edit, text, keyboards::presets(lang, &presets)).await?;
    Ok(())
}

/// Handles a library callback query; returns the answer to show (refusals are alerts).
pub async fn on_callback(
    bot: &TgBot,
    ctx: &BotCtx,
    me: &Caller,
    (chat, mid): (ChatId, MessageId),
    cb: Callback,
) -> Result<Answer, BotError> {
    let (lang, user) = (me.lang, me.id());
    let dialogue = ChatDialogue::new(ctx.dialogues.clone(), chat);
    let refused = || Ok(Some((lang.t("not_yours"), true)));
    match cb {
        Callback::MenuLibrary => show(bot, chat, ctx, lang, user, Shelf::All, 0, None).await,
        Callback::Library { filter, page } => show(bot, chat, ctx, lang, user, filter, page.into(), Some(mid)).await,
        Callback::Open(id) => open(bot, ctx, lang, user, chat, id).await,
        Callback::Star(id) => match ctx.library.toggle_favourite(user, id).await? {
            None => refused(),
            Some(starred) => {
                if let Some(item) = ctx.library.owned_item(user, id).await? {
                    restore_actions(bot, chat, mid, lang, &item).await?;
                }
                Ok(Some((lang.t(if starred { "starred" } else { "unstarred" }), false)))
            }
        },
        Callback::Rerun(id) => {
            let Some(item) = ctx.library.owned_item(user, id).await?.filter(|i| i.kind == "create") else {
                return refused();
            };
            let name = model_label(ctx, lang, &item.model_id);
            let eta = ctx.jobs.eta_for(&item.model_id, item.format).await;
            submit_with_progress(bot, chat, ctx, me, (&name, eta), |to| ctx.jobs.rerun(user, id, to)).await?;
            Ok(None)
        }
        Callback::ResizeMenu(id) => {
            if ctx.library.owned_item(user, id).await?.is_none() {
                return refused();
            }
            set_keyboard(bot, chat, mid, keyboards::resize(lang, id)).await?;
            Ok(None)
        }
        Callback::Resize { item, factor } => {
            let Some(it) = ctx.library.owned_item(user, item).await? else { return refused() };
            restore_actions(bot, chat, mid, lang, &it).await?;
            let name = lang.t("resize_name");
            let eta = ctx.jobs.eta_for_tool(crate::domain::RESIZE_MODEL).await;
            submit_with_progress(bot, chat, ctx, me, (&name, eta), |to| ctx.jobs.resize(user, item, factor.into(), to))
                .await?;
            Ok(None)
        }
        Callback::CategoryMenu(id) => {
            if ctx.library.owned_item(user, id).await?.is_none() {
                return refused();
            }
            let cats = ctx.library.categories(user).await?;
            set_keyboard(bot, chat, mid, keyboards::categories(lang, id, &cats)).await?;
            Ok(None)
        }
        Callback::Categorise { item, category } => match ctx.library.categorise(user, item, Ok(category)).await? {
            None => refused(),
            Some(name) => {
                if let Some(it) = ctx.library.owned_item(user, item).await? {
                    restore_actions(bot, chat, mid, lang, &it).await?;
                }
                Ok(Some((lang.tf("category_added", &[("name", &name)]), false)))
            }
        },
        Callback::CategoryNew(id) => {
            let Some(item) = ctx.library.owned_item(user, id).await? else { return refused() };
            restore_actions(bot, chat, mid, lang, &item).await?;
            dialogue.update(Step::CategoryName { item: id.short() }).await?;
            bot.send_message(chat, lang.t("category_ask_name")).await?;
            Ok(None)
        }
        Callback::Delete(id) => {
            if ctx.library.owned_item(user, id).await?.is_none() {
                return refused();
            }
            set_keyboard(bot, chat, mid, keyboards::confirm_delete(lang, id)).await?;
            Ok(Some((lang.t("delete_confirm"), false)))
        }
        Callback::DeleteYes(id) => {
            if !ctx.library.delete_item(user, id).await? {
                return refused();
            }
            // Without reply_markup the edit also removes the keyboard (its buttons are dead now).
            if let Err(e) = bot.edit_message_caption(chat, mid).caption(lang.t("deleted")).await {
                tracing::debug!(error = %e, "could not mark the message deleted");
            }
            Ok(Some((lang.t("deleted"), false)))
        }
        Callback::DeleteNo(id) => {
            let Some(item) = ctx.library.owned_item(user, id).await? else { return refused() };
            restore_actions(bot, chat, mid, lang, &item).await?;
            Ok(None)
        }
        Callback::SavePreset(id) => {
            if ctx.library.owned_item(user, id).await?.is_none_or(|i| i.kind != "create") {
                return refused();
            }
            dialogue.update(Step::PresetName { item: id.short() }).await?;
            bot.send_message(chat, lang.t("preset_ask_name")).await?;
            Ok(None)
        }
        Callback::Presets => {
            show_presets(bot, chat, ctx, lang, user, None).await?;
            Ok(None)
        }
        Callback::PresetRename(n) => {
            if ctx.library.preset(user, n).await?.is_none() {
                return refused();
            }
            dialogue.update(Step::PresetRename { number: n }).await?;
            bot.send_message(chat, lang.t("preset_rename_ask")).await?;
            Ok(None)
        }
        Callback::PresetDelete(n) => {
            if !ctx.library.delete_preset(user, n).await? {
                return refused();
            }
            show_presets(bot, chat, ctx, lang, user, Some(mid)).await?;
            Ok(Some((lang.t("preset_deleted"), false)))
        }
        _ => Ok(None),
    }
}

/// Answers a message that should be a name (a category, a preset): `act` turns the name into
/// the reply. Anything but text is asked again; commands never get here (/cancel leaves).
async fn on_name<F, Fut>(
    bot: &TgBot,
    msg: &Message,
    me: &Caller,
    dialogue: &ChatDialogue,
    act: F,
) -> Result<(), BotError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<String, BotError>>,
{
    let Some(text) = msg.text().map(str::trim).filter(|t| !t.is_empty()) else {
        bot.send_message(msg.chat.id, me.lang.t("name_needed")).await?;
        return Ok(());
    };
    dialogue.exit().await?;
    let reply = act(text.to_string()).await?;
    bot.send_message(msg.chat.id, reply).await?;
    Ok(())
}

/// The name of a new category for `item` (a short id).
pub async fn on_category_name(
    bot: TgBot,
    msg: Message,
    ctx: Arc<BotCtx>,
    me: Caller,
    dialogue: ChatDialogue,
    item: String,
) -> Result<(), BotError> {
    let id = ImageId::from_short(&item).unwrap_or(ImageId(0));
    on_name(&bot, &msg, &me, &dialogue, |text| async {
        Ok(match ctx.library.categorise(me.id(), id, Err(text)).await? {
            Some(name) => me.lang.tf("category_added", &[("name", &name)]),
            None => me.lang.t("not_yours"),
        })
    })
    .await
}

/// The name of a preset saved from `item` (a short id).
pub async fn on_preset_name(
    bot: TgBot,
    msg: Message,
    ctx: Arc<BotCtx>,
    me: Caller,
    dialogue: ChatDialogue,
    item: String,
) -> Result<(), BotError> {
    let (id, lang, user) = (ImageId::from_short(&item).unwrap_or(ImageId(0)), me.lang, me.id());
    on_name(&bot, &msg, &me, &dialogue, |text| async move {
        Ok(match ctx.library.save_preset(user, id, &text).await? {
            Some(_) => lang.tf("preset_saved", &[("name", &crate::store::library::clean_name(&text))]),
            None => lang.t("not_yours"),
        })
    })
    .await
}

/// A preset's new name.
pub async fn on_preset_rename(
    bot: TgBot,
    msg: Message,
    ctx: Arc<BotCtx>,
    me: Caller,
    dialogue: ChatDialogue,
    number: u32,
) -> Result<(), BotError> {
    let (lang, user) = (me.lang, me.id());
    on_name(&bot, &msg, &me, &dialogue, |text| async move {
        Ok(match ctx.library.rename_preset(user, number, &text).await? {
            true => lang.tf("preset_renamed", &[("name", &crate::store::library::clean_name(&text))]),
            false => lang.t("not_yours"),
        })
    })
    .await
}
