//! Access levels (`[[billing.level]]`): which level a user has now, the daily generation quota
//! and its local day, and the submit-time admission that counts a job against it.
//!
//! The quota is a counter per (user, local day) in `quota-1`, taken by [`admit`] inside the
//! submit transaction (redb serialises write transactions, so two parallel taps at quota − 1
//! give one job) and given back by `billing::release` in the transaction that releases the
//! hold. The day is the date in `billing.time_zone`; a new day starts a new counter, so the
//! quota resets at local midnight without any job running.

use super::BillingError;
use crate::config::{Config, LevelConfig};
use crate::store::Tx;
use crate::store::records::{JobRecord, UserRecord};
use std::collections::HashSet;
use std::sync::Arc;

/// "Now" for quotas and subscriptions. Production reads the system clock; tests move it
/// (past a local midnight, past an expiry) without sleeping.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> jiff::Timestamp + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(jiff::Timestamp::now))
    }

    /// A clock that reads `f`.
    #[allow(dead_code, reason = "tests build clocks they move")]
    pub fn new(f: impl Fn() -> jiff::Timestamp + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(f))
    }

    /// A clock standing at `start_ms` (Unix ms) that a test sets through the returned cell.
    #[cfg(test)]
    pub fn manual(start_ms: i64) -> (Clock, Arc<std::sync::atomic::AtomicI64>) {
        let cell = Arc::new(std::sync::atomic::AtomicI64::new(start_ms));
        let read = cell.clone();
        let clock = Clock::new(move || {
            jiff::Timestamp::from_millisecond(read.load(std::sync::atomic::Ordering::SeqCst))
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        });
        (clock, cell)
    }

    /// Now.
    pub fn now(&self) -> jiff::Timestamp {
        (self.0)()
    }

    /// Now in Unix ms.
    pub fn now_ms(&self) -> i64 {
        self.now().as_millisecond()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

/// The configured levels with the quota's time zone and clock. Cheap to share (`Arc`); one
/// instance is given to both `billing` and `jobs` so they agree on "now".
#[derive(Debug, Clone)]
pub struct Levels {
    rules: Vec<LevelConfig>,
    /// Index into `rules` of `billing.admin_level`.
    admin_level: Option<usize>,
    admins: HashSet<i64>,
    tz: jiff::tz::TimeZone,
    clock: Clock,
}

/// Why a job was refused by the user's level. Nothing was written.
#[derive(Debug, Clone, PartialEq)]
pub enum LevelRefusal {
    /// Today's `daily_limit` is used up. `resets_at`: the next local midnight, Unix ms.
    QuotaExhausted { level: String, limit: u32, resets_at: i64 },
    /// The level's `models` does not include this model.
    ModelNotAllowed { level: String, model: String },
}

/// A user's level as the balance view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelStatus {
    pub level: LevelConfig,
    /// Unix ms the level lasts until (a subscription); `None` = no end.
    pub until: Option<i64>,
    /// Generations counted today.
    pub used: u32,
    /// What is left today; `None` = no limit.
    pub remaining: Option<u32>,
    /// The next local midnight, Unix ms.
    pub resets_at: i64,
}

impl Levels {
    /// The levels of `config` (`billing.level_rules()`), its time zone (validated; UTC if
    /// not) and admins.
    pub fn new(config: &Config, clock: Clock) -> Levels {
        Levels::of_billing(&config.billing, &config.telegram.admins, clock)
    }

