//! `/admin/broadcasts`: compose (text + optional image) → preview with the recipient count →
//! start → progress bar (refreshed by `admin.js` from `/progress`) → done or cancelled. The
//! sending itself is `jobs::broadcast`, which resumes a started broadcast after a restart.

use super::{CsrfForm, Layout};
use crate::domain::now_ms;
use crate::jobs::broadcast::{self, ImageError};
use crate::store::StoreError;
use crate::store::records::{Broadcast, BroadcastState, BroadcastTarget};
use crate::store::stats::day_of;
use crate::web::auth::AdminSession;
use crate::web::error::WebError;
use crate::web::{WebState, fmt_time, parse_date};
use askama::Template;
use askama_web::WebTemplate;
use axum::Json;
use axum::extract::{Multipart, Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};

/// Longest text: Telegram's message limit (a photo caption is cut to 1024 when sent).
pub const MAX_TEXT: usize = 4096;
/// Largest uploaded image.
pub const MAX_IMAGE_BYTES: usize = 10 << 20;

/// A broadcast as the templates show it.
pub struct BroadcastRow {
    pub id: String,
    pub text: String,
    pub has_image: bool,
    pub target: String,
    pub state: &'static str,
    pub total: u64,
    pub handled: u64,
    pub sent: u64,
    pub blocked: u64,
    pub failed: u64,
    pub created: String,
    pub actor: String,
}

fn state_name(s: BroadcastState) -> &'static str {
    match s {
        BroadcastState::Draft => "draft",
        BroadcastState::Sending => "sending",
        BroadcastState::Done => "done",
        BroadcastState::Cancelled => "cancelled",
    }
}

