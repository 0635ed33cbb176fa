//! Wiring and lifecycle: opens the store, builds providers, the job engine, the bot and the
//! web listener, and stops them all from one shutdown signal.

use crate::billing::Billing;
use crate::bot::dialogue::RedbDialogues;
use crate::bot::{self, BotCtx, TgBot, notifier::BotNotifier};
use crate::catalog::Catalog;
use crate::config::{Config, ProviderKind};
use crate::emulator::Emulator;
use crate::health::{BotState, Health};
use crate::jobs::JobEngine;
use crate::library::Library;
use crate::providers::{
    DynProvider, comfyui::ComfyProvider, demo::DemoProvider, fal::FalProvider, wavespeed::WavespeedProvider,
};
use crate::store::Store;
use anyhow::Context;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use teloxide::dispatching::Dispatcher;
use teloxide::prelude::*;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How the app reaches Telegram.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Real Telegram (or a local Bot API server) at `telegram.api_url` with the configured token.
    Serve,
    /// The built-in emulator on the web listener; no token, no internet.
    Sandbox,
    /// An emulator running elsewhere (tests keep one alive across app restarts).
    #[allow(dead_code, reason = "tests point the bot at an emulator they own")]
    External { api_url: String },
}

/// A started app.
pub struct RunningApp {
    /// Address the web listener is bound to.
    pub addr: SocketAddr,
    pub store: Store,
    #[allow(dead_code, reason = "kept alive for the app's lifetime; tests read it")]
    pub emulator: Option<Emulator>,
    shutdown: CancellationToken,
    /// What `/healthz` reports; its fatal switch ends `serve`.
    pub health: Arc<Health>,
    tasks: Vec<JoinHandle<()>>,
}

/// Token the bot uses against the emulator (any token works there).
pub const SANDBOX_TOKEN: &str = "1000000:SANDBOX";

fn build_providers(config: &Config) -> anyhow::Result<HashMap<String, DynProvider>> {
    let mut out: HashMap<String, DynProvider> = HashMap::new();
    for p in &config.providers {
        let provider: DynProvider = match p.kind {
            ProviderKind::Fal => Arc::new(FalProvider::new(p).with_context(|| format!("provider {}", p.id))?),
            ProviderKind::Comfyui => Arc::new(ComfyProvider::new(p).with_context(|| format!("provider {}", p.id))?),
            ProviderKind::Wavespeed => {
                Arc::new(WavespeedProvider::new(p).with_context(|| format!("provider {}", p.id))?)
            }
            ProviderKind::Demo => Arc::new(DemoProvider::new(&p.id, Duration::from_millis(p.poll_interval_ms))),
            ProviderKind::Openai => Arc::new(
                crate::providers::openai::OpenaiProvider::new(p).with_context(|| format!("provider {}", p.id))?,
            ),
            ProviderKind::Gemini => Arc::new(
                crate::providers::gemini::GeminiProvider::new(p).with_context(|| format!("provider {}", p.id))?,
            ),
            ProviderKind::Replicate => Arc::new(
                crate::providers::replicate::ReplicateProvider::new(p).with_context(|| format!("provider {}", p.id))?,
            ),
            ProviderKind::Huggingface => Arc::new(
                crate::providers::huggingface::HuggingfaceProvider::new(p)
                    .with_context(|| format!("provider {}", p.id))?,
            ),
            ProviderKind::ComfyuiConnect => Arc::new(
                crate::providers::comfyui_connect::ComfyConnectProvider::new(p)
                    .with_context(|| format!("provider {}", p.id))?,
            ),
        };
        out.insert(p.id.clone(), provider);
    }
    Ok(out)
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let dir = config.storage.data_dir.clone();
    // A previous instance in this process may still be closing its last blocking call.
    for attempt in 0..50 {
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || Store::open(&d)).await? {
            Err(crate::store::StoreError::AlreadyOpen(_)) if attempt < 49 && cfg!(test) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return Ok(other?),
        }
    }
    unreachable!("the loop returns on its last attempt")
}

/// Starts everything and returns once the listener is bound and the bot is polling.
pub async fn start(config: Config, mode: Mode) -> anyhow::Result<RunningApp> {
    start_with_clock(config, mode, crate::billing::levels::Clock::system()).await
}

