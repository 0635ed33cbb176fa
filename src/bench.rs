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
    DynProvider, GenerateRequest, GeneratedImage, ImageProvider, ProgressFn, ProviderError, SizeParam, Submission,
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
    async fn wait(&self, _sub: &Submission, _progress: ProgressFn<'_>) -> Result<Vec<GeneratedImage>, ProviderError> {
        Ok(vec![GeneratedImage { bytes: self.png.clone(), mime: "image/png".into(), is_demo: false }])
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
    });
    let store = Store::open(dir)?;
    let billing = Billing::new(store.clone(), config.billing.clone());
    for u in 0..opts.users {
        billing
            .register(Profile {
                id: UserId(1 + u),
                first_name: format!("bench{u}"),
                username: None,
                language_code: Some("en".into()),
            })
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
    let engine = JobEngine::new(store.clone(), &config, providers, recorder.clone())?;
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