    /// Like [`Levels::new`] from the billing section and the admins' ids.
    pub fn of_billing(billing: &crate::config::BillingConfig, admins: &[i64], clock: Clock) -> Levels {
        let rules = billing.level_rules();
        let admin_level = billing.admin_level.as_ref().and_then(|a| rules.iter().position(|l| &l.id == a));
        let tz = jiff::tz::TimeZone::get(&billing.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
        Levels { rules, admin_level, admins: admins.iter().copied().collect(), tz, clock }
    }

    /// The clock quotas and subscriptions read.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The quota's time zone (`billing.time_zone`).
    pub fn zone(&self) -> &jiff::tz::TimeZone {
        &self.tz
    }

    /// Every level, the default first.
    pub fn all(&self) -> &[LevelConfig] {
        &self.rules
    }

    /// A level by id (`""` = the default).
    pub fn get(&self, id: &str) -> Option<&LevelConfig> {
        if id.is_empty() { self.rules.first() } else { self.rules.iter().find(|l| l.id == id) }
    }

    /// The level `user` has at `now_ms`: `billing.admin_level` for an admin; the stored level
    /// while its `level_until` has not passed; else the default (also for a level id no
    /// longer configured).
    pub fn effective(&self, user: &UserRecord, now_ms: i64) -> &LevelConfig {
        if let Some(i) = self.admin_level.filter(|_| self.admins.contains(&user.id.0)) {
            return &self.rules[i];
        }
        let default = &self.rules[0];
        if user.level_until.is_some_and(|until| until <= now_ms) {
            return default;
        }
        self.get(&user.level).unwrap_or(default)
    }

    fn zoned(&self, now_ms: i64) -> jiff::ZonedDateTime {
        jiff::Timestamp::from_millisecond(now_ms)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned_datetime(self.tz.clone())
    }

    /// The local day containing `now_ms`, as `yyyymmdd` (the quota table's key).
    pub fn day(&self, now_ms: i64) -> i32 {
        let d = self.zoned(now_ms).date();
        i32::from(d.year()) * 10_000 + i32::from(d.month()) * 100 + i32::from(d.day())
    }

    /// The next local midnight after `now_ms`, Unix ms (when the quota resets).
    pub fn next_reset(&self, now_ms: i64) -> i64 {
        self.zoned(now_ms)
            .tomorrow()
            .and_then(|t| t.start_of_day())
            .map_or(now_ms + 86_400_000, |t| t.timestamp().as_millisecond())
    }

    /// `user`'s level, today's use of its quota and when it resets, at the clock's now.
    pub fn status(
        &self,
        tx_count: impl FnOnce(i32) -> Result<u32, crate::store::StoreError>,
        user: &UserRecord,
    ) -> Result<LevelStatus, crate::store::StoreError> {
        let now = self.clock.now_ms();
        let level = self.effective(user, now).clone();
        let used = tx_count(self.day(now))?;
        let admin = self.admin_level.is_some() && self.admins.contains(&user.id.0);
        let until = user.level_until.filter(|u| *u > now && !admin && !user.level.is_empty());
        Ok(LevelStatus {
            remaining: level.daily_limit.map(|l| l.saturating_sub(used)),
            level,
            until,
            used,
            resets_at: self.next_reset(now),
        })
    }
}

/// Applies the user's level to a new job inside the submit transaction: refuses a model the
/// level does not allow and, for a level with a `daily_limit`, a job beyond today's quota;
/// otherwise counts the job on today's quota (recording the day on the job, so a release
/// gives it back to that day) and makes it cost 0 on a `free` level. `model` is `None` for
/// jobs that are not generations (local tools, prompt writing): neither restricted nor
/// counted, but free on a free level. The caller propagates nothing on a refusal, so the
/// transaction writes nothing.
pub fn admit(
    tx: &mut Tx,
    levels: &Levels,
    job: &mut JobRecord,
    model: Option<&str>,
) -> Result<Result<(), LevelRefusal>, BillingError> {
    let user = tx.get_user(job.user_id)?.ok_or(BillingError::UnknownUser(job.user_id))?;
    let now = levels.clock.now_ms();
    let level = levels.effective(&user, now);
    if level.free {
        job.price = crate::domain::Credits::ZERO;
    }
    let Some(model) = model else { return Ok(Ok(())) };
    if !level.allows(model) {
        return Ok(Err(LevelRefusal::ModelNotAllowed { level: level.id.clone(), model: model.to_string() }));
    }
    let Some(limit) = level.daily_limit else { return Ok(Ok(())) };
    let day = levels.day(now);
    let used = tx.get_quota(job.user_id, day)?;
    if used >= limit {
        return Ok(Err(LevelRefusal::QuotaExhausted {
            level: level.id.clone(),
            limit,
            resets_at: levels.next_reset(now),
        }));
    }
    tx.put_quota(job.user_id, day, used + 1)?;
    job.quota_day = Some(day);
    Ok(Ok(()))
}

/// Gives a released job's quota back to the day it was counted on (inside the release's
/// transaction). Called once per job: `release` writes only when it settles the hold.
pub(super) fn give_back(tx: &mut Tx, job: &JobRecord) -> Result<(), BillingError> {
    if let Some(day) = job.quota_day {
        let used = tx.get_quota(job.user_id, day)?;
        tx.put_quota(job.user_id, day, used.saturating_sub(1))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;

    fn levels(tz: &str) -> Levels {
        let mut c = Config::default();
        c.billing.time_zone = tz.into();
        let mut standard = LevelConfig::unlimited("standard");
        standard.daily_limit = Some(3);
        let admin = LevelConfig::unlimited("admin");
        c.billing.level = vec![standard, LevelConfig::unlimited("subscriber"), admin];
        c.billing.admin_level = Some("admin".into());
        c.telegram.admins = vec![42];
        Levels::new(&c, Clock::system())
    }

    fn user(id: i64, level: &str, until: Option<i64>) -> UserRecord {
        UserRecord {
            id: UserId(id),
            first_name: "U".into(),
            username: None,
            language_code: None,
            balance: crate::domain::Credits::ZERO,
            held: crate::domain::Credits::ZERO,
            created_at: 0,
            updated_at: 0,
            blocked: false,
            banned: false,
            level: level.into(),
            level_until: until,
            language: None,
            referral: Default::default(),
        }
    }

    #[test]
    fn the_day_and_its_reset_follow_the_zone() {
        let l = levels("Europe/Moscow");
        // 2026-12-06 20:59 UTC = 23:59 MSK; 21:00 UTC = 00:00 MSK the next day.
        let before = jiff::Timestamp::from_second(1_796_590_740).expect("ts").as_millisecond();
        assert_eq!(l.day(before), 20261206);
        assert_eq!(l.day(before + 60_000), 20261207);
        assert_eq!(l.next_reset(before), before + 60_000);
        assert_eq!(levels("UTC").day(before + 60_000), 20261206);
    }

    #[test]
    fn the_effective_level_expires_and_admins_get_theirs() {
        let l = levels("UTC");
        assert_eq!(l.effective(&user(1, "", None), 0).id, "standard");
        assert_eq!(l.effective(&user(1, "subscriber", Some(1000)), 999).id, "subscriber");
        assert_eq!(l.effective(&user(1, "subscriber", Some(1000)), 1000).id, "standard", "expired");
        assert_eq!(l.effective(&user(1, "gone", None), 0).id, "standard", "unknown id: default");
        assert_eq!(l.effective(&user(42, "", None), 0).id, "admin");
    }
}
