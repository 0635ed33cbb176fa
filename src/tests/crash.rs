//! The crash test: the real `mediabot` binary, SIGKILLed at random moments while 20 users run
//! 100 jobs against the Bot API emulator and a fake ComfyUI, both living in this test process
//! so they outlive every kill. Afterwards the database must show nothing lost and nothing
//! charged or delivered twice.
//!
//! The binary is the one `cargo build --bins` produced next to this test binary
//! (`target/<profile>/mediabot`); `.ci/test` builds it before running the tests.

use super::fakes::comfyui::FakeComfy;
use super::harness::text_of;
use crate::domain::{JobStatus, UserId};
use crate::emulator::Emulator;
use crate::store::Store;
use crate::store::records::JobPayload;
use crate::store::records::{Delivery, OpKind};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const USERS: i64 = 20;
const JOBS_PER_USER: i64 = 5;
const KILLS: usize = 20;
const PRICE: i64 = 10;
const FIRST_USER: i64 = 7000;

/// `target/<profile>/mediabot`, beside `target/<profile>/deps/<this test binary>`.
pub fn mediabot_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.parent().and_then(Path::parent).expect("target dir").join("mediabot");
    assert!(bin.exists(), "{} is missing: run `cargo build --bins` before the tests (.ci/test does)", bin.display());
    bin
}

/// Width of job `k` of a user: distinct per job so each delivered photo names its job.
fn width_of(k: i64) -> u32 {
    320 + 16 * k as u32
}

fn write_config(dir: &Path, emu_url: &str, comfy_url: &str) -> PathBuf {
    let wf = dir.join("wf.json");
    std::fs::write(
        &wf,
        r#"{"1": {"class_type": "EmptyImage", "inputs": {"width": "{{width}}", "height": "{{height}}", "batch_size": 1, "color": 255}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "{{prompt}}"}}}"#,
    )
    .expect("workflow");
    let data = dir.join("data");
    let cfg = format!(
        r#"
[telegram]
token = "1000000:CRASHTEST"
api_url = "{emu_url}"
poll_timeout_secs = 1

[web]
listen = "127.0.0.1:0"

[storage]
data_dir = "{data}"

[billing]
signup_bonus = 1000

[jobs]
max_attempts = 5
retry_base_ms = 50
progress_interval_ms = 300

[[providers]]
id = "comfy"
kind = "comfyui"
base_url = "{comfy_url}"
max_concurrency = 4
poll_interval_ms = 50
timeout_secs = 120

[[models]]
id = "local"
provider = "comfy"
display_name = "Local"
task = "text_to_image"
endpoint = ""
workflow = "{wf}"
price = {PRICE}
"#,
        data = data.display(),
        wf = wf.display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, cfg).expect("config");
    path
}

fn spawn(bin: &Path, config: &Path, log: &Path) -> tokio::process::Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log");
    let err = out.try_clone().expect("log");
    tokio::process::Command::new(bin)
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mediabot")
}

fn push(emu: &Emulator, user: i64, text: &str) {
    let u = json!({"id": user, "first_name": format!("U{user}"), "language_code": "en"});
    emu.push_update(serde_json::from_value(json!({"user": u, "text": text})).expect("update")).expect("accepted");
}

/// How many processes have logged that they reached the Bot API (one line per start).
fn connected_count(log: &Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches("connected to the Bot API").count()
}

