//! Noticing a failed disk write the moment it happens.
//!
//! After one I/O error (typically ENOSPC, a full disk) redb refuses every later write with
//! "Previous I/O error occurred" until the database is closed and opened again — even once
//! space is back. Those errors surface inside whatever transaction hit them, as the caller's
//! own error type, so they cannot be recognised reliably where they are handled. The storage
//! backend is where every write passes: [`WatchedBackend`] forwards to redb's file backend and
//! raises the store's [`IoWatch`] on the first failed write, sync or resize, which `app` turns
//! into `/healthz` saying `read_only`, one admin alert, and a restart once the disk has room.

use redb::StorageBackend;
use redb::backends::FileBackend;
use std::io;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// Raised once a write to the database file failed; never lowered (only a new process with a
/// freshly opened database writes again).
#[derive(Debug, Default)]
pub struct IoWatch {
    failed: AtomicBool,
    raised: Notify,
}

impl IoWatch {
    /// True after the first failed write.
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// Resolves once a write has failed (at once if one already did).
    pub async fn wait(&self) {
        loop {
            let notified = self.raised.notified();
            if self.failed() {
                return;
            }
            notified.await;
        }
    }

    fn raise(&self, e: &io::Error) {
        if !self.failed.swap(true, Ordering::SeqCst) {
            tracing::error!(error = %e, "a database write failed: the database takes no more writes until mediabot restarts");
        }
        self.raised.notify_waiters();
    }
}

/// redb's file backend with every write-side failure reported to an [`IoWatch`].
#[derive(Debug)]
pub struct WatchedBackend {
    inner: FileBackend,
    watch: Arc<IoWatch>,
}

impl WatchedBackend {
    pub fn new(inner: FileBackend, watch: Arc<IoWatch>) -> WatchedBackend {
        WatchedBackend { inner, watch }
    }

    fn watched<T>(&self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r {
            self.watch.raise(e);
        }
        r
    }
}

impl StorageBackend for WatchedBackend {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.watched(self.inner.set_len(len))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.watched(self.inner.sync_data())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.watched(self.inner.write(offset, data))
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    // The locks keep a second process off the file (StoreError::AlreadyOpen): forwarded as is.
    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