/// [`start`] with the clock daily quotas and subscriptions read (tests move it).
pub async fn start_with_clock(
    mut config: Config,
    mode: Mode,
    clock: crate::billing::levels::Clock,
) -> anyhow::Result<RunningApp> {
    if matches!(mode, Mode::Sandbox) {
        config = config.with_demo();
    }
    let config = Arc::new(config);
    let store = open_store(&config).await?;
    tracing::info!(data_dir = %config.storage.data_dir.display(), "store open");
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();

    let addr: SocketAddr = config.web.listen.parse().context("web.listen")?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let emulator = match &mode {
        // Continues the ids of earlier sandboxes on this data dir: the bot remembers them.
        Mode::Sandbox => Some(Emulator::persistent(&config.storage.data_dir).map_err(anyhow::Error::msg)?),
        _ => None,
    };
    if let Some(emu) = emulator.as_ref().filter(|_| !addr.ip().is_loopback()) {
        emu.allow_any_host(); // `sandbox` refuses such an address without --i-know-this-is-public
    }
    {
        let (st, dir) = (store.clone(), config.storage.data_dir.clone());
        let generated = tokio::task::spawn_blocking(move || crate::admin::ensure_password(&st, &dir)).await??;
        if let Some(path) = generated {
            tracing::warn!(path = %path.display(), "no admin password was set: generated one and wrote it to this file (mode 600); change it with `mediabot admin set-password`");
        }
    }
    let bot_runs = match &mode {
        Mode::Serve => !config.telegram.token.is_empty(),
        Mode::Sandbox | Mode::External { .. } => true,
    };
    // The sandbox's built-in emulator is polled; elsewhere a configured URL means webhook mode.
    let webhook = match mode {
        Mode::Sandbox => None,
        _ if !bot_runs => None,
        _ => crate::webhook::Webhook::from_config(&config.telegram)?,
    };
    let catalog = {
        let (st, cfg) = (store.clone(), config.clone());
        tokio::task::spawn_blocking(move || Catalog::open(st, &cfg)).await??
    };
    // The panel owns `/healthz`; the emulator (sandbox only) adds its routes beside it.
    let health = Arc::new(Health::new(if bot_runs { BotState::Connecting } else { BotState::NoToken }));
    let web_state = crate::web::WebState::new(store.clone(), config.clone(), catalog.clone(), health.clone());
    let mut router = crate::web::router(web_state.clone());
    if let Some(w) = &webhook {
        router = router.merge(w.router(store.clone()));
    }
    // Crypto Pay needs the bot (its payers are told through it); its webhook shares the
    // listener with Telegram's, so one public URL serves both.
    let crypto = match config.billing.crypto_pay.clone().filter(|_| bot_runs) {
        Some(cfg) => {
            Some(crate::billing::crypto_pay::CryptoPay::new(Billing::new(store.clone(), config.billing.clone()), cfg)?)
        }
        None => None,
    };
    if let Some(cp) = crypto.as_ref().filter(|c| c.webhook_enabled()) {
        router = router.merge(crate::web::crypto_pay::router(cp.clone()));
    }
    if let Some(emu) = &emulator {
        router = router
            .merge(emu.router().layer(axum::middleware::from_fn(crate::web::security_headers)))
            .route("/", axum::routing::get(|| async { axum::response::Redirect::temporary("/sandbox") }));
    }
    let limits = crate::web::listener::ListenerLimits::default();
    tasks.push(tokio::spawn(crate::web::listener::serve(listener, router, limits, shutdown.clone())));
    tracing::info!(%addr, "web listener up");
    {
        let (admin, store, dir, token) =
            (web_state.admin.clone(), store.clone(), config.storage.data_dir.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::control::serve(admin, store, dir, token).await {
                tracing::error!(error = %e, "control socket failed; admin and backup need the service stopped");
            }
        }));
    }

    if !bot_runs {
        // A fresh package install starts the service before anyone has a token: stay up with
        // the admin panel instead of exiting into a restart loop.
        tracing::warn!(
            panel = %format!("http://{addr}/admin"),
            password_file = %config.storage.data_dir.join("admin-password").display(),
            "no bot token configured: running the admin panel only. To start the bot: create one \
             with @BotFather (/newbot), put its token in /etc/mediabot/env as \
             MEDIABOT_TELEGRAM__TOKEN=123456789:AA... (or telegram.token in /etc/mediabot/config.toml), \
             configure [[providers]] and [[models]] in /etc/mediabot/config.toml, check with \
             `mediabot check-config`, then `systemctl restart mediabot`"
        );
        let dir = config.storage.data_dir.clone();
        tasks.push(tokio::spawn(storage_watchdog(store.clone(), dir, health.clone(), None, shutdown.clone())));
        return Ok(RunningApp { addr, store, emulator, shutdown, health, tasks });
    }
    let (api_url, token) = match &mode {
        Mode::Serve => (config.telegram.api_url.clone(), config.telegram.token.expose().to_string()),
        Mode::Sandbox => (format!("http://{addr}"), SANDBOX_TOKEN.to_string()),
        Mode::External { api_url } => (api_url.clone(), SANDBOX_TOKEN.to_string()),
    };
    if let Some(bot_id) = token.split(':').next().and_then(|s| s.parse::<u64>().ok()) {
        if store.write(move |tx| tx.bind_bot(bot_id)).await? {
            tracing::warn!(bot_id, "bot token changed: forgot the previous bot's update ids");
        }
    }
    // hickory: a static glibc binary must not resolve names through NSS (build-notes.md).
    let client = teloxide::net::default_reqwest_settings().hickory_dns(true).build()?;
    let raw = teloxide::Bot::with_client(token, client).set_api_url(api_url.parse().context("telegram api url")?);
    let limits = if config.telegram.throttle {
        teloxide::adaptors::throttle::Limits::default()
    } else {
        teloxide::adaptors::throttle::Limits {
            messages_per_sec_chat: 1000,
            messages_per_min_chat: 60_000,
            messages_per_min_channel_or_supergroup: 60_000,
            messages_per_sec_overall: 1000,
        }
    };
    let tg: TgBot = teloxide::adaptors::Throttle::new_spawn(raw.clone(), limits);

    let providers = build_providers(&config)?;
    let notifier = Arc::new(BotNotifier::new(tg.clone(), &config));
    {
        let (alerts, dir): (Arc<dyn crate::jobs::Notifier>, _) = (notifier.clone(), config.storage.data_dir.clone());
        tasks.push(tokio::spawn(storage_watchdog(store.clone(), dir, health.clone(), Some(alerts), shutdown.clone())));
    }
    let levels = Arc::new(crate::billing::levels::Levels::new(&config, clock));
    let jobs = JobEngine::with_levels(store.clone(), &config, catalog.clone(), providers, notifier, levels.clone())?;
    let billing = Billing::new(store.clone(), config.billing.clone()).with_levels(levels);
    {
        // Expired subscriptions already read as the default level; this stores it (and drops
        // quota counters of past days).
        let (billing, token) = (billing.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move { billing.run_level_sweep(token).await }));
    }
    {
        let jobs = jobs.clone();
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move { jobs.run(token).await }));
    }
    {
        // Started broadcasts (also those a restart interrupted) go out from here.
        let jobs = jobs.clone();
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move { jobs.run_broadcasts(token).await }));
    }
    // The panel's cancel / retry / broadcast actions need the engine from now on.
    let _ = web_state.jobs.set(jobs.clone());

    // Refunds need Telegram: from now on the panel and `/refund` can make them, and the
    // outbox finishes any a crash left pending (README "Refunds").
    web_state.admin.set_stars(Arc::new(bot::stars::BotStars::new(tg.clone(), &config)));
    {
        let (admin, token) = (web_state.admin.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move { admin.run_refund_outbox(token).await }));
    }

    if let Some(cp) = &crypto {
        cp.set_notifier(Arc::new(bot::handlers::pay::CryptoCredited::new(tg.clone(), &config)));
        tasks.push(tokio::spawn(cp.clone().run_poller(shutdown.clone())));
    }

    let dialogues = RedbDialogues::new(store.clone());
    let ctx = Arc::new(BotCtx {
        config: config.clone(),
        billing,
        jobs,
        library: Library::new(store.clone()),
        // The panel's admin service: one instance, so refunds from the panel and `/refund`
        // share the Stars gateway set below.
        admin: web_state.admin.clone(),
        catalog,
        store: store.clone(),
        dialogues: dialogues.clone(),
        own_username: Arc::default(),
        crypto,
    });
    let dispatcher = Dispatcher::builder(tg.clone(), bot::schema())
        .dependencies(dptree::deps![ctx, dialogues])
        .default_handler(|_| async {})
        .error_handler(teloxide::error_handlers::LoggingErrorHandler::with_custom_text("update handler failed"))
        .build();
    let updates = match webhook {
        Some(webhook) => {
            tasks.push(tokio::spawn(webhook.replay_task(store.clone())));
            Updates::Webhook(webhook)
        }
        None => Updates::Polling { timeout: Duration::from_secs(config.telegram.poll_timeout_secs.into()) },
    };
    let run = BotRun { raw, tg, store: store.clone(), health: health.clone(), shutdown: shutdown.clone() };
    tasks.push(tokio::spawn(run.run(dispatcher, updates)));
    tracing::info!(mode = ?mode, "bot starting");
    Ok(RunningApp { addr, store, emulator, shutdown, health, tasks })
}

