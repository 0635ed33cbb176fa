//! Access levels with daily quotas, in Russian: the 4th generation of the day refused with the
//! reset time, two parallel submits at quota − 1, a failed job giving its quota back, the reset
//! at midnight in Europe/Moscow on an injected clock, the level's models, a free level, a Stars
//! subscription (pay, renew, expire) and the balance view. Every ledger is checked with
//! `billing::verify`, as `admin verify-ledger` does.

use super::harness::*;
use crate::billing::levels::{Clock, LevelRefusal, Levels};
use crate::config::{BillingConfig, Config, LevelConfig, LevelSubscription, ProviderKind};
use crate::domain::{Credits, Format, JobStatus, UserId};
use crate::emulator::PayInvoice;
use crate::jobs::{DeliveredFiles, JobEngine, NewJob, NotifyError, ResultFiles, Submitted};
use crate::providers::{GenerateRequest, GeneratedFile, ImageProvider, ProgressFn, ProviderError, Submission};
use crate::store::Store;
use crate::store::records::{JobPayload, JobRecord, LibraryItem, OpKind};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// 2026-12-06 10:00 UTC = 13:00 in Moscow.
const MORNING_MS: i64 = 1_796_551_200_000;
/// 2026-12-06 20:59:59 UTC = 23:59:59 in Moscow.
const LAST_SECOND_MS: i64 = 1_796_590_799_000;
/// 2026-12-06 21:00 UTC = 00:00 on 7 December in Moscow.
const MIDNIGHT_MS: i64 = 1_796_590_800_000;

fn level(id: &str, ru: &str, limit: Option<u32>, models: &[&str]) -> LevelConfig {
    LevelConfig {
        id: id.into(),
        name: [("ru".to_string(), ru.to_string()), ("en".to_string(), id.to_string())].into_iter().collect(),
        daily_limit: limit,
        models: models.iter().map(|m| m.to_string()).collect(),
        free: false,
        subscription: None,
    }
}

/// Seed 001's levels: standard 3 a day (only the `demo` model), subscriber 5 (everything,
/// a 250-Star subscription), admin unlimited; a free `promo` level with 2 a day.
fn levels_config(dir: &std::path::Path) -> Config {
    let mut c = test_config(dir);
    c.billing.currency = BillingConfig::default().currency;
    c.providers.push(provider("demo", ProviderKind::Demo, ""));
    c.models.push(model("demo", "demo", 10));
    c.models.push(model("pro", "demo", 20));
    let mut subscriber = level("subscriber", "Подписчик", Some(5), &["*"]);
    subscriber.subscription = Some(LevelSubscription { stars: 250, credits: Credits::ZERO });
    let mut promo = level("promo", "Промо", Some(2), &["*"]);
    promo.free = true;
    c.billing.level = vec![
        level("standard", "Стандарт", Some(3), &["demo"]),
        subscriber,
        level("admin", "Админ", None, &["*"]),
        promo,
    ];
    c.billing.admin_level = Some("admin".into());
    c.billing.packages = vec![crate::config::Package {
        id: "small".into(),
        credits: Credits(100),
        stars: 50,
        crypto: None,
        bonus_percent: 0,
    }];
    c.validate().expect("a valid config");
    c
}

fn user_json(id: i64) -> Value {
    json!({"id": id, "first_name": format!("User{id}"), "username": format!("user{id}"), "language_code": "ru"})
}

/// Creates one picture with `demo` and waits until it arrived (`n` pictures in the chat).
async fn create_one(h: &Harness, u: i64, n: usize) {
    h.create(u, "ru", "рыжий кот | model=demo", "Квадрат", "Квадрат").await;
    h.wait_for(u, 30, "the picture", |_| h.photos(u).len() == n).await;
}

/// Sends /balance and returns the newest balance message once it arrived.
async fn balance_view(h: &Harness, u: i64) -> Value {
    let before = h.bot_messages(u).iter().filter(|m| text_of(m).contains("💰 Баланс")).count();
    h.text(u, "ru", "/balance");
    let msgs = h
        .wait_for(u, 20, "the balance", |m| {
            m.iter().filter(|x| x["from_bot"] == true && text_of(x).contains("💰 Баланс")).count() > before
        })
        .await;
    msgs.into_iter().rev().find(|x| x["from_bot"] == true && text_of(x).contains("💰 Баланс")).expect("balance")
}

