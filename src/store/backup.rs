//! Consistent backups while the database is in use, and restore into a stopped data dir.
//!
//! redb allows one process per file and a plain file copy of a live database can catch a torn
//! commit header, so a backup copies every table row by row from one read transaction (a
//! snapshot) into a fresh database, then copies the media files that snapshot references.

use super::tables::*;
use super::{Store, StoreError};
use redb::{
    Database, Key, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, Value,
    WriteTransaction,
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

fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<(), StoreError> {
    let from = match src.open_table(def) {
        Ok(t) => t,
        // A table a migration has not created yet: nothing to copy.
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut to = dst.open_table(def)?;
    for row in from.iter()? {
        let (k, v) = row?;
        to.insert(k.value(), v.value())?;
    }
    Ok(())
}

impl Store {
    /// Writes a consistent copy of the database and the media files it references into `dir`
    /// (created; must not already hold a database). Safe while the bot and workers run.
    pub fn backup_to(&self, dir: &Path) -> Result<BackupSummary, StoreError> {
        std::fs::create_dir_all(dir.join("media"))?;
        let target = dir.join(DB_FILE);
        if target.exists() {
            return Err(StoreError::Refused(format!("{} already exists", target.display())));
        }
        let snapshot = self.db.begin_read()?;
        let out = Database::create(&target)?;
        let tx = out.begin_write()?;
        copy_table(&snapshot, &tx, META_TABLE)?;
        copy_table(&snapshot, &tx, USERS_TABLE)?;
        copy_table(&snapshot, &tx, LEDGER_TABLE)?;
        copy_table(&snapshot, &tx, JOBS_TABLE)?;
        copy_table(&snapshot, &tx, ACTIVE_JOBS_TABLE)?;
        copy_table(&snapshot, &tx, STATS_TABLE)?;
        copy_table(&snapshot, &tx, LIBRARY_TABLE)?;
        copy_table(&snapshot, &tx, LIBRARY_BY_USER_TABLE)?;
        copy_table(&snapshot, &tx, MEDIA_REFS_TABLE)?;
        copy_table(&snapshot, &tx, DIALOGUES_TABLE)?;
        copy_table(&snapshot, &tx, DRAFTS_TABLE)?;
        tx.commit()?;
        drop(out);

        let mut referenced = HashSet::new();
        for row in snapshot.open_table(MEDIA_REFS_TABLE)?.iter()? {
            let (k, v) = row?;
            if v.value() > 0 {
                referenced.insert(k.value().to_string());
            }
        }
        let users = snapshot.open_table(USERS_TABLE)?.len()?;
        drop(snapshot);
        let mut summary = BackupSummary { users: usize::try_from(users).unwrap_or(usize::MAX), ..Default::default() };
        let mut found = HashSet::new();
        for entry in std::fs::read_dir(&self.media_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name.split('.').next().unwrap_or_default().to_string();
            if !name.starts_with('.') && referenced.contains(&stem) {
                std::fs::copy(entry.path(), dir.join("media").join(&name))?;
                found.insert(stem);
                summary.media_files += 1;
            }
        }
        summary.missing_media = referenced.difference(&found).cloned().collect();
        summary.missing_media.sort();
        Ok(summary)
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
