//! Ordered, idempotent migrations, one write transaction each, and the schema-version guard.

use super::StoreError;
use super::tables::*;
use redb::{Database, ReadableDatabase, WriteTransaction};

/// Schema version this build writes. A database with a higher version was written by a newer
/// mediabot: refuse it rather than guess.
pub const SCHEMA_VERSION: u64 = 11;

/// What a step did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    #[allow(dead_code, reason = "a step may find its work already done; none does yet")]
    Skip,
    Execute(u64),
}

type Step = fn(&WriteTransaction) -> Result<Outcome, StoreError>;

const STEPS: &[(u64, &str, Step)] = &[
    (1, "001_create_tables", m001_create_tables),
    (2, "002_admin_audit", m002_admin_audit),
    (3, "003_update_inbox", m003_update_inbox),
    (4, "004_library_categories_presets_counters", m004_library),
    // 4 belongs to the image library branch; a database at 3 runs 5 alone, which is fine:
    // each step opens only its own tables.
    (5, "005_admin_aggregates", m005_admin_aggregates),
    (6, "006_user_list_rows_in_name_index", m006_user_list_rows),
    (7, "007_uploaded_inputs", m007_inputs),
    (8, "008_star_payments", m008_payments),
    (9, "009_crypto_invoices", m009_crypto_invoices),
    (10, "010_daily_quotas", m010_quotas),
    (11, "011_failovers", m011_failovers),
];

/// Daily generation quotas per user and local day (access levels).
fn m010_quotas(tx: &WriteTransaction) -> Result<Outcome, StoreError> {
    tx.open_table(QUOTA_TABLE)?;
    Ok(Outcome::Execute(1))
}

fn m001_create_tables(tx: &WriteTransaction) -> Result<Outcome, StoreError> {
    tx.open_table(USERS_TABLE)?;
    tx.open_table(LEDGER_TABLE)?;
    tx.open_table(JOBS_TABLE)?;
    tx.open_table(ACTIVE_JOBS_TABLE)?;
    tx.open_table(STATS_TABLE)?;
    tx.open_table(LIBRARY_TABLE)?;
    tx.open_table(LIBRARY_BY_USER_TABLE)?;
    tx.open_table(MEDIA_REFS_TABLE)?;
    tx.open_table(DIALOGUES_TABLE)?;
    tx.open_table(DRAFTS_TABLE)?;
    tx.open_table(UPDATES_TABLE)?;
    tx.open_table(DISABLED_TABLE)?;
    Ok(Outcome::Execute(12))
}

/// The admin panel's audit log (the password hash lives in `meta`, no table needed).
fn m002_admin_audit(tx: &WriteTransaction) -> Result<Outcome, StoreError> {
    tx.open_table(AUDIT_TABLE)?;
    Ok(Outcome::Execute(1))
}

/// Telegram updates received but not yet handled, so a crash cannot lose them.
fn m003_update_inbox(tx: &WriteTransaction) -> Result<Outcome, StoreError> {
    tx.open_table(INBOX_TABLE)?;
    Ok(Outcome::Execute(1))
}

/// The image library's categories, presets and counters. `media_bytes` starts as the size of
/// the distinct files existing items reference, so the disk budget holds from the first start.
fn m004_library(tx: &WriteTransaction) -> Result<Outcome, StoreError> {
    use redb::ReadableTable;
    tx.open_table(CATEGORIES_TABLE)?;
    tx.open_table(PRESETS_TABLE)?;
    let mut seen = std::collections::HashSet::new();
    let mut bytes = 0u64;
    for row in tx.open_table(LIBRARY_TABLE)?.iter()? {
        let item = <super::records::LibraryItem as super::records::Record>::decode(row?.1.value())?;
        if seen.insert(item.sha256.clone()) {
            bytes += item.bytes;
        }
    }
    tx.open_table(COUNTERS_TABLE)?.insert(super::library::MEDIA_BYTES, bytes)?;
    Ok(Outcome::Execute(3))
}

