//! Operator actions: adjust a balance, ban or unban, set a level, switch a model or provider
//! on or off, override a price or a concurrency, set the panel password, refund a Stars charge.
//!
//! Each action writes its change and its audit entry in one transaction, naming the [`Actor`],
//! so the audit log is complete whichever door the action came through: the web panel, the
//! control socket / CLI, or (later) admin commands in the bot all call [`Admin`].

use crate::billing::{self, BillingError};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::domain::{Credits, Setting, Switch, UserId, now_ms};
use crate::store::records::{AuditEntry, Operation, PaymentRecord, PaymentState, UserRecord, UserSummary};
use crate::store::{Store, StoreError, Tx};
use argon2::password_hash::{PasswordHasher, SaltString};
use rand::RngCore;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Who did it; stored as text in the audit log and the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An admin signed in to the web panel (`admin:<account>`, the form earlier rows have).
    Panel(String),
    /// `mediabot admin …` on the command line (`cli`).
    Cli,
    /// A Telegram admin using bot commands (`tg:<user id>`).
    Telegram(UserId),
    /// The appliance itself (`system`), e.g. the password generated at first start.
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Panel(name) => write!(f, "admin:{name}"),
            Actor::Cli => f.write_str("cli"),
            Actor::Telegram(id) => write!(f, "tg:{}", id.0),
            Actor::System => f.write_str("system"),
        }
    }
}

/// Why an action was refused. Nothing was written in any case.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no user {0}")]
    UnknownUser(i64),
    #[error("no model or provider {0} in the config")]
    UnknownTarget(String),
    /// A value outside what the action accepts; the text says what is accepted.
    #[error("{0}")]
    Invalid(String),
    /// The balance would go negative (a deduction larger than the balance).
    #[error("the balance is {balance}, cannot deduct {amount}")]
    InsufficientFunds { balance: Credits, amount: Credits },
    /// A refund that cannot start: no such charge, or it is not `paid` (the text says which).
    #[error("{0}")]
    Refund(String),
    /// The action needs the bot (Telegram), which is not running (no token configured).
    #[error("the bot is not running, so Telegram cannot be asked")]
    NoBot,
    #[error(transparent)]
    Billing(BillingError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<BillingError> for AdminError {
    fn from(e: BillingError) -> Self {
        match e {
            BillingError::UnknownUser(u) => AdminError::UnknownUser(u.0),
            BillingError::InsufficientFunds { balance, price } => {
                AdminError::InsufficientFunds { balance, amount: price }
            }
            BillingError::Store(s) => AdminError::Store(s),
            other => AdminError::Billing(other),
        }
    }
}

/// Largest single balance change, credits (a typo guard).
pub const MAX_ADJUST: i64 = 1_000_000_000;
/// Accepted model price overrides, credits.
pub const PRICE_RANGE: std::ops::RangeInclusive<i64> = 0..=1_000_000;
/// Accepted provider concurrency overrides, jobs at once.
pub const CONCURRENCY_RANGE: std::ops::RangeInclusive<i64> = 1..=64;
/// Shortest accepted panel password, characters.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// The operator service; cheap to clone.
#[derive(Clone)]
pub struct Admin {
    store: Store,
    catalog: Catalog,
    /// `billing.levels`; the first is everyone's default and is stored as "".
    levels: Vec<String>,
    /// Telegram's Stars side, set by `app` once the bot exists (shared by every clone). The
    /// panel runs without a bot token, so refunds answer [`AdminError::NoBot`] until then.
    stars: Arc<OnceLock<Arc<dyn StarsGateway>>>,
}

/// What `refundStarPayment` answered (protocols.md §1.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundCall {
    /// `true`: refunded now.
    Refunded,
    /// 400 `CHARGE_ALREADY_REFUNDED`: an earlier call (maybe one whose answer was lost in a
    /// crash) did it. Counts as done.
    AlreadyRefunded,
    /// Telegram refused for good (another 4xx, e.g. `CHARGE_NOT_FOUND`): its description.
    Refused(String),
    /// No answer or an answer that says nothing about the refund (network error, 5xx, 429):
    /// it may or may not have happened, so the charge stays pending and is asked again.
    Unknown(String),
}

