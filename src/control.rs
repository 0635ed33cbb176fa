//! Operator commands (`admin …`, `backup`) that work whether or not the service is running.
//!
//! redb lets one process open a database, so while the service runs it listens on a unix
//! socket in the data dir (mode 600) and runs the command itself; when the database is free
//! the CLI opens it directly. [`run`] hides which, so the operator never has to know. The socket
//! is authenticated twice: its mode lets only the service user (and root) connect, and the
//! server checks the peer's uid (`SO_PEERCRED`) against its own and root.

use crate::admin::{Actor, Admin};
use crate::catalog::Catalog;
use crate::cli::AdminCommand;
use crate::config::Config;
use crate::domain::{Credits, UserId};
use crate::store::backup::{BackupSummary, MediaCheck};
use crate::store::{Store, StoreError};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Socket file name inside the data dir.
pub const SOCKET: &str = "control.sock";

/// One request over the control socket (a JSON line).
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Admin(AdminCommand),
    /// Write a backup into a fresh directory under the data dir; the CLI moves it into place
    /// (the sandboxed service can write only its state directory).
    Backup,
}

/// The answer: what to print and the exit code.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    pub code: u8,
    pub output: String,
    /// For `Backup`: where the service staged the copy.
    pub staged: Option<PathBuf>,
}

/// Runs an admin command against an open store; returns the exit code and the text to print.
/// Changes go through the admin service with actor `cli`, so each writes its audit entry.
pub async fn exec_admin(admin: &Admin, store: &Store, cmd: &AdminCommand) -> anyhow::Result<(u8, String)> {
    use std::fmt::Write as _;
    let mut out = String::new();
    match cmd {
        AdminCommand::VerifyLedger => {
            let (problems, users) =
                store.read(|rx| Ok::<_, StoreError>((crate::billing::verify(rx)?, rx.find_users()?.len()))).await?;
            if problems.is_empty() {
                writeln!(out, "ledger OK: {users} user(s), every balance matches its ledger")?;
                Ok((0, out))
            } else {
                for p in &problems {
                    writeln!(out, "user {}: {}", p.user.0, p.problem)?;
                }
                writeln!(out, "ledger MISMATCH: {} problem(s)", problems.len())?;
                Ok((1, out))
            }
        }
        AdminCommand::VerifyMedia => {
            let st = store.clone();
            let check = tokio::task::spawn_blocking(move || st.verify_media()).await??;
            describe_media(&check, &mut out);
            Ok((u8::from(!check.missing.is_empty() || !check.corrupt.is_empty()), out))
        }
        AdminCommand::ListUsers => {
            for u in store.read(|rx| rx.find_users()).await? {
                let banned = if u.banned { "\tbanned" } else { "" };
                writeln!(
                    out,
                    "{}\t@{}\t{}\tbalance={}\theld={}{banned}",
                    u.id.0,
                    u.username.as_deref().unwrap_or("-"),
                    u.first_name,
                    u.balance,
                    u.held
                )?;
            }
            Ok((0, out))
        }
        AdminCommand::SetPassword { password, .. } => {
            admin.set_password(Actor::Cli, password.clone()).await?;
            writeln!(out, "admin password set; panel sessions already open stay valid until they expire")?;
            Ok((0, out))
        }
        AdminCommand::AddBalance { user, amount, reason, .. } => {
            let op = admin.adjust_balance(Actor::Cli, UserId(*user), Credits(*amount), reason.clone()).await?;
            writeln!(out, "user {user}: balance now {}", op.balance_after)?;
            Ok((0, out))
        }
        AdminCommand::Ban { user, .. } | AdminCommand::Unban { user, .. } => {
            let ban = matches!(cmd, AdminCommand::Ban { .. });
            let changed = admin.set_banned(Actor::Cli, UserId(*user), ban).await?;
            let state = if ban { "banned" } else { "not banned" };
            let already = if changed { "" } else { " (already)" };
            writeln!(out, "user {user}: {state}{already}")?;
            Ok((0, out))
        }
    }
}