fn log_tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_twenty_times_loses_nothing_and_charges_once() {
    let bin = mediabot_binary();
    let (emu, emu_url, emu_task) = super::harness::serve_emulator().await;
    let comfy = FakeComfy::start().await;
    comfy.set_run_delay(Duration::from_millis(60));
    comfy.set_steps(3, Duration::from_millis(40));

    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &emu_url, &comfy.base_url());
    let log = dir.path().join("mediabot.log");
    let seed: u64 = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("crash test seed {seed} (set CRASH_SEED to replay)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut child = spawn(&bin, &config, &log);
    for u in 0..USERS {
        push(&emu, FIRST_USER + u, "/start");
    }
    // Users send their prompts over the first seconds, interleaved, while the kills begin.
    let sender = {
        let emu = emu.clone();
        tokio::spawn(async move {
            for k in 0..JOBS_PER_USER {
                for u in 0..USERS {
                    let text = format!("crash u{u} k{k} | model=local | size={}x320", width_of(k));
                    push(&emu, FIRST_USER + u, &text);
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            }
        })
    };

    for i in 0..KILLS {
        // Each life is counted from the moment the bot is connected, not from the spawn: on a
        // loaded 2-core machine a start can take longer than a short life, and a string of
        // processes killed before handling anything would kill the same replayed update 5 times
        // and make the bot drop it by design (a poison-update guard), which is not a lost job.
        let started = Instant::now();
        while connected_count(&log) <= i && started.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let alive_ms = rng.random_range(150..1500);
        tokio::time::sleep(Duration::from_millis(alive_ms)).await;
        if let Ok(Some(status)) = child.try_wait() {
            panic!("mediabot exited on its own ({status}) before kill {i}:\n{}", log_tail(&log));
        }
        child.kill().await.expect("SIGKILL");
        child = spawn(&bin, &config, &log);
    }
    sender.await.expect("sender");

    // Let the last process finish everything: done when nothing has moved for 8 s.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut last = (usize::MAX, 0usize);
    let mut quiet_since = Instant::now();
    loop {
        // Long polls go on forever; everything else is the bot doing work.
        let calls = emu.calls().iter().filter(|c| c.method != "getUpdates").count();
        let submits = comfy.submits().len();
        if (calls, submits) != last {
            last = (calls, submits);
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() > Duration::from_secs(8) {
            break;
        }
        assert!(Instant::now() < deadline, "still busy after 240 s:\n{}", log_tail(&log));
        if let Ok(Some(status)) = child.try_wait() {
            panic!("mediabot exited on its own ({status}):\n{}", log_tail(&log));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Photos the bot sent on its own, per chat, before the users press any "send it" button.
    let auto_photos: HashMap<i64, Vec<u64>> = (0..USERS)
        .map(|u| {
            let user = FIRST_USER + u;
            (
                user,
                emu.messages(user)
                    .iter()
                    .filter(|m| m.from_bot)
                    .filter_map(|m| m.photo.as_ref())
                    .map(|p| p.width as u64)
                    .collect(),
            )
        })
        .collect();
    // Results whose send a kill cut off come with a notice and a button; pressing it brings them.
    let mut notices = 0;
    for u in 0..USERS {
        let user = FIRST_USER + u;
        for m in emu.messages(user) {
            let m = serde_json::to_value(&m).expect("json");
            if m["from_bot"] == true && text_of(&m).contains("restarted while sending") {
                notices += 1;
                let data = super::harness::Harness::button(&m, "Send it");
                let before = emu.messages(user).iter().filter(|x| x.photo.is_some()).count();
                let u = json!({"id": user, "first_name": format!("U{user}"), "language_code": "en"});
                let press = json!({"user": u, "callback_data": data, "message_id": m["message_id"]});
                emu.push_update(serde_json::from_value(press).expect("update")).expect("accepted");
                let arrived = super::fakes::eventually(Duration::from_secs(20), || {
                    emu.messages(user).iter().filter(|x| x.photo.is_some()).count() > before
                })
                .await;
                assert!(arrived, "pressing \"Send it\" brought the photo");
            }
        }
    }
    // A clean stop (SIGTERM) must exit 0 within the 30 s systemd gives it.
    let pid = child.id().expect("pid");
    let term = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill -TERM");
    assert!(term.success());
    let status =
        tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("exits in 30 s").expect("wait");
    assert!(status.success(), "exit status after SIGTERM: {status}\n{}", log_tail(&log));

    // The operator's check, from the real binary, on the stopped service's data.
    let verify = std::process::Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .args(["admin", "verify-ledger"])
        .output()
        .expect("verify-ledger");
    assert!(
        verify.status.success(),
        "verify-ledger: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    let store = Store::open(&dir.path().join("data")).expect("open data dir");
    let jobs = store.read_blocking(|rx| rx.find_jobs()).expect("jobs");
    let dropped: Vec<String> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("update dropped") || l.contains("again after a restart") || l.contains("ERROR"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        jobs.len() as i64,
        USERS * JOBS_PER_USER,
        "one job per prompt message, none lost, none doubled; log:\n{}",
        dropped.join("\n")
    );
    let submits = comfy.submits();
    let mut per_prompt_id: HashMap<&str, usize> = HashMap::new();
    for s in &submits {
        *per_prompt_id.entry(s.prompt_id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = per_prompt_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "a prompt_id was POSTed more than once: {twice:?}");

    let mut in_window = 0;
    let mut succeeded = 0;
    for u in 0..USERS {
        let user = FIRST_USER + u;
        let photos = auto_photos[&user].clone();
        let ops = store.read_blocking(move |rx| rx.find_operations(UserId(user))).expect("ledger");
        let mut per_job: BTreeMap<_, Vec<OpKind>> = BTreeMap::new();
        for o in &ops {
            if let Some(j) = o.job_id {
                per_job.entry(j).or_default().push(o.kind);
            }
        }
        let user_jobs: Vec<_> = jobs.iter().filter(|j| j.user_id == UserId(user)).collect();
        assert_eq!(user_jobs.len() as i64, JOBS_PER_USER, "user {user}");
        for j in user_jobs {
            assert!(j.status.is_terminal(), "job {} of user {user} ended {:?}", j.id.short(), j.status);
            let kinds = per_job.get(&j.id).cloned().unwrap_or_default();
            let holds = kinds.iter().filter(|k| **k == OpKind::Hold).count();
            let settles = kinds.iter().filter(|k| matches!(k, OpKind::Capture | OpKind::Release)).count();
            assert_eq!((holds, settles), (1, 1), "job {}: ledger {kinds:?}", j.id.short());
            // Each attempt has its own prompt_id; none reached ComfyUI more than its attempts.
            let id = j.preassigned_id.as_deref().unwrap_or("");
            assert!(per_prompt_id.get(id).copied().unwrap_or(0) <= 1);
            let JobPayload::Generate { width, .. } = &j.payload else { panic!("a generate job") };
            let sent = photos.iter().filter(|w| **w == *width as u64).count();
            assert!(sent <= 1, "job {} delivered {sent} times", j.id.short());
            if j.status == JobStatus::Succeeded {
                succeeded += 1;
                assert!(kinds.contains(&OpKind::Capture), "a succeeded job is captured: {kinds:?}");
                if sent == 0 {
                    // Killed between recording the attempt and Telegram receiving it: the bot never
                    // sends twice on its own; the user got a notice and a button instead.
                    assert_eq!(
                        j.delivery,
                        Delivery::Interrupted,
                        "job {} (width {width}) undelivered: {:?}; photo widths in chat {user}: {photos:?}",
                        j.id.short(),
                        j.delivery
                    );
                    in_window += 1;
                    let JobPayload::Generate { prompt, .. } = &j.payload else { panic!("a generate job") };
                    let told = emu.messages(user).iter().any(|m| {
                        m.from_bot
                            && m.text
                                .as_deref()
                                .is_some_and(|t| t.contains("restarted while sending") && t.contains(prompt.as_str()))
                    });
                    assert!(told, "the user was told about {prompt:?} and offered a resend");
                } else {
                    // Interrupted: killed after the photo went out but before that was recorded.
                    assert!(matches!(j.delivery, Delivery::Delivered | Delivery::Interrupted), "job {}", j.id.short());
                }
                let item = j.result.expect("result item");
                let item =
                    store.read_blocking(move |rx| rx.get_library_item(item)).expect("read").expect("library item");
                assert!(store.media_path(&item.sha256, &item.ext).exists(), "result file on disk");
            } else {
                assert!(kinds.contains(&OpKind::Release), "a failed job is released: {kinds:?}");
                assert_eq!(sent, 0);
            }
        }
        let texts: Vec<String> =
            emu.messages(user).iter().map(|m| text_of(&serde_json::to_value(m).expect("json"))).collect();
        // A /start cut off after registering is answered again without the bonus line (the
        // bonus is already credited): the greeting is what must arrive; the bonus once, in the ledger.
        assert!(texts.iter().any(|t| t.starts_with("Hi, ")), "user {user} was greeted");
        assert_eq!(ops.iter().filter(|o| o.kind == OpKind::SignupBonus).count(), 1, "user {user}: one signup bonus");
    }
    eprintln!(
        "crash test: {KILLS} kills, {} jobs, {succeeded} succeeded, {} provider submits, {in_window} killed inside the delivery window, {notices} resend notices",
        jobs.len(),
        submits.len()
    );
    assert!(succeeded > 0);
    // A notice can go out twice (killed after sending it, before recording it): text only.
    let interrupted = jobs.iter().filter(|j| j.delivery == Delivery::Interrupted).count();
    assert!(notices >= interrupted, "{notices} notices for {interrupted} interrupted deliveries");
    let rejections = emu.rejections();
    assert!(rejections.is_empty(), "emulator rejected calls: {rejections:?}");
    let problems = store.read_blocking(crate::billing::verify).expect("verify");
    assert!(problems.is_empty(), "{problems:?}");
    emu_task.abort();
}