/// Telegram's Stars methods as the admin service needs them; `bot` implements it over the
/// Bot API (`bot::stars`), `app` wires it with [`Admin::set_stars`].
#[async_trait::async_trait]
pub trait StarsGateway: Send + Sync {
    /// `refundStarPayment(user_id, telegram_payment_charge_id)`.
    async fn refund(&self, user: UserId, charge_id: &str) -> RefundCall;
    /// Tells the payer (in their language) that the Stars went back and the credits were
    /// removed. Best effort: a failure is logged, not returned.
    async fn refunded(&self, user: &UserRecord, payment: &PaymentRecord);
}

/// How [`Admin::refund`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RefundOutcome {
    /// The Stars went back; the charge is `refunded`. `shortfall`: credits the balance lacked.
    Refunded { payment: PaymentRecord },
    /// Telegram refused; the charge is `refund_failed` and the credits were given back.
    Failed { payment: PaymentRecord, reason: String },
    /// Telegram's answer was lost: the debit stands, the charge stays `refund_pending`, and
    /// the outbox pass asks again (at start-up and every [`REFUND_RETRY_EVERY`]).
    Pending { payment: PaymentRecord, reason: String },
}

/// How often the refund outbox retries charges left `refund_pending`.
pub const REFUND_RETRY_EVERY: Duration = Duration::from_secs(600);

fn audit(actor: &Actor, action: &str, target: String, before: String, after: String) -> AuditEntry {
    AuditEntry {
        id: uuid::Uuid::now_v7().as_u128(),
        actor: actor.to_string(),
        action: action.into(),
        target,
        before,
        after,
        created_at: now_ms(),
    }
}

impl Admin {
    pub fn new(store: Store, catalog: Catalog, config: &Config) -> Admin {
        Admin { store, catalog, levels: config.billing.level_ids(), stars: Arc::default() }
    }

    /// Connects Telegram's Stars side (once; later calls are ignored).
    pub fn set_stars(&self, gateway: Arc<dyn StarsGateway>) {
        let _ = self.stars.set(gateway);
    }

    /// Refunds a Telegram Stars charge, as an outbox so a crash at any point neither refunds
    /// twice nor loses the debit:
    /// 1. one transaction: the charge must be stored and `paid`; a `Refund` ledger row takes its
    ///    credits back out (down to a zero balance at most, the rest is the shortfall), the
    ///    charge becomes `refund_pending`, and the audit entry is written;
    /// 2. `refundStarPayment`;
    /// 3. one transaction: `refunded` (Telegram said ok, or `CHARGE_ALREADY_REFUNDED`), or
    ///    `refund_failed` with a `RefundReversal` row giving the credits back. A lost answer
    ///    leaves the charge pending for [`Admin::resume_refunds`]; asking Telegram again is safe
    ///    because a done refund answers `CHARGE_ALREADY_REFUNDED`.
    ///
    /// The `charge_id` is looked up in the store; nothing about the charge is taken from the
    /// caller. Errors: [`AdminError::Refund`] (unknown or not `paid`), [`AdminError::NoBot`].
    pub async fn refund(&self, actor: Actor, charge_id: &str) -> Result<RefundOutcome, AdminError> {
        let gateway = self.stars.get().cloned().ok_or(AdminError::NoBot)?;
        let charge = charge_id.trim().to_string();
        if charge.is_empty() || charge.len() > 256 {
            return Err(AdminError::Refund("no such charge".into()));
        }
        let who = actor.to_string();
        let payment = self
            .store
            .write(move |tx| {
                let (pay, op) = match billing::begin_refund(tx, &charge, &who)? {
                    Ok(done) => done,
                    Err(billing::RefundRefusal::UnknownCharge) => {
                        return Err(AdminError::Refund(format!("no charge {charge}")));
                    }
                    Err(billing::RefundRefusal::NotPaid(state)) => {
                        return Err(AdminError::Refund(format!("charge {charge} is {} already", state_name(state))));
                    }
                };
                let after = format!(
                    "refund_pending ({} credits, {} taken, shortfall {})",
                    pay.credits, -op.delta.0, pay.refund_shortfall
                );
                tx.insert_audit(&audit(&actor, "refund", format!("charge:{charge}"), "paid".into(), after))?;
                Ok(pay)
            })
            .await?;
        Ok(self.complete_refund(gateway.as_ref(), payment).await?)
    }

