//! Admin broadcasts: one message (text, or a photo with the text as caption) to many users,
//! paced at [`MESSAGES_PER_SEC`], resumable after a restart.
//!
//! A broadcast in state `Sending` is walked in user id order. After each recipient the
//! counters and the cursor (last user id handled) are written in one transaction, together
//! with `blocked = true` on a user who blocked the bot, so a restart picks up after the last
//! user handled. The panel starts, watches and cancels broadcasts only through the store.

use super::{JobEngine, NotifyError};
use crate::domain::now_ms;
use crate::store::records::{Broadcast, BroadcastState, BroadcastTarget, UserRecord};
use crate::store::{Rx, Store, StoreError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Telegram allows about 30 messages per second overall; stay well below it.
pub const MESSAGES_PER_SEC: u64 = 25;
const BATCH: usize = 200;

/// What happened to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    Blocked,
    Failed,
}

/// The next recipients of `b` after its cursor, at most [`BATCH`].
pub fn next_recipients(rx: &Rx, b: &Broadcast) -> Result<Vec<UserRecord>, StoreError> {
    let mut out = Vec::new();
    match &b.target {
        BroadcastTarget::ActiveSince { day } => {
            let after = b.cursor.unwrap_or(i64::MIN);
            for id in rx.find_active_users(*day)?.into_iter().filter(|id| *id > after) {
                if let Some(u) = rx.get_user(crate::domain::UserId(id))?.filter(|u| b.wants(u)) {
                    out.push(u);
                    if out.len() == BATCH {
                        break;
                    }
                }
            }
        }
        BroadcastTarget::All | BroadcastTarget::Level { .. } => {
            // Walk in pages until a page yields recipients or the table ends.
            let mut after = b.cursor;
            loop {
                let page = rx.find_users_page(after, BATCH)?;
                let Some(last) = page.last().map(|u| u.id.0) else { break };
                out.extend(page.into_iter().filter(|u| b.wants(u)));
                if !out.is_empty() {
                    break;
                }
                after = Some(last);
            }
        }
    }
    Ok(out)
}

/// Number of recipients `b` has right now (for the progress bar's total).
pub fn count_recipients(rx: &Rx, b: &Broadcast) -> Result<u64, StoreError> {
    let mut n = 0;
    let mut probe = b.clone();
    probe.cursor = None;
    loop {
        let batch = next_recipients(rx, &probe)?;
        let Some(last) = batch.last() else { break };
        probe.cursor = Some(last.id.0);
        n += batch.len() as u64;
    }
    Ok(n)
}

/// Records one recipient's outcome and moves the cursor. Returns the broadcast as stored, or
/// `None` if it is no longer `Sending` (cancelled from the panel meanwhile).
pub async fn record(store: &Store, id: u128, user: i64, outcome: Outcome) -> Result<Option<Broadcast>, StoreError> {
    store
        .write(move |tx| {
            let Some(mut b) = tx.get_broadcast(id)? else { return Ok(None) };
            if b.state != BroadcastState::Sending {
                return Ok(None);
            }
            match outcome {
                Outcome::Sent => b.sent += 1,
                Outcome::Failed => b.failed += 1,
                Outcome::Blocked => {
                    b.blocked += 1;
                    if let Some(mut u) = tx.get_user(crate::domain::UserId(user))? {
                        u.blocked = true;
                        tx.put_user(&u)?;
                    }
                }
            }
            b.cursor = Some(user);
            tx.put_broadcast(&b)?;
            Ok(Some(b))
        })
        .await
}

async fn finish(store: &Store, id: u128) -> Result<(), StoreError> {
    store
        .write(move |tx| {
            if let Some(mut b) = tx.get_broadcast(id)? {
                if b.state == BroadcastState::Sending {
                    b.state = BroadcastState::Done;
                    b.finished_at = Some(now_ms());
                    tx.put_broadcast(&b)?;
                }
            }
            Ok(())
        })
        .await
}

impl JobEngine {
    /// Wakes the broadcast sender (a broadcast was started from the panel).
    pub fn wake_broadcasts(&self) {
        self.inner.broadcast_wake.notify_one();
    }

    /// Sends broadcasts in `Sending` state, oldest first, until `shutdown`. Started with the
    /// bot; a broadcast interrupted by a stop continues from its cursor on the next start.
    pub async fn run_broadcasts(&self, shutdown: CancellationToken) {
        let store = self.inner.store.clone();
        loop {
            let next = store
                .read(|rx| {
                    let all = rx.find_broadcasts(1000)?;
                    Ok::<_, StoreError>(all.into_iter().rev().find(|b| b.state == BroadcastState::Sending))
                })
                .await;
            match next {
                Ok(Some(b)) => {
                    if let Err(e) = self.send_broadcast(b, &shutdown).await {
                        tracing::error!(error = %e, "broadcast pass failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    if shutdown.is_cancelled() {
                        break;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "reading broadcasts failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.inner.broadcast_wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
        }
    }

    async fn send_broadcast(&self, b: Broadcast, shutdown: &CancellationToken) -> Result<(), StoreError> {
        let photo = match &b.image {
            Some((sha, ext)) => Some(tokio::fs::read(self.inner.store.media_path(sha, ext)).await?),
            None => None,
        };
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / MESSAGES_PER_SEC));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut current = b;
        loop {
            let probe = current.clone();
            let batch = self.inner.store.read(move |rx| next_recipients(rx, &probe)).await?;
            if batch.is_empty() {
                return finish(&self.inner.store, current.id).await;
            }
            for u in batch {
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tick.tick() => {}
                }
                let outcome = match self.inner.notifier.broadcast(u.id.0, &current.text, photo.clone()).await {
                    Ok(()) => Outcome::Sent,
                    Err(NotifyError::Blocked) => Outcome::Blocked,
                    Err(NotifyError::Other(e)) => {
                        tracing::warn!(user = u.id.0, error = %e, "broadcast message not sent");
                        Outcome::Failed
                    }
                };
                match record(&self.inner.store, current.id, u.id.0, outcome).await? {
                    Some(b) => current = b,
                    None => return Ok(()), // cancelled from the panel
                }
            }
        }
    }
}

/// Errors from preparing a broadcast image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("not a usable image: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks an uploaded broadcast image and stores it as a Telegram-ready photo (JPEG within
/// the photo limits) under `media/`; returns its (sha256, extension). Runs on the blocking pool.
pub async fn prepare_image(store: &Store, bytes: Vec<u8>) -> Result<(String, String), ImageError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let limits = crate::imaging::Limits::default();
        let photo =
            crate::imaging::fit_for_telegram_photo(&bytes, &limits).map_err(|e| ImageError::Invalid(e.to_string()))?;
        let sha = crate::imaging::sha256_hex(&photo);
        store.put_media_file(&sha, "jpg", &photo)?;
        Ok((sha, "jpg".to_string()))
    })
    .await
    .map_err(|e| ImageError::Store(StoreError::Join(e.to_string())))?
}
