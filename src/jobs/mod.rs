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
pub mod worker;

use crate::config::{Config, JobsConfig, ModelConfig, ProviderConfig};
use crate::domain::{ADD_TEXT_MODEL, Format, ImageId, JobId, JobStatus, LOCAL_PROVIDER, RESIZE_MODEL, UserId, now_ms};
use crate::imaging::Limits;
use crate::providers::DynProvider;
use crate::store::records::{Delivery, Draft, ErrorClass, JobPayload, JobRecord, LibraryItem};
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

/// What to send for a finished job: a photo Telegram accepts and the original as a document.
#[derive(Debug, Clone)]
pub struct ResultFiles {
    /// JPEG fitted to sendPhoto limits; `None` if the image cannot be shown as a photo.
    pub photo: Option<Vec<u8>>,
    pub document: Vec<u8>,
    pub document_name: String,
    #[allow(dead_code, reason = "the document's type, for callers that send it by other means")]
    pub document_mime: String,
}

/// Telegram file ids returned by a delivery.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveredFiles {
    pub photo_file_id: Option<String>,
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
    /// Sends the result. Called at most once per job. The photo's file_id goes to `photo_sent`
    /// as soon as Telegram accepted it, so the engine can record that the user has the result
    /// before the document (the slower half) goes out.
    async fn deliver(
        &self,
        job: &JobRecord,
        item: &LibraryItem,
        files: ResultFiles,
        photo_sent: tokio::sync::oneshot::Sender<String>,
    ) -> Result<DeliveredFiles, NotifyError>;
    /// Tells the user the job failed or was cancelled (`job.error` says why); the hold is
    /// already released. `alternatives` are enabled models for the same task (offered when the
    /// model was retired). Called at most once per job.
    async fn failed(&self, job: &JobRecord, alternatives: &[ModelConfig]) -> Result<(), NotifyError>;
    /// Tells the user that sending `item` was cut off by a restart (it may or may not have
    /// arrived) and offers to send it again. Called at most once per job.
    async fn delivery_interrupted(&self, job: &JobRecord, item: &LibraryItem) -> Result<(), NotifyError>;
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
}

pub(crate) struct Inner {
    pub store: Store,
    pub providers: HashMap<String, DynProvider>,
    pub provider_cfg: HashMap<String, ProviderConfig>,
    pub permits: HashMap<String, Arc<Semaphore>>,
    pub models: HashMap<String, ModelConfig>,
    pub workflows: HashMap<String, serde_json::Value>,
    pub notifier: Arc<dyn Notifier>,
    pub cfg: JobsConfig,
    pub limits: Limits,
    /// Price of a "📝 Add text" job (`billing.add_text_price`).
    pub add_text_price: crate::domain::Credits,
    /// Price of a "🔍 Resize" job (`billing.resize_price`).
    pub resize_price: crate::domain::Credits,
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
    /// Disabled models/providers (`model:<id>`, `provider:<id>`), mirrored from the store.
    pub disabled: Mutex<HashSet<String>>,
    /// Admin runtime settings (`price:<model>`, `concurrency:<provider>`), mirrored from the store.
    pub settings: Mutex<HashMap<String, i64>>,
    /// Permits each provider semaphore was sized to (config, then admin settings).
    pub capacity: Mutex<HashMap<String, u32>>,
    /// This process's worker id (claims).
    pub worker_id: String,
    pub admins: HashSet<i64>,
}

/// Handle to the job engine; cheap to clone.
#[derive(Clone)]
pub struct JobEngine {
    pub(crate) inner: Arc<Inner>,
}

/// Default ETA when nothing is known, seconds.
pub const DEFAULT_ETA_SECS: u64 = 120;

