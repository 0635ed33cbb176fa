//! `/admin/ledger`: filter by user, kind and date; `/admin/ledger.csv` streams the same rows.

use super::Layout;
use super::users::OpRow;
use crate::domain::UserId;
use crate::store::records::{OpKind, Operation};
use crate::web::auth::AdminSession;
use crate::web::error::WebError;
use crate::web::{WebState, fmt_time, parse_date};
use askama::Template;
use askama_web::WebTemplate;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Kinds the filter offers (stored names, see [`kind_name`]).
pub const KINDS: [&str; 9] =
    ["signup_bonus", "hold", "capture", "release", "adjust", "purchase", "referral", "refund", "refund_reversal"];

/// Rows shown on the page (the CSV has them all).
const PAGE_ROWS: usize = 200;
const DAY: i64 = 86_400_000;

/// Stored name of an operation kind.
pub fn kind_name(k: OpKind) -> &'static str {
    match k {
        OpKind::SignupBonus => "signup_bonus",
        OpKind::Hold => "hold",
        OpKind::Capture => "capture",
        OpKind::Release => "release",
        OpKind::Adjust => "adjust",
        OpKind::Purchase => "purchase",
        OpKind::Referral => "referral",
        OpKind::Refund => "refund",
        OpKind::RefundReversal => "refund_reversal",
        OpKind::HoldAdjust => "hold_adjust",
    }
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct LedgerQuery {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub kind: String,
    /// `YYYY-MM-DD`, inclusive.
    #[serde(default)]
    pub from: String,
    /// `YYYY-MM-DD`, inclusive.
    #[serde(default)]
    pub to: String,
}

/// A parsed, validated filter.
#[derive(Debug, Clone)]
pub struct Filter {
    user: Option<UserId>,
    kind: Option<String>,
    from: i64,
    to: i64,
}

impl TryFrom<&LedgerQuery> for Filter {
    type Error = WebError;
    fn try_from(q: &LedgerQuery) -> Result<Self, WebError> {
        let bad = |what: &str| WebError::BadRequest(format!("bad {what}"));
        let user = match q.user.trim() {
            "" => None,
            s => Some(UserId(s.parse().map_err(|_| bad("user id"))?)),
        };
        let kind = match q.kind.trim() {
            "" => None,
            k if KINDS.contains(&k) => Some(k.to_string()),
            _ => return Err(bad("kind")),
        };
        let from = match q.from.trim() {
            "" => i64::MIN,
            s => parse_date(s).ok_or_else(|| bad("from date"))?,
        };
        let to = match q.to.trim() {
            "" => i64::MAX,
            s => parse_date(s).ok_or_else(|| bad("to date"))? + DAY - 1,
        };
        Ok(Filter { user, kind, from, to })
    }
}

impl Filter {
    fn accepts(&self, o: &Operation) -> bool {
        self.kind.as_deref().is_none_or(|k| k == kind_name(o.kind)) && (self.from..=self.to).contains(&o.created_at)
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/ledger.html")]
pub struct LedgerPage {
    layout: Layout,
    q: LedgerQuery,
    csv_query: String,
    rows: Vec<OpRow>,
    truncated: bool,
    kinds: &'static [&'static str],
}

/// `GET /admin/ledger`.
pub async fn list(
    State(st): State<WebState>,
    session: AdminSession,
    Query(q): Query<LedgerQuery>,
) -> Result<LedgerPage, WebError> {
    let filter = Filter::try_from(&q)?;
    let f = filter.clone();
    let (rows, truncated) = st
        .store
        .read(move |rx| {
            let mut out = Vec::new();
            rx.scan_operations(f.user, |o| {
                if f.accepts(&o) {
                    out.push(o);
                }
                out.len() <= PAGE_ROWS
            })?;
            let truncated = out.len() > PAGE_ROWS;
            out.truncate(PAGE_ROWS);
            Ok::<_, WebError>((out, truncated))
        })
        .await?;
    let csv_query = serde_urlencoded(&q);
    Ok(LedgerPage {
        layout: Layout::new("Ledger", Some(&session)),
        q,
        csv_query,
        rows: rows.iter().map(OpRow::from).collect(),
        truncated,
        kinds: &KINDS,
    })
}

fn serde_urlencoded(q: &LedgerQuery) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("user", &q.user)
        .append_pair("kind", &q.kind)
        .append_pair("from", &q.from)
        .append_pair("to", &q.to)
        .finish()
}

/// One CSV field: quoted when needed, and a leading `=+-@` neutralised so a spreadsheet does
/// not run a reason text as a formula.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

fn csv_line(o: &Operation) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{}\n",
        o.id,
        fmt_time(o.created_at),
        o.user_id.0,
        kind_name(o.kind),
        o.amount.0,
        o.delta.0,
        o.balance_after.0,
        o.job_id.map(|j| j.to_string()).unwrap_or_default(),
        csv_field(&o.actor),
        csv_field(o.reason.as_deref().unwrap_or(""))
    )
}

/// `GET /admin/ledger.csv`: a blocking thread walks the ledger in one read transaction and
/// sends chunks through a bounded channel, so memory stays flat on a million rows.
pub async fn csv(
    State(st): State<WebState>,
    _session: AdminSession,
    Query(q): Query<LedgerQuery>,
) -> Result<Response, WebError> {
    let filter = Filter::try_from(&q)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(8);
    let store = st.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut buf = String::from("id,time,user,kind,amount,delta,balance_after,job,actor,reason\n");
        let res = store.read_blocking(|r| {
            r.scan_operations(filter.user, |o| {
                if filter.accepts(&o) {
                    buf.push_str(&csv_line(&o));
                }
                if buf.len() >= 64 * 1024 {
                    // The client went away: stop walking.
                    return tx.blocking_send(Ok(std::mem::take(&mut buf))).is_ok();
                }
                true
            })
        });
        match res {
            Ok(()) => {
                let _ = tx.blocking_send(Ok(buf));
            }
            Err(e) => {
                tracing::error!(error = %e, "ledger CSV export failed");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let stream = tokio_stream_from(rx);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"ledger.csv\""),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<String, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
