//! Uploaded input photos (`inputs-1`): what keeps them, and their pruning.
//!
//! An input is written to `media/` (content-addressed like results, so a file may also be a
//! library item's) and recorded here. Writing a job or a draft that uses it restarts its
//! clock ([`Tx::touch_inputs`] from `put_job` / `put_draft`); [`Tx::prune_inputs`] drops the
//! records unused for the retention time, and the files unless a library item or an active
//! job still references them. Stale drafts go in the same pass. Live inputs count towards
//! `library.disk_budget_mb` ([`INPUT_BYTES`]) and are part of every backup.

use super::library::Orphan;
use super::records::{Draft, InputRecord, JobRecord, Record};
use super::tables::*;
use super::{Rx, Store, StoreError, Tx};
use redb::ReadableTable;
use std::collections::HashSet;
use std::path::PathBuf;

/// Counter: bytes of the recorded (live) input files.
pub const INPUT_BYTES: &str = "input_bytes";
/// `meta` flag: inputs of jobs and drafts written before `inputs-1` existed were adopted.
const ADOPTED_KEY: &str = "inputs_adopted";
/// Extensions input files are stored under (`imaging::extension_for_mime`).
const INPUT_EXTS: [&str; 4] = ["jpg", "png", "webp", "gif"];

/// What [`Tx::prune_inputs`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct InputPrune {
    /// Input records dropped.
    pub inputs: usize,
    /// Drafts dropped.
    pub drafts: usize,
    /// Files no longer referenced at all (removed by [`Store::write_pruning`]).
    pub orphans: Vec<Orphan>,
}

macro_rules! input_getters {
    ($($t:ty),*) => {$(
#[allow(dead_code, reason = "read accessors shared by Rx and Tx; not each is used from both")]
impl $t {
    /// The record of an uploaded input, if it is live.
    pub fn get_input(&self, sha256: &str) -> Result<Option<InputRecord>, StoreError> {
        let t = self.tx.open_table(INPUTS_TABLE)?;
        t.get(sha256)?.map(|v| InputRecord::decode(v.value())).transpose()
    }
    /// Every live input, `(sha256, record)` in key order.
    pub fn find_inputs(&self) -> Result<Vec<(String, InputRecord)>, StoreError> {
        let t = self.tx.open_table(INPUTS_TABLE)?;
        t.iter()?.map(|r| {
            let (k, v) = r?;
            Ok((k.value().to_string(), InputRecord::decode(v.value())?))
        }).collect()
    }
    /// Media files (sha256) that active jobs read: a queued or running job's inputs, and the
    /// library file a resize reads. One pass over the queue, which is small.
    pub fn find_active_job_files(&self) -> Result<HashSet<String>, StoreError> {
        let mut out = HashSet::new();
        for id in self.find_active_jobs()? {
            if let Some(job) = self.get_job(id)? {
                out.extend(job.payload.input_files().map(str::to_string));
            }
        }
        Ok(out)
    }
}
    )*};
}
input_getters!(Rx, Tx);

impl Tx {
    /// Records an accepted upload (or renews it: same bytes, same sha256): its clock starts
    /// at `now` (ms), its size joins [`INPUT_BYTES`] if it is new.
    pub fn put_input(&mut self, sha256: &str, ext: &str, bytes: u64, now: i64) -> Result<(), StoreError> {
        let known = self.get_input(sha256)?.is_some();
        let rec = InputRecord { ext: ext.to_string(), bytes, last_used_at: now };
        self.tx.open_table(INPUTS_TABLE)?.insert(sha256, rec.encode()?.as_slice())?;
        if !known {
            self.bump_counter(INPUT_BYTES, bytes)?;
        }
        Ok(())
    }

