//! Moving credits. Every balance change is a ledger row written in the same redb transaction
//! as the balance (and, for jobs, as the job record), so the ledger replays to the balance.
//!
//! Hold lifecycle: `hold` (balance −price, `user.held` +price) → exactly one of `capture`
//! (held −price; the credits are spent) or `release` (balance +price). The job records which
//! one happened ([`Settlement`]), which is what makes a second settlement a no-op.

pub mod crypto_pay;
pub mod history;
pub mod levels;
pub mod subscriptions;

use crate::config::{BillingConfig, Package};
use crate::domain::{Credits, JobId, OperationId, UserId, now_ms};
use crate::store::records::{
    CryptoStatus, JobRecord, OpKind, Operation, PaymentRecord, PaymentState, Settlement, UserRecord,
};
use crate::store::{Rx, Store, StoreError, Tx};
use std::collections::HashMap;

/// Errors from billing operations.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("insufficient funds: balance {balance}, price {price}")]
    InsufficientFunds { balance: Credits, price: Credits },
    #[error("unknown user {0:?}")]
    UnknownUser(UserId),
    #[error("amount overflow")]
    Overflow,
    /// A hold adjustment for a job whose hold is already settled (or that has none).
    #[error("the job has no open hold")]
    NoOpenHold,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What Telegram tells us about a user on each update.
#[derive(Debug, Clone)]
pub struct Profile {
    pub id: UserId,
    pub first_name: String,
    pub username: Option<String>,
    pub language_code: Option<String>,
}

/// Billing service: owns the signup-bonus rule and ledger verification.
#[derive(Clone, Debug)]
pub struct Billing {
    store: Store,
    cfg: BillingConfig,
    /// Access levels with the quota clock, shared with `jobs`.
    levels: std::sync::Arc<levels::Levels>,
}

/// Appends a ledger row and applies its delta to `user` (not yet saved). Refuses a negative
/// balance. Returns the operation.
fn apply(
    tx: &mut Tx,
    user: &mut UserRecord,
    kind: OpKind,
    amount: Credits,
    delta: Credits,
    job_id: Option<JobId>,
    hold_id: Option<OperationId>,
    actor: &str,
    reason: Option<String>,
) -> Result<Operation, BillingError> {
    let balance = user.balance.checked_add(delta).ok_or(BillingError::Overflow)?;
    if balance.is_negative() {
        return Err(BillingError::InsufficientFunds { balance: user.balance, price: amount });
    }
    user.balance = balance;
    user.updated_at = now_ms();
    let op = Operation {
        id: OperationId::new(),
        user_id: user.id,
        kind,
        amount,
        delta,
        balance_after: balance,
        job_id,
        hold_id,
        actor: actor.into(),
        reason,
        created_at: now_ms(),
    };
    tx.insert_operation(&op)?;
    Ok(op)
}

/// Places a hold of `job.price` for `job` inside `tx` and records it on the job (not yet saved).
/// Errors: [`BillingError::InsufficientFunds`] — nothing is written in that case when the
/// caller propagates the error (the transaction is dropped).
pub fn hold(tx: &mut Tx, job: &mut JobRecord) -> Result<OperationId, BillingError> {
    let mut user = tx.get_user(job.user_id)?.ok_or(BillingError::UnknownUser(job.user_id))?;
    if user.balance < job.price {
        return Err(BillingError::InsufficientFunds { balance: user.balance, price: job.price });
    }
    let neg = job.price.checked_neg().ok_or(BillingError::Overflow)?;
    let op = apply(tx, &mut user, OpKind::Hold, job.price, neg, Some(job.id), None, "user", None)?;
    user.held = user.held.checked_add(job.price).ok_or(BillingError::Overflow)?;
    tx.put_user(&user)?;
    job.hold_id = Some(op.id);
    Ok(op.id)
}

/// Settles the job's hold as a charge. Returns false (and writes nothing) if it was already
/// settled or there was no hold.
pub fn capture(tx: &mut Tx, job: &mut JobRecord) -> Result<bool, BillingError> {
    settle(tx, job, true)
}

/// Gives the job's hold back. Returns false if it was already settled or there was no hold.
pub fn release(tx: &mut Tx, job: &mut JobRecord) -> Result<bool, BillingError> {
    settle(tx, job, false)
}

fn settle(tx: &mut Tx, job: &mut JobRecord, charge: bool) -> Result<bool, BillingError> {
    let Some(hold_id) = job.hold_id else { return Ok(false) };
    // Re-read the stored job: the in-memory copy may be stale, the stored one is the truth.
    if let Some(stored) = tx.get_job(job.id)? {
        if stored.settlement.is_some() {
            job.settlement = stored.settlement;
            return Ok(false);
        }
    }
    if job.settlement.is_some() {
        return Ok(false);
    }
    let mut user = tx.get_user(job.user_id)?.ok_or(BillingError::UnknownUser(job.user_id))?;
    let (kind, delta) = if charge { (OpKind::Capture, Credits::ZERO) } else { (OpKind::Release, job.price) };
    let op = apply(tx, &mut user, kind, job.price, delta, Some(job.id), Some(hold_id), "system", None)?;
    user.held = user.held.checked_sub(job.price).ok_or(BillingError::Overflow)?;
    tx.put_user(&user)?;
    job.settlement = Some(if charge { Settlement::Captured(op.id) } else { Settlement::Released(op.id) });
    if !charge {
        // A job that did not happen does not use up the day's quota either.
        levels::give_back(tx, job)?;
    }
    Ok(true)
}

/// Resizes the job's open hold to `price` (a move to a fallback model) inside `tx`: one
/// `HoldAdjust` row for the difference — given back when `price` is lower, held as well when
/// it is higher — and `job.price = price` (not yet saved). Returns the row, or `None` when
/// the price is the same (nothing to write).
///
/// Errors: [`BillingError::InsufficientFunds`] when the balance cannot cover a higher price
/// (nothing written); [`BillingError::NoOpenHold`] for a job whose hold is settled or absent.
pub fn adjust_hold(tx: &mut Tx, job: &mut JobRecord, price: Credits) -> Result<Option<Operation>, BillingError> {
    let Some(hold_id) = job.hold_id else { return Err(BillingError::NoOpenHold) };
    let stored = tx.get_job(job.id)?;
    if job.settlement.is_some() || stored.is_some_and(|s| s.settlement.is_some()) {
        return Err(BillingError::NoOpenHold);
    }
    if price == job.price {
        return Ok(None);
    }
    let mut user = tx.get_user(job.user_id)?.ok_or(BillingError::UnknownUser(job.user_id))?;
    // Given back (> 0) or taken as well (< 0).
    let delta = job.price.checked_sub(price).ok_or(BillingError::Overflow)?;
    let amount = Credits(delta.0.checked_abs().ok_or(BillingError::Overflow)?);
    if user.balance.checked_add(delta).is_none_or(|b| b.is_negative()) {
        return Err(BillingError::InsufficientFunds { balance: user.balance, price: amount });
    }
    let op = apply(tx, &mut user, OpKind::HoldAdjust, amount, delta, Some(job.id), Some(hold_id), "system", None)?;
    user.held = user.held.checked_sub(delta).ok_or(BillingError::Overflow)?;
    tx.put_user(&user)?;
    job.price = price;
    Ok(Some(op))
}

