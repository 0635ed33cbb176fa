//! One file per flow.

pub mod add_text;
pub mod callbacks;
pub mod commands;
pub mod generate;
pub mod inline;
pub mod library;

use super::BotCtx;
use super::i18n::Lang;
use crate::billing::Profile;
use crate::domain::UserId;
use crate::store::records::UserRecord;
use teloxide::types::User;

/// Registers or refreshes the user behind an update; returns the record, whether it is new,
/// and the language to answer in.
pub async fn touch_user(ctx: &BotCtx, user: &User) -> Result<(UserRecord, bool, Lang), super::BotError> {
    let profile = Profile {
        id: UserId(user.id.0 as i64),
        first_name: user.first_name.clone(),
        username: user.username.clone(),
        language_code: user.language_code.clone(),
    };
    let (rec, new) = ctx.billing.register(profile).await?;
    Ok((rec, new, Lang::from_code(user.language_code.as_deref())))
}
