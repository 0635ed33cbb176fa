//! The user's library: pages, owner-checked actions (star, delete, categories), presets, and
//! inline search. The bot and the panel reach it through [`Library`]; jobs write new items in
//! the transaction that captures their hold (`jobs::generate`), so they do not go through it.
//!
//! Every method takes the acting user and refuses (returns `None`/`false`) for an item or
//! preset that does not exist or belongs to someone else, without saying which: ids travel in
//! callback data, which any client can replay or forge.

use crate::domain::{ImageId, UserId, now_ms};
use crate::store::library::{INLINE_CHOSEN, LibraryFilter, clean_name};
use crate::store::records::{JobPayload, LibraryItem, Preset};
use crate::store::{Store, StoreError};

/// Items per library page (the ◀ ▶ step).
pub const PAGE_SIZE: usize = 8;

/// One page of a user's library, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct LibraryPage {
    pub items: Vec<LibraryItem>,
    /// 0-based page shown (clamped to the last page).
    pub page: usize,
    /// Number of pages (at least 1).
    pub pages: usize,
    /// Items the filter keeps in all.
    pub total: usize,
}

/// Handle to the library; cheap to clone.
#[derive(Clone)]
pub struct Library {
    store: Store,
}

impl Library {
    pub fn new(store: Store) -> Library {
        Library { store }
    }

    /// A user's item; `None` if missing or someone else's.
    pub async fn owned_item(&self, user: UserId, id: ImageId) -> Result<Option<LibraryItem>, StoreError> {
        let item = self.store.read(move |rx| rx.get_library_item(id)).await?;
        Ok(item.filter(|i| i.owner == user))
    }

    /// Page `page` (0-based; past the end shows the last) of the items `filter` keeps.
    pub async fn library_page(
        &self,
        user: UserId,
        filter: LibraryFilter,
        page: usize,
    ) -> Result<LibraryPage, StoreError> {
        self.store
            .read(move |rx| {
                let (_, total) = rx.find_library_page(user, &filter, 0, 0)?;
                let pages = total.div_ceil(PAGE_SIZE).max(1);
                let page = page.min(pages - 1);
                let (items, _) = rx.find_library_page(user, &filter, page * PAGE_SIZE, PAGE_SIZE)?;
                Ok(LibraryPage { items, page, pages, total })
            })
            .await
    }

    /// Flips the favourite flag of a library item owned by `user`. `None` if the item does
    /// not exist or belongs to someone else (never reveals which).
    pub async fn toggle_favourite(&self, user: UserId, id: ImageId) -> Result<Option<bool>, StoreError> {
        self.store
            .write(move |tx| {
                let Some(mut item) = tx.get_library_item(id)? else { return Ok(None) };
                if item.owner != user {
                    return Ok(None);
                }
                item.favourite = !item.favourite;
                tx.put_library_item(&item)?;
                Ok(Some(item.favourite))
            })
            .await
    }

    /// Deletes a user's item (and its file when no other item shares it). False if refused.
    pub async fn delete_item(&self, user: UserId, id: ImageId) -> Result<bool, StoreError> {
        self.store
            .write_pruning(move |tx| {
                if tx.get_library_item(id)?.is_none_or(|i| i.owner != user) {
                    return Ok((false, vec![]));
                }
                let orphan = tx.delete_library_item(id)?;
                Ok((true, orphan.into_iter().collect()))
            })
            .await
    }

    /// A user's categories `(number, name)`.
    pub async fn categories(&self, user: UserId) -> Result<Vec<(u32, String)>, StoreError> {
        self.store.read(move |rx| rx.find_categories(user)).await
    }

    /// Puts a user's item into a category, given by number (an existing one) or by name
    /// (created when new). Returns the category name; `None` if refused (not the owner's item,
    /// unknown number, empty name).
    pub async fn categorise(
        &self,
        user: UserId,
        id: ImageId,
        category: Result<u32, String>,
    ) -> Result<Option<String>, StoreError> {
        self.store
            .write(move |tx| {
                let Some(mut item) = tx.get_library_item(id)?.filter(|i| i.owner == user) else { return Ok(None) };
                let name = match category {
                    Ok(n) => match tx.find_categories(user)?.into_iter().find(|(k, _)| *k == n) {
                        Some((_, name)) => name,
                        None => return Ok(None),
                    },
                    Err(name) if clean_name(&name).is_empty() => return Ok(None),
                    Err(name) => tx.put_category(user, &name)?.1,
                };
                if !item.categories.contains(&name) {
                    item.categories.push(name.clone());
                    tx.put_library_item(&item)?;
                }
                Ok(Some(name))
            })
            .await
    }

