//! One module per page: an askama struct plus its handlers. Handlers stay thin: extract, call
//! one store read/write (or a pure summary fn), render.

pub mod audit;
pub mod broadcasts;
pub mod dashboard;
pub mod download;
pub mod jobs;
pub mod ledger;
pub mod library;
pub mod login;
pub mod models;
pub mod ops;
pub mod payments;
pub mod users;

use super::assets;
use super::auth::AdminSession;

/// What `templates/admin/base.html` needs from every page.
pub struct Layout {
    pub title: &'static str,
    pub css: String,
    pub js: String,
    /// Empty on the login page (no session yet).
    pub csrf: String,
    pub signed_in: bool,
}

impl Layout {
    pub fn new(title: &'static str, session: Option<&AdminSession>) -> Self {
        Layout {
            title,
            css: assets::url("admin.css"),
            js: assets::url("admin.js"),
            csrf: session.map(|s| s.csrf.clone()).unwrap_or_default(),
            signed_in: session.is_some(),
        }
    }
}

/// The body of every POST form: the CSRF token, checked by the handler through the session.
#[derive(Debug, serde::Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// Lower-case name of a job status, as stored.
pub use crate::store::stats::status_name;

/// The highest `?page=` a list accepts: far beyond any real list, and low enough that
/// `(page + 1) * rows_per_page` cannot overflow, so page arithmetic never wraps.
pub const MAX_PAGE: usize = 1_000_000;

/// Serde `deserialize_with` for a `?page=` number: refuses (400) anything above [`MAX_PAGE`].
pub fn page_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let page = <usize as serde::Deserialize>::deserialize(d)?;
    if page > MAX_PAGE {
        return Err(serde::de::Error::custom(format_args!("page must be at most {MAX_PAGE}")));
    }
    Ok(page)
}

/// A UUID path segment (job, broadcast) as its u128; anything else is a 404.
pub fn parse_uuid(id: &str) -> Result<u128, super::error::WebError> {
    Ok(uuid::Uuid::parse_str(id).map_err(|_| super::error::WebError::NotFound)?.as_u128())
}
