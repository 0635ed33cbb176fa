//! The scheduler: scans the active-jobs table, orders runnable jobs fairly, and starts one task
//! per job within the caps (per provider, per API key, per user), each behind a panic boundary.

use super::{Inner, JobEngine, JobProgress, generate};
use crate::domain::{JobId, JobStatus, UserId, now_ms};
use crate::store::records::{ErrorClass, JobRecord};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often a running job refreshes its claim.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// How often old uploads and drafts are pruned (also once at start).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Orders waiting jobs: admins' first, then round-robin across users (each user's n-th job
/// after everyone's (n−1)-th, counting jobs already running), oldest first within a round.
/// One user's 50 jobs therefore never starve another user's one.
pub fn fair_order(waiting: Vec<JobRecord>, running: &HashMap<UserId, u32>) -> Vec<JobRecord> {
    let mut seen: HashMap<UserId, u32> = HashMap::new();
    let mut keyed: Vec<(bool, u32, JobId, JobRecord)> = waiting
        .into_iter()
        .map(|j| {
            let n = seen.entry(j.user_id).or_insert_with(|| running.get(&j.user_id).copied().unwrap_or(0));
            let round = *n;
            *n += 1;
            (!j.priority, round, j.id, j)
        })
        .collect();
    keyed.sort_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    keyed.into_iter().map(|k| k.3).collect()
}

impl JobEngine {
    /// Runs until `shutdown` fires. Job tasks still running then are aborted: their state is
    /// already persisted and they resume on the next start.
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut announced: HashMap<JobId, u32> = HashMap::new();
        let mut next_prune = tokio::time::Instant::now();
        loop {
            // After a failed database write nothing new starts (its first write would fail);
            // the storage watchdog restarts the process once the disk has room.
            if !self.inner.store.io_watch().failed() {
                if let Err(e) = self.schedule(&mut tasks, &mut announced).await {
                    tracing::error!(error = %e, "scheduler pass failed");
                }
            }
            if tokio::time::Instant::now() >= next_prune {
                self.prune_inputs(now_ms()).await;
                next_prune = tokio::time::Instant::now() + PRUNE_EVERY;
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
        announced: &mut HashMap<JobId, u32>,
    ) -> Result<(), crate::store::StoreError> {
        let me = self.inner.worker_id.clone();
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
                Ok::<_, crate::store::StoreError>(out)
            })
            .await?;
        let (in_flight, mut running): (Vec<JobId>, HashMap<UserId, u32>) = {
            let f = self.inner.in_flight.lock().map(|f| f.clone()).unwrap_or_default();
            let mut per_user = HashMap::new();
            for u in f.values() {
                *per_user.entry(*u).or_insert(0) += 1;
            }
            (f.into_keys().collect(), per_user)
        };
        let mut waiting = Vec::new();
        for job in jobs {
            if in_flight.contains(&job.id) {
                continue;
            }
            // Claims are recorded (worker id + heartbeat) for operators. redb admits one
            // process per database, so a claim not held by one of this engine's live tasks
            // belongs to a dead process and is stale by construction: take it at once rather
            // than wait for its heartbeat to age after a crash.
            if job.claimed_by.as_deref().is_some_and(|by| by != me) {
                tracing::info!(job = %job.id, previous = ?job.claimed_by, "taking over a stale claim");
            }
            if job.status == JobStatus::AwaitingConfirmation {
                self.tend_question(tasks, job);
            } else if job.status.is_terminal() {
                self.start(tasks, job, vec![]);
            } else {
                waiting.push(job);
            }
        }
        let cap = self.inner.cfg.per_user_running;
        let mut position: HashMap<String, u32> = HashMap::new();
        for job in fair_order(waiting, &running) {
            let Some(sem) = self.inner.permits.get(&job.provider_id) else {
                self.start_orphan(tasks, job);
                continue;
            };
            let user_running = running.get(&job.user_id).copied().unwrap_or(0);
            let mut permits = Vec::new();
            if user_running < cap {
                if let Ok(p) = sem.clone().try_acquire_owned() {
                    permits.push(p);
                    if let Some(k) = self.inner.key_permits.get(&job.provider_id) {
                        match k.clone().try_acquire_owned() {
                            Ok(p) => permits.push(p),
                            Err(_) => permits.clear(),
                        }
                    }
                }
            }
            if permits.is_empty() {
                let n = position.entry(job.provider_id.clone()).or_default();
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
            announced.remove(&job.id);
            *running.entry(job.user_id).or_insert(0) += 1;
            self.start(tasks, job, permits);
        }
        Ok(())
    }