fn describe_media(check: &MediaCheck, out: &mut String) {
    for m in &check.missing {
        out.push_str(&format!("missing: media/{m}\n"));
    }
    for m in &check.corrupt {
        out.push_str(&format!("damaged (sha256 differs): media/{m}\n"));
    }
    if check.missing.is_empty() && check.corrupt.is_empty() {
        out.push_str(&format!("media OK: {} library file(s) present with the right sha256\n", check.ok));
    } else {
        out.push_str(&format!(
            "media PROBLEMS: {} missing, {} damaged, {} OK\n",
            check.missing.len(),
            check.corrupt.len(),
            check.ok
        ));
    }
}

fn describe(s: &BackupSummary, to: &Path) -> String {
    let mut text =
        format!("backup written to {}: {} user(s), {} media file(s)\n", to.display(), s.users, s.media_files);
    for m in &s.missing_media {
        text.push_str(&format!("warning: media {m} was deleted while the backup ran\n"));
    }
    text
}

async fn handle(admin: &Admin, store: &Store, data_dir: &Path, req: Request) -> Reply {
    let result = match req {
        Request::Admin(cmd) => {
            exec_admin(admin, store, &cmd).await.map(|(code, output)| Reply { code, output, staged: None })
        }
        Request::Backup => {
            let dir = data_dir.join(format!("backup-{}", uuid::Uuid::now_v7()));
            let (st, to) = (store.clone(), dir.clone());
            match tokio::task::spawn_blocking(move || st.backup_to(&to)).await {
                Ok(r) => r.map_err(anyhow::Error::from).map(|s| Reply {
                    code: 0,
                    output: describe(&s, &dir),
                    staged: Some(dir),
                }),
                Err(e) => Err(e.into()),
            }
        }
    };
    result.unwrap_or_else(|e| Reply { code: 1, output: format!("error: {e:#}\n"), staged: None })
}

/// Serves the control socket in `data_dir` until `shutdown`; the store stays open meanwhile.
pub async fn serve(admin: Admin, store: Store, data_dir: PathBuf, shutdown: CancellationToken) -> anyhow::Result<()> {
    let path = data_dir.join(SOCKET);
    // We hold the database lock, so a socket file left here is from a dead instance.
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let me = own_uid();
    loop {
        let conn = tokio::select! {
            _ = shutdown.cancelled() => break,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else { continue };
        let allowed = stream.peer_cred().map(|c| c.uid() == 0 || c.uid() == me).unwrap_or(false);
        let (admin, store) = (admin.clone(), store.clone());
        let dir = data_dir.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            if tokio::io::BufReader::new(r).read_line(&mut line).await.is_err() {
                return;
            }
            let reply = if !allowed {
                Reply { code: 1, output: "error: control socket: permission denied\n".into(), staged: None }
            } else {
                match serde_json::from_str::<Request>(&line) {
                    Ok(req) => {
                        tracing::info!(request = ?req, "control request");
                        handle(&admin, &store, &dir, req).await
                    }
                    Err(e) => Reply { code: 1, output: format!("error: bad request: {e}\n"), staged: None },
                }
            };
            let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
            bytes.push(b'\n');
            let _ = w.write_all(&bytes).await;
        });
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// The uid this process runs as (owner of the files it creates).
fn own_uid() -> u32 {
    // std has no getuid; the owner of a file we just created is our effective uid.
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(0)
}

fn ask(data_dir: &Path, req: &Request) -> anyhow::Result<Reply> {
    let path = data_dir.join(SOCKET);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!("the database is in use but the service's control socket {} does not answer", path.display())
    })?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    serde_json::from_str(&answer).context("control socket reply")
}

/// Copies a directory tree (files and subdirectories only).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Refuses to create a database from an ops command: run as root, that would leave a root-owned
/// file the service user cannot open (and a typo in `--data-dir` would go unnoticed).
fn existing(data_dir: &Path) -> anyhow::Result<()> {
    if data_dir.join(crate::store::backup::DB_FILE).is_file() {
        Ok(())
    } else {
        anyhow::bail!(
            "no database in {} (wrong --data-dir or config? the service creates it at its first start)",
            data_dir.display()
        )
    }
}