async fn quota(store: &Store, u: i64, day: i32) -> u32 {
    store.read(move |rx| rx.get_quota(UserId(u), day)).await.expect("quota")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fourth_generation_is_refused_until_midnight_in_moscow() {
    let (clock, now) = Clock::manual(MORNING_MS);
    let h = Harness::start_with_clock(levels_config, Some(clock)).await;
    let u = 3101;
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    for n in 1..=3 {
        create_one(&h, u, n).await;
    }
    assert_eq!(quota(&h.store(), u, 20261206).await, 3);
    let view = balance_view(&h, u).await;
    let text = text_of(&view);
    assert!(text.contains("🎚 Уровень: Стандарт"), "{text}");
    assert!(text.contains("Осталось 0 из 3 сегодня (лимит обновится в 00:00 МСК)"), "{text}");
    assert!(text.contains("≈ 7 генераций"), "70 credits at 10: {text}");
    assert!(view["reply_markup"].to_string().contains("⭐ Подписка"), "{view}");

    // The 4th of the day: refused with the limit, the reset time and the ways to get more.
    h.create(u, "ru", "четвёртый кот | model=demo", "Квадрат", "Квадрат").await;
    let refusal = h.wait_text(u, "Лимит на сегодня исчерпан").await;
    assert_eq!(
        text_of(&refusal),
        "⛔ Лимит на сегодня исчерпан: 3 генерации в день на уровне «Стандарт». Лимит обновится в 00:00 МСК.\n\n\
         Нужно больше? Оформите подписку ⭐ — с ней лимит выше."
    );
    let markup = refusal["reply_markup"].to_string();
    assert!(markup.contains("⭐ Подписка") && markup.contains("💳 Пополнить"), "{refusal}");
    let holds = |ops: &[crate::store::records::Operation]| ops.iter().filter(|o| o.kind == OpKind::Hold).count();
    assert_eq!(holds(&h.ledger(u).await), 3, "nothing held for the refused job");
    assert_eq!(h.balance(u).await, Credits(70));

    // 23:59:59 in Moscow: still the same day.
    now.store(LAST_SECOND_MS, Ordering::SeqCst);
    h.create(u, "ru", "ещё кот | model=demo", "Квадрат", "Квадрат").await;
    h.wait_for(u, 20, "a second refusal", |m| {
        m.iter().filter(|x| text_of(x).contains("Лимит на сегодня исчерпан")).count() == 2
    })
    .await;
    // Midnight in Moscow (21:00 UTC): a new day, a new quota.
    now.store(MIDNIGHT_MS, Ordering::SeqCst);
    create_one(&h, u, 4).await;
    assert_eq!(quota(&h.store(), u, 20261207).await, 1);
    let text = text_of(&balance_view(&h, u).await);
    assert!(text.contains("Осталось 2 из 3 сегодня"), "{text}");
    assert_eq!(holds(&h.ledger(u).await), 4);
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_level_allows_only_its_models_and_a_free_level_costs_nothing_but_counts() {
    let (clock, _now) = Clock::manual(MORNING_MS);
    let h = Harness::start_with_clock(levels_config, Some(clock)).await;
    let u = 3102;
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    h.create(u, "ru", "кот | model=pro", "Квадрат", "Квадрат").await;
    let m = h.wait_text(u, "недоступна").await;
    assert_eq!(text_of(&m), "⛔ Модель «Model pro» недоступна на уровне «Стандарт». Выберите другую модель.");
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus]);
    assert_eq!(quota(&h.store(), u, 20261206).await, 0, "a refused model takes no quota");

    // The admin gives the free level: the pro model now runs for 0 credits and still counts.
    h.store()
        .write(move |tx| {
            let mut rec = tx.get_user(UserId(u))?.expect("user");
            rec.level = "promo".into();
            tx.put_user(&rec)
        })
        .await
        .expect("level");
    h.create(u, "ru", "кот | model=pro", "Квадрат", "Квадрат").await;
    h.wait_for(u, 30, "the picture", |_| h.photos(u).len() == 1).await;
    assert_eq!(h.balance(u).await, Credits(100), "free level: nothing spent");
    let ops = h.ledger(u).await;
    assert_eq!(kinds(&ops), [OpKind::SignupBonus, OpKind::Hold, OpKind::Capture]);
    assert_eq!((ops[1].amount, ops[1].delta), (Credits(0), Credits(0)));
    assert_eq!(quota(&h.store(), u, 20261206).await, 1, "free jobs still count");
    let text = text_of(&balance_view(&h, u).await);
    assert!(text.contains("🎚 Уровень: Промо") && text.contains("Осталось 1 из 2 сегодня"), "{text}");
    assert!(text.contains("🆓 Генерации на вашем уровне бесплатны"), "{text}");
    h.verify_clean().await;
    h.assert_no_rejections();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscription_grants_its_level_renews_and_expires_back_to_the_default() {
    let start = jiff::Timestamp::now().as_millisecond();
    let (clock, now) = Clock::manual(start);
    let h = Harness::start_with_clock(levels_config, Some(clock.clone())).await;
    let u = 3103;
    h.text(u, "ru", "/start");
    h.wait_text(u, "бонус").await;
    // The package list offers the subscription too.
    h.text(u, "ru", "/buy");
    let list = h.wait_for_buttons(u, "⭐50").await;
    assert!(list["reply_markup"].to_string().contains("⭐ Подписка"), "{list}");
    let view = balance_view(&h, u).await;
    h.press(u, "ru", view["message_id"].as_i64().expect("id"), &Harness::button(&view, "⭐ Подписка"));
    let offer = h.wait_text(u, "Подписка на 30 дней").await;
    assert!(text_of(&offer).contains("• «Подписчик»: 5 генераций в день — ⭐250 за 30 дней"), "{offer}");
    let button = &offer["reply_markup"]["inline_keyboard"][0][0];
    assert_eq!(button["text"], "⭐ Подписчик — ⭐250 / 30 дней");
    let link = button["url"].as_str().expect("an invoice link").to_string();
    let payer: crate::emulator::ControlUser = serde_json::from_value(user_json(u)).expect("user");
    let pay = || h.emu.pay(payer.clone(), PayInvoice { message_id: None, invoice_link: Some(link.clone()) });

    let first = pay().await.expect("pay");
    assert!(first.paid, "{first:?}");
    h.wait_text(u, "Подписка оформлена").await;
    let rec = h.store().read(move |rx| rx.get_user(UserId(u))).await.expect("read").expect("user");
    let until = rec.level_until.expect("an end date");
    assert_eq!(rec.level, "subscriber");
    let period_ms = 2_592_000_000;
    assert!((until - (start + period_ms)).abs() < 60_000, "one period from now: {until}");
    let text = text_of(&balance_view(&h, u).await);
    assert!(text.contains("🎚 Уровень: Подписчик (до ") && text.contains("Осталось 5 из 5 сегодня"), "{text}");

    // Telegram renews it a period later: the same link paid again, not first-recurring.
    let second = pay().await.expect("renewal");
    assert!(second.paid, "{second:?}");
    h.wait_text(u, "Подписка продлена").await;
    let rec = h.store().read(move |rx| rx.get_user(UserId(u))).await.expect("read").expect("user");
    let renewed = rec.level_until.expect("an end date");
    assert_eq!(renewed - until, period_ms, "extended by one period");
    assert_eq!(h.emu.payments().charges.len(), 2);
    // What Telegram sent (api.json SuccessfulPayment): first payment, then a renewal.
    let sent: Vec<Value> = h
        .messages(u)
        .into_iter()
        .filter_map(|m| Some(m["successful_payment"].clone()).filter(|p| !p.is_null()))
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!((&sent[0]["is_recurring"], &sent[0]["is_first_recurring"]), (&json!(true), &json!(true)));
    assert_eq!((&sent[1]["is_recurring"], &sent[1]["is_first_recurring"]), (&json!(true), &Value::Null));
    assert_eq!(sent[1]["subscription_expiration_date"].as_i64().map(|s| s * 1000), Some(renewed));
    assert_eq!(sent[0]["invoice_payload"], format!("sub:subscriber:{u}"));
    // The renewal's update re-delivered: recorded once.
    h.push(json!({"user": user_json(u), "replay_update": second.successful_payment_update_id.expect("update")}));
    balance_view(&h, u).await;
    let payments = h.store().read(|rx| rx.find_payments()).await.expect("payments");
    assert_eq!(payments.len(), 2, "{payments:?}");
    assert!(payments.iter().all(|p| p.package_id == "level:subscriber" && p.credits == Credits(0) && p.stars == 250));
    assert_eq!(kinds(&h.ledger(u).await), [OpKind::SignupBonus], "a subscription moves no credits");
    assert_eq!(h.bot_messages(u).iter().filter(|m| text_of(m).contains("Подписка продлена")).count(), 1);

    // Past the end: the default level at once, then stored by the sweep; credits kept.
    now.store(renewed + 1000, Ordering::SeqCst);
    let text = text_of(&balance_view(&h, u).await);
    assert!(text.contains("🎚 Уровень: Стандарт\n") && text.contains("из 3 сегодня"), "{text}");
    let billing = crate::billing::Billing::new(h.store(), h.config.billing.clone())
        .with_levels(Arc::new(Levels::new(&h.config, clock)));
    assert_eq!(billing.sweep_levels().await.expect("sweep"), 1);
    let rec = h.store().read(move |rx| rx.get_user(UserId(u))).await.expect("read").expect("user");
    assert_eq!((rec.level.as_str(), rec.level_until, rec.balance), ("", None, Credits(100)));
    assert_eq!(billing.sweep_levels().await.expect("sweep"), 0, "nothing left to expire");
    h.verify_clean().await;
    h.assert_no_rejections();
}

/// A provider that refuses every prompt (the job fails and its hold is released).
struct Refusing;

#[async_trait::async_trait]
impl ImageProvider for Refusing {
    fn id(&self) -> &str {
        "refusing"
    }
    async fn submit(&self, _req: &GenerateRequest, _pre: Option<&str>) -> Result<Submission, ProviderError> {
        Err(ProviderError::Rejected("запрещённый промпт".into()))
    }
    async fn wait(&self, _sub: &Submission, _p: ProgressFn<'_>) -> Result<Vec<GeneratedFile>, ProviderError> {
        Err(ProviderError::Rejected("запрещённый промпт".into()))
    }
}

/// Tells the engine's story to nobody.
struct Quiet;

#[async_trait::async_trait]
impl crate::jobs::Notifier for Quiet {
    async fn progress(&self, _job: &JobRecord, _p: crate::jobs::JobProgress) {}
    async fn before_delivery(&self, _job: &JobRecord) {}
    async fn deliver(
        &self,
        _job: &JobRecord,
        _item: &LibraryItem,
        _files: ResultFiles,
        _sent: tokio::sync::oneshot::Sender<String>,
    ) -> Result<DeliveredFiles, NotifyError> {
        Ok(DeliveredFiles::default())
    }
    async fn failed(&self, _job: &JobRecord, _alt: &[crate::config::ModelConfig]) -> Result<(), NotifyError> {
        Ok(())
    }
    async fn delivery_interrupted(&self, _job: &JobRecord, _item: &LibraryItem) -> Result<(), NotifyError> {
        Ok(())
    }
    async fn admin_alert(&self, _text: &str) {}
}

fn new_job(u: i64, model: &str) -> NewJob {
    NewJob {
        user_id: UserId(u),
        chat_id: u,
        lang: "ru".into(),
        model_id: model.into(),
        payload: JobPayload::Generate {
            prompt: "кот".into(),
            negative: None,
            format: Format::Square,
            width: 64,
            height: 64,
            aspect_ratio: None,
            seed: 1,
            inputs: vec![],
            options: Default::default(),
        },
        progress_message_id: None,
        draft_id: None,
        priority: false,
    }
}

/// The engine over a fresh store on the manual clock, with `demo` and a `bad` model whose
/// provider refuses everything; the user 3104 registered (100 credits). The scheduler runs.
async fn engine_env() -> (tempfile::TempDir, Store, JobEngine, tokio_util::sync::CancellationToken) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut config = levels_config(dir.path());
    config.providers.push(provider("refusing", ProviderKind::Demo, ""));
    config.models.push(model("bad", "refusing", 10));
    config.billing.level[0].models.push("bad".into());
    config.validate().expect("valid");
    let store = Store::open(dir.path()).expect("open");
    let (clock, _) = Clock::manual(MORNING_MS);
    let levels = Arc::new(Levels::new(&config, clock));
    let billing = crate::billing::Billing::new(store.clone(), config.billing.clone()).with_levels(levels.clone());
    let profile = crate::billing::Profile {
        id: UserId(3104),
        first_name: "Вера".into(),
        username: None,
        language_code: Some("ru".into()),
    };
    billing.register(profile, None).await.expect("register");
    let catalog = crate::catalog::Catalog::open(store.clone(), &config).expect("catalog");
    let mut providers: std::collections::HashMap<String, crate::providers::DynProvider> = Default::default();
    providers
        .insert("demo".into(), Arc::new(crate::providers::demo::DemoProvider::new("demo", Duration::from_millis(1))));
    providers.insert("refusing".into(), Arc::new(Refusing));
    let engine =
        JobEngine::with_levels(store.clone(), &config, catalog, providers, Arc::new(Quiet), levels).expect("engine");
    let stop = tokio_util::sync::CancellationToken::new();
    (dir, store, engine, stop)
}