    /// Steps 2 and 3 of [`Admin::refund`] for a `refund_pending` charge.
    async fn complete_refund(
        &self,
        gateway: &dyn StarsGateway,
        payment: PaymentRecord,
    ) -> Result<RefundOutcome, AdminError> {
        let answer = gateway.refund(payment.user_id, &payment.telegram_payment_charge_id).await;
        let result = match &answer {
            RefundCall::Refunded | RefundCall::AlreadyRefunded => Ok(()),
            RefundCall::Refused(why) => Err(why.clone()),
            RefundCall::Unknown(why) => {
                tracing::warn!(charge = %payment.telegram_payment_charge_id, error = %why,
                    "refundStarPayment gave no answer; the refund stays pending and is asked again");
                return Ok(RefundOutcome::Pending { payment, reason: why.clone() });
            }
        };
        let charge = payment.telegram_payment_charge_id.clone();
        let recorded = self
            .store
            .write(move |tx| {
                let Some(pay) = billing::finish_refund(tx, &charge, result)? else { return Ok(None) };
                let user = tx.get_user(pay.user_id)?;
                let after = match &pay.refund_error {
                    Some(e) if pay.state == PaymentState::RefundFailed => format!("refund_failed: {e}"),
                    _ => state_name(pay.state).to_string(),
                };
                tx.insert_audit(&audit(
                    &Actor::System,
                    "refund",
                    format!("charge:{charge}"),
                    "refund_pending".into(),
                    after,
                ))?;
                Ok::<_, AdminError>(Some((pay, user)))
            })
            .await?;
        let Some((pay, user)) = recorded else {
            // Another pass recorded this charge first: report what it recorded.
            let charge = payment.telegram_payment_charge_id.clone();
            let now = self.store.read(move |rx| rx.get_payment(&charge)).await?.unwrap_or(payment);
            return Ok(match now.state {
                PaymentState::RefundFailed => {
                    RefundOutcome::Failed { reason: now.refund_error.clone().unwrap_or_default(), payment: now }
                }
                _ => RefundOutcome::Refunded { payment: now },
            });
        };
        Ok(match pay.state {
            PaymentState::RefundFailed => {
                tracing::warn!(charge = %pay.telegram_payment_charge_id, "Telegram refused the refund; credits given back");
                RefundOutcome::Failed { reason: pay.refund_error.clone().unwrap_or_default(), payment: pay }
            }
            _ => {
                if let Some(u) = &user {
                    gateway.refunded(u, &pay).await;
                }
                RefundOutcome::Refunded { payment: pay }
            }
        })
    }

    /// The refund outbox pass: asks Telegram again for every charge left `refund_pending`
    /// (by a crash or a lost answer) at least `min_age` ago, and records each answer as
    /// [`Admin::refund`] does. Returns how many it settled (refunded or failed). Without a bot
    /// it does nothing.
    pub async fn resume_refunds(&self, min_age: Duration) -> Result<usize, AdminError> {
        let Some(gateway) = self.stars.get().cloned() else { return Ok(0) };
        let cutoff = now_ms().saturating_sub(i64::try_from(min_age.as_millis()).unwrap_or(i64::MAX));
        let pending = self
            .store
            .read(move |rx| {
                Ok::<_, StoreError>(
                    rx.find_payments()?
                        .into_iter()
                        .filter(|p| p.state == PaymentState::RefundPending && p.updated_at <= cutoff)
                        .collect::<Vec<_>>(),
                )
            })
            .await?;
        let mut settled = 0;
        for p in pending {
            let charge = p.telegram_payment_charge_id.clone();
            match self.complete_refund(gateway.as_ref(), p).await {
                Ok(RefundOutcome::Pending { .. }) => {}
                Ok(_) => settled += 1,
                Err(e) => tracing::error!(%charge, error = %e, "could not record a pending refund"),
            }
        }
        Ok(settled)
    }

