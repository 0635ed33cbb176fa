//! Command line: `serve`, `sandbox`, `check-config`, `healthcheck`, `backup`, `restore`, `admin …`,
//! `image …`.

use crate::app::{self, Mode, RunningApp};
use crate::config::Config;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Self-hosted Telegram bot appliance for AI media generation.
#[derive(Parser, Debug)]
#[command(name = "mediabot", version, about)]
pub struct Cli {
    /// Config file (default: ./mediabot.toml, then /etc/mediabot/config.toml).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the bot against real Telegram.
    Serve(RunArgs),
    /// Run the bot against the built-in Telegram emulator; chat with it at http://ADDR/sandbox.
    /// Reads a config file only when `--config` names one (never ./mediabot.toml or
    /// /etc/mediabot): demo models and its own data dir (./mediabot-sandbox) otherwise.
    Sandbox(SandboxArgs),
    /// Validate the configuration and exit (exit code 2 names the bad key). ComfyUI workflows
    /// are checked for placeholders the bot does not fill.
    CheckConfig {
        /// Also ask each ComfyUI server (`GET /object_info`) whether it has every node class
        /// and input the workflows use.
        #[arg(long)]
        online: bool,
    },
    /// Operator commands on the database (through the running service, or directly when it is stopped).
    Admin {
        /// Data directory (accepted before or after the admin command).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// GET http://<web.listen>/healthz; exit 0 when the service answers "ok", 1 otherwise.
    Healthcheck,
    /// Write a consistent copy of the database and the media it references into PATH (a new
    /// directory); works while the service runs.
    Backup {
        path: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Replace the data dir's database and media with the backup in PATH (stop the service first).
    Restore {
        path: PathBuf,
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Only the Bot API emulator on ADDR (IP:PORT), with no bot of its own polling it: a fake
    /// Telegram for package tests that run `serve` against it.
    #[command(hide = true)]
    Emulator { listen: std::net::SocketAddr },
    /// Measure the job engine's overhead with a zero-latency provider (see BENCHMARKS.md).
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    BenchQueue(crate::bench::QueueBench),
    /// Seed a large database for the admin panel benchmark (see BENCHMARKS.md).
    #[cfg(feature = "bench")]
    #[command(hide = true)]
    BenchPanelSeed(crate::bench::PanelSeed),
    /// Image operations, the same code the bot runs (no config or database needed).
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Shrink IN to at most --max-bytes for a provider upload, without metadata.
    CompressForApi {
        input: PathBuf,
        output: PathBuf,
        /// Byte limit of the output (default 4 MiB).
        #[arg(long, default_value_t = crate::imaging::API_MAX_BYTES)]
        max_bytes: usize,
    },
    /// Make IN a Telegram photo: upright JPEG, ≤ 2560 px, ≤ 10 MB, no metadata.
    Fit { input: PathBuf, output: PathBuf },
    /// Remove all metadata (lossless for upright JPEGs).
    Strip { input: PathBuf, output: PathBuf },
    /// Enlarge IN 2× or 4× per side (Lanczos, local; not an AI upscale). JPEG out.
    Resize {
        input: PathBuf,
        output: PathBuf,
        /// 2 or 4.
        #[arg(long, default_value_t = 2)]
        factor: u32,
    },
    /// Draw a caption onto IN (JPEG out), styled like the bot's "📝 Add text".
    Overlay {
        input: PathBuf,
        output: PathBuf,
        /// Caption; `\n` in the argument is not special, pass real newlines.
        #[arg(long)]
        text: String,
        /// Style wishes in Russian or English, e.g. "крупный белый текст снизу на чёрной плашке 50%".
        #[arg(long, default_value = "")]
        style: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Web listener address (IP:PORT).
    #[arg(long)]
    pub listen: Option<String>,
    /// Data directory (database and media).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct SandboxArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Allow a listen address other than loopback. The emulator's control API has no
    /// authentication: whoever reaches the address talks as any user and reads every chat.
    #[arg(long)]
    pub i_know_this_is_public: bool,
}

/// Data dir of a sandbox without `--config`: never the service's (or a `serve` run's) data.
pub const SANDBOX_DATA_DIR: &str = "./mediabot-sandbox";

/// Refuses a sandbox listen address that is not loopback unless the operator said otherwise.
/// Errors: the message to print (exit 2).
pub fn check_sandbox_listen(listen: &str, public_ok: bool) -> Result<(), String> {
    let addr: std::net::SocketAddr = listen.parse().map_err(|_| format!("web.listen {listen:?} is not IP:PORT"))?;
    if addr.ip().is_loopback() || public_ok {
        return Ok(());
    }
    Err(format!(
        "refusing to start the sandbox on {addr}: its emulator control API has no authentication, so anyone \
         who reaches it can act as any user and read every chat. Use a loopback address (127.0.0.1), or pass \
         --i-know-this-is-public"
    ))
}

/// Database commands; serializable because the running service executes them for the CLI.
#[derive(Subcommand, Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum AdminCommand {
    /// Recompute every balance from the ledger; exit 1 on any mismatch.
    VerifyLedger,
    /// Check that every library item's file is present in media/ with the right sha256; exit 1
    /// on any missing or damaged file.
    VerifyMedia,
    /// List users with balances.
    ListUsers,
    /// Credit (or with a negative amount, debit) a user.
    AddBalance {
        user: i64,
        #[arg(allow_hyphen_values = true)]
        amount: i64,
        #[arg(long)]
        reason: String,
    },
    /// Ban a user: their messages, buttons and inline queries get one "access suspended"
    /// answer and nothing else (no job, no hold).
    Ban { user: i64 },
    /// Lift a ban.
    Unban { user: i64 },
    /// Set the admin panel password (Argon2 hash in the database). Reads one line from stdin,
    /// so it never lands in the shell history: `printf '%s' "$PW" | mediabot admin set-password`.
    SetPassword {
        /// Accepted for scripts that say so explicitly; stdin is read either way.
        #[arg(long)]
        password_stdin: bool,
        /// The line read from stdin, filled in by the CLI before the command runs (locally or
        /// in the service); never a command-line argument.
        #[arg(skip)]
        #[serde(default)]
        password: crate::config::Secret,
    },
}

fn load(cli: &Cli, args: Option<&RunArgs>, data_dir: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let sandbox = matches!(cli.command, Command::Sandbox(_));
    // A sandbox run on a server must not pick up the service's config (its token, providers
    // and data dir): it reads a file only when told to.
    let file = if sandbox { cli.config.clone() } else { Config::locate(cli.config.as_deref()) };
    let mut cfg = match Config::load(file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("config error: {e}");
            return Err(ExitCode::from(2));
        }
    };
    if sandbox && file.is_none() {
        cfg.storage.data_dir = PathBuf::from(SANDBOX_DATA_DIR);
    }
    if let Some(a) = args {
        if let Some(l) = &a.listen {
            cfg.web.listen = l.clone();
        }
        if let Some(d) = &a.data_dir {
            cfg.storage.data_dir = d.clone();
        }
    }
    if let Some(d) = data_dir {
        cfg.storage.data_dir = d.clone();
    }
    if let Err(e) = cfg.validate() {
        eprintln!("config error: {e}");
        return Err(ExitCode::from(2));
    }
    Ok(cfg)
}

/// What `check-config` finds in the ComfyUI models' workflows beyond `Config::validate`:
/// placeholders the bot does not fill and, `online`, node classes and inputs the model's
/// server lacks (`GET /object_info`, asked once per provider). One line per problem, led by
/// the config key (`models[i].workflow`, or `providers[i]` when a server cannot be asked).
/// ComfyUI-Connect models are asked online only: the saved workflow must exist and carry the
/// `$tag`s of the model's photos (`models[i].endpoint`).
pub async fn check_workflows(cfg: &Config, online: bool) -> Vec<String> {
    use crate::config::ProviderKind;
    use crate::providers::comfyui::{self, ComfyProvider};
    let mut problems = Vec::new();
    let mut servers: std::collections::HashMap<&str, Vec<(String, serde_json::Value)>> = Default::default();
    for (i, m) in cfg.models.iter().enumerate() {
        let Some((pi, p)) = cfg.providers.iter().enumerate().find(|(_, p)| p.id == m.provider) else { continue };
        if p.kind == ProviderKind::ComfyuiConnect && online {
            use crate::providers::comfyui_connect::ComfyConnectProvider;
            let key = format!("models[{i}].endpoint ({})", m.id);
            let images = usize::from(m.image_range().1);
            let found = match ComfyConnectProvider::new(p) {
                Ok(client) => client.check_workflow(&m.endpoint, &m.image_fields, images).await,
                Err(e) => Err(e),
            };
            match found {
                Ok(lines) => problems.extend(lines.into_iter().map(|e| format!("{key}: {e}"))),
                Err(e) => problems.push(format!("{key}: ComfyUI-Connect workflow {}: {e}", m.endpoint)),
            }
        }
        // fal and WaveSpeed models are checked by validate() only: asking them online would
        // need a paid or vendor-specific call per model (WaveSpeed has no schema endpoint in §8).
        if p.kind != ProviderKind::Comfyui {
            continue;
        }
        let key = format!("models[{i}].workflow ({})", m.id);
        // validate() has read and parsed it already; a failure here is a race with an edit.
        let workflow = m
            .workflow
            .as_ref()
            .and_then(|w| std::fs::read_to_string(w).ok())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        let Some(workflow) = workflow else {
            problems.push(format!("{key}: cannot be read"));
            continue;
        };
        problems.extend(comfyui::unknown_placeholders(&workflow).into_iter().map(|e| format!("{key}: {e}")));
        if !online {
            continue;
        }
        if !servers.contains_key(p.id.as_str()) {
            // Every server of a pool must run every workflow: each is asked.
            let mut infos = Vec::new();
            match ComfyProvider::new(p) {
                Ok(client) => {
                    for (si, server) in client.server_keys().iter().enumerate() {
                        match client.object_info(si).await {
                            Ok(info) => infos.push((server.clone(), info)),
                            Err(e) => problems
                                .push(format!("providers[{pi}] ({}) {server}: GET /object_info failed: {e}", p.id)),
                        }
                    }
                }
                Err(e) => problems.push(format!("providers[{pi}] ({}): {e}", p.id)),
            }
            servers.insert(p.id.as_str(), infos);
        }
        let infos = servers.get(p.id.as_str()).map(Vec::as_slice).unwrap_or_default();
        for (server, info) in infos {
            // One server: the lines read as before; a pool names the server lacking the node.
            let at = if infos.len() > 1 || p.servers().len() > 1 { format!(" [{server}]") } else { String::new() };
            problems.extend(
                comfyui::object_info_mismatches(&workflow, info).into_iter().map(|e| format!("{key}{at}: {e}")),
            );
        }
    }
    problems
}

/// One `check-config` line per ComfyUI provider naming its servers, without credentials
/// (`provider gpus: 3 ComfyUI servers: http://gpu1:8188, http://gpu2:8188, http://gpu3:8188`).
pub fn server_lines(cfg: &Config) -> Vec<String> {
    cfg.providers
        .iter()
        .filter(|p| p.kind == crate::config::ProviderKind::Comfyui)
        .map(|p| {
            let servers: Vec<String> = p.servers().iter().map(|u| crate::config::redacted_url(u)).collect();
            let noun = if servers.len() == 1 { "server" } else { "servers" };
            format!("provider {}: {} ComfyUI {noun}: {}", p.id, servers.len(), servers.join(", "))
        })
        .collect()
}

/// Entry point; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init();
    match &cli.command {
        #[cfg(feature = "bench")]
        Command::BenchQueue(opts) => {
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(crate::bench::run(opts.clone())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        #[cfg(feature = "bench")]
        Command::BenchPanelSeed(opts) => match crate::bench::seed_panel(opts) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::CheckConfig { online } => match load(&cli, None, None) {
            Ok(cfg) => {
                let problems = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt.block_on(check_workflows(&cfg, *online)),
                    Err(e) => vec![format!("cannot start the checks: {e}")],
                };
                if !problems.is_empty() {
                    for p in &problems {
                        eprintln!("config error: {p}");
                    }
                    return ExitCode::from(2);
                }
                let mut out = std::io::stdout();
                let _ = writeln!(
                    out,
                    "config OK: {} provider(s), {} model(s), data dir {}",
                    cfg.providers.len(),
                    cfg.models.len(),
                    cfg.storage.data_dir.display()
                );
                for line in server_lines(&cfg) {
                    let _ = writeln!(out, "{line}");
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Serve(a) | Command::Sandbox(SandboxArgs { run: a, .. }) => {
            let cfg = match load(&cli, Some(a), None) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Command::Sandbox(s) = &cli.command {
                if let Err(e) = check_sandbox_listen(&cfg.web.listen, s.i_know_this_is_public) {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
            let mode = if matches!(cli.command, Command::Sandbox(_)) { Mode::Sandbox } else { Mode::Serve };
            match run(cfg, mode) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {}", format!("{e:#}").replace(['\n', '\r'], " "));
                    ExitCode::FAILURE
                }
            }
        }
        Command::Image { command } => match image(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // One line, for scripts: no chain dump, no backtrace.
                eprintln!("error: {}", format!("{e:#}").replace(['\n', '\r'], " "));
                ExitCode::from(2)
            }
        },
        Command::Admin { data_dir, command } => {
            let cfg = match load(&cli, None, data_dir.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let mut command = command.clone();
            if let AdminCommand::SetPassword { password, .. } = &mut command {
                let mut line = String::new();
                if let Err(e) = std::io::stdin().read_line(&mut line) {
                    eprintln!("error: read the password from stdin: {e}");
                    return ExitCode::FAILURE;
                }
                *password = crate::config::Secret::new(line.trim_end_matches(['\n', '\r']));
            }
            report(crate::control::admin(&cfg, command))
        }
        Command::Healthcheck => match load(&cli, None, None) {
            Ok(cfg) => healthcheck(&cfg),
            Err(code) => code,
        },
        Command::Backup { path, data_dir } => match load(&cli, None, data_dir.as_ref()) {
            Ok(cfg) => report(crate::control::backup(&cfg.storage.data_dir, path)),
            Err(code) => code,
        },
        Command::Restore { path, data_dir } => match load(&cli, None, data_dir.as_ref()) {
            Ok(cfg) => report(crate::control::restore(&cfg.storage.data_dir, path)),
            Err(code) => code,
        },
        Command::Emulator { listen } => match emulator(*listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Prints a command's output and turns its result into the exit code.
fn report(result: anyhow::Result<(u8, String)>) -> ExitCode {
    match result {
        Ok((code, text)) => {
            let mut out = std::io::stdout();
            let _ = out.write_all(text.as_bytes());
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn image(cmd: &ImageCommand) -> anyhow::Result<()> {
    use crate::imaging;
    use anyhow::Context;
    let limits = imaging::Limits::default();
    let (input, output) = match cmd {
        ImageCommand::CompressForApi { input, output, .. }
        | ImageCommand::Fit { input, output }
        | ImageCommand::Strip { input, output }
        | ImageCommand::Resize { input, output, .. }
        | ImageCommand::Overlay { input, output, .. } => (input, output),
    };
    if let ImageCommand::Overlay { style, .. } = cmd {
        let unknown = imaging::parse_wishes(style).unknown;
        if !unknown.is_empty() {
            anyhow::bail!("unknown style words: {}", unknown.join(", "));
        }
    }
    // Refuse an oversized file before reading it into memory, as the bot refuses a download.
    let len = std::fs::metadata(input).with_context(|| format!("read {}", input.display()))?.len();
    if len > limits.max_bytes as u64 {
        let e = imaging::ImagingError::TooLarge {
            bytes: usize::try_from(len).unwrap_or(usize::MAX),
            max: limits.max_bytes,
        };
        return Err(anyhow::Error::new(e).context(input.display().to_string()));
    }
    let bytes = std::fs::read(input).with_context(|| format!("read {}", input.display()))?;
    let out = match cmd {
        ImageCommand::CompressForApi { max_bytes, .. } => {
            // Streamed into the file: under the limit the metadata-free copy never exists in
            // memory.
            let mut file = FileOnFirstWrite { path: output, file: None };
            imaging::compress_for_api_to(&bytes, *max_bytes, &limits, &mut file)
                .with_context(|| input.display().to_string())?;
            return file.finish().with_context(|| format!("write {}", output.display()));
        }
        ImageCommand::Fit { .. } => imaging::fit_for_telegram_photo(&bytes, &limits),
        ImageCommand::Strip { .. } => imaging::strip_metadata(&bytes, &limits),
        ImageCommand::Resize { factor, .. } => imaging::enlarge(&bytes, *factor, &limits),
        ImageCommand::Overlay { text, style, .. } => {
            imaging::overlay_text(&bytes, text, &imaging::parse_wishes(style).style, &limits)
        }
    }
    .with_context(|| input.display().to_string())?;
    std::fs::write(output, out).with_context(|| format!("write {}", output.display()))
}

/// A file created on the first write, so a command that fails before it has output leaves no
/// file behind (scripts test for the output file).
struct FileOnFirstWrite<'a> {
    path: &'a std::path::Path,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl FileOnFirstWrite<'_> {
    /// Flushes the file (creating it empty if nothing was written).
    fn finish(mut self) -> std::io::Result<()> {
        use std::io::Write;
        if self.file.is_none() {
            std::fs::File::create(self.path)?;
        }
        self.flush()
    }
}

impl std::io::Write for FileOnFirstWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.file.is_none() {
            self.file = Some(std::io::BufWriter::new(std::fs::File::create(self.path)?));
        }
        self.file.as_mut().map_or(Ok(0), |file| file.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().map_or(Ok(()), std::io::Write::flush)
    }
}

/// One plain HTTP/1.0 request to the configured listen address. No name resolution: the
/// address is an IP literal, and a wildcard bind is reached on loopback.
fn healthcheck(cfg: &Config) -> ExitCode {
    use std::io::Read;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
    use std::time::Duration;
    let Ok(mut addr) = cfg.web.listen.parse::<SocketAddr>() else {
        eprintln!("healthcheck: web.listen is not IP:PORT");
        return ExitCode::FAILURE;
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V6(Ipv6Addr::LOCALHOST) });
    }
    let probe = || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(format!("GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    };
    match probe() {
        Ok(resp) if resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200") => {
            let _ = writeln!(std::io::stdout(), "healthy: http://{addr}/healthz");
            ExitCode::SUCCESS
        }
        Ok(resp) => {
            eprintln!("unhealthy: http://{addr}/healthz answered {}", resp.lines().next().unwrap_or(""));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: http://{addr}/healthz: {e}");
            ExitCode::FAILURE
        }
    }
}

fn emulator(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        tracing::info!(addr = %listener.local_addr()?, "Bot API emulator up (no bot attached)");
        let router = crate::emulator::Emulator::new()
            .router()
            .layer(axum::middleware::from_fn(crate::web::security_headers))
            .route("/healthz", axum::routing::get(|| async { "ok" }));
        axum::serve(listener, router).with_graceful_shutdown(RunningApp::signals()).await?;
        Ok(())
    })
}

fn run(cfg: Config, mode: Mode) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let sandbox = matches!(mode, Mode::Sandbox);
        let signals = RunningApp::signals();
        let running = app::start(cfg, mode).await?;
        if sandbox {
            let mut err = std::io::stderr();
            let _ = writeln!(err, "\n  mediabot sandbox: open http://{}/sandbox to chat with the bot\n", running.addr);
        }
        let fatal = running.health.fatal();
        let failed = tokio::select! {
            _ = signals => false,
            _ = fatal.cancelled() => true,
        };
        tracing::info!("shutting down");
        running.stop().await;
        // Non-zero: systemd's Restart=on-failure starts a fresh process.
        if failed {
            anyhow::bail!("the bot stopped working (see the log above); exiting for a restart")
        }
        Ok(())
    })
}