/// How often a read-only store checks whether the data dir takes writes again.
const SPACE_CHECK_EVERY: Duration = Duration::from_secs(5);

/// After a failed database write (a full disk): `/healthz` says `read_only`, the admins get
/// one alert, and once the data dir takes a test write again the process exits non-zero
/// ([`Health::fail`]) so systemd restarts it with the database opened afresh — redb refuses
/// every write after an I/O error until then. Waiting for room first avoids a restart loop.
async fn storage_watchdog(
    store: Store,
    data_dir: std::path::PathBuf,
    health: Arc<Health>,
    alerts: Option<Arc<dyn crate::jobs::Notifier>>,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = store.io_watch().wait() => {}
    }
    health.set_db(crate::health::DbState::ReadOnly);
    if let Some(n) = alerts {
        n.admin_alert(
            "⚠️ mediabot: a database write failed (is the disk full?). The bot tells users it is out of storage and \
             charges nothing; it restarts by itself once the data directory has room again.",
        )
        .await;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SPACE_CHECK_EVERY) => {}
        }
        let dir = data_dir.clone();
        if tokio::task::spawn_blocking(move || can_write(&dir)).await.unwrap_or(false) {
            health.fail("the data directory takes writes again: restarting to reopen the database");
            return;
        }
    }
}