    /// Runs the refund outbox until `shutdown`: one pass at once (a start-up finishes what a
    /// crash left), then every [`REFUND_RETRY_EVERY`] for charges pending that long (so a
    /// refund being made right now is not asked twice at once).
    pub async fn run_refund_outbox(&self, shutdown: tokio_util::sync::CancellationToken) {
        let mut min_age = Duration::ZERO;
        loop {
            match self.resume_refunds(min_age).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(settled = n, "refund outbox: pending refunds recorded"),
                Err(e) => tracing::error!(error = %e, "refund outbox pass failed"),
            }
            min_age = REFUND_RETRY_EVERY;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(REFUND_RETRY_EVERY) => {}
            }
        }
    }

    /// One page of Stars charges, newest first (page 0 first), and whether more follow.
    pub async fn payments_page(&self, page: usize, per_page: usize) -> Result<(Vec<PaymentRecord>, bool), AdminError> {
        let mut all = self.store.read(|rx| rx.find_payments()).await?;
        // Keyed by charge id; an appliance has few enough charges to sort them here.
        all.sort_by(|a, b| {
            b.created_at.cmp(&a.created_at).then(a.telegram_payment_charge_id.cmp(&b.telegram_payment_charge_id))
        });
        let skip = page.saturating_mul(per_page);
        let more = all.len() > skip.saturating_add(per_page);
        Ok((all.into_iter().skip(skip).take(per_page).collect(), more))
    }

    /// One page of Crypto Pay invoices, newest first (ids rise with time), and whether more follow.
    pub async fn crypto_invoices_page(
        &self,
        page: usize,
        per_page: usize,
    ) -> Result<(Vec<crate::store::records::CryptoInvoice>, bool), AdminError> {
        let mut all = self.store.read(|rx| rx.find_crypto_invoices()).await?;
        all.reverse();
        let skip = page.saturating_mul(per_page);
        let more = all.len() > skip.saturating_add(per_page);
        Ok((all.into_iter().skip(skip).take(per_page).collect(), more))
    }

    /// Credits (positive `delta`) or debits a user: one `adjust` ledger row with `reason`, and
    /// an audit entry. Errors: [`AdminError::Invalid`] for a zero or huge amount or an empty
    /// reason, [`AdminError::InsufficientFunds`] for a debit below zero.
    pub async fn adjust_balance(
        &self,
        actor: Actor,
        user: UserId,
        delta: Credits,
        reason: String,
    ) -> Result<Operation, AdminError> {
        let reason = reason.trim().to_string();
        if reason.is_empty() || reason.len() > 500 {
            return Err(AdminError::Invalid("a reason (up to 500 bytes) is required".into()));
        }
        if delta.0 == 0 || delta.0.checked_abs().is_none_or(|a| a > MAX_ADJUST) {
            return Err(AdminError::Invalid(format!("the amount must be between 1 and {MAX_ADJUST}")));
        }
        self.store
            .write(move |tx| {
                let before = tx.get_user(user)?.ok_or(AdminError::UnknownUser(user.0))?.balance;
                let op = billing::adjust(tx, user, delta, &actor.to_string(), &reason)?;
                let after = format!("balance {} ({:+}, {reason})", op.balance_after, delta.0);
                tx.insert_audit(&audit(&actor, "adjust_balance", target(user), format!("balance {before}"), after))?;
                Ok(op)
            })
            .await
    }

    /// The user `who` names: a Telegram id (`123456`) or a username (`@anna`, any case).
    pub async fn find_user(&self, who: &str) -> Result<Option<UserRecord>, AdminError> {
        let who = who.trim();
        if let Ok(id) = who.parse::<i64>() {
            return Ok(self.store.read(move |rx| rx.get_user(UserId(id))).await?);
        }
        let Some(name) = who.strip_prefix('@').filter(|n| !n.is_empty() && n.len() <= 64) else { return Ok(None) };
        let name = name.to_lowercase();
        let found = self
            .store
            .read(move |rx| {
                // The name index holds lower-case words of names and usernames.
                let (ids, _) = rx.find_user_ids_by_word(&name, 50)?;
                for id in ids {
                    if let Some(u) = rx.get_user(UserId(id))? {
                        if u.username.as_deref().is_some_and(|n| n.to_lowercase() == name) {
                            return Ok(Some(u));
                        }
                    }
                }
                Ok::<_, StoreError>(None)
            })
            .await?;
        Ok(found)
    }

    /// One page of users for `/users` (page 0 first), each with their job count (counted up to
    /// 10 000): all users in id order, or those with a name or username word starting with
    /// `query`. The bool says whether another page follows.
    pub async fn users_page(
        &self,
        query: Option<String>,
        page: usize,
        per_page: usize,
    ) -> Result<(Vec<(UserSummary, usize)>, bool), AdminError> {
        let skip = page.saturating_mul(per_page);
        let page = self
            .store
            .read(move |rx| {
                let (rows, more) = match &query {
                    Some(q) => rx.find_user_rows_by_word_page(&q.to_lowercase(), skip, per_page)?,
                    None => {
                        let (users, more) = rx.find_users_skip(skip, per_page)?;
                        (users.iter().map(UserSummary::of).collect(), more)
                    }
                };
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let jobs = rx.count_user_jobs(r.id, 10_000)?;
                    out.push((r, jobs));
                }
                Ok::<_, StoreError>((out, more))
            })
            .await?;
        Ok(page)
    }

    /// Bans or unbans a user. True if that changed anything (an audit entry is written only then).
    pub async fn set_banned(&self, actor: Actor, user: UserId, banned: bool) -> Result<bool, AdminError> {
        self.update_user(actor, user, move |u| {
            let before = std::mem::replace(&mut u.banned, banned);
            (before != banned)
                .then(|| (if banned { "ban" } else { "unban" }, format!("banned={before}"), format!("banned={banned}")))
        })
        .await
    }

    /// Gives a user one of the configured levels, with no end date (a subscription's
    /// `level_until` is cleared). Errors: [`AdminError::Invalid`] for another name.
    pub async fn set_level(&self, actor: Actor, user: UserId, level: &str) -> Result<bool, AdminError> {
        let Some(pos) = self.levels.iter().position(|l| l == level) else {
            return Err(AdminError::Invalid(format!("unknown level; one of: {}", self.levels.join(", "))));
        };
        // The default level is stored as "", so changing the default later moves those users.
        let stored = if pos == 0 { String::new() } else { level.to_string() };
        let default = self.levels[0].clone();
        self.update_user(actor, user, move |u| {
            let shown = |l: &str| if l.is_empty() { default.clone() } else { l.to_string() };
            let before = std::mem::replace(&mut u.level, stored);
            // An admin's choice has no end date, even over a subscription's.
            let had_end = u.level_until.take().is_some();
            (before != u.level || had_end)
                .then(|| ("set_level", format!("level={}", shown(&before)), format!("level={}", shown(&u.level))))
        })
        .await
    }

    /// Changes one user with its audit entry; `change` edits the record and returns the audit
    /// (action, before, after), or `None` when nothing changed.
    async fn update_user(
        &self,
        actor: Actor,
        user: UserId,
        change: impl FnOnce(&mut UserRecord) -> Option<(&'static str, String, String)> + Send + 'static,
    ) -> Result<bool, AdminError> {
        self.store
            .write(move |tx| {
                let mut u = tx.get_user(user)?.ok_or(AdminError::UnknownUser(user.0))?;
                let Some((action, before, after)) = change(&mut u) else { return Ok(false) };
                u.updated_at = now_ms();
                tx.put_user(&u)?;
                tx.insert_audit(&audit(&actor, action, target(user), before, after))?;
                Ok(true)
            })
            .await
    }

    /// Switches a configured model or provider on or off at runtime (kept across restarts).
    /// True if it changed. Errors: [`AdminError::UnknownTarget`] for an id not in the config.
    pub async fn set_enabled(&self, actor: Actor, switch: Switch, enabled: bool) -> Result<bool, AdminError> {
        let known = match &switch {
            Switch::Model(id) => self.catalog.configured(id).is_some(),
            Switch::Provider(id) => self.catalog.configured_provider(id).is_some(),
        };
        if !known {
            return Err(AdminError::UnknownTarget(switch.key()));
        }
        let reason = format!("disabled by {actor}");
        let changed = self
            .store
            .write(move |tx: &mut Tx| {
                let changed = tx.set_disabled(&switch, (!enabled).then_some(reason.as_str()))?;
                if changed {
                    let (before, after) = if enabled { ("disabled", "enabled") } else { ("enabled", "disabled") };
                    tx.insert_audit(&audit(&actor, "toggle", switch.key(), before.into(), after.into()))?;
                }
                Ok::<_, AdminError>(changed)
            })
            .await?;
        self.catalog.reload().await?;
        Ok(changed)
    }

    /// Overrides a model's price or a provider's concurrency (`Some`), or goes back to the
    /// config's value (`None`). Errors: [`AdminError::UnknownTarget`], and
    /// [`AdminError::Invalid`] outside [`PRICE_RANGE`] / [`CONCURRENCY_RANGE`].
    pub async fn set_setting(&self, actor: Actor, setting: Setting, value: Option<i64>) -> Result<(), AdminError> {
        let (configured, range) = match &setting {
            Setting::Price(id) => (self.catalog.configured(id).map(|m| m.price.0), PRICE_RANGE),
            Setting::Concurrency(id) => {
                (self.catalog.configured_provider(id).map(|p| i64::from(p.max_concurrency)), CONCURRENCY_RANGE)
            }
        };
        let Some(configured) = configured else { return Err(AdminError::UnknownTarget(setting.key())) };
        if let Some(v) = value.filter(|v| !range.contains(v)) {
            return Err(AdminError::Invalid(format!("{v}: a whole number from {} to {}", range.start(), range.end())));
        }
        self.store
            .write(move |tx| {
                let before = tx.set_setting(&setting, value)?.unwrap_or(configured);
                let after = value.unwrap_or(configured);
                tx.insert_audit(&audit(&actor, "setting", setting.key(), before.to_string(), after.to_string()))?;
                Ok::<_, AdminError>(())
            })
            .await?;
        self.catalog.reload().await?;
        Ok(())
    }

    /// Sets the panel password (Argon2id, hashed off the async runtime), with an audit entry.
    /// Errors: [`AdminError::Invalid`] under [`MIN_PASSWORD_CHARS`].
    pub async fn set_password(&self, actor: Actor, password: crate::config::Secret) -> Result<(), AdminError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || set_password_blocking(&store, &actor, password.expose()))
            .await
            .map_err(|e| AdminError::Store(StoreError::Join(e.to_string())))?
    }
}