/// A manual balance change (admin top-up or deduction). Refuses to go below zero.
pub fn adjust(tx: &mut Tx, user: UserId, delta: Credits, actor: &str, reason: &str) -> Result<Operation, BillingError> {
    let mut u = tx.get_user(user)?.ok_or(BillingError::UnknownUser(user))?;
    let amount = Credits(delta.0.checked_abs().ok_or(BillingError::Overflow)?);
    let op = apply(tx, &mut u, OpKind::Adjust, amount, delta, None, None, actor, Some(reason.into()))?;
    tx.put_user(&u)?;
    Ok(op)
}

/// Why a refund cannot start. Nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundRefusal {
    /// No stored charge has this id.
    UnknownCharge,
    /// The charge is not `paid`: a refund is pending, done, or failed before (the state).
    NotPaid(PaymentState),
}

/// Refund outbox, step 1 (inside `tx`): the charge must be stored and `paid`. Takes the credits
/// it bought back out as one `Refund` ledger row — all of them, or the whole balance when it is
/// smaller (never below zero: the ledger invariant; the rest is the shortfall) — and marks the
/// charge `refund_pending` with that row, in the same transaction. Returns the updated charge
/// and the row; the caller then calls `refundStarPayment` and records the answer with
/// [`finish_refund`].
pub fn begin_refund(
    tx: &mut Tx,
    charge_id: &str,
    actor: &str,
) -> Result<Result<(PaymentRecord, Operation), RefundRefusal>, BillingError> {
    let Some(mut pay) = tx.get_payment(charge_id)? else { return Ok(Err(RefundRefusal::UnknownCharge)) };
    if pay.state != PaymentState::Paid {
        return Ok(Err(RefundRefusal::NotPaid(pay.state)));
    }
    let mut user = tx.get_user(pay.user_id)?.ok_or(BillingError::UnknownUser(pay.user_id))?;
    let taken = pay.credits.min(user.balance).max(Credits::ZERO);
    let delta = taken.checked_neg().ok_or(BillingError::Overflow)?;
    let reason = format!("{STARS_REASON}{charge_id}");
    let op = apply(tx, &mut user, OpKind::Refund, pay.credits, delta, None, None, actor, Some(reason))?;
    // A refunded subscription period takes its level away at once: the user got their Stars
    // back, so they keep nothing they paid for (credits above, the level here).
    if let Some(level) = pay.package_id.strip_prefix(subscriptions::LEVEL_PACKAGE_PREFIX)
        && user.level == level
        && user.level_until.is_some()
    {
        user.level = String::new();
        user.level_until = None;
        user.updated_at = now_ms();
    }
    tx.put_user(&user)?;
    pay.state = PaymentState::RefundPending;
    pay.refund_operation_id = Some(op.id);
    pay.refund_shortfall = pay.credits.checked_sub(taken).ok_or(BillingError::Overflow)?;
    pay.refund_actor = actor.to_string();
    pay.updated_at = now_ms();
    tx.put_payment(&pay)?;
    Ok(Ok((pay, op)))
}

/// Refund outbox, step 2 (inside `tx`): records Telegram's answer for a `refund_pending`
/// charge. `Ok(())` (refunded now, or Telegram says it already was) → `refunded`;
/// `Err(description)` (Telegram refused) → `refund_failed` and the credits the `Refund` row
/// took go back as one `RefundReversal` row. Returns the updated charge, or `None` when the
/// charge is no longer pending (another pass recorded it first): nothing is written twice.
pub fn finish_refund(
    tx: &mut Tx,
    charge_id: &str,
    answer: Result<(), String>,
) -> Result<Option<PaymentRecord>, BillingError> {
    let Some(mut pay) = tx.get_payment(charge_id)? else { return Ok(None) };
    if pay.state != PaymentState::RefundPending {
        return Ok(None);
    }
    pay.updated_at = now_ms();
    match answer {
        Ok(()) => pay.state = PaymentState::Refunded,
        Err(why) => {
            let taken = pay.credits.checked_sub(pay.refund_shortfall).ok_or(BillingError::Overflow)?;
            if taken.0 > 0 {
                let mut user = tx.get_user(pay.user_id)?.ok_or(BillingError::UnknownUser(pay.user_id))?;
                let reason = format!("{STARS_REASON}{charge_id}");
                apply(tx, &mut user, OpKind::RefundReversal, taken, taken, None, None, "system", Some(reason))?;
                tx.put_user(&user)?;
            }
            pay.state = PaymentState::RefundFailed;
            pay.refund_error = Some(why.chars().take(300).collect());
        }
    }
    tx.put_payment(&pay)?;
    Ok(Some(pay))
}

/// `reason` prefix of a `Referral` ledger row; the referee's user id follows, then for a share
/// of a purchase `:` and the purchase's reason (`stars:<charge id>`).
pub const REFERRAL_REASON: &str = "ref:";
/// The `/start` payload prefix of a referral link (`t.me/<bot>?start=ref_<code>`).
pub const REFERRAL_PAYLOAD: &str = "ref_";

/// A user's referral code: their Telegram id in lowercase base 36. Derived rather than stored:
/// nothing to generate, store or index, a link resolves with one primary-key read, and it never
/// changes. It reveals the id, which every chat the user writes in already sees.
pub fn referral_code(user: UserId) -> String {
    let mut n = user.0.unsigned_abs();
    let mut out = Vec::new();
    loop {
        out.push(char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.iter().rev().collect()
}

/// The referrer named by a `/start` payload `ref_<code>`; `None` for any other payload.
pub fn parse_referral(payload: &str) -> Option<UserId> {
    let code = payload.trim().strip_prefix(REFERRAL_PAYLOAD)?;
    if code.is_empty() || code.len() > 13 || !code.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()) {
        return None;
    }
    i64::from_str_radix(code, 36).ok().filter(|id| *id > 0).map(UserId)
}

/// Pays `referrer` (not yet saved) a referral reward of up to `amount` for `referee`'s `cause`
/// (`None`: the signup; `Some(purchase reason)`: a share of that purchase). With a daily cap the
/// reward is cut to what is left of it today (the referrer's `Referral` rows since `day_start`);
/// nothing is written when nothing is left. Returns the row written.
fn reward(
    tx: &mut Tx,
    referrer: &mut UserRecord,
    referee: UserId,
    cause: Option<&str>,
    amount: Credits,
    day_start: i64,
    cap: Credits,
) -> Result<Option<Operation>, BillingError> {
    let mut amount = amount;
    if cap.0 > 0 {
        let today = tx.sum_operations_since(referrer.id, OpKind::Referral, day_start)?;
        amount = amount.min(Credits(cap.0.saturating_sub(today.0)));
    }
    if amount.0 <= 0 {
        return Ok(None);
    }
    let reason = match cause {
        None => format!("{REFERRAL_REASON}{}", referee.0),
        Some(c) => format!("{REFERRAL_REASON}{}:{c}", referee.0),
    };
    let op = apply(tx, referrer, OpKind::Referral, amount, amount, None, None, "system", Some(reason))?;
    referrer.referral.earned = referrer.referral.earned.checked_add(amount).ok_or(BillingError::Overflow)?;
    Ok(Some(op))
}

/// The referral share rule in force for one purchase (`[billing.referral]` and today's start).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReferralTerms {
    percent: u8,
    cap: Credits,
    day_start: i64,
}

