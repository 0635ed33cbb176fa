//! The real `mediabot` binary, run the way an operator runs it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
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
fn check_config_refuses_a_task_no_flow_handles() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("c.toml");
    let model = |task: &str, extra: &str| {
        format!(
            "[[providers]]\nid = \"fal\"\nkind = \"fal\"\nbase_url = \"https://queue.fal.run\"\n\n\
             [[models]]\nid = \"up\"\nprovider = \"fal\"\ndisplay_name = \"Up\"\nendpoint = \"fal-ai/x\"\n\
             price = 5\ntask = \"{task}\"\n{extra}"
        )
    };
    let check = |text: String| {
        std::fs::write(&cfg, text).expect("write");
        bin().args(["--config", cfg.to_str().expect("utf8"), "check-config"]).output().expect("run")
    };
    // A task word no flow knows is refused, naming the word.
    let out = check(model("inpaint", ""));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("inpaint"), "{out:?}");
    // A text → video model given photos has no flow that would send them.
    let out = check(model("text_to_video", "images = 1\n"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("models[0].images"), "{out:?}");
    for task in ["edit", "image_to_video", "text_to_video"] {
        let out = check(model(task, ""));
        assert!(out.status.success(), "a {task} model is handled: {out:?}");
    }
}

#[test]
fn check_config_names_a_workflow_placeholder_the_bot_does_not_fill() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("c.toml");
    let wf = dir.path().join("wf.json");
    std::fs::write(
        &wf,
        r#"{"1": {"class_type": "EmptyImage", "inputs": {"width": "{{width}}", "height": "{{heigth}}", "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}"#,
    )
    .expect("workflow");
    std::fs::write(
        &cfg,
        "[[providers]]\nid = \"comfy\"\nkind = \"comfyui\"\nbase_url = \"http://127.0.0.1:9\"\n\n\
         [[models]]\nid = \"local\"\nprovider = \"comfy\"\ndisplay_name = \"Local\"\nworkflow = \"wf.json\"\nprice = 1\n",
    )
    .expect("write");
    let out = bin().args(["--config", cfg.to_str().expect("utf8"), "check-config"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("models[0].workflow") && err.contains("{{heigth}}"), "{err}");
    std::fs::write(&wf, std::fs::read_to_string(&wf).expect("read").replace("heigth", "height")).expect("fix");
    let out = bin().args(["--config", cfg.to_str().expect("utf8"), "check-config"]).output().expect("run");
    assert!(out.status.success(), "{out:?}");
}

/// A loopback port nobody listens on right now (the OS picks it; the tiny window before the
/// app binds it is acceptable in tests).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `mediabot` with the web listener on `port` (the env layer, so `healthcheck` sees it too)
/// and no bot token from the caller's environment.
fn bin_on(port: u16) -> Command {
    let mut c = bin();
    c.env("MEDIABOT_WEB__LISTEN", format!("127.0.0.1:{port}")).env_remove("MEDIABOT_TELEGRAM__TOKEN");
    c
}

