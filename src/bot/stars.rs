//! Telegram's Stars side of the admin service ([`crate::admin::StarsGateway`]):
//! `refundStarPayment` with its answer sorted into done / refused / unknown, and the payer's
//! "your Stars were refunded" message in their language.

use super::TgBot;
use super::i18n::Lang;
use crate::admin::{RefundCall, StarsGateway};
use crate::domain::UserId;
use crate::store::records::{PaymentRecord, UserRecord};
use teloxide::prelude::*;
use teloxide::{ApiError, RequestError};

/// `refundStarPayment`'s answer for a charge refunded before (protocols.md §1.8).
pub const ALREADY_REFUNDED: &str = "CHARGE_ALREADY_REFUNDED";

/// [`StarsGateway`] over the Bot API.
pub struct BotStars {
    bot: TgBot,
    currency: crate::config::Currency,
}

impl BotStars {
    pub fn new(bot: TgBot, config: &crate::config::Config) -> BotStars {
        BotStars { bot, currency: config.billing.currency.clone() }
    }
}

/// Sorts a failed `refundStarPayment` call. Telegram's refusals are 4xx answers whose
/// description starts with `Bad Request` / `Forbidden`; anything else (network, flood wait,
/// 5xx, an answer that does not parse) says nothing about whether the refund happened.
pub fn classify(e: &RequestError) -> RefundCall {
    match e {
        RequestError::Api(api) => {
            let text = match api {
                ApiError::Unknown(t) => t.clone(),
                other => other.to_string(),
            };
            if text.contains(ALREADY_REFUNDED) {
                RefundCall::AlreadyRefunded
            } else if text.starts_with("Bad Request") || text.starts_with("Forbidden") {
                RefundCall::Refused(text)
            } else {
                RefundCall::Unknown(text)
            }
        }
        other => RefundCall::Unknown(other.to_string()),
    }
}

#[async_trait::async_trait]
impl StarsGateway for BotStars {
    async fn refund(&self, user: UserId, charge_id: &str) -> RefundCall {
        let Ok(id) = u64::try_from(user.0) else { return RefundCall::Refused(format!("bad user id {}", user.0)) };
        match self.bot.refund_star_payment(teloxide::types::UserId(id), charge_id.to_string().into()).await {
            Ok(_) => RefundCall::Refunded,
            Err(e) => classify(&e),
        }
    }

    async fn refunded(&self, user: &UserRecord, payment: &PaymentRecord) {
        let lang = Lang::from_code(user.language.as_deref().or(user.language_code.as_deref()));
        let removed = payment.credits.checked_sub(payment.refund_shortfall).unwrap_or(payment.credits);
        let text = lang.tf(
            "refund_done",
            &[
                ("stars", &payment.stars),
                ("credits", &lang.money(removed, &self.currency)),
                ("balance", &lang.money(user.balance, &self.currency)),
            ],
        );
        if let Err(e) = self.bot.send_message(ChatId(user.id.0), text).await {
            tracing::warn!(user = user.id.0, error = %e, "could not tell the payer about their refund");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refund_answers_are_sorted_into_done_refused_and_unknown() {
        let api = |t: &str| RequestError::Api(ApiError::Unknown(t.into()));
        assert_eq!(classify(&api("Bad Request: CHARGE_ALREADY_REFUNDED")), RefundCall::AlreadyRefunded);
        assert_eq!(
            classify(&api("Bad Request: CHARGE_NOT_FOUND")),
            RefundCall::Refused("Bad Request: CHARGE_NOT_FOUND".into())
        );
        assert!(matches!(classify(&api("Bad Gateway")), RefundCall::Unknown(_)));
        assert!(matches!(
            classify(&RequestError::RetryAfter(teloxide::types::Seconds::from_seconds(3))),
            RefundCall::Unknown(_)
        ));
    }
}