/// [`Admin::set_password`] for blocking callers (the first start, which has no `Admin` yet).
pub fn set_password_blocking(store: &Store, actor: &Actor, password: &str) -> Result<(), AdminError> {
    let hash = hash_password(password)?;
    store.write_blocking(|tx| {
        let before = if tx.get_password_hash()?.is_some() { "set" } else { "unset" };
        tx.put_password_hash(&hash)?;
        tx.insert_audit(&audit(actor, "set_password", String::new(), before.into(), "set".into()))?;
        Ok(())
    })
}

/// First start: with no password stored, generate one, write it to `data_dir/admin-password`
/// and return that path so the caller logs it once. The file is created new, mode 600: an
/// existing file (or a symlink planted in its place) is never followed, truncated or
/// overwritten; then no password is generated and a warning says what to do.
pub fn ensure_password(store: &Store, data_dir: &Path) -> Result<Option<PathBuf>, AdminError> {
    if store.read_blocking(|rx| rx.get_password_hash())?.is_some() {
        return Ok(None);
    }
    let password = crate::domain::random_token()[..24].to_string();
    let path = data_dir.join("admin-password");
    let mut opts = std::fs::OpenOptions::new();
    // create_new is O_CREAT|O_EXCL: it fails on any existing name, symlinks included.
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = match opts.open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            tracing::warn!(
                path = %path.display(),
                "no admin password is set, but this file already exists: not touching it, so the panel has no \
                 password yet; set one with `mediabot admin set-password` (or remove the file and restart)"
            );
            return Ok(None);
        }
        Err(e) => return Err(StoreError::Io(e).into()),
    };
    std::io::Write::write_all(&mut f, format!("{password}\n").as_bytes()).map_err(StoreError::Io)?;
    set_password_blocking(store, &Actor::System, &password)?;
    Ok(Some(path))
}

