//! What the running appliance reports at `/healthz`, and the one switch that makes it exit.
//!
//! `app` writes the bot's state as it connects and runs; the store's watchdog writes the
//! database's. A task whose end means the bot can no longer work (the update dispatcher or
//! poller stopping by itself) calls [`Health::fail`]: `/healthz` answers 503 and `serve` exits
//! non-zero, so systemd's `Restart=on-failure` starts a fresh process.

use serde::Serialize;
use std::sync::Mutex;
use tokio_util::sync::CancellationToken;

/// The bot's side of `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BotState {
    /// Waiting for the Bot API to answer `getMe` (retried with backoff).
    Connecting,
    /// Receiving updates by long polling.
    Polling,
    /// Receiving updates on the webhook route.
    Webhook,
    /// No token configured: the admin panel runs alone.
    NoToken,
    /// Stopped for good (a dead dispatcher, a refused token): `/healthz` answers 503.
    Down,
}

/// The database's side of `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DbState {
    Ok,
    /// A write failed with an I/O error (a full disk): reads still work, writes do not until
    /// the process restarts on a disk with room.
    ReadOnly,
}

/// The `/healthz` body: `{"bot": "polling", "db": "ok"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Report {
    pub bot: BotState,
    pub db: DbState,
}

impl Report {
    /// Whether `/healthz` answers 200 (a bot still connecting is healthy: it is trying).
    pub fn healthy(&self) -> bool {
        self.bot != BotState::Down && self.db == DbState::Ok
    }
}

/// Shared by `app`, the web listener and the store's watchdog.
pub struct Health {
    state: Mutex<Report>,
    fatal: CancellationToken,
}

impl Health {
    pub fn new(bot: BotState) -> Health {
        Health { state: Mutex::new(Report { bot, db: DbState::Ok }), fatal: CancellationToken::new() }
    }

    pub fn report(&self) -> Report {
        self.state.lock().map(|s| *s).unwrap_or(Report { bot: BotState::Down, db: DbState::ReadOnly })
    }

    pub fn set_bot(&self, bot: BotState) {
        if let Ok(mut s) = self.state.lock() {
            // Down is final: a late "polling" from a task still winding up must not hide it.
            if s.bot != BotState::Down {
                s.bot = bot;
            }
        }
    }

    pub fn set_db(&self, db: DbState) {
        if let Ok(mut s) = self.state.lock() {
            s.db = db;
        }
    }

    /// The bot cannot go on in this process: marks it down, logs why, and fires [`Health::fatal`].
    pub fn fail(&self, why: &str) {
        tracing::error!(reason = why, "fatal: stopping so the service manager starts a fresh process");
        self.set_bot(BotState::Down);
        self.fatal.cancel();
    }

    /// Fires when [`Health::fail`] was called (`serve` then exits non-zero).
    pub fn fatal(&self) -> CancellationToken {
        self.fatal.clone()
    }
}