/// Dashboard counters, activity days, the user search and per-user job indexes (built from
/// existing rows), the broadcasts table and the runtime settings table.
fn m005_admin_aggregates(tx: &WriteTransaction) -> Result<Outcome, StoreError> {
    tx.open_table(BROADCASTS_TABLE)?;
    tx.open_table(SETTINGS_TABLE)?;
    Ok(Outcome::Execute(super::stats::rebuild(tx)?))
}

/// The name index before 006: key = (word, user id) → unit.
const USER_NAMES_V1: redb::TableDefinition<(&str, i64), ()> = redb::TableDefinition::new("user-names-1");

/// The user search index carries each user's list row (`user-names-2`), so a search page reads
/// no user records; the unit-valued `user-names-1` goes.
fn m006_user_list_rows(tx: &WriteTransaction) -> Result<Outcome, StoreError> {
    tx.delete_table(USER_NAMES_V1)?;
    Ok(Outcome::Execute(super::stats::rebuild_names(tx)?))
}

/// Uploaded input photos get records (and a retention); the inputs of older jobs are adopted
/// by the job engine's first prune, which can look at the files (`Store::adopt_inputs`).
fn m007_inputs(tx: &WriteTransaction) -> Result<Outcome, StoreError> {
    tx.open_table(INPUTS_TABLE)?;
    Ok(Outcome::Execute(1))
}

/// Telegram Stars charges (top-ups), keyed by charge id.
fn m008_payments(tx: &WriteTransaction) -> Result<Outcome, StoreError> {
    tx.open_table(PAYMENTS_TABLE)?;
    Ok(Outcome::Execute(1))
}

/// Crypto Pay invoices and the index of the open ones.
fn m009_crypto_invoices(tx: &WriteTransaction) -> Result<Outcome, StoreError> {
    tx.open_table(CRYPTO_INVOICES_TABLE)?;
    tx.open_table(CRYPTO_ACTIVE_TABLE)?;
    Ok(Outcome::Execute(2))
}

/// The failover index, filled from jobs that already moved (none before this build; the
/// scan keeps the step correct for a file restored from a newer backup).
fn m011_failovers(tx: &WriteTransaction) -> Result<Outcome, StoreError> {
    use super::records::{JobRecord, Record};
    use redb::ReadableTable;
    let mut index = tx.open_table(FAILOVERS_TABLE)?;
    let mut n = 0;
    for row in tx.open_table(JOBS_TABLE)?.iter()? {
        let job = JobRecord::decode(row?.1.value())?;
        if let Some(f) = &job.failover {
            index.insert((f.at, job.id.0), ())?;
            n += 1;
        }
    }
    Ok(Outcome::Execute(n))
}

/// Reads the stored schema version (0 for a new file).
pub fn schema_version(db: &Database) -> Result<u64, StoreError> {
    let tx = db.begin_read()?;
    let t = match tx.open_table(META_TABLE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    Ok(t.get("schema_version")?.map(|v| le_u64(v.value())).unwrap_or(0))
}

pub(super) fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(a)
}