/// Constant-time check of a password against a PHC hash; a malformed hash never matches.
pub fn verify_password(hash: &str, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(hash).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Argon2id hash of `password` in PHC string form. Errors: [`AdminError::Invalid`] for a
/// password under [`MIN_PASSWORD_CHARS`].
pub fn hash_password(password: &str) -> Result<String, AdminError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AdminError::Invalid(format!("the password needs at least {MIN_PASSWORD_CHARS} characters")));
    }
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| AdminError::Invalid(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AdminError::Invalid(e.to_string()))
}

/// Stored name of a charge state (`paid`, `refund_pending`, `refunded`, `refund_failed`).
pub fn state_name(s: PaymentState) -> &'static str {
    match s {
        PaymentState::Paid => "paid",
        PaymentState::RefundPending => "refund_pending",
        PaymentState::Refunded => "refunded",
        PaymentState::RefundFailed => "refund_failed",
    }
}

fn target(user: UserId) -> String {
    format!("user:{}", user.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_writes_a_private_password_file_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let path = ensure_password(&store, dir.path()).expect("ensure").expect("generated");
        let pw = std::fs::read_to_string(&path).expect("read");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        }
        let hash = store.read_blocking(|rx| rx.get_password_hash()).expect("hash").expect("set");
        assert!(verify_password(&hash, pw.trim()));
        assert_eq!(ensure_password(&store, dir.path()).expect("again"), None, "no second password");
        let short = set_password_blocking(&store, &Actor::Cli, "short");
        assert!(short.is_err(), "short passwords are refused");
    }

    #[cfg(unix)]
    #[test]
    fn password_file_is_never_followed_or_truncated() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let hash = |s: &Store| s.read_blocking(|rx| rx.get_password_hash()).expect("hash");
        // A symlink planted where the file goes: the target must stay as it is.
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "precious\n").expect("write");
        std::os::unix::fs::symlink(&target, dir.path().join("admin-password")).expect("symlink");
        assert_eq!(ensure_password(&store, dir.path()).expect("ensure"), None);
        assert_eq!(std::fs::read_to_string(&target).expect("read"), "precious\n", "symlink not followed");
        assert!(hash(&store).is_none(), "no password whose text nobody can read");
        // A plain file left from before keeps its content too.
        std::fs::remove_file(dir.path().join("admin-password")).expect("rm");
        std::fs::write(dir.path().join("admin-password"), "old\n").expect("write");
        assert_eq!(ensure_password(&store, dir.path()).expect("ensure"), None);
        assert_eq!(std::fs::read_to_string(dir.path().join("admin-password")).expect("read"), "old\n");
    }
}
