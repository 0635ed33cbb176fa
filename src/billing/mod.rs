//! Moving credits. Every balance change is a ledger row written in the same redb transaction
//! as the balance (and, for jobs, as the job record), so the ledger replays to the balance.
//!
//! Hold lifecycle: `hold` (balance −price, `user.held` +price) → exactly one of `capture`
//! (held −price; the credits are spent) or `release` (balance +price). The job records which
//! one happened ([`Settlement`]), which is what makes a second settlement a no-op.

pub mod history;

use crate::config::BillingConfig;
use crate::domain::{Credits, JobId, OperationId, UserId, now_ms};
use crate::store::records::{JobRecord, OpKind, Operation, Settlement, UserRecord};
use crate::store::{Rx, Store, StoreError, Tx};

/// Errors from billing operations.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("insufficient funds: balance {balance}, price {price}")]
    InsufficientFunds { balance: Credits, price: Credits },
    #[error("unknown user {0:?}")]
    UnknownUser(UserId),
    #[error("amount overflow")]
    Overflow,
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
    Ok(true)
}

/// A manual balance change (admin top-up or deduction). Refuses to go below zero.
pub fn adjust(tx: &mut Tx, user: UserId, delta: Credits, actor: &str, reason: &str) -> Result<Operation, BillingError> {
    let mut u = tx.get_user(user)?.ok_or(BillingError::UnknownUser(user))?;
    let amount = Credits(delta.0.checked_abs().ok_or(BillingError::Overflow)?);
    let op = apply(tx, &mut u, OpKind::Adjust, amount, delta, None, None, actor, Some(reason.into()))?;
    tx.put_user(&u)?;
    Ok(op)
}

/// A problem found by [`verify`].
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub user: UserId,
    pub problem: String,
}

/// Recomputes every balance and every open hold from the ledger and compares with the users
/// table and the jobs' settlements.
pub fn verify(rx: &Rx) -> Result<Vec<Mismatch>, StoreError> {
    let mut out = Vec::new();
    for u in rx.find_users()? {
        let mut bad = |problem: String| out.push(Mismatch { user: u.id, problem });
        let ops = rx.find_operations(u.id)?;
        let mut balance = 0i64;
        let mut held = 0i64;
        let mut holds = std::collections::HashMap::new();
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
                    holds.insert(op.id, 0u32);
                }
                OpKind::Capture | OpKind::Release => {
                    held -= op.amount.0;
                    match op.hold_id.and_then(|h| holds.get_mut(&h)) {
                        Some(n) => {
                            *n += 1;
                            if *n > 1 {
                                bad(format!("hold {:?} settled more than once", op.hold_id));
                            }
                        }
                        None => bad(format!("operation {} settles an unknown hold", op.id)),
                    }
                }
                _ => {}
            }
        }
        if balance != u.balance.0 {
            bad(format!("balance {} but ledger sums to {balance}", u.balance));
        }
        if held != u.held.0 {
            bad(format!("held {} but open holds sum to {held}", u.held));
        }
        for op in ops.iter().filter(|o| o.kind == OpKind::Hold) {
            let settled = holds.get(&op.id).copied().unwrap_or(0) > 0;
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
    Ok(out)
}

impl Billing {
    pub fn new(store: Store, cfg: BillingConfig) -> Billing {
        Billing { store, cfg }
    }

    /// The currency's name per language (see [`crate::config::Currency`]).
    pub fn currency(&self) -> &crate::config::Currency {
        &self.cfg.currency
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
    pub async fn register(&self, p: Profile) -> Result<(UserRecord, bool), BillingError> {
        let bonus = self.cfg.signup_bonus;
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
                    language: None,
                };
                if bonus.0 > 0 {
                    apply(tx, &mut u, OpKind::SignupBonus, bonus, bonus, None, None, "system", None)?;
                }
                tx.put_user(&u)?;
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
        let (u, new) = b.register(profile(1)).await.expect("reg");
        assert!(new);
        assert_eq!(u.balance, Credits(100));
        let (u, new) = b.register(profile(1)).await.expect("again");
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

    #[tokio::test]
    async fn insufficient_funds_writes_nothing() {
        let (_d, store, b) = setup().await;
        b.register(profile(2)).await.expect("reg");
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

    #[tokio::test]
    async fn verify_detects_tampering() {
        let (_d, store, b) = setup().await;
        b.register(profile(3)).await.expect("reg");
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
