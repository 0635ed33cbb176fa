//! Durable update intake for long polling.
//!
//! teloxide's own poller confirms a batch (the next `getUpdates` carries `offset = last + 1`)
//! as soon as it has handed the batch to the dispatcher, so a crash loses every update that
//! was received but not yet handled, and Telegram never sends them again. Here each batch is
//! written to the `inbox` table (with the next offset) in one transaction *before* the next
//! `getUpdates` confirms it; the handler wrapper (`bot::once_per_update`) removes an update
//! from the inbox when its handler finishes. On start the inbox is replayed first.

use crate::store::Store;
use futures_util::StreamExt;
use std::convert::Infallible;
use std::time::Duration;
use teloxide::prelude::*;
use teloxide::stop::{StopFlag, StopToken, mk_stop_token};
use teloxide::types::Update;
use teloxide::update_listeners::{StatefulListener, UpdateListener};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// `meta` key of the next `getUpdates` offset (u64; update ids are non-negative).
const OFFSET_KEY: &str = "telegram_offset";

/// Which updates were handled: the record behind "each update is handled to completion once"
/// (`bot::once_per_update`), beside the inbox that feeds it.
pub struct Updates {
    store: Store,
}

impl Updates {
    pub fn new(store: Store) -> Updates {
        Updates { store }
    }

    /// True if an earlier process began this update and died before finishing it.
    pub async fn interrupted(&self, update_id: i64) -> Result<bool, crate::store::StoreError> {
        self.store.read(move |rx| rx.update_interrupted(update_id)).await
    }

    /// Records that handling starts (see [`crate::store::Tx::begin_update`]).
    pub async fn begin(&self, update_id: i64) -> Result<crate::store::UpdateStart, crate::store::StoreError> {
        self.store.write(move |tx| tx.begin_update(update_id)).await
    }

    /// Records that an update's handler finished, so a re-delivery is skipped.
    pub async fn finish(&self, update_id: i64) -> Result<(), crate::store::StoreError> {
        self.store.write(move |tx| tx.finish_update(update_id)).await
    }
}

/// A teloxide update listener fed by [`run_poller`] through a channel.
pub fn listener(rx: mpsc::Receiver<Update>) -> impl UpdateListener<Err = Infallible> + Send {
    let (token, flag) = mk_stop_token();
    StatefulListener::new(ListenerState { rx, token, flag: Some(flag) }, update_stream, |st: &mut ListenerState| {
        st.token.clone()
    })
}

struct ListenerState {
    rx: mpsc::Receiver<Update>,
    token: StopToken,
    flag: Option<StopFlag>,
}

fn update_stream(st: &mut ListenerState) -> impl futures_util::Stream<Item = Result<Update, Infallible>> + Send + '_ {
    let flag = st.flag.take();
    let rx = &mut st.rx;
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok::<Update, Infallible>).take_until(async move {
        // A second stream (the dispatcher never asks for one) ends at once.
        if let Some(f) = flag {
            f.await
        }
    })
}

/// Replays the stored inbox, then long-polls `getUpdates`, storing each batch before passing
/// it on. Ends when `shutdown` fires or the listener side is gone.
///
/// Errors from Telegram are logged and retried after `retry_after` (429) or 1–30 s backoff;
/// an update that does not parse is skipped by teloxide's parser and logged there.
pub async fn run_poller(
    bot: Bot,
    store: Store,
    timeout: Duration,
    tx: mpsc::Sender<Update>,
    shutdown: CancellationToken,
) {
    if !replay(&store, &tx).await {
        return;
    }
    let mut offset = store.read(|rx| rx.get_meta_u64(OFFSET_KEY)).await.ok().flatten().unwrap_or(0);
    let mut backoff = Duration::from_secs(1);
    let mut degraded = false;
    loop {
        let mut req =
            bot.get_updates().timeout(timeout.as_secs() as u32).allowed_updates(crate::bot::allowed_updates());
        if offset > 0 {
            req = req.offset(offset as i32);
        }
        let res = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = req.send() => r,
        };
        let updates = match res {
            Ok(u) => {
                backoff = Duration::from_secs(1);
                u
            }
            Err(e) => {
                let wait = match &e {
                    teloxide::RequestError::RetryAfter(s) => s.duration(),
                    _ => backoff,
                };
                tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "getUpdates failed");
                backoff = (backoff * 2).min(Duration::from_secs(30));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        if updates.is_empty() {
            continue;
        }
        let next = updates.iter().map(|u| u.id.0 as u64 + 1).max().unwrap_or(offset);
        let rows: Vec<(i64, Vec<u8>)> =
            updates.iter().filter_map(|u| serde_json::to_vec(u).ok().map(|j| (u.id.0 as i64, j))).collect();
        let fresh = store
            .write(move |t| {
                let mut fresh = Vec::new();
                for (id, json) in &rows {
                    if t.inbox_put(*id, json)? {
                        fresh.push(*id);
                    }
                }
                t.put_meta_u64(OFFSET_KEY, next)?;
                Ok::<_, crate::store::StoreError>(fresh)
            })
            .await;
        let fresh = match fresh {
            Ok(f) => f,
            // The database takes no writes (a full disk) until a restart: hand the batch on
            // undurably, so each user is told the bot is out of storage, rather than leave
            // everyone without an answer. The offset moves on in memory only.
            Err(e) if store.io_watch().failed() => {
                if !degraded {
                    tracing::error!(error = %e, "updates are handled without being stored until mediabot restarts");
                    degraded = true;
                }
                updates.iter().map(|u| u.id.0 as i64).collect()
            }
            Err(e) => {
                // Not stored, so not confirmed either: Telegram sends the batch again.
                tracing::error!(error = %e, "could not store updates; retrying");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        offset = next;
        for u in updates.into_iter().filter(|u| fresh.contains(&(u.id.0 as i64))) {
            if tx.send(u).await.is_err() {
                return;
            }
        }
    }
}

/// Sends the updates stored but not finished (oldest first) to the dispatcher; false if the
/// dispatcher is gone. Used at start by the poller and in webhook mode.
pub async fn replay(store: &Store, tx: &mpsc::Sender<Update>) -> bool {
    let stored = match store.read(|rx| rx.inbox()).await {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, "could not read the update inbox");
            vec![]
        }
    };
    if !stored.is_empty() {
        tracing::info!(count = stored.len(), "handling updates received before the restart");
    }
    for (id, json) in stored {
        match serde_json::from_slice::<Update>(&json) {
            Ok(u) => {
                if tx.send(u).await.is_err() {
                    return false;
                }
            }
            Err(e) => {
                tracing::error!(update_id = id, error = %e, "stored update no longer parses; dropping it");
                let _ = store.write(move |t| t.finish_update(id)).await;
            }
        }
    }
    true
}
