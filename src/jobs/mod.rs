//! Durable jobs: submit (hold + job in one transaction), a scheduler over the active-jobs
//! table, and one task per job that drives it to a terminal state and a delivered result.
//!
//! Every step persists before it acts on the outside world, so a job interrupted at any point
//! (kill -9 included) resumes from its stored state: `Queued` runs, `Submitting` with a
//! client-chosen id asks the provider whether it arrived, `Submitted` is polled by its stored
//! request id, a finished job with `Delivery::Pending` is delivered; nothing is submitted or
//! settled twice.

pub mod broadcast;
pub mod generate;
pub mod library;
pub mod media;
pub mod status;
pub mod video;
pub mod worker;

pub use generate::FailoverAnswer;

use crate::billing::BillingError;
use crate::catalog::Catalog;
use crate::config::{Config, JobsConfig, ModelConfig, ProviderConfig};
use crate::domain::{ADD_TEXT_MODEL, Format, JobId, JobStatus, LOCAL_PROVIDER, RESIZE_MODEL, UserId, now_ms};
use crate::imaging::Limits;
use crate::providers::DynProvider;
use crate::store::records::{Delivery, ErrorClass, JobPayload, JobRecord, LOCAL_STATS_KEY, LibraryItem};
use crate::store::{Store, StoreError};
use std::collections::{HashMap, HashSet};

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};

/// Errors from job operations.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unknown model {0}")]
    UnknownModel(String),
    #[error("model {0} is disabled")]
    ModelDisabled(String),
    #[error(transparent)]
    Billing(#[from] BillingError),
    /// The uploaded photos a library item was made from were pruned
    /// (`library.input_retention_days`): it cannot be made again.
    #[error("the input photos are no longer stored")]
    InputsGone,
    /// The user's level refused the job (inside `submit`; returned as
    /// [`Submitted::LevelRefused`]).
    #[error("refused by the user's level: {0:?}")]
    Level(crate::billing::levels::LevelRefusal),
}

/// A user image accepted as job input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputInfo {
    pub sha256: String,
    pub width: u32,
    pub height: u32,
    pub bytes: usize,
}

/// Why an input image was refused.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Imaging(crate::imaging::ImagingError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the user is shown while a job waits or runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobProgress {
    /// True once the provider is working on it.
    pub running: bool,
    /// 0–99 while unfinished.
    pub percent: u8,
    /// 1-based place in line (ours or the provider's), when waiting.
    pub queue_position: Option<u32>,
    /// Expected seconds left.
    pub eta_secs: u64,
}

/// What to send for a finished job, by the result's kind ([`crate::domain::MediaKind`]).
#[derive(Debug, Clone)]
pub enum ResultFiles {
    /// A picture: a photo Telegram accepts (JPEG fitted to sendPhoto's limits, transparency on a
    /// checkerboard; `None` if it cannot be one) and the original as a document (PNG keeps its
    /// alpha channel there).
    Image { photo: Option<Vec<u8>>, document: Vec<u8>, name: String },
    /// A video: an MP4 goes as sendVideo (with `video`'s facts), a WebM as sendDocument
    /// (Telegram clients play only MPEG-4 inline; api.json sendVideo).
    Video { bytes: Vec<u8>, name: String, video: VideoFacts },
    /// sendAnimation (GIF, animated WebP), with width / height / duration when known.
    Animation { bytes: Vec<u8>, name: String, video: VideoFacts },
    /// sendDocument, as is.
    File { bytes: Vec<u8>, name: String },
    /// A result over Telegram's 50 MB upload limit: a message with a signed link to the
    /// appliance's own download route (`web.public_url`, valid
    /// [`crate::downloads::LINK_VALID_SECS`]); `size` in bytes.
    Link { url: String, size: u64 },
}

/// What Telegram is told about a video or an animation besides its bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VideoFacts {
    /// Duration (s) and frame size (px), probed from the bytes
    /// ([`crate::imaging::video::probe`]); `None` when the file does not say.
    pub meta: Option<crate::imaging::video::VideoMeta>,
    /// A JPEG ≤ 320 px for sendVideo's `thumbnail`: an animation's first frame, or for an MP4
    /// the job's input photo (no pure-Rust H.264 decoder); `None` for a text-to-video result.
    pub thumbnail: Option<Vec<u8>>,
    /// The MP4's `moov` precedes its `mdat`: only then is `supports_streaming` claimed.
    pub faststart: bool,
    /// An MP4 / QuickTime file (sendVideo); `false` for WebM (sendDocument).
    pub mp4: bool,
}

