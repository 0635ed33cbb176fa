//! `/admin/users`: search, sort, paginate; `/admin/users/{id}`: detail and actions.

use super::{CsrfForm, Layout};
use crate::billing;
use crate::domain::{Credits, UserId};
use crate::store::StoreError;
use crate::store::records::{JobRecord, LibraryItem, Operation, UserRecord};
use crate::web::auth::AdminSession;
use crate::web::error::WebError;
use crate::web::{WebState, fmt_time};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Path, Query, State};
use axum::response::Redirect;

/// Rows per page.
pub const PAGE_SIZE: usize = 50;

#[derive(Debug, Default, serde::Deserialize)]
pub struct UserQuery {
    #[serde(default)]
    pub q: String,
    /// `id`, `balance`, `created` (newest first) or `name`.
    #[serde(default)]
    pub sort: String,
    #[serde(default)]
    pub page: usize,
}

/// Search: a number matches the id, `@x` the username, anything else name or username
/// (case-insensitive substring).
pub fn matches(u: &UserRecord, q: &str) -> bool {
    let q = q.trim();
    if q.is_empty() {
        return true;
    }
    if let Ok(id) = q.parse::<i64>() {
        return u.id.0 == id;
    }
    let lower = q.to_lowercase();
    if let Some(name) = lower.strip_prefix('@') {
        return u.username.as_deref().is_some_and(|n| n.to_lowercase().contains(name));
    }
    u.first_name.to_lowercase().contains(&lower)
        || u.username.as_deref().is_some_and(|n| n.to_lowercase().contains(&lower))
}

/// Filters, sorts and cuts one page; returns (page rows, total matches).
pub fn search(mut users: Vec<UserRecord>, q: &UserQuery) -> (Vec<UserRecord>, usize) {
    users.retain(|u| matches(u, &q.q));
    match q.sort.as_str() {
        "balance" => users.sort_by(|a, b| b.balance.cmp(&a.balance).then(a.id.0.cmp(&b.id.0))),
        "created" => users.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.0.cmp(&b.id.0))),
        "name" => users.sort_by(|a, b| a.first_name.to_lowercase().cmp(&b.first_name.to_lowercase())),
        _ => {} // key order = id order
    }
    let total = users.len();
    let rows = users.into_iter().skip(q.page * PAGE_SIZE).take(PAGE_SIZE).collect();
    (rows, total)
}

/// A user row as the templates show it.
pub struct UserRow {
    pub id: i64,
    pub name: String,
    pub username: String,
    pub balance: i64,
    pub held: i64,
    pub created: String,
    pub banned: bool,
    pub blocked: bool,
    pub language: String,
}

