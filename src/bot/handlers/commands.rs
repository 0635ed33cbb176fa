//! Commands: /start, /menu, /create (/new), /my, /presets, /balance, /buy, /paysupport,
//! /terms, /language, /help, /cancel, /ping, /skip — and every other `/word`, which is never taken for a prompt.

use super::Caller;
use crate::bot::dialogue::Step;
use crate::bot::i18n::Lang;
use crate::bot::{BotCtx, BotError, ChatDialogue, Command, TgBot, command_list, keyboards};
use crate::domain::Task;
use std::sync::Arc;
use teloxide::prelude::*;

pub async fn run(
    bot: TgBot,
    msg: Message,
    cmd: Command,
    ctx: Arc<BotCtx>,
    me: Caller,
    dialogue: ChatDialogue,
) -> Result<(), BotError> {
    let (chat, lang) = (msg.chat.id, me.lang);
    match cmd {
        Command::Start(_) | Command::Menu | Command::Create => dialogue.exit().await?,
        _ => {}
    }
    match cmd {
        Command::Start(_) => {
            let mut text =
                lang.tf("welcome", &[("name", &me.user.first_name), ("balance", &me.money(&ctx, me.user.balance))]);
            let bonus = ctx.config.billing.signup_bonus;
            if me.new && bonus.0 > 0 {
                text.push_str("\n\n");
                text.push_str(&lang.tf("welcome_bonus", &[("bonus", &me.money(&ctx, bonus))]));
            }
            bot.send_message(chat, text).reply_markup(keyboards::main_menu(lang, menu_modes(&ctx))).await?;
        }
        Command::Menu => {
            bot.send_message(chat, lang.t("menu")).reply_markup(keyboards::main_menu(lang, menu_modes(&ctx))).await?;
        }
        Command::Create => {
            bot.send_message(chat, lang.t("create_hint")).await?;
        }
        Command::Help => {
            bot.send_message(chat, help_text(&ctx, lang)).await?;
        }
        Command::Balance => {
            let text = super::levels::balance_text(&ctx, &me).await?;
            bot.send_message(chat, text).reply_markup(super::levels::balance_keyboard(&ctx, lang)).await?;
        }
        Command::History => {
            super::history::show(&bot, chat, &ctx, &me, 0, None).await?;
        }
        Command::Buy => {
            super::pay::show_packages(&bot, chat, &ctx, &me).await?;
        }
        Command::Paysupport => {
            bot.send_message(chat, super::pay::paysupport_text(&ctx, lang)).await?;
        }
        Command::Terms => {
            bot.send_message(chat, super::pay::terms_text(&ctx, lang)).await?;
        }
        Command::Invite => {
            super::invite::show(&bot, chat, &ctx, &me).await?;
        }
        Command::Language => {
            bot.send_message(chat, lang.t("language_choose")).reply_markup(keyboards::languages()).await?;
        }
        Command::Video => {
            super::video::start(&bot, &ctx, &me, &dialogue, false, vec![], msg.id).await?;
        }
        Command::Quick => {
            super::video::start(&bot, &ctx, &me, &dialogue, true, vec![], msg.id).await?;
        }
        Command::Stats => {
            super::video::stats(&bot, chat, &ctx, &me).await?;
        }
        Command::Status(arg) => {
            super::admin::status(&bot, chat, &ctx, &me, &arg).await?;
        }
        Command::AddBalance(args) => super::admin::command(&bot, chat, &ctx, &me, "add_balance", &args).await?,
        Command::Users(args) => super::admin::command(&bot, chat, &ctx, &me, "users", &args).await?,
        Command::Ban(args) => super::admin::command(&bot, chat, &ctx, &me, "ban", &args).await?,
        Command::Unban(args) => super::admin::command(&bot, chat, &ctx, &me, "unban", &args).await?,
        Command::Refund(args) => super::admin::command(&bot, chat, &ctx, &me, "refund", &args).await?,
        Command::Write => {
            super::write::start(&bot, &ctx, &me, &dialogue).await?;
        }
        Command::Ping => {
            bot.send_message(chat, lang.t("pong")).await?;
        }
        Command::My => {
            let shelf = keyboards::Shelf::All;
            super::library::show(&bot, chat, &ctx, lang, me.id(), shelf, 0, None).await?;
        }
        Command::Presets => {
            super::library::show_presets(&bot, chat, &ctx, lang, me.id(), None).await?;
        }
        Command::Cancel => {
            let text = match &me.step {
                Step::Idle => "nothing_to_cancel",
                Step::AddTextPhoto | Step::AddTextText { .. } | Step::AddTextWishes { .. } => "add_text_cancelled",
                _ => "flow_cancelled",
            };
            dialogue.exit().await?;
            bot.send_message(chat, lang.t(text)).await?;
        }
        Command::Skip => match me.step.clone() {
            Step::AddTextWishes { input, text } => {
                super::add_text::finish(&bot, &ctx, &me, &dialogue, input, text, String::new()).await?;
            }
            Step::Tool { .. } if super::tools::skip(&bot, &ctx, &me, &dialogue, msg.id).await? => {}
            Step::Video { .. } if super::video::skip(&bot, &ctx, &me, &dialogue, msg.id).await? => {}
            _ => {
                bot.send_message(chat, lang.t("nothing_to_skip")).await?;
            }
        },
    }
    Ok(())
}

