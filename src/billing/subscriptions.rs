//! Levels sold as Telegram Stars subscriptions (protocols.md §1.8; api.json
//! `createInvoiceLink.subscription_period`, `SuccessfulPayment.subscription_expiration_date`,
//! `is_recurring`, `is_first_recurring`).
//!
//! Each paid period is one `successful_payment` with its own charge id: the first payment and
//! every renewal Telegram makes set the user's level until the period's
//! `subscription_expiration_date` (a renewal extends it). The charge is stored in the Stars
//! payments table in the same transaction, so a re-delivered or duplicated payment is recorded
//! once. Credits move only when the level's `subscription.credits` says so: one `Purchase` row and
//! the referrer's share of it, through the same credit path as a package.
//! Past the date the user reads as the default level at once ([`super::levels::Levels::effective`]);
//! [`Billing::sweep_levels`] then stores it. Credits are never touched by an expiry.

use super::{Billing, BillingError, STARS_CURRENCY, STARS_REASON, StarPayment, credit_package};
use crate::config::LevelConfig;
use crate::domain::{Credits, OperationId, UserId, now_ms};
use crate::store::records::{PaymentRecord, PaymentState};

/// Telegram's only subscription period: 30 days, in seconds (api.json createInvoiceLink).
pub const SUBSCRIPTION_PERIOD_SECS: u32 = 2_592_000;
/// `PaymentRecord::package_id` prefix of a subscription charge; the level id follows.
pub const LEVEL_PACKAGE_PREFIX: &str = "level:";
/// `PaymentRecord::operation_id` of a subscription charge that credited nothing (no ledger row).
pub const NO_OPERATION: OperationId = OperationId(0);

/// The invoice payload of a subscription to `level` by `user`: `sub:<level>:<user id>` (at
/// most 4 + 32 + 1 + 20 bytes, within Telegram's 1–128).
pub fn subscription_payload(level: &str, user: UserId) -> String {
    format!("sub:{level}:{}", user.0)
}

/// Reads a payload made by [`subscription_payload`]: `(level id, user)`.
pub fn parse_subscription_payload(payload: &str) -> Option<(String, UserId)> {
    super::split_payload(payload, "sub:")
}

/// What [`Billing::record_subscription`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscriptionOutcome {
    /// The level holds until `until` (Unix ms); `renewal` when the user already had it.
    Subscribed { level: String, until: i64, credits: Credits, balance: Credits, renewal: bool },
    /// This charge id was recorded before: nothing written.
    AlreadyRecorded,
    /// The payload names no level sold as a subscription (or another user): nothing changed;
    /// the charge needs an admin.
    UnknownLevel,
}

impl Billing {
    /// The levels sold as subscriptions, in config order.
    pub fn subscriptions(&self) -> Vec<LevelConfig> {
        self.levels.all().iter().filter(|l| l.subscription.is_some()).cloned().collect()
    }

