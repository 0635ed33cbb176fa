//! The image library's tables: items (with the per-owner index and media reference counts),
//! categories, presets, counters, and retention.
//!
//! Files are content-addressed (`media/<sha256>.<ext>`); a file is removed in the same write
//! transaction that drops its last reference ([`Store::write_pruning`]), so an insert of the
//! same bytes (which re-writes the file inside its own write transaction) can never lose it.

use super::records::{LibraryItem, Preset, Record};
use super::tables::*;
use super::{Rx, Store, StoreError, Tx};
use crate::domain::{ImageId, UserId};
use redb::ReadableTable;

/// Counter: bytes of the distinct files library items reference.
pub const MEDIA_BYTES: &str = "media_bytes";
/// Counter: inline results users picked (chosen_inline_result updates).
pub const INLINE_CHOSEN: &str = "inline_chosen";
/// Longest category or preset name kept (characters); longer input is cut.
pub const MAX_NAME_CHARS: usize = 32;

/// Which of a user's items a library page lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibraryFilter {
    All,
    Favourites,
    /// Items carrying this category name.
    Category(String),
}

impl LibraryFilter {
    fn keeps(&self, item: &LibraryItem) -> bool {
        match self {
            LibraryFilter::All => true,
            LibraryFilter::Favourites => item.favourite,
            LibraryFilter::Category(c) => item.categories.iter().any(|x| x == c),
        }
    }
}

/// A file no item references any more (removed from disk by [`Store::write_pruning`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub sha256: String,
    pub ext: String,
    /// Its size, should it have to stay as an input (see [`Store::write_pruning`]).
    pub bytes: u64,
}

/// What [`Tx::enforce_retention`] did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Retention {
    /// Items removed (oldest non-favourites first).
    pub removed: Vec<ImageId>,
    /// Files that lost their last reference.
    pub orphans: Vec<Orphan>,
    /// The owner is over `max_items` and everything that could go is gone: the rest are
    /// favourites, which are never removed silently.
    pub favourites_full: bool,
}

macro_rules! library_getters {
    ($($t:ty),*) => {$(
#[allow(dead_code, reason = "read accessors shared by Rx and Tx; not each is used from both")]
impl $t {
    /// One page of a user's library, newest first: items `offset..offset + limit` among those
    /// `filter` keeps, and how many it keeps in all.
    pub fn find_library_page(
        &self,
        user: UserId,
        filter: &LibraryFilter,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<LibraryItem>, usize), StoreError> {
        let kept: Vec<LibraryItem> = self.find_library(user)?.into_iter().filter(|i| filter.keeps(i)).collect();
        let total = kept.len();
        Ok((kept.into_iter().skip(offset).take(limit).collect(), total))
    }
    /// A user's categories `(number, name)` in creation order.
    pub fn find_categories(&self, user: UserId) -> Result<Vec<(u32, String)>, StoreError> {
        let t = self.tx.open_table(CATEGORIES_TABLE)?;
        t.range((user.0, 0u32)..=(user.0, u32::MAX))?
            .map(|r| {
                let (k, v) = r?;
                Ok((k.value().1, v.value().to_string()))
            })
            .collect()
    }
    /// A user's presets in creation order.
    pub fn find_presets(&self, user: UserId) -> Result<Vec<Preset>, StoreError> {
        let t = self.tx.open_table(PRESETS_TABLE)?;
        t.range((user.0, 0u32)..=(user.0, u32::MAX))?.map(|r| Preset::decode(r?.1.value())).collect()
    }
    /// One of a user's presets (keyed by owner, so another user's number finds nothing).
    pub fn get_preset(&self, user: UserId, number: u32) -> Result<Option<Preset>, StoreError> {
        let t = self.tx.open_table(PRESETS_TABLE)?;
        t.get((user.0, number))?.map(|v| Preset::decode(v.value())).transpose()
    }
    /// Bytes the disk budget counts: the distinct files library items reference and the
    /// live uploaded inputs (a file that is both counts twice, which errs on the safe side).
    pub fn counted_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.get_counter(MEDIA_BYTES)?.saturating_add(self.get_counter(super::inputs::INPUT_BYTES)?))
    }
    /// A counter's value (0 when never bumped).
    pub fn get_counter(&self, name: &str) -> Result<u64, StoreError> {
        let t = self.tx.open_table(COUNTERS_TABLE)?;
        Ok(t.get(name)?.map(|v| v.value()).unwrap_or(0))
    }
}
    )*};
}
library_getters!(Rx, Tx);

fn next_number<V: redb::Value + 'static>(t: &redb::Table<'_, (i64, u32), V>, user: UserId) -> Result<u32, StoreError> {
    let last = t.range((user.0, 0u32)..=(user.0, u32::MAX))?.next_back().transpose()?.map(|(k, _)| k.value().1);
    Ok(last.unwrap_or(0) + 1)
}