/// A `/word` the bot does not know: said so, with the command list. Never a prompt, never a
/// draft, never a charge.
pub async fn unknown(bot: TgBot, msg: Message, me: Caller) -> Result<(), BotError> {
    let word = msg.text().unwrap_or_default().split_whitespace().next().unwrap_or_default();
    let word: String = word.chars().take(40).collect();
    let text = me.lang.tf("unknown_command", &[("command", &word), ("commands", &commands_text(me.lang))]);
    bot.send_message(msg.chat.id, text).await?;
    Ok(())
}

/// "/name — description" lines of every command in the menu.
fn commands_text(lang: Lang) -> String {
    command_list(lang).iter().map(|c| format!("/{} — {}", c.command, c.description)).collect::<Vec<_>>().join("\n")
}

/// Every command and flow, and the models a user can pick now with their prices.
pub fn help_text(ctx: &BotCtx, lang: Lang) -> String {
    let currency = ctx.billing.currency();
    let models: Vec<String> = ctx
        .catalog
        .usable()
        .iter()
        .map(|m| format!("• {} (model={}) — {}", m.display_name, m.id, lang.money(m.price, currency)))
        .collect();
    let models = if models.is_empty() { lang.t("no_models") } else { models.join("\n") };
    // Only the flows a user can reach now: a flow whose task has no usable model is left out.
    let flows: Vec<String> = [
        (Some(Task::TextToImage), "help_create"),
        (Some(Task::Edit), "help_edit"),
        (Some(Task::Upscale), "help_upscale"),
        (Some(Task::RemoveBackground), "help_remove_background"),
        (Some(Task::Retouch), "help_retouch"),
        (Some(Task::FaceSwap), "help_face_swap"),
        (Some(Task::Variations), "help_variations"),
        (Some(Task::StyleTransfer), "help_style_transfer"),
        (Some(Task::Sketch), "help_sketch"),
        (Some(Task::Reference), "help_reference"),
        (Some(Task::ImageToVideo), "help_video"),
        (Some(Task::TextToVideo), "help_text_to_video"),
        (None, "help_add_text"),
        (None, "help_library"),
        (None, "help_resize"),
    ]
    .into_iter()
    .filter(|(task, _)| task.is_none_or(|t| !ctx.catalog.for_task(t).is_empty()))
    .map(|(_, key)| lang.t(key))
    .chain(ctx.jobs.llm().map(|_| lang.t("help_write")))
    .collect();
    lang.tf("help", &[("flows", &flows.join("\n")), ("commands", &commands_text(lang)), ("models", &models)])
}

/// The main-menu modes that have a usable model now.
pub fn menu_modes(ctx: &BotCtx) -> keyboards::MenuModes {
    keyboards::MenuModes {
        create: !ctx.catalog.for_task(Task::TextToImage).is_empty(),
        tools: !super::tools::available(ctx).is_empty(),
        write: ctx.jobs.llm().is_some(),
        video: super::video::available(ctx),
        quick: super::video::quick_available(ctx),
    }
}
