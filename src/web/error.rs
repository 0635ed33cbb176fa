//! One error type for the panel, mapped to a status code once. The body is a fixed, short
//! text (never the raw input) and the detail goes to the log.

use crate::billing::BillingError;
use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Everything a panel handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The action does not fit the current state (a finished job cancelled).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// Well-formed but refused by a business rule (a balance too low).
    #[error("{0}")]
    Unprocessable(String),
    /// A part of the appliance the action needs is not running.
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
    #[error("too many attempts, try again later")]
    TooManyRequests,
    #[error(transparent)]
    Billing(#[from] BillingError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::NotFound | WebError::Store(StoreError::NotFound(_)) => StatusCode::NOT_FOUND,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            WebError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            WebError::Conflict(_) => StatusCode::CONFLICT,
            WebError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            WebError::Billing(BillingError::InsufficientFunds { .. } | BillingError::Overflow) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            WebError::Billing(BillingError::UnknownUser(_)) => StatusCode::NOT_FOUND,
            WebError::Billing(BillingError::NoOpenHold) => StatusCode::CONFLICT,
            WebError::Billing(BillingError::Store(_)) | WebError::Store(_) | WebError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl From<crate::admin::AdminError> for WebError {
    fn from(e: crate::admin::AdminError) -> Self {
        use crate::admin::AdminError;
        match e {
            AdminError::UnknownUser(_) | AdminError::UnknownTarget(_) => WebError::NotFound,
            AdminError::Invalid(m) => WebError::BadRequest(m),
            e @ AdminError::InsufficientFunds { .. } => WebError::BadRequest(e.to_string()),
            AdminError::Refund(m) => WebError::Unprocessable(m),
            AdminError::NoBot => WebError::Unavailable("the bot is not running (no token configured)"),
            AdminError::Billing(b) => WebError::Billing(b),
            AdminError::Store(s) => WebError::Store(s),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Internal detail stays in the log; the admin sees the class of the problem.
        let text = if status.is_server_error() {
            tracing::error!(error = %self, "admin panel request failed");
            "internal error (see the server log)".to_string()
        } else {
            self.to_string()
        };
        // text/plain: whatever echoes user input here can never run as markup.
        (status, [(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
    }
}
