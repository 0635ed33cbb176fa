//! The scheduler: scans the active-jobs table, starts one task per runnable job within the
//! provider's concurrency cap, and keeps each task behind a panic boundary.

use super::{Inner, JobEngine, JobProgress, generate};
use crate::domain::{JobId, JobStatus};
use crate::store::records::{ErrorClass, JobRecord};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

impl JobEngine {
    /// Runs until `shutdown` fires. Job tasks still running then are aborted: their state is
    /// already persisted and they resume on the next start.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut announced: std::collections::HashMap<JobId, u32> = Default::default();
        loop {
            if let Err(e) = self.schedule(&mut tasks, &mut announced).await {
                tracing::error!(error = %e, "scheduler pass failed");
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        tracing::info!("job engine stopped");
    }

    async fn schedule(
        &self,
        tasks: &mut JoinSet<()>,
        announced: &mut std::collections::HashMap<JobId, u32>,
    ) -> Result<(), crate::store::StoreError> {
        let jobs: Vec<JobRecord> = self
            .inner
            .store
            .read(|rx| {
                let ids = rx.find_active_jobs()?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(j) = rx.get_job(id)? {
                        out.push(j);
                    }
                }
                Ok(out)
            })
            .await?;
        let mut waiting_per_provider: std::collections::HashMap<String, u32> = Default::default();
        for job in jobs {
            if self.is_in_flight(job.id) {
                continue;
            }
            let permit = if job.status.is_terminal() {
                None
            } else {
                let Some(sem) = self.inner.permits.get(&job.provider_id) else {
                    // Provider removed from config: the job cannot run; release its hold.
                    self.start(tasks, job, None, true);
                    continue;
                };
                match sem.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        let n = waiting_per_provider.entry(job.provider_id.clone()).or_default();
                        *n += 1;
                        if announced.get(&job.id) != Some(n) {
                            announced.insert(job.id, *n);
                            let eta = self.eta_secs(&job).await;
                            let p = JobProgress { running: false, percent: 0, queue_position: Some(*n), eta_secs: eta };
                            let notifier = self.inner.notifier.clone();
                            tokio::spawn(async move { notifier.progress(&job, p).await });
                        }
                        continue;
                    }
                }
            };
            announced.remove(&job.id);
            self.start(tasks, job, permit, false);
        }
        Ok(())
    }

    fn is_in_flight(&self, id: JobId) -> bool {
        self.inner.in_flight.lock().map(|s| s.contains(&id)).unwrap_or(true)
    }

    fn start(
        &self,
        tasks: &mut JoinSet<()>,
        job: JobRecord,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        orphan: bool,
    ) {
        if let Ok(mut s) = self.inner.in_flight.lock() {
            s.insert(job.id);
        }
        let inner = self.inner.clone();
        let id = job.id;
        tasks.spawn(async move {
            let span = tracing::info_span!("job", job = %id, model = %job.model_id);
            let runner = {
                let inner = inner.clone();
                // Aborting this outer task (shutdown) must abort the job too.
                tokio_util::task::AbortOnDropHandle::new(tokio::spawn(tracing::Instrument::instrument(
                    async move {
                        if orphan {
                            generate::fail(&inner, job, ErrorClass::Internal, "provider not configured".into()).await;
                        } else {
                            generate::drive(&inner, job).await;
                        }
                    },
                    span,
                )))
            };
            // The inner task is the panic boundary: a panic fails the job, never the engine.
            let result = runner.await;
            drop(permit);
            if let Err(e) = result {
                if e.is_panic() {
                    tracing::error!(job = %id, "job task panicked");
                    if let Ok(Some(j)) = inner.store.read(move |rx| rx.get_job(id)).await {
                        if !j.status.is_terminal() {
                            generate::fail(&inner, j, ErrorClass::Internal, "internal error".into()).await;
                        }
                    }
                }
            }
            if let Ok(mut s) = inner.in_flight.lock() {
                s.remove(&id);
            }
            inner.wake.notify_one();
        });
    }
}

/// Number of jobs running now (for tests and the dashboard).
pub fn in_flight(inner: &Arc<Inner>) -> usize {
    inner.in_flight.lock().map(|s| s.len()).unwrap_or(0)
}

/// Marks a job cancelled if it is still unfinished (used by the bot's Cancel button later).
pub fn is_cancellable(job: &JobRecord) -> bool {
    matches!(job.status, JobStatus::Queued | JobStatus::Submitting | JobStatus::Submitted)
}