    /// Saves the settings of a user's item (model, format, negative, size, aspect ratio) as a
    /// preset called `name`. Returns its number; `None` if refused or the name is empty.
    pub async fn save_preset(&self, user: UserId, id: ImageId, name: &str) -> Result<Option<u32>, StoreError> {
        let name = clean_name(name);
        let Some(item) = self.owned_item(user, id).await?.filter(|_| !name.is_empty()) else { return Ok(None) };
        let job = match item.job_id {
            Some(j) => self.store.read(move |rx| rx.get_job(j)).await?,
            None => None,
        };
        let (size, aspect_ratio) = match job.map(|j| j.payload) {
            Some(JobPayload::Generate { width, height, aspect_ratio, format, .. }) => {
                let custom = (width, height) != format.default_size();
                (custom.then_some((width, height)), aspect_ratio)
            }
            _ => (None, None),
        };
        let preset = Preset {
            owner: user,
            number: 0,
            name,
            model_id: item.model_id,
            format: item.format,
            negative: item.negative,
            size,
            aspect_ratio,
            created_at: now_ms(),
        };
        Ok(Some(self.store.write(move |tx| tx.put_preset(&preset)).await?))
    }

    /// A user's presets.
    pub async fn presets(&self, user: UserId) -> Result<Vec<Preset>, StoreError> {
        self.store.read(move |rx| rx.find_presets(user)).await
    }

    /// One of a user's presets.
    pub async fn preset(&self, user: UserId, number: u32) -> Result<Option<Preset>, StoreError> {
        self.store.read(move |rx| rx.get_preset(user, number)).await
    }

    /// Renames a user's preset; false if there is none or the name is empty.
    pub async fn rename_preset(&self, user: UserId, number: u32, name: &str) -> Result<bool, StoreError> {
        let name = clean_name(name);
        self.store
            .write(move |tx| {
                let Some(mut p) = tx.get_preset(user, number)?.filter(|_| !name.is_empty()) else { return Ok(false) };
                p.name = name;
                tx.put_preset(&p)?;
                Ok(true)
            })
            .await
    }

    /// Deletes a user's preset; false if there was none.
    pub async fn delete_preset(&self, user: UserId, number: u32) -> Result<bool, StoreError> {
        self.store.write(move |tx| tx.delete_preset(user, number)).await
    }

    /// Inline mode: a user's items that Telegram already has as photos, favourites first, then
    /// the rest newest first, whose prompt contains every word of `query` (case-insensitive);
    /// an empty query gives the favourites only. At most `limit`.
    pub async fn inline_items(&self, user: UserId, query: &str, limit: usize) -> Result<Vec<LibraryItem>, StoreError> {
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        let items = self.store.read(move |rx| rx.find_library(user)).await?;
        let matches = |i: &LibraryItem| {
            let p = i.prompt.to_lowercase();
            i.photo_file_id.is_some() && words.iter().all(|w| p.contains(w.as_str()))
        };
        let (favs, rest): (Vec<_>, Vec<_>) = items.into_iter().filter(|i| matches(i)).partition(|i| i.favourite);
        let rest = if query.trim().is_empty() { vec![] } else { rest };
        Ok(favs.into_iter().chain(rest).take(limit).collect())
    }

    /// Counts a chosen_inline_result when the result (an item id) is the choosing user's own.
    /// Returns the new total, or `None` when not counted.
    pub async fn count_inline_chosen(&self, user: UserId, result_id: &str) -> Result<Option<u64>, StoreError> {
        let Some(id) = ImageId::from_short(result_id) else { return Ok(None) };
        if self.owned_item(user, id).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(self.store.write(|tx| tx.bump_counter(INLINE_CHOSEN, 1)).await?))
    }

    /// Records a photo file_id Telegram gave for an item sent again by upload.
    pub async fn record_photo_file_id(&self, id: ImageId, file_id: String) -> Result<(), StoreError> {
        self.store.write(move |tx| tx.set_library_file_ids(id, Some(file_id), None)).await
    }
}