impl From<&UserRecord> for UserRow {
    fn from(u: &UserRecord) -> Self {
        UserRow {
            id: u.id.0,
            name: u.first_name.clone(),
            username: u.username.clone().unwrap_or_default(),
            balance: u.balance.0,
            held: u.held.0,
            created: fmt_time(u.created_at),
            banned: u.banned,
            blocked: u.blocked,
            language: u.language_code.clone().unwrap_or_default(),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/users.html")]
pub struct UsersPage {
    layout: Layout,
    q: String,
    sort: String,
    page: usize,
    total: usize,
    has_prev: bool,
    has_next: bool,
    rows: Vec<UserRow>,
}

/// `GET /admin/users?q=&sort=&page=`.
pub async fn list(
    State(st): State<WebState>,
    session: AdminSession,
    Query(q): Query<UserQuery>,
) -> Result<UsersPage, WebError> {
    let (rows, total, q) = st
        .store
        .read(move |rx| {
            let (rows, total) = search(rx.find_users()?, &q);
            Ok((rows, total, q))
        })
        .await?;
    Ok(UsersPage {
        layout: Layout::new("Users", Some(&session)),
        has_prev: q.page > 0,
        has_next: (q.page + 1) * PAGE_SIZE < total,
        q: q.q,
        sort: q.sort,
        page: q.page,
        total,
        rows: rows.iter().map(UserRow::from).collect(),
    })
}

/// A ledger row for display.
pub struct OpRow {
    pub time: String,
    pub kind: String,
    pub delta: i64,
    pub balance_after: i64,
    pub actor: String,
    pub reason: String,
    pub job: String,
}

impl From<&Operation> for OpRow {
    fn from(o: &Operation) -> Self {
        OpRow {
            time: fmt_time(o.created_at),
            kind: super::ledger::kind_name(o.kind).into(),
            delta: o.delta.0,
            balance_after: o.balance_after.0,
            actor: o.actor.clone(),
            reason: o.reason.clone().unwrap_or_default(),
            job: o.job_id.map(|j| j.to_string()).unwrap_or_default(),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/user.html")]
pub struct UserPage {
    layout: Layout,
    u: UserRow,
    ops: Vec<OpRow>,
    jobs: Vec<super::jobs::JobRow>,
    images: Vec<String>,
}

const DETAIL_ROWS: usize = 100;

/// `GET /admin/users/{id}`.
pub async fn get(State(st): State<WebState>, session: AdminSession, Path(id): Path<i64>) -> Result<UserPage, WebError> {
    type Detail = (UserRecord, Vec<Operation>, Vec<JobRecord>, Vec<LibraryItem>);
    let (u, ops, jobs, lib): Detail = st
        .store
        .read(move |rx| {
            let u = rx.get_user(UserId(id))?.ok_or_else(|| StoreError::NotFound(format!("user {id}")))?;
            let mut ops = rx.find_operations(UserId(id))?;
            ops.reverse();
            ops.truncate(DETAIL_ROWS);
            // No per-user job index yet: the newest 5000 jobs are searched.
            let jobs = rx.find_jobs_page(None, 5000)?.into_iter().filter(|j| j.user_id.0 == id).take(50).collect();
            let mut lib = rx.find_library(UserId(id))?;
            lib.truncate(24);
            Ok((u, ops, jobs, lib))
        })
        .await?;
    Ok(UserPage {
        layout: Layout::new("User", Some(&session)),
        u: UserRow::from(&u),
        ops: ops.iter().map(OpRow::from).collect(),
        jobs: jobs.iter().map(super::jobs::JobRow::from).collect(),
        images: lib.iter().map(|i| i.id.to_string()).collect(),
    })
}

#[derive(Debug, serde::Deserialize)]
pub struct AdjustForm {
    #[serde(default)]
    csrf: String,
    amount: i64,
    /// `add` or `deduct`.
    direction: String,
    #[serde(default)]
    reason: String,
}

/// `POST /admin/users/{id}/balance`: a ledger row with actor `admin:<name>` and an audit entry,
/// in one transaction.
pub async fn adjust(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<i64>,
    Form(f): Form<AdjustForm>,
) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    let reason = f.reason.trim().to_string();
    if reason.is_empty() || reason.len() > 500 {
        return Err(WebError::BadRequest("a reason (up to 500 bytes) is required".into()));
    }
    if f.amount <= 0 || f.amount > 1_000_000_000 {
        return Err(WebError::BadRequest("amount must be between 1 and 1000000000".into()));
    }
    let delta = match f.direction.as_str() {
        "add" => Credits(f.amount),
        "deduct" => Credits(-f.amount),
        _ => return Err(WebError::BadRequest("direction must be add or deduct".into())),
    };
    st.store
        .write(move |tx| {
            let before = tx.get_user(UserId(id))?.map(|u| u.balance.0);
            let op = billing::adjust(tx, UserId(id), delta, &session.actor(), &reason).map_err(refused)?;
            let entry = session.audit(
                "adjust_balance",
                format!("user:{id}"),
                format!("balance {}", before.unwrap_or(0)),
                format!("balance {} ({:+}, {reason})", op.balance_after, delta.0),
            );
            tx.insert_audit(&entry)
        })
        .await
        .map_err(unrefuse)?;
    Ok(Redirect::to(&format!("/admin/users/{id}")))
}

// Store::write wants StoreError; billing's errors ride through as Refused and are mapped back
// to a 4xx here rather than a 500.
fn refused(e: billing::BillingError) -> StoreError {
    match e {
        billing::BillingError::Store(s) => s,
        billing::BillingError::UnknownUser(u) => StoreError::NotFound(format!("user {}", u.0)),
        other => StoreError::Refused(other.to_string()),
    }
}

fn unrefuse(e: StoreError) -> WebError {
    match e {
        StoreError::Refused(m) => WebError::BadRequest(m),
        other => WebError::Store(other),
    }
}

async fn set_banned(st: WebState, session: AdminSession, id: i64, banned: bool) -> Result<Redirect, WebError> {
    st.store
        .write(move |tx| {
            let mut u = tx.get_user(UserId(id))?.ok_or_else(|| StoreError::NotFound(format!("user {id}")))?;
            let before = u.banned;
            u.banned = banned;
            tx.put_user(&u)?;
            let entry = session.audit(
                if banned { "ban" } else { "unban" },
                format!("user:{id}"),
                format!("banned={before}"),
                format!("banned={banned}"),
            );
            tx.insert_audit(&entry)
        })
        .await?;
    Ok(Redirect::to(&format!("/admin/users/{id}")))
}

/// `POST /admin/users/{id}/ban`.
pub async fn ban(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    set_banned(st, session, id, true).await
}

/// `POST /admin/users/{id}/unban`.
pub async fn unban(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    set_banned(st, session, id, false).await
}