/// The one credit path of every top-up (Stars charge, Crypto Pay invoice), inside the caller's
/// write transaction: `credits` to `user` as one `Purchase` ledger row with `reason` (the
/// payment's key: `stars:<charge id>`, `cryptopay:<invoice id>`), and the referrer's share of
/// it as one `Referral` row naming that reason. The caller records the payment as credited in
/// the same transaction (that record is what makes a second delivery a no-op). Returns the
/// purchase row and the payer's saved record.
/// Errors: [`BillingError::UnknownUser`], overflow, store errors (nothing is committed).
pub(crate) fn credit_package(
    tx: &mut Tx,
    user: UserId,
    credits: Credits,
    reason: &str,
    terms: &ReferralTerms,
) -> Result<(Operation, UserRecord), BillingError> {
    let mut payer = tx.get_user(user)?.ok_or(BillingError::UnknownUser(user))?;
    let op = apply(tx, &mut payer, OpKind::Purchase, credits, credits, None, None, "user", Some(reason.to_string()))?;
    tx.put_user(&payer)?;
    if let Some(by) = payer.referral.by.filter(|_| terms.percent > 0) {
        if let Some(mut referrer) = tx.get_user(by)? {
            let share = Credits(credits.0.saturating_mul(i64::from(terms.percent)) / 100);
            if reward(tx, &mut referrer, payer.id, Some(reason), share, terms.day_start, terms.cap)?.is_some() {
                tx.put_user(&referrer)?;
            }
        }
    }
    Ok((op, payer))
}

/// A hold as [`verify`] replays it: credits still held after any adjustment, settlements and
/// adjustments seen.
struct OpenHold {
    left: i64,
    settled: u32,
    adjusted: u32,
}

/// A problem found by [`verify`].
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub user: UserId,
    pub problem: String,
}

