//! Daily generation quotas (`quota-1`): one counter per user and local day. `billing::levels`
//! decides the day and the limit; these are only the counter's reads and writes, made inside
//! the caller's transaction (the submit that takes one, the release that gives it back).

use super::tables::QUOTA_TABLE;
use super::{Rx, StoreError, Tx};
use crate::domain::UserId;
use redb::ReadableTable;

impl Rx {
    /// Generations `user` counted on local day `day` (`yyyymmdd`); 0 when none.
    pub fn get_quota(&self, user: UserId, day: i32) -> Result<u32, StoreError> {
        let t = self.tx.open_table(QUOTA_TABLE)?;
        Ok(t.get((user.0, day))?.map_or(0, |v| v.value()))
    }
}

impl Tx {
    /// Generations `user` counted on local day `day` (`yyyymmdd`); 0 when none.
    pub fn get_quota(&self, user: UserId, day: i32) -> Result<u32, StoreError> {
        let t = self.tx.open_table(QUOTA_TABLE)?;
        Ok(t.get((user.0, day))?.map_or(0, |v| v.value()))
    }

    /// Stores the day's count; 0 removes the row (a day nobody used keeps no row).
    pub fn put_quota(&mut self, user: UserId, day: i32, count: u32) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(QUOTA_TABLE)?;
        if count == 0 {
            t.remove((user.0, day))?;
        } else {
            t.insert((user.0, day), count)?;
        }
        Ok(())
    }

    /// Drops the counters of days before `day` (they are never read again). Returns how many.
    pub fn prune_quota(&mut self, day: i32) -> Result<usize, StoreError> {
        let mut t = self.tx.open_table(QUOTA_TABLE)?;
        let old: Vec<(i64, i32)> =
            t.iter()?.filter_map(|r| r.ok().map(|(k, _)| k.value())).filter(|(_, d)| *d < day).collect();
        for k in &old {
            t.remove(*k)?;
        }
        Ok(old.len())
    }
}
