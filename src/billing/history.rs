//! "📊 История операций": a user's ledger as they read it. A hold and its capture are one
//! charge; a hold whose job failed shows as a reserve with its release ("возврат") beside it;
//! a hold still running is a reserve. Each row keeps the model of its job.

use super::Billing;
use crate::domain::{Credits, JobStatus, UserId};
use crate::store::StoreError;
use crate::store::records::{OpKind, Operation};

/// Ledger rows per history page (captures folded into their holds, so a page may show fewer).
pub const HISTORY_PAGE: usize = 10;

/// What one history line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryKind {
    /// A hold that was captured: the job was paid for.
    Charge,
    /// A hold whose job is still running, or that was given back (its release is a [`HistoryKind::Refund`] line).
    Reserve,
    /// A release: credits given back after a failed or cancelled job.
    Refund,
    /// The signup bonus.
    Bonus,
    /// An admin's change (either sign), with its reason.
    Adjust,
    /// Any other kind this build shows as is (purchases, referral rewards as they arrive).
    Other(OpKind),
}

/// One history line.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub at_ms: i64,
    pub kind: HistoryKind,
    /// Effect on the spendable balance (a charge is negative).
    pub delta: Credits,
    /// The job's model id, for job rows.
    pub model_id: Option<String>,
    /// An adjustment's reason.
    pub reason: Option<String>,
}

impl Billing {
    /// Page `page` (0 first) of `user`'s history, newest first; the bool says whether more
    /// follow. Reads one page of ledger rows and the jobs they name.
    pub async fn history(&self, user: UserId, page: usize) -> Result<(Vec<HistoryRow>, bool), StoreError> {
        self.store
            .read(move |rx| {
                let (ops, more) = rx.find_operations_page(user, page.saturating_mul(HISTORY_PAGE), HISTORY_PAGE)?;
                let mut rows = Vec::with_capacity(ops.len());
                for op in ops {
                    let job = match op.job_id {
                        Some(id) => rx.get_job(id)?,
                        None => None,
                    };
                    let kind = match op.kind {
                        // Folded into its hold's line.
                        OpKind::Capture => continue,
                        OpKind::Hold if job.as_ref().is_some_and(|j| j.status == JobStatus::Succeeded) => {
                            HistoryKind::Charge
                        }
                        OpKind::Hold => HistoryKind::Reserve,
                        OpKind::Release => HistoryKind::Refund,
                        OpKind::SignupBonus => HistoryKind::Bonus,
                        OpKind::Adjust => HistoryKind::Adjust,
                        #[allow(unreachable_patterns, reason = "kinds added later show as themselves")]
                        other => HistoryKind::Other(other),
                    };
                    rows.push(row(&op, kind, job.map(|j| j.model_id)));
                }
                Ok((rows, more))
            })
            .await
    }
}

fn row(op: &Operation, kind: HistoryKind, model_id: Option<String>) -> HistoryRow {
    HistoryRow { at_ms: op.created_at, kind, delta: op.delta, model_id, reason: op.reason.clone() }
}
