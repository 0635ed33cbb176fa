//! Maintained aggregates for the admin dashboard and the user search index.
//!
//! The dashboard must not scan users, jobs or the ledger on every load (a large install has
//! 10⁵ users and 10⁶ ledger rows), so the write paths keep small tables in step, inside the
//! same transaction as the row they describe: [`super::Tx::put_user`], [`super::Tx::put_job`]
//! and [`super::Tx::insert_operation`] call in here. The per-user job index lives here too. Migration `005` builds them once from the
//! existing rows with the same functions.

use super::StoreError;
use super::records::{JobRecord, OpKind, Operation, UserRecord, UserSummary};
use super::tables::{ACTIVE_DAYS_TABLE, DAILY_TABLE, LAST_ACTIVE_TABLE, USER_JOBS_TABLE, USER_NAMES_TABLE};
use crate::domain::JobStatus;
use redb::{ReadableTable, WriteTransaction};

const DAY_MS: i64 = 86_400_000;

/// Day number (days since 1970-01-01, UTC) of a time in ms.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// Counter names in [`DAILY_TABLE`].
pub mod counter {
    /// Users created that day.
    pub const USERS_NEW: &str = "users_new";
    /// Credits held / captured / released by ledger rows of that day.
    pub const HELD: &str = "held";
    pub const CAPTURED: &str = "captured";
    pub const RELEASED: &str = "released";
    /// Users whose newest job was created that day: summed over the last days, the number of
    /// users active in that window.
    pub const LAST_ACTIVE: &str = "last_active";
    /// `jobs:<status>`: jobs created that day, by their current status.
    pub fn jobs(status: &str) -> String {
        format!("jobs:{status}")
    }
    /// `model_ok:<id>` / `model_failed:<id>`: jobs of a model created that day that ended so.
    pub fn model(ok: bool, model: &str) -> String {
        format!("{}:{model}", if ok { "model_ok" } else { "model_failed" })
    }
}

fn bump(tx: &WriteTransaction, day: i64, name: &str, by: i64) -> Result<(), StoreError> {
    if by == 0 {
        return Ok(());
    }
    let mut t = tx.open_table(DAILY_TABLE)?;
    let v = t.get((day, name))?.map(|v| v.value()).unwrap_or(0) + by;
    // A zero is removed, so the table equals a rebuild from the rows (which has no zeros).
    if v == 0 {
        t.remove((day, name))?;
    } else {
        t.insert((day, name), v)?;
    }
    Ok(())
}

/// Lower-case words of a user's name and username, the keys of the search index. Words are
/// split on whitespace and punctuation other than `_`; the whole username is kept too (it may
/// hold other punctuation).
pub fn search_words(u: &UserRecord) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |w: &str| {
        let w: String = w.to_lowercase().chars().take(64).collect();
        if !w.is_empty() && !out.contains(&w) {
            out.push(w);
        }
    };
    if let Some(username) = u.username.as_deref() {
        add(username);
    }
    for text in [Some(u.first_name.as_str()), u.username.as_deref()].into_iter().flatten() {
        for w in text.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            add(w);
        }
    }
    out
}

/// A user row is about to be written over `old` (None: a new user).
pub fn on_user(tx: &WriteTransaction, old: Option<&UserRecord>, new: &UserRecord) -> Result<(), StoreError> {
    if old.is_none() {
        bump(tx, day_of(new.created_at), counter::USERS_NEW, 1)?;
    }
    index_names(tx, old, new)
}

/// Keeps the user's search index entries in step with the record.
fn index_names(tx: &WriteTransaction, old: Option<&UserRecord>, new: &UserRecord) -> Result<(), StoreError> {
    let before = old.map(search_words).unwrap_or_default();
    let after = search_words(new);
    // Every index entry carries the user's list row: a change of what the row shows (a balance,
    // a ban) rewrites all of the user's entries, a rename only the words that changed.
    let row = UserSummary::encode(new)?;
    let row_changed = match old {
        Some(o) => UserSummary::encode(o)? != row,
        None => true,
    };
    if before != after || row_changed {
        let mut t = tx.open_table(USER_NAMES_TABLE)?;
        for w in before.iter().filter(|w| !after.contains(w)) {
            t.remove((w.as_str(), new.id.0))?;
        }
        for w in after.iter().filter(|w| row_changed || !before.contains(w)) {
            t.insert((w.as_str(), new.id.0), row.as_slice())?;
        }
    }
    Ok(())
}

/// Empties the user search index and fills it from the users (migration 006, which gave its
/// entries their list rows). Returns the users read.
pub fn rebuild_names(tx: &WriteTransaction) -> Result<u64, StoreError> {
    use super::tables::USERS_TABLE;
    tx.open_table(USER_NAMES_TABLE)?.retain(|_, _| false)?;
    let users: Vec<UserRecord> = decode_all(tx, USERS_TABLE)?;
    for u in &users {
        index_names(tx, None, u)?;
    }
    Ok(users.len() as u64)
}

