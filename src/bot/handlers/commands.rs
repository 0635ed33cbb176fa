//! /start, /menu, /help, /balance, /ping, /my, /presets.

use super::touch_user;
use crate::bot::i18n::Lang;
use crate::bot::{BotCtx, BotError, Command, TgBot, keyboards};
use std::sync::Arc;
use teloxide::prelude::*;

pub async fn run(bot: TgBot, msg: Message, cmd: Command, ctx: Arc<BotCtx>) -> Result<(), BotError> {
    let Some(user) = msg.from.as_ref() else { return Ok(()) };
    let (rec, new, lang) = touch_user(&ctx, user).await?;
    let currency = ctx.billing.currency().to_string();
    if matches!(cmd, Command::Start | Command::Menu) {
        super::add_text::clear(&ctx, msg.chat.id).await?;
    }
    match cmd {
        Command::Start => {
            let mut text =
                lang.tf("welcome", &[("name", &rec.first_name), ("balance", &rec.balance), ("currency", &currency)]);
            if new && ctx.config.billing.signup_bonus.0 > 0 {
                text.push_str("\n\n");
                text.push_str(
                    &lang.tf("welcome_bonus", &[("bonus", &ctx.config.billing.signup_bonus), ("currency", &currency)]),
                );
            }
            bot.send_message(msg.chat.id, text).reply_markup(keyboards::main_menu(lang)).await?;
        }
        Command::Menu => {
            bot.send_message(msg.chat.id, lang.t("menu")).reply_markup(keyboards::main_menu(lang)).await?;
        }
        Command::Help => {
            bot.send_message(msg.chat.id, help_text(&ctx, lang)).await?;
        }
        Command::Balance => {
            bot.send_message(msg.chat.id, balance_text(&rec, lang, &currency)).await?;
        }
        Command::Ping => {
            bot.send_message(msg.chat.id, lang.t("pong")).await?;
        }
        Command::My => {
            let shelf = crate::bot::keyboards::Shelf::All;
            super::library::show(&bot, msg.chat.id, &ctx, lang, rec.id, shelf, 0, None).await?;
        }
        Command::Presets => {
            super::library::show_presets(&bot, msg.chat.id, &ctx, lang, rec.id, None).await?;
        }
    }
    Ok(())
}

pub fn help_text(ctx: &BotCtx, lang: Lang) -> String {
    let models: Vec<String> = ctx
        .jobs
        .models(&ctx.config)
        .iter()
        .map(|m| format!("• {} (model={}) — {} {}", m.display_name, m.id, m.price, ctx.billing.currency()))
        .collect();
    lang.tf("help", &[("models", &models.join("\n"))])
}

pub fn balance_text(rec: &crate::store::records::UserRecord, lang: Lang, currency: &str) -> String {
    lang.tf("balance", &[("balance", &rec.balance), ("held", &rec.held), ("currency", &currency)])
}
