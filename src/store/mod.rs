//! Durable state in redb: the only module that opens the database.
//!
//! [`Store`] is cheap to clone. Every redb call is blocking, so async callers go through
//! [`Store::read`] / [`Store::write`], which run the closure on tokio's blocking pool. A write
//! closure gets a [`Tx`] with typed accessors; `billing` and `jobs` compose several of them so a
//! ledger row, a balance and a job change commit together or not at all.

pub mod backup;
pub mod inputs;
pub mod library;
pub mod migrations;
pub mod quota;
pub mod records;
pub mod stats;
pub mod tables;
pub mod watch;

use crate::domain::{Credits, ImageId, JobId, UserId};
use records::*;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tables::*;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("mediabot is already running (data dir {0}): redb allows one process per database")]
    AlreadyOpen(PathBuf),
    #[error("database schema {found} is newer than this build supports ({supported}); upgrade mediabot")]
    NewerSchema { found: u64, supported: u64 },
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    #[error("record codec: {0}")]
    Codec(String),
    #[error("media file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not found: {0}")]
    NotFound(String),
    /// A business rule refused the change (e.g. balance would go negative); nothing was written.
    #[error("{0}")]
    Refused(String),
    #[error("blocking task failed: {0}")]
    Join(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.into()) }
        }
    )*};
}
from_redb!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// `meta` key of the admin panel's password hash.
const PASSWORD_KEY: &str = "admin_password_argon2";

/// How many times a re-delivered update is handled before it is skipped as poison.
pub const MAX_UPDATE_ATTEMPTS: i64 = 5;

/// Result of [`Tx::begin_update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateStart {
    /// Never seen: handle it.
    First,
    /// Seen, but its handler never finished (the process died): handle it again; the value is
    /// this attempt's number (2 or more).
    Again(i64),
    /// Already handled: a re-delivery to skip.
    Handled,
    /// Its handler died [`MAX_UPDATE_ATTEMPTS`] times: skip it.
    GaveUp,
}

/// Handle to the database and the media directory.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    media_dir: PathBuf,
    io: Arc<watch::IoWatch>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("media_dir", &self.media_dir).finish()
    }
}

