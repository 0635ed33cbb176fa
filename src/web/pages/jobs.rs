//! `/admin/jobs`: the newest jobs, refreshed in place by `admin.js` from `/admin/jobs/rows`;
//! `/admin/jobs/{id}`: one job's provider id, attempts, error and timings.

use super::{CsrfForm, Layout, status_name};
use crate::domain::{JobId, JobStatus};
use crate::jobs::{CancelOutcome, JobsError, NewJob, Submitted};
use crate::store::StoreError;
use crate::store::records::JobRecord;
use crate::web::auth::AdminSession;
use crate::web::error::WebError;
use crate::web::{WebState, fmt_time};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Path, State};
use axum::response::Redirect;

const LIST_ROWS: usize = 100;

/// A job row for display.
pub struct JobRow {
    pub id: String,
    pub user: i64,
    pub model: String,
    pub status: &'static str,
    pub price: i64,
    pub attempts: u32,
    pub created: String,
    pub duration: String,
}

fn ms_text(ms: Option<i64>) -> String {
    ms.map(|m| format!("{:.1} s", m as f64 / 1000.0)).unwrap_or_default()
}

impl From<&JobRecord> for JobRow {
    fn from(j: &JobRecord) -> Self {
        JobRow {
            id: j.id.to_string(),
            user: j.user_id.0,
            model: j.model_id.clone(),
            status: status_name(j.status),
            price: j.price.0,
            attempts: j.attempts,
            created: fmt_time(j.created_at),
            duration: ms_text(j.finished_at.map(|f| f - j.created_at)),
        }
    }
}