    /// Restarts the clock (`now`, ms) of those `files` that are recorded inputs; other files
    /// (a library picture a resize reads) are left alone.
    pub fn touch_inputs<'a>(&mut self, files: impl IntoIterator<Item = &'a str>, now: i64) -> Result<(), StoreError> {
        let mut t = self.tx.open_table(INPUTS_TABLE)?;
        for sha in files {
            let rec = t.get(sha)?.map(|v| InputRecord::decode(v.value())).transpose()?;
            if let Some(mut rec) = rec.filter(|r| r.last_used_at < now) {
                rec.last_used_at = now;
                t.insert(sha, rec.encode()?.as_slice())?;
            }
        }
        Ok(())
    }

    /// Drops the inputs last used before `now − max_age_ms` that no active job reads, and
    /// the drafts created before then. A dropped input's file is an orphan only when no
    /// library item references it either. Run it through [`Store::write_pruning`].
    pub fn prune_inputs(&mut self, now: i64, max_age_ms: i64) -> Result<InputPrune, StoreError> {
        let cutoff = now.saturating_sub(max_age_ms);
        let live = self.find_active_job_files()?;
        let mut out = InputPrune::default();
        let expired: Vec<(String, InputRecord)> =
            self.find_inputs()?.into_iter().filter(|(sha, r)| r.last_used_at < cutoff && !live.contains(sha)).collect();
        let mut freed = 0u64;
        for (sha, rec) in expired {
            self.tx.open_table(INPUTS_TABLE)?.remove(sha.as_str())?;
            freed = freed.saturating_add(rec.bytes);
            out.inputs += 1;
            if self.media_refs(&sha)? == 0 {
                out.orphans.push(Orphan { sha256: sha, ext: rec.ext, bytes: rec.bytes });
            }
        }
        if freed > 0 {
            let mut counters = self.tx.open_table(COUNTERS_TABLE)?;
            let total = counters.get(INPUT_BYTES)?.map(|v| v.value()).unwrap_or(0);
            counters.insert(INPUT_BYTES, total.saturating_sub(freed))?;
        }
        let stale: Vec<u128> = {
            let t = self.tx.open_table(DRAFTS_TABLE)?;
            let mut ids = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                if Draft::decode(v.value())?.created_at < cutoff {
                    ids.push(k.value());
                }
            }
            ids
        };
        let mut drafts = self.tx.open_table(DRAFTS_TABLE)?;
        for id in &stale {
            drafts.remove(*id)?;
        }
        out.drafts = stale.len();
        Ok(out)
    }

    /// Whether the file of `orphan` must stay although its last library reference went: it
    /// is a live input, or an active job reads it (a resize of the item just deleted). The
    /// latter becomes an input at `now`, so it is pruned once that job is done with it.
    pub(super) fn keeps_file(&mut self, orphan: &Orphan, live: &HashSet<String>, now: i64) -> Result<bool, StoreError> {
        if self.get_input(&orphan.sha256)?.is_some() {
            return Ok(true);
        }
        if live.contains(&orphan.sha256) {
            self.put_input(&orphan.sha256, &orphan.ext, orphan.bytes, now)?;
            return Ok(true);
        }
        Ok(false)
    }
}

impl Store {
    /// The stored file of `sha256` under any of the input extensions, with that extension.
    /// Blocking (a few `stat`s).
    pub fn find_media_file(&self, sha256: &str) -> Option<(PathBuf, &'static str)> {
        INPUT_EXTS.into_iter().map(|ext| (self.media_path(sha256, ext), ext)).find(|(p, _)| p.is_file())
    }

    /// Records an accepted upload already written to `media/` (written again under the write
    /// lock if a prune removed it meanwhile, like a result, see `jobs::generate`). Blocking.
    pub fn put_input_file(&self, sha256: &str, ext: &str, bytes: &[u8], now: i64) -> Result<(), StoreError> {
        self.write_blocking(|tx| {
            self.put_media_file(sha256, ext, bytes)?;
            tx.put_input(sha256, ext, bytes.len() as u64, now)
        })
    }

