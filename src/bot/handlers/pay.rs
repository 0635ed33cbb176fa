//! Top-ups with Telegram Stars (protocols.md §1.8; api.json sendInvoice,
//! answerPreCheckoutQuery, SuccessfulPayment): the package list under "💳 Top up" and `/buy`,
//! the invoice, the pre-checkout verdict, and crediting a payment once. Crypto Pay (§9): the
//! "💎 Crypto" button's invoice link and the payer's message when the invoice is credited. Prices, packages and
//! the crediting rule live in `billing`; this file only talks to Telegram.

use super::Caller;
use crate::billing::crypto_pay::{CryptoPayError, PurchaseNotifier};
use crate::billing::{CheckoutRefusal, PurchaseOutcome, STARS_CURRENCY, StarPayment, invoice_payload};
use crate::bot::i18n::Lang;
use crate::bot::{BotCtx, BotError, TgBot, keyboards};
use crate::domain::{Credits, UserId};
use crate::store::records::UserRecord;
use std::sync::Arc;
use teloxide::prelude::*;
use teloxide::types::{ChatId, InlineKeyboardButton, InlineKeyboardMarkup, LabeledPrice, PreCheckoutQuery};

/// "💳 Top up" under a message, or `None` when no package is configured.
pub fn top_up_button(ctx: &BotCtx, lang: Lang) -> Option<InlineKeyboardMarkup> {
    (!ctx.billing.packages().is_empty()).then(|| keyboards::top_up(lang))
}

/// The package list with what each buys at the user's usual model, or "not available".
pub async fn show_packages(bot: &TgBot, chat: ChatId, ctx: &BotCtx, me: &Caller) -> Result<(), BotError> {
    let lang = me.lang;
    if ctx.billing.packages().is_empty() {
        bot.send_message(chat, lang.t("topup_unavailable")).await?;
        return Ok(());
    }
    let usual = ctx.jobs.usual_price(me.id()).await;
    let offers = ctx.billing.offers(usual);
    let crypto = ctx.crypto.as_ref().is_some_and(|c| c.packages().next().is_some());
    let mut markup = keyboards::packages(lang, ctx.billing.currency(), &offers, crypto);
    if !ctx.billing.subscriptions().is_empty() {
        markup = markup.append_row(keyboards::subscribe_row(lang));
    }
    let text = lang.t(if crypto { "topup_choose_crypto" } else { "topup_choose" });
    bot.send_message(chat, text).reply_markup(markup).await?;
    Ok(())
}

/// "💎 Crypto" on package `id`: creates its Crypto Pay invoice and sends the pay link as a URL
/// button. Returns the callback answer: `None`, or an alert when the package is not sold for
/// crypto (any more) or Crypto Pay failed (nothing was stored then).
pub async fn send_crypto_invoice(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    me: &Caller,
    id: &str,
) -> Result<Option<(String, bool)>, BotError> {
    let lang = me.lang;
    let Some(cp) = ctx.crypto.as_ref() else { return Ok(Some((lang.t("crypto_unavailable"), true))) };
    let describe = |credits| lang.tf("crypto_description", &[("credits", &me.money(ctx, credits))]);
    let inv = match cp.create_invoice(me.id(), id, describe).await {
        Ok(inv) => inv,
        Err(CryptoPayError::NotForSale(_)) => return Ok(Some((lang.t("topup_package_gone"), true))),
        Err(e) => {
            tracing::error!(user = me.id().0, package = %id, error = %e, "crypto invoice not created");
            return Ok(Some((lang.t("crypto_unavailable"), true)));
        }
    };
    let Ok(url) = inv.pay_url.parse() else { return Ok(Some((lang.t("crypto_unavailable"), true))) };
    let price = format!("{} {}", inv.amount, inv.currency);
    // Rounded up: a fresh invoice says the whole TTL, one sent again what is left of it.
    let minutes = (inv.expires_at.saturating_sub(crate::domain::now_ms()).max(0) + 59_999) / 60_000;
    let text = lang
        .tf("crypto_invoice", &[("price", &price), ("credits", &me.money(ctx, inv.credits)), ("minutes", &minutes)]);
    let button = InlineKeyboardButton::url(lang.tf("crypto_pay_button", &[("price", &price)]), url);
    bot.send_message(chat, text).reply_markup(InlineKeyboardMarkup::new([[button]])).await?;
    Ok(None)
}

/// [`PurchaseNotifier`] over the Bot API: the payer gets the Stars success text in their
/// language when a crypto invoice is credited.
pub struct CryptoCredited {
    bot: TgBot,
    currency: crate::config::Currency,
}

impl CryptoCredited {
    pub fn new(bot: TgBot, config: &crate::config::Config) -> CryptoCredited {
        CryptoCredited { bot, currency: config.billing.currency.clone() }
    }
}

#[async_trait::async_trait]
impl PurchaseNotifier for CryptoCredited {
    async fn credited(&self, user: &UserRecord, credits: Credits) {
        let lang = Lang::from_code(user.language.as_deref().or(user.language_code.as_deref()));
        let text = lang.tf(
            "purchase_credited",
            &[
                ("credits", &lang.money(credits, &self.currency)),
                ("balance", &lang.money(user.balance, &self.currency)),
            ],
        );
        if let Err(e) = self.bot.send_message(ChatId(user.id.0), text).await {
            tracing::warn!(user = user.id.0, error = %e, "could not tell the payer about their crypto top-up");
        }
    }
}