fn run(mut c: Command) -> (i32, String, String) {
    let out = c.output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn wait_healthy(port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut hc = bin_on(port);
        hc.arg("healthcheck");
        if run(hc).0 == 0 {
            return;
        }
        assert!(child.try_wait().expect("wait").is_none(), "the app exited before it became healthy");
        assert!(Instant::now() < deadline, "not healthy in 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM (what systemd sends), then the exit code.
fn terminate(mut child: Child) -> Option<i32> {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    child.wait().expect("wait").code()
}

fn spawn_logged(mut c: Command, log: &Path) -> Child {
    let f = std::fs::File::create(log).expect("log file");
    c.stdout(Stdio::null()).stderr(f).spawn().expect("spawn")
}

#[test]
fn serve_without_token_runs_the_panel_and_ops_commands_reach_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let d = data.to_str().expect("utf8");
    let port = free_port();
    let log = dir.path().join("serve.log");
    let mut serve = bin_on(port);
    serve.args(["serve", "--data-dir", d]);
    let mut child = spawn_logged(serve, &log);
    wait_healthy(port, &mut child);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("no bot token") && text.contains("MEDIABOT_TELEGRAM__TOKEN") && text.contains("@BotFather"),
        "says what to configure: {text}"
    );
    assert!(text.contains("admin-password"), "says where the admin password is: {text}");
    assert!(!text.contains("\u{1b}["), "no ANSI colours when stderr is not a terminal");

    // The database is held by the service; admin commands go through its control socket.
    let mut c = bin_on(port);
    c.args(["admin", "--data-dir", d, "verify-ledger"]);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ledger OK: 0 user(s)"), "{out}");
    let mut c = bin_on(port);
    c.args(["admin", "--data-dir", d, "add-balance", "77", "5", "--reason", "test"]);
    let (code, out, err) = run(c);
    assert_ne!(code, 0, "unknown user is refused: {out}{err}");
    let mut c = bin_on(port);
    c.args(["admin", "--data-dir", d, "set-password"]).stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut sp = c.spawn().expect("spawn");
    std::io::Write::write_all(&mut sp.stdin.take().expect("stdin"), b"correct horse battery\n").expect("write");
    let out = sp.wait_with_output().expect("wait");
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("password set"), "{out:?}");

    // A second instance on the same data dir stops at once with a clear error.
    let mut second = bin_on(free_port());
    second.args(["serve", "--data-dir", d]);
    let (code, _, err) = run(second);
    assert_ne!(code, 0);
    assert!(err.contains("already running") && err.contains(d), "clear error naming the data dir: {err}");

    assert!(child.try_wait().expect("wait").is_none(), "still up: no crash loop without a token");
    assert_eq!(terminate(child), Some(0), "clean exit on SIGTERM");
    let mut hc = bin_on(port);
    hc.arg("healthcheck");
    assert_eq!(run(hc).0, 1, "healthcheck fails once the service is stopped");
    assert!(!data.join("control.sock").exists(), "socket removed on shutdown");

    // Stopped: the same commands open the database directly; --data-dir may also follow the
    // admin command.
    let mut c = bin_on(port);
    c.args(["admin", "verify-ledger", "--data-dir", d]);
    let (code, out, _) = run(c);
    assert_eq!(code, 0);
    assert!(out.contains("ledger OK"), "{out}");
}

/// Talks to the sandbox's emulator control API as Telegram users.
struct Chat {
    http: reqwest::Client,
    base: String,
}

impl Chat {
    async fn send(&self, user: i64, body: serde_json::Value) {
        let mut body = body;
        body["user"] = serde_json::json!({"id": user, "first_name": format!("U{user}"), "language_code": "en"});
        let r = self.http.post(format!("{}/emulator/control/updates", self.base)).json(&body).send().await;
        assert!(r.expect("post").status().is_success());
    }

    async fn messages(&self, user: i64) -> Vec<serde_json::Value> {
        let url = format!("{}/emulator/control/chats/{user}/messages", self.base);
        self.http.get(url).send().await.expect("get").json().await.expect("json")
    }