impl JobEngine {
    /// Builds the engine. `providers` maps provider id → implementation. Workflow files of
    /// ComfyUI models are read here, once.
    pub fn new(
        store: Store,
        config: &Config,
        providers: HashMap<String, DynProvider>,
        notifier: Arc<dyn Notifier>,
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
        let mut permits: HashMap<String, Arc<Semaphore>> = config
            .providers
            .iter()
            .map(|p| (p.id.clone(), Arc::new(Semaphore::new(p.max_concurrency as usize))))
            .collect();
        // Local tools are CPU-bound on a small machine: one at a time keeps the bot and the
        // panel responsive, and each takes about a second.
        permits.insert(LOCAL_PROVIDER.to_string(), Arc::new(Semaphore::new(1)));
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
        let disabled = store.read_blocking(|rx| rx.find_disabled())?.into_iter().map(|(k, _)| k).collect();
        let settings: HashMap<String, i64> = store.read_blocking(|rx| rx.find_settings())?.into_iter().collect();
        let mut capacity: HashMap<String, u32> =
            config.providers.iter().map(|p| (p.id.clone(), p.max_concurrency)).collect();
        for (provider, cap) in capacity.iter_mut() {
            if let (Some(sem), Some(want)) = (permits.get(provider), concurrency_setting(&settings, provider)) {
                // Nothing holds a permit yet, so the change is immediate.
                resize(sem, *cap, want);
                *cap = want;
            }
        }
        Ok(JobEngine {
            inner: Arc::new(Inner {
                store,
                providers,
                provider_cfg,
                permits,
                models: config.models.iter().map(|m| (m.id.clone(), m.clone())).collect(),
                workflows,
                notifier,
                cfg: config.jobs.clone(),
                limits: Limits::default(),
                add_text_price: config.billing.add_text_price,
                resize_price: config.billing.resize_price,
                library: config.library.clone(),
                wake: Notify::new(),
                broadcast_wake: Notify::new(),
                in_flight: Mutex::new(HashMap::new()),
                cancels: Mutex::new(HashMap::new()),
                key_permits,
                disabled: Mutex::new(disabled),
                settings: Mutex::new(settings),
                capacity: Mutex::new(capacity),
                worker_id: format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple()),
                admins: config.telegram.admins.iter().copied().collect(),
            }),
        })
    }

    /// Enabled models, in config order (for keyboards): enabled in config, not disabled at
    /// runtime, and on an enabled provider.
    pub fn models(&self, config: &Config) -> Vec<ModelConfig> {
        config
            .models
            .iter()
            .filter(|m| self.inner.model_usable(&m.id))
            .map(|m| ModelConfig { price: self.inner.price_of(m), ..m.clone() })
            .collect()
    }

    /// Whether this user's jobs jump the queue.
    pub fn is_admin(&self, user: UserId) -> bool {
        self.inner.admins.contains(&user.0)
    }

    /// Starts handling a Telegram update (see [`crate::store::Tx::begin_update`]).
    /// True if an earlier process began this update and died before finishing it.
    pub async fn update_interrupted(&self, update_id: i64) -> Result<bool, JobsError> {
        Ok(self.inner.store.read(move |rx| rx.update_interrupted(update_id)).await?)
    }

    pub async fn begin_update(&self, update_id: i64) -> Result<crate::store::UpdateStart, JobsError> {
        Ok(self.inner.store.write(move |tx| tx.begin_update(update_id)).await?)
    }

    /// Records that an update's handler finished, so a re-delivery is skipped.
    pub async fn finish_update(&self, update_id: i64) -> Result<(), JobsError> {
        Ok(self.inner.store.write(move |tx| tx.finish_update(update_id)).await?)
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

    /// Creates a job and holds its price in one write transaction. Also consumes the draft.
    ///
    /// A [`JobPayload::AddText`] job runs locally: `new.model_id` is ignored, the job gets
    /// [`ADD_TEXT_MODEL`] on [`LOCAL_PROVIDER`] at `billing.add_text_price`; likewise
    /// [`JobPayload::Resize`] gets [`RESIZE_MODEL`] at `billing.resize_price`.
    pub async fn submit(&self, new: NewJob) -> Result<Submitted, JobsError> {
        let (model_id, provider_id, price) = match &new.payload {
            JobPayload::AddText { .. } => {
                (ADD_TEXT_MODEL.to_string(), LOCAL_PROVIDER.to_string(), self.inner.add_text_price)
            }
            JobPayload::Resize { .. } => {
                (RESIZE_MODEL.to_string(), LOCAL_PROVIDER.to_string(), self.inner.resize_price)
            }
            JobPayload::Generate { .. } => {
                let model = self
                    .inner
                    .models
                    .get(&new.model_id)
                    .ok_or_else(|| JobsError::UnknownModel(new.model_id.clone()))?;
                if !model.enabled {
                    return Err(JobsError::ModelDisabled(model.id.clone()));
                }
                (model.id.clone(), model.provider.clone(), self.inner.price_of(model))
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
        };
        let draft_id = new.draft_id;
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
                match crate::billing::hold(tx, &mut job) {
                    Ok(_) => {}
                    Err(crate::billing::BillingError::InsufficientFunds { balance, price }) => {
                        // Returning Err drops the transaction: the draft stays usable.
                        return Err(StoreError::Refused(format!("insufficient:{}:{}", balance.0, price.0)));
                    }
                    Err(crate::billing::BillingError::Store(e)) => return Err(e),
                    Err(e) => return Err(StoreError::Refused(e.to_string())),
                }
                tx.put_job(&job)?;
                Ok(Submitted::Queued { job, eta_secs: 0 })
            })
            .await;
        let outcome = match outcome {
            Err(StoreError::Refused(s)) if s.starts_with("insufficient:") => {
                let mut parts = s.split(':').skip(1).map(|x| x.parse::<i64>().unwrap_or(0));
                let balance = crate::domain::Credits(parts.next().unwrap_or(0));
                let price = crate::domain::Credits(parts.next().unwrap_or(0));
                return Ok(Submitted::InsufficientFunds { balance, price });
            }
            other => other?,
        };
        Ok(match outcome {
            Submitted::Queued { job, .. } => {
                let eta = self.eta_secs(&job).await;
                self.inner.wake.notify_one();
                Submitted::Queued { job, eta_secs: eta }
            }
            o => o,
        })
    }

    /// Expected duration for a job's (model, format): mean of the last 10 runs with those
    /// settings → mean of all runs of the model → [`DEFAULT_ETA_SECS`].
    pub async fn eta_secs(&self, job: &JobRecord) -> u64 {
        eta_from(&self.inner.store, job.model_id.clone(), job.payload.stats_key().to_string()).await
    }

    /// ETA for a model and format before a job exists (see [`Self::eta_secs`]).
    pub async fn eta_for(&self, model: &str, format: Format) -> u64 {
        eta_from(&self.inner.store, model.to_string(), format.as_str().to_string()).await
    }

    /// A user's library item with its files prepared for Telegram (as a fresh delivery would
    /// send them), for "📥 Send it".
    pub async fn result_files(&self, user: UserId, id: crate::domain::ImageId) -> Result<StoredResult, JobsError> {
        let item = self.inner.store.read(move |rx| rx.get_library_item(id)).await?;
        let Some(item) = item.filter(|i| i.owner == user) else { return Ok(StoredResult::NotYours) };
        let Ok(bytes) = tokio::fs::read(self.inner.store.media_path(&item.sha256, &item.ext)).await else {
            return Ok(StoredResult::Missing);
        };
        Ok(match generate::prepare_files(&self.inner, bytes).await {
            Ok(files) => StoredResult::Ready(item, files),
            Err(_) => StoredResult::Missing,
        })
    }

    /// Saves a draft (a prompt waiting for buttons).
    pub async fn put_draft(&self, d: Draft) -> Result<(), JobsError> {
        Ok(self.inner.store.write(move |tx| tx.put_draft(&d)).await?)
    }

    /// Loads a draft.
    pub async fn get_draft(&self, id: u128) -> Result<Option<Draft>, JobsError> {
        Ok(self.inner.store.read(move |rx| rx.get_draft(id)).await?)
    }

    /// Validates a user's image (size and pixel limits, decodable), strips its metadata and
    /// stores it under `media/` for use as a job input.
    pub async fn accept_input(&self, bytes: Vec<u8>) -> Result<InputInfo, InputError> {
        let store = self.inner.store.clone();
        let limits = self.inner.limits.clone();
        tokio::task::spawn_blocking(move || {
            let clean = crate::imaging::strip_metadata(&bytes, &limits).map_err(InputError::Imaging)?;
            let info = crate::imaging::probe(&clean).map_err(InputError::Imaging)?;
            let sha256 = crate::imaging::sha256_hex(&clean);
            store.put_media_file(&sha256, crate::imaging::extension_for_mime(info.mime), &clean)?;
            Ok(InputInfo { sha256, width: info.width, height: info.height, bytes: clean.len() })
        })
        .await
        .map_err(|e| InputError::Store(StoreError::Join(e.to_string())))?
    }

    /// Flips the favourite flag of a library item owned by `user`. `None` if the item does
    /// not exist or belongs to someone else (never reveals which).
    pub async fn toggle_favourite(&self, user: UserId, id: ImageId) -> Result<Option<bool>, JobsError> {
        Ok(self
            .inner
            .store
            .write(move |tx| {
                let Some(mut item) = tx.get_library_item(id)? else { return Ok(None) };
                if item.owner != user {
                    return Ok(None);
                }
                item.favourite = !item.favourite;
                tx.put_library_item(&item)?;
                Ok(Some(item.favourite))
            })
            .await?)
    }

    /// Re-reads the disabled models/providers from the store (after the panel changed them),
    /// so the next job and the next keyboard see the change without a restart.
    pub async fn reload_disabled(&self) -> Result<(), JobsError> {
        let (keys, settings) = self.inner.store.read(|rx| Ok((rx.find_disabled()?, rx.find_settings()?))).await?;
        if let Ok(mut d) = self.inner.disabled.lock() {
            *d = keys.into_iter().map(|(k, _)| k).collect();
        }
        let settings: HashMap<String, i64> = settings.into_iter().collect();
        if let Ok(mut cap) = self.inner.capacity.lock() {
            for (provider, current) in cap.iter_mut() {
                let config = self.inner.provider_cfg.get(provider).map_or(*current, |p| p.max_concurrency);
                let want = concurrency_setting(&settings, provider).unwrap_or(config);
                if let Some(sem) = self.inner.permits.get(provider) {
                    resize(sem, *current, want);
                }
                *current = want;
            }
        }
        if let Ok(mut s) = self.inner.settings.lock() {
            *s = settings;
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Jobs a provider may run at once right now (config or admin setting).
    #[cfg(test)]
    pub fn concurrency(&self, provider: &str) -> Option<u32> {
        self.inner.capacity.lock().ok()?.get(provider).copied()
    }
}

/// `concurrency:<provider>` from the settings, if set and at least 1.
fn concurrency_setting(settings: &HashMap<String, i64>, provider: &str) -> Option<u32> {
    settings.get(&format!("concurrency:{provider}")).and_then(|v| u32::try_from(*v).ok()).filter(|v| *v > 0)
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

impl Inner {
    /// A model's price now: the admin's setting, else the config's.
    pub fn price_of(&self, m: &ModelConfig) -> crate::domain::Credits {
        let set = self.settings.lock().ok().and_then(|s| s.get(&format!("price:{}", m.id)).copied());
        set.map_or(m.price, crate::domain::Credits)
    }

    /// A model can take jobs: enabled in config, not disabled at runtime, provider present
    /// and not disabled.
    pub fn model_usable(&self, id: &str) -> bool {
        let Some(m) = self.models.get(id) else { return false };
        let disabled = self
            .disabled
            .lock()
            .map(|d| d.contains(&format!("model:{id}")) || d.contains(&format!("provider:{}", m.provider)))
            .unwrap_or(true);
        m.enabled && !disabled && self.providers.contains_key(&m.provider)
    }

    /// Enabled models for a task, excluding `except`.
    pub fn alternatives(&self, task: crate::domain::Task, except: &str) -> Vec<ModelConfig> {
        let mut v: Vec<ModelConfig> = self
            .models
            .values()
            .filter(|m| m.task == task && m.id != except && self.model_usable(&m.id))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Disables a model or provider at runtime (persisted). Returns true if it was enabled.
    pub async fn disable(&self, key: String, reason: String) -> bool {
        let k = key.clone();
        let changed = self.store.write(move |tx| tx.set_disabled(&k, Some(&reason))).await.unwrap_or(false);
        if let Ok(mut d) = self.disabled.lock() {
            d.insert(key);
        }
        changed
    }
}

pub(crate) async fn eta_from(store: &Store, model: String, format: String) -> u64 {
    let r = store.read(move |rx| rx.find_durations(&model, &format, 10)).await;
    let Ok((recent, all)) = r else { return DEFAULT_ETA_SECS };
    let mean = |v: &[u64]| v.iter().sum::<u64>() / v.len() as u64;
    let ms = if !recent.is_empty() {
        mean(&recent)
    } else if !all.is_empty() {
        mean(&all)
    } else {
        return DEFAULT_ETA_SECS;
    };
    ms.div_ceil(1000).max(1)
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
                for _ in 0..12 {
                    tx.insert_duration("m", "square", JobId::new(), 1_000)?;
                }
                tx.insert_duration("m", "square", JobId::new(), 91_000)
            })
            .await
            .expect("w");
        // Last 10 square runs: nine of 1 s and the newest 91 s → 10 s.
        assert_eq!(eta_from(&store, "m".into(), "square".into()).await, 10);
    }
}