/// Telegram file ids returned by a delivery.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveredFiles {
    /// The photo of an image result.
    pub photo_file_id: Option<String>,
    /// The document, or the video / animation itself.
    pub document_file_id: Option<String>,
}

/// Errors a notifier reports back.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The user blocked the bot (Telegram 403): keep the result in the library.
    #[error("user blocked the bot")]
    Blocked,
    #[error("{0}")]
    Other(String),
}

/// The seam to Telegram: `jobs` calls it, `bot` implements it, `app` wires it.
#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    /// Updates the job's progress message. Called at most once per `jobs.progress_interval_ms`.
    async fn progress(&self, job: &JobRecord, p: JobProgress);
    /// Waits until the result can go out at once (chat action shown, the chat's send slot free).
    /// Called right before the job is marked `Delivery::Attempted`, so that marker covers only
    /// the send itself and a crash rarely lands between the two.
    async fn before_delivery(&self, job: &JobRecord);
    /// Sends the result. Called at most once per job. The file_id of the first message that
    /// gives the user the result (an image's photo, a video, an animation, a file) goes to
    /// `photo_sent` as soon as Telegram accepted it, so the engine can record that the user has
    /// the result before an image's document (the slower half) goes out.
    async fn deliver(
        &self,
        job: &JobRecord,
        item: &LibraryItem,
        files: ResultFiles,
        photo_sent: tokio::sync::oneshot::Sender<String>,
    ) -> Result<DeliveredFiles, NotifyError>;
    /// Sends a written prompt (a "✍️ Write" job's result) with the buttons that use it; the
    /// hold is already captured. Called at most once per job (a restart that cut the send off
    /// sends it again: it is text). Notifiers that deliver only files keep this default.
    async fn deliver_text(&self, job: &JobRecord, text: &str) -> Result<(), NotifyError> {
        let _ = (job, text);
        Err(NotifyError::Other("this notifier cannot send texts".into()))
    }
    /// Tells the user the job failed or was cancelled (`job.error` says why); the hold is
    /// already released. `alternatives` are enabled models for the same task (offered when the
    /// model was retired). Called at most once per job.
    async fn failed(&self, job: &JobRecord, alternatives: &[ModelConfig]) -> Result<(), NotifyError>;
    /// Tells the user that sending `item` was cut off by a restart (it may or may not have
    /// arrived) and offers to send it again. Called at most once per job.
    async fn delivery_interrupted(&self, job: &JobRecord, item: &LibraryItem) -> Result<(), NotifyError>;
    /// Asks the owner of a job whose model cannot run it whether to run it on the pricier
    /// fallback (`job.failover`: from, to, both prices) with yes / no buttons
    /// ([`JobEngine::answer_failover`] takes the press). Called once per question (again only
    /// after a crash cut the first one off). Notifiers that cannot ask keep this default,
    /// which refuses: the question then times out as a no.
    async fn ask_failover(&self, job: &JobRecord) -> Result<(), NotifyError> {
        let _ = job;
        Err(NotifyError::Other("this notifier cannot ask".into()))
    }
    /// Tells the owner their library is over `library.max_items_per_user` and only favourites
    /// are left to remove (which never happens silently). Called after the result was stored.
    async fn library_full(&self, _job: &JobRecord, _max_items: u32) {}
    /// Tells the admins (config `telegram.admins`) about something they must fix. Called once
    /// per incident (when a model or provider gets disabled).
    async fn admin_alert(&self, text: &str);
    /// Sends an admin broadcast to one chat: `text` alone, or `photo` (image bytes) with `text`
    /// as its caption. [`NotifyError::Blocked`] when the user blocked the bot. Notifiers that
    /// only serve jobs (benchmarks, some fakes) keep this default, which refuses.
    async fn broadcast(&self, chat_id: i64, text: &str, photo: Option<Vec<u8>>) -> Result<(), NotifyError> {
        let _ = (chat_id, text, photo);
        Err(NotifyError::Other("this notifier cannot broadcast".into()))
    }
}

/// Result of [`JobEngine::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job is being cancelled; the user gets the "cancelled" message when it is done.
    Cancelling,
    /// Too late: it already finished (or was cancelled before).
    AlreadyFinished,
    /// No such job for this user.
    NotFound,
}

/// Result of [`JobEngine::result_files`].
#[derive(Debug)]
pub enum StoredResult {
    /// No such item, or it belongs to someone else.
    NotYours,
    /// The item exists but its file is gone (or no longer decodes).
    Missing,
    /// The item and its files, ready to send.
    Ready(LibraryItem, ResultFiles),
}

