//! Consistent backups while the database is in use, and restore into a stopped data dir.
//!
//! redb allows one process per file and a plain file copy of a live database can catch a torn
//! commit header, so a backup copies every table row by row from one read transaction (a
//! snapshot) into a fresh database, then copies the media files that snapshot references:
//! library items' files, live uploaded inputs, and whatever an active job reads.

use super::records::Record;
use super::tables::*;
use super::{Store, StoreError};
use redb::{
    Database, Key, MultimapTableHandle, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, TableHandle, Value, WriteTransaction,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Database file name inside a data dir and inside a backup.
pub const DB_FILE: &str = "mediabot.redb";

/// What a backup or restore copied.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct BackupSummary {
    pub users: usize,
    pub media_files: usize,
    /// Referenced media files that were already gone (deleted after the snapshot was taken).
    pub missing_media: Vec<String>,
}

/// What [`Store::verify_media`] found.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct MediaCheck {
    /// Library items whose file is present with the recorded sha256.
    pub ok: usize,
    /// `sha256.ext` of items whose file is absent.
    pub missing: Vec<String>,
    /// `sha256.ext` of items whose file's content does not hash to its name.
    pub corrupt: Vec<String>,
}

/// Copies one table row by row; returns its name for the completeness check.
fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<String, StoreError> {
    let name = def.name().to_string();
    let from = match src.open_table(def) {
        Ok(t) => t,
        // A table a migration has not created yet: nothing to copy.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(name),
        Err(e) => return Err(e.into()),
    };
    let mut to = dst.open_table(def)?;
    for row in from.iter()? {
        let (k, v) = row?;
        to.insert(k.value(), v.value())?;
    }
    Ok(name)
}

impl Store {
    /// Writes a consistent copy of the database and the media files it references (library
    /// items, live inputs, active jobs' inputs) into `dir`
    /// (created; must not already hold a database). Safe while the bot and workers run.
    /// The directory is created 0700 and the database copy 0600, whatever the umask: a backup
    /// holds everything the live data dir does.
    pub fn backup_to(&self, dir: &Path) -> Result<BackupSummary, StoreError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir.join("media"))?;
        let target = dir.join(DB_FILE);
        if target.exists() {
            return Err(StoreError::Refused(format!("{} already exists", target.display())));
        }
        let rx = super::Rx { tx: self.db.begin_read()? };
        let snapshot = &rx.tx;
        super::private_file(&target, true)?;
        let out = Database::create(&target)?;
        let tx = out.begin_write()?;
        let copied: HashSet<String> = [
            copy_table(snapshot, &tx, META_TABLE)?,
            copy_table(snapshot, &tx, USERS_TABLE)?,
            copy_table(snapshot, &tx, LEDGER_TABLE)?,
            copy_table(snapshot, &tx, JOBS_TABLE)?,
            copy_table(snapshot, &tx, ACTIVE_JOBS_TABLE)?,
            copy_table(snapshot, &tx, STATS_TABLE)?,
            copy_table(snapshot, &tx, LIBRARY_TABLE)?,
            copy_table(snapshot, &tx, LIBRARY_BY_USER_TABLE)?,
            copy_table(snapshot, &tx, MEDIA_REFS_TABLE)?,
            copy_table(snapshot, &tx, DIALOGUES_TABLE)?,
            copy_table(snapshot, &tx, DRAFTS_TABLE)?,
            copy_table(snapshot, &tx, UPDATES_TABLE)?,
            copy_table(snapshot, &tx, INBOX_TABLE)?,
            copy_table(snapshot, &tx, DISABLED_TABLE)?,
            copy_table(snapshot, &tx, AUDIT_TABLE)?,
            copy_table(snapshot, &tx, CATEGORIES_TABLE)?,
            copy_table(snapshot, &tx, PRESETS_TABLE)?,
            copy_table(snapshot, &tx, COUNTERS_TABLE)?,
            copy_table(snapshot, &tx, DAILY_TABLE)?,
            copy_table(snapshot, &tx, ACTIVE_DAYS_TABLE)?,
            copy_table(snapshot, &tx, USER_NAMES_TABLE)?,
            copy_table(snapshot, &tx, BROADCASTS_TABLE)?,
            copy_table(snapshot, &tx, USER_JOBS_TABLE)?,
            copy_table(snapshot, &tx, SETTINGS_TABLE)?,
            copy_table(snapshot, &tx, LAST_ACTIVE_TABLE)?,
            copy_table(snapshot, &tx, INPUTS_TABLE)?,
            copy_table(snapshot, &tx, PAYMENTS_TABLE)?,
            copy_table(snapshot, &tx, CRYPTO_INVOICES_TABLE)?,
            copy_table(snapshot, &tx, CRYPTO_ACTIVE_TABLE)?,
            copy_table(snapshot, &tx, QUOTA_TABLE)?,
            copy_table(snapshot, &tx, FAILOVERS_TABLE)?,
        ]
        .into_iter()
        .collect();
        // The list above must follow tables.rs; a table added there but not here would be
        // silently missing from every backup, so refuse instead (and a test catches it).
        let mut unknown: Vec<String> =
            snapshot.list_tables()?.map(|t| t.name().to_string()).filter(|n| !copied.contains(n)).collect();
        unknown.extend(snapshot.list_multimap_tables()?.map(|t| t.name().to_string()));
        if !unknown.is_empty() {
            drop(tx);
            let _ = std::fs::remove_file(&target);
            return Err(StoreError::Refused(format!("backup does not know the tables {unknown:?}")));
        }
        tx.commit()?;
        drop(out);

        let mut referenced = HashSet::new();
        for row in snapshot.open_table(MEDIA_REFS_TABLE)?.iter()? {
            let (k, v) = row?;
            if v.value() > 0 {
                referenced.insert(k.value().to_string());
            }
        }
        for row in snapshot.open_table(LIBRARY_TABLE)?.iter()? {
            referenced.insert(super::records::LibraryItem::decode(row?.1.value())?.sha256);
        }
        referenced.extend(rx.find_inputs()?.into_iter().map(|(sha, _)| sha));
        referenced.extend(rx.find_active_job_files()?);
        let users = snapshot.open_table(USERS_TABLE)?.len()?;
        drop(rx);
        let mut summary = BackupSummary { users: usize::try_from(users).unwrap_or(usize::MAX), ..Default::default() };
        let mut found = HashSet::new();
        for entry in std::fs::read_dir(&self.media_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name.split('.').next().unwrap_or_default().to_string();
            if !name.starts_with('.') && referenced.contains(&stem) {
                let copy = dir.join("media").join(&name);
                std::fs::copy(entry.path(), &copy)?;
                #[cfg(unix)]
                std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
                found.insert(stem);
                summary.media_files += 1;
            }
        }
        summary.missing_media = referenced.difference(&found).cloned().collect();
        summary.missing_media.sort();
        Ok(summary)
    }
}