/// Recomputes every balance and every open hold from the ledger and compares with the users
/// table and the jobs' settlements. `Purchase` rows replay like any credit and must each match
/// one stored Stars charge (`stars:`) or one `paid` Crypto Pay invoice (`cryptopay:`) of the
/// same user, credits and operation id (a charge or invoice credited twice, a purchase without
/// its payment, or a paid invoice without its purchase is reported). `Referral` rows replay as credits and must
/// each name a referee this user invited (and, for a purchase share, that referee's stored
/// charge), at most one per signup and per charge; `referral.earned` and `referral.joined`
/// must match the rows and the users. A `Refund` row must be its charge's recorded refund
/// (its credits, its shortfall, its `refund_operation_id`), a `RefundReversal` must belong to a
/// `refund_failed` charge and give back exactly what was taken, each at most once per charge;
/// a charge past `paid` must have its `Refund` row. A `HoldAdjust` row must resize an open
/// hold of a job that moved to a fallback, at most once, to that job's price (`from_price −
/// delta = to_price = price`); every capture or release must settle what its hold has left.
pub fn verify(rx: &Rx) -> Result<Vec<Mismatch>, StoreError> {
    let mut out = Vec::new();
    let mut charges: HashMap<String, u32> = HashMap::new();
    let mut invoices: HashMap<String, u32> = HashMap::new();
    let mut causes: HashMap<String, u32> = HashMap::new();
    let (mut refunds, mut reversals): (HashMap<String, u32>, HashMap<String, u32>) = Default::default();
    let users = rx.find_users()?;
    let mut joined: HashMap<UserId, u32> = HashMap::new();
    for u in &users {
        if let Some(by) = u.referral.by {
            *joined.entry(by).or_default() += 1;
        }
    }
    for u in users {
        let mut earned = 0i64;
        let mut bad = |problem: String| out.push(Mismatch { user: u.id, problem });
        let ops = rx.find_operations(u.id)?;
        let mut balance = 0i64;
        let mut held = 0i64;
        let mut holds: HashMap<OperationId, OpenHold> = HashMap::new();
        for op in &ops {
            balance += op.delta.0;
            if balance < 0 {
                bad(format!("balance negative ({balance}) after operation {}", op.id));
            }
            if op.balance_after.0 != balance {
                bad(format!("operation {} says balance_after {} but replay gives {balance}", op.id, op.balance_after));
            }
            match op.kind {
                OpKind::Hold => {
                    held += op.amount.0;
                    holds.insert(op.id, OpenHold { left: op.amount.0, settled: 0, adjusted: 0 });
                }
                OpKind::Capture | OpKind::Release => {
                    held -= op.amount.0;
                    match op.hold_id.and_then(|h| holds.get_mut(&h)) {
                        Some(h) => {
                            h.settled += 1;
                            if h.settled > 1 {
                                bad(format!("hold {:?} settled more than once", op.hold_id));
                            }
                            // After a hold adjustment the settlement is of the adjusted amount.
                            if h.left != op.amount.0 {
                                bad(format!("operation {} settles {} of a hold of {}", op.id, op.amount, h.left));
                            }
                        }
                        None => bad(format!("operation {} settles an unknown hold", op.id)),
                    }
                }
                OpKind::HoldAdjust => {
                    // +delta leaves the hold for the balance; −delta joins it.
                    held -= op.delta.0;
                    if op.delta.0.abs() != op.amount.0 || op.amount.0 == 0 {
                        bad(format!("hold adjustment {} has amount {} but delta {}", op.id, op.amount, op.delta));
                    }
                    match op.hold_id.and_then(|h| holds.get_mut(&h)) {
                        Some(h) if h.settled > 0 => {
                            bad(format!("hold adjustment {} after its hold was settled", op.id))
                        }
                        Some(h) => {
                            h.adjusted += 1;
                            h.left -= op.delta.0;
                            if h.adjusted > 1 {
                                bad(format!("hold {:?} adjusted more than once", op.hold_id));
                            }
                            if h.left < 0 {
                                bad(format!("hold adjustment {} gives back more than was held", op.id));
                            }
                        }
                        None => bad(format!("hold adjustment {} names an unknown hold", op.id)),
                    }
                    // Only a job that moved to a fallback has its hold resized, to that price.
                    let job = op.job_id.map(|j| rx.get_job(j)).transpose()?.flatten();
                    match job.as_ref().and_then(|j| j.failover.as_ref().map(|f| (j, f))) {
                        Some((j, f))
                            if f.to_price == j.price && f.from_price.checked_sub(op.delta) == Some(j.price) => {}
                        _ => bad(format!("hold adjustment {} does not match its job's failover", op.id)),
                    }
                }
                OpKind::Purchase => {
                    let reason = op.reason.as_deref().unwrap_or_default();
                    if let Some(id) = reason.strip_prefix(crypto_pay::CRYPTO_REASON) {
                        *invoices.entry(id.to_string()).or_default() += 1;
                        if invoices[id] > 1 {
                            bad(format!("crypto invoice {id} credited more than once"));
                        }
                        let stored = id.parse().ok().map(|i| rx.get_crypto_invoice(i)).transpose()?.flatten();
                        match stored {
                            Some(inv)
                                if inv.user_id == u.id
                                    && inv.credits == op.amount
                                    && inv.status == CryptoStatus::Paid
                                    && inv.operation_id == Some(op.id) => {}
                            Some(_) => bad(format!("purchase {} does not match its crypto invoice {id}", op.id)),
                            None => bad(format!("purchase {} has no stored crypto invoice {id:?}", op.id)),
                        }
                        continue;
                    }
                    let charge = reason.strip_prefix(STARS_REASON).unwrap_or_default();
                    *charges.entry(charge.to_string()).or_default() += 1;
                    match rx.get_payment(charge)? {
                        Some(p) if p.user_id == u.id && p.credits == op.amount && p.operation_id == op.id => {}
                        Some(_) => bad(format!("purchase {} does not match its charge {charge:?}", op.id)),
                        None => bad(format!("purchase {} has no stored charge {charge:?}", op.id)),
                    }
                }
                OpKind::Referral => {
                    earned += op.amount.0;
                    let cause = op.reason.as_deref().and_then(|r| r.strip_prefix(REFERRAL_REASON)).unwrap_or_default();
                    *causes.entry(cause.to_string()).or_default() += 1;
                    if causes[cause] > 1 {
                        bad(format!("referral reward {} for {cause:?} paid more than once", op.id));
                    }
                    let (referee, charge) = match cause.split_once(':') {
                        Some((id, rest)) => (id, Some(rest.strip_prefix(STARS_REASON).unwrap_or(rest))),
                        None => (cause, None),
                    };
                    let referee = referee.parse().ok().map(UserId);
                    match referee.map(|r| rx.get_user(r)).transpose()?.flatten() {
                        Some(r) if r.referral.by == Some(u.id) => {
                            if let Some(invoice) = charge.and_then(|c| c.strip_prefix(crypto_pay::CRYPTO_REASON)) {
                                let stored =
                                    invoice.parse().ok().map(|i| rx.get_crypto_invoice(i)).transpose()?.flatten();
                                if stored.is_none_or(|i| i.user_id != r.id || i.status != CryptoStatus::Paid) {
                                    bad(format!("referral reward {} names no purchase of {:?}", op.id, r.id));
                                }
                            } else if let Some(charge) = charge {
                                if rx.get_payment(charge)?.is_none_or(|p| p.user_id != r.id) {
                                    bad(format!("referral reward {} names no purchase of {:?}", op.id, r.id));
                                }
                            }
                        }
                        _ => bad(format!("referral reward {} names no referee of this user ({cause:?})", op.id)),
                    }
                }
                OpKind::Refund | OpKind::RefundReversal => {
                    let charge = op.reason.as_deref().and_then(|r| r.strip_prefix(STARS_REASON)).unwrap_or_default();
                    let reversal = op.kind == OpKind::RefundReversal;
                    let seen = if reversal { &mut reversals } else { &mut refunds };
                    *seen.entry(charge.to_string()).or_default() += 1;
                    if seen[charge] > 1 {
                        bad(format!("charge {charge:?} has more than one {:?} row", op.kind));
                    }
                    let ok = match rx.get_payment(charge)? {
                        Some(p) if p.user_id == u.id && reversal => {
                            p.state == PaymentState::RefundFailed
                                && Some(op.amount) == p.credits.checked_sub(p.refund_shortfall)
                        }
                        Some(p) if p.user_id == u.id => {
                            p.state != PaymentState::Paid
                                && p.refund_operation_id == Some(op.id)
                                && p.credits == op.amount
                                && op.amount.checked_add(op.delta) == Some(p.refund_shortfall)
                        }
                        _ => false,
                    };
                    if !ok {
                        bad(format!("{:?} row {} does not match its charge {charge:?}", op.kind, op.id));
                    }
                }
                _ => {}
            }
        }
        if balance != u.balance.0 {
            bad(format!("balance {} but ledger sums to {balance}", u.balance));
        }
        if earned != u.referral.earned.0 {
            bad(format!("referral earned {} but its rows sum to {earned}", u.referral.earned));
        }
        let n = joined.get(&u.id).copied().unwrap_or(0);
        if n != u.referral.joined {
            bad(format!("referral joined {} but {n} users name this user", u.referral.joined));
        }
        if held != u.held.0 {
            bad(format!("held {} but open holds sum to {held}", u.held));
        }
        for op in ops.iter().filter(|o| o.kind == OpKind::Hold) {
            let settled = holds.get(&op.id).is_some_and(|h| h.settled > 0);
            let job = op.job_id.map(|j| rx.get_job(j)).transpose()?.flatten();
            match job {
                Some(j) if j.status.is_terminal() && !settled => {
                    bad(format!("job {} is {:?} but its hold is open", j.id, j.status))
                }
                Some(j) if settled && j.settlement.is_none() => {
                    bad(format!("job {} hold settled in ledger but not on the job", j.id))
                }
                None => bad(format!("hold {} has no job", op.id)),
                _ => {}
            }
        }
    }
    // Every charge past `paid` has its refund row, and a failed one with credits taken its
    // reversal.
    for p in rx.find_payments()? {
        let charge = p.telegram_payment_charge_id.as_str();
        let refunded = refunds.get(charge).copied().unwrap_or(0) > 0;
        if p.state != PaymentState::Paid && !refunded {
            out.push(Mismatch {
                user: p.user_id,
                problem: format!("charge {charge:?} is {:?} without its refund row", p.state),
            });
        }
        let reversed = reversals.get(charge).copied().unwrap_or(0) > 0;
        let taken = p.credits.0 - p.refund_shortfall.0;
        if p.state == PaymentState::RefundFailed && taken > 0 && !reversed {
            out.push(Mismatch {
                user: p.user_id,
                problem: format!("charge {charge:?} refund failed but its debit was not given back"),
            });
        }
    }
    // Every paid crypto invoice has its purchase row (one: counted above).
    for inv in rx.find_crypto_invoices()? {
        let credited = invoices.contains_key(&inv.invoice_id.to_string());
        if (inv.status == CryptoStatus::Paid) != credited {
            out.push(Mismatch {
                user: inv.user_id,
                problem: format!(
                    "crypto invoice {} is {:?} but has {} purchase row",
                    inv.invoice_id,
                    inv.status,
                    if credited { "a" } else { "no" }
                ),
            });
        }
    }
    for (charge, n) in charges {
        if n > 1 {
            let user = rx.get_payment(&charge)?.map_or(UserId(0), |p| p.user_id);
            out.push(Mismatch { user, problem: format!("charge {charge:?} credited {n} times") });
        }
    }
    Ok(out)
}

/// `reason` prefix of a `Purchase` ledger row; the Telegram charge id follows.
pub const STARS_REASON: &str = "stars:";
/// Telegram Stars' currency code (protocols.md §1.8).
pub const STARS_CURRENCY: &str = "XTR";

/// The invoice payload of `package` bought by `user`: `pkg:<package id>:<user id>` (at most
/// 4 + 24 + 1 + 20 bytes, within Telegram's 1–128).
pub fn invoice_payload(package: &str, user: UserId) -> String {
    format!("pkg:{package}:{}", user.0)
}

/// Reads a payload made by [`invoice_payload`]: `(package id, user)`. `None` for anything else.
pub fn parse_payload(payload: &str) -> Option<(String, UserId)> {
    split_payload(payload, "pkg:")
}

/// Reads `<prefix><id>:<user id>` (the shape of every invoice payload this bot makes): `(id,
/// user)`, `None` for another prefix, an empty id or a user id that is not a number.
pub(crate) fn split_payload(payload: &str, prefix: &str) -> Option<(String, UserId)> {
    let (id, user) = payload.strip_prefix(prefix)?.rsplit_once(':')?;
    Some((id.to_string(), UserId(user.parse().ok()?))).filter(|(id, _)| !id.is_empty())
}