/// Runs `admin …` directly on the database or through the running service.
pub fn admin(config: &Config, cmd: AdminCommand) -> anyhow::Result<(u8, String)> {
    let data_dir = config.storage.data_dir.as_path();
    existing(data_dir)?;
    match Store::open(data_dir) {
        Ok(store) => {
            let catalog = Catalog::open(store.clone(), config)?;
            let admin = Admin::new(store.clone(), catalog, config);
            let run = exec_admin(&admin, &store, &cmd);
            // The CLI has no runtime; a caller on a blocking thread of one (tests) uses it.
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => handle.block_on(run),
                Err(_) => tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(run),
            }
        }
        Err(StoreError::AlreadyOpen(_)) => {
            let reply = ask(data_dir, &Request::Admin(cmd))?;
            Ok((reply.code, reply.output))
        }
        Err(e) => Err(anyhow::Error::from(e).context("open the database")),
    }
}

/// Writes a backup of `data_dir` into `to` (a new directory), directly or through the service.
pub fn backup(data_dir: &Path, to: &Path) -> anyhow::Result<(u8, String)> {
    if to.join(crate::store::backup::DB_FILE).exists() {
        anyhow::bail!("{} already holds a backup", to.display());
    }
    existing(data_dir)?;
    match Store::open(data_dir) {
        Ok(store) => {
            let s = store.backup_to(to)?;
            Ok((0, describe(&s, to)))
        }
        Err(StoreError::AlreadyOpen(_)) => {
            let reply = ask(data_dir, &Request::Backup)?;
            let Some(staged) = reply.staged else { return Ok((reply.code, reply.output)) };
            // The service could write only inside its data dir; move the copy where asked.
            if std::fs::rename(&staged, to).is_err() {
                copy_tree(&staged, to)?;
                std::fs::remove_dir_all(&staged)?;
            }
            Ok((reply.code, reply.output.replace(&staged.display().to_string(), &to.display().to_string())))
        }
        Err(e) => Err(anyhow::Error::from(e).context("open the database")),
    }
}