/// A job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub user_id: UserId,
    pub chat_id: i64,
    pub lang: String,
    pub model_id: String,
    pub payload: JobPayload,
    pub progress_message_id: Option<i32>,
    /// The draft this job comes from; consumed in the same transaction (double-tap guard).
    pub draft_id: Option<u128>,
    /// Admin job: jumps the queue.
    pub priority: bool,
}

/// Result of [`JobEngine::submit`].
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// Job created and credits held.
    Queued { job: JobRecord, eta_secs: u64 },
    /// Balance too low; nothing was written.
    InsufficientFunds { balance: crate::domain::Credits, price: crate::domain::Credits },
    /// The draft already produced this job (a repeated button press).
    Duplicate(JobId),
    /// The user's access level refused it (today's quota used up, or a model the level does
    /// not include); nothing was written.
    LevelRefused(crate::billing::levels::LevelRefusal),
}

pub(crate) struct Inner {
    pub store: Store,
    pub providers: HashMap<String, DynProvider>,
    pub provider_cfg: HashMap<String, ProviderConfig>,
    pub permits: HashMap<String, Arc<Semaphore>>,
    /// Models with their runtime state (disabled, price, concurrency).
    pub catalog: Catalog,
    pub workflows: HashMap<String, serde_json::Value>,
    pub notifier: Arc<dyn Notifier>,
    pub cfg: JobsConfig,
    pub limits: Limits,
    /// Price of a "📝 Add text" job (`billing.add_text_price`).
    pub add_text_price: crate::domain::Credits,
    /// Price of a "🔍 Resize" job (`billing.resize_price`).
    pub resize_price: crate::domain::Credits,
    /// Price of a "✍️ Write" job (`billing.write_price`).
    pub write_price: crate::domain::Credits,
    /// Retention limits (`[library]`).
    pub library: crate::config::LibraryConfig,
    pub wake: Notify,
    /// Wakes the broadcast sender.
    pub broadcast_wake: Notify,
    /// Jobs with a running task, and their owners (per-user cap).
    pub in_flight: Mutex<HashMap<JobId, UserId>>,
    /// Cancel switches of running job tasks.
    pub cancels: Mutex<HashMap<JobId, tokio_util::sync::CancellationToken>>,
    /// Semaphores shared by providers with the same API key (fal: 10 per key).
    pub key_permits: HashMap<String, Arc<Semaphore>>,
    /// Permits each provider semaphore is sized to now (the catalog's concurrency, applied by
    /// [`JobEngine::apply_concurrency`]).
    pub capacity: Mutex<HashMap<String, u32>>,
    /// This process's worker id (claims).
    pub worker_id: String,
    /// The language model of `[llm]`, when configured: prompt writing and translation.
    pub llm: Option<Arc<crate::llm::Llm>>,
    /// Bound on translating one job's prompt (`llm.translate_timeout_secs`).
    pub translate_timeout: Duration,
    pub admins: HashSet<i64>,
    /// Download links for results over Telegram's upload limit (`web.public_url`).
    pub links: Option<media::Links>,
    /// Access levels: model restrictions, free levels and the daily quota taken at submit.
    pub levels: Arc<crate::billing::levels::Levels>,
}

/// Handle to the job engine; cheap to clone.
#[derive(Clone)]
pub struct JobEngine {
    pub(crate) inner: Arc<Inner>,
}

/// Default ETA when nothing is known, seconds.
pub const DEFAULT_ETA_SECS: u64 = 120;
/// Runs with the same (model, settings) an ETA averages (seed 004: the last 10).
pub const ETA_SAME_SETTINGS: usize = 10;
/// Runs of the model in any format an ETA averages when none had the same settings.
pub const ETA_ALL_SETTINGS: usize = 100;

impl JobEngine {
    /// The configured language model (`[llm]`), if any.
    pub fn llm(&self) -> Option<Arc<crate::llm::Llm>> {
        self.inner.llm.clone()
    }

    /// Builds the engine with levels on the system clock (see [`JobEngine::with_levels`]).
    #[cfg(any(test, feature = "bench"))]
    pub fn new(
        store: Store,
        config: &Config,
        catalog: Catalog,
        providers: HashMap<String, DynProvider>,
        notifier: Arc<dyn Notifier>,
    ) -> Result<JobEngine, JobsError> {
        let levels = Arc::new(crate::billing::levels::Levels::new(config, crate::billing::levels::Clock::system()));
        JobEngine::with_levels(store, config, catalog, providers, notifier, levels)
    }