impl Store {
    /// Opens (or creates) `data_dir/mediabot.redb` and `data_dir/media/`, runs migrations.
    /// Errors: [`StoreError::AlreadyOpen`] when another process holds the file.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir.join("media"))?;
        let path = data_dir.join("mediabot.redb");
        private_file(&path, false)?;
        // What redb's `Database::create` opens, behind the backend that reports failed writes.
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let io = Arc::new(watch::IoWatch::default());
        let backend = watch::WatchedBackend::new(redb::backends::FileBackend::new(file)?, io.clone());
        let db = match redb::Builder::new().create_with_backend(backend) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::AlreadyOpen(data_dir.to_path_buf()));
            }
            Err(e) => return Err(e.into()),
        };
        migrations::run(&db)?;
        Ok(Store { db: Arc::new(db), media_dir: data_dir.join("media"), io })
    }

    /// Raised once a write to the database file failed (a full disk): from then on every
    /// write fails until the process restarts (see [`watch`]).
    pub fn io_watch(&self) -> &watch::IoWatch {
        &self.io
    }

    /// Runs a read-only closure on the blocking pool.
    ///
    /// Generic over the caller's error `E` (anything a [`StoreError`] converts into), so a
    /// service returns its own typed errors from inside the transaction.
    pub async fn read<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Rx) -> Result<T, E> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || Self::read_sync(&db, f))
            .await
            .map_err(|e| E::from(StoreError::Join(e.to_string())))?
    }

    /// Runs a closure in one write transaction on the blocking pool; commits if it returns Ok
    /// and drops (rolls back) the transaction on any error.
    ///
    /// Generic over the caller's error like [`Store::read`]: `billing::hold` inside a job's
    /// transaction returns `BillingError::InsufficientFunds` straight to the caller.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Tx) -> Result<T, E> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || Self::write_sync(&db, f))
            .await
            .map_err(|e| E::from(StoreError::Join(e.to_string())))?
    }

    /// Synchronous write, for CLI paths that run without a runtime.
    pub fn write_blocking<T, E: From<StoreError>>(&self, f: impl FnOnce(&mut Tx) -> Result<T, E>) -> Result<T, E> {
        Self::write_sync(&self.db, f)
    }

    /// Synchronous read, for CLI paths.
    pub fn read_blocking<T, E: From<StoreError>>(&self, f: impl FnOnce(&Rx) -> Result<T, E>) -> Result<T, E> {
        Self::read_sync(&self.db, f)
    }

    fn read_sync<T, E: From<StoreError>>(db: &Database, f: impl FnOnce(&Rx) -> Result<T, E>) -> Result<T, E> {
        let tx = db.begin_read().map_err(|e| E::from(e.into()))?;
        f(&Rx { tx })
    }

    fn write_sync<T, E: From<StoreError>>(db: &Database, f: impl FnOnce(&mut Tx) -> Result<T, E>) -> Result<T, E> {
        let tx = db.begin_write().map_err(|e| E::from(e.into()))?;
        let mut w = Tx { tx };
        let out = f(&mut w)?;
        w.tx.commit().map_err(|e| E::from(e.into()))?;
        Ok(out)
    }

    /// Writes bytes to `media/<sha256>.<ext>` (atomic rename; a no-op if the file exists).
    /// Blocking: call from a blocking context.
    pub fn put_media_file(&self, sha256: &str, ext: &str, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let path = self.media_path(sha256, ext);
        if !path.exists() {
            let tmp = self.media_dir.join(format!(".{sha256}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(path)
    }

    /// Path of a media file.
    pub fn media_path(&self, sha256: &str, ext: &str) -> PathBuf {
        self.media_dir.join(format!("{sha256}.{ext}"))
    }
}

/// Creates `path` empty with mode 0600 (whatever the umask) if it does not exist, and takes
/// group and other access away from an existing one (a database written by an older build or
/// by hand under umask 022). `new_only`: fail if it exists. redb then opens the file as is
/// (an empty file becomes a new database).
pub(crate) fn private_file(path: &Path, new_only: bool) -> Result<(), StoreError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true);
    if new_only {
        opts.create_new(true);
    } else {
        opts.create(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let file = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if file.metadata()?.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Smallest UUIDv7 (as u128) whose timestamp is `ms`: the 48-bit millisecond time sits in
/// the top bits, so ids compare like their creation times.
pub fn uuid7_floor(ms: i64) -> u128 {
    (u128::from(ms.max(0) as u64) & 0xFFFF_FFFF_FFFF) << 80
}

/// A read transaction with typed getters.
pub struct Rx {
    tx: ReadTransaction,
}

/// A write transaction with typed getters and setters. Dropped without commit on error.
pub struct Tx {
    tx: WriteTransaction,
}

macro_rules! getters {
    ($($t:ty),*) => {$(
#[allow(dead_code, reason = "read accessors shared by Rx and Tx; not each is used from both")]
impl $t {
    pub fn get_user(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        let t = self.tx.open_table(USERS_TABLE)?;
        t.get(id.0)?.map(|v| UserRecord::decode(v.value())).transpose()
    }
    pub fn get_job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        let t = self.tx.open_table(JOBS_TABLE)?;
        t.get(id.0)?.map(|v| JobRecord::decode(v.value())).transpose()
    }
    pub fn get_draft(&self, id: u128) -> Result<Option<Draft>, StoreError> {
        let t = self.tx.open_table(DRAFTS_TABLE)?;
        t.get(id)?.map(|v| Draft::decode(v.value())).transpose()
    }
    pub fn get_library_item(&self, id: ImageId) -> Result<Option<LibraryItem>, StoreError> {
        let t = self.tx.open_table(LIBRARY_TABLE)?;
        t.get(id.0)?.map(|v| LibraryItem::decode(v.value())).transpose()
    }
    pub fn get_dialogue(&self, chat_id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.tx.open_table(DIALOGUES_TABLE)?;
        Ok(t.get(chat_id)?.map(|v| v.value().to_vec()))
    }
    /// Whether an update's handler finished (see [`Tx::begin_update`]).
    pub fn update_finished(&self, update_id: i64) -> Result<bool, StoreError> {
        let t = self.tx.open_table(UPDATES_TABLE)?;
        Ok(t.get(update_id)?.is_some_and(|v| v.value() >= 0))
    }
    /// True if a handler began this update and never finished it (a process died meanwhile).
    pub fn update_interrupted(&self, update_id: i64) -> Result<bool, StoreError> {
        let t = self.tx.open_table(UPDATES_TABLE)?;
        Ok(t.get(update_id)?.is_some_and(|v| v.value() < 0))
    }
    pub fn get_meta_u64(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let t = self.tx.open_table(META_TABLE)?;
        Ok(t.get(key)?.map(|v| migrations::le_u64(v.value())))
    }
    /// The admin panel's password hash (Argon2 PHC string), if one was ever set.
    pub fn get_password_hash(&self) -> Result<Option<String>, StoreError> {
        Ok(self.get_meta_bytes(PASSWORD_KEY)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
    }
    pub fn get_meta_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.tx.open_table(META_TABLE)?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }
    /// Jobs created at or after `since_ms`, oldest first. Job ids are UUIDv7, so this is a
    /// range scan, not a full one.
    pub fn find_jobs_since(&self, since_ms: i64) -> Result<Vec<JobRecord>, StoreError> {
        let t = self.tx.open_table(JOBS_TABLE)?;
        t.range(uuid7_floor(since_ms)..)?.map(|r| JobRecord::decode(r?.1.value())).collect()
    }
    /// Up to `limit` jobs, newest first, starting below `before` (a job id) when given.
    pub fn find_jobs_page(&self, before: Option<u128>, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        let t = self.tx.open_table(JOBS_TABLE)?;
        let range = match before {
            Some(b) => t.range(..b)?,
            None => t.range(0u128..)?,
        };
        range.rev().take(limit).map(|r| JobRecord::decode(r?.1.value())).collect()
    }
    /// Up to `limit` library items across all users, newest first.
    pub fn find_library_recent(&self, limit: usize) -> Result<Vec<LibraryItem>, StoreError> {
        let t = self.tx.open_table(LIBRARY_TABLE)?;
        t.iter()?.rev().take(limit).map(|r| LibraryItem::decode(r?.1.value())).collect()
    }
    /// Up to `limit` audit entries, newest first.
    pub fn find_audit(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let t = self.tx.open_table(AUDIT_TABLE)?;
        t.iter()?.rev().take(limit).map(|r| AuditEntry::decode(r?.1.value())).collect()
    }
    /// Calls `f` with ledger rows (one user's, or everyone's in key order) until it returns false.
    pub fn scan_operations(
        &self,
        user: Option<UserId>,
        mut f: impl FnMut(Operation) -> bool,
    ) -> Result<(), StoreError> {
        let t = self.tx.open_table(LEDGER_TABLE)?;
        let range = match user {
            Some(u) => t.range((u.0, 0u128)..=(u.0, u128::MAX))?,
            None => t.range((i64::MIN, 0u128)..)?,
        };
        for r in range {
            if !f(Operation::decode(r?.1.value())?) {
                break;
            }
        }
        Ok(())
    }
    /// Every ledger row of one user, oldest first.
    pub fn find_operations(&self, user: UserId) -> Result<Vec<Operation>, StoreError> {
        let t = self.tx.open_table(LEDGER_TABLE)?;
        t.range((user.0, 0u128)..=(user.0, u128::MAX))?
            .map(|r| Operation::decode(r?.1.value()))
            .collect()
    }
    /// Disabled models/providers with the reason each was switched off. Rows whose key no
    /// longer parses are skipped.
    pub fn find_disabled(&self) -> Result<Vec<(crate::domain::Switch, String)>, StoreError> {
        let t = match self.tx.open_table(DISABLED_TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            if let Some(s) = crate::domain::Switch::parse(k.value()) {
                out.push((s, v.value().to_string()));
            }
        }
        Ok(out)
    }
    /// Number of users (redb keeps table lengths, so no scan).
    pub fn count_users(&self) -> Result<u64, StoreError> {
        Ok(self.tx.open_table(USERS_TABLE)?.len()?)
    }
    /// Failovers recorded since `since_ms` (ms since the epoch) and in all, without a scan
    /// of the jobs (the `failovers-1` index).
    pub fn count_failovers(&self, since_ms: i64) -> Result<(u64, u64), StoreError> {
        let t = self.tx.open_table(FAILOVERS_TABLE)?;
        let recent = t.range((since_ms, 0u128)..)?.count() as u64;
        Ok((recent, t.len()?))
    }
    /// The newest `n` jobs that moved to a fallback model, newest first.
    pub fn find_recent_failovers(&self, n: usize) -> Result<Vec<JobRecord>, StoreError> {
        let t = self.tx.open_table(FAILOVERS_TABLE)?;
        let mut out = Vec::with_capacity(n);
        for r in t.iter()?.rev().take(n) {
            let (_, id) = r?.0.value();
            if let Some(j) = self.get_job(JobId(id))? {
                out.push(j);
            }
        }
        Ok(out)
    }
    /// Number of unfinished jobs (the queue depth), without a scan.
    pub fn count_active_jobs(&self) -> Result<u64, StoreError> {
        Ok(self.tx.open_table(ACTIVE_JOBS_TABLE)?.len()?)
    }
    /// Dashboard counters of days `from..=to` (day numbers, see [`stats::day_of`]):
    /// `(day, counter name, value)` in key order.
    pub fn find_daily(&self, from: i64, to: i64) -> Result<Vec<(i64, String, i64)>, StoreError> {
        let t = self.tx.open_table(DAILY_TABLE)?;
        t.range((from, "")..(to.saturating_add(1), ""))?
            .map(|r| {
                let (k, v) = r?;
                let (day, name) = k.value();
                Ok((day, name.to_string(), v.value()))
            })
            .collect()
    }
    /// Ids of users who created a job on day `from` or later, ascending.
    pub fn find_active_users(&self, from: i64) -> Result<Vec<i64>, StoreError> {
        let t = self.tx.open_table(ACTIVE_DAYS_TABLE)?;
        let mut ids = t.range((from, i64::MIN)..)?.map(|r| Ok(r?.0.value().1)).collect::<Result<Vec<_>, StoreError>>()?;
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }
    /// Ids of users with a name or username word starting with `prefix` (lower-case), ascending,
    /// from the first `limit` matching index entries. Reads only that part of the index.
    /// The flag is true when the limit cut the walk short (there may be more).
    pub fn find_user_ids_by_word(&self, prefix: &str, limit: usize) -> Result<(Vec<i64>, bool), StoreError> {
        let t = self.tx.open_table(USER_NAMES_TABLE)?;
        let mut ids = Vec::new();
        // At most `limit` index entries are read: a broad prefix stops there (the panel says
        // "refine the query") instead of walking a large part of the index.
        let mut read = 0;
        for r in t.range((prefix, i64::MIN)..)? {
            let row = r?;
            let (word, id) = row.0.value();
            if !word.starts_with(prefix) {
                break;
            }
            if read == limit {
                ids.sort_unstable();
                ids.dedup();
                return Ok((ids, true));
            }
            read += 1;
            ids.push(id);
        }
        ids.sort_unstable();
        ids.dedup();
        Ok((ids, false))
    }
    /// One page of the users with a name or username word starting with `prefix`, in index
    /// order (matched word, then id), as their list rows: `skip` distinct users are passed over,
    /// at most `limit` returned, and the bool says whether more follow. Reads only as far as the
    /// page needs and no user records (the index entries carry the rows), so a query matching
    /// thousands of users costs what one page costs.
    pub fn find_user_rows_by_word_page(
        &self,
        prefix: &str,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<UserSummary>, bool), StoreError> {
        let t = self.tx.open_table(USER_NAMES_TABLE)?;
        // A user with two matching words (`Vera`, `vera_12`) has two entries: count them once.
        let mut seen = std::collections::HashSet::with_capacity(skip.saturating_add(limit).saturating_add(1).min(1 << 16));
        let mut rows = Vec::with_capacity(limit);
        for r in t.range((prefix, i64::MIN)..)? {
            let (k, v) = r?;
            let (word, id) = k.value();
            if !word.starts_with(prefix) {
                break;
            }
            if !seen.insert(id) || seen.len() <= skip {
                continue;
            }
            if rows.len() == limit {
                return Ok((rows, true));
            }
            rows.push(UserSummary::decode(id, v.value())?);
        }
        Ok((rows, false))
    }
    /// Users in id order, `skip` passed over, at most `limit`; the bool says whether more follow.
    pub fn find_users_skip(&self, skip: usize, limit: usize) -> Result<(Vec<UserRecord>, bool), StoreError> {
        let t = self.tx.open_table(USERS_TABLE)?;
        let mut rows: Vec<UserRecord> =
            t.iter()?.skip(skip).take(limit + 1).map(|r| UserRecord::decode(r?.1.value())).collect::<Result<_, _>>()?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok((rows, more))
    }
    /// How many jobs a user has, counting at most `cap` (index keys only).
    pub fn count_user_jobs(&self, user: UserId, cap: usize) -> Result<usize, StoreError> {
        let idx = self.tx.open_table(USER_JOBS_TABLE)?;
        Ok(idx.range((user.0, 0u128)..=(user.0, u128::MAX))?.take(cap).count())
    }
    /// Users in id order after `after` (exclusive), at most `limit`.
    pub fn find_users_page(&self, after: Option<i64>, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        let t = self.tx.open_table(USERS_TABLE)?;
        let range = match after {
            Some(a) => t.range(a.saturating_add(1)..)?,
            None => t.range(i64::MIN..)?,
        };
        range.take(limit).map(|r| UserRecord::decode(r?.1.value())).collect()
    }
    /// Admin runtime settings (`price:<model>`, `concurrency:<provider>`), in key order.
    /// Admin runtime settings; rows whose key no longer parses are skipped.
    pub fn find_settings(&self) -> Result<Vec<(crate::domain::Setting, i64)>, StoreError> {
        let t = match self.tx.open_table(SETTINGS_TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            if let Some(s) = crate::domain::Setting::parse(k.value()) {
                out.push((s, v.value()));
            }
        }
        Ok(out)
    }
    /// One page of a user's ledger, newest first: `skip` rows passed over, at most `limit`; the
    /// bool says whether more follow.
    pub fn find_operations_page(&self, user: UserId, skip: usize, limit: usize) -> Result<(Vec<Operation>, bool), StoreError> {
        let t = self.tx.open_table(LEDGER_TABLE)?;
        let mut rows: Vec<Operation> = t
            .range((user.0, 0u128)..=(user.0, u128::MAX))?
            .rev()
            .skip(skip)
            .take(limit + 1)
            .map(|r| Operation::decode(r?.1.value()))
            .collect::<Result<_, _>>()?;
        let more = rows.len() > limit;
        rows.truncate(limit);
        Ok((rows, more))
    }
    /// A Telegram Stars charge by its `telegram_payment_charge_id`.
    pub fn get_payment(&self, charge_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        let t = self.tx.open_table(PAYMENTS_TABLE)?;
        t.get(charge_id)?.map(|v| PaymentRecord::decode(v.value())).transpose()
    }
    /// Every Stars charge (key order: by charge id).
    pub fn find_payments(&self) -> Result<Vec<PaymentRecord>, StoreError> {
        let t = self.tx.open_table(PAYMENTS_TABLE)?;
        t.iter()?.map(|r| PaymentRecord::decode(r?.1.value())).collect()
    }
    /// A Crypto Pay invoice by `invoice_id`.
    pub fn get_crypto_invoice(&self, invoice_id: i64) -> Result<Option<CryptoInvoice>, StoreError> {
        let t = self.tx.open_table(CRYPTO_INVOICES_TABLE)?;
        t.get(invoice_id)?.map(|v| CryptoInvoice::decode(v.value())).transpose()
    }
    /// Every Crypto Pay invoice (key order: by invoice id, which Crypto Pay hands out rising).
    pub fn find_crypto_invoices(&self) -> Result<Vec<CryptoInvoice>, StoreError> {
        let t = self.tx.open_table(CRYPTO_INVOICES_TABLE)?;
        t.iter()?.map(|r| CryptoInvoice::decode(r?.1.value())).collect()
    }
    /// The invoices still `active` (from the index; no full scan).
    pub fn find_active_crypto_invoices(&self) -> Result<Vec<CryptoInvoice>, StoreError> {
        let ids: Vec<i64> = {
            let t = self.tx.open_table(CRYPTO_ACTIVE_TABLE)?;
            t.iter()?.map(|r| Ok::<_, StoreError>(r?.0.value())).collect::<Result<_, _>>()?
        };
        Ok(ids.into_iter().map(|id| self.get_crypto_invoice(id)).collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect())
    }
    /// A user's newest `limit` ledger rows, newest first.
    pub fn find_recent_operations(&self, user: UserId, limit: usize) -> Result<Vec<Operation>, StoreError> {
        let t = self.tx.open_table(LEDGER_TABLE)?;
        t.range((user.0, 0u128)..=(user.0, u128::MAX))?.rev().take(limit).map(|r| Operation::decode(r?.1.value())).collect()
    }
    /// The sum of a user's `kind` ledger rows created at or after `since` (ms), reading their
    /// rows newest first and stopping at the first older one (ids are time-ordered).
    pub fn sum_operations_since(&self, user: UserId, kind: OpKind, since: i64) -> Result<Credits, StoreError> {
        let t = self.tx.open_table(LEDGER_TABLE)?;
        let mut sum = 0i64;
        for r in t.range((user.0, 0u128)..=(user.0, u128::MAX))?.rev() {
            let op = Operation::decode(r?.1.value())?;
            if op.created_at < since {
                break;
            }
            if op.kind == kind {
                sum = sum.saturating_add(op.amount.0);
            }
        }
        Ok(Credits(sum))
    }
    /// A user's newest `limit` jobs, newest first (through the per-user index).
    pub fn find_user_jobs(&self, user: UserId, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        let idx = self.tx.open_table(USER_JOBS_TABLE)?;
        let jobs = self.tx.open_table(JOBS_TABLE)?;
        let mut out = Vec::new();
        for r in idx.range((user.0, 0u128)..=(user.0, u128::MAX))?.rev().take(limit) {
            let id = r?.0.value().1;
            if let Some(v) = jobs.get(id)? {
                out.push(JobRecord::decode(v.value())?);
            }
        }
        Ok(out)
    }
    /// One broadcast.
    pub fn get_broadcast(&self, id: u128) -> Result<Option<Broadcast>, StoreError> {
        let t = self.tx.open_table(BROADCASTS_TABLE)?;
        t.get(id)?.map(|v| Broadcast::decode(v.value())).transpose()
    }
    /// Up to `limit` broadcasts, newest first.
    pub fn find_broadcasts(&self, limit: usize) -> Result<Vec<Broadcast>, StoreError> {
        let t = self.tx.open_table(BROADCASTS_TABLE)?;
        t.iter()?.rev().take(limit).map(|r| Broadcast::decode(r?.1.value())).collect()
    }
    /// Up to `n` most recent recorded durations (ms) of a model, all formats together, newest
    /// first. Keys sort by format before job id, so this reads the newest `n` of each format
    /// (a few formats: at most a few × `n` rows, however many are stored) and keeps the
    /// newest `n` by job id (UUIDv7, creation order).
    pub fn find_recent_durations(&self, model: &str, n: usize) -> Result<Vec<u64>, StoreError> {
        use std::ops::Bound;
        let t = self.tx.open_table(STATS_TABLE)?;
        let end = Bound::Included((model, "\u{10FFFF}", u128::MAX));
        let mut newest: Vec<(u128, u64)> = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let start = match &after {
                None => Bound::Included((model, "", 0u128)),
                Some(f) => Bound::Excluded((model, f.as_str(), u128::MAX)),
            };
            let Some(first) = t.range::<(&str, &str, u128)>((start, end))?.next() else { break };
            let format = first?.0.value().1.to_string();
            for r in t.range((model, format.as_str(), 0u128)..=(model, format.as_str(), u128::MAX))?.rev().take(n) {
                let (k, v) = r?;
                newest.push((k.value().2, v.value()));
            }
            after = Some(format);
        }
        newest.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        Ok(newest.into_iter().take(n).map(|(_, ms)| ms).collect())
    }
    /// Every user.
    /// Updates received but not finished, oldest first: `(update_id, Bot API JSON)`.
    pub fn inbox(&self) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let t = self.tx.open_table(INBOX_TABLE)?;
        t.iter()?.map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())).map_err(StoreError::from)).collect()
    }
    pub fn find_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let t = self.tx.open_table(USERS_TABLE)?;
        t.iter()?.map(|r| UserRecord::decode(r?.1.value())).collect()
    }
    /// Ids of unfinished jobs (the queue), oldest first.
    pub fn find_active_jobs(&self) -> Result<Vec<JobId>, StoreError> {
        let t = self.tx.open_table(ACTIVE_JOBS_TABLE)?;
        t.iter()?.map(|r| Ok(JobId(r?.0.value()))).collect()
    }
    /// Every job, oldest first (a full scan: tests and repairs only).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn find_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let t = self.tx.open_table(JOBS_TABLE)?;
        t.iter()?.map(|r| JobRecord::decode(r?.1.value())).collect()
    }
    /// A user's library, newest first.
    pub fn find_library(&self, user: UserId) -> Result<Vec<LibraryItem>, StoreError> {
        let idx = self.tx.open_table(LIBRARY_BY_USER_TABLE)?;
        let items = self.tx.open_table(LIBRARY_TABLE)?;
        let mut out = Vec::new();
        for r in idx.range((user.0, 0u128)..=(user.0, u128::MAX))?.rev() {
            let id = r?.0.value().1;
            if let Some(v) = items.get(id)? {
                out.push(LibraryItem::decode(v.value())?);
            }
        }
        Ok(out)
    }
    /// Reference count of a media file.
    pub fn media_refs(&self, sha256: &str) -> Result<u64, StoreError> {
        let t = self.tx.open_table(MEDIA_REFS_TABLE)?;
        Ok(t.get(sha256)?.map(|v| v.value()).unwrap_or(0))
    }
    /// Up to `n` most recent durations (ms) recorded for a model with `format` (a
    /// `JobPayload::stats_key`), newest first.
    pub fn find_durations(&self, model: &str, format: &str, n: usize) -> Result<Vec<u64>, StoreError> {
        let t = self.tx.open_table(STATS_TABLE)?;
        t.range((model, format, 0u128)..=(model, format, u128::MAX))?.rev().take(n).map(|r| Ok(r?.1.value())).collect()
    }
}
    )*};
}
getters!(Rx, Tx);