    /// Records a subscription's `successful_payment` once per charge id, in one transaction:
    /// the charge (a `paid` payment with package `level:<id>`), the user's level until
    /// `expires_at` (Unix ms; never shortened: a late-delivered older period keeps the later
    /// date), and the level's `subscription.credits` as one `Purchase` row when not 0, with the
    /// referrer's `purchase_percent` share like a package purchase.
    /// Errors: [`BillingError::UnknownUser`], store errors.
    pub async fn record_subscription(
        &self,
        pay: StarPayment,
        expires_at: i64,
    ) -> Result<SubscriptionOutcome, BillingError> {
        let level = parse_subscription_payload(&pay.invoice_payload)
            .filter(|(_, user)| *user == pay.payer)
            .and_then(|(id, _)| self.levels.get(&id).filter(|l| l.subscription.is_some() && !id.is_empty()).cloned());
        let default = self.levels.all().first().map(|l| l.id.clone()).unwrap_or_default();
        let terms = self.referral_terms();
        self.store
            .write(move |tx| {
                if tx.get_payment(&pay.telegram_payment_charge_id)?.is_some() {
                    return Ok(SubscriptionOutcome::AlreadyRecorded);
                }
                let Some(level) = level.filter(|l| l.id != default) else {
                    return Ok(SubscriptionOutcome::UnknownLevel);
                };
                let Some(sub) = level.subscription.clone() else { return Ok(SubscriptionOutcome::UnknownLevel) };
                if pay.currency != STARS_CURRENCY || pay.total_amount != sub.stars {
                    tracing::warn!(charge = %pay.telegram_payment_charge_id, paid = pay.total_amount,
                        price = sub.stars, "a subscription paid another amount than its level costs now; granting it");
                }
                let mut user = tx.get_user(pay.payer)?.ok_or(BillingError::UnknownUser(pay.payer))?;
                let now = now_ms();
                let active = user.level == level.id && user.level_until.is_some_and(|u| u > now);
                let until = match user.level_until.filter(|_| active) {
                    Some(current) => current.max(expires_at),
                    None => expires_at,
                };
                user.level = level.id.clone();
                user.level_until = Some(until);
                user.updated_at = now;
                let reason = format!("{STARS_REASON}{}", pay.telegram_payment_charge_id);
                tx.put_user(&user)?;
                let operation_id = if sub.credits.0 > 0 {
                    let (op, payer) = credit_package(tx, user.id, sub.credits, &reason, &terms)?;
                    user = payer;
                    op.id
                } else {
                    NO_OPERATION
                };
                tx.put_payment(&PaymentRecord {
                    telegram_payment_charge_id: pay.telegram_payment_charge_id,
                    provider_payment_charge_id: pay.provider_payment_charge_id,
                    user_id: user.id,
                    package_id: format!("{LEVEL_PACKAGE_PREFIX}{}", level.id),
                    credits: sub.credits,
                    stars: pay.total_amount,
                    operation_id,
                    state: PaymentState::Paid,
                    created_at: now,
                    updated_at: now,
                    refund_operation_id: None,
                    refund_shortfall: Credits::ZERO,
                    refund_actor: String::new(),
                    refund_error: None,
                })?;
                Ok(SubscriptionOutcome::Subscribed {
                    level: level.id,
                    until,
                    credits: sub.credits,
                    balance: user.balance,
                    renewal: active,
                })
            })
            .await
    }

    /// Stores the default level for users whose `level_until` has passed (they already read as
    /// the default) and drops quota counters of days before today. Returns how many users
    /// changed. Credits are not touched.
    pub async fn sweep_levels(&self) -> Result<usize, BillingError> {
        let now = self.levels.clock().now_ms();
        let today = self.levels.day(now);
        // Found in a read transaction, so the scan never holds up the bot's writes.
        let expired: Vec<UserId> = self
            .store
            .read(move |rx| {
                Ok::<_, BillingError>(
                    rx.find_users()?
                        .into_iter()
                        .filter(|u| u.level_until.is_some_and(|until| until <= now))
                        .map(|u| u.id)
                        .collect(),
                )
            })
            .await?;
        self.store
            .write(move |tx| {
                let mut changed = 0;
                for id in expired {
                    // Read again: a renewal may have landed since the scan.
                    let Some(mut u) = tx.get_user(id)? else { continue };
                    if u.level_until.is_some_and(|until| until <= now) {
                        u.level = String::new();
                        u.level_until = None;
                        u.updated_at = now_ms();
                        tx.put_user(&u)?;
                        changed += 1;
                    }
                }
                tx.prune_quota(today)?;
                Ok(changed)
            })
            .await
    }