    /// Builds the engine. `providers` maps provider id → implementation; `levels` is shared
    /// with `billing` (one clock). Workflow files of ComfyUI models are read here, once.
    pub fn with_levels(
        store: Store,
        config: &Config,
        catalog: Catalog,
        providers: HashMap<String, DynProvider>,
        notifier: Arc<dyn Notifier>,
        levels: Arc<crate::billing::levels::Levels>,
    ) -> Result<JobEngine, JobsError> {
        let mut workflows = HashMap::new();
        for m in &config.models {
            if let Some(path) = &m.workflow {
                let text = std::fs::read_to_string(path).map_err(StoreError::Io)?;
                let v = serde_json::from_str(&text).map_err(|e| StoreError::Codec(e.to_string()))?;
                workflows.insert(m.id.clone(), v);
            }
        }
        let provider_cfg: HashMap<_, _> = config.providers.iter().map(|p| (p.id.clone(), p.clone())).collect();
        let capacity: HashMap<String, u32> =
            config.providers.iter().map(|p| (p.id.clone(), catalog.concurrency(&p.id).unwrap_or(1))).collect();
        let mut permits: HashMap<String, Arc<Semaphore>> =
            capacity.iter().map(|(id, n)| (id.clone(), Arc::new(Semaphore::new(*n as usize)))).collect();
        // Local tools are CPU-bound on a small machine: one at a time keeps the bot and the
        // panel responsive, and each takes about a second.
        permits.insert(LOCAL_PROVIDER.to_string(), Arc::new(Semaphore::new(1)));
        // Prompt writing waits on the network, not the CPU: a few at once.
        permits.insert(crate::domain::LLM_PROVIDER.to_string(), Arc::new(Semaphore::new(4)));
        // Providers sharing a key share one semaphore; keyed by a hash so the key itself is
        // never kept in another place.
        let mut by_key: HashMap<String, Arc<Semaphore>> = HashMap::new();
        let mut key_permits = HashMap::new();
        for p in &config.providers {
            let (Some(limit), key) = (p.key_limit(), p.resolved_key()) else { continue };
            if key.is_empty() {
                continue;
            }
            let h = crate::imaging::sha256_hex(key.expose().as_bytes());
            let sem = by_key.entry(h).or_insert_with(|| Arc::new(Semaphore::new(limit as usize))).clone();
            key_permits.insert(p.id.clone(), sem);
        }
        // Validated with the config; what is left is a missing fal key or a client that
        // cannot be built, which the operator must fix before the bot starts.
        let llm = match &config.llm {
            Some(c) => Some(Arc::new(crate::llm::Llm::new(c).map_err(|e| StoreError::Codec(format!("[llm]: {e}")))?)),
            None => None,
        };
        let translate_timeout = Duration::from_secs(config.llm.as_ref().map_or(8, |c| c.translate_timeout_secs));
        let links = match &config.web.public_url {
            Some(url) => Some(media::Links {
                public_url: url.clone(),
                key: crate::downloads::LinkKey::load_or_create(&config.storage.data_dir).map_err(StoreError::from)?,
            }),
            None => None,
        };
        let engine = JobEngine {
            inner: Arc::new(Inner {
                llm,
                translate_timeout,
                store,
                providers,
                provider_cfg,
                permits,
                catalog,
                workflows,
                notifier,
                cfg: config.jobs.clone(),
                limits: Limits::default(),
                add_text_price: config.billing.add_text_price,
                resize_price: config.billing.resize_price,
                write_price: config.billing.write_price,
                library: config.library.clone(),
                wake: Notify::new(),
                broadcast_wake: Notify::new(),
                in_flight: Mutex::new(HashMap::new()),
                cancels: Mutex::new(HashMap::new()),
                key_permits,
                capacity: Mutex::new(capacity),
                worker_id: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
                admins: config.telegram.admins.iter().copied().collect(),
                links,
                levels,
            }),
        };
        // An admin's change of a concurrency applies at once, running or not.
        let weak = Arc::downgrade(&engine.inner);
        engine.inner.catalog.on_change(move || match weak.upgrade() {
            Some(inner) => {
                JobEngine { inner }.apply_concurrency();
                true
            }
            None => false,
        });
        Ok(engine)
    }

    /// Whether this user's jobs jump the queue.
    pub fn is_admin(&self, user: UserId) -> bool {
        self.inner.admins.contains(&user.0)
    }

    /// Resizes the provider semaphores to the catalog's concurrency (after an admin changed
    /// it) and lets the scheduler look again.
    pub fn apply_concurrency(&self) {
        if let Ok(mut cap) = self.inner.capacity.lock() {
            for (provider, current) in cap.iter_mut() {
                let want = self.inner.catalog.concurrency(provider).unwrap_or(*current);
                if let Some(sem) = self.inner.permits.get(provider) {
                    resize(sem, *current, want);
                }
                *current = want;
            }
        }
        self.inner.wake.notify_one();
    }