#[cfg(test)]
impl Tx {
    /// Marks a handled update as begun and never finished, as a process killed between the
    /// handler's writes and [`Tx::finish_update`] leaves it (crash tests).
    pub fn mark_update_interrupted(&mut self, update_id: i64) -> Result<(), StoreError> {
        self.tx.open_table(UPDATES_TABLE)?.insert(update_id, -1)?;
        Ok(())
    }
}

#[cfg(test)]
impl Rx {
    /// Every entry of the user search index, `(word, user id, list row)` in key order.
    pub fn find_name_entries(&self) -> Result<Vec<(String, i64, UserSummary)>, StoreError> {
        let t = self.tx.open_table(USER_NAMES_TABLE)?;
        t.iter()?
            .map(|r| {
                let (k, v) = r?;
                let (word, id) = k.value();
                Ok((word.to_string(), id, UserSummary::decode(id, v.value())?))
            })
            .collect()
    }
}

impl Tx {
    /// Stores a user and keeps the dashboard counters and the search index in step.
    pub fn put_user(&mut self, u: &UserRecord) -> Result<(), StoreError> {
        let old = self.get_user(u.id)?;
        stats::on_user(&self.tx, old.as_ref(), u)?;
        let mut t = self.tx.open_table(USERS_TABLE)?;
        t.insert(u.id.0, u.encode()?.as_slice())?;
        Ok(())
    }
    /// Replaces the admin panel's password hash.
    pub fn put_password_hash(&mut self, hash: &str) -> Result<(), StoreError> {
        self.put_meta_bytes(PASSWORD_KEY, hash.as_bytes())
    }
    pub fn put_meta_bytes(&mut self, key: &str, v: &[u8]) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(META_TABLE)?;
        t.insert(key, v)?;
        Ok(())
    }
    /// Appends an audit-log entry.
    pub fn insert_audit(&mut self, e: &AuditEntry) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(AUDIT_TABLE)?;
        t.insert(e.id, e.encode()?.as_slice())?;
        Ok(())
    }
    /// Stores a Stars charge under its charge id (billing writes it with its ledger row).
    pub fn put_payment(&mut self, p: &PaymentRecord) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(PAYMENTS_TABLE)?;
        t.insert(p.telegram_payment_charge_id.as_str(), p.encode()?.as_slice())?;
        Ok(())
    }
    /// Stores a Crypto Pay invoice and keeps the index of `active` ones in step.
    pub fn put_crypto_invoice(&mut self, inv: &CryptoInvoice) -> Result<(), StoreError> {
        self.tx.open_table(CRYPTO_INVOICES_TABLE)?.insert(inv.invoice_id, inv.encode()?.as_slice())?;
        let mut active = self.tx.open_table(CRYPTO_ACTIVE_TABLE)?;
        if inv.status == CryptoStatus::Active {
            active.insert(inv.invoice_id, inv.created_at)?;
        } else {
            active.remove(inv.invoice_id)?;
        }
        Ok(())
    }
    /// Appends a ledger row. Callers (billing) keep the balance in step in the same transaction.
    pub fn insert_operation(&mut self, op: &Operation) -> Result<(), StoreError> {
        stats::on_operation(&self.tx, op)?;
        let mut t = self.tx.open_table(LEDGER_TABLE)?;
        t.insert((op.user_id.0, op.id.0), op.encode()?.as_slice())?;
        Ok(())
    }
    /// Stores a job and keeps the active-jobs index in step: a job stays active while it is
    /// not terminal or its final message (result or failure notice) is still to be sent or was
    /// cut off mid-send (`Attempted`: the next start tells the user, see `Delivery::Interrupted`).
    /// The uploaded inputs it reads start their retention time again (`inputs`).
    pub fn put_job(&mut self, j: &JobRecord) -> Result<(), StoreError> {
        self.touch_inputs(j.payload.input_files(), crate::domain::now_ms())?;
        let old = self.get_job(j.id)?;
        stats::on_job(&self.tx, old.as_ref(), j)?;
        if let (Some(f), false) = (&j.failover, old.as_ref().is_some_and(|o| o.failover.is_some())) {
            self.tx.open_table(FAILOVERS_TABLE)?.insert((f.at, j.id.0), ())?;
        }
        {
            let mut t = self.tx.open_table(JOBS_TABLE)?;
            t.insert(j.id.0, j.encode()?.as_slice())?;
        }
        let mut a = self.tx.open_table(ACTIVE_JOBS_TABLE)?;
        if !j.status.is_terminal() || matches!(j.delivery, Delivery::Pending | Delivery::Attempted) {
            a.insert(j.id.0, j.user_id.0)?;
        } else {
            a.remove(j.id.0)?;
        }
        Ok(())
    }
    /// Saves a draft. A draft that already produced a job stays consumed: a re-delivered update
    /// rebuilds the same draft (its id comes from the message) and must not free it again.
    /// The uploaded inputs it names start their retention time again (`inputs`).
    pub fn put_draft(&mut self, d: &Draft) -> Result<(), StoreError> {
        self.touch_inputs(d.inputs.iter().map(String::as_str), crate::domain::now_ms())?;
        let mut t = self.tx.open_table(DRAFTS_TABLE)?;
        let existing_job = t.get(d.id)?.map(|v| Draft::decode(v.value())).transpose()?.and_then(|old| old.job_id);
        if d.job_id.is_none() && existing_job.is_some() {
            let mut kept = d.clone();
            kept.job_id = existing_job;
            t.insert(d.id, kept.encode()?.as_slice())?;
        } else {
            t.insert(d.id, d.encode()?.as_slice())?;
        }
        Ok(())
    }
    pub fn put_dialogue(&mut self, chat_id: i64, state: &[u8]) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(DIALOGUES_TABLE)?;
        t.insert(chat_id, state)?;
        Ok(())
    }
    pub fn delete_dialogue(&mut self, chat_id: i64) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(DIALOGUES_TABLE)?;
        t.remove(chat_id)?;
        Ok(())
    }
    pub fn put_meta_u64(&mut self, key: &str, v: u64) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(META_TABLE)?;
        t.insert(key, v.to_le_bytes().as_slice())?;
        Ok(())
    }
    /// Adds a library item, its owner index row and one media reference.
    pub fn insert_library_item(&mut self, item: &LibraryItem) -> Result<(), StoreError> {
        self.put_library_item(item)?;
        self.tx.open_table(LIBRARY_BY_USER_TABLE)?.insert((item.owner.0, item.id.0), ())?;
        let mut refs = self.tx.open_table(MEDIA_REFS_TABLE)?;
        let n = refs.get(item.sha256.as_str())?.map(|v| v.value()).unwrap_or(0);
        refs.insert(item.sha256.as_str(), n + 1)?;
        drop(refs);
        if n == 0 {
            self.bump_counter(library::MEDIA_BYTES, item.bytes)?;
        }
        Ok(())
    }
    /// Records the Telegram file_ids of a sent item on the stored row (which may have been
    /// starred or categorised meanwhile). A deleted item stays deleted.
    pub fn set_library_file_ids(
        &mut self,
        id: ImageId,
        photo: Option<String>,
        document: Option<String>,
    ) -> Result<(), StoreError> {
        let Some(mut item) = self.get_library_item(id)? else { return Ok(()) };
        if photo.is_some() {
            item.photo_file_id = photo;
        }
        if document.is_some() {
            item.document_file_id = document;
        }
        self.put_library_item(&item)
    }
    /// Updates an existing library item (file_ids, favourite…).
    pub fn put_library_item(&mut self, item: &LibraryItem) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(LIBRARY_TABLE)?;
        t.insert(item.id.0, item.encode()?.as_slice())?;
        Ok(())
    }
    /// Starts handling a Telegram update. The row is `-attempts` while handling and the finish
    /// time (ms) once [`Self::finish_update`] ran, so a crash mid-handling leaves a negative row
    /// and the re-delivered update is handled again (at least once), while a handler that crashes
    /// the process every time is given up after [`MAX_UPDATE_ATTEMPTS`] (no crash loop). Keeps
    /// the newest 10 000 ids.
    pub fn begin_update(&mut self, update_id: i64) -> Result<UpdateStart, StoreError> {
        let mut t = self.tx.open_table(UPDATES_TABLE)?;
        let prev = t.get(update_id)?.map(|v| v.value());
        let start = match prev {
            Some(v) if v >= 0 => return Ok(UpdateStart::Handled),
            Some(v) if -v >= MAX_UPDATE_ATTEMPTS => return Ok(UpdateStart::GaveUp),
            Some(v) => UpdateStart::Again(-v + 1),
            None => UpdateStart::First,
        };
        let attempts = match start {
            UpdateStart::Again(n) => n,
            _ => 1,
        };
        t.insert(update_id, -attempts)?;
        if update_id % 1000 == 0 {
            let cutoff = update_id - 10_000;
            t.retain_in(..cutoff, |_, _| false)?;
        }
        Ok(start)
    }
    /// Ties the update bookkeeping to one bot (the numeric id before `:` in its token). Update
    /// ids are per bot, so after a token change the old ids, inbox and offset are dropped —
    /// otherwise the new bot's first updates would look like re-deliveries. Returns true if
    /// anything was reset.
    pub fn bind_bot(&mut self, bot_id: u64) -> Result<bool, StoreError> {
        let previous = {
            let meta = self.tx.open_table(META_TABLE)?;
            meta.get("telegram_bot_id")?.map(|v| migrations::le_u64(v.value()))
        };
        if previous == Some(bot_id) {
            return Ok(false);
        }
        let reset = previous.is_some();
        if reset {
            self.tx.open_table(UPDATES_TABLE)?.retain(|_, _| false)?;
            self.tx.open_table(INBOX_TABLE)?.retain(|_, _| false)?;
            self.tx.open_table(META_TABLE)?.remove("telegram_offset")?;
        }
        self.tx.open_table(META_TABLE)?.insert("telegram_bot_id", bot_id.to_le_bytes().as_slice())?;
        Ok(reset)
    }
    /// Records that an update's handler finished (successfully or with a logged error) and
    /// drops it from the inbox.
    pub fn finish_update(&mut self, update_id: i64) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(UPDATES_TABLE)?;
        t.insert(update_id, crate::domain::now_ms())?;
        self.tx.open_table(INBOX_TABLE)?.remove(update_id)?;
        Ok(())
    }
    /// Keeps a received update (Bot API JSON) until [`Self::finish_update`]; one already handled
    /// is not stored again.
    pub fn inbox_put(&mut self, update_id: i64, json: &[u8]) -> Result<bool, StoreError> {
        let done = self.tx.open_table(UPDATES_TABLE)?.get(update_id)?.is_some_and(|v| v.value() >= 0);
        if done {
            return Ok(false);
        }
        self.tx.open_table(INBOX_TABLE)?.insert(update_id, json)?;
        Ok(true)
    }
    /// Disables (`Some(reason)`) or enables (`None`) a model or provider key. Returns true if
    /// the state changed.
    pub fn set_disabled(&mut self, switch: &crate::domain::Switch, reason: Option<&str>) -> Result<bool, StoreError> {
        let key = switch.key();
        let key = key.as_str();
        let mut t = self.tx.open_table(DISABLED_TABLE)?;
        let was = t.get(key)?.is_some();
        match reason {
            Some(r) => {
                t.insert(key, r)?;
            }
            None => {
                t.remove(key)?;
            }
        }
        Ok(was != reason.is_some())
    }
    /// Sets (`Some`) or removes (`None`) an admin runtime setting; returns the previous value.
    pub fn set_setting(
        &mut self,
        setting: &crate::domain::Setting,
        value: Option<i64>,
    ) -> Result<Option<i64>, StoreError> {
        let key = setting.key();
        let key = key.as_str();
        let mut t = self.tx.open_table(SETTINGS_TABLE)?;
        let before = match value {
            Some(v) => t.insert(key, v)?.map(|g| g.value()),
            None => t.remove(key)?.map(|g| g.value()),
        };
        Ok(before)
    }
    /// Rebuilds the dashboard aggregates and the search index from the rows (as migration 005
    /// does); returns the rows read.
    #[cfg(test)]
    pub fn rebuild_aggregates(&mut self) -> Result<u64, StoreError> {
        stats::rebuild(&self.tx)
    }
    /// Stores a broadcast (its text, target, state and cursor).
    pub fn put_broadcast(&mut self, b: &Broadcast) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(BROADCASTS_TABLE)?;
        t.insert(b.id, b.encode()?.as_slice())?;
        Ok(())
    }
    /// Records a finished job's duration for ETA estimates.
    pub fn insert_duration(&mut self, model: &str, format: &str, job: JobId, ms: u64) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(STATS_TABLE)?;
        t.insert((model, format, job.0), ms)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::now_ms;

    #[test]
    fn updates_are_handled_once_and_forgotten_when_the_bot_token_changes() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let w = |f: Box<dyn FnOnce(&mut Tx) -> Result<UpdateStart, StoreError> + Send>| {
            store.write_blocking(f).expect("write")
        };
        assert!(!store.write_blocking(|tx| tx.bind_bot(111)).expect("bind"), "first bind resets nothing");
        assert_eq!(w(Box::new(|tx| tx.begin_update(7))), UpdateStart::First);
        // Cut off mid-handling: handled again, then skipped once finished.
        assert_eq!(w(Box::new(|tx| tx.begin_update(7))), UpdateStart::Again(2));
        store.write_blocking(|tx| tx.finish_update(7)).expect("finish");
        assert_eq!(w(Box::new(|tx| tx.begin_update(7))), UpdateStart::Handled);
        // A handler that keeps killing the process is given up.
        for n in 1..=MAX_UPDATE_ATTEMPTS {
            let got = w(Box::new(|tx| tx.begin_update(8)));
            assert_eq!(got, if n == 1 { UpdateStart::First } else { UpdateStart::Again(n) });
        }
        assert_eq!(w(Box::new(|tx| tx.begin_update(8))), UpdateStart::GaveUp);
        // The inbox keeps unfinished updates; a finished one is not stored again.
        assert!(store.write_blocking(|tx| tx.inbox_put(9, b"{}")).expect("put"));
        assert!(!store.write_blocking(|tx| tx.inbox_put(7, b"{}")).expect("put"));
        assert_eq!(store.read_blocking(|rx| rx.inbox()).expect("inbox").len(), 1);
        // Same bot: nothing forgotten. New token: update ids start over, so all is dropped.
        assert!(!store.write_blocking(|tx| tx.bind_bot(111)).expect("bind"));
        assert!(store.write_blocking(|tx| tx.bind_bot(222)).expect("bind"));
        assert_eq!(w(Box::new(|tx| tx.begin_update(7))), UpdateStart::First);
        assert!(store.read_blocking(|rx| rx.inbox()).expect("inbox").is_empty());
    }

    #[tokio::test]
    async fn second_open_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let _a = Store::open(dir.path()).expect("first");
        let err = Store::open(dir.path()).expect_err("second must fail");
        assert!(err.to_string().contains("already running"), "{err}");
    }

    #[tokio::test]
    async fn write_rolls_back_on_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let s = Store::open(dir.path()).expect("open");
        let u = UserRecord {
            id: UserId(1),
            first_name: "A".into(),
            username: None,
            language_code: None,
            balance: Credits(5),
            held: Credits(0),
            created_at: now_ms(),
            updated_at: 0,
            blocked: false,
            banned: false,
            level: String::new(),
            level_until: None,
            language: None,
            referral: Default::default(),
        };
        let r: Result<(), _> = s
            .write(move |tx| {
                tx.put_user(&u)?;
                Err(StoreError::Refused("no".into()))
            })
            .await;
        assert!(r.is_err());
        let got = s.read(|rx| rx.get_user(UserId(1))).await.expect("read");
        assert_eq!(got, None, "refused transaction must leave nothing behind");
    }
}
