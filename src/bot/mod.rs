//! Telegram UI: the handler tree, and the `jobs::Notifier` that reports progress and delivers
//! results. Handlers are thin: parse, call `jobs`/`library`/`billing`, render a text from
//! `i18n` and a keyboard from `keyboards`.
//!
//! Every update passes the same gate first ([`schema`]): it is handled once
//! ([`once_per_update`]), its user is registered and checked against bans, and the chat's
//! stored dialogue step is loaded; then the step picks the message handler. A handler that
//! fails still answers its user ([`answer_errors`]).

pub mod dialogue;
pub mod handlers;
pub mod i18n;
pub mod inbox;
pub mod keyboards;
pub mod notifier;
pub mod prompt;
pub mod stars;

use crate::billing::{Billing, BillingError};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::jobs::{JobEngine, JobsError};
use crate::library::Library;
use crate::store::Store;
use dialogue::{RedbDialogues, Step};
use handlers::Caller;
use i18n::Lang;
use std::ops::ControlFlow;
use std::sync::Arc;
use teloxide::dispatching::{DpHandlerDescription, UpdateHandler};
use teloxide::prelude::*;
use teloxide::types::{BotCommand, BotCommandScope};
use teloxide::utils::command::BotCommands;

/// The Bot API client type used everywhere in the bot: sends go through teloxide's Throttle
/// (per-chat and global message limits; protocols.md §1.10). Edits are limited separately by
/// the notifier's `EditLimiter`.
pub type TgBot = teloxide::adaptors::Throttle<teloxide::Bot>;

/// A chat's dialogue handle (its stored [`Step`]).
pub type ChatDialogue = teloxide::dispatching::dialogue::Dialogue<Step, RedbDialogues>;

