//! `POST /crypto-pay/webhook`: Crypto Pay's `invoice_paid` deliveries (protocols.md §9), on the
//! web listener beside the Telegram webhook, so one public HTTPS URL (the reverse proxy in
//! front of `web.listen`) serves both.
//!
//! A request without the `crypto-pay-api-signature` header is refused before its body is read;
//! the body is read up to [`MAX_WEBHOOK_BYTES`] while it streams (413 beyond), and the
//! signature is checked over those raw bytes before anything is parsed (401 on mismatch).
//! Crediting is one redb write, so the 200 goes out at once; the payer's message is sent on
//! its own task.

use crate::billing::crypto_pay::{CryptoPay, MAX_WEBHOOK_BYTES, SIGNATURE_HEADER, WEBHOOK_PATH, WebhookVerdict};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::post;

/// The webhook route, to merge into the listener's router.
pub fn router(cp: CryptoPay) -> Router {
    Router::new().route(WEBHOOK_PATH, post(receive)).with_state(cp)
}

async fn receive(State(cp): State<CryptoPay>, req: axum::extract::Request) -> StatusCode {
    let Some(signature) = req.headers().get(SIGNATURE_HEADER).map(|v| v.as_bytes().to_vec()) else {
        tracing::debug!("crypto pay webhook without a signature refused");
        return StatusCode::UNAUTHORIZED;
    };
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_WEBHOOK_BYTES as u64) {
        return StatusCode::PAYLOAD_TOO_LARGE;
    }
    // Limited while streaming: a chunked body without a length stops at the cap too.
    let body = match axum::body::to_bytes(req.into_body(), MAX_WEBHOOK_BYTES).await {
        Ok(b) => b,
        Err(_) => return StatusCode::PAYLOAD_TOO_LARGE,
    };
    match cp.webhook(&body, &signature).await {
        WebhookVerdict::Unauthorized => {
            // Anyone can send these: a line each at debug only, so a flood cannot fill the journal.
            tracing::debug!("crypto pay webhook with a wrong signature refused");
            StatusCode::UNAUTHORIZED
        }
        WebhookVerdict::Ignored | WebhookVerdict::Handled(_) => StatusCode::OK,
        WebhookVerdict::Retry => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