    /// Cancels a user's job: a queued one is released at once; a running one is told to stop
    /// (the provider is asked to cancel) and released when its task ends. Idempotent.
    pub async fn cancel(&self, user: UserId, job: JobId) -> Result<CancelOutcome, JobsError> {
        let Some(record) = self.inner.store.read(move |rx| rx.get_job(job)).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        if record.user_id != user {
            return Ok(CancelOutcome::NotFound);
        }
        if record.status.is_terminal() {
            return Ok(CancelOutcome::AlreadyFinished);
        }
        // Running: its task owns the job; flip its switch and let it clean up.
        if let Some(token) = self.inner.cancels.lock().ok().and_then(|c| c.get(&job).cloned()) {
            token.cancel();
            return Ok(CancelOutcome::Cancelling);
        }
        // Waiting: take it out of the scheduler's hands, then fail it as cancelled.
        {
            let Ok(mut f) = self.inner.in_flight.lock() else { return Ok(CancelOutcome::NotFound) };
            if f.contains_key(&job) {
                return Ok(CancelOutcome::Cancelling);
            }
            f.insert(job, user);
        }
        generate::fail(&self.inner, record, ErrorClass::Cancelled, "cancelled by the user".into()).await;
        if let Ok(mut f) = self.inner.in_flight.lock() {
            f.remove(&job);
        }
        Ok(CancelOutcome::Cancelling)
    }

    /// The owner's yes or no to a job's failover question (see [`generate::answer`]): acts
    /// once, for the job's owner only; a second press finds it answered.
    pub async fn answer_failover(&self, user: UserId, job: JobId, yes: bool) -> Result<FailoverAnswer, JobsError> {
        generate::answer(&self.inner, Some(user), job, yes).await
    }

