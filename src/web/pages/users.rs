//! `/admin/users`: search, sort, paginate; `/admin/users/{id}`: detail and actions.

use super::{CsrfForm, Layout};
use crate::domain::{Credits, UserId};
use crate::store::records::{JobRecord, LibraryItem, Operation, UserRecord, UserSummary};
use crate::store::{Rx, StoreError};
use crate::web::auth::AdminSession;
use crate::web::error::WebError;
use crate::web::{Time, WebState, fmt_time};
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
    #[serde(default, deserialize_with = "super::page_number")]
    pub page: usize,
}

/// Most index entries a search reads; a query with more hits shows the first of them and asks
/// to be narrowed.
pub const SEARCH_CAP: usize = 1000;

/// Search: a number matches the id, `@x` a username starting with `x`, anything else a word
/// of the name or username starting with the query (case-insensitive).
pub fn matches(u: &UserRecord, q: &str) -> bool {
    let q = q.trim();
    if q.is_empty() {
        return true;
    }
    if let Ok(id) = q.parse::<i64>() {
        return u.id.0 == id;
    }
    let lower = q.to_lowercase();
    let words = crate::store::stats::search_words(u);
    if let Some(name) = lower.strip_prefix('@') {
        return u.username.as_deref().is_some_and(|n| n.to_lowercase().starts_with(name));
    }
    // Every word of the query must start some word of the user's.
    lower.split_whitespace().all(|q| words.iter().any(|w| w.starts_with(q)))
}

fn sort_rows(users: &mut [UserRecord], sort: &str) {
    match sort {
        "balance" => users.sort_by(|a, b| b.balance.cmp(&a.balance).then(a.id.0.cmp(&b.id.0))),
        "created" => users.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.0.cmp(&b.id.0))),
        "name" => users.sort_by(|a, b| a.first_name.to_lowercase().cmp(&b.first_name.to_lowercase())),
        _ => users.sort_by_key(|u| u.id.0),
    }
}

/// One page of a user search, as [`search`] finds it.
pub struct Found {
    /// The page's users.
    pub rows: Vec<ListRow>,
    /// Matches counted so far: all of them unless `capped`.
    pub total: usize,
    /// More users match than were counted (a one-word search counts only up to its page; other
    /// searches stop at [`SEARCH_CAP`] index entries).
    pub capped: bool,
    /// A next page has rows.
    pub has_next: bool,
}

/// Filters, sorts and cuts one page. A query goes through the id key or the name index; only
/// an empty query with a sort other than by id reads every user.
pub fn search(rx: &Rx, q: &UserQuery) -> Result<Found, StoreError> {
    let text = q.q.trim();
    let mut capped = false;
    let mut users = if text.is_empty() {
        if matches!(q.sort.as_str(), "" | "id") {
            let total = usize::try_from(rx.count_users()?).unwrap_or(usize::MAX);
            let rows = rx.find_users_page(None, (q.page + 1) * PAGE_SIZE)?;
            let rows = rows.iter().skip(q.page * PAGE_SIZE).map(ListRow::from).collect();
            return Ok(Found { rows, total, capped: false, has_next: (q.page + 1) * PAGE_SIZE < total });
        }
        rx.find_users()?
    } else if let Ok(id) = text.parse::<i64>() {
        rx.get_user(UserId(id))?.into_iter().collect()
    } else {
        let lower = text.to_lowercase();
        let first = lower.trim_start_matches('@').split_whitespace().next().unwrap_or("").to_string();
        // One plain word in the default order: the index hits are exactly the matches (the
        // index holds the words `matches` compares), listed in index order (matched word, then
        // id), so only this page's entries are read, and they carry the rows: no user record
        // is read. The total is known up to here.
        if !lower.starts_with('@') && !lower.contains(char::is_whitespace) && matches!(q.sort.as_str(), "" | "id") {
            let skip = q.page * PAGE_SIZE;
            let (found, more) = rx.find_user_rows_by_word_page(&first, skip, PAGE_SIZE)?;
            let seen = if found.is_empty() { 0 } else { skip + found.len() };
            let rows = found.into_iter().map(ListRow::from).collect();
            return Ok(Found { rows, total: seen, capped: more, has_next: more });
        }
        let (ids, cut) = rx.find_user_ids_by_word(&first, SEARCH_CAP)?;
        capped = cut;
        let mut out = Vec::new();
        for id in ids {
            if let Some(u) = rx.get_user(UserId(id))?.filter(|u| matches(u, text)) {
                out.push(u);
            }
        }
        out
    };
    sort_rows(&mut users, &q.sort);
    let total = users.len();
    let rows = users.iter().skip(q.page * PAGE_SIZE).take(PAGE_SIZE).map(ListRow::from).collect();
    Ok(Found { rows, total, capped, has_next: (q.page + 1) * PAGE_SIZE < total })
}

