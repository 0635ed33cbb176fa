//! "📊 История операций" under the balance (and `/history`): the user's ledger, a page at a
//! time, in their language and the bot's time zone (`billing.time_zone`).

use super::Caller;
use crate::billing::history::{HistoryKind, HistoryRow};
use crate::bot::i18n::Lang;
use crate::bot::{BotCtx, BotError, TgBot, keyboards};
use teloxide::prelude::*;
use teloxide::types::MessageId;

/// Shows page `page` (0 first): a new message, or the pressed one edited.
pub async fn show(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    me: &Caller,
    page: u16,
    edit: Option<MessageId>,
) -> Result<(), BotError> {
    let lang = me.lang;
    let (rows, more) = ctx.billing.history(me.id(), usize::from(page)).await?;
    let tz = jiff::tz::TimeZone::get(&ctx.config.billing.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let mut text = lang.tf("history_title", &[("page", &(page + 1))]);
    if rows.is_empty() {
        text.push('\n');
        text.push_str(&lang.t("history_empty"));
    }
    for r in &rows {
        text.push('\n');
        text.push_str(&line(ctx, me, lang, &tz, r));
    }
    let kb = keyboards::history(lang, page, more);
    match edit {
        Some(id) => bot.edit_message_text(chat, id, text).reply_markup(kb).await.map(|_| ())?,
        None => bot.send_message(chat, text).reply_markup(kb).await.map(|_| ())?,
    }
    Ok(())
}

/// "05.12 14:03 · −15 кредитов · списание · Kling".
fn line(ctx: &BotCtx, me: &Caller, lang: Lang, tz: &jiff::tz::TimeZone, r: &HistoryRow) -> String {
    let when = jiff::Timestamp::from_millisecond(r.at_ms)
        .map(|t| t.to_zoned_datetime(tz.clone()).strftime("%d.%m.%Y %H:%M").to_string())
        .unwrap_or_default();
    let what = match r.kind {
        HistoryKind::Charge => lang.t("history_charge"),
        HistoryKind::Reserve => lang.t("history_reserve"),
        HistoryKind::Refund => lang.t("history_refund"),
        HistoryKind::Bonus => lang.t("history_bonus"),
        HistoryKind::Adjust => lang.t("history_adjust"),
        HistoryKind::Other(kind) => {
            // The stored word (`purchase`, `referral`…) names the locale key.
            let word = serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            match lang.t(&format!("history_{word}")) {
                t if t.starts_with("history_") => word,
                t => t,
            }
        }
    };
    let model =
        r.model_id.as_deref().map(|id| ctx.catalog.model(id).map_or_else(|| id.to_string(), |m| m.display_name));
    let detail = model.or_else(|| r.reason.clone().filter(|_| r.kind == HistoryKind::Adjust)).unwrap_or_default();
    let sign = if r.delta.is_negative() { "−" } else { "+" };
    let amount = me.money(ctx, crate::domain::Credits(r.delta.0.saturating_abs()));
    let mut out = format!("{when} · {sign}{amount} · {what}");
    if !detail.is_empty() {
        out.push_str(" · ");
        out.extend(detail.chars().take(60));
    }
    out
}
