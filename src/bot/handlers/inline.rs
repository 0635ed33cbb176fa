//! Inline mode: `@bot words` in any chat offers the user's own pictures (favourites first, then
//! recent ones whose prompt matches) as cached photos by file_id; a pick is counted.
//!
//! Telegram sends chosen_inline_result only when inline feedback is switched on for the bot in
//! @BotFather (`/setinlinefeedback`), and both update kinds only when `allowed_updates` names
//! them (`bot::allowed_updates`).

use super::Caller;
use crate::bot::{BotCtx, BotError, TgBot};
use std::sync::Arc;
use teloxide::prelude::*;
use teloxide::types::{ChosenInlineResult, InlineQueryResult, InlineQueryResultCachedPhoto};

/// Results per answer (answerInlineQuery allows 50).
const MAX_RESULTS: usize = 20;
/// Seconds Telegram may cache an answer; short, so a new star shows up soon. The answer is
/// per user (`is_personal`), so nobody is ever served another user's cached results.
const CACHE_SECS: u32 = 5;

/// An inline query: answers with the user's matching pictures.
pub async fn on_query(bot: TgBot, q: InlineQuery, ctx: Arc<BotCtx>, me: Caller) -> Result<(), BotError> {
    let lang = me.lang;
    let items = ctx.library.inline_items(me.id(), &q.query, MAX_RESULTS).await?;
    let results: Vec<InlineQueryResult> = items
        .iter()
        .filter_map(|it| {
            let file_id = it.photo_file_id.clone()?;
            let caption = super::library::caption(&ctx, lang, it);
            let title: String = it.prompt.chars().take(64).collect();
            Some(InlineQueryResult::CachedPhoto(
                InlineQueryResultCachedPhoto::new(it.id.short(), file_id.into()).title(title).caption(caption),
            ))
        })
        .collect();
    bot.answer_inline_query(q.id, results).is_personal(true).cache_time(CACHE_SECS).await?;
    Ok(())
}

/// A chosen_inline_result: counted (counter `inline_chosen`) when the picture is the user's.
pub async fn on_chosen(r: ChosenInlineResult, ctx: Arc<BotCtx>, me: Caller) -> Result<(), BotError> {
    if ctx.library.count_inline_chosen(me.id(), &r.result_id).await?.is_none() {
        tracing::debug!(result_id = %r.result_id, "chosen inline result not counted (not the user's item)");
    }
    Ok(())
}