    /// Creates a job and holds its price in one write transaction. Also consumes the draft.
    ///
    /// A [`JobPayload::Generate`] job is priced by the catalog (base price + chosen options).
    /// A [`JobPayload::AddText`] job runs locally: `new.model_id` is ignored, the job gets
    /// [`ADD_TEXT_MODEL`] on [`LOCAL_PROVIDER`] at `billing.add_text_price`; likewise
    /// [`JobPayload::Resize`] gets [`RESIZE_MODEL`] at `billing.resize_price`, and
    /// [`JobPayload::WritePrompt`] [`crate::domain::WRITE_MODEL`] on the language model at
    /// `billing.write_price` ([`JobsError::ModelDisabled`] when no `[llm]` is configured).
    /// Errors: [`JobsError::UnknownModel`], [`JobsError::ModelDisabled`],
    /// [`JobsError::InputsGone`] when an input file was pruned (a rerun of an old edit); a
    /// balance below the price is not an error but [`Submitted::InsufficientFunds`], and the
    /// user's level refusing it (quota, model) [`Submitted::LevelRefused`], with nothing
    /// written. A generation counts against the level's daily quota in this transaction; a
    /// free level makes any job cost 0.
    pub async fn submit(&self, new: NewJob) -> Result<Submitted, JobsError> {
        let (store, files) =
            (self.inner.store.clone(), new.payload.input_files().map(str::to_string).collect::<Vec<_>>());
        let missing = tokio::task::spawn_blocking(move || files.iter().any(|f| store.find_media_file(f).is_none()))
            .await
            .map_err(|e| JobsError::Store(StoreError::Join(e.to_string())))?;
        if missing {
            return Err(JobsError::InputsGone);
        }
        let (model_id, provider_id, price) = match &new.payload {
            JobPayload::AddText { .. } => {
                (ADD_TEXT_MODEL.to_string(), LOCAL_PROVIDER.to_string(), self.inner.add_text_price)
            }
            JobPayload::Resize { .. } => {
                (RESIZE_MODEL.to_string(), LOCAL_PROVIDER.to_string(), self.inner.resize_price)
            }
            JobPayload::WritePrompt { .. } if self.inner.llm.is_none() => {
                return Err(JobsError::ModelDisabled(crate::domain::WRITE_MODEL.into()));
            }
            JobPayload::WritePrompt { .. } => {
                (crate::domain::WRITE_MODEL.into(), crate::domain::LLM_PROVIDER.into(), self.inner.write_price)
            }
            JobPayload::Generate { options, .. } => {
                let catalog = &self.inner.catalog;
                let model =
                    catalog.model(&new.model_id).ok_or_else(|| JobsError::UnknownModel(new.model_id.clone()))?;
                // A switched-off model with a usable fallback still takes jobs: they hold its
                // price and move to the fallback before they start (`generate::failover`).
                if !catalog.is_offered(&model.id) {
                    return Err(JobsError::ModelDisabled(model.id.clone()));
                }
                let price = catalog.quote(&model.id, options).ok_or(BillingError::Overflow)?;
                (model.id.clone(), model.provider.clone(), price)
            }
        };
        let mut job = JobRecord {
            id: JobId::new(),
            user_id: new.user_id,
            chat_id: new.chat_id,
            lang: new.lang,
            model_id,
            provider_id,
            price,
            payload: new.payload,
            status: JobStatus::Queued,
            hold_id: None,
            settlement: None,
            preassigned_id: None,
            submission: None,
            progress_message_id: new.progress_message_id,
            attempts: 0,
            error: None,
            created_at: now_ms(),
            started_at: None,
            submitted_at: None,
            finished_at: None,
            result: None,
            delivery: Delivery::Pending,
            draft_id: new.draft_id,
            claimed_by: None,
            heartbeat_at: None,
            priority: new.priority,
            translation: None,
            quota_day: None,
            failover: None,
        };
        let draft_id = new.draft_id;
        let levels = self.inner.levels.clone();
        let outcome = self
            .inner
            .store
            .write(move |tx| {
                if let Some(d) = draft_id {
                    if let Some(mut draft) = tx.get_draft(d)? {
                        if let Some(existing) = draft.job_id {
                            return Ok(Submitted::Duplicate(existing));
                        }
                        draft.job_id = Some(job.id);
                        tx.put_draft(&draft)?;
                    }
                }
                // An error here drops the whole transaction: the draft stays usable.
                let generation = matches!(job.payload, JobPayload::Generate { .. }).then(|| job.model_id.clone());
                if let Err(refusal) = crate::billing::levels::admit(tx, &levels, &mut job, generation.as_deref())? {
                    return Err(JobsError::Level(refusal));
                }
                crate::billing::hold(tx, &mut job)?;
                tx.put_job(&job)?;
                Ok::<_, JobsError>(Submitted::Queued { job, eta_secs: 0 })
            })
            .await;
        match outcome {
            Ok(Submitted::Queued { job, .. }) => {
                let eta = self.eta_secs(&job).await;
                self.inner.wake.notify_one();
                Ok(Submitted::Queued { job, eta_secs: eta })
            }
            Err(JobsError::Billing(BillingError::InsufficientFunds { balance, price })) => {
                Ok(Submitted::InsufficientFunds { balance, price })
            }
            Err(JobsError::Level(refusal)) => Ok(Submitted::LevelRefused(refusal)),
            other => other,
        }
    }

    /// Expected duration for a job's (model, format), seconds: mean of the last
    /// [`ETA_SAME_SETTINGS`] runs with those settings → mean of the model's last
    /// [`ETA_ALL_SETTINGS`] runs → [`DEFAULT_ETA_SECS`]. Reads at most those rows.
    pub async fn eta_secs(&self, job: &JobRecord) -> u64 {
        eta_from(&self.inner.store, job.model_id.clone(), video::job_stats_key(&self.inner, job)).await
    }

    /// The price of the user's usual model, for "≈ N generations" on top-up offers: the model
    /// of their latest job when it is still usable (its base price now, without options),
    /// else the cheapest usable text_to_image model. `None` when neither exists.
    pub async fn usual_price(&self, user: UserId) -> Option<crate::domain::Credits> {
        let catalog = &self.inner.catalog;
        let latest = self.inner.store.read(move |rx| rx.find_user_jobs(user, 1)).await.ok()?.into_iter().next();
        let usual = latest
            .map(|j| j.model_id)
            .filter(|id| catalog.is_usable(id))
            .and_then(|id| catalog.model(&id))
            .map(|m| catalog.base_price(&m));
        usual.or_else(|| catalog.for_task(crate::domain::Task::TextToImage).iter().map(|m| m.price).min())
    }

    /// ETA for a model and format before a job exists (see [`Self::eta_secs`]); a video
    /// model's settings are not known here, so its model-wide mean answers.
    pub async fn eta_for(&self, model: &str, format: Format) -> u64 {
        eta_from(&self.inner.store, model.to_string(), format.as_str().to_string()).await
    }