/// Brings the database to [`SCHEMA_VERSION`]; refuses a newer one.
pub fn run(db: &Database) -> Result<(), StoreError> {
    let current = schema_version(db)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { found: current, supported: SCHEMA_VERSION });
    }
    for (version, name, step) in STEPS {
        if *version <= current {
            continue;
        }
        let tx = db.begin_write()?;
        let outcome = step(&tx)?;
        {
            let mut meta = tx.open_table(META_TABLE)?;
            meta.insert("schema_version", version.to_le_bytes().as_slice())?;
        }
        tx.commit()?;
        if let Outcome::Execute(n) = outcome {
            tracing::info!(%name, n, "migrated");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes what a build at `version` left behind: its steps' tables, `fill`'s rows and the
    /// schema version.
    fn old_file(path: &std::path::Path, version: u64, fill: impl FnOnce(&WriteTransaction)) {
        let db = Database::create(path).expect("create");
        let tx = db.begin_write().expect("w");
        for (_, _, step) in STEPS.iter().filter(|(v, _, _)| *v <= version) {
            step(&tx).expect("old step");
        }
        fill(&tx);
        tx.open_table(META_TABLE).expect("meta").insert("schema_version", version.to_le_bytes().as_slice()).expect("v");
        tx.commit().expect("commit");
    }

    #[test]
    fn a_version_1_file_gains_the_audit_and_inbox_tables() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("db.redb");
        old_file(&path, 1, |_| {});
        let db = Database::create(&path).expect("reopen");
        run(&db).expect("migrate");
        assert_eq!(schema_version(&db).expect("v"), SCHEMA_VERSION);
        let tx = db.begin_read().expect("r");
        assert!(tx.open_table(AUDIT_TABLE).is_ok(), "002 created the audit table");
        assert!(tx.open_table(INBOX_TABLE).is_ok(), "003 created the update inbox");
        assert!(tx.open_table(BROADCASTS_TABLE).is_ok(), "005 created the broadcasts table");
        assert!(tx.open_table(PRESETS_TABLE).is_ok(), "004 created the presets");
        assert!(tx.open_table(PAYMENTS_TABLE).is_ok(), "008 created the Stars charges");
        assert!(tx.open_table(CRYPTO_INVOICES_TABLE).is_ok(), "009 created the crypto invoices");
        assert!(tx.open_table(CRYPTO_ACTIVE_TABLE).is_ok(), "009 created the open-invoice index");
        assert!(tx.open_table(QUOTA_TABLE).is_ok(), "010 created the daily quotas");
        let counters = tx.open_table(COUNTERS_TABLE).expect("004 created the counters");
        assert_eq!(counters.get(super::super::library::MEDIA_BYTES).expect("get").map(|v| v.value()), Some(0));
    }

    #[test]
    fn a_version_3_library_gets_its_media_bytes_counted() {
        use crate::store::records::{LibraryItem, Record};
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("db.redb");
        // A v3 database with two items sharing one file and a third with its own.
        old_file(&path, 3, |tx| {
            let mut lib = tx.open_table(LIBRARY_TABLE).expect("lib");
            for (id, sha, bytes) in [(1u128, "aa", 100u64), (2, "aa", 100), (3, "bb", 30)] {
                let uuid = uuid::Uuid::from_u128(id);
                let stored = format!(
                    r#"{{"v":1,"id":"{uuid}","owner":1,"kind":"create","prompt":"p","model_id":"m","format":"square","seed":1,"width":1,"height":1,"bytes":{bytes},"sha256":"{sha}","ext":"png","mime":"image/png","created_at":0}}"#
                );
                LibraryItem::decode(stored.as_bytes()).expect("a v3 item decodes");
                lib.insert(id, stored.as_bytes()).expect("insert");
            }
        });
        let db = Database::create(&path).expect("reopen");
        run(&db).expect("migrate");
        let tx = db.begin_read().expect("r");
        let counters = tx.open_table(COUNTERS_TABLE).expect("counters");
        let bytes = counters.get(super::super::library::MEDIA_BYTES).expect("get").map(|v| v.value());
        assert_eq!(bytes, Some(130), "distinct files only");
        assert!(tx.open_table(CATEGORIES_TABLE).is_ok() && tx.open_table(PRESETS_TABLE).is_ok());
    }

    #[test]
    fn a_version_5_name_index_gets_the_list_rows() {
        use crate::domain::{Credits, UserId};
        use crate::store::records::{Record, UserRecord, UserSummary};
        use redb::ReadableTable;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("db.redb");
        let user = |id: i64, name: &str, username: Option<&str>, balance: i64| UserRecord {
            id: UserId(id),
            first_name: name.into(),
            username: username.map(Into::into),
            language_code: None,
            balance: Credits(balance),
            held: Credits(0),
            created_at: 1_764_000_000_000 + id,
            updated_at: 0,
            blocked: false,
            banned: id == 2,
            level: "free".into(),
            level_until: None,
            language: None,
            referral: Default::default(),
        };
        let users = [user(1, "Vera", Some("vera_1"), 10), user(2, "Oleg Petrov", None, 0)];
        // What a version-5 build left: the users and the unit-valued index `user-names-1`.
        old_file(&path, 5, |tx| {
            let mut t = tx.open_table(USERS_TABLE).expect("users");
            let mut v1 = tx.open_table(USER_NAMES_V1).expect("user-names-1");
            for u in &users {
                t.insert(u.id.0, u.encode().expect("encode").as_slice()).expect("insert");
                for w in crate::store::stats::search_words(u) {
                    v1.insert((w.as_str(), u.id.0), ()).expect("index");
                }
            }
        });
        let db = Database::create(&path).expect("reopen");
        run(&db).expect("migrate");
        assert_eq!(schema_version(&db).expect("v"), SCHEMA_VERSION);
        let tx = db.begin_read().expect("r");
        assert!(tx.open_table(USER_NAMES_V1).is_err(), "006 dropped user-names-1");
        let t = tx.open_table(USER_NAMES_TABLE).expect("user-names-2");
        let mut got = Vec::new();
        for r in t.iter().expect("iter") {
            let (k, v) = r.expect("row");
            let (word, id) = k.value();
            got.push((word.to_string(), UserSummary::decode(id, v.value()).expect("a list row")));
        }
        let want: Vec<_> = [("oleg", 1usize), ("petrov", 1), ("vera", 0), ("vera_1", 0)]
            .into_iter()
            .map(|(w, i)| (w.to_string(), UserSummary::of(&users[i])))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_version_8_file_gets_the_failover_index_of_its_moved_jobs() {
        use crate::domain::UserId;
        use crate::store::records::{Failover, JobRecord, Record};
        use redb::ReadableTable;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("db.redb");
        let plain = crate::store::records::test_job(UserId(1), 10);
        let moved = JobRecord {
            failover: Some(Failover {
                from_model: "flux".into(),
                from_provider: "fal".into(),
                from_price: crate::domain::Credits(10),
                to_model: "seedream".into(),
                to_price: crate::domain::Credits(8),
                reason: "HTTP 401".into(),
                at: 1_764_000_000_000,
                confirmed: Some(true),
                asked: false,
            }),
            ..crate::store::records::test_job(UserId(1), 10)
        };
        old_file(&path, 8, |tx| {
            let mut t = tx.open_table(JOBS_TABLE).expect("jobs");
            for j in [&plain, &moved] {
                t.insert(j.id.0, j.encode().expect("encode").as_slice()).expect("insert");
            }
        });
        let db = Database::create(&path).expect("reopen");
        run(&db).expect("migrate");
        assert_eq!(schema_version(&db).expect("v"), SCHEMA_VERSION);
        let tx = db.begin_read().expect("r");
        let keys: Vec<(i64, u128)> = tx
            .open_table(FAILOVERS_TABLE)
            .expect("011")
            .iter()
            .expect("iter")
            .map(|r| r.expect("row").0.value())
            .collect();
        assert_eq!(keys, [(1_764_000_000_000, moved.id.0)]);
    }

    #[test]
    fn migrations_are_idempotent_and_refuse_newer() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("db.redb");
        {
            let db = Database::create(&path).expect("create");
            run(&db).expect("first");
            run(&db).expect("second is a no-op");
            assert_eq!(schema_version(&db).expect("v"), SCHEMA_VERSION);
            // Pretend a newer build wrote this file.
            let tx = db.begin_write().expect("w");
            tx.open_table(META_TABLE)
                .expect("meta")
                .insert("schema_version", 99u64.to_le_bytes().as_slice())
                .expect("ins");
            tx.commit().expect("commit");
        }
        let db = Database::create(&path).expect("reopen");
        let err = run(&db).expect_err("newer schema must be refused");
        assert!(matches!(err, StoreError::NewerSchema { found: 99, .. }), "{err}");
    }
}