    /// A job waiting for its owner's yes or no to a pricier fallback runs nothing; it only
    /// gets its question asked again when a crash cut it off, and is declined (hold released,
    /// owner told) once `jobs.failover_answer_secs` pass unanswered.
    fn tend_question(&self, tasks: &mut JoinSet<()>, job: JobRecord) {
        let Some(f) = &job.failover else { return };
        let limit_ms = i64::try_from(self.inner.cfg.failover_answer_secs).unwrap_or(i64::MAX / 1000) * 1000;
        let expired = now_ms() >= f.at.saturating_add(limit_ms);
        if !expired && f.asked {
            return;
        }
        let inner = self.inner.clone();
        if let Ok(mut fl) = inner.in_flight.lock() {
            fl.insert(job.id, job.user_id);
        }
        tasks.spawn(async move {
            let id = job.id;
            if expired {
                if let Err(e) = generate::answer(&inner, None, id, false).await {
                    tracing::error!(job = %id, error = %e, "could not expire the failover question");
                }
            } else {
                generate::ask(&inner, job).await;
            }
            if let Ok(mut fl) = inner.in_flight.lock() {
                fl.remove(&id);
            }
        });
    }

    fn start_orphan(&self, tasks: &mut JoinSet<()>, job: JobRecord) {
        let inner = self.inner.clone();
        if let Ok(mut f) = inner.in_flight.lock() {
            f.insert(job.id, job.user_id);
        }
        tasks.spawn(async move {
            let id = job.id;
            generate::fail(&inner, job, ErrorClass::Internal, "provider not configured".into()).await;
            if let Ok(mut f) = inner.in_flight.lock() {
                f.remove(&id);
            }
        });
    }

    fn start(&self, tasks: &mut JoinSet<()>, job: JobRecord, permits: Vec<tokio::sync::OwnedSemaphorePermit>) {
        let id = job.id;
        let cancel = CancellationToken::new();
        if let Ok(mut f) = self.inner.in_flight.lock() {
            f.insert(id, job.user_id);
        }
        if let Ok(mut c) = self.inner.cancels.lock() {
            c.insert(id, cancel.clone());
        }
        let inner = self.inner.clone();
        tasks.spawn(async move {
            let span = tracing::info_span!("job", job = %id, model = %job.model_id, worker = %inner.worker_id);
            let runner = {
                let inner = inner.clone();
                let cancel = cancel.clone();
                // Aborting this outer task (shutdown) must abort the job too.
                tokio_util::task::AbortOnDropHandle::new(tokio::spawn(tracing::Instrument::instrument(
                    async move { run_claimed(&inner, job, cancel).await },
                    span,
                )))
            };
            // The inner task is the panic boundary: a panic fails the job, never the engine.
            let result = runner.await;
            drop(permits);
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
            if let Ok(mut f) = inner.in_flight.lock() {
                f.remove(&id);
            }
            if let Ok(mut c) = inner.cancels.lock() {
                c.remove(&id);
            }
            inner.wake.notify_one();
        });
    }
}

/// Claims the job for this worker, keeps the claim fresh, and drives the job; a cancel request
/// stops the driving, tells the provider, and releases the hold.
async fn run_claimed(inner: &Arc<Inner>, job: JobRecord, cancel: CancellationToken) {
    let id = job.id;
    let me = inner.worker_id.clone();
    let claimed = inner
        .store
        .write(move |tx| {
            let Some(mut j) = tx.get_job(id)? else { return Ok(None) };
            j.claimed_by = Some(me);
            j.heartbeat_at = Some(now_ms());
            tx.put_job(&j)?;
            Ok::<_, crate::store::StoreError>(Some(j))
        })
        .await;
    let Ok(Some(job)) = claimed else { return };
    let heartbeat = {
        let inner = inner.clone();
        tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                let _ = inner
                    .store
                    .write(move |tx| {
                        if let Some(mut j) = tx.get_job(id)? {
                            if !j.status.is_terminal() {
                                j.heartbeat_at = Some(now_ms());
                                tx.put_job(&j)?;
                            }
                        }
                        Ok::<_, crate::store::StoreError>(())
                    })
                    .await;
            }
        }))
    };
    tokio::select! {
        _ = generate::drive(inner, job) => {}
        _ = cancel.cancelled() => {
            drop(heartbeat);
            if let Ok(Some(j)) = inner.store.read(move |rx| rx.get_job(id)).await {
                if !j.status.is_terminal() {
                    if let (Some(sub), Some(p)) = (&j.submission, inner.providers.get(&j.provider_id)) {
                        if let Err(e) = p.cancel(sub).await {
                            tracing::warn!(error = %e, "provider cancel failed");
                        }
                    }
                    generate::fail(inner, j, ErrorClass::Cancelled, "cancelled by the user".into()).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(user: i64, priority: bool) -> JobRecord {
        JobRecord { priority, created_at: 0, ..crate::store::records::test_job(UserId(user), 1) }
    }

    #[test]
    fn fair_order_interleaves_users_and_puts_admins_first() {
        let mut waiting: Vec<JobRecord> = (0..20).map(|_| job(1, false)).collect();
        waiting.push(job(2, false));
        waiting.push(job(3, true));
        let order = fair_order(waiting, &HashMap::from([(UserId(1), 2)]));
        assert_eq!(order[0].user_id, UserId(3), "admin first");
        assert_eq!(order[1].user_id, UserId(2), "user 2's only job before user 1's third");
        assert!(order[2..].iter().all(|j| j.user_id == UserId(1)));
        // Within a user, FIFO.
        let ids: Vec<_> = order[2..].iter().map(|j| j.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }
}