/// Errors a handler can end with. Each is logged by the dispatcher and answered to the user
/// with [`BotError::user_text`], so a failing handler never leaves a user without a reply.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error("telegram: {0}")]
    Telegram(#[from] teloxide::RequestError),
    #[error("download: {0}")]
    Download(#[from] teloxide::DownloadError),
    #[error(transparent)]
    Jobs(#[from] JobsError),
    #[error(transparent)]
    Billing(#[from] BillingError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
}

impl BotError {
    /// The locale key of what the user is told. Nothing a failed handler started was charged:
    /// holds are written in the job's own transaction, which either committed (and the job
    /// settles it) or did not happen.
    pub fn user_text(&self) -> &'static str {
        match self {
            BotError::Download(_) => "error_download",
            BotError::Jobs(JobsError::UnknownModel(_) | JobsError::ModelDisabled(_)) => "no_models",
            _ => "error_generic",
        }
    }
}

/// What handlers need, shared through `dptree::deps!`.
#[derive(Clone)]
pub struct BotCtx {
    pub config: Arc<Config>,
    pub billing: Billing,
    pub jobs: JobEngine,
    pub library: Library,
    /// Operator actions for `telegram.admins` (audited as `tg:<id>`).
    pub admin: crate::admin::Admin,
    pub catalog: Catalog,
    pub store: Store,
    /// Dialogue steps and drafts (also in the dependency map as `Arc<RedbDialogues>`).
    pub dialogues: Arc<RedbDialogues>,
    /// The bot's `@username` once `getMe` answered (for referral links), asked once.
    pub own_username: Arc<tokio::sync::OnceCell<String>>,
    /// Crypto Pay top-ups, when `[billing.crypto_pay]` is configured.
    pub crypto: Option<crate::billing::crypto_pay::CryptoPay>,
}

/// Commands shown in the Telegram menu (`setMyCommands`, in English and Russian: the texts
/// are the `cmd_<name>` locale keys; the descriptions here are the fallback).
#[derive(BotCommands, Clone, Debug, PartialEq)]
#[command(rename_rule = "lowercase")]
pub enum Command {
    /// `/start` with an optional deep-link payload (`t.me/bot?start=…`), kept for referrals.
    #[command(description = "start and register")]
    Start(String),
    #[command(description = "main menu")]
    Menu,
    #[command(description = "create a picture from a description", alias = "new")]
    Create,
    #[command(description = "a detailed prompt from your idea")]
    Write,
    #[command(description = "make a video from a photo or a description")]
    Video,
    #[command(description = "quick video from a photo, no questions")]
    Quick,
    #[command(description = "your videos and average generation times")]
    Stats,
    #[command(description = "your jobs: queued, running, recent")]
    Status(String),
    #[command(description = "your credits in and out")]
    History,
    /// Admins: `/add_balance USER AMOUNT [reason]`.
    #[command(hide, rename = "add_balance", alias = "addtokens")]
    AddBalance(String),
    /// Admins: `/users [page|query]`.
    #[command(hide)]
    Users(String),
    /// Admins: `/ban USER`.
    #[command(hide)]
    Ban(String),
    /// Admins: `/unban USER`.
    #[command(hide)]
    Unban(String),
    /// Admins: `/refund <telegram charge id>`.
    #[command(hide)]
    Refund(String),
    #[command(description = "your pictures")]
    My,
    #[command(description = "your presets")]
    Presets,
    #[command(description = "your credits")]
    Balance,
    #[command(description = "top up your balance")]
    Buy,
    #[command(description = "help with payments")]
    Paysupport,
    #[command(description = "payment terms")]
    Terms,
    #[command(description = "interface language")]
    Language,
    #[command(description = "invite friends: your link and rewards")]
    Invite,
    #[command(description = "how to use the bot")]
    Help,
    #[command(description = "cancel the current action")]
    Cancel,
    #[command(description = "check the bot is alive")]
    Ping,
    /// Takes the default at a step that offers it ("📝 Add text" style wishes).
    #[command(hide)]
    Skip,
}

/// The handler tree (a function so tests build the same tree).
pub fn schema() -> UpdateHandler<BotError> {
    let commands = dptree::entry().filter_command::<Command>().endpoint(handlers::commands::run);
    let unknown_command = dptree::filter(|msg: Message| msg.text().is_some_and(|t| t.starts_with('/')))
        .endpoint(handlers::commands::unknown);
    let steps = dptree::entry()
        .branch(dptree::case![Step::AddTextPhoto].endpoint(handlers::add_text::on_photo))
        .branch(dptree::case![Step::AddTextText { input }].endpoint(handlers::add_text::on_text))
        .branch(dptree::case![Step::AddTextWishes { input, text }].endpoint(handlers::add_text::on_wishes))
        .branch(dptree::case![Step::CategoryName { item }].endpoint(handlers::library::on_category_name))
        .branch(dptree::case![Step::PresetName { item }].endpoint(handlers::library::on_preset_name))
        .branch(dptree::case![Step::PresetRename { number }].endpoint(handlers::library::on_preset_rename))
        .branch(dptree::case![Step::Photos { inputs, caption }].endpoint(handlers::edit::on_message))
        .branch(dptree::case![Step::Tool { task, inputs, caption, subject }].endpoint(handlers::tools::on_message))
        .branch(dptree::case![Step::Video { quick, inputs, caption }].endpoint(handlers::video::on_message))
        .branch(dptree::case![Step::Write].endpoint(handlers::write::on_idea))
        .branch(dptree::case![Step::Idle].endpoint(handlers::generate::on_message));
    // Payments come before the gate and the steps: a pre-checkout must be answered even for a
    // banned payer (ok=false, not silence), and money paid is credited whatever step the chat
    // is at.
    let payments = dptree::entry()
        .branch(Update::filter_pre_checkout_query().endpoint(handlers::pay::on_pre_checkout))
        .branch(
            Update::filter_message()
                .filter(|msg: Message| msg.successful_payment().is_some())
                .endpoint(handlers::pay::on_successful_payment),
        )
        // Telegram's own "refunded" service message after refundStarPayment: the refund
        // path already told the payer, so it is not a prompt.
        .branch(
            Update::filter_message()
                .filter(|msg: Message| matches!(msg.kind, teloxide::types::MessageKind::RefundedPayment(_)))
                .endpoint(|| async { Ok(()) }),
        );
    let rest = dptree::entry()
        .chain(gate())
        .chain(answer_errors())
        .map(|c: Caller| c.step.clone())
        .branch(
            Update::filter_message()
                .filter_map(|msg: Message, dialogues: Arc<RedbDialogues>| {
                    Some(ChatDialogue::new(dialogues, msg.chat.id))
                })
                .branch(commands)
                .branch(unknown_command)
                .branch(steps),
        )
        .branch(Update::filter_callback_query().endpoint(handlers::callbacks::route))
        .branch(Update::filter_inline_query().endpoint(handlers::inline::on_query))
        .branch(Update::filter_chosen_inline_result().endpoint(handlers::inline::on_chosen));
    dptree::entry().chain(once_per_update()).branch(payments).branch(rest)
}

/// Update kinds the bot asks Telegram for (`allowed_updates` of getUpdates and setWebhook):
/// inline queries and chosen inline results are only sent when asked for by name, and
/// `pre_checkout_query` must be listed for Stars payments (`successful_payment` arrives inside
/// `message`; protocols.md §1.2, §1.8).
pub fn allowed_updates() -> Vec<teloxide::types::AllowedUpdate> {
    use teloxide::types::AllowedUpdate;
    vec![
        AllowedUpdate::Message,
        AllowedUpdate::CallbackQuery,
        AllowedUpdate::InlineQuery,
        AllowedUpdate::ChosenInlineResult,
        AllowedUpdate::PreCheckoutQuery,
    ]
}

/// Registers the user behind the update, refuses banned users with one "access suspended"
/// answer, and loads the chat's dialogue step; passes a [`Caller`] on. Updates without a
/// user (channel posts) stop here. A store failure is answered like a handler error.
fn gate() -> UpdateHandler<BotError> {
    dptree::filter_map_async(|upd: Update, bot: TgBot, ctx: Arc<BotCtx>| async move {
        let from = upd.from()?.clone();
        match handlers::caller(&ctx, &from, upd.chat().map(|c| c.id), start_referrer(&upd)).await {
            Ok(c) if c.user.banned => {
                tracing::info!(user = from.id.0, "update from a banned user refused");
                answer(&bot, &upd, c.lang, c.lang.t("banned")).await;
                None
            }
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "could not register the user");
                let lang = Lang::from_code(from.language_code.as_deref());
                answer(&bot, &upd, lang, lang.t(error_text(&ctx, &e))).await;
                None
            }
        }
    })
}

