//! One file per flow; `input` holds what several flows share (photos from the user).

pub mod add_text;
pub mod admin;
pub mod callbacks;
pub mod commands;
pub mod edit;
pub mod generate;
pub mod history;
pub mod inline;
pub mod input;
pub mod invite;
pub mod levels;
pub mod library;
pub mod pay;
pub mod tools;
pub mod video;
pub mod write;

use super::dialogue::Step;
use super::i18n::Lang;
use super::{BotCtx, BotError};
use crate::billing::Profile;
use crate::domain::{Credits, UserId};
use crate::store::records::UserRecord;
use teloxide::types::{ChatId, User};

/// The user behind an update, as the gate found them: registered (or refreshed), not banned,
/// with the language to answer in and the chat's dialogue step.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserRecord,
    /// Registered by this update (the signup bonus was just credited).
    pub new: bool,
    pub lang: Lang,
    /// The chat's step; `Idle` for updates without a chat (inline queries).
    pub step: Step,
}

impl Caller {
    pub fn id(&self) -> UserId {
        self.user.id
    }

    /// An amount in the configured currency, in the caller's language ("25 кредитов").
    pub fn money(&self, ctx: &BotCtx, amount: Credits) -> String {
        self.lang.money(amount, ctx.billing.currency())
    }
}

/// Registers or refreshes `user` and loads the step of `chat`. `referrer`: the user named by a
/// `/start ref_<code>` link in this update, attributed only if this update registers the user.
pub async fn caller(
    ctx: &BotCtx,
    user: &User,
    chat: Option<ChatId>,
    referrer: Option<UserId>,
) -> Result<Caller, BotError> {
    let profile = Profile {
        id: UserId(user.id.0 as i64),
        first_name: user.first_name.clone(),
        username: user.username.clone(),
        language_code: user.language_code.clone(),
    };
    let (rec, new) = ctx.billing.register(profile, referrer).await?;
    let lang = Lang::from_code(rec.language.as_deref().or(user.language_code.as_deref()));
    let step = match chat {
        Some(chat) => ctx.dialogues.step(chat).await?,
        None => Step::Idle,
    };
    Ok(Caller { user: rec, new, lang, step })
}

/// The flow that serves a task's models (for the check that every task `check-config` accepts
/// is reachable: `bot::tests::every_handled_task_has_a_flow`).
#[cfg(test)]
pub fn flow_for(task: crate::domain::Task) -> Option<&'static str> {
    use crate::domain::Task;
    match task {
        Task::TextToImage => Some("generate"),
        Task::Edit => Some("edit"),
        Task::Upscale
        | Task::RemoveBackground
        | Task::Retouch
        | Task::FaceSwap
        | Task::Variations
        | Task::StyleTransfer
        | Task::Sketch
        | Task::Reference => Some("tools"),
        Task::ImageToVideo | Task::TextToVideo => Some("video"),
    }
}