    /// ETA of a local tool job (`ADD_TEXT_MODEL`, `RESIZE_MODEL`) before it exists; its time
    /// does not depend on a format (see [`JobPayload::stats_key`]).
    pub async fn eta_for_tool(&self, model: &str) -> u64 {
        eta_from(&self.inner.store, model.to_string(), LOCAL_STATS_KEY.to_string()).await
    }

    /// A user's library item with its files prepared for Telegram (as a fresh delivery would
    /// send them), for "📥 Send it".
    pub async fn result_files(&self, user: UserId, id: crate::domain::ImageId) -> Result<StoredResult, JobsError> {
        let item = self.inner.store.read(move |rx| rx.get_library_item(id)).await?;
        let Some(item) = item.filter(|i| i.owner == user) else { return Ok(StoredResult::NotYours) };
        let Ok(bytes) = tokio::fs::read(self.inner.store.media_path(&item.sha256, &item.ext)).await else {
            return Ok(StoredResult::Missing);
        };
        Ok(match generate::prepare_files(&self.inner, &item, bytes).await {
            Ok(files) => StoredResult::Ready(item, files),
            Err(_) => StoredResult::Missing,
        })
    }

    /// Width and height in pixels of a stored input or result file (sha256 under `media/`);
    /// `None` when it is gone or not a picture. Read on the blocking pool.
    pub async fn input_size(&self, sha256: &str) -> Option<(u32, u32)> {
        let (store, sha) = (self.inner.store.clone(), sha256.to_string());
        tokio::task::spawn_blocking(move || {
            let (path, _) = store.find_media_file(&sha)?;
            let bytes = std::fs::read(path).ok()?;
            crate::imaging::probe(&bytes).ok().map(|i| (i.width, i.height))
        })
        .await
        .ok()
        .flatten()
    }

    /// The prompt a "✍️ Write" job of `user` wrote: `Ok(None)` for someone else's job, one
    /// that is not a Write job or has not written yet.
    pub async fn written_prompt(&self, user: UserId, job: JobId) -> Result<Option<String>, JobsError> {
        let record = self.inner.store.read(move |rx| rx.get_job(job)).await?;
        Ok(match record {
            Some(j) if j.user_id == user => match j.payload {
                JobPayload::WritePrompt { written, .. } => written,
                _ => None,
            },
            _ => None,
        })
    }

    /// Validates a user's image (size and pixel limits, decodable), strips its metadata and
    /// stores it under `media/` for use as a job input, recorded as a live input (kept
    /// `library.input_retention_days` after its last use).
    pub async fn accept_input(&self, bytes: Vec<u8>) -> Result<InputInfo, InputError> {
        let store = self.inner.store.clone();
        let limits = self.inner.limits.clone();
        tokio::task::spawn_blocking(move || {
            let clean = crate::imaging::strip_metadata(&bytes, &limits).map_err(InputError::Imaging)?;
            let info = crate::imaging::probe(&clean).map_err(InputError::Imaging)?;
            let sha256 = crate::imaging::sha256_hex(&clean);
            let ext = crate::imaging::extension_for_mime(info.mime);
            // The heavy write outside the write lock; `put_input_file` only checks it is there.
            store.put_media_file(&sha256, ext, &clean)?;
            store.put_input_file(&sha256, ext, &clean, now_ms())?;
            Ok(InputInfo { sha256, width: info.width, height: info.height, bytes: clean.len() })
        })
        .await
        .map_err(|e| InputError::Store(StoreError::Join(e.to_string())))?
    }

    /// Drops uploaded inputs and drafts unused for `library.input_retention_days` (files
    /// only when nothing references them any more); adopts the inputs of jobs written before
    /// inputs had records, once. `now` in ms since the epoch. Errors are logged.
    pub async fn prune_inputs(&self, now: i64) {
        let days = self.inner.library.input_retention_days;
        if days == 0 {
            return;
        }
        let store = self.inner.store.clone();
        match tokio::task::spawn_blocking(move || store.adopt_inputs(now)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(inputs = n, "inputs of older jobs now have a retention"),
            Ok(Err(e)) => tracing::error!(error = %e, "could not adopt older inputs"),
            Err(e) => tracing::error!(error = %e, "could not adopt older inputs"),
        }
        let max_age = i64::from(days) * 86_400_000;
        let pruned = self
            .inner
            .store
            .write_pruning(move |tx| {
                let p = tx.prune_inputs(now, max_age)?;
                let orphans = p.orphans.clone();
                Ok::<_, StoreError>((p, orphans))
            })
            .await;
        match pruned {
            Ok(p) if p.inputs + p.drafts > 0 => {
                tracing::info!(inputs = p.inputs, files = p.orphans.len(), drafts = p.drafts, "pruned old uploads")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "could not prune old uploads"),
        }
    }

