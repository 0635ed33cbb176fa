//! Webhook mode: Telegram POSTs each update to `telegram.webhook_url` (through the operator's
//! reverse proxy) instead of the bot long-polling `getUpdates`.
//!
//! The route lives on the web listener at the URL's path. A request whose
//! `X-Telegram-Bot-Api-Secret-Token` header is missing or wrong gets 401 and is dropped before
//! parsing; an accepted update goes through a bounded channel into a teloxide
//! [`UpdateListener`], so the dispatcher handles it exactly like a polled one (including the
//! bot's update-id dedupe, which absorbs Telegram's re-deliveries).

use crate::config::TelegramConfig;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use std::convert::Infallible;
use teloxide::prelude::*;
use teloxide::types::Update;
use teloxide::update_listeners::UpdateListener;
use tokio::sync::mpsc;

/// Header Telegram puts the `secret_token` of setWebhook in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Updates accepted but not yet taken by the dispatcher; beyond this the route answers 503 and
/// Telegram delivers the update again later.
const BACKLOG: usize = 1024;

/// A configured webhook: the public URL, the secret, and the two ends of the update channel.
pub struct Webhook {
    url: url::Url,
    route: String,
    secret: String,
    tx: mpsc::Sender<Update>,
    rx: mpsc::Receiver<Update>,
}

/// The largest update body read (Telegram's updates are a few KiB; axum's default limit).
const MAX_UPDATE_BYTES: usize = 2 * 1024 * 1024;
/// At most one WARN line per this interval about refused requests; the rest are counted.
const REFUSED_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Clone)]
struct RouteState {
    secret: String,
    tx: mpsc::Sender<Update>,
    store: crate::store::Store,
    refused: std::sync::Arc<RefusedLog>,
}

/// Rate limit for the "wrong secret" log line: anyone can send such requests, and a line each
/// would flood the journal.
#[derive(Default)]
struct RefusedLog {
    /// When the last line was written, and how many refusals were not logged since.
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl RefusedLog {
    /// Counts a refusal; returns how many (this one included) the line to write now stands
    /// for, or `None` while inside the interval.
    fn note(&self, now: std::time::Instant) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.1 += 1;
        if st.0.is_some_and(|at| now.duration_since(at) < REFUSED_LOG_INTERVAL) {
            return None;
        }
        let n = st.1;
        *st = (Some(now), 0);
        Some(n)
    }
}

impl Webhook {
    /// `None` in long-polling mode (no `webhook_url`). Errors: the URL fails
    /// [`TelegramConfig::webhook_route`] (config validation reports it first).
    pub fn from_config(cfg: &TelegramConfig) -> anyhow::Result<Option<Webhook>> {
        let Some(route) = cfg.webhook_route().map_err(|m| anyhow::anyhow!("telegram.webhook_url: {m}"))? else {
            return Ok(None);
        };
        let secret = if cfg.webhook_secret.is_empty() {
            crate::domain::random_token()
        } else {
            cfg.webhook_secret.expose().to_string()
        };
        let (tx, rx) = mpsc::channel(BACKLOG);
        Ok(Some(Webhook { url: cfg.webhook_url.parse()?, route, secret, tx, rx }))
    }

    /// The POST route (at the URL's path) to merge into the web listener. Each accepted update
    /// is stored in the durable inbox (`bot::inbox`) before Telegram gets its 200.
    pub fn router(&self, store: crate::store::Store) -> Router {
        Router::new().route(&self.route, post(receive)).with_state(RouteState {
            secret: self.secret.clone(),
            tx: self.tx.clone(),
            store,
            refused: Default::default(),
        })
    }

