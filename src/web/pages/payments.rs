//! `/admin/payments`: Telegram Stars charges, newest first, with a Refund button for `paid`
//! ones; below them the Crypto Pay invoices with their state (no refunds: Crypto Pay has none). The refund goes through the admin service's outbox ([`crate::admin::Admin::refund`]);
//! the form carries only the charge id, which is looked up in the store.

use super::Layout;
use crate::admin::{RefundOutcome, state_name};
use crate::store::records::{CryptoInvoice, CryptoStatus, PaymentRecord};
use crate::web::auth::AdminSession;
use crate::web::error::WebError;
use crate::web::{WebState, fmt_time};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Query, State};
use axum::response::Redirect;

/// Rows per page.
pub const PAGE_SIZE: usize = 50;

#[derive(Debug, Default, serde::Deserialize)]
pub struct PaymentsQuery {
    #[serde(default, deserialize_with = "super::page_number")]
    pub page: usize,
    /// What the last refund did (`refunded`, `failed`, `pending`), set by the POST's redirect.
    #[serde(default)]
    pub done: String,
    /// The charge that refund was for.
    #[serde(default)]
    pub charge: String,
}

/// A charge for display.
pub struct PaymentRow {
    pub charge: String,
    pub user: i64,
    pub package: String,
    pub stars: i64,
    pub credits: i64,
    pub shortfall: i64,
    pub time: String,
    pub state: &'static str,
    pub paid: bool,
}

impl From<&PaymentRecord> for PaymentRow {
    fn from(p: &PaymentRecord) -> Self {
        PaymentRow {
            charge: p.telegram_payment_charge_id.clone(),
            user: p.user_id.0,
            package: p.package_id.clone(),
            stars: p.stars,
            credits: p.credits.0,
            shortfall: p.refund_shortfall.0,
            time: fmt_time(p.created_at),
            state: state_name(p.state),
            paid: p.state == crate::store::records::PaymentState::Paid,
        }
    }
}

/// A Crypto Pay invoice for display.
pub struct CryptoRow {
    pub invoice: i64,
    pub user: i64,
    pub package: String,
    /// `1.5 USDT` (and what was paid with, for a fiat price).
    pub price: String,
    pub credits: i64,
    pub time: String,
    /// `active`, `paid`, `expired`.
    pub state: &'static str,
}

impl From<&CryptoInvoice> for CryptoRow {
    fn from(i: &CryptoInvoice) -> Self {
        let paid_with = match (&i.paid_amount, &i.paid_asset) {
            (Some(a), Some(s)) if i.currency_type == "fiat" => format!(" (paid {a} {s})"),
            _ => String::new(),
        };
        CryptoRow {
            invoice: i.invoice_id,
            user: i.user_id.0,
            package: i.package_id.clone(),
            price: format!("{} {}{paid_with}", i.amount, i.currency),
            credits: i.credits.0,
            time: fmt_time(i.created_at),
            state: match i.status {
                CryptoStatus::Active => "active",
                CryptoStatus::Paid => "paid",
                CryptoStatus::Expired => "expired",
            },
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/payments.html")]
pub struct PaymentsPage {
    layout: Layout,
    page: usize,
    has_prev: bool,
    has_next: bool,
    rows: Vec<PaymentRow>,
    /// Crypto Pay invoices (the same page number, their own pager state).
    crypto: Vec<CryptoRow>,
    /// The result of the refund just made, as a sentence (empty: none).
    flash: String,
}

/// `GET /admin/payments?page=`.
pub async fn list(
    State(st): State<WebState>,
    session: AdminSession,
    Query(q): Query<PaymentsQuery>,
) -> Result<PaymentsPage, WebError> {
    let (rows, more) = st.admin.payments_page(q.page, PAGE_SIZE).await?;
    let (crypto, more_crypto) = st.admin.crypto_invoices_page(q.page, PAGE_SIZE).await?;
    let charge: String = q.charge.chars().take(200).collect();
    let flash = match q.done.as_str() {
        "refunded" => {
            format!("Charge {charge} refunded: the Stars went back to the payer and the credits were removed.")
        }
        "failed" => {
            format!("Telegram refused to refund charge {charge}; the credits were given back (see the audit log).")
        }
        "pending" => format!(
            "Telegram did not answer for charge {charge}: the credits are removed and the refund is retried automatically."
        ),
        _ => String::new(),
    };
    Ok(PaymentsPage {
        layout: Layout::new("Payments", Some(&session)),
        page: q.page,
        has_prev: q.page > 0,
        has_next: more || more_crypto,
        rows: rows.iter().map(PaymentRow::from).collect(),
        crypto: crypto.iter().map(CryptoRow::from).collect(),
        flash,
    })
}

#[derive(Debug, serde::Deserialize)]
pub struct RefundForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    charge: String,
    #[serde(default, deserialize_with = "super::page_number")]
    page: usize,
}

/// `POST /admin/payments/refund`: refunds one charge (see the module doc), then shows the
/// list again with what happened. Unknown or not `paid` charges: 422 with the reason.
pub async fn refund(
    State(st): State<WebState>,
    session: AdminSession,
    Form(f): Form<RefundForm>,
) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    let outcome = st.admin.refund(session.actor(), &f.charge).await?;
    let (done, p) = match &outcome {
        RefundOutcome::Refunded { payment } => ("refunded", payment),
        RefundOutcome::Failed { payment, .. } => ("failed", payment),
        RefundOutcome::Pending { payment, .. } => ("pending", payment),
    };
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("page", &f.page.to_string())
        .append_pair("done", done)
        .append_pair("charge", &p.telegram_payment_charge_id)
        .finish();
    Ok(Redirect::to(&format!("/admin/payments?{query}")))
}
