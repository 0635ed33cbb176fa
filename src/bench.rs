//! `mediabot bench-queue`: the job engine's own overhead, measured with a provider that
//! answers at once and a notifier that only records the time of delivery.
//!
//! Everything else is the real path on a real redb file: submit (draft-less hold + job in one
//! write transaction) → scheduler claim + heartbeat → provider submit/wait → result stored
//! content-addressed + capture → photo/document preparation → delivery recorded. Two runs:
//! - burst: all jobs submitted at once; reports jobs/s from first submit to last delivery;
//! - one at a time: submit, wait for its delivery, repeat; reports the added latency per job
//!   (submit call → delivery) as p50/p90/p99.

use crate::billing::{Billing, Profile};
use crate::config::{Config, ModelConfig, ProviderConfig, ProviderKind};
use crate::domain::{Credits, Format, JobId, Task, UserId};
use crate::jobs::{DeliveredFiles, JobEngine, JobProgress, NewJob, Notifier, NotifyError, ResultFiles, Submitted};
use crate::providers::{
    DynProvider, GenerateRequest, GeneratedFile, ImageProvider, ProgressFn, ProviderError, SizeParam, Submission,
};
use crate::store::Store;
use crate::store::records::{JobPayload, JobRecord, LibraryItem};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// A provider with zero latency: every request returns the same small PNG.
struct NullProvider {
    png: Vec<u8>,
}

#[async_trait::async_trait]
impl ImageProvider for NullProvider {
    fn id(&self) -> &str {
        "null"
    }
    async fn submit(&self, _req: &GenerateRequest, _preassigned: Option<&str>) -> Result<Submission, ProviderError> {
        Ok(Submission { request_id: uuid::Uuid::new_v4().to_string(), data: serde_json::Value::Null })
    }
    async fn wait(&self, _sub: &Submission, _progress: ProgressFn<'_>) -> Result<Vec<GeneratedFile>, ProviderError> {
        Ok(vec![GeneratedFile { bytes: self.png.clone(), mime: "image/png".into(), is_demo: false }])
    }
    async fn cancel(&self, _sub: &Submission) -> Result<(), ProviderError> {
        Ok(())
    }
}

/// Records when each job's result was handed over.
#[derive(Default)]
struct Recorder {
    delivered: Mutex<HashMap<JobId, Instant>>,
    wake: Notify,
}

#[async_trait::async_trait]
impl Notifier for Recorder {
    async fn progress(&self, _job: &JobRecord, _p: JobProgress) {}
    async fn before_delivery(&self, _job: &JobRecord) {}
    async fn deliver(
        &self,
        job: &JobRecord,
        _item: &LibraryItem,
        _files: ResultFiles,
        photo_sent: tokio::sync::oneshot::Sender<String>,
    ) -> Result<DeliveredFiles, NotifyError> {
        let _ = photo_sent.send(format!("photo-{}", job.id.short()));
        if let Ok(mut d) = self.delivered.lock() {
            d.insert(job.id, Instant::now());
        }
        self.wake.notify_waiters();
        Ok(DeliveredFiles::default())
    }
    async fn failed(&self, job: &JobRecord, _alternatives: &[ModelConfig]) -> Result<(), NotifyError> {
        eprintln!("job {} failed: {:?}", job.id.short(), job.error);
        Ok(())
    }
    async fn delivery_interrupted(&self, _job: &JobRecord, _item: &LibraryItem) -> Result<(), NotifyError> {
        Ok(())
    }
    async fn admin_alert(&self, _text: &str) {}
}