    /// Jobs a provider may run at once right now (config or admin setting).
    #[cfg(test)]
    pub fn concurrency(&self, provider: &str) -> Option<u32> {
        self.inner.capacity.lock().ok()?.get(provider).copied()
    }
}

/// Moves a semaphore from `from` to `to` permits. Growing is immediate; shrinking forgets free
/// permits now and, for permits held by running jobs, takes them as those jobs finish.
fn resize(sem: &Arc<Semaphore>, from: u32, to: u32) {
    if to > from {
        sem.add_permits((to - from) as usize);
    } else if to < from {
        let want = (from - to) as usize;
        let gone = sem.forget_permits(want);
        if gone < want {
            let (sem, rest) = (sem.clone(), u32::try_from(want - gone).unwrap_or(u32::MAX));
            tokio::spawn(async move {
                if let Ok(p) = sem.acquire_many_owned(rest).await {
                    p.forget();
                }
            });
        }
    }
}

pub(crate) async fn eta_from(store: &Store, model: String, format: String) -> u64 {
    let r = store
        .read(move |rx| {
            let same = rx.find_durations(&model, &format, ETA_SAME_SETTINGS)?;
            if !same.is_empty() {
                return Ok::<_, StoreError>(same);
            }
            rx.find_recent_durations(&model, ETA_ALL_SETTINGS)
        })
        .await;
    match r {
        Ok(runs) if !runs.is_empty() => (runs.iter().sum::<u64>() / runs.len() as u64).div_ceil(1000).max(1),
        _ => DEFAULT_ETA_SECS,
    }
}

/// Backoff before retry number `attempt` (1-based): base·2^(attempt−1), ×[0.5, 1.5) jitter,
/// capped at 60 s.
pub fn backoff(base_ms: u64, attempt: u32) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << attempt.saturating_sub(1).min(16));
    let jitter: f64 = 0.5 + rand::random::<f64>();
    Duration::from_millis(((exp as f64 * jitter) as u64).min(60_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let a = backoff(100, 1).as_millis();
        assert!((50..150).contains(&a), "{a}");
        let c = backoff(100, 4).as_millis();
        assert!((400..1200).contains(&c), "{c}");
        assert!(backoff(100_000, 30) <= Duration::from_secs(60));
    }

    #[tokio::test]
    async fn eta_prefers_recent_same_settings_then_all_then_default() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        assert_eq!(eta_from(&store, "m".into(), "square".into()).await, DEFAULT_ETA_SECS);
        store
            .write(|tx| {
                tx.insert_duration("m", "vertical", JobId::new(), 30_000)?;
                tx.insert_duration("m", "vertical", JobId::new(), 50_000)
            })
            .await
            .expect("w");
        // No square runs yet: mean of all runs of the model.
        assert_eq!(eta_from(&store, "m".into(), "square".into()).await, 40);
        store
            .write(|tx| {
                for _ in 0..22 {
                    tx.insert_duration("m", "square", JobId::new(), 1_000)?;
                }
                tx.insert_duration("m", "square", JobId::new(), 181_000)
            })
            .await
            .expect("w");
        // Last 10 square runs (seed 004's rule): nine of 1 s and the newest 181 s → 19 s.
        assert_eq!(eta_from(&store, "m".into(), "square".into()).await, 19);
    }

    #[tokio::test]
    async fn eta_reads_a_bounded_window_of_the_newest_runs() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        // 500 old runs of 100 s in a format that sorts last, then 100 newer ones of 10 s.
        store
            .write(|tx| {
                for _ in 0..500 {
                    tx.insert_duration("m", "vertical", JobId::new(), 100_000)?;
                }
                for _ in 0..ETA_ALL_SETTINGS {
                    tx.insert_duration("m", "horizontal", JobId::new(), 10_000)?;
                }
                Ok::<_, StoreError>(())
            })
            .await
            .expect("w");
        // No square runs: the model's newest 100 runs, whatever their format → 10 s (all 600
        // would say 86 s; the key order, by format, would pick the old vertical ones).
        assert_eq!(eta_from(&store, "m".into(), "square".into()).await, 10);
        assert_eq!(eta_from(&store, "m".into(), "vertical".into()).await, 100, "same settings first");
        let recent = store.read(|rx| rx.find_recent_durations("m", 150)).await.expect("r");
        assert_eq!(recent.len(), 150);
        assert!(recent[..100].iter().all(|ms| *ms == 10_000) && recent[100..].iter().all(|ms| *ms == 100_000));
    }
}
