//! `/status` for everyone (their own jobs; any job for admins) and the admin commands for
//! `telegram.admins`: `/add_balance USER AMOUNT [reason]` (alias `/addtokens`), `/users
//! [page|query]`, `/ban USER`, `/unban USER`, `/refund <charge id>` (a Telegram Stars charge,
//! through the refund outbox: [`crate::admin::Admin::refund`]). USER is a Telegram id or `@username`. Every change
//! goes through the admin service ([`crate::admin::Admin`]) with actor `tg:<id>`, so it has its
//! audit row like a panel or CLI change. Bad arguments get the usage line; anyone else gets
//! "admins only" and nothing happens.

use super::Caller;
use crate::admin::{Actor, AdminError, RefundOutcome};
use crate::bot::i18n::Lang;
use crate::bot::{BotCtx, BotError, TgBot};
use crate::domain::{Credits, JobId, JobStatus};
use crate::jobs::status::JobView;
use teloxide::prelude::*;

/// Users per `/users` page.
pub const USERS_PER_PAGE: usize = 15;

/// Whether the caller may use the admin commands.
fn is_admin(ctx: &BotCtx, me: &Caller) -> bool {
    ctx.jobs.is_admin(me.id())
}

/// `/status` (the caller's newest jobs) or `/status <short id>` (one job: the caller's own,
/// or anyone's for an admin).
pub async fn status(bot: &TgBot, chat: ChatId, ctx: &BotCtx, me: &Caller, arg: &str) -> Result<(), BotError> {
    let lang = me.lang;
    let arg = arg.trim();
    let text = if arg.is_empty() {
        let views = ctx.jobs.user_job_views(me.id()).await?;
        if views.is_empty() {
            lang.t("status_none")
        } else {
            let lines: Vec<String> = views.iter().map(|v| job_line(ctx, lang, v)).collect();
            format!("{}\n{}", lang.t("status_title"), lines.join("\n"))
        }
    } else {
        let view = match JobId::from_short(arg) {
            Some(id) => ctx.jobs.job_view(id).await?,
            None => None,
        };
        match view.filter(|v| v.job.user_id == me.id() || is_admin(ctx, me)) {
            Some(v) => {
                let mut text = job_line(ctx, lang, &v);
                if v.job.user_id != me.id() {
                    text.push_str(&lang.tf("status_owner", &[("user", &v.job.user_id.0)]));
                }
                if let Some(e) = &v.job.error {
                    text.push('\n');
                    text.push_str(
                        &lang.tf("status_error", &[("error", &e.detail.chars().take(300).collect::<String>())]),
                    );
                }
                text
            }
            None => lang.tf("status_not_found", &[("id", &arg.chars().take(40).collect::<String>())]),
        }
    };
    bot.send_message(chat, text).await?;
    Ok(())
}

/// "• 0a1b2c · Kling — в очереди: место 2, ~95 с".
fn job_line(ctx: &BotCtx, lang: Lang, v: &JobView) -> String {
    let model = ctx.catalog.model(&v.job.model_id).map_or_else(|| v.job.model_id.clone(), |m| m.display_name);
    let state = match v.job.status {
        JobStatus::Queued => lang.tf("status_queued", &[("position", &v.position.unwrap_or(1)), ("eta", &v.eta_secs)]),
        JobStatus::Submitting | JobStatus::Submitted => lang.tf("status_running", &[("eta", &v.eta_secs)]),
        JobStatus::Succeeded => lang.t("status_succeeded"),
        JobStatus::Failed => lang.t("status_failed"),
        JobStatus::Cancelled => lang.t("status_cancelled"),
        JobStatus::AwaitingConfirmation => lang.t("status_awaiting"),
    };
    let date = crate::domain::ymd(v.job.created_at);
    lang.tf("status_line", &[("id", &v.job.id.short()), ("model", &model), ("state", &state), ("date", &date)])
}