/// Trims a user-typed name to at most [`MAX_NAME_CHARS`] characters on one line.
pub fn clean_name(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(MAX_NAME_CHARS).collect()
}

impl Tx {
    /// Removes a library item, its owner index row and one reference to its file. Returns the
    /// file when that was its last reference (the caller removes it, see
    /// [`Store::write_pruning`]). A missing item is a no-op (`Ok(None)`).
    pub fn delete_library_item(&mut self, id: ImageId) -> Result<Option<Orphan>, StoreError> {
        let Some(item) = self.get_library_item(id)? else { return Ok(None) };
        self.tx.open_table(LIBRARY_TABLE)?.remove(id.0)?;
        self.tx.open_table(LIBRARY_BY_USER_TABLE)?.remove((item.owner.0, id.0))?;
        let mut refs = self.tx.open_table(MEDIA_REFS_TABLE)?;
        let n = refs.get(item.sha256.as_str())?.map(|v| v.value()).unwrap_or(0);
        if n > 1 {
            refs.insert(item.sha256.as_str(), n - 1)?;
            return Ok(None);
        }
        refs.remove(item.sha256.as_str())?;
        drop(refs);
        let mut counters = self.tx.open_table(COUNTERS_TABLE)?;
        let total = counters.get(MEDIA_BYTES)?.map(|v| v.value()).unwrap_or(0);
        counters.insert(MEDIA_BYTES, total.saturating_sub(item.bytes))?;
        Ok(Some(Orphan { sha256: item.sha256, ext: item.ext, bytes: item.bytes }))
    }

    /// Adds `by` to a counter.
    pub fn bump_counter(&mut self, name: &str, by: u64) -> Result<u64, StoreError> {
        let mut t = self.tx.open_table(COUNTERS_TABLE)?;
        let v = t.get(name)?.map(|v| v.value()).unwrap_or(0).saturating_add(by);
        t.insert(name, v)?;
        Ok(v)
    }

    /// The number of the user's category called `name` (compared case-insensitively),
    /// created if new. `name` is cleaned with [`clean_name`]; an empty one is refused.
    pub fn put_category(&mut self, user: UserId, name: &str) -> Result<(u32, String), StoreError> {
        let name = clean_name(name);
        if name.is_empty() {
            return Err(StoreError::Refused("empty category name".into()));
        }
        if let Some(found) =
            self.find_categories(user)?.into_iter().find(|(_, n)| n.to_lowercase() == name.to_lowercase())
        {
            return Ok(found);
        }
        let mut t = self.tx.open_table(CATEGORIES_TABLE)?;
        let number = next_number(&t, user)?;
        t.insert((user.0, number), name.as_str())?;
        Ok((number, name))
    }

    /// Stores a preset; `number == 0` gives it the user's next number. Returns the number.
    pub fn put_preset(&mut self, preset: &Preset) -> Result<u32, StoreError> {
        let mut t = self.tx.open_table(PRESETS_TABLE)?;
        let mut p = preset.clone();
        if p.number == 0 {
            p.number = next_number(&t, p.owner)?;
        }
        t.insert((p.owner.0, p.number), p.encode()?.as_slice())?;
        Ok(p.number)
    }

    /// Deletes one of a user's presets; false if there was none.
    pub fn delete_preset(&mut self, user: UserId, number: u32) -> Result<bool, StoreError> {
        Ok(self.tx.open_table(PRESETS_TABLE)?.remove((user.0, number))?.is_some())
    }

    /// Applies the retention limits after `keep` (the item just stored) was added.
    ///
    /// `max_items` (0 = no limit) caps each owner's item count: `user`'s oldest non-favourite
    /// items go first. `budget_bytes` (0 = no limit) caps the bytes of all referenced files and
    /// live inputs ([`Tx::counted_bytes`]): the oldest non-favourite items of anyone go until
    /// the total fits (an item whose file
    /// is shared frees nothing until its last sibling goes). Favourites and `keep` are never
    /// removed; `favourites_full` says the user's cap could not be met.
    pub fn enforce_retention(
        &mut self,
        user: UserId,
        keep: ImageId,
        max_items: u32,
        budget_bytes: u64,
    ) -> Result<Retention, StoreError> {
        let mut out = Retention::default();
        if max_items > 0 {
            let ids: Vec<u128> = {
                let idx = self.tx.open_table(LIBRARY_BY_USER_TABLE)?;
                idx.range((user.0, 0u128)..=(user.0, u128::MAX))?
                    .map(|r| Ok(r?.0.value().1))
                    .collect::<Result<_, StoreError>>()?
            };
            let mut excess = ids.len().saturating_sub(max_items as usize);
            for id in ids {
                if excess == 0 {
                    break;
                }
                if id == keep.0 || self.get_library_item(ImageId(id))?.is_none_or(|i| i.favourite) {
                    continue;
                }
                out.orphans.extend(self.delete_library_item(ImageId(id))?);
                out.removed.push(ImageId(id));
                excess -= 1;
            }
            out.favourites_full = excess > 0;
        }
        if budget_bytes > 0 && self.counted_bytes()? > budget_bytes {
            // Oldest first across everyone: library ids are UUIDv7.
            let candidates: Vec<LibraryItem> = {
                let t = self.tx.open_table(LIBRARY_TABLE)?;
                t.iter()?
                    .map(|r| LibraryItem::decode(r?.1.value()))
                    .filter(|i| i.as_ref().map_or(true, |i| !i.favourite && i.id != keep))
                    .collect::<Result<_, StoreError>>()?
            };
            for item in candidates {
                if self.counted_bytes()? <= budget_bytes {
                    break;
                }
                out.orphans.extend(self.delete_library_item(item.id)?);
                out.removed.push(item.id);
            }
        }
        Ok(out)
    }
}