/// Whether `dir` takes a 1 MiB write that reaches the disk (then removed).
fn can_write(dir: &std::path::Path) -> bool {
    use std::io::Write;
    let path = dir.join(".space-check");
    let ok = std::fs::File::create(&path)
        .and_then(|mut f| {
            f.write_all(&vec![0u8; 1 << 20])?;
            f.sync_all()
        })
        .is_ok();
    let _ = std::fs::remove_file(&path);
    ok
}

/// Where updates come from.
enum Updates {
    Polling { timeout: Duration },
    Webhook(crate::webhook::Webhook),
}

/// The bot's life after `start` returned: connect to the Bot API, then dispatch until shutdown.
struct BotRun {
    raw: teloxide::Bot,
    tg: TgBot,
    store: Store,
    health: Arc<Health>,
    shutdown: CancellationToken,
}

/// Longest wait between two `getMe` attempts while the Bot API is unreachable.
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(60);

impl BotRun {
    /// Waits for the Bot API, then runs the dispatcher on `updates`. The dispatcher (or the
    /// poller feeding it) ending while no shutdown was asked for is fatal ([`Health::fail`]):
    /// a process that stays up without a bot would never be restarted.
    async fn run(
        self,
        mut dispatcher: Dispatcher<TgBot, bot::BotError, teloxide::dispatching::DefaultKey>,
        updates: Updates,
    ) {
        if !self.connect().await {
            return;
        }
        if let Err(e) = bot::set_commands(&self.tg).await {
            tracing::warn!(error = %e, "setMyCommands failed");
        }
        let errors = teloxide::error_handlers::LoggingErrorHandler::with_custom_text("update listener");
        let dispatched = match updates {
            Updates::Webhook(webhook) => {
                // Like a failed poll, a failed setWebhook is retried, not fatal.
                tokio::spawn(webhook.register_task(self.raw.clone(), self.shutdown.clone()));
                self.health.set_bot(BotState::Webhook);
                dispatcher.try_dispatch_with_listener(webhook.listener(), errors).await
            }
            Updates::Polling { timeout } => {
                // Long polling through the durable inbox (bot::inbox): received updates survive a crash.
                if let Err(e) = self.raw.delete_webhook().await {
                    tracing::warn!(error = %e, "deleteWebhook failed");
                }
                let (update_tx, update_rx) = tokio::sync::mpsc::channel(256);
                let (store, shutdown, health, raw) =
                    (self.store.clone(), self.shutdown.clone(), self.health.clone(), self.raw.clone());
                tokio::spawn(async move {
                    bot::inbox::run_poller(raw, store, timeout, update_tx, shutdown.clone()).await;
                    if !shutdown.is_cancelled() {
                        health.fail("the getUpdates poller stopped");
                    }
                });
                self.health.set_bot(BotState::Polling);
                // The poller ends at shutdown, which closes the channel: the dispatcher's
                // stream ends and it returns by itself (no shutdown token to race with).
                dispatcher.try_dispatch_with_listener(bot::inbox::listener(update_rx), errors).await
            }
        };
        if let Err(e) = dispatched {
            tracing::error!(error = %e, "the dispatcher could not start");
        }
        if !self.shutdown.is_cancelled() {
            self.health.fail("the update dispatcher stopped");
        }
    }