/// Restores a backup into `data_dir` (the service must be stopped), keeping the data dir's
/// owner on every restored file so the service user can open them.
pub fn restore(data_dir: &Path, from: &Path) -> anyhow::Result<(u8, String)> {
    std::fs::create_dir_all(data_dir)?;
    let s = match crate::store::backup::restore(from, data_dir) {
        Err(StoreError::AlreadyOpen(_)) => {
            anyhow::bail!("the service is using {}: stop it first (systemctl stop mediabot)", data_dir.display())
        }
        other => other?,
    };
    let meta = std::fs::metadata(data_dir)?;
    let (uid, gid) = (std::os::unix::fs::MetadataExt::uid(&meta), std::os::unix::fs::MetadataExt::gid(&meta));
    chown_tree(data_dir, uid, gid)?;
    let mut out =
        format!("restored {} user(s), {} media file(s) into {}\n", s.users, s.media_files, data_dir.display());
    let check = Store::open(data_dir)?.verify_media()?;
    describe_media(&check, &mut out);
    Ok((u8::from(!check.missing.is_empty() || !check.corrupt.is_empty()), out))
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let p = entry.path();
        if entry.file_type()?.is_dir() {
            chown_tree(&p, uid, gid)?;
        }
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::{Billing, Profile};
    use crate::config::BillingConfig;

    fn config(dir: &Path) -> Config {
        let mut c = Config::default();
        c.storage.data_dir = dir.to_path_buf();
        c
    }

    fn audit_actors(store: &Store) -> Vec<(String, String)> {
        let entries = store.read_blocking(|rx| rx.find_audit(100)).expect("audit");
        entries.into_iter().map(|e| (e.actor, e.action)).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admin_and_backup_go_through_the_socket_while_the_store_is_open() {
        let live = tempfile::tempdir().expect("tempdir");
        let store = Store::open(live.path()).expect("open");
        let billing = Billing::new(store.clone(), BillingConfig::default());
        let profile = Profile { id: UserId(7), first_name: "Ann".into(), username: None, language_code: None };
        billing.register(profile, None).await.expect("register");
        store.put_media_file(&"ab".repeat(32), "png", b"not really a png").expect("media");
        let shutdown = CancellationToken::new();
        let cfg = config(live.path());
        let admin_service = Admin::new(store.clone(), Catalog::open(store.clone(), &cfg).expect("catalog"), &cfg);
        let server = tokio::spawn(serve(admin_service, store.clone(), live.path().to_path_buf(), shutdown.clone()));
        let sock = live.path().join(SOCKET);
        for _ in 0..100 {
            if sock.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(std::fs::metadata(&sock).expect("socket").permissions().mode() & 0o777, 0o600);

        let dir = live.path().to_path_buf();
        let backup_dir = tempfile::tempdir().expect("tempdir");
        let target = backup_dir.path().join("b1");
        let (add, ban, verify, backed_up) = tokio::task::spawn_blocking(move || {
            let cfg = config(&dir);
            let add = admin(&cfg, AdminCommand::AddBalance { user: 7, amount: 5, reason: "test".into() });
            let ban = admin(&cfg, AdminCommand::Ban { user: 7 });
            let verify = admin(&cfg, AdminCommand::VerifyLedger);
            let backed_up = backup(&dir, &target);
            (add, ban, verify, backed_up)
        })
        .await
        .expect("join");
        assert!(add.expect("add").1.contains("balance now 105"));
        assert!(ban.expect("ban").1.contains("banned"));
        assert_eq!(verify.expect("verify").0, 0);
        assert_eq!(backed_up.expect("backup").0, 0);
        let actors = audit_actors(&store);
        assert!(actors.contains(&("cli".into(), "adjust_balance".into())), "{actors:?}");
        assert!(actors.contains(&("cli".into(), "ban".into())), "{actors:?}");
        let op = store.read_blocking(|rx| rx.find_operations(UserId(7))).expect("ledger");
        assert_eq!(op.last().map(|o| o.actor.as_str()), Some("cli"));
        shutdown.cancel();
        server.await.expect("join").expect("serve");
        drop(billing);
        drop(store);

        // As the CLI runs it: on a thread of its own, not inside the test's runtime.
        tokio::task::spawn_blocking(move || {
            let fresh = tempfile::tempdir().expect("tempdir");
            let (code, text) = restore(fresh.path(), &backup_dir.path().join("b1")).expect("restore");
            assert_eq!(code, 0, "{text}");
            let cfg = config(fresh.path());
            let (code, users) = admin(&cfg, AdminCommand::ListUsers).expect("list");
            assert_eq!(code, 0);
            assert!(users.contains("balance=105") && users.contains("banned"), "{users}");
            assert_eq!(admin(&cfg, AdminCommand::VerifyLedger).expect("verify").0, 0);
        })
        .await
        .expect("cli thread");
    }

    #[test]
    fn the_cli_writes_an_audit_entry_with_actor_cli_when_the_service_is_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = Store::open(dir.path()).expect("open");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
            let billing = Billing::new(store.clone(), BillingConfig::default());
            let profile = Profile { id: UserId(9), first_name: "Bo".into(), username: None, language_code: None };
            rt.block_on(billing.register(profile, None)).expect("register");
        }
        let cfg = config(dir.path());
        let (code, out) =
            admin(&cfg, AdminCommand::AddBalance { user: 9, amount: -30, reason: "chargeback".into() }).expect("add");
        assert_eq!((code, out.trim()), (0, "user 9: balance now 70"));
        let refused = admin(&cfg, AdminCommand::AddBalance { user: 9, amount: -500, reason: "too much".into() });
        assert!(refused.is_err(), "a debit below zero is refused");
        let store = Store::open(dir.path()).expect("reopen");
        let entries = store.read_blocking(|rx| rx.find_audit(10)).expect("audit");
        assert_eq!(entries.len(), 1, "one audit entry, for the change that happened: {entries:?}");
        let e = &entries[0];
        assert_eq!((e.actor.as_str(), e.action.as_str(), e.target.as_str()), ("cli", "adjust_balance", "user:9"));
        assert!(e.before.contains("100") && e.after.contains("70") && e.after.contains("chargeback"), "{e:?}");
    }
}
