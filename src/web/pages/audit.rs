//! `/admin/audit`: every admin action, newest first.

use super::Layout;
use crate::web::auth::AdminSession;
use crate::web::error::WebError;
use crate::web::{WebState, fmt_time};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;

const ROWS: usize = 500;

/// An audit row for display.
pub struct AuditRow {
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: String,
    pub after: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/audit.html")]
pub struct AuditPage {
    layout: Layout,
    rows: Vec<AuditRow>,
}

/// `GET /admin/audit`.
pub async fn list(State(st): State<WebState>, session: AdminSession) -> Result<AuditPage, WebError> {
    let entries = st.store.read(|rx| rx.find_audit(ROWS)).await?;
    let rows = entries
        .into_iter()
        .map(|e| AuditRow {
            time: fmt_time(e.created_at),
            actor: e.actor,
            action: e.action,
            target: e.target,
            before: e.before,
            after: e.after,
        })
        .collect();
    Ok(AuditPage { layout: Layout::new("Audit log", Some(&session)), rows })
}