impl Store {
    /// [`Store::write`] for changes that may drop the last reference to files: the closure
    /// returns the orphans, which are removed from `media/` before the commit, while the write
    /// lock still keeps any insert of the same bytes out (it re-writes the file inside its own
    /// transaction, see `jobs::generate`). Files are content-addressed, so an orphan's file
    /// stays when it is also a live input or an active job reads it.
    pub async fn write_pruning<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Tx) -> Result<(T, Vec<Orphan>), E> + Send + 'static,
    {
        let store = self.clone();
        self.write(move |tx| {
            let (out, orphans) = f(tx)?;
            if !orphans.is_empty() {
                let live = tx.find_active_job_files()?;
                let now = crate::domain::now_ms();
                for o in orphans {
                    if !tx.keeps_file(&o, &live, now)? {
                        store.remove_media_file(&o)?;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Removes one media file; an already missing file is fine.
    fn remove_media_file(&self, o: &Orphan) -> Result<(), StoreError> {
        match std::fs::remove_file(self.media_path(&o.sha256, &o.ext)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::domain::Format;

    /// An item of `owner` whose file holds `bytes` (written to `media/` like a result).
    pub(in crate::store) fn item(store: &Store, owner: i64, bytes: &[u8], favourite: bool) -> LibraryItem {
        let sha256 = crate::imaging::sha256_hex(bytes);
        store.put_media_file(&sha256, "png", bytes).expect("file");
        LibraryItem {
            id: ImageId::new(),
            owner: UserId(owner),
            job_id: None,
            kind: "create".into(),
            prompt: format!("p{}", bytes.len()),
            negative: None,
            model_id: "m".into(),
            format: Format::Square,
            seed: 1,
            width: 1,
            height: 1,
            bytes: bytes.len() as u64,
            sha256,
            ext: "png".into(),
            mime: "image/png".into(),
            created_at: 0,
            favourite,
            categories: vec![],
            photo_file_id: None,
            document_file_id: None,
            is_demo: false,
            source: None,
            media: crate::domain::MediaKind::Image,
        }
    }

    /// Inserts `it` and applies retention as `jobs::generate::store_result` does.
    pub(in crate::store) fn add(store: &Store, it: &LibraryItem, max_items: u32, budget: u64) -> Retention {
        let it = it.clone();
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        rt.block_on(store.write_pruning(move |tx| {
            tx.insert_library_item(&it)?;
            let r = tx.enforce_retention(it.owner, it.id, max_items, budget)?;
            let orphans = r.orphans.clone();
            Ok::<_, crate::store::StoreError>((r, orphans))
        }))
        .expect("write")
    }

    fn ids(store: &Store, owner: i64) -> Vec<ImageId> {
        let mut v: Vec<ImageId> =
            store.read_blocking(|rx| rx.find_library(UserId(owner))).expect("read").iter().map(|i| i.id).collect();
        v.reverse();
        v
    }

    #[test]
    fn over_quota_the_oldest_non_favourites_go_and_shared_files_stay_until_the_last_reference() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let fav = item(&store, 1, b"favourite", true);
        let shared_a = item(&store, 1, b"shared file", false);
        let own = item(&store, 1, b"own file", false);
        let shared_b = item(&store, 2, b"shared file", false);
        for it in [&fav, &shared_a, &own, &shared_b] {
            assert_eq!(add(&store, it, 0, 0), Retention::default(), "no limits, nothing removed");
        }
        assert_eq!(store.read_blocking(|rx| rx.media_refs(&shared_a.sha256)).expect("refs"), 2);
        let counted = store.read_blocking(|rx| rx.get_counter(MEDIA_BYTES)).expect("bytes");
        assert_eq!(counted, (b"favourite".len() + b"shared file".len() + b"own file".len()) as u64, "distinct files");

        // User 1 at a quota of 2 adds a fourth: the two oldest non-favourites go, the star stays.
        let newest = item(&store, 1, b"newest", false);
        let r = add(&store, &newest, 2, 0);
        assert_eq!(r.removed, [shared_a.id, own.id]);
        assert!(!r.favourites_full);
        assert_eq!(ids(&store, 1), [fav.id, newest.id]);
        assert!(store.read_blocking(|rx| rx.get_library_item(own.id)).expect("r").is_none(), "row gone");
        assert!(!store.media_path(&own.sha256, "png").exists(), "own file gone from disk");
        // User 2 still references the shared file: it stays, with one reference left.
        assert!(store.media_path(&shared_a.sha256, "png").exists(), "shared file survives");
        assert_eq!(store.read_blocking(|rx| rx.media_refs(&shared_a.sha256)).expect("refs"), 1);
        // The last reference goes → the file goes.
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        let id = shared_b.id;
        let removed = rt
            .block_on(store.write_pruning(move |tx| {
                let o = tx.delete_library_item(id)?;
                Ok::<_, crate::store::StoreError>((o.clone(), o.into_iter().collect()))
            }))
            .expect("delete");
        assert_eq!(removed, Some(Orphan { sha256: shared_b.sha256.clone(), ext: "png".into(), bytes: 11 }));
        assert!(!store.media_path(&shared_b.sha256, "png").exists(), "last reference gone → file gone");

        // A quota full of favourites: nothing is removed, and the caller is told.
        let star2 = item(&store, 1, b"second star", true);
        add(&store, &star2, 0, 0);
        let r = add(&store, &item(&store, 1, b"one too many", false), 2, 0);
        assert_eq!(r.removed, [newest.id], "the only non-favourite besides the new one");
        let r = add(&store, &item(&store, 1, b"and another", false), 2, 0);
        assert!(r.favourites_full, "{r:?}");
        assert!(ids(&store, 1).contains(&fav.id) && ids(&store, 1).contains(&star2.id));
    }

    #[test]
    fn over_the_disk_budget_the_oldest_non_favourites_of_anyone_go() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let old_fav = item(&store, 1, &[1u8; 100], true);
        let old = item(&store, 2, &[2u8; 100], false);
        let mid = item(&store, 1, &[3u8; 100], false);
        for it in [&old_fav, &old, &mid] {
            add(&store, it, 0, 0);
        }
        // 400 bytes against a budget of 250: the two oldest non-favourites go, oldest first.
        let new = item(&store, 3, &[4u8; 100], false);
        let r = add(&store, &new, 0, 250);
        assert_eq!(r.removed, [old.id, mid.id]);
        assert_eq!(store.read_blocking(|rx| rx.get_counter(MEDIA_BYTES)).expect("bytes"), 200);
        assert!(!store.media_path(&old.sha256, "png").exists() && !store.media_path(&mid.sha256, "png").exists());
        assert!(store.media_path(&old_fav.sha256, "png").exists(), "favourites are never purged");
    }

    #[test]
    fn categories_and_presets_are_per_user_and_numbered() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        store
            .write_blocking(|tx| {
                assert_eq!(tx.put_category(UserId(1), "  Cats   and dogs ")?, (1, "Cats and dogs".into()));
                assert_eq!(tx.put_category(UserId(1), "cats AND dogs")?.0, 1, "same name, same number");
                assert_eq!(tx.put_category(UserId(1), &"x".repeat(50))?, (2, "x".repeat(MAX_NAME_CHARS)));
                assert_eq!(tx.put_category(UserId(2), "Birds")?.0, 1, "numbers are per user");
                assert!(tx.put_category(UserId(1), "   ").is_err());
                let p = Preset {
                    owner: UserId(1),
                    number: 0,
                    name: "n".into(),
                    model_id: "m".into(),
                    format: Format::Vertical,
                    negative: Some("blur".into()),
                    size: Some((512, 768)),
                    aspect_ratio: None,
                    created_at: 0,
                };
                assert_eq!(tx.put_preset(&p)?, 1);
                assert_eq!(tx.put_preset(&p)?, 2);
                assert!(tx.get_preset(UserId(2), 1)?.is_none(), "another user's number finds nothing");
                assert!(!tx.delete_preset(UserId(2), 1)?);
                assert!(tx.delete_preset(UserId(1), 1)?);
                assert_eq!(tx.find_presets(UserId(1))?.iter().map(|p| p.number).collect::<Vec<_>>(), [2]);
                assert_eq!(Preset::decode(&p.encode()?)?, p, "record round-trips");
                Ok::<_, crate::store::StoreError>(())
            })
            .expect("write");
    }
}