/// The referrer of a `/start ref_<code>` message (`/start@bot ref_…` too); `None` otherwise.
fn start_referrer(upd: &Update) -> Option<crate::domain::UserId> {
    let teloxide::types::UpdateKind::Message(m) = &upd.kind else { return None };
    let mut words = m.text()?.split_whitespace();
    let cmd = words.next()?;
    if cmd != "/start" && !cmd.starts_with("/start@") {
        return None;
    }
    crate::billing::parse_referral(words.next()?)
}

/// Tells the user when the rest of the tree ends in an error (the dispatcher logs it too).
fn answer_errors() -> UpdateHandler<BotError> {
    dptree::from_fn_with_description(
        <DpHandlerDescription as dptree::HandlerDescription>::filter_async(),
        |deps: dptree::di::DependencyMap, cont| async move {
            let who = (deps.try_get::<TgBot>(), deps.try_get::<Update>(), deps.try_get::<Caller>());
            let ctx = deps.try_get::<Arc<BotCtx>>();
            let out: ControlFlow<Result<(), BotError>, dptree::di::DependencyMap> = cont(deps).await;
            if let (ControlFlow::Break(Err(e)), (Some(bot), Some(upd), Some(c)), Some(ctx)) = (&out, who, ctx) {
                answer(&bot, &upd, c.lang, c.lang.t(error_text(&ctx, e))).await;
            }
            out
        },
        wrapper(),
    )
}

/// The locale key of what a failed handler tells its user: once a database write failed (a
/// full disk) every error is that one, whatever form it reached the handler in.
fn error_text(ctx: &BotCtx, e: &BotError) -> &'static str {
    if ctx.store.io_watch().failed() { "error_storage" } else { e.user_text() }
}

/// The signature of a handler that wraps the rest of the tree: it needs nothing from the
/// dependency map by type (it looks things up itself) and adds nothing to it.
fn wrapper() -> dptree::HandlerSignature {
    dptree::HandlerSignature::Other {
        obligations: Default::default(),
        guaranteed_outcomes: Default::default(),
        conditional_outcomes: Default::default(),
        continues: true,
    }
}

/// One short answer to whatever the update was: a message in its chat, a callback alert, or
/// an empty inline answer whose button carries the text. Failures are only logged: this is
/// the last word on an update.
async fn answer(bot: &TgBot, upd: &Update, lang: Lang, text: String) {
    use teloxide::types::{InlineQueryResultsButton, InlineQueryResultsButtonKind, UpdateKind};
    let sent = match &upd.kind {
        UpdateKind::CallbackQuery(q) => {
            bot.answer_callback_query(q.id.clone()).text(text).show_alert(true).await.map(|_| ())
        }
        UpdateKind::InlineQuery(q) => {
            let title: String = text.chars().take(64).collect();
            let button = InlineQueryResultsButton {
                text: title,
                kind: InlineQueryResultsButtonKind::StartParameter(lang.code().to_string()),
            };
            bot.answer_inline_query(q.id.clone(), vec![])
                .is_personal(true)
                .cache_time(0)
                .button(button)
                .await
                .map(|_| ())
        }
        _ => match upd.chat() {
            Some(chat) => bot.send_message(chat.id, text).await.map(|_| ()),
            None => Ok(()),
        },
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not answer the user");
    }
}

