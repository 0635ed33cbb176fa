//! "👥 Пригласить" and /invite: the user's referral link (`t.me/<bot>?start=ref_<code>`), how
//! many users joined through it, what it earned, and the configured rewards.

use super::Caller;
use crate::billing::{REFERRAL_PAYLOAD, referral_code};
use crate::bot::{BotCtx, BotError, TgBot};
use teloxide::prelude::*;

/// Sends the invite card to `chat`. The bot's username comes from `getMe`, asked once.
pub async fn show(bot: &TgBot, chat: ChatId, ctx: &BotCtx, me: &Caller) -> Result<(), BotError> {
    let lang = me.lang;
    let username = ctx
        .own_username
        .get_or_try_init(|| async { Ok::<_, teloxide::RequestError>(bot.get_me().await?.username().to_string()) })
        .await?;
    let link = format!("t.me/{username}?start={REFERRAL_PAYLOAD}{}", referral_code(me.id()));
    let mut text = lang.tf(
        "invite_text",
        &[
            ("link", &link),
            ("joined", &me.user.referral.joined.to_string()),
            ("earned", &me.money(ctx, me.user.referral.earned)),
        ],
    );
    let r = ctx.billing.referral();
    if r.signup_bonus.0 > 0 {
        text.push('\n');
        text.push_str(&lang.tf("invite_signup", &[("bonus", &me.money(ctx, r.signup_bonus))]));
    }
    if r.purchase_percent > 0 {
        text.push('\n');
        text.push_str(&lang.tf("invite_purchase", &[("percent", &r.purchase_percent.to_string())]));
    }
    if r.daily_cap.0 > 0 {
        text.push('\n');
        text.push_str(&lang.tf("invite_cap", &[("cap", &me.money(ctx, r.daily_cap))]));
    }
    bot.send_message(chat, text).await?;
    Ok(())
}
