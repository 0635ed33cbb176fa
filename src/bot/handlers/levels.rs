//! Access levels in the chat: the balance view (level, today's quota, held credits, "≈ N
//! generations"), the refusal of a job beyond the quota or outside the level's models, and
//! levels sold as Telegram Stars subscriptions (the offer with its invoice links, and the
//! payment). The rules live in `billing::levels` / `billing::subscriptions`.

use super::Caller;
use crate::billing::StarPayment;
use crate::billing::levels::LevelRefusal;
use crate::billing::subscriptions::{SUBSCRIPTION_PERIOD_SECS, SubscriptionOutcome, subscription_payload};
use crate::bot::i18n::Lang;
use crate::bot::{BotCtx, BotError, TgBot, keyboards};
use teloxide::prelude::*;
use teloxide::types::{ChatId, InlineKeyboardMarkup, LabeledPrice, Seconds, SuccessfulPayment};

/// A moment in the quota's zone as `HH:MM <zone>` ("00:00 МСК"): the zone's abbreviation,
/// with Moscow time called МСК in Russian as people say it.
pub fn local_time(ctx: &BotCtx, lang: Lang, at_ms: i64) -> String {
    let tz = ctx.billing.levels().zone().clone();
    let Ok(t) = jiff::Timestamp::from_millisecond(at_ms) else { return String::new() };
    let zoned = t.to_zoned_datetime(tz.clone());
    let zone = match (tz.iana_name(), lang) {
        (Some("Europe/Moscow"), Lang::Ru) => "МСК".to_string(),
        (Some("Europe/Moscow"), _) => "MSK".to_string(),
        _ => zoned.strftime("%Z").to_string(),
    };
    format!("{} {zone}", zoned.strftime("%H:%M"))
}

/// A date in the quota's zone (`dd.mm.yyyy`).
fn local_date(ctx: &BotCtx, at_ms: i64) -> String {
    let tz = ctx.billing.levels().zone().clone();
    jiff::Timestamp::from_millisecond(at_ms)
        .map(|t| t.to_zoned_datetime(tz).strftime("%d.%m.%Y").to_string())
        .unwrap_or_default()
}

/// 💰 Balance: the balance and held credits, the level (until when, for a subscription), what
/// is left of today's quota and when it resets, and "≈ N generations" at the usual model.
pub async fn balance_text(ctx: &BotCtx, me: &Caller) -> Result<String, BotError> {
    let lang = me.lang;
    let mut text =
        lang.tf("balance", &[("balance", &me.money(ctx, me.user.balance)), ("held", &me.money(ctx, me.user.held))]);
    let status = ctx.billing.level_status(me.id()).await?;
    text.push('\n');
    text.push_str(&lang.tf("balance_level", &[("level", &status.level.label(lang.code()))]));
    if let Some(until) = status.until {
        text.push_str(&lang.tf("balance_level_until", &[("date", &local_date(ctx, until))]));
    }
    text.push('\n');
    match (status.level.daily_limit, status.remaining) {
        (Some(limit), Some(left)) => text.push_str(&lang.tf(
            "balance_quota",
            &[("left", &left), ("limit", &limit), ("reset", &local_time(ctx, lang, status.resets_at))],
        )),
        _ => text.push_str(&lang.t("balance_unlimited")),
    }
    if status.level.free {
        text.push('\n');
        text.push_str(&lang.t("balance_free"));
    } else if let Some(price) = ctx.jobs.usual_price(me.id()).await.filter(|p| p.0 > 0) {
        let n = me.user.balance.0 / price.0;
        text.push('\n');
        text.push_str(&lang.tf("balance_generations", &[("count", &lang.counted(n, "generations"))]));
    }
    Ok(text)
}

/// The keyboard under the balance.
pub fn balance_keyboard(ctx: &BotCtx, lang: Lang) -> InlineKeyboardMarkup {
    keyboards::balance(lang, !ctx.billing.packages().is_empty(), !ctx.billing.subscriptions().is_empty())
}

/// What a job refused by the user's level says, with the ways to get more.
pub fn refusal(ctx: &BotCtx, me: &Caller, r: &LevelRefusal) -> (String, Option<InlineKeyboardMarkup>) {
    let lang = me.lang;
    let name = |id: &str| ctx.billing.levels().get(id).map_or(id.to_string(), |l| l.label(lang.code()).to_string());
    match r {
        LevelRefusal::QuotaExhausted { level, limit, resets_at } => {
            let (subscribe, top_up) = (!ctx.billing.subscriptions().is_empty(), !ctx.billing.packages().is_empty());
            let mut text = lang.tf(
                "quota_exhausted",
                &[
                    ("limit", &lang.counted(i64::from(*limit), "generations")),
                    ("level", &name(level)),
                    ("reset", &local_time(ctx, lang, *resets_at)),
                ],
            );
            if subscribe || top_up {
                text.push_str("\n\n");
                text.push_str(&lang.t(if subscribe { "quota_more_subscribe" } else { "quota_more_topup" }));
            }
            (text, keyboards::more_quota(lang, subscribe, top_up))
        }
        LevelRefusal::ModelNotAllowed { level, model } => {
            let shown = ctx.catalog.model(model).map_or(model.clone(), |m| m.display_name);
            let text = lang.tf("level_model_refused", &[("model", &shown), ("level", &name(level))]);
            let subscribe = !ctx.billing.subscriptions().is_empty();
            (text, keyboards::more_quota(lang, subscribe, false))
        }
    }
}