    /// Calls `getMe` until the Bot API answers: 1 s, 2 s, 4 s … at most [`CONNECT_BACKOFF_MAX`]
    /// apart, each failure logged once with the wait that follows. False when shutdown came
    /// first or Telegram refused the token (a config error no retry can fix).
    async fn connect(&self) -> bool {
        let mut wait = Duration::from_secs(1);
        loop {
            let attempt = tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                r = self.raw.get_me().send() => r,
            };
            match attempt {
                Ok(me) => {
                    tracing::info!(username = %me.username(), "connected to the Bot API");
                    return true;
                }
                Err(teloxide::RequestError::Api(teloxide::ApiError::InvalidToken)) => {
                    tracing::error!(
                        "the Bot API refused telegram.token (401): fix MEDIABOT_TELEGRAM__TOKEN and restart; \
                         the admin panel keeps running"
                    );
                    self.health.set_bot(BotState::Down);
                    return false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "the Bot API is unreachable; retrying");
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(CONNECT_BACKOFF_MAX);
        }
    }
}

impl RunningApp {
    /// Stops taking updates, stops workers (their state is persisted) and the listener, and
    /// waits for all of it; the database is closed when this returns.
    pub async fn stop(self) {
        self.shutdown.cancel();
        // systemd's TimeoutStopSec is 30 s: everything together gets 25 s.
        let all = futures_util::future::join_all(self.tasks);
        if tokio::time::timeout(Duration::from_secs(25), all).await.is_err() {
            tracing::warn!("some tasks did not stop in 25 s; their jobs resume on the next start");
        }
        drop(self.store);
        tracing::info!("stopped");
    }

    /// Installs the SIGTERM and SIGINT handlers now and returns what resolves on either.
    /// Call it before starting anything: a signal that arrives before the handler exists
    /// kills the process (the default action) instead of stopping it cleanly.
    pub fn signals() -> impl std::future::Future<Output = ()> + Send {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let term = signal(SignalKind::terminate());
            let int = signal(SignalKind::interrupt());
            async move {
                match (term, int) {
                    (Ok(mut t), Ok(mut i)) => {
                        tokio::select! {
                            _ = t.recv() => {}
                            _ = i.recv() => {}
                        }
                    }
                    _ => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            }
        }
        #[cfg(not(unix))]
        async move {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
