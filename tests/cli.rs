//! The real `mediabot` binary, run the way an operator runs it.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mediabot"));
    c.env_remove("RUST_LOG").current_dir(std::env::temp_dir());
    c
}

#[test]
fn version_prints_the_crate_version() {
    let out = bin().arg("--version").output().expect("run");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("mediabot {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_config_names_the_bad_key_and_exits_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[billing]\nsignup_bonus = -5\n").expect("write");
    let out = bin().args(["--config", cfg.to_str().expect("utf8"), "check-config"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("billing.signup_bonus"), "{out:?}");

    std::fs::write(&cfg, "[telegram]\ntokn = \"x\"\n").expect("write");
    let out = bin().args(["--config", cfg.to_str().expect("utf8"), "check-config"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokn"), "unknown key named: {out:?}");

    std::fs::write(&cfg, "[billing]\nsignup_bonus = 50\n").expect("write");
    let out = bin()
        .args(["--config", cfg.to_str().expect("utf8"), "check-config"])
        .env("MEDIABOT_TELEGRAM__TOKEN", "123456:SECRET-TOKEN-VALUE")
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains("SECRET-TOKEN-VALUE"), "secrets never printed");
}

#[test]
fn admin_commands_and_single_process_lock() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let d = data.to_str().expect("utf8");
    // Start the appliance (sandbox: no token needed) and wait until it serves.
    let mut child = bin()
        .args(["sandbox", "--listen", "127.0.0.1:0", "--data-dir", d])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !data.join("mediabot.redb").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let out = bin().args(["admin", "--data-dir", d, "list-users"]).output().expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running") && err.contains(d), "clear error naming the data dir: {err}");
    let _ = child.kill();
    let _ = child.wait();

    let out =
        bin().args(["admin", "--data-dir", d, "add-balance", "77", "5", "--reason", "test"]).output().expect("run");
    assert!(!out.status.success(), "unknown user is refused: {out:?}");
    let out = bin().args(["admin", "--data-dir", d, "verify-ledger"]).output().expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("ledger OK"));
}