/// Why a pre-checkout is refused (the bot turns each into an `error_message` for the payer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckoutRefusal {
    /// The payload names no configured package (removed from the config since the invoice).
    PackageGone,
    /// The package's Stars price or the currency differs from the invoice.
    PriceChanged,
    /// The payer is banned (or unknown to the bot).
    Banned,
    /// The payload's user is not the payer (a forwarded invoice).
    NotPayer,
}

/// A `successful_payment` as Telegram reports it (api.json `SuccessfulPayment`).
#[derive(Debug, Clone)]
pub struct StarPayment {
    pub payer: UserId,
    pub currency: String,
    /// Stars paid.
    pub total_amount: i64,
    pub invoice_payload: String,
    pub telegram_payment_charge_id: String,
    pub provider_payment_charge_id: String,
}

/// What [`Billing::credit_purchase`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum PurchaseOutcome {
    /// Credited now: credits added and the balance after.
    Credited { credits: Credits, balance: Credits },
    /// This charge id was credited before (a re-delivery or a second copy): nothing written.
    AlreadyCredited { credits: Credits, balance: Credits },
    /// The payload names no package (or another user): nothing credited; the charge needs an
    /// admin (refund). Logged with the charge id by the caller.
    UnknownPackage,
}

/// A package as offered to one user: what it adds and how many generations that buys.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub package: Package,
    /// Credits + bonus.
    pub total: Credits,
    /// `total / usual price`, when the user has a usual (non-free) model.
    pub generations: Option<i64>,
}

impl Billing {
    /// A billing service whose levels know no admins and read the system clock; `app` gives
    /// it the shared levels with [`Billing::with_levels`].
    pub fn new(store: Store, cfg: BillingConfig) -> Billing {
        let levels = std::sync::Arc::new(levels::Levels::of_billing(&cfg, &[], levels::Clock::system()));
        Billing { store, cfg, levels }
    }

    /// The same service with `levels` (the instance the job engine uses).
    pub fn with_levels(mut self, levels: std::sync::Arc<levels::Levels>) -> Billing {
        self.levels = levels;
        self
    }

    /// The access levels (`[[billing.level]]`) and their clock.
    pub fn levels(&self) -> &levels::Levels {
        &self.levels
    }

    /// `user`'s level now, today's use of its quota and when that resets (the balance view).
    /// Errors: [`BillingError::UnknownUser`].
    pub async fn level_status(&self, user: UserId) -> Result<levels::LevelStatus, BillingError> {
        let levels = self.levels.clone();
        self.store
            .read(move |rx| {
                let u = rx.get_user(user)?.ok_or(BillingError::UnknownUser(user))?;
                Ok(levels.status(|day| rx.get_quota(user, day), &u)?)
            })
            .await
    }