/// Options of `mediabot bench-queue`.
#[derive(clap::Args, Debug, Clone)]
pub struct QueueBench {
    /// Jobs in the burst run.
    #[arg(long, default_value_t = 2000)]
    pub jobs: usize,
    /// Jobs in the one-at-a-time latency run.
    #[arg(long, default_value_t = 300)]
    pub sequential: usize,
    /// Distinct users the jobs belong to.
    #[arg(long, default_value_t = 50)]
    pub users: i64,
    /// Provider concurrency (`providers[].max_concurrency`).
    #[arg(long, default_value_t = 16)]
    pub concurrency: u32,
    /// Running jobs per user (`jobs.per_user_running`).
    #[arg(long, default_value_t = 4)]
    pub per_user: u32,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs both measurements in a fresh data dir under the system temp dir and prints a report.
pub async fn run(opts: QueueBench) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("mediabot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&dir, &opts).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(dir: &std::path::Path, opts: &QueueBench) -> anyhow::Result<()> {
    let mut config = Config::default();
    config.storage.data_dir = dir.to_path_buf();
    config.billing.signup_bonus = Credits(1_000_000_000);
    config.jobs.per_user_running = opts.per_user;
    config.providers.push(ProviderConfig {
        id: "null".into(),
        kind: ProviderKind::Demo,
        base_url: String::new(),
        base_urls: vec![],
        api_key: Default::default(),
        api_key_env: None,
        max_concurrency: opts.concurrency,
        timeout_secs: 60,
        poll_interval_ms: 10,
        key_concurrency: None,
        proxy: None,
    });
    config.models.push(ModelConfig {
        id: "null".into(),
        provider: "null".into(),
        display_name: "Null".into(),
        task: Task::TextToImage,
        endpoint: String::new(),
        workflow: None,
        price: Credits(1),
        formats: Format::ALL.to_vec(),
        aliases: vec![],
        size_param: SizeParam::ImageSize,
        params: Default::default(),
        timeout_secs: None,
        enabled: true,
        images: None,
        mask: false,
        options: vec![],
        image_fields: vec![],
        instruction: None,
        translate: false,
        fallbacks: vec![],
    });
    let store = Store::open(dir)?;
    let billing = Billing::new(store.clone(), config.billing.clone());
    for u in 0..opts.users {
        billing
            .register(
                Profile {
                    id: UserId(1 + u),
                    first_name: format!("bench{u}"),
                    username: None,
                    language_code: Some("en".into()),
                },
                None,
            )
            .await?;
    }
    let png = {
        let img = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 128]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)?;
        out.into_inner()
    };
    let providers: HashMap<String, DynProvider> =
        HashMap::from([("null".to_string(), Arc::new(NullProvider { png }) as DynProvider)]);
    let recorder = Arc::new(Recorder::default());
    let catalog = crate::catalog::Catalog::open(store.clone(), &config)?;
    let engine = JobEngine::new(store.clone(), &config, catalog, providers, recorder.clone())?;
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = {
        let (engine, stop) = (engine.clone(), stop.clone());
        tokio::spawn(async move { engine.run(stop).await })
    };

    let submit = |i: usize| {
        let engine = engine.clone();
        let user = UserId(1 + (i as i64 % opts.users));
        async move {
            let new = NewJob {
                user_id: user,
                chat_id: user.0,
                lang: "en".into(),
                model_id: "null".into(),
                payload: JobPayload::Generate {
                    prompt: format!("bench {i}"),
                    negative: None,
                    format: Format::Square,
                    width: 64,
                    height: 64,
                    aspect_ratio: None,
                    seed: i as u64,
                    inputs: vec![],
                    options: Default::default(),
                },
                progress_message_id: None,
                draft_id: None,
                priority: false,
            };
            let t = Instant::now();
            match engine.submit(new).await? {
                Submitted::Queued { job, .. } => Ok::<_, anyhow::Error>((job.id, t)),
                other => anyhow::bail!("not queued: {other:?}"),
            }
        }
    };
    let wait_for = |ids: Vec<JobId>, limit: Duration| {
        let recorder = recorder.clone();
        async move {
            let deadline = Instant::now() + limit;
            loop {
                let notified = recorder.wake.notified();
                let done = recorder.delivered.lock().map(|d| ids.iter().all(|i| d.contains_key(i))).unwrap_or(false);
                if done {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    anyhow::bail!("not all jobs delivered in {limit:?}");
                }
                let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
            }
        }
    };

    // Burst.
    let start = Instant::now();
    let mut submitted = Vec::with_capacity(opts.jobs);
    for i in 0..opts.jobs {
        submitted.push(submit(i).await?);
    }
    let submit_secs = start.elapsed().as_secs_f64();
    wait_for(submitted.iter().map(|(id, _)| *id).collect(), Duration::from_secs(600)).await?;
    let last = {
        let d = recorder.delivered.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        submitted.iter().filter_map(|(id, _)| d.get(id).copied()).max().unwrap_or(start)
    };
    let burst_secs = last.duration_since(start).as_secs_f64();

    // One at a time.
    let mut lat = Vec::with_capacity(opts.sequential);
    for i in 0..opts.sequential {
        let (id, t) = submit(opts.jobs + i).await?;
        wait_for(vec![id], Duration::from_secs(60)).await?;
        let at = recorder.delivered.lock().ok().and_then(|d| d.get(&id).copied()).unwrap_or(t);
        lat.push(at.duration_since(t));
    }
    lat.sort();
    stop.cancel();
    let _ = worker.await;
    let problems = store.read(crate::billing::verify).await?;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("queue benchmark (zero-latency provider, real redb at {})", dir.display());
    println!(
        "burst: {} jobs from {} users, provider concurrency {}, {} running per user",
        opts.jobs, opts.users, opts.concurrency, opts.per_user
    );
    println!("  submit (hold + job, one write txn each): {:.0} jobs/s", opts.jobs as f64 / submit_secs);
    println!(
        "  end to end (first submit → last delivery): {:.1} s = {:.0} jobs/s",
        burst_secs,
        opts.jobs as f64 / burst_secs
    );
    println!("one at a time: {} jobs", opts.sequential);
    println!(
        "  added latency submit → delivered: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.9)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap_or(&Duration::ZERO))
    );
    println!("ledger verify: {}", if problems.is_empty() { "clean".to_string() } else { format!("{problems:?}") });
    Ok(())
}