    /// Once per database: gives the inputs of jobs and drafts written before `inputs-1`
    /// existed a record starting at `now` (files no library item references, found on disk),
    /// so they are pruned like new ones. Returns how many were adopted. Blocking.
    pub fn adopt_inputs(&self, now: i64) -> Result<usize, StoreError> {
        let files = self.read_blocking(|rx| {
            if rx.get_meta_u64(ADOPTED_KEY)?.is_some() {
                return Ok::<_, StoreError>(None);
            }
            let mut files: HashSet<String> = HashSet::new();
            let jobs = rx.tx.open_table(JOBS_TABLE)?;
            for row in jobs.iter()? {
                files.extend(JobRecord::decode(row?.1.value())?.payload.input_files().map(str::to_string));
            }
            let drafts = rx.tx.open_table(DRAFTS_TABLE)?;
            for row in drafts.iter()? {
                files.extend(Draft::decode(row?.1.value())?.inputs);
            }
            Ok(Some(files))
        })?;
        let Some(files) = files else { return Ok(0) };
        let found: Vec<(String, &'static str, u64)> = files
            .into_iter()
            .filter_map(|sha| {
                let (path, ext) = self.find_media_file(&sha)?;
                Some((sha, ext, std::fs::metadata(path).ok()?.len()))
            })
            .collect();
        self.write_blocking(|tx| {
            let mut adopted = 0;
            for (sha, ext, bytes) in &found {
                if tx.get_input(sha)?.is_none() && tx.media_refs(sha)? == 0 {
                    tx.put_input(sha, ext, *bytes, now)?;
                    adopted += 1;
                }
            }
            tx.put_meta_u64(ADOPTED_KEY, 1)?;
            Ok(adopted)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::library::tests::{add, item};
    use super::*;
    use crate::domain::{Format, UserId};
    use crate::store::records::{JobPayload, test_job};

    const DAY: i64 = 86_400_000;
    const WEEK: i64 = 7 * DAY;

    /// An uploaded input holding `bytes`, recorded as last used at `at`.
    fn upload(store: &Store, bytes: &[u8], at: i64) -> String {
        let sha = crate::imaging::sha256_hex(bytes);
        store.put_media_file(&sha, "jpg", bytes).expect("file");
        store.put_input_file(&sha, "jpg", bytes, at).expect("record");
        sha
    }

    fn prune(store: &Store, now: i64) -> InputPrune {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        rt.block_on(store.write_pruning(move |tx| {
            let p = tx.prune_inputs(now, WEEK)?;
            let orphans = p.orphans.clone();
            Ok::<_, StoreError>((p, orphans))
        }))
        .expect("prune")
    }

    fn on_disk(store: &Store, sha: &str) -> bool {
        store.find_media_file(sha).is_some()
    }

    fn edit_job(inputs: Vec<String>) -> JobRecord {
        let mut job = test_job(UserId(1), 0);
        if let JobPayload::Generate { inputs: i, .. } = &mut job.payload {
            *i = inputs;
        }
        job
    }

    #[test]
    fn old_inputs_go_unless_a_library_item_or_an_active_job_uses_them() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let now = crate::domain::now_ms();
        let old = upload(&store, b"old photo", now - 8 * DAY);
        let young = upload(&store, b"young photo", now - DAY);
        let queued = upload(&store, b"photo of a queued job", now - 8 * DAY);
        // The same bytes as a library item's file (content addressing shares it).
        let shared = item(&store, 1, b"shared bytes", false);
        add(&store, &shared, 0, 0);
        store.put_input_file(&shared.sha256, "png", b"shared bytes", now - 8 * DAY).expect("record");
        let counted = (b"old photo".len() + b"young photo".len() + b"photo of a queued job".len() + 12) as u64;
        assert_eq!(store.read_blocking(|rx| rx.get_counter(INPUT_BYTES)).expect("bytes"), counted);
        // A job still waiting in the queue, written (touched) long ago.
        let job = edit_job(vec![queued.clone()]);
        store.write_blocking(|tx| tx.put_job(&job)).expect("job");
        store.write_blocking(|tx| tx.put_input(&queued, "jpg", 21, now - 8 * DAY)).expect("age it");

        let p = prune(&store, now);
        assert_eq!(p.inputs, 2, "{p:?}");
        assert_eq!(p.orphans.iter().map(|o| o.sha256.as_str()).collect::<Vec<_>>(), [old.as_str()]);
        assert!(!on_disk(&store, &old), "unused for a week: gone");
        assert!(on_disk(&store, &young) && on_disk(&store, &queued), "young, and read by a queued job");
        assert!(store.media_path(&shared.sha256, "png").exists(), "a library item's file stays");
        assert!(store.read_blocking(|rx| rx.get_input(&shared.sha256)).expect("r").is_none(), "its input record goes");
        assert_eq!(
            store.read_blocking(|rx| rx.get_counter(INPUT_BYTES)).expect("bytes"),
            (b"young photo".len() + b"photo of a queued job".len()) as u64
        );
        // The job finishes: writing it restarts the clock, a week later the photo goes.
        let mut done = job.clone();
        done.status = crate::domain::JobStatus::Succeeded;
        done.delivery = crate::store::records::Delivery::Delivered;
        store.write_blocking(|tx| tx.put_job(&done)).expect("finish");
        let used = store.read_blocking(|rx| rx.get_input(&queued)).expect("r").expect("record").last_used_at;
        assert!(used >= now, "finishing the job counts as a use");
        assert_eq!(prune(&store, now + DAY).inputs, 0);
        assert_eq!(prune(&store, used + WEEK + 1).inputs, 2, "both the finished job's and the young photo");
        assert!(!on_disk(&store, &queued) && !on_disk(&store, &young));
    }

    #[test]
    fn a_deleted_items_file_stays_while_it_is_an_input_or_a_resize_reads_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let now = crate::domain::now_ms();
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        let delete = |id| {
            rt.block_on(store.write_pruning(move |tx| {
                let o = tx.delete_library_item(id)?;
                Ok::<_, StoreError>(((), o.into_iter().collect()))
            }))
            .expect("delete")
        };
        // A user uploaded the very bytes of a result: deleting the item keeps the live input.
        let it = item(&store, 1, b"result bytes", false);
        add(&store, &it, 0, 0);
        store.put_input_file(&it.sha256, "png", b"result bytes", now).expect("record");
        delete(it.id);
        assert!(store.media_path(&it.sha256, "png").exists());
        // A queued resize of an item the user then deletes: the file stays for the job and
        // becomes an input, pruned a week after the job is done with it.
        let it = item(&store, 1, b"picture to enlarge", false);
        add(&store, &it, 0, 0);
        let mut resize = test_job(UserId(1), 0);
        resize.payload = JobPayload::Resize { input: it.sha256.clone(), prompt: "p".into(), factor: 2, source: None };
        store.write_blocking(|tx| tx.put_job(&resize)).expect("job");
        delete(it.id);
        assert!(store.media_path(&it.sha256, "png").exists(), "the queued resize still reads it");
        let adopted = store.read_blocking(|rx| rx.get_input(&it.sha256)).expect("r").expect("now an input");
        assert_eq!((adopted.ext.as_str(), adopted.bytes), ("png", 18));
        let mut done = resize.clone();
        done.status = crate::domain::JobStatus::Failed;
        done.delivery = crate::store::records::Delivery::Delivered;
        store.write_blocking(|tx| tx.put_job(&done)).expect("finish");
        prune(&store, now + WEEK + DAY);
        assert!(!store.media_path(&it.sha256, "png").exists(), "pruned once no job reads it");
    }

    #[test]
    fn stale_drafts_go_and_inputs_count_towards_the_disk_budget() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let now = crate::domain::now_ms();
        let draft = |id: u128, created_at: i64| Draft {
            id,
            user_id: UserId(1),
            chat_id: 1,
            prompt: "p".into(),
            negative: None,
            model_id: None,
            size: None,
            aspect_ratio: None,
            inputs: vec![],
            options: Default::default(),
            format: Some(Format::Square),
            created_at,
            job_id: None,
            confirmed: false,
        };
        store
            .write_blocking(|tx| {
                tx.put_draft(&draft(1, now - 8 * DAY))?;
                tx.put_draft(&draft(2, now - DAY))
            })
            .expect("drafts");
        assert_eq!(prune(&store, now).drafts, 1);
        assert!(store.read_blocking(|rx| rx.get_draft(1)).expect("r").is_none());
        assert!(store.read_blocking(|rx| rx.get_draft(2)).expect("r").is_some());

        // 100 bytes of library files plus 200 of live uploads against a budget of 250: the
        // library's oldest non-favourite goes, the uploads (in use) stay.
        let old = item(&store, 1, &[1u8; 100], false);
        add(&store, &old, 0, 0);
        upload(&store, &[2u8; 200], now);
        let new = item(&store, 2, &[3u8; 40], false);
        let r = add(&store, &new, 0, 250);
        assert_eq!(r.removed, [old.id]);
        assert_eq!(store.read_blocking(|rx| rx.counted_bytes()).expect("bytes"), 240);
    }

    #[test]
    fn inputs_of_older_jobs_are_adopted_once() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let sha = crate::imaging::sha256_hex(b"uploaded before records");
        store.put_media_file(&sha, "webp", b"uploaded before records").expect("file");
        let job = edit_job(vec![sha.clone(), "f".repeat(64)]);
        store.write_blocking(|tx| tx.put_job(&job)).expect("job");
        let now = crate::domain::now_ms();
        assert_eq!(store.adopt_inputs(now).expect("adopt"), 1, "the file on disk; the missing one is skipped");
        let rec = store.read_blocking(|rx| rx.get_input(&sha)).expect("r").expect("record");
        assert_eq!((rec.ext.as_str(), rec.bytes, rec.last_used_at), ("webp", 23, now));
        assert_eq!(store.adopt_inputs(now).expect("again"), 0, "once per database");
    }

    #[test]
    fn backups_hold_live_inputs_and_not_pruned_ones() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let now = crate::domain::now_ms();
        let live = upload(&store, b"live upload", now);
        let old = upload(&store, b"old upload", now - 8 * DAY);
        prune(&store, now);
        // A file an active job reads that no record knows (uploaded before records existed).
        let untracked = crate::imaging::sha256_hex(b"untracked");
        store.put_media_file(&untracked, "jpg", b"untracked").expect("file");
        store.write_blocking(|tx| tx.put_job(&edit_job(vec![untracked.clone()]))).expect("job");
        let out = tempfile::tempdir().expect("tmp");
        let summary = store.backup_to(&out.path().join("b")).expect("backup");
        let copied = |sha: &str| out.path().join("b/media").join(format!("{sha}.jpg")).exists();
        assert!(copied(&live) && copied(&untracked), "{summary:?}");
        assert!(!copied(&old));
        assert_eq!(summary.media_files, 2);
    }
}