async fn newest(st: &WebState) -> Result<Vec<JobRow>, WebError> {
    let jobs = st.store.read(|rx| rx.find_jobs_page(None, LIST_ROWS)).await?;
    Ok(jobs.iter().map(JobRow::from).collect())
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/jobs.html")]
pub struct JobsPage {
    layout: Layout,
    queue_depth: usize,
    rows: Vec<JobRow>,
}

/// `GET /admin/jobs`.
pub async fn list(State(st): State<WebState>, session: AdminSession) -> Result<JobsPage, WebError> {
    let queue_depth = st.store.read(|rx| Ok::<_, WebError>(rx.find_active_jobs()?.len())).await?;
    Ok(JobsPage { layout: Layout::new("Jobs", Some(&session)), queue_depth, rows: newest(&st).await? })
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/job_rows.html")]
pub struct JobRows {
    rows: Vec<JobRow>,
}

/// `GET /admin/jobs/rows`: the table body alone (escaped by askama), for the auto-refresh.
pub async fn rows(State(st): State<WebState>, _session: AdminSession) -> Result<JobRows, WebError> {
    Ok(JobRows { rows: newest(&st).await? })
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/job.html")]
pub struct JobPage {
    layout: Layout,
    j: JobRow,
    provider: String,
    request_id: String,
    /// The ComfyUI server of a pool the job went to (stored without credentials); empty else.
    server: String,
    error: String,
    started: String,
    submitted: String,
    finished: String,
    prompt: String,
    /// Finished: offer retry instead of cancel.
    terminal: bool,
}

async fn load(st: &WebState, id: &str) -> Result<JobRecord, WebError> {
    let id = JobId(super::parse_uuid(id)?);
    Ok(st.store.read(move |rx| rx.get_job(id)?.ok_or_else(|| StoreError::NotFound("job".into()))).await?)
}

/// `GET /admin/jobs/{id}` (id is the UUID).
pub async fn get(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<String>,
) -> Result<JobPage, WebError> {
    let j = load(&st, &id).await?;
    let t = |v: Option<i64>| v.map(fmt_time).unwrap_or_default();
    let prompt = j.payload.prompt();
    Ok(JobPage {
        layout: Layout::new("Job", Some(&session)),
        provider: j.provider_id.clone(),
        request_id: j
            .submission
            .as_ref()
            .map(|s| s.request_id.clone())
            .or_else(|| j.preassigned_id.clone())
            .unwrap_or_default(),
        server: j
            .submission
            .as_ref()
            .and_then(|s| s.data.get("server"))
            .and_then(|v| v.as_str())
            .map(crate::config::redacted_url)
            .unwrap_or_default(),
        error: j.error.as_ref().map(|e| format!("{:?}: {}", e.class, e.detail)).unwrap_or_default(),
        started: t(j.started_at),
        submitted: t(j.submitted_at),
        finished: t(j.finished_at),
        prompt: prompt.to_string(),
        terminal: j.status.is_terminal(),
        j: JobRow::from(&j),
    })
}

async fn audit(st: &WebState, entry: crate::store::records::AuditEntry) -> Result<(), WebError> {
    Ok(st.store.write(move |tx| tx.insert_audit(&entry)).await?)
}

/// `POST /admin/jobs/{id}/cancel`: a queued job is failed as cancelled and its hold released
/// at once; a running one is told to stop (the provider is asked to cancel) and released when
/// its task ends. The user gets the usual "cancelled" message. 409 if it already finished.
pub async fn cancel(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    let j = load(&st, &id).await?;
    let outcome = st.jobs()?.cancel(j.user_id, j.id).await.map_err(jobs_error)?;
    match outcome {
        CancelOutcome::Cancelling => {}
        CancelOutcome::AlreadyFinished => return Err(WebError::Conflict("the job already finished")),
        CancelOutcome::NotFound => return Err(WebError::NotFound),
    }
    let entry = session.audit(
        "cancel_job",
        format!("job:{}", j.id),
        format!("status={}", status_name(j.status)),
        "cancelling".into(),
    );
    audit(&st, entry).await?;
    Ok(Redirect::to(&format!("/admin/jobs/{}", j.id)))
}

/// `POST /admin/jobs/{id}/retry`: a failed or cancelled job's payload submitted again as a new
/// job for the same user, through the normal hold (so the user pays, and a low balance is
/// refused with 422). 409 for a job that has not failed.
pub async fn retry(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    let j = load(&st, &id).await?;
    if !matches!(j.status, JobStatus::Failed | JobStatus::Cancelled) {
        return Err(WebError::Conflict("only failed or cancelled jobs can be retried"));
    }
    let new = NewJob {
        user_id: j.user_id,
        chat_id: j.chat_id,
        lang: j.lang.clone(),
        model_id: j.model_id.clone(),
        payload: j.payload.clone(),
        progress_message_id: None,
        draft_id: None,
        priority: j.priority,
    };
    let job = match st.jobs()?.submit(new).await.map_err(jobs_error)? {
        Submitted::Queued { job, .. } => job,
        Submitted::InsufficientFunds { balance, price } => {
            return Err(WebError::Unprocessable(format!(
                "the user has {} credits, the job costs {}",
                balance.0, price.0
            )));
        }
        Submitted::Duplicate(existing) => return Ok(Redirect::to(&format!("/admin/jobs/{existing}"))),
        Submitted::LevelRefused(refusal) => {
            return Err(WebError::Unprocessable(format!("the user's level refuses the job: {refusal:?}")));
        }
    };
    let entry = session.audit(
        "retry_job",
        format!("job:{}", j.id),
        format!("status={}", status_name(j.status)),
        format!("new job {}", job.id),
    );
    audit(&st, entry).await?;
    Ok(Redirect::to(&format!("/admin/jobs/{}", job.id)))
}

fn jobs_error(e: JobsError) -> WebError {
    match e {
        JobsError::Store(s) => WebError::Store(s),
        JobsError::UnknownModel(m) => WebError::BadRequest(format!("model {m} is no longer configured")),
        JobsError::ModelDisabled(m) => WebError::BadRequest(format!("model {m} is disabled")),
        JobsError::Billing(b) => WebError::Billing(b),
        JobsError::InputsGone => WebError::BadRequest("the job's input photos are no longer stored".into()),
        JobsError::Level(r) => WebError::Unprocessable(format!("the user's level refuses the job: {r:?}")),
    }
}