/// One admin command, already parsed by name: checks the caller, parses `args`, acts, answers.
pub async fn command(
    bot: &TgBot,
    chat: ChatId,
    ctx: &BotCtx,
    me: &Caller,
    name: &str,
    args: &str,
) -> Result<(), BotError> {
    let lang = me.lang;
    if !is_admin(ctx, me) {
        bot.send_message(chat, lang.t("admin_only")).await?;
        return Ok(());
    }
    let actor = Actor::Telegram(me.id());
    let words: Vec<&str> = args.split_whitespace().collect();
    let usage = || lang.t(&format!("admin_usage_{name}"));
    let text = match (name, words.as_slice()) {
        ("add_balance", [who, amount, reason @ ..]) => match (ctx.admin.find_user(who).await?, amount.parse::<i64>()) {
            (None, _) => lang.tf("admin_no_user", &[("user", who)]),
            (Some(_), Err(_)) => usage(),
            (Some(u), Ok(delta)) => {
                let reason = if reason.is_empty() { "/add_balance".to_string() } else { reason.join(" ") };
                match ctx.admin.adjust_balance(actor, u.id, Credits(delta), reason).await {
                    Ok(op) => lang.tf(
                        "admin_balance_done",
                        &[
                            ("user", &user_label(&u.first_name, u.username.as_deref(), u.id.0)),
                            ("delta", &format!("{delta:+}")),
                            ("balance", &me.money(ctx, op.balance_after)),
                        ],
                    ),
                    Err(AdminError::InsufficientFunds { balance, .. }) => {
                        lang.tf("admin_balance_short", &[("balance", &me.money(ctx, balance))])
                    }
                    Err(AdminError::Invalid(why)) => format!("{}\n{why}", usage()),
                    Err(e) => return Err(e.into()),
                }
            }
        },
        ("ban" | "unban", [who]) => match ctx.admin.find_user(who).await? {
            None => lang.tf("admin_no_user", &[("user", who)]),
            Some(u) => {
                let changed = ctx.admin.set_banned(actor, u.id, name == "ban").await?;
                let label = user_label(&u.first_name, u.username.as_deref(), u.id.0);
                let key = match (name, changed) {
                    ("ban", true) => "admin_banned",
                    ("ban", false) => "admin_already_banned",
                    (_, true) => "admin_unbanned",
                    (_, false) => "admin_not_banned",
                };
                lang.tf(key, &[("user", &label)])
            }
        },
        ("refund", [charge]) => match ctx.admin.refund(actor, charge).await {
            Ok(RefundOutcome::Refunded { payment: p }) => {
                let mut text = lang.tf(
                    "admin_refund_done",
                    &[
                        ("charge", &p.telegram_payment_charge_id),
                        ("stars", &p.stars),
                        ("user", &p.user_id.0),
                        ("credits", &me.money(ctx, p.credits.checked_sub(p.refund_shortfall).unwrap_or(p.credits))),
                    ],
                );
                if p.refund_shortfall.0 > 0 {
                    text.push('\n');
                    text.push_str(&lang.tf("admin_refund_short", &[("shortfall", &me.money(ctx, p.refund_shortfall))]));
                }
                text
            }
            Ok(RefundOutcome::Failed { reason, .. }) => lang.tf("admin_refund_failed", &[("reason", &reason)]),
            Ok(RefundOutcome::Pending { .. }) => lang.t("admin_refund_pending"),
            Err(AdminError::Refund(why)) => lang.tf("admin_refund_refused", &[("reason", &why)]),
            Err(e) => return Err(e.into()),
        },
        ("users", []) => users(ctx, me, None, 0).await?,
        ("users", [n]) if n.parse::<usize>().is_ok_and(|n| n >= 1) => {
            users(ctx, me, None, n.parse::<usize>().unwrap_or(1) - 1).await?
        }
        ("users", [query]) => users(ctx, me, Some(query.trim_start_matches('@').to_string()), 0).await?,
        _ => usage(),
    };
    bot.send_message(chat, text).await?;
    Ok(())
}

/// One `/users` page as text.
async fn users(ctx: &BotCtx, me: &Caller, query: Option<String>, page: usize) -> Result<String, BotError> {
    let lang = me.lang;
    let (rows, more) = ctx.admin.users_page(query, page, USERS_PER_PAGE).await?;
    if rows.is_empty() {
        return Ok(lang.t("admin_users_none"));
    }
    let mut text = lang.tf("admin_users_title", &[("page", &(page + 1))]);
    for (u, jobs) in &rows {
        text.push('\n');
        text.push_str(&lang.tf(
            "admin_users_line",
            &[
                ("user", &user_label(&u.first_name, u.username.as_deref(), u.id.0)),
                ("balance", &me.money(ctx, u.balance)),
                ("jobs", jobs),
                ("since", &crate::domain::ymd(u.created_at)),
            ],
        ));
    }
    if more {
        text.push('\n');
        text.push_str(&lang.tf("admin_users_more", &[("next", &(page + 2))]));
    }
    Ok(text)
}

/// "Anna @anna (12345)".
fn user_label(name: &str, username: Option<&str>, id: i64) -> String {
    let name: String = name.chars().take(40).collect();
    match username {
        Some(u) => format!("{name} @{u} ({id})"),
        None => format!("{name} ({id})"),
    }
}