impl From<&Broadcast> for BroadcastRow {
    fn from(b: &Broadcast) -> Self {
        BroadcastRow {
            id: uuid::Uuid::from_u128(b.id).to_string(),
            text: b.text.clone(),
            has_image: b.image.is_some(),
            target: match &b.target {
                BroadcastTarget::All => "all users".into(),
                BroadcastTarget::Level { level } if level.is_empty() => "default level".into(),
                BroadcastTarget::Level { level } => format!("level {level}"),
                BroadcastTarget::ActiveSince { day } => format!("active since {}", &fmt_time(day * 86_400_000)[..10]),
            },
            state: state_name(b.state),
            total: b.total,
            handled: b.handled(),
            sent: b.sent,
            blocked: b.blocked,
            failed: b.failed,
            created: fmt_time(b.created_at),
            actor: b.actor.clone(),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/broadcasts.html")]
pub struct BroadcastsPage {
    layout: Layout,
    levels: Vec<String>,
    rows: Vec<BroadcastRow>,
}

/// `GET /admin/broadcasts`: the compose form and recent broadcasts.
pub async fn list(State(st): State<WebState>, session: AdminSession) -> Result<BroadcastsPage, WebError> {
    let all = st.store.read(|rx| rx.find_broadcasts(50)).await?;
    Ok(BroadcastsPage {
        layout: Layout::new("Broadcast", Some(&session)),
        levels: st.config.billing.level_ids(),
        rows: all.iter().map(BroadcastRow::from).collect(),
    })
}

/// What the compose form sent.
#[derive(Debug, Default)]
struct Compose {
    csrf: String,
    text: String,
    target: String,
    level: String,
    since: String,
    image: Option<Vec<u8>>,
}

async fn read_form(mut m: Multipart) -> Result<Compose, WebError> {
    let bad = |e: axum::extract::multipart::MultipartError| WebError::BadRequest(format!("form: {e}"));
    let mut c = Compose::default();
    while let Some(field) = m.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_string();
        if name == "image" {
            let bytes = field.bytes().await.map_err(bad)?;
            if bytes.len() > MAX_IMAGE_BYTES {
                return Err(WebError::BadRequest("the image is larger than 10 MB".into()));
            }
            c.image = (!bytes.is_empty()).then(|| bytes.to_vec());
            continue;
        }
        let value = field.text().await.map_err(bad)?;
        match name.as_str() {
            "csrf" => c.csrf = value,
            "text" => c.text = value,
            "target" => c.target = value,
            "level" => c.level = value,
            "since" => c.since = value,
            _ => {}
        }
    }
    Ok(c)
}

fn target_of(c: &Compose, levels: &[String]) -> Result<BroadcastTarget, WebError> {
    Ok(match c.target.as_str() {
        "all" => BroadcastTarget::All,
        "level" => match levels.iter().position(|l| *l == c.level) {
            Some(0) => BroadcastTarget::Level { level: String::new() },
            Some(_) => BroadcastTarget::Level { level: c.level.clone() },
            None => return Err(WebError::BadRequest("unknown level".into())),
        },
        "active" => {
            let ms =
                parse_date(&c.since).ok_or_else(|| WebError::BadRequest("active since: a date YYYY-MM-DD".into()))?;
            BroadcastTarget::ActiveSince { day: day_of(ms) }
        }
        _ => return Err(WebError::BadRequest("target must be all, level or active".into())),
    })
}

/// `POST /admin/broadcasts` (multipart: csrf, text, target, level, since, image): stores a
/// draft with its recipient count and shows the preview.
pub async fn create(State(st): State<WebState>, session: AdminSession, form: Multipart) -> Result<Redirect, WebError> {
    let c = read_form(form).await?;
    session.check_csrf(&c.csrf)?;
    let text = c.text.trim().to_string();
    if text.is_empty() || text.chars().count() > MAX_TEXT {
        return Err(WebError::BadRequest(format!("the text needs 1 to {MAX_TEXT} characters")));
    }
    let target = target_of(&c, &st.config.billing.level_ids())?;
    let image = match c.image {
        Some(bytes) => Some(broadcast::prepare_image(&st.store, bytes).await.map_err(|e| match e {
            ImageError::Invalid(m) => WebError::BadRequest(m),
            ImageError::Store(s) => WebError::Store(s),
        })?),
        None => None,
    };
    let mut b = Broadcast::draft(session.actor().to_string(), text, image, target, now_ms());
    let id = b.id;
    let probe = b.clone();
    b.total = st.store.read(move |rx| broadcast::count_recipients(rx, &probe)).await?;
    st.store
        .write(move |tx| {
            tx.put_broadcast(&b)?;
            let after = format!("draft to {} recipient(s): {}", b.total, b.text.chars().take(200).collect::<String>());
            tx.insert_audit(&session.audit("broadcast_draft", target_name(id), String::new(), after))
        })
        .await?;
    Ok(Redirect::to(&format!("/admin/broadcasts/{}", uuid::Uuid::from_u128(id))))
}

fn target_name(id: u128) -> String {
    format!("broadcast:{}", uuid::Uuid::from_u128(id))
}

async fn load(st: &WebState, id: &str) -> Result<Broadcast, WebError> {
    let id = super::parse_uuid(id)?;
    Ok(st.store.read(move |rx| rx.get_broadcast(id)?.ok_or_else(|| StoreError::NotFound("broadcast".into()))).await?)
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/broadcast.html")]
pub struct BroadcastPage {
    layout: Layout,
    b: BroadcastRow,
}

/// `GET /admin/broadcasts/{id}`: preview, Start / Cancel, progress.
pub async fn get(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<String>,
) -> Result<BroadcastPage, WebError> {
    let b = load(&st, &id).await?;
    Ok(BroadcastPage { layout: Layout::new("Broadcast", Some(&session)), b: BroadcastRow::from(&b) })
}

/// Progress as JSON for the page's bar.
#[derive(Debug, serde::Serialize)]
pub struct Progress {
    pub state: &'static str,
    pub total: u64,
    pub handled: u64,
    pub sent: u64,
    pub blocked: u64,
    pub failed: u64,
}

/// `GET /admin/broadcasts/{id}/progress`.
pub async fn progress(
    State(st): State<WebState>,
    _session: AdminSession,
    Path(id): Path<String>,
) -> Result<Json<Progress>, WebError> {
    let b = load(&st, &id).await?;
    Ok(Json(Progress {
        state: state_name(b.state),
        total: b.total,
        handled: b.handled(),
        sent: b.sent,
        blocked: b.blocked,
        failed: b.failed,
    }))
}

/// `GET /admin/broadcasts/{id}/image`: the photo as it will be sent.
pub async fn image(
    State(st): State<WebState>,
    _session: AdminSession,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let b = load(&st, &id).await?;
    let (sha, ext) = b.image.ok_or(WebError::NotFound)?;
    let bytes = tokio::fs::read(st.store.media_path(&sha, &ext)).await.map_err(|_| WebError::NotFound)?;
    let mime = if ext == "png" { "image/png" } else { "image/jpeg" };
    Ok(([(header::CONTENT_TYPE, mime)], bytes).into_response())
}

/// Moves a broadcast from one of `from` to `to` with an audit entry; 409 otherwise.
async fn transition(
    st: &WebState,
    session: AdminSession,
    id: &str,
    from: &'static [BroadcastState],
    to: BroadcastState,
) -> Result<Redirect, WebError> {
    let id = super::parse_uuid(id)?;
    // Count again when starting: users joined or blocked the bot since the preview.
    let total = match to {
        BroadcastState::Sending => {
            let b = load(st, &uuid::Uuid::from_u128(id).to_string()).await?;
            Some(st.store.read(move |rx| broadcast::count_recipients(rx, &b)).await?)
        }
        _ => None,
    };
    let done = st
        .store
        .write(move |tx| {
            let mut b = tx.get_broadcast(id)?.ok_or_else(|| StoreError::NotFound("broadcast".into()))?;
            if !from.contains(&b.state) {
                return Ok(false);
            }
            let before = state_name(b.state);
            match total {
                Some(n) => b.total = n,
                None => b.finished_at = Some(now_ms()),
            }
            b.state = to;
            tx.put_broadcast(&b)?;
            let after = format!("{} ({} of {} handled)", state_name(to), b.handled(), b.total);
            tx.insert_audit(&session.audit("broadcast", target_name(id), before.into(), after))?;
            Ok::<_, WebError>(true)
        })
        .await?;
    if !done {
        return Err(WebError::Conflict("the broadcast is not in a state that allows this"));
    }
    Ok(Redirect::to(&format!("/admin/broadcasts/{}", uuid::Uuid::from_u128(id))))
}

/// `POST /admin/broadcasts/{id}/start`: a draft starts sending (or waits for the bot to run).
pub async fn start(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<String>,
    axum::extract::Form(f): axum::extract::Form<CsrfForm>,
) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    let r = transition(&st, session, &id, &[BroadcastState::Draft], BroadcastState::Sending).await?;
    if let Ok(engine) = st.jobs() {
        engine.wake_broadcasts();
    }
    Ok(r)
}

/// `POST /admin/broadcasts/{id}/cancel`: a draft or a running broadcast stops (messages already
/// sent stay sent).
pub async fn cancel(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<String>,
    axum::extract::Form(f): axum::extract::Form<CsrfForm>,
) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    transition(&st, session, &id, &[BroadcastState::Draft, BroadcastState::Sending], BroadcastState::Cancelled).await
}