/// Sends the invoice of package `id` (currency `XTR`, no provider token, one price). Returns
/// the callback answer: `None`, or an alert when the package is gone.
pub async fn send_invoice(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    me: &Caller,
    id: &str,
) -> Result<Option<(String, bool)>, BotError> {
    let lang = me.lang;
    let Some(package) = ctx.billing.package(id).cloned() else {
        return Ok(Some((lang.t("topup_package_gone"), true)));
    };
    let credits = me.money(ctx, package.total());
    // Telegram: title 1–32 characters, description 1–255.
    let title: String = lang.tf("invoice_title", &[("credits", &credits)]).chars().take(32).collect();
    let description: String = lang.tf("invoice_description", &[("credits", &credits)]).chars().take(255).collect();
    let amount = u32::try_from(package.stars).unwrap_or(u32::MAX);
    bot.send_invoice(
        chat,
        title.clone(),
        description,
        invoice_payload(&package.id, me.id()),
        STARS_CURRENCY,
        [LabeledPrice::new(title, amount)],
    )
    .await?;
    Ok(None)
}

/// Answers a `pre_checkout_query` (Telegram waits 10 s): ok when billing accepts it, else
/// `ok=false` with the reason in the payer's language. Runs before the ban gate, so a banned
/// payer is refused here rather than left without an answer.
pub async fn on_pre_checkout(bot: TgBot, q: PreCheckoutQuery, ctx: Arc<BotCtx>) -> Result<(), BotError> {
    let payer = UserId(q.from.id.0 as i64);
    let lang = match super::caller(&ctx, &q.from, None, None).await {
        Ok(c) => c.lang,
        Err(_) => Lang::from_code(q.from.language_code.as_deref()),
    };
    let verdict = ctx.billing.check_checkout(payer, &q.currency, i64::from(q.total_amount), &q.invoice_payload).await;
    let refusal = match verdict {
        Ok(Ok(())) => None,
        Ok(Err(r)) => Some(match r {
            CheckoutRefusal::PackageGone => "checkout_package_gone",
            CheckoutRefusal::PriceChanged => "checkout_price_changed",
            CheckoutRefusal::Banned => "checkout_banned",
            CheckoutRefusal::NotPayer => "checkout_not_payer",
        }),
        Err(e) => {
            tracing::error!(error = %e, "pre-checkout could not be checked");
            Some("checkout_error")
        }
    };
    match refusal {
        None => bot.answer_pre_checkout_query(q.id, true).await?,
        Some(key) => {
            tracing::info!(user = payer.0, payload = %q.invoice_payload, reason = key, "pre-checkout refused");
            bot.answer_pre_checkout_query(q.id, false).error_message(lang.t(key)).await?
        }
    };
    Ok(())
}

/// Credits a `successful_payment` message once per `telegram_payment_charge_id` and tells the
/// payer. Runs before the step branches (and the ban gate): a payment in the middle of a flow,
/// or from someone banned after the pre-checkout, is still credited.
pub async fn on_successful_payment(bot: TgBot, msg: Message, ctx: Arc<BotCtx>) -> Result<(), BotError> {
    let (Some(paid), Some(from)) = (msg.successful_payment(), msg.from.as_ref()) else { return Ok(()) };
    let charge = paid.telegram_payment_charge_id.0.clone();
    let me = super::caller(&ctx, from, Some(msg.chat.id), None).await?;
    if paid.subscription_expiration_date.is_some()
        || crate::billing::subscriptions::parse_subscription_payload(&paid.invoice_payload).is_some()
    {
        return super::levels::on_payment(&bot, msg.chat.id, &ctx, &me, paid).await;
    }
    let lang = me.lang;
    let payment = StarPayment {
        payer: me.id(),
        currency: paid.currency.clone(),
        total_amount: i64::from(paid.total_amount),
        invoice_payload: paid.invoice_payload.clone(),
        telegram_payment_charge_id: charge.clone(),
        provider_payment_charge_id: paid.provider_payment_charge_id.clone(),
    };
    let text = match ctx.billing.credit_purchase(payment).await {
        Ok(PurchaseOutcome::Credited { credits, balance }) => {
            tracing::info!(user = me.id().0, charge = %charge, credits = credits.0, "Stars payment credited");
            lang.tf(
                "purchase_credited",
                &[("credits", &me.money(&ctx, credits)), ("balance", &me.money(&ctx, balance))],
            )
        }
        Ok(PurchaseOutcome::AlreadyCredited { .. }) => {
            tracing::info!(user = me.id().0, charge = %charge, "Stars payment seen again; already credited");
            return Ok(());
        }
        Ok(PurchaseOutcome::UnknownPackage) => {
            tracing::error!(user = me.id().0, charge = %charge, payload = %paid.invoice_payload,
                "Stars payment for an unknown package: nothing credited, refund or credit by hand");
            lang.tf("purchase_unknown", &[("charge", &charge)])
        }
        Err(e) => {
            tracing::error!(user = me.id().0, charge = %charge, error = %e, "Stars payment not credited");
            lang.tf("purchase_failed", &[("charge", &charge)])
        }
    };
    bot.send_message(msg.chat.id, text).await?;
    Ok(())
}

/// `/paysupport`: the configured contact, else the admins.
pub fn paysupport_text(ctx: &BotCtx, lang: Lang) -> String {
    match ctx.billing.support() {
        Some(contact) => lang.tf("paysupport_contact", &[("contact", &contact)]),
        None => lang.t("paysupport_admins"),
    }
}

/// `/terms`: `billing.terms`, else the built-in text.
pub fn terms_text(ctx: &BotCtx, lang: Lang) -> String {
    ctx.billing.terms().map_or_else(|| lang.t("terms_default"), str::to_owned)
}