/// A row of the user list (`users.html`).
pub struct ListRow {
    pub id: i64,
    pub name: String,
    /// Empty: none.
    pub username: String,
    pub balance: i64,
    pub held: i64,
    pub created: Time,
    pub banned: bool,
}

impl From<UserSummary> for ListRow {
    fn from(u: UserSummary) -> Self {
        ListRow {
            id: u.id.0,
            name: u.first_name,
            username: u.username.unwrap_or_default(),
            balance: u.balance.0,
            held: u.held.0,
            created: Time(u.created_at),
            banned: u.banned,
        }
    }
}

impl From<&UserRecord> for ListRow {
    fn from(u: &UserRecord) -> Self {
        ListRow::from(UserSummary::of(u))
    }
}

/// A user as the detail page (`user.html`) shows them.
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
    /// Level id; empty = the default level.
    pub level: String,
    /// When the level ends (a Stars subscription), formatted; empty = no end.
    pub level_until: String,
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
            level: u.level.clone(),
            level_until: u.level_until.map(fmt_time).unwrap_or_default(),
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
    /// The index walk stopped early: more users may match; the admin should narrow the query.
    capped: bool,
    has_prev: bool,
    has_next: bool,
    rows: Vec<ListRow>,
}

/// `GET /admin/users?q=&sort=&page=`.
pub async fn list(
    State(st): State<WebState>,
    session: AdminSession,
    Query(q): Query<UserQuery>,
) -> Result<UsersPage, WebError> {
    let (found, q) = st.store.read(move |rx| Ok::<_, WebError>((search(rx, &q)?, q))).await?;
    Ok(UsersPage {
        layout: Layout::new("Users", Some(&session)),
        has_prev: q.page > 0,
        has_next: found.has_next,
        q: q.q,
        sort: q.sort,
        page: q.page,
        total: found.total,
        capped: found.capped,
        rows: found.rows,
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
    /// Configured level ids (the first is the default).
    levels: Vec<String>,
}

const DETAIL_ROWS: usize = 100;

/// `GET /admin/users/{id}`.
pub async fn get(State(st): State<WebState>, session: AdminSession, Path(id): Path<i64>) -> Result<UserPage, WebError> {
    type Detail = (UserRecord, Vec<Operation>, Vec<JobRecord>, Vec<LibraryItem>);
    let (u, ops, jobs, lib): Detail = st
        .store
        .read(move |rx| {
            let u = rx.get_user(UserId(id))?.ok_or_else(|| StoreError::NotFound(format!("user {id}")))?;
            let ops = rx.find_recent_operations(UserId(id), DETAIL_ROWS)?;
            let jobs = rx.find_user_jobs(UserId(id), 50)?;
            let mut lib = rx.find_library(UserId(id))?;
            lib.truncate(24);
            Ok::<_, WebError>((u, ops, jobs, lib))
        })
        .await?;
    Ok(UserPage {
        layout: Layout::new("User", Some(&session)),
        u: UserRow::from(&u),
        ops: ops.iter().map(OpRow::from).collect(),
        jobs: jobs.iter().map(super::jobs::JobRow::from).collect(),
        images: lib.iter().map(|i| i.id.to_string()).collect(),
        levels: st.config.billing.level_ids(),
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

/// `POST /admin/users/{id}/balance`: through the admin service, a ledger row with actor
/// `admin:<name>` and an audit entry in one transaction.
pub async fn adjust(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<i64>,
    Form(f): Form<AdjustForm>,
) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    let delta = match f.direction.as_str() {
        "add" => Credits(f.amount),
        "deduct" => Credits(f.amount.saturating_neg()),
        _ => return Err(WebError::BadRequest("direction must be add or deduct".into())),
    };
    if f.amount <= 0 {
        return Err(WebError::BadRequest(format!("amount must be between 1 and {}", crate::admin::MAX_ADJUST)));
    }
    st.admin.adjust_balance(session.actor(), UserId(id), delta, f.reason).await?;
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
    st.admin.set_banned(session.actor(), UserId(id), true).await?;
    Ok(Redirect::to(&format!("/admin/users/{id}")))
}

/// `POST /admin/users/{id}/unban`.
pub async fn unban(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    st.admin.set_banned(session.actor(), UserId(id), false).await?;
    Ok(Redirect::to(&format!("/admin/users/{id}")))
}

#[derive(Debug, serde::Deserialize)]
pub struct LevelForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    level: String,
}

/// `POST /admin/users/{id}/level`: one of `billing.levels`.
pub async fn set_level(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<i64>,
    Form(f): Form<LevelForm>,
) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    st.admin.set_level(session.actor(), UserId(id), &f.level).await?;
    Ok(Redirect::to(&format!("/admin/users/{id}")))
}