    /// The start (ms) of the day containing `now` (ms) in `billing.time_zone`, for daily caps.
    fn day_start(&self, now: i64) -> i64 {
        let tz = jiff::tz::TimeZone::get(&self.cfg.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
        jiff::Timestamp::from_millisecond(now)
            .ok()
            .and_then(|t| t.to_zoned_datetime(tz).start_of_day().ok())
            .map_or(now, |d| d.timestamp().as_millisecond())
    }

    /// The referral share rule for a purchase made now.
    pub(crate) fn referral_terms(&self) -> ReferralTerms {
        ReferralTerms {
            percent: self.cfg.referral.purchase_percent,
            cap: self.cfg.referral.daily_cap,
            day_start: self.day_start(now_ms()),
        }
    }

    /// The referral rewards (`[billing.referral]`).
    pub fn referral(&self) -> &crate::config::ReferralConfig {
        &self.cfg.referral
    }

    /// The currency's name per language (see [`crate::config::Currency`]).
    pub fn currency(&self) -> &crate::config::Currency {
        &self.cfg.currency
    }

    /// The configured top-up packages (`[[billing.packages]]`), in config order.
    pub fn packages(&self) -> &[Package] {
        &self.cfg.packages
    }

    /// One package by id.
    pub fn package(&self, id: &str) -> Option<&Package> {
        self.cfg.packages.iter().find(|p| p.id == id)
    }

    /// `/terms` text from config (`billing.terms`); `None` = use the built-in text.
    pub fn terms(&self) -> Option<&str> {
        Some(self.cfg.terms.as_str()).filter(|t| !t.trim().is_empty())
    }

    /// `/paysupport` contact from config (`billing.support`); `None` = the admins.
    pub fn support(&self) -> Option<&str> {
        Some(self.cfg.support.as_str()).filter(|t| !t.trim().is_empty())
    }

    /// Every package with what it buys at `usual_price` (the price of the user's usual model,
    /// from `jobs`): `⌊(credits + bonus) / price⌋` generations; `None` for no or a free model.
    pub fn offers(&self, usual_price: Option<Credits>) -> Vec<Offer> {
        self.cfg
            .packages
            .iter()
            .map(|p| Offer {
                package: p.clone(),
                total: p.total(),
                generations: usual_price.filter(|c| c.0 > 0).map(|c| p.total().0 / c.0),
            })
            .collect()
    }

    /// Decides a `pre_checkout_query` (api.json `PreCheckoutQuery`): the payload names a
    /// configured package (or a level sold as a subscription) with the same Stars price and
    /// currency `XTR`, its user is the payer,
    /// and the payer is a known, unbanned user. Reads only.
    pub async fn check_checkout(
        &self,
        payer: UserId,
        currency: &str,
        total_amount: i64,
        payload: &str,
    ) -> Result<Result<(), CheckoutRefusal>, BillingError> {
        let (user, stars) = match (parse_payload(payload), subscriptions::parse_subscription_payload(payload)) {
            (Some((package, user)), _) => match self.package(&package) {
                Some(p) => (user, p.stars),
                None => return Ok(Err(CheckoutRefusal::PackageGone)),
            },
            // A level no longer sold (or gone) is refused like a removed package.
            (None, Some((level, user))) => {
                match self.levels.get(&level).filter(|_| !level.is_empty()).and_then(|l| l.subscription.as_ref()) {
                    Some(s) => (user, s.stars),
                    None => return Ok(Err(CheckoutRefusal::PackageGone)),
                }
            }
            (None, None) => return Ok(Err(CheckoutRefusal::PackageGone)),
        };
        if user != payer {
            return Ok(Err(CheckoutRefusal::NotPayer));
        }
        if currency != STARS_CURRENCY || stars != total_amount {
            return Ok(Err(CheckoutRefusal::PriceChanged));
        }
        let rec = self.store.read(move |rx| rx.get_user(payer)).await?;
        if rec.is_none_or(|u| u.banned) {
            return Ok(Err(CheckoutRefusal::Banned));
        }
        Ok(Ok(()))
    }

    /// Credits a `successful_payment` once: in one write transaction, a charge id already in
    /// `payments` means nothing is written ([`PurchaseOutcome::AlreadyCredited`]); otherwise the
    /// package's `credits + bonus` go to the payer as one `Purchase` ledger row and the charge
    /// is stored as `paid`. Redb serialises write transactions, so two copies at once, a
    /// re-delivery and a replay after a restart all credit once.
    /// Errors: [`BillingError::UnknownUser`] (the payer never used the bot), store errors.
    pub async fn credit_purchase(&self, pay: StarPayment) -> Result<PurchaseOutcome, BillingError> {
        let package = parse_payload(&pay.invoice_payload).and_then(|(id, _)| self.package(&id).cloned());
        let terms = self.referral_terms();
        self.store
            .write(move |tx| {
                if let Some(done) = tx.get_payment(&pay.telegram_payment_charge_id)? {
                    let balance = tx.get_user(done.user_id)?.map_or(Credits::ZERO, |u| u.balance);
                    return Ok(PurchaseOutcome::AlreadyCredited { credits: done.credits, balance });
                }
                let Some(package) = package else { return Ok(PurchaseOutcome::UnknownPackage) };
                if pay.total_amount != package.stars || pay.currency != STARS_CURRENCY {
                    tracing::warn!(
                        charge = %pay.telegram_payment_charge_id,
                        currency = %pay.currency,
                        paid = pay.total_amount,
                        price = package.stars,
                        "a charge paid a different Stars amount than its package costs now; crediting the package"
                    );
                }
                let credits = package.total();
                let reason = format!("{STARS_REASON}{}", pay.telegram_payment_charge_id);
                let (op, user) = credit_package(tx, pay.payer, credits, &reason, &terms)?;
                let now = now_ms();
                tx.put_payment(&PaymentRecord {
                    telegram_payment_charge_id: pay.telegram_payment_charge_id,
                    provider_payment_charge_id: pay.provider_payment_charge_id,
                    user_id: user.id,
                    package_id: package.id,
                    credits,
                    stars: pay.total_amount,
                    operation_id: op.id,
                    state: PaymentState::Paid,
                    created_at: now,
                    updated_at: now,
                    refund_operation_id: None,
                    refund_shortfall: Credits::ZERO,
                    refund_actor: String::new(),
                    refund_error: None,
                })?;
                Ok(PurchaseOutcome::Credited { credits, balance: user.balance })
            })
            .await
    }

    /// Stores the interface language a user chose (`None`: follow the Telegram client).
    /// Errors: [`BillingError::UnknownUser`].
    pub async fn set_language(&self, user: UserId, language: Option<String>) -> Result<(), BillingError> {
        self.store
            .write(move |tx| {
                let mut u = tx.get_user(user)?.ok_or(BillingError::UnknownUser(user))?;
                u.language = language;
                u.updated_at = now_ms();
                tx.put_user(&u)?;
                Ok(())
            })
            .await
    }

    /// Creates the user on first contact (crediting the signup bonus once) or refreshes their
    /// name, username and language. Returns the record and whether it was new.
    ///
    /// `referrer` (from a `/start ref_<code>` link) is attributed only here, when this call
    /// creates the user, to another existing user, in the same transaction, with the referrer's
    /// signup reward. An existing user, oneself and an unknown code are ignored. A loop is
    /// impossible: the referrer existed before the new user did, so cannot have been invited
    /// by them.
    pub async fn register(&self, p: Profile, referrer: Option<UserId>) -> Result<(UserRecord, bool), BillingError> {
        let bonus = self.cfg.signup_bonus;
        let (ref_bonus, cap, day_start) =
            (self.cfg.referral.signup_bonus, self.cfg.referral.daily_cap, self.day_start(now_ms()));
        self.store
            .write(move |tx| {
                if let Some(mut u) = tx.get_user(p.id)? {
                    if u.first_name != p.first_name || u.username != p.username || u.language_code != p.language_code {
                        u.first_name = p.first_name;
                        u.username = p.username;
                        u.language_code = p.language_code;
                        u.updated_at = now_ms();
                        tx.put_user(&u)?;
                    }
                    return Ok((u, false));
                }
                let mut u = UserRecord {
                    id: p.id,
                    first_name: p.first_name,
                    username: p.username,
                    language_code: p.language_code,
                    balance: Credits::ZERO,
                    held: Credits::ZERO,
                    created_at: now_ms(),
                    updated_at: now_ms(),
                    blocked: false,
                    banned: false,
                    level: String::new(),
                    level_until: None,
                    language: None,
                    referral: Default::default(),
                };
                if bonus.0 > 0 {
                    apply(tx, &mut u, OpKind::SignupBonus, bonus, bonus, None, None, "system", None)?;
                }
                let referrer = match referrer.filter(|r| *r != p.id) {
                    Some(r) => tx.get_user(r)?,
                    None => None,
                };
                // No loop: `by` only ever names a user who existed at registration, and this user
                // did not exist until now. Checked in tests; refused (not paid) should it ever fail.
                debug_assert!(referrer.as_ref().is_none_or(|r| r.referral.by != Some(p.id)), "referral loop");
                let referrer = referrer.filter(|r| r.referral.by != Some(p.id));
                u.referral.by = referrer.as_ref().map(|r| r.id);
                tx.put_user(&u)?;
                if let Some(mut r) = referrer {
                    r.referral.joined += 1;
                    reward(tx, &mut r, u.id, None, ref_bonus, day_start, cap)?;
                    tx.put_user(&r)?;
                }
                Ok((u, true))
            })
            .await
    }

    /// Current user record.
    #[cfg(test)]
    pub async fn user(&self, id: UserId) -> Result<Option<UserRecord>, BillingError> {
        Ok(self.store.read(move |rx| rx.get_user(id)).await?)
    }

    /// Admin top-up or deduction.
    #[cfg(test)]
    pub async fn adjust(
        &self,
        user: UserId,
        delta: Credits,
        actor: String,
        reason: String,
    ) -> Result<Operation, BillingError> {
        self.store.write(move |tx| adjust(tx, user, delta, &actor, &reason)).await
    }

    /// See [`verify`].
    #[cfg(test)]
    pub async fn verify(&self) -> Result<Vec<Mismatch>, BillingError> {
        Ok(self.store.read(verify).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::JobStatus;

    fn job(user: UserId, price: i64) -> JobRecord {
        crate::store::records::test_job(user, price)
    }

    async fn setup() -> (tempfile::TempDir, Store, Billing) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let b = Billing::new(
            store.clone(),
            BillingConfig { currency: "cr".into(), signup_bonus: Credits(100), ..Default::default() },
        );
        (dir, store, b)
    }

    fn profile(id: i64) -> Profile {
        Profile { id: UserId(id), first_name: "U".into(), username: None, language_code: Some("en".into()) }
    }

    #[tokio::test]
    async fn bonus_once_hold_capture_release_and_verify() {
        let (_d, store, b) = setup().await;
        let (u, new) = b.register(profile(1), None).await.expect("reg");
        assert!(new);
        assert_eq!(u.balance, Credits(100));
        let (u, new) = b.register(profile(1), None).await.expect("again");
        assert!(!new);
        assert_eq!(u.balance, Credits(100), "bonus only once");

        let captured = store
            .write(|tx| {
                let mut j = job(UserId(1), 30);
                hold(tx, &mut j).expect("hold");
                tx.put_job(&j)?;
                j.status = JobStatus::Succeeded;
                assert!(capture(tx, &mut j).expect("capture"));
                tx.put_job(&j)?;
                assert!(!capture(tx, &mut j).expect("twice"), "second capture is a no-op");
                assert!(!release(tx, &mut j).expect("release after capture"), "no release after capture");
                let mut k = job(UserId(1), 20);
                hold(tx, &mut k).expect("hold2");
                tx.put_job(&k)?;
                k.status = JobStatus::Failed;
                assert!(release(tx, &mut k).expect("release"));
                tx.put_job(&k)?;
                Ok::<_, crate::store::StoreError>(j.id)
            })
            .await
            .expect("tx");
        let u = b.user(UserId(1)).await.expect("u").expect("exists");
        assert_eq!(u.balance, Credits(70));
        assert_eq!(u.held, Credits(0));
        let ops = store.read(|rx| rx.find_operations(UserId(1))).await.expect("ops");
        let kinds: Vec<_> = ops.iter().map(|o| o.kind).collect();
        assert_eq!(kinds, [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture, OpKind::Hold, OpKind::Release]);
        assert_eq!(ops[2].job_id, Some(captured));
        assert!(b.verify().await.expect("verify").is_empty());
    }

    fn moved(j: &mut JobRecord, to_price: i64) {
        j.failover = Some(crate::store::records::Failover {
            from_model: j.model_id.clone(),
            from_provider: j.provider_id.clone(),
            from_price: j.price,
            to_model: "other".into(),
            to_price: Credits(to_price),
            reason: "test".into(),
            at: now_ms(),
            confirmed: Some(true),
            asked: false,
        });
    }

    #[tokio::test]
    async fn a_hold_adjusts_once_to_the_fallback_price_and_verify_replays_it() {
        let (_d, store, b) = setup().await;
        b.register(profile(7), None).await.expect("reg");
        store
            .write(|tx| {
                // Cheaper: 30 held, 8 back, 22 captured.
                let mut j = job(UserId(7), 30);
                hold(tx, &mut j)?;
                moved(&mut j, 22);
                let op = adjust_hold(tx, &mut j, Credits(22))?.expect("a row");
                assert_eq!(
                    (op.kind, op.amount, op.delta, op.hold_id),
                    (OpKind::HoldAdjust, Credits(8), Credits(8), j.hold_id)
                );
                tx.put_job(&j)?;
                j.status = JobStatus::Succeeded;
                capture(tx, &mut j)?;
                tx.put_job(&j)?;
                // Pricier: 10 held, 5 more, then released (the fallback failed too).
                let mut k = job(UserId(7), 10);
                hold(tx, &mut k)?;
                moved(&mut k, 15);
                adjust_hold(tx, &mut k, Credits(15))?;
                tx.put_job(&k)?;
                k.status = JobStatus::Failed;
                release(tx, &mut k)?;
                tx.put_job(&k)?;
                // Same price: nothing to write; more than the balance: refused, nothing written.
                let mut l = job(UserId(7), 10);
                hold(tx, &mut l)?;
                assert!(adjust_hold(tx, &mut l, Credits(10))?.is_none());
                let too_much = adjust_hold(tx, &mut l, Credits(1000));
                assert!(matches!(too_much, Err(BillingError::InsufficientFunds { .. })), "{too_much:?}");
                assert_eq!(l.price, Credits(10));
                tx.put_job(&l)?;
                // A settled hold cannot be adjusted.
                assert!(matches!(adjust_hold(tx, &mut j, Credits(1)), Err(BillingError::NoOpenHold)));
                Ok::<_, BillingError>(())
            })
            .await
            .expect("tx");
        let u = b.user(UserId(7)).await.expect("u").expect("exists");
        assert_eq!((u.balance, u.held), (Credits(100 - 22 - 10), Credits(10)));
        let clean = b.verify().await.expect("verify");
        assert!(clean.is_empty(), "{clean:?}");
        // A hold adjusted without a failover on its job, or twice, is reported.
        store
            .write(|tx| {
                let mut m = job(UserId(7), 10);
                hold(tx, &mut m)?;
                adjust_hold(tx, &mut m, Credits(6))?;
                tx.put_job(&m)?;
                Ok::<_, BillingError>(())
            })
            .await
            .expect("tx");
        let problems = b.verify().await.expect("verify");
        assert!(problems.iter().any(|p| p.problem.contains("does not match its job's failover")), "{problems:?}");
    }

    #[tokio::test]
    async fn insufficient_funds_writes_nothing() {
        let (_d, store, b) = setup().await;
        b.register(profile(2), None).await.expect("reg");
        let r = store
            .write(|tx| {
                let mut j = job(UserId(2), 500);
                hold(tx, &mut j)?;
                tx.put_job(&j)?;
                Ok::<_, BillingError>(())
            })
            .await;
        assert!(
            matches!(r, Err(BillingError::InsufficientFunds { balance: Credits(100), price: Credits(500) })),
            "the typed error comes out of the transaction: {r:?}"
        );
        let ops = store.read(|rx| rx.find_operations(UserId(2))).await.expect("ops");
        assert_eq!(ops.len(), 1, "only the bonus");
    }

    fn stars(charge: &str, payload: &str) -> StarPayment {
        StarPayment {
            payer: UserId(4),
            currency: STARS_CURRENCY.into(),
            total_amount: 50,
            invoice_payload: payload.into(),
            telegram_payment_charge_id: charge.into(),
            provider_payment_charge_id: String::new(),
        }
    }

    #[tokio::test]
    async fn a_charge_is_credited_once_even_twice_at_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let package = Package { id: "small".into(), credits: Credits(100), stars: 50, crypto: None, bonus_percent: 10 };
        let cfg = BillingConfig { signup_bonus: Credits(100), packages: vec![package], ..Default::default() };
        let b = Billing::new(store.clone(), cfg);
        b.register(profile(4), None).await.expect("reg");
        let payload = invoice_payload("small", UserId(4));
        assert_eq!(parse_payload(&payload), Some(("small".into(), UserId(4))));
        assert_eq!(b.check_checkout(UserId(4), "XTR", 50, &payload).await.expect("check"), Ok(()));
        assert_eq!(
            b.check_checkout(UserId(5), "XTR", 50, &payload).await.expect("check"),
            Err(CheckoutRefusal::NotPayer)
        );
        assert_eq!(
            b.check_checkout(UserId(4), "XTR", 49, &payload).await.expect("check"),
            Err(CheckoutRefusal::PriceChanged)
        );
        assert_eq!(
            b.check_checkout(UserId(4), "XTR", 50, "pkg:gone:4").await.expect("check"),
            Err(CheckoutRefusal::PackageGone)
        );
        let first = b.credit_purchase(stars("ch-1", &payload)).await.expect("credit");
        assert_eq!(first, PurchaseOutcome::Credited { credits: Credits(110), balance: Credits(210) });
        let again = b.credit_purchase(stars("ch-1", &payload)).await.expect("again");
        assert_eq!(again, PurchaseOutcome::AlreadyCredited { credits: Credits(110), balance: Credits(210) });
        let (x, y) =
            tokio::join!(b.credit_purchase(stars("ch-2", &payload)), b.credit_purchase(stars("ch-2", &payload)));
        let credited =
            [x.expect("x"), y.expect("y")].iter().filter(|o| matches!(o, PurchaseOutcome::Credited { .. })).count();
        assert_eq!(credited, 1, "two copies at once credit once");
        assert_eq!(
            b.credit_purchase(stars("ch-3", "pkg:gone:4")).await.expect("gone"),
            PurchaseOutcome::UnknownPackage
        );
        let ops = store.read(|rx| rx.find_operations(UserId(4))).await.expect("ops");
        let kinds: Vec<_> = ops.iter().map(|o| o.kind).collect();
        assert_eq!(kinds, [OpKind::SignupBonus, OpKind::Purchase, OpKind::Purchase]);
        assert_eq!(b.user(UserId(4)).await.expect("u").expect("user").balance, Credits(320));
        assert!(b.verify().await.expect("verify").is_empty());
        // A purchase row whose charge record is gone is reported.
        store
            .write(|tx| {
                let mut p = tx.get_payment("ch-1")?.expect("stored");
                p.credits = Credits(1);
                tx.put_payment(&p)
            })
            .await
            .expect("tamper");
        let problems = b.verify().await.expect("verify");
        assert!(problems.iter().any(|m| m.problem.contains("does not match its charge")), "{problems:?}");
    }

    #[tokio::test]
    async fn a_refund_takes_back_at_most_the_balance_and_verify_checks_its_rows() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let package = Package { id: "small".into(), credits: Credits(100), stars: 50, crypto: None, bonus_percent: 10 };
        let cfg = BillingConfig { signup_bonus: Credits(100), packages: vec![package], ..Default::default() };
        let b = Billing::new(store.clone(), cfg);
        b.register(profile(4), None).await.expect("reg");
        let payload = invoice_payload("small", UserId(4));
        for charge in ["ch-1", "ch-2"] {
            b.credit_purchase(stars(charge, &payload)).await.expect("credit");
        }
        b.adjust(UserId(4), Credits(-250), "admin:x".into(), "spent".into()).await.expect("spend");
        // 70 left: the first refund takes all 70 (shortfall 40), the second finds 0 (shortfall 110).
        let (p1, op1) = store.write(|tx| begin_refund(tx, "ch-1", "cli")).await.expect("tx").expect("paid");
        assert_eq!(
            (p1.state, p1.refund_shortfall, op1.amount, op1.delta),
            (PaymentState::RefundPending, Credits(40), Credits(110), Credits(-70))
        );
        assert_eq!(
            store.write(|tx| begin_refund(tx, "ch-1", "cli")).await.expect("tx"),
            Err(RefundRefusal::NotPaid(PaymentState::RefundPending))
        );
        assert_eq!(
            store.write(|tx| begin_refund(tx, "nope", "cli")).await.expect("tx"),
            Err(RefundRefusal::UnknownCharge)
        );
        assert!(b.verify().await.expect("verify").is_empty(), "a pending refund is consistent");
        let done = store.write(|tx| finish_refund(tx, "ch-1", Ok(()))).await.expect("tx").expect("pending");
        assert_eq!(done.state, PaymentState::Refunded);
        assert_eq!(
            store.write(|tx| finish_refund(tx, "ch-1", Err("late".into()))).await.expect("tx"),
            None,
            "recorded once"
        );
        store.write(|tx| begin_refund(tx, "ch-2", "cli")).await.expect("tx").expect("paid");
        let failed = store
            .write(|tx| finish_refund(tx, "ch-2", Err("Bad Request: X".into())))
            .await
            .expect("tx")
            .expect("pending");
        assert_eq!((failed.state, failed.refund_shortfall), (PaymentState::RefundFailed, Credits(110)));
        let kinds: Vec<_> =
            store.read(|rx| rx.find_operations(UserId(4))).await.expect("ops").iter().map(|o| o.kind).collect();
        assert_eq!(kinds.last(), Some(&OpKind::Refund), "nothing was taken for ch-2, so nothing is given back");
        assert_eq!(b.user(UserId(4)).await.expect("u").expect("user").balance, Credits(0));
        assert!(b.verify().await.expect("verify").is_empty());
        // A refunded charge put back to `paid` (its refund row orphaned) is reported.
        store
            .write(|tx| {
                let mut p = tx.get_payment("ch-1")?.expect("stored");
                p.state = PaymentState::Paid;
                tx.put_payment(&p)
            })
            .await
            .expect("tamper");
        let problems = b.verify().await.expect("verify");
        assert!(problems.iter().any(|m| m.problem.contains("does not match its charge")), "{problems:?}");
    }