/// Wraps the rest of the tree so each update is handled to completion once.
///
/// Telegram re-delivers every update whose offset was not confirmed, and after a crash that
/// includes updates we were in the middle of. The update id is recorded as started before the
/// handler runs and as finished after it: a finished one is skipped, an unfinished one is
/// handled again (handlers that create jobs are idempotent per message, see
/// `handlers::generate::draft_id`), and one that died [`crate::store::MAX_UPDATE_ATTEMPTS`]
/// times is dropped so it cannot crash-loop the bot.
fn once_per_update() -> UpdateHandler<BotError> {
    use crate::store::UpdateStart;
    dptree::from_fn_with_description(
        <DpHandlerDescription as dptree::HandlerDescription>::filter_async(),
        |deps: dptree::di::DependencyMap, cont| async move {
            let (Some(upd), Some(ctx)) = (deps.try_get::<Update>(), deps.try_get::<Arc<BotCtx>>()) else {
                return cont(deps).await;
            };
            let updates = inbox::Updates::new(ctx.store.clone());
            let id = upd.id.0 as i64;
            // Updates cut off by a restart are handled again one at a time, so that a death
            // during one counts against that update only, not against every update replayed
            // beside it (a few quick restarts would otherwise drop innocent updates).
            static REPLAYING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
            let _alone = match updates.interrupted(id).await {
                Ok(true) => Some(REPLAYING.lock().await),
                _ => None,
            };
            match updates.begin(id).await {
                Ok(UpdateStart::First) => {}
                Ok(UpdateStart::Again(attempt)) => {
                    tracing::info!(update_id = id, attempt, "handling an update again after a restart");
                }
                Ok(UpdateStart::Handled) => return ControlFlow::Continue(deps),
                Ok(UpdateStart::GaveUp) => {
                    tracing::error!(
                        update_id = id,
                        "update dropped: its handler died {} times",
                        crate::store::MAX_UPDATE_ATTEMPTS
                    );
                    let _ = updates.finish(id).await;
                    return ControlFlow::Continue(deps);
                }
                Err(e) => tracing::error!(error = %e, "could not record update id; handling it anyway"),
            }
            let out = cont(deps).await;
            if let Err(e) = updates.finish(id).await {
                tracing::error!(error = %e, update_id = id, "could not record the update as handled");
            }
            out
        },
        wrapper(),
    )
}

/// The command menu in `lang`: every visible command with its `cmd_<name>` description.
pub fn command_list(lang: Lang) -> Vec<BotCommand> {
    // BotCommand.command is 1–32 chars of [a-z0-9_] (api.json): no leading slash.
    Command::bot_commands()
        .into_iter()
        .map(|c| {
            let name = c.command.trim_start_matches('/').to_string();
            let description = lang.t(&format!("cmd_{name}"));
            BotCommand::new(name, description)
        })
        .collect()
}

/// Registers the command menu with Telegram: English for everyone, Russian for Russian
/// clients (`language_code`).
pub async fn set_commands(bot: &TgBot) -> Result<(), teloxide::RequestError> {
    bot.set_my_commands(command_list(Lang::En)).scope(BotCommandScope::Default).await?;
    bot.set_my_commands(command_list(Lang::Ru)).scope(BotCommandScope::Default).language_code("ru").await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_a_description_in_every_language() {
        for lang in Lang::ALL {
            for c in command_list(lang) {
                assert!(!c.description.starts_with("cmd_"), "{lang:?}: no text for /{}", c.command);
                assert!((3..=256).contains(&c.description.chars().count()), "Bot API limit: {c:?}");
            }
        }
        assert_ne!(command_list(Lang::Ru)[0].description, command_list(Lang::En)[0].description);
    }

    #[test]
    fn new_is_create_and_start_keeps_its_payload() {
        assert_eq!(Command::parse("/new", "bot").ok(), Some(Command::Create));
        assert_eq!(Command::parse("/start ref_42", "bot").ok(), Some(Command::Start("ref_42".into())));
        assert_eq!(Command::parse("/status 12", "bot").ok(), Some(Command::Status("12".into())));
        assert_eq!(Command::parse("/addtokens 1 5", "bot").ok(), Some(Command::AddBalance("1 5".into())));
        assert_eq!(Command::parse("/add_balance 1 5", "bot").ok(), Some(Command::AddBalance("1 5".into())));
        assert!(Command::parse("/statuss 12", "bot").is_err());
    }

    #[test]
    fn every_handled_task_has_a_flow() {
        // `Task::HANDLED` is what check-config accepts; each must be reachable from a flow here.
        for task in crate::domain::Task::HANDLED {
            assert!(handlers::flow_for(task).is_some(), "{task:?} has no flow");
        }
    }
}