/// A job row is about to be written over `old` (None: a new job).
pub fn on_job(tx: &WriteTransaction, old: Option<&JobRecord>, new: &JobRecord) -> Result<(), StoreError> {
    let day = day_of(new.created_at);
    let name = |s: JobStatus| counter::jobs(status_name(s));
    match old {
        None => {
            bump(tx, day, &name(new.status), 1)?;
            tx.open_table(ACTIVE_DAYS_TABLE)?.insert((day, new.user_id.0), ())?;
            tx.open_table(USER_JOBS_TABLE)?.insert((new.user_id.0, new.id.0), ())?;
            let prev = {
                let mut last = tx.open_table(LAST_ACTIVE_TABLE)?;
                let prev = last.get(new.user_id.0)?.map(|v| v.value());
                if prev.is_none_or(|p| p < day) {
                    last.insert(new.user_id.0, day)?;
                }
                prev
            };
            if prev.is_none_or(|p| p < day) {
                if let Some(p) = prev {
                    bump(tx, p, counter::LAST_ACTIVE, -1)?;
                }
                bump(tx, day, counter::LAST_ACTIVE, 1)?;
            }
        }
        Some(o) if o.status != new.status => {
            bump(tx, day, &name(o.status), -1)?;
            bump(tx, day, &name(new.status), 1)?;
        }
        Some(_) => return Ok(()),
    }
    let was_done = old.is_some_and(|o| matches!(o.status, JobStatus::Succeeded | JobStatus::Failed));
    if !was_done {
        match new.status {
            JobStatus::Succeeded => bump(tx, day, &counter::model(true, &new.model_id), 1)?,
            JobStatus::Failed => bump(tx, day, &counter::model(false, &new.model_id), 1)?,
            _ => {}
        }
    }
    Ok(())
}

/// A ledger row is being appended.
pub fn on_operation(tx: &WriteTransaction, op: &Operation) -> Result<(), StoreError> {
    let name = match op.kind {
        OpKind::Hold => counter::HELD,
        OpKind::Capture => counter::CAPTURED,
        OpKind::Release => counter::RELEASED,
        OpKind::HoldAdjust => {
            let (name, by) = adjust_counter(op);
            return bump(tx, day_of(op.created_at), name, by);
        }
        OpKind::SignupBonus
        | OpKind::Adjust
        | OpKind::Purchase
        | OpKind::Referral
        | OpKind::Refund
        | OpKind::RefundReversal => return Ok(()),
    };
    bump(tx, day_of(op.created_at), name, op.amount.0)
}

/// The counter a hold adjustment moves: the part given back counts as released, the part
/// taken as well as held.
fn adjust_counter(op: &Operation) -> (&'static str, i64) {
    if op.delta.0 > 0 { (counter::RELEASED, op.delta.0) } else { (counter::HELD, -op.delta.0) }
}

/// Lower-case status name, as used in counter names and on the panel.
pub fn status_name(s: JobStatus) -> &'static str {
    use JobStatus::*;
    match s {
        Queued => "queued",
        Submitting => "submitting",
        Submitted => "submitted",
        Succeeded => "succeeded",
        Failed => "failed",
        Cancelled => "cancelled",
        AwaitingConfirmation => "awaiting_confirmation",
    }
}

/// Empties the aggregate tables and rebuilds them from users, jobs and ledger (migration 005;
/// also the repair path). Returns the number of rows read.
pub fn rebuild(tx: &WriteTransaction) -> Result<u64, StoreError> {
    use super::records::Record;
    use super::tables::{JOBS_TABLE, LEDGER_TABLE, USERS_TABLE};
    tx.open_table(DAILY_TABLE)?.retain(|_, _| false)?;
    tx.open_table(ACTIVE_DAYS_TABLE)?.retain(|_, _| false)?;
    tx.open_table(USER_NAMES_TABLE)?.retain(|_, _| false)?;
    tx.open_table(USER_JOBS_TABLE)?.retain(|_, _| false)?;
    tx.open_table(LAST_ACTIVE_TABLE)?.retain(|_, _| false)?;
    let mut n = 0;
    let users: Vec<UserRecord> = decode_all(tx, USERS_TABLE)?;
    for u in &users {
        on_user(tx, None, u)?;
        n += 1;
    }
    let jobs: Vec<JobRecord> = decode_all(tx, JOBS_TABLE)?;
    for j in &jobs {
        on_job(tx, None, j)?;
        n += 1;
    }
    // Ledger rows are summed per (day, counter) in memory first: 10⁶ rows, a few hundred keys.
    let mut sums: std::collections::BTreeMap<(i64, &'static str), i64> = Default::default();
    {
        let t = tx.open_table(LEDGER_TABLE)?;
        for r in t.iter()? {
            let op = Operation::decode(r?.1.value())?;
            n += 1;
            let name = match op.kind {
                OpKind::Hold => counter::HELD,
                OpKind::Capture => counter::CAPTURED,
                OpKind::Release => counter::RELEASED,
                OpKind::HoldAdjust => {
                    let (name, by) = adjust_counter(&op);
                    *sums.entry((day_of(op.created_at), name)).or_default() += by;
                    continue;
                }
                OpKind::SignupBonus
                | OpKind::Adjust
                | OpKind::Purchase
                | OpKind::Referral
                | OpKind::Refund
                | OpKind::RefundReversal => continue,
            };
            *sums.entry((day_of(op.created_at), name)).or_default() += op.amount.0;
        }
    }
    for ((day, name), v) in sums {
        bump(tx, day, name, v)?;
    }
    Ok(n)
}

/// Every record of a table whose values are encoded records, in key order.
fn decode_all<K: redb::Key + 'static, T: super::records::Record>(
    tx: &WriteTransaction,
    table: redb::TableDefinition<K, &[u8]>,
) -> Result<Vec<T>, StoreError> {
    let t = tx.open_table(table)?;
    t.iter()?.map(|r| T::decode(r?.1.value())).collect()
}