    #[test]
    fn referral_codes_round_trip_and_other_payloads_are_ignored() {
        for id in [1, 35, 36, 2201, 7_000_000_000, i64::MAX] {
            let code = referral_code(UserId(id));
            assert_eq!(parse_referral(&format!("{REFERRAL_PAYLOAD}{code}")), Some(UserId(id)), "{code}");
        }
        assert_eq!(referral_code(UserId(2201)), "1p5");
        for bad in ["", "ref_", "ref_0", "ref_ABC", "ref_-1", "ru", "ref_zzzzzzzzzzzzzz", "x_ref_1p5"] {
            assert_eq!(parse_referral(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_referral_is_attributed_once_and_verify_checks_its_rows() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let referral = crate::config::ReferralConfig { signup_bonus: Credits(20), ..Default::default() };
        let b =
            Billing::new(store.clone(), BillingConfig { signup_bonus: Credits(100), referral, ..Default::default() });
        b.register(profile(10), None).await.expect("referrer");
        let (u, new) = b.register(profile(11), Some(UserId(10))).await.expect("referee");
        assert!(new);
        assert_eq!(u.referral.by, Some(UserId(10)));
        let (u, _) = b.register(profile(11), Some(UserId(12))).await.expect("again");
        assert_eq!(u.referral.by, Some(UserId(10)), "an existing user keeps their referrer");
        let (u, _) = b.register(profile(10), Some(UserId(11))).await.expect("back");
        assert_eq!(u.referral.by, None, "no loop: the referrer is not a new user");
        let (u, _) = b.register(profile(13), Some(UserId(13))).await.expect("self");
        assert_eq!(u.referral.by, None);
        let r = b.user(UserId(10)).await.expect("u").expect("referrer");
        assert_eq!((r.balance, r.referral.joined, r.referral.earned), (Credits(120), 1, Credits(20)));
        assert!(b.verify().await.expect("verify").is_empty());
        // A counter out of step with the rows is reported.
        store
            .write(|tx| {
                let mut u = tx.get_user(UserId(10))?.expect("u");
                u.referral.joined = 2;
                tx.put_user(&u)
            })
            .await
            .expect("tamper");
        let problems = b.verify().await.expect("verify");
        assert!(problems.iter().any(|m| m.problem.contains("referral joined 2")), "{problems:?}");
    }

    #[tokio::test]
    async fn verify_detects_tampering() {
        let (_d, store, b) = setup().await;
        b.register(profile(3), None).await.expect("reg");
        store
            .write(|tx| {
                let mut u = tx.get_user(UserId(3))?.expect("u");
                u.balance = Credits(1000);
                tx.put_user(&u)
            })
            .await
            .expect("tamper");
        let m = b.verify().await.expect("verify");
        assert_eq!(m.len(), 1);
        assert!(m[0].problem.contains("ledger sums to 100"), "{:?}", m);
        let err = b.adjust(UserId(3), Credits(-5000), "admin:x".into(), "test".into()).await;
        assert!(matches!(err, Err(BillingError::InsufficientFunds { .. })));
    }
}
