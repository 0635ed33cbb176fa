//! Wiring and lifecycle: opens the store, builds providers, the job engine, the bot and the
//! web listener, and stops them all from one shutdown signal.

use crate::billing::Billing;
use crate::bot::{self, BotCtx, TgBot, notifier::BotNotifier};
use crate::config::{Config, ProviderKind};
use crate::emulator::Emulator;
use crate::jobs::JobEngine;
use crate::providers::{DynProvider, comfyui::ComfyProvider, demo::DemoProvider, fal::FalProvider};
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
            ProviderKind::Demo => Arc::new(DemoProvider::new(&p.id, Duration::from_millis(p.poll_interval_ms))),
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
pub async fn start(mut config: Config, mode: Mode) -> anyhow::Result<RunningApp> {
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
        let generated = tokio::task::spawn_blocking(move || crate::web::auth::ensure_password(&st, &dir)).await??;
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
    // The panel owns `/healthz`; the emulator (sandbox only) adds its routes beside it.
    let web_state = crate::web::WebState::new(store.clone(), config.clone());
    let mut router = crate::web::router(web_state.clone());
    if let Some(w) = &webhook {
        router = router.merge(w.router(store.clone()));
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
        let (store, dir, token) = (store.clone(), config.storage.data_dir.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::control::serve(store, dir, token).await {
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
        return Ok(RunningApp { addr, store, emulator, shutdown, tasks });
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
    let jobs = JobEngine::new(store.clone(), &config, providers, notifier)?;
    let billing = Billing::new(store.clone(), config.billing.clone());
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

    if let Err(e) = bot::set_commands(&tg).await {
        tracing::warn!(error = %e, "setMyCommands failed");
    }
    let ctx = Arc::new(BotCtx { config: config.clone(), billing, jobs, store: store.clone() });
    let mut dispatcher = Dispatcher::builder(tg.clone(), bot::schema())
        .dependencies(dptree::deps![ctx])
        .default_handler(|_| async {})
        .error_handler(teloxide::error_handlers::LoggingErrorHandler::with_custom_text("update handler failed"))
        .build();
    let dtoken = dispatcher.shutdown_token();
    {
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            token.cancelled().await;
            // The dispatcher may still be starting; retry until it accepts the shutdown.
            loop {
                match dtoken.shutdown() {
                    Ok(f) => {
                        f.await;
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }));
    }
    let listener_errors = teloxide::error_handlers::LoggingErrorHandler::with_custom_text("update listener");
    match webhook {
        Some(webhook) => {
            // Like a failed poll, an unreachable Bot API at start is retried, not fatal.
            let (bot, token) = (raw.clone(), shutdown.clone());
            tasks.push(tokio::spawn(webhook.replay_task(store.clone())));
            let register = webhook.register_task(bot, token);
            tasks.push(tokio::spawn(register));
            tasks.push(tokio::spawn(async move {
                dispatcher.dispatch_with_listener(webhook.listener(), listener_errors).await;
            }));
        }
        None => {
            // Long polling through the durable inbox (bot::inbox): received updates survive a crash.
            if let Err(e) = raw.delete_webhook().await {
                tracing::warn!(error = %e, "deleteWebhook failed");
            }
            let (update_tx, update_rx) = tokio::sync::mpsc::channel(256);
            tasks.push(tokio::spawn(bot::inbox::run_poller(
                raw,
                store.clone(),
                Duration::from_secs(config.telegram.poll_timeout_secs.into()),
                update_tx,
                shutdown.clone(),
            )));
            let listener = bot::inbox::listener(update_rx);
            tasks.push(tokio::spawn(async move {
                dispatcher.dispatch_with_listener(listener, listener_errors).await;
            }));
        }
    }
    tracing::info!(mode = ?mode, "bot started");
    Ok(RunningApp { addr, store, emulator, shutdown, tasks })
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

    /// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
    pub async fn wait_for_signal() {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
    }
}