    /// Waits for a bot message matching `pred`; returns the newest such message.
    async fn wait(&self, user: i64, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let msgs = self.messages(user).await;
            if let Some(m) = msgs.iter().rev().find(|m| m["from_bot"] == true && pred(m)) {
                return m.clone();
            }
            assert!(Instant::now() < deadline, "no {what} for {user} in 60 s: {msgs:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Presses the inline button whose label contains `label` on the newest message offering
    /// it, among messages newer than `after` (older ones may still show the same buttons).
    async fn press(&self, user: i64, after: i64, label: &str) {
        let m = self
            .wait(user, label, |m| {
                m["message_id"].as_i64().unwrap_or(0) > after && m["reply_markup"].to_string().contains(label)
            })
            .await;
        let data = m["reply_markup"]["inline_keyboard"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|row| row.as_array().into_iter().flatten())
            .find(|b| b["text"].as_str().unwrap_or("").contains(label))
            .and_then(|b| b["callback_data"].as_str())
            .expect("button")
            .to_string();
        self.send(user, serde_json::json!({"callback_data": data, "message_id": m["message_id"]})).await;
    }

    async fn photos(&self, user: i64) -> usize {
        self.messages(user).await.iter().filter(|m| m["from_bot"] == true && !m["photo"].is_null()).count()
    }

    /// A prompt, then the format button: one job.
    async fn create(&self, user: i64, prompt: &str) {
        let last = self.messages(user).await.iter().filter_map(|m| m["message_id"].as_i64()).max().unwrap_or(0);
        self.send(user, serde_json::json!({"text": prompt})).await;
        // One model configured: the bot skips the model choice and asks for the format.
        self.press(user, last, "Square").await;
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_taken_while_jobs_run_restores_clean() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let d = data.to_str().expect("utf8").to_string();
    // A demo provider slow enough (4 steps × 1 s) that jobs are mid-flight during the backup.
    let cfg = dir.path().join("mediabot.toml");
    std::fs::write(
        &cfg,
        "[[providers]]\nid = \"slow\"\nkind = \"demo\"\npoll_interval_ms = 1000\n\n\
         [[models]]\nid = \"slow\"\nprovider = \"slow\"\ndisplay_name = \"Slow demo\"\nprice = 10\n",
    )
    .expect("config");
    let c = cfg.to_str().expect("utf8").to_string();
    let port = free_port();
    let mut sandbox = bin_on(port);
    sandbox.args(["--config", &c, "sandbox", "--data-dir", &d]);
    let mut child = spawn_logged(sandbox, &dir.path().join("sandbox.log"));
    wait_healthy(port, &mut child);
    let chat = Chat { http: reqwest::Client::new(), base: format!("http://127.0.0.1:{port}") };

    let users = [801, 802, 803];
    for u in users {
        chat.send(u, serde_json::json!({"text": "/start"})).await;
        chat.wait(u, "welcome", |m| m["text"].as_str().unwrap_or("").contains("Welcome")).await;
    }
    // One finished result so the backup has library files to carry ...
    chat.create(801, "a lighthouse at dusk").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while chat.photos(801).await == 0 {
        assert!(Instant::now() < deadline, "first job did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ... and more jobs running (credits held, nothing delivered yet) while it is taken.
    for u in users {
        chat.create(u, "two foxes in the snow").await;
    }
    let backup = dir.path().join("backup");
    let mut b = bin_on(port);
    b.args(["--config", &c, "backup", backup.to_str().expect("utf8"), "--data-dir", &d]);
    let (code, out, err) = tokio::task::spawn_blocking(move || run(b)).await.expect("join");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3 user(s)"), "{out}");
    let delivered_during = [chat.photos(801).await, chat.photos(802).await, chat.photos(803).await];
    assert_eq!(delivered_during, [1, 0, 0], "the backup ran while the second round of jobs was in flight");

    // Let the jobs finish, then stop the service.
    let deadline = Instant::now() + Duration::from_secs(90);
    for u in users {
        while chat.photos(u).await < if u == 801 { 2 } else { 1 } {
            assert!(Instant::now() < deadline, "jobs did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(tokio::task::spawn_blocking(move || terminate(child)).await.expect("join"), Some(0));

    // Restore into a fresh data dir: ledger clean, every library file present and intact.
    let fresh = dir.path().join("fresh");
    let f = fresh.to_str().expect("utf8").to_string();
    let mut r = bin_on(port);
    r.args(["--config", &c, "restore", backup.to_str().expect("utf8"), "--data-dir", &f]);
    let (code, out, err) = run(r);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("media OK"), "{out}");
    let mut v = bin_on(port);
    v.args(["--config", &c, "admin", "--data-dir", &f, "verify-ledger"]);
    let (code, out, err) = run(v);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ledger OK: 3 user(s)"), "{out}");
    let mut v = bin_on(port);
    v.args(["--config", &c, "admin", "--data-dir", &f, "verify-media"]);
    let (code, out, err) = run(v);
    assert_eq!(code, 0, "{out}{err}");
    let ok: usize = out
        .split("media OK: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output: {out}"));
    assert!(ok >= 1, "the finished job's files are in the backup: {out}");
    // Independently of mediabot's own check: every file is named by its content's sha256.
    let mut files = 0;
    for entry in std::fs::read_dir(fresh.join("media")).expect("media dir") {
        let p = entry.expect("entry").path();
        let stem = p.file_stem().and_then(|s| s.to_str()).expect("name").to_string();
        assert_eq!(sha256_hex(&std::fs::read(&p).expect("read")), stem, "{}", p.display());
        files += 1;
    }
    assert!(files >= ok, "{files} files for {ok} library items");
    // The restored users still have their balances (signup bonus minus held/charged jobs).
    let mut l = bin_on(port);
    l.args(["--config", &c, "admin", "--data-dir", &f, "list-users"]);
    let (code, out, _) = run(l);
    assert_eq!(code, 0);
    for u in users {
        assert!(out.lines().any(|line| line.starts_with(&format!("{u}\t"))), "{u} restored: {out}");
    }
}

/// `serve` started while the Bot API is unreachable keeps trying and answers once it is up
/// (issue 17, item 1): before, the dispatcher's startup getMe panicked and the bot never came
/// back while the process looked healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_connects_when_the_bot_api_comes_up_later() {
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let (web, api) = (free_port(), free_port());
    let mut serve = bin_on(web);
    serve
        .args(["serve", "--data-dir", data.to_str().expect("utf8")])
        .env("MEDIABOT_TELEGRAM__TOKEN", "123456:TEST")
        .env("MEDIABOT_TELEGRAM__API_URL", format!("http://127.0.0.1:{api}"))
        .env("MEDIABOT_TELEGRAM__POLL_TIMEOUT_SECS", "1");
    let log = dir.path().join("serve.log");
    let mut child = spawn_logged(serve, &log);
    wait_healthy(web, &mut child);
    let http = reqwest::Client::new();
    let health = |http: reqwest::Client| async move {
        let r = http.get(format!("http://127.0.0.1:{web}/healthz")).send().await.expect("healthz");
        (r.status().as_u16(), r.text().await.expect("body"))
    };
    assert_eq!(health(http.clone()).await, (200, r#"{"bot":"connecting","db":"ok"}"#.to_string()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(child.try_wait().expect("wait").is_none(), "still up while the API is down");
    let mut emulator = bin_on(api);
    emulator.args(["emulator", &format!("127.0.0.1:{api}")]);
    let emu = spawn_logged(emulator, &dir.path().join("emulator.log"));
    let chat = Chat { http: http.clone(), base: format!("http://127.0.0.1:{api}") };
    let up = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{}/healthz", chat.base)).send().await.is_err() {
        assert!(Instant::now() < deadline, "emulator did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    chat.send(901, serde_json::json!({"text": "/start"})).await;
    chat.wait(901, "the welcome", |m| m["text"].as_str().unwrap_or("").contains("Welcome")).await;
    eprintln!("Bot API down at start: first reply {:?} after the API came up", up.elapsed());
    assert_eq!(health(http.clone()).await, (200, r#"{"bot":"polling","db":"ok"}"#.to_string()));
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("the Bot API is unreachable; retrying") && text.contains("retry_in_s"), "{text}");
    // An idle bot stops at once on SIGTERM (it used to wait out 25 s now and then).
    let t = Instant::now();
    assert_eq!(terminate(child), Some(0));
    assert!(t.elapsed() < Duration::from_secs(10), "stopped in {:?}", t.elapsed());
    terminate(emu);
}

/// The dispatcher stopping by itself is fatal: the process exits non-zero so systemd restarts
/// it (the Bot API answering getMe and then refusing every getUpdates forever is not, and is
/// retried; what is fatal is the update channel dying). Here the token is refused: the panel
/// stays up, `/healthz` says the bot is down with 503.
#[test]
fn a_refused_token_marks_the_bot_down() {
    let dir = tempfile::tempdir().expect("tmp");
    let (web, api) = (free_port(), free_port());
    let mut emulator = bin_on(api);
    emulator.args(["emulator", &format!("127.0.0.1:{api}")]);
    let emu = spawn_logged(emulator, &dir.path().join("emulator.log"));
    let mut serve = bin_on(web);
    serve
        .args(["serve", "--data-dir", dir.path().join("data").to_str().expect("utf8")])
        // The emulator answers 401 to a token that is not `<digits>:<text>`.
        .env("MEDIABOT_TELEGRAM__TOKEN", "not-a-token")
        .env("MEDIABOT_TELEGRAM__API_URL", format!("http://127.0.0.1:{api}"));
    let mut child = spawn_logged(serve, &dir.path().join("serve.log"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut hc = bin_on(web);
        hc.arg("healthcheck");
        let (code, out, err) = run(hc);
        if code == 1 && err.contains("503") {
            break;
        }
        assert!(child.try_wait().expect("wait").is_none(), "the panel stays up: {out}{err}");
        assert!(Instant::now() < deadline, "never reported down: {out}{err}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(terminate(child), Some(0));
    terminate(emu);
}

#[test]
fn unrelated_mediabot_variables_are_not_config() {
    let mut c = bin_on(free_port());
    c.arg("check-config")
        .env("MEDIABOT_CHECKOUT", "1")
        .env("MEDIABOT_TEST_ARTIFACTS", "/tmp/x")
        .env("MEDIABOT_BILLING__SIGNUP_BONUS", "7");
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}{err}");
    let mut c = bin_on(free_port());
    c.arg("check-config").env("MEDIABOT_BILLING__SIGNUP_BONUS", "-1");
    assert_eq!(run(c).0, 2, "a real config variable is still read and checked");
}

#[test]
fn sandbox_refuses_a_public_address_and_never_reads_the_services_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("public.log");
    let mut public = bin_on(free_port());
    public.current_dir(dir.path()).args(["sandbox", "--listen", &format!("0.0.0.0:{}", free_port())]);
    let mut public = Service(Some(spawn_logged(public, &log)));
    let deadline = Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = public.0.as_mut().and_then(|c| c.try_wait().expect("wait")) {
            break status.code();
        }
        assert!(Instant::now() < deadline, "the sandbox started on 0.0.0.0 instead of refusing");
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&log).expect("log");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--i-know-this-is-public"), "says how to insist: {err}");

    // A config in the working directory (as in a checkout or next to a service's data) is
    // what `serve` uses; `sandbox` ignores it unless --config names it.
    let elsewhere = dir.path().join("service-data");
    std::fs::write(
        dir.path().join("mediabot.toml"),
        format!("[storage]\ndata_dir = \"{}\"\n[billing]\nsignup_bonus = -5\n", elsewhere.display()),
    )
    .expect("config");
    let mut serve = bin_on(free_port());
    serve.current_dir(dir.path()).arg("check-config");
    assert_eq!(run(serve).0, 2, "serve and check-config do read ./mediabot.toml");
    let port = free_port();
    let mut sandbox = bin_on(port);
    sandbox.current_dir(dir.path()).arg("sandbox");
    let mut sandbox = Service(Some(spawn_logged(sandbox, &dir.path().join("sandbox.log"))));
    wait_healthy(port, sandbox.0.as_mut().expect("running"));
    assert!(dir.path().join("mediabot-sandbox/mediabot.redb").exists(), "its own data dir");
    assert!(!elsewhere.exists(), "the configured data dir is untouched");
    assert_eq!(sandbox.0.take().map(terminate), Some(Some(0)));
}

/// A service process that is killed if the test ends early (a failed assertion), so no
/// `serve` outlives its test.
struct Service(Option<Child>);

impl Service {
    /// SIGTERM and the exit code (see [`terminate`]).
    async fn stop(mut self) -> Option<i32> {
        let child = self.0.take().expect("running");
        tokio::task::spawn_blocking(move || terminate(child)).await.expect("join")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `serve` without a token (the admin panel only) on a free port with its data in `dir`,
/// once healthy: (process, pid, port). `MEDIABOT_BENCH_BIN` runs another build instead (to
/// measure the figures in BENCHMARKS.md against an older binary).
async fn serve_without_token(dir: &Path) -> (Service, u32, u16) {
    let port = free_port();
    let mut serve = bin_on(port);
    if let Some(other) = std::env::var_os("MEDIABOT_BENCH_BIN") {
        let mut c = Command::new(other);
        // Older builds took every MEDIABOT_* variable for config (issue 17, item 29).
        c.env_remove("RUST_LOG")
            .env_remove("MEDIABOT_BENCH_BIN")
            .env("MEDIABOT_WEB__LISTEN", format!("127.0.0.1:{port}"));
        serve = c;
    }
    serve.args(["serve", "--data-dir", dir.join("data").to_str().expect("utf8")]);
    let mut child = spawn_logged(serve, &dir.join("serve.log"));
    let pid = child.id();
    let child = tokio::task::spawn_blocking(move || {
        wait_healthy(port, &mut child);
        child
    })
    .await
    .expect("join");
    (Service(Some(child)), pid, port)
}

/// `VmHWM` (peak resident set) of a process, in KiB, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("VmHWM")
}

/// 100 wrong passwords at once from one address: the limiter counts each attempt before any
/// hashing, so at most LOGIN_LIMIT (5) are checked (401) and the rest get 429; Argon2 runs at
/// most two at a time, so the process's peak RSS stays far below what 100 parallel hashes
/// (~19 MiB each) would take. Figures go to stderr for BENCHMARKS.md (`--nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_flood_is_refused_early_and_memory_stays_bounded() {
    const ATTEMPTS: usize = 100;
    let dir = tempfile::tempdir().expect("tmp");
    let (child, pid, port) = serve_without_token(dir.path()).await;
    let before = peak_rss_kib(pid);

    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let url = format!("http://127.0.0.1:{port}/admin/login");
    let started = Instant::now();
    let answers = futures_util::future::join_all((0..ATTEMPTS).map(|i| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            // The double-submit token is whatever the client puts in both places.
            let r = http
                .post(url)
                .header("cookie", format!("mb_login=t{i}"))
                .form(&[("csrf", format!("t{i}")), ("password", format!("wrong guess {i}"))])
                .send()
                .await
                .expect("answer");
            r.status().as_u16()
        }
    }))
    .await;
    let took = started.elapsed();
    let peak = peak_rss_kib(pid);
    let count = |s: u16| answers.iter().filter(|a| **a == s).count();
    let (unauthorized, limited) = (count(401), count(429));
    eprintln!(
        "login flood: {ATTEMPTS} attempts, {unauthorized}×401, {limited}×429, in {:.2} s; peak RSS {:.1} MiB \
         (before the flood {:.1} MiB)",
        took.as_secs_f64(),
        peak as f64 / 1024.0,
        before as f64 / 1024.0
    );
    assert!((1..=5).contains(&unauthorized), "at most the limit is checked: {answers:?}");
    assert_eq!(unauthorized + limited, ATTEMPTS, "everything else is refused: {answers:?}");
    assert!(peak < 200 * 1024, "peak RSS {peak} KiB");
    assert_eq!(child.stop().await, Some(0));
}

/// Open descriptors of a process (sockets included), from /proc.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Figures for BENCHMARKS.md ("Reliability"): 1500 connections that each send half a request
/// and stall, opened at once against `serve`. Reports the most the server held at once (its
/// open descriptors, sampled every 100 ms), how long a /healthz sent once it was full waited,
/// and when the server had closed them all.
/// `cargo test --test cli slow_header_flood -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark (about a minute); its figures are in BENCHMARKS.md"]
async fn slow_header_flood_figures() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CONNECTIONS: usize = 1500;
    let dir = tempfile::tempdir().expect("tmp");
    let (child, pid, port) = serve_without_token(dir.path()).await;
    let idle_fds = open_fds(pid);
    let (most, done) = (std::sync::Arc::new(AtomicUsize::new(0)), std::sync::Arc::new(AtomicBool::new(false)));
    let sampler = {
        let (most, done) = (most.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(open_fds(pid).saturating_sub(idle_fds), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    let stalls: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.ok()?;
                let mut buf = Vec::new();
                // An end of stream or a reset (the server closed with our bytes unread): closed.
                let _ = tokio::time::timeout(Duration::from_secs(180), s.read_to_end(&mut buf)).await.ok()?;
                Some(started.elapsed())
            })
        })
        .collect();
    // Probe once the server is full (or after 10 s).
    let full = Instant::now();
    while most.load(Ordering::Relaxed) < 1024 && full.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let saturated_after = started.elapsed();
    let probe = Instant::now();
    let answer = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.ok()?;
        Some(answer.lines().next().unwrap_or_default().to_string())
    };
    let answer = tokio::time::timeout(Duration::from_secs(120), answer).await.ok().flatten();
    let healthz_wait = probe.elapsed();
    let closed: Vec<Duration> = futures_util::future::join_all(stalls).await.into_iter().flatten().flatten().collect();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let last = closed.iter().max().copied().unwrap_or_default();
    let first = closed.iter().min().copied().unwrap_or_default();
    eprintln!(
        "slow headers: {CONNECTIONS} stalled connections; most held by the server at once: {} (reached after \
         {:.1} s); a /healthz sent then: {:?} after {:.1} s; closed by the server: {}/{CONNECTIONS}, the first after \
         {:.1} s, the last after {:.1} s; peak RSS {:.1} MiB",
        most.load(Ordering::Relaxed),
        saturated_after.as_secs_f64(),
        answer.as_deref().unwrap_or("no answer"),
        healthz_wait.as_secs_f64(),
        closed.len(),
        first.as_secs_f64(),
        last.as_secs_f64(),
        peak_rss_kib(pid) as f64 / 1024.0
    );
    assert!(most.load(Ordering::Relaxed) <= 1024 + 8, "the connection cap holds");
    assert_eq!(closed.len(), CONNECTIONS, "every stalled connection is closed by the server");
    assert_eq!(child.stop().await, Some(0));
}

/// A small tmpfs mounted for one test (root only), unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).status();
        ok.ok().filter(|s| s.success()).map(|_| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with `dir/filler` until a write fails.
fn fill(dir: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).expect("filler");
    let chunk = vec![0xAAu8; 256 * 1024];
    while f.write_all(&chunk).and_then(|()| f.sync_data()).is_ok() {}
}

/// A full disk (issue 17, item 3): users are told the bot is out of storage (nothing charged),
/// admins get one alert, `/healthz` says `read_only` with 503, and once there is room again the
/// process exits non-zero for systemd to restart it, after which everything works. Before, redb
/// refused every write until a restart while `/healthz` said ok and users got no answer.
/// Needs root for the tmpfs; elsewhere it says so and passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_told_to_users_and_the_service_restarts_once_there_is_room() {
    let dir = tempfile::tempdir().expect("tmp");
    let Some(fs) = Tmpfs::mount(&dir.path().join("fs"), "32m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let data = fs.0.join("data");
    let (web, api) = (free_port(), free_port());
    let mut emulator = bin_on(api);
    emulator.args(["emulator", &format!("127.0.0.1:{api}")]);
    let emu = spawn_logged(emulator, &dir.path().join("emulator.log"));
    let serve = |log: &str| {
        let mut c = bin_on(web);
        c.args(["serve", "--data-dir", data.to_str().expect("utf8")])
            .env("MEDIABOT_TELEGRAM__TOKEN", "123456:TEST")
            .env("MEDIABOT_TELEGRAM__API_URL", format!("http://127.0.0.1:{api}"))
            .env("MEDIABOT_TELEGRAM__POLL_TIMEOUT_SECS", "1")
            .env("MEDIABOT_TELEGRAM__ADMINS", "[700]");
        spawn_logged(c, &dir.path().join(log))
    };
    let mut child = serve("serve1.log");
    wait_healthy(web, &mut child);
    let http = reqwest::Client::new();
    let chat = Chat { http: http.clone(), base: format!("http://127.0.0.1:{api}") };
    for u in [700, 901] {
        chat.send(u, serde_json::json!({"text": "/start"})).await;
        chat.wait(u, "the welcome", |m| m["text"].as_str().unwrap_or("").contains("Welcome")).await;
    }
    fill(&fs.0);
    let full = Instant::now();
    // New users need a write to be registered: the first refused write flips the store.
    let mut user = 910;
    let told = loop {
        chat.send(user, serde_json::json!({"text": "/start"})).await;
        let m = chat.wait(user, "an answer", |m| m["text"].is_string()).await;
        if m["text"].as_str().unwrap_or("").contains("out of storage") {
            break m;
        }
        assert!(user < 940, "no write failed: {m}");
        user += 1;
    };
    let first_reply = full.elapsed();
    assert!(told["text"].as_str().unwrap_or("").contains("Nothing was charged"), "{told}");
    let r = http.get(format!("http://127.0.0.1:{web}/healthz")).send().await.expect("healthz");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.text().await.expect("body"), r#"{"bot":"polling","db":"read_only"}"#);
    // An existing user's prompt needs a draft: also told, also nothing charged.
    chat.send(901, serde_json::json!({"text": "a lighthouse"})).await;
    chat.wait(901, "out of storage", |m| m["text"].as_str().unwrap_or("").contains("out of storage")).await;
    let alerts = |msgs: &[serde_json::Value]| {
        msgs.iter().filter(|m| m["text"].as_str().unwrap_or("").contains("database write failed")).count()
    };
    chat.wait(700, "the admin alert", |m| m["text"].as_str().unwrap_or("").contains("database write failed")).await;
    assert!(child.try_wait().expect("wait").is_none(), "no exit while the disk is full");
    // Room again: the process exits non-zero (systemd restarts it) ...
    std::fs::remove_file(fs.0.join("filler")).expect("free");
    let freed = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        assert!(freed.elapsed() < Duration::from_secs(60), "no restart after the disk had room again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let exit_after = freed.elapsed();
    assert!(code.is_some_and(|c| c != 0), "non-zero exit for Restart=on-failure: {code:?}");
    assert_eq!(alerts(&chat.messages(700).await), 1, "admins alerted once");
    // ... and the restarted service works and the ledger is whole.
    let mut child = serve("serve2.log");
    wait_healthy(web, &mut child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http.get(format!("http://127.0.0.1:{web}/healthz")).send().await.expect("healthz");
        let body = r.text().await.expect("body");
        if body == r#"{"bot":"polling","db":"ok"}"# {
            break;
        }
        assert!(Instant::now() < deadline && body.contains(r#""db":"ok""#), "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    chat.send(user, serde_json::json!({"text": "/start"})).await;
    chat.wait(user, "the welcome", |m| m["text"].as_str().unwrap_or("").contains("Welcome")).await;
    let mut c = bin_on(web);
    c.args(["admin", "--data-dir", data.to_str().expect("utf8"), "verify-ledger"]);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}{err}");
    eprintln!(
        "full disk: first 'out of storage' reply {first_reply:?} after the disk filled; exit {exit_after:?} after room \
         came back"
    );
    assert_eq!(terminate(child), Some(0));
    terminate(emu);
}