/// `mediabot bench-panel-seed`: fills a data dir with a large, realistic database for the
/// admin panel benchmark (BENCHMARKS.md), through the same write paths the bot uses, so the
/// dashboard aggregates and the search index are built as in production.
#[derive(clap::Args, Debug, Clone)]
pub struct PanelSeed {
    /// Data dir to create (must not hold a database yet).
    #[arg(long)]
    pub data_dir: std::path::PathBuf,
    #[arg(long, default_value_t = 100_000)]
    pub users: i64,
    /// Ledger rows per user: a signup bonus, one job's hold + capture, the rest admin adjustments.
    #[arg(long, default_value_t = 10)]
    pub rows_per_user: usize,
    /// Admin password to set (the benchmark logs in with it).
    #[arg(long, default_value = "bench-password")]
    pub password: String,
}

const FIRST_NAMES: [&str; 16] = [
    "Anna", "Boris", "Vera", "Oleg", "Maria", "Ivan", "Elena", "Pavel", "Olga", "Sergei", "Nina", "Dmitri", "Alex",
    "Sofia", "Max", "Kira",
];

/// Seeds `opts.users` users and `users × rows_per_user` ledger rows, 10 000 users per write
/// transaction; spreads creation times over the last 30 days.
pub fn seed_panel(opts: &PanelSeed) -> anyhow::Result<()> {
    use crate::domain::now_ms;
    use crate::store::records::{Delivery, UserRecord};
    anyhow::ensure!(opts.rows_per_user >= 3, "--rows-per-user must be at least 3");
    anyhow::ensure!(
        !opts.data_dir.join("mediabot.redb").exists(),
        "{} already holds a database",
        opts.data_dir.display()
    );
    let store = Store::open(&opts.data_dir)?;
    crate::admin::set_password_blocking(&store, &crate::admin::Actor::Cli, &opts.password)?;
    let started = Instant::now();
    let now = now_ms();
    let chunk = 10_000i64;
    let mut first = 1i64;
    while first <= opts.users {
        let last = (first + chunk - 1).min(opts.users);
        store.write_blocking(|tx| {
            for i in first..=last {
                let name = FIRST_NAMES[(i as usize) % FIRST_NAMES.len()];
                let created = now - (i % 30) * 86_400_000 - (i % 86_400) * 1000;
                let id = UserId(1_000_000 + i);
                tx.put_user(&UserRecord {
                    id,
                    first_name: format!("{name} {}", i % 977),
                    username: (i % 5 != 0).then(|| format!("{}_{i}", name.to_lowercase())),
                    language_code: Some(if i % 3 == 0 { "en" } else { "ru" }.into()),
                    balance: Credits(0),
                    held: Credits(0),
                    created_at: created,
                    updated_at: created,
                    blocked: false,
                    banned: i % 1000 == 0,
                    level: String::new(),
                    level_until: None,
                    language: None,
                    referral: Default::default(),
                })?;
                crate::billing::adjust(tx, id, Credits(100), "system", "signup bonus")?;
                let mut job = JobRecord {
                    id: JobId::new(),
                    user_id: id,
                    chat_id: id.0,
                    lang: "en".into(),
                    model_id: "flux-dev".into(),
                    provider_id: "fal".into(),
                    price: Credits(10),
                    payload: JobPayload::Generate {
                        prompt: format!("a lighthouse at dusk #{i}"),
                        negative: None,
                        format: Format::Square,
                        width: 1024,
                        height: 1024,
                        aspect_ratio: None,
                        seed: i as u64,
                        inputs: vec![],
                        options: Default::default(),
                    },
                    status: crate::domain::JobStatus::Succeeded,
                    hold_id: None,
                    settlement: None,
                    preassigned_id: None,
                    submission: None,
                    progress_message_id: None,
                    attempts: 1,
                    error: None,
                    created_at: created,
                    started_at: Some(created),
                    submitted_at: Some(created),
                    finished_at: Some(created + 8_000 + (i % 5000)),
                    result: None,
                    delivery: Delivery::Delivered,
                    draft_id: None,
                    claimed_by: None,
                    heartbeat_at: None,
                    priority: false,
                    translation: None,
                    quota_day: None,
                    failover: None,
                };
                crate::billing::hold(tx, &mut job)?;
                crate::billing::capture(tx, &mut job)?;
                tx.put_job(&job)?;
                tx.insert_duration("flux-dev", "square", job.id, 8_000 + (i % 5000) as u64)?;
                for k in 3..opts.rows_per_user {
                    let delta = if k % 2 == 0 { Credits(7) } else { Credits(-3) };
                    crate::billing::adjust(tx, id, delta, "admin:admin", "bench adjustment")?;
                }
            }
            Ok::<_, crate::billing::BillingError>(())
        })?;
        eprintln!("seeded users {first}..={last} ({:.0} s)", started.elapsed().as_secs_f64());
        first = last + 1;
    }
    let (users, rows) = store.read_blocking(|rx| {
        let mut rows = 0u64;
        rx.scan_operations(None, |_| {
            rows += 1;
            true
        })?;
        Ok::<_, crate::store::StoreError>((rx.count_users()?, rows))
    })?;
    eprintln!("done: {users} users, {rows} ledger rows in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
