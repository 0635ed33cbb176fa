//! `/admin/jobs`: the newest jobs, refreshed in place by `admin.js` from `/admin/jobs/rows`;
//! `/admin/jobs/{id}`: one job's provider id, attempts, error and timings.

use super::{Layout, status_name};
use crate::domain::JobId;
use crate::store::StoreError;
use crate::store::records::JobRecord;
use crate::web::auth::AdminSession;
use crate::web::error::WebError;
use crate::web::{WebState, fmt_time};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, State};

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
    let queue_depth = st.store.read(|rx| Ok(rx.find_active_jobs()?.len())).await?;
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
    error: String,
    started: String,
    submitted: String,
    finished: String,
    prompt: String,
}

/// `GET /admin/jobs/{id}` (id is the UUID).
pub async fn get(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<String>,
) -> Result<JobPage, WebError> {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| WebError::NotFound)?.as_u128();
    let j = st.store.read(move |rx| rx.get_job(JobId(id))?.ok_or_else(|| StoreError::NotFound("job".into()))).await?;
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
        error: j.error.as_ref().map(|e| format!("{:?}: {}", e.class, e.detail)).unwrap_or_default(),
        started: t(j.started_at),
        submitted: t(j.submitted_at),
        finished: t(j.finished_at),
        prompt: prompt.to_string(),
        j: JobRow::from(&j),
    })
}
