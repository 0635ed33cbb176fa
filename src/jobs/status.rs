//! `/status`: a user's queued, running and recent jobs, or one job by its short id, each with
//! its queue position and ETA — read from the queue and the job table, never from the bot.

use super::{JobEngine, JobsError, eta_from};
use crate::domain::{JobId, JobStatus, UserId};
use crate::store::records::JobRecord;

/// One job as `/status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    pub job: JobRecord,
    /// 1-based place among the jobs waiting for the same provider (creation order: the
    /// scheduler's per-user fairness may still let a job ahead), for a job not yet started.
    pub position: Option<u32>,
    /// Expected run time, seconds (the job's own settings, see [`JobEngine::eta_secs`]).
    pub eta_secs: u64,
}

/// Jobs `/status` lists for a user: the newest this many.
pub const STATUS_JOBS: usize = 10;

impl JobEngine {
    /// A user's newest [`STATUS_JOBS`] jobs, newest first, with positions and ETAs.
    pub async fn user_job_views(&self, user: UserId) -> Result<Vec<JobView>, JobsError> {
        let (jobs, waiting) = self
            .inner
            .store
            .read(move |rx| Ok::<_, crate::store::StoreError>((rx.find_user_jobs(user, STATUS_JOBS)?, waiting(rx)?)))
            .await?;
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.view(job, &waiting).await);
        }
        Ok(out)
    }

    /// One job by id (any user's: the caller decides who may see it).
    pub async fn job_view(&self, id: JobId) -> Result<Option<JobView>, JobsError> {
        let (job, waiting) =
            self.inner.store.read(move |rx| Ok::<_, crate::store::StoreError>((rx.get_job(id)?, waiting(rx)?))).await?;
        Ok(match job {
            Some(job) => Some(self.view(job, &waiting).await),
            None => None,
        })
    }

    async fn view(&self, job: JobRecord, waiting: &[(JobId, String)]) -> JobView {
        let position = (job.status == JobStatus::Queued).then(|| {
            let ahead = waiting.iter().filter(|(id, p)| *p == job.provider_id && *id < job.id).count();
            u32::try_from(ahead).unwrap_or(u32::MAX).saturating_add(1)
        });
        let eta_secs =
            eta_from(&self.inner.store, job.model_id.clone(), super::video::job_stats_key(&self.inner, &job)).await;
        JobView { job, position, eta_secs }
    }
}

/// The queued (not yet started) jobs: (id, provider), oldest first. Reads the queue index and
/// those jobs only.
fn waiting(rx: &crate::store::Rx) -> Result<Vec<(JobId, String)>, crate::store::StoreError> {
    let mut out = Vec::new();
    for id in rx.find_active_jobs()? {
        if let Some(j) = rx.get_job(id)?.filter(|j| j.status == JobStatus::Queued) {
            out.push((j.id, j.provider_id));
        }
    }
    Ok(out)
}
