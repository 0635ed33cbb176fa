//! `/healthz` (no auth) and `/metrics` (Prometheus text; a session or a loopback peer).

use crate::domain::{JobStatus, now_ms};
use crate::web::WebState;
use crate::web::auth::{self, AdminSession};
use crate::web::error::WebError;
use axum::extract::{FromRequestParts, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use std::fmt::Write;

/// `GET /healthz`: `{"bot": "connecting"|"polling"|"webhook"|"no_token"|"down", "db":
/// "ok"|"read_only"}` ([`crate::health::Report`]); 200 when healthy, 503 when the bot is down,
/// the database refuses writes, or it does not even answer a read.
pub async fn healthz(State(st): State<WebState>) -> Response {
    let mut report = st.health.report();
    if let Err(e) = st.store.read(|rx| rx.get_meta_u64("schema_version")).await {
        tracing::error!(error = %e, "health check: store unreadable");
        report.db = crate::health::DbState::ReadOnly;
    }
    let status = if report.healthy() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(report)).into_response()
}

/// A scraper on the same host needs no session; anyone else must be signed in. A request
/// that came through a proxy (a forwarding header, or a client address from a trusted proxy)
/// is not "on the same host", even though the proxy connects from loopback.
pub struct MetricsAccess;
impl FromRequestParts<WebState> for MetricsAccess {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, st: &WebState) -> Result<Self, Self::Rejection> {
        if st.client_ip(parts).is_loopback() && !auth::is_forwarded(&parts.headers) {
            return Ok(MetricsAccess);
        }
        AdminSession::from_request_parts(parts, st)
            .await
            .map(|_| MetricsAccess)
            .map_err(|_| (StatusCode::UNAUTHORIZED, "not signed in").into_response())
    }
}

/// `GET /metrics`.
pub async fn metrics(State(st): State<WebState>, _: MetricsAccess) -> Result<Response, WebError> {
    // Maintained counters only: a scrape every few seconds must not scan the database.
    let today = crate::store::stats::day_of(now_ms());
    let (users, queue, daily, media_bytes, inline_chosen) = st
        .store
        .read(move |rx| {
            use crate::store::library::{INLINE_CHOSEN, MEDIA_BYTES};
            Ok::<_, WebError>((
                rx.count_users()?,
                rx.count_active_jobs()?,
                rx.find_daily(today, today)?,
                rx.get_counter(MEDIA_BYTES)?,
                rx.get_counter(INLINE_CHOSEN)?,
            ))
        })
        .await?;
    let mut out = String::new();
    let _ = writeln!(out, "# HELP mediabot_users Known Telegram users.\n# TYPE mediabot_users gauge");
    let _ = writeln!(out, "mediabot_users {users}");
    let _ = writeln!(out, "# HELP mediabot_queue_depth Unfinished jobs.\n# TYPE mediabot_queue_depth gauge");
    let _ = writeln!(out, "mediabot_queue_depth {queue}");
    let _ = writeln!(
        out,
        "# HELP mediabot_jobs_today Jobs created today (UTC) by status.\n# TYPE mediabot_jobs_today gauge"
    );
    for s in JobStatus::ALL {
        let name = crate::store::stats::counter::jobs(super::status_name(s));
        let n = daily.iter().find(|(_, k, _)| *k == name).map_or(0, |(_, _, v)| *v);
        let _ = writeln!(out, "mediabot_jobs_today{{status=\"{}\"}} {n}", super::status_name(s));
    }
    let _ = writeln!(
        out,
        "# HELP mediabot_library_bytes Bytes of the distinct result files library items reference (the disk budget's measure).\n# TYPE mediabot_library_bytes gauge"
    );
    let _ = writeln!(out, "mediabot_library_bytes {media_bytes}");
    let _ = writeln!(
        out,
        "# HELP mediabot_inline_chosen_total Library pictures users shared through inline mode (chosen_inline_result).\n# TYPE mediabot_inline_chosen_total counter"
    );
    let _ = writeln!(out, "mediabot_inline_chosen_total {inline_chosen}");
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response())
}
