//! Telegram UI: the handler tree, and the `jobs::Notifier` that reports progress and delivers
//! results. Handlers are thin: parse, call `billing`/`jobs`, render a text from `i18n` and a
//! keyboard from `keyboards`.

pub mod dialogue;
pub mod handlers;
pub mod i18n;
pub mod inbox;
pub mod keyboards;
pub mod notifier;
pub mod prompt;

use crate::billing::{Billing, BillingError};
use crate::config::Config;
use crate::jobs::{JobEngine, JobsError};
use crate::store::Store;
use std::sync::Arc;
use teloxide::dispatching::UpdateHandler;
use teloxide::prelude::*;
use teloxide::utils::command::BotCommands;

/// The Bot API client type used everywhere in the bot: sends go through teloxide's Throttle
/// (per-chat and global message limits; protocols.md §1.10). Edits are limited separately by
/// the notifier's `EditLimiter`.
pub type TgBot = teloxide::adaptors::Throttle<teloxide::Bot>;

/// Errors a handler can end with (logged by the dispatcher's error handler).
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
}

/// What handlers need, shared through `dptree::deps!`.
#[derive(Clone)]
pub struct BotCtx {
    pub config: Arc<Config>,
    pub billing: Billing,
    pub jobs: JobEngine,
    pub store: Store,
}

/// Commands shown in the Telegram menu (`setMyCommands`).
#[derive(BotCommands, Clone, Debug, PartialEq)]
#[command(rename_rule = "lowercase")]
pub enum Command {
    #[command(description = "start and register")]
    Start,
    #[command(description = "main menu")]
    Menu,
    #[command(description = "how to use the bot")]
    Help,
    #[command(description = "your credits")]
    Balance,
    #[command(description = "check the bot is alive")]
    Ping,
    #[command(description = "your pictures")]
    My,
    #[command(description = "your presets")]
    Presets,
}

/// The handler tree (a function so tests build the same tree).
pub fn schema() -> UpdateHandler<BotError> {
    let commands = dptree::entry().filter_command::<Command>().endpoint(handlers::commands::run);
    dptree::entry()
        .chain(once_per_update())
        .branch(Update::filter_message().branch(commands).endpoint(handlers::generate::on_message))
        .branch(Update::filter_callback_query().endpoint(handlers::callbacks::route))
        .branch(Update::filter_inline_query().endpoint(handlers::inline::on_query))
        .branch(Update::filter_chosen_inline_result().endpoint(handlers::inline::on_chosen))
}

/// Update kinds the bot asks Telegram for (`allowed_updates` of getUpdates and setWebhook):
/// inline queries and chosen inline results are only sent when asked for by name.
pub fn allowed_updates() -> Vec<teloxide::types::AllowedUpdate> {
    use teloxide::types::AllowedUpdate;
    vec![
        AllowedUpdate::Message,
        AllowedUpdate::CallbackQuery,
        AllowedUpdate::InlineQuery,
        AllowedUpdate::ChosenInlineResult,
    ]
}

/// Wraps the rest of the tree so each update is handled to completion once.
///
/// Telegram re-delivers every update whose offset was not confirmed, and after a crash that
/// includes updates we were in the middle of. The update id is recorded as started before the
/// handler runs and as finished after it: a finished one is skipped, an unfinished one is
/// handled again (handlers that create jobs are idempotent per message, see
/// `handlers::generate::draft_id_for`), and one that died [`crate::store::MAX_UPDATE_ATTEMPTS`]
/// times is dropped so it cannot crash-loop the bot.
fn once_per_update() -> UpdateHandler<BotError> {
    use crate::store::UpdateStart;
    use std::ops::ControlFlow;
    use teloxide::dispatching::DpHandlerDescription;
    dptree::from_fn_with_description(
        <DpHandlerDescription as dptree::HandlerDescription>::filter_async(),
        |deps: dptree::di::DependencyMap, cont| async move {
            let (Some(upd), Some(ctx)) = (deps.try_get::<Update>(), deps.try_get::<Arc<BotCtx>>()) else {
                return cont(deps).await;
            };
            let id = upd.id.0 as i64;
            // Updates cut off by a restart are handled again one at a time, so that a death
            // during one counts against that update only, not against every update replayed
            // beside it (a few quick restarts would otherwise drop innocent updates).
            static REPLAYING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
            let _alone = match ctx.jobs.update_interrupted(id).await {
                Ok(true) => Some(REPLAYING.lock().await),
                _ => None,
            };
            match ctx.jobs.begin_update(id).await {
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
                    let _ = ctx.jobs.finish_update(id).await;
                    return ControlFlow::Continue(deps);
                }
                Err(e) => tracing::error!(error = %e, "could not record update id; handling it anyway"),
            }
            let out = cont(deps).await;
            if let Err(e) = ctx.jobs.finish_update(id).await {
                tracing::error!(error = %e, update_id = id, "could not record the update as handled");
            }
            out
        },
        dptree::HandlerSignature::Other {
            obligations: Default::default(),
            guaranteed_outcomes: Default::default(),
            conditional_outcomes: Default::default(),
            continues: true,
        },
    )
}

/// Registers commands with Telegram (English and Russian descriptions).
pub async fn set_commands(bot: &TgBot) -> Result<(), teloxide::RequestError> {
    // BotCommand.command is 1–32 chars of [a-z0-9_] (api.json): no leading slash.
    let commands = Command::bot_commands()
        .into_iter()
        .map(|mut c| {
            c.command = c.command.trim_start_matches('/').to_string();
            c
        })
        .collect::<Vec<_>>();
    bot.set_my_commands(commands).await?;
    Ok(())
}