async fn wait_terminal(store: &Store, job: crate::domain::JobId) -> JobRecord {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let j = store.read(move |rx| rx.get_job(job)).await.expect("read").expect("job");
        if j.status.is_terminal() && j.settlement.is_some() {
            return j;
        }
        assert!(Instant::now() < deadline, "job did not finish: {j:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_parallel_submits_at_quota_minus_one_make_one_job_and_a_failed_job_gives_it_back() {
    let (_dir, store, engine, stop) = engine_env().await;
    let u = 3104;
    let day = 20261206;
    // Two of three used while the scheduler is not running: one job the provider will refuse,
    // one that will succeed.
    let Submitted::Queued { job: doomed, .. } = engine.submit(new_job(u, "bad")).await.expect("submit") else {
        panic!("queued")
    };
    assert_eq!(doomed.quota_day, Some(day));
    assert!(matches!(engine.submit(new_job(u, "demo")).await.expect("submit"), Submitted::Queued { .. }));
    assert_eq!(quota(&store, u, day).await, 2);
    // Two taps at once at quota − 1: exactly one job.
    let (a, b) = tokio::join!(engine.submit(new_job(u, "demo")), engine.submit(new_job(u, "demo")));
    let outcomes = [a.expect("a"), b.expect("b")];
    let queued = outcomes.iter().filter(|o| matches!(o, Submitted::Queued { .. })).count();
    let refused: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            Submitted::LevelRefused(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(queued, 1, "{outcomes:?}");
    assert_eq!(
        refused,
        [LevelRefusal::QuotaExhausted { level: "standard".into(), limit: 3, resets_at: MIDNIGHT_MS }],
        "the other is refused with the reset at Moscow midnight"
    );
    assert_eq!(quota(&store, u, day).await, 3);
    let jobs = store.read(|rx| rx.find_jobs()).await.expect("jobs");
    assert_eq!(jobs.len(), 3, "no job for the refused tap");
    let holds = store.read(move |rx| rx.find_operations(UserId(u))).await.expect("ledger");
    assert_eq!(holds.iter().filter(|o| o.kind == OpKind::Hold).count(), 3);

    // The scheduler runs them: the refused prompt fails, and its quota comes back in the
    // transaction that releases its hold.
    let running = {
        let (engine, stop) = (engine.clone(), stop.clone());
        tokio::spawn(async move { engine.run(stop).await })
    };
    for j in &jobs {
        wait_terminal(&store, j.id).await;
    }
    let failed = store.read(move |rx| rx.get_job(doomed.id)).await.expect("read").expect("job");
    assert_eq!(failed.status, JobStatus::Failed, "{failed:?}");
    assert!(matches!(failed.settlement, Some(crate::store::records::Settlement::Released(_))), "{failed:?}");
    // Every released job gives its one back (on a loaded CI machine a demo job may time out and
    // be released too: it must give its one back just the same).
    let released = |jobs: &[JobRecord]| {
        jobs.iter().filter(|j| matches!(j.settlement, Some(crate::store::records::Settlement::Released(_)))).count()
    };
    let settled: Vec<JobRecord> = store.read(|rx| rx.find_jobs()).await.expect("jobs");
    let gave_back = released(&settled);
    assert_eq!(quota(&store, u, day).await as usize, 3 - gave_back, "the failed job's one is back");
    // …and usable: one more job today, then the limit again.
    for _ in 0..gave_back {
        assert!(matches!(engine.submit(new_job(u, "demo")).await.expect("submit"), Submitted::Queued { .. }));
    }
    assert_eq!(quota(&store, u, day).await, 3);
    assert!(matches!(engine.submit(new_job(u, "demo")).await.expect("submit"), Submitted::LevelRefused(_)));
    let jobs = store.read(|rx| rx.find_jobs()).await.expect("jobs");
    for j in &jobs {
        wait_terminal(&store, j.id).await;
    }
    stop.cancel();
    let _ = running.await;
    let all: Vec<JobRecord> = store.read(|rx| rx.find_jobs()).await.expect("jobs");
    let ops = store.read(move |rx| rx.find_operations(UserId(u))).await.expect("ledger");
    assert_eq!(ops.iter().filter(|o| o.kind == OpKind::Release).count(), released(&all));
    assert_eq!(ops.iter().filter(|o| o.kind == OpKind::Capture).count(), all.len() - released(&all));
    assert_eq!(quota(&store, u, day).await as usize, all.len() - released(&all), "one per job that ran");
    let problems = store.read(crate::billing::verify).await.expect("verify");
    assert!(problems.is_empty(), "{problems:?}");
}