    /// Runs [`Billing::sweep_levels`] now and every ten minutes until `token` is cancelled.
    pub async fn run_level_sweep(&self, token: tokio_util::sync::CancellationToken) {
        loop {
            match self.sweep_levels().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(users = n, "subscriptions expired: back to the default level"),
                Err(e) => tracing::warn!(error = %e, "could not sweep expired levels"),
            }
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(600)) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::levels::{Clock, Levels};
    use crate::billing::{CheckoutRefusal, Profile};
    use crate::config::{BillingConfig, LevelSubscription, ReferralConfig};
    use crate::store::Store;
    use crate::store::records::OpKind;
    use std::sync::Arc;

    /// Billing with a default level and a `gold` level sold for 100 Stars with 30 credits a period;
    /// users 6 and 5 registered (signup bonus 10; 5 through 6's link), referral rewards all 0.
    async fn setup() -> (tempfile::TempDir, Store, Billing) {
        setup_with(ReferralConfig::default()).await
    }

    /// [`setup`] with `referral` terms.
    async fn setup_with(referral: ReferralConfig) -> (tempfile::TempDir, Store, Billing) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let mut gold = LevelConfig::unlimited("gold");
        gold.subscription = Some(LevelSubscription { stars: 100, credits: Credits(30) });
        let cfg = BillingConfig {
            signup_bonus: Credits(10),
            level: vec![LevelConfig::unlimited("basic"), gold],
            referral,
            ..Default::default()
        };
        let levels = Arc::new(Levels::of_billing(&cfg, &[], Clock::system()));
        let b = Billing::new(store.clone(), cfg).with_levels(levels);
        for (id, by) in [(6, None), (5, Some(UserId(6)))] {
            let p = Profile { id: UserId(id), first_name: "U".into(), username: None, language_code: None };
            b.register(p, by).await.expect("register");
        }
        (dir, store, b)
    }

    fn paid(charge: &str, payload: &str, stars: i64) -> StarPayment {
        StarPayment {
            payer: UserId(5),
            currency: STARS_CURRENCY.into(),
            total_amount: stars,
            invoice_payload: payload.into(),
            telegram_payment_charge_id: charge.into(),
            provider_payment_charge_id: String::new(),
        }
    }

    #[test]
    fn payloads_round_trip_and_refuse_others() {
        assert_eq!(subscription_payload("gold", UserId(5)), "sub:gold:5");
        assert_eq!(parse_subscription_payload("sub:gold:5"), Some(("gold".into(), UserId(5))));
        assert_eq!(parse_subscription_payload("sub::5"), None);
        assert_eq!(parse_subscription_payload("pkg:gold:5"), None);
        assert_eq!(parse_subscription_payload("sub:gold:x"), None);
    }

    #[tokio::test]
    async fn the_pre_checkout_checks_the_level_price_and_payer() {
        let (_d, _store, b) = setup().await;
        let check = |payer: i64, amount: i64, payload: &'static str| {
            let b = b.clone();
            async move { b.check_checkout(UserId(payer), STARS_CURRENCY, amount, payload).await.expect("check") }
        };
        assert_eq!(check(5, 100, "sub:gold:5").await, Ok(()));
        assert_eq!(check(5, 99, "sub:gold:5").await, Err(CheckoutRefusal::PriceChanged));
        assert_eq!(check(6, 100, "sub:gold:5").await, Err(CheckoutRefusal::NotPayer));
        assert_eq!(check(5, 100, "sub:basic:5").await, Err(CheckoutRefusal::PackageGone), "not sold");
        assert_eq!(check(5, 100, "sub:platinum:5").await, Err(CheckoutRefusal::PackageGone));
    }

    #[tokio::test]
    async fn a_period_with_credits_pays_the_referrer_its_share_once() {
        let (_d, store, b) = setup_with(ReferralConfig { purchase_percent: 10, ..Default::default() }).await;
        let until = now_ms() + 86_400_000;
        for _ in 0..2 {
            b.record_subscription(paid("c9", "sub:gold:5", 100), until).await.expect("record");
        }
        let shares: Vec<_> = store
            .read(|rx| rx.find_operations(UserId(6)))
            .await
            .expect("ops")
            .into_iter()
            .filter(|o| o.kind == OpKind::Referral)
            .collect();
        assert_eq!(shares.len(), 1, "{shares:?}");
        assert_eq!(shares[0].amount, Credits(3), "10% of the period's 30 credits");
        assert_eq!(shares[0].reason.as_deref(), Some("ref:5:stars:c9"));
        let payer = store.read(|rx| rx.get_user(UserId(5))).await.expect("read").expect("user");
        assert_eq!((payer.level.as_str(), payer.balance), ("gold", Credits(40)), "bonus 10 + 30 once");
        assert!(b.verify().await.expect("verify").is_empty());
    }

    #[tokio::test]
    async fn a_period_with_credits_is_one_purchase_row_recorded_once() {
        let (_d, store, b) = setup().await;
        let until = now_ms() + 86_400_000;
        let out = b.record_subscription(paid("c1", "sub:gold:5", 100), until).await.expect("record");
        assert_eq!(
            out,
            SubscriptionOutcome::Subscribed {
                level: "gold".into(),
                until,
                credits: Credits(30),
                balance: Credits(40),
                renewal: false
            }
        );
        let again = b.record_subscription(paid("c1", "sub:gold:5", 100), until).await.expect("again");
        assert_eq!(again, SubscriptionOutcome::AlreadyRecorded);
        // An older period delivered late never shortens the level.
        let late = b.record_subscription(paid("c2", "sub:gold:5", 100), until - 1000).await.expect("late");
        assert!(matches!(late, SubscriptionOutcome::Subscribed { until: u, renewal: true, .. } if u == until));
        // Another user's invoice, or a level not sold: nothing granted, nothing recorded.
        let other = b.record_subscription(paid("c3", "sub:gold:6", 100), until).await.expect("other");
        assert_eq!(other, SubscriptionOutcome::UnknownLevel);
        let basic = b.record_subscription(paid("c4", "sub:basic:5", 100), until).await.expect("basic");
        assert_eq!(basic, SubscriptionOutcome::UnknownLevel);
        let ops = store.read(|rx| rx.find_operations(UserId(5))).await.expect("ops");
        let kinds: Vec<_> = ops.iter().map(|o| o.kind).collect();
        assert_eq!(kinds, [OpKind::SignupBonus, OpKind::Purchase, OpKind::Purchase]);
        assert_eq!(store.read(|rx| rx.find_payments()).await.expect("payments").len(), 2);
        let u = store.read(|rx| rx.get_user(UserId(5))).await.expect("read").expect("user");
        assert_eq!((u.level.as_str(), u.level_until, u.balance), ("gold", Some(until), Credits(70)));
        assert!(b.verify().await.expect("verify").is_empty());
    }

    #[tokio::test]
    async fn a_refunded_period_takes_the_level_away_and_its_credits_back() {
        let (_d, store, b) = setup().await;
        let until = now_ms() + 86_400_000;
        b.record_subscription(paid("c1", "sub:gold:5", 100), until).await.expect("record");
        let refunded = store
            .write(|tx| crate::billing::begin_refund(tx, "c1", "admin:root"))
            .await
            .expect("refund")
            .expect("a paid charge");
        assert_eq!(refunded.0.state, PaymentState::RefundPending);
        let u = store.read(|rx| rx.get_user(UserId(5))).await.expect("read").expect("user");
        assert_eq!((u.level.as_str(), u.level_until, u.balance), ("", None, Credits(10)), "back to the default level");
        assert!(b.verify().await.expect("verify").is_empty());
        // A later period (a renewal Telegram still made) grants the level again.
        b.record_subscription(paid("c2", "sub:gold:5", 100), until).await.expect("again");
        let u = store.read(|rx| rx.get_user(UserId(5))).await.expect("read").expect("user");
        assert_eq!(u.level, "gold");
    }
}