/// "⭐ Subscription": each level sold as a subscription with its 30-day invoice link
/// (`createInvoiceLink` with `subscription_period`, currency `XTR`).
pub async fn show_subscriptions(bot: &TgBot, chat: ChatId, ctx: &BotCtx, me: &Caller) -> Result<(), BotError> {
    let lang = me.lang;
    let levels = ctx.billing.subscriptions();
    if levels.is_empty() {
        bot.send_message(chat, lang.t("subscribe_unavailable")).await?;
        return Ok(());
    }
    let mut lines = vec![lang.t("subscribe_intro")];
    let mut links = Vec::new();
    for level in &levels {
        let Some(sub) = &level.subscription else { continue };
        let name = level.label(lang.code());
        let limit = match level.daily_limit {
            Some(n) => lang.counted(i64::from(n), "generations"),
            None => lang.t("subscribe_unlimited"),
        };
        lines.push(lang.tf("subscribe_line", &[("level", &name), ("limit", &limit), ("stars", &sub.stars)]));
        // Telegram: title 1–32 characters, description 1–255.
        let title: String = lang.tf("subscribe_title", &[("level", &name)]).chars().take(32).collect();
        let description: String =
            lang.tf("subscribe_description", &[("level", &name), ("limit", &limit)]).chars().take(255).collect();
        let amount = u32::try_from(sub.stars).unwrap_or(u32::MAX);
        let link = bot
            .create_invoice_link(
                title.clone(),
                description,
                subscription_payload(&level.id, me.id()),
                crate::billing::STARS_CURRENCY,
                [LabeledPrice::new(title, amount)],
            )
            .subscription_period(Seconds::from_seconds(SUBSCRIPTION_PERIOD_SECS))
            .await?;
        match url::Url::parse(&link) {
            Ok(url) => links.push((lang.tf("subscribe_button", &[("level", &name), ("stars", &sub.stars)]), url)),
            Err(e) => tracing::error!(error = %e, "createInvoiceLink returned no URL"),
        }
    }
    lines.push(lang.t("subscribe_renewal"));
    bot.send_message(chat, lines.join("\n\n")).reply_markup(keyboards::subscription_links(links)).await?;
    Ok(())
}

/// Records a subscription's `successful_payment` (first period or a renewal) once and tells
/// the payer until when the level holds.
pub async fn on_payment(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    me: &Caller,
    paid: &SuccessfulPayment,
) -> Result<(), BotError> {
    let lang = me.lang;
    let charge = paid.telegram_payment_charge_id.0.clone();
    // Telegram always sends the date for a subscription; without it, one period from now.
    let expires_at = paid.subscription_expiration_date.map_or_else(
        || ctx.billing.levels().clock().now_ms() + i64::from(SUBSCRIPTION_PERIOD_SECS) * 1000,
        |d| d.timestamp_millis(),
    );
    let payment = StarPayment {
        payer: me.id(),
        currency: paid.currency.clone(),
        total_amount: i64::from(paid.total_amount),
        invoice_payload: paid.invoice_payload.clone(),
        telegram_payment_charge_id: charge.clone(),
        provider_payment_charge_id: paid.provider_payment_charge_id.clone(),
    };
    let text = match ctx.billing.record_subscription(payment, expires_at).await {
        Ok(SubscriptionOutcome::Subscribed { level, until, credits, balance, renewal }) => {
            tracing::info!(user = me.id().0, charge = %charge, level = %level, until, renewal,
                recurring = paid.is_recurring, first = paid.is_first_recurring, "Stars subscription recorded");
            let name = ctx.billing.levels().get(&level).map_or(level.clone(), |l| l.label(lang.code()).to_string());
            let key = if renewal { "subscription_renewed" } else { "subscription_started" };
            let mut text = lang.tf(key, &[("level", &name), ("date", &local_date(ctx, until))]);
            if credits.0 > 0 {
                text.push('\n');
                text.push_str(&lang.tf(
                    "purchase_credited",
                    &[("credits", &me.money(ctx, credits)), ("balance", &me.money(ctx, balance))],
                ));
            }
            text
        }
        Ok(SubscriptionOutcome::AlreadyRecorded) => {
            tracing::info!(user = me.id().0, charge = %charge, "subscription payment seen again; already recorded");
            return Ok(());
        }
        Ok(SubscriptionOutcome::UnknownLevel) => {
            tracing::error!(user = me.id().0, charge = %charge, payload = %paid.invoice_payload,
                "subscription payment for a level not sold: nothing granted, refund or set the level by hand");
            lang.tf("purchase_unknown", &[("charge", &charge)])
        }
        Err(e) => {
            tracing::error!(user = me.id().0, charge = %charge, error = %e, "subscription payment not recorded");
            lang.tf("purchase_failed", &[("charge", &charge)])
        }
    };
    bot.send_message(chat, text).await?;
    Ok(())
}