impl Store {
    /// Checks that every library item's file is in `media/` and hashes (sha256) to the value
    /// recorded for it (which is also its name). Reads every file: seconds per GB.
    pub fn verify_media(&self) -> Result<MediaCheck, StoreError> {
        use sha2::Digest;
        let items = self.read_blocking(|rx| {
            let t = rx.tx.open_table(LIBRARY_TABLE)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                out.push(super::records::LibraryItem::decode(row?.1.value())?);
            }
            Ok::<_, StoreError>(out)
        })?;
        let mut check = MediaCheck::default();
        for item in items {
            let name = format!("{}.{}", item.sha256, item.ext);
            match std::fs::read(self.media_path(&item.sha256, &item.ext)) {
                Ok(bytes) if hex::encode(sha2::Sha256::digest(&bytes)) == item.sha256 => check.ok += 1,
                Ok(_) => check.corrupt.push(name),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => check.missing.push(name),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(check)
    }
}

/// Replaces the database and media in `data_dir` with the backup in `backup`. The data dir
/// must not be in use ([`StoreError::AlreadyOpen`] otherwise). The restored database is opened
/// once so migrations run before the service sees it.
pub fn restore(backup: &Path, data_dir: &Path) -> Result<BackupSummary, StoreError> {
    let src_db = backup.join(DB_FILE);
    if !src_db.is_file() {
        return Err(StoreError::NotFound(format!("{} (not a mediabot backup)", src_db.display())));
    }
    // Holding the live database proves no service uses it while files are swapped.
    let live = Store::open(data_dir)?;
    drop(live);
    let tmp: PathBuf = data_dir.join(format!(".{DB_FILE}.restore"));
    std::fs::copy(&src_db, &tmp)?;
    std::fs::rename(&tmp, data_dir.join(DB_FILE))?;
    let mut summary = BackupSummary::default();
    let media = backup.join("media");
    if media.is_dir() {
        for entry in std::fs::read_dir(&media)? {
            let entry = entry?;
            std::fs::copy(entry.path(), data_dir.join("media").join(entry.file_name()))?;
            summary.media_files += 1;
        }
    }
    let store = Store::open(data_dir)?;
    summary.users = store.read_blocking(|rx| rx.find_users())?.len();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_names(db: &Database) -> Vec<String> {
        let rx = db.begin_read().expect("read");
        let mut names: Vec<String> = rx.list_tables().expect("list").map(|t| t.name().to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn backup_copies_every_table_the_migrations_create() {
        let live = tempfile::tempdir().expect("tempdir");
        let store = Store::open(live.path()).expect("open");
        let out = tempfile::tempdir().expect("tempdir");
        let summary = store.backup_to(&out.path().join("b")).expect("backup");
        assert_eq!(summary.users, 0);
        let copy = Database::open(out.path().join("b").join(DB_FILE)).expect("open copy");
        assert_eq!(table_names(&copy), table_names(&store.db));
        assert!(table_names(&copy).len() >= 14, "{:?}", table_names(&copy));
    }

    #[cfg(unix)]
    #[test]
    fn database_and_backups_are_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        let live = tempfile::tempdir().expect("tempdir");
        let store = Store::open(live.path()).expect("open");
        assert_eq!(mode(&live.path().join(DB_FILE)), 0o600, "new database");
        let out = tempfile::tempdir().expect("tempdir");
        let dir = out.path().join("b");
        store.backup_to(&dir).expect("backup");
        assert_eq!(mode(&dir.join(DB_FILE)), 0o600, "backup database");
        assert_eq!(mode(&dir) & 0o077, 0, "backup directory");
        drop(store);
        // A database created readable by others (older build, umask 022) is tightened on open.
        std::fs::set_permissions(live.path().join(DB_FILE), std::fs::Permissions::from_mode(0o644)).expect("chmod");
        drop(Store::open(live.path()).expect("reopen"));
        assert_eq!(mode(&live.path().join(DB_FILE)), 0o600, "existing database");
    }

    #[test]
    fn a_table_backup_does_not_know_is_refused() {
        let live = tempfile::tempdir().expect("tempdir");
        let store = Store::open(live.path()).expect("open");
        let extra: TableDefinition<u64, u64> = TableDefinition::new("not-in-backup-1");
        let tx = store.db.begin_write().expect("write");
        tx.open_table(extra).expect("create");
        tx.commit().expect("commit");
        let out = tempfile::tempdir().expect("tempdir");
        let err = store.backup_to(&out.path().join("b")).expect_err("unknown table");
        assert!(err.to_string().contains("not-in-backup-1"), "{err}");
        assert!(!out.path().join("b").join(DB_FILE).exists(), "no half backup left behind");
    }

    #[test]
    fn verify_media_finds_missing_and_damaged_files() {
        use crate::domain::{Format, ImageId, UserId};
        use sha2::Digest;
        let live = tempfile::tempdir().expect("tempdir");
        let store = Store::open(live.path()).expect("open");
        let mut items = Vec::new();
        for (i, content) in [b"first".as_slice(), b"second", b"third"].into_iter().enumerate() {
            let sha = hex::encode(sha2::Sha256::digest(content));
            store.put_media_file(&sha, "png", content).expect("media");
            items.push(super::super::records::LibraryItem {
                id: ImageId(i as u128 + 1),
                owner: UserId(1),
                job_id: None,
                kind: "create".into(),
                prompt: "p".into(),
                negative: None,
                model_id: "m".into(),
                format: Format::ALL[0],
                seed: 1,
                width: 1,
                height: 1,
                bytes: content.len() as u64,
                sha256: sha,
                ext: "png".into(),
                mime: "image/png".into(),
                created_at: 0,
                favourite: false,
                categories: vec![],
                photo_file_id: None,
                document_file_id: None,
                is_demo: false,
                source: None,
                media: crate::domain::MediaKind::Image,
            });
        }
        store
            .write_blocking(|tx| {
                for it in &items {
                    tx.insert_library_item(it)?;
                }
                Ok::<_, crate::store::StoreError>(())
            })
            .expect("insert");
        assert_eq!(store.verify_media().expect("check").ok, 3);
        std::fs::remove_file(store.media_path(&items[1].sha256, "png")).expect("rm");
        std::fs::write(store.media_path(&items[2].sha256, "png"), b"tampered").expect("write");
        let check = store.verify_media().expect("check");
        assert_eq!(check.ok, 1);
        assert_eq!(check.missing, [format!("{}.png", items[1].sha256)]);
        assert_eq!(check.corrupt, [format!("{}.png", items[2].sha256)]);
    }
}