    /// Sends the updates stored but not handled before the last stop to the dispatcher.
    pub fn replay_task(&self, store: crate::store::Store) -> impl std::future::Future<Output = ()> + Send + 'static {
        let tx = self.tx.clone();
        async move {
            crate::bot::inbox::replay(&store, &tx).await;
        }
    }

    /// A task that calls setWebhook with the URL and the secret, retrying every 10 s until it
    /// succeeds or `shutdown` fires. Pending updates are kept: Telegram held them while the
    /// bot was down and delivers them now.
    pub fn register_task<B>(
        &self,
        bot: B,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static
    where
        B: Requester + Send + Sync + 'static,
        B::SetWebhook: Send,
        B::Err: std::fmt::Display,
    {
        let (url, secret) = (self.url.clone(), self.secret.clone());
        async move {
            loop {
                match bot
                    .set_webhook(url.clone())
                    .secret_token(secret.clone())
                    .allowed_updates(crate::bot::allowed_updates())
                    .await
                {
                    Ok(_) => {
                        tracing::info!(%url, "webhook set; updates arrive over HTTPS");
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, %url, "setWebhook failed; retrying in 10 s"),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
                }
            }
        }
    }

    /// The update listener for the dispatcher (the same channel listener long polling uses);
    /// it ends when the dispatcher stops it.
    pub fn listener(self) -> impl UpdateListener<Err = Infallible> + Send {
        crate::bot::inbox::listener(self.rx)
    }
}

/// Compares without an early exit, so response timing does not reveal how much of a guess matched.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.ct_eq(expected).into()
}

/// The body is read only after the secret header checked out: a stranger's request costs no
/// buffering, and a stranger's slow body holds nothing.
async fn receive(State(st): State<RouteState>, req: axum::extract::Request) -> StatusCode {
    let given = req.headers().get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !same_secret(given, st.secret.as_bytes()) {
        if let Some(n) = st.refused.note(std::time::Instant::now()) {
            tracing::warn!(
                refused = n,
                "webhook requests without the right secret header refused (logged once a minute)"
            );
        }
        return StatusCode::UNAUTHORIZED;
    }
    let body = match axum::body::to_bytes(req.into_body(), MAX_UPDATE_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "webhook: update body unreadable or too large");
            return StatusCode::PAYLOAD_TOO_LARGE;
        }
    };
    let update: Update = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            // Telegram re-sends on any non-2xx; an update we cannot parse would loop forever.
            tracing::error!(error = %e, "webhook: unparsable update dropped");
            return StatusCode::OK;
        }
    };
    // Stored before the 200: after a crash the update is handled from the inbox. An update
    // handled already (Telegram re-sent it) is acknowledged and dropped.
    let id = update.id.0 as i64;
    let json = body.to_vec();
    match st.store.write(move |tx| tx.inbox_put(id, &json)).await {
        Ok(true) => {}
        Ok(false) => return StatusCode::OK,
        Err(e) => {
            tracing::error!(error = %e, "webhook: could not store the update; asking Telegram to retry");
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    match st.tx.try_send(update) {
        Ok(()) => StatusCode::OK,
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::warn!("webhook backlog full: asking Telegram to retry");
            StatusCode::SERVICE_UNAVAILABLE
        }
        Err(mpsc::error::TrySendError::Closed(_)) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_requests_are_logged_once_per_interval() {
        let log = RefusedLog::default();
        let t0 = std::time::Instant::now();
        assert_eq!(log.note(t0), Some(1));
        let logged = (0..1000).filter(|_| log.note(t0).is_some()).count();
        assert_eq!(logged, 0, "a flood writes no further lines inside the interval");
        assert_eq!(log.note(t0 + REFUSED_LOG_INTERVAL), Some(1001), "the next line counts the quiet ones");
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_before_the_body_is_read() {
        use tower::ServiceExt;
        let dir = tempfile::tempdir().expect("tmp");
        let store = crate::store::Store::open(dir.path()).expect("store");
        let cfg = TelegramConfig {
            webhook_url: "https://bot.example.test/tg".into(),
            webhook_secret: crate::config::Secret::new("right"),
            ..TelegramConfig::default()
        };
        let hook = Webhook::from_config(&cfg).expect("config").expect("webhook mode");
        // A body that never arrives: buffering it first would hang this request forever.
        let never =
            axum::body::Body::from_stream(futures_util::stream::pending::<Result<bytes::Bytes, std::io::Error>>());
        let req = axum::http::Request::post("/tg").header(SECRET_HEADER, "wrong").body(never).expect("request");
        let res = tokio::time::timeout(std::time::Duration::from_secs(10), hook.router(store).oneshot(req))
            .await
            .expect("answered without reading the body")
            .expect("infallible");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn secret_comparison() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"", b"abc"));
        assert!(!same_secret(b"abcd", b"abc"));
    }
}
