//! `/admin`: counters for today, per-model durations and two 30-day bar charts (inline SVG).
//!
//! The page reads maintained aggregates only (`store::stats`: per-day counters kept in step
//! by the write paths, table lengths, the activity index and the newest recorded durations),
//! so its cost does not grow with users, jobs or ledger rows. [`summarize`] computes the same
//! numbers from raw jobs; the models page and the tests use it.

use super::{Layout, status_name};
use crate::domain::{JobStatus, now_ms};
use crate::store::records::{JobRecord, Settlement, UserRecord};
use crate::store::stats::{counter, day_of};
use crate::store::{Rx, StoreError};
use crate::web::auth::AdminSession;
use crate::web::error::WebError;
use crate::web::{WebState, day_start, fmt_time};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

const DAY: i64 = 86_400_000;
const CHART_DAYS: usize = 30;

/// Per-model numbers over the window.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelStats {
    pub model: String,
    pub succeeded: u64,
    pub failed: u64,
    pub p50_ms: u64,
    pub p95_ms: u64,
}

/// One job that moved to a fallback model, as the dashboard lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverRow {
    /// The job's full id (its page) and short form (shown).
    pub job: String,
    pub short: String,
    pub from: String,
    pub to: String,
    /// Why it moved (the switch's reason or the provider's last error).
    pub why: String,
    /// `moved`, `asking`, `declined`, or the job's status once it ended.
    pub state: &'static str,
    pub at: String,
}

impl FailoverRow {
    fn of(j: &JobRecord) -> Option<FailoverRow> {
        let f = j.failover.as_ref()?;
        Some(FailoverRow {
            job: j.id.to_string(),
            short: j.id.short(),
            from: f.from_model.clone(),
            to: f.to_model.clone(),
            why: f.reason.chars().take(200).collect(),
            state: match (j.status, f.confirmed) {
                (JobStatus::AwaitingConfirmation, _) => "asking",
                (_, Some(false)) | (_, None) => "declined",
                (s, _) => status_name(s),
            },
            at: fmt_time(f.at),
        })
    }
}

/// Newest failovers the dashboard lists.
pub const RECENT_FAILOVERS: usize = 10;

/// Everything the dashboard shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub users_total: usize,
    pub users_new_today: usize,
    pub users_active_7d: usize,
    /// (status, count) for jobs created today.
    pub jobs_today: Vec<(&'static str, usize)>,
    /// Succeeded / finished today, in percent; `None` with nothing finished.
    pub success_rate: Option<u64>,
    pub held_today: i64,
    pub captured_today: i64,
    pub released_today: i64,
    pub queue_depth: usize,
    pub models: Vec<ModelStats>,
    /// Jobs created per day, oldest first.
    pub jobs_per_day: Vec<u64>,
    /// Credits captured per day, oldest first.
    pub credits_per_day: Vec<u64>,
    pub first_day: String,
    /// Jobs moved to a fallback model in the last 24 h and in all.
    pub failovers_24h: u64,
    pub failovers_total: u64,
    /// The newest [`RECENT_FAILOVERS`] of them, newest first.
    pub recent_failovers: Vec<FailoverRow>,
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() - 1) * p / 100]
}

/// Pure summary over users and the last 30 days of jobs.
pub fn summarize(users: &[UserRecord], jobs: &[JobRecord], queue_depth: usize, now: i64) -> Summary {
    let today = day_start(now);
    let first = today - (CHART_DAYS as i64 - 1) * DAY;
    let active: HashSet<i64> = jobs.iter().filter(|j| j.created_at >= now - 7 * DAY).map(|j| j.user_id.0).collect();
    let statuses = JobStatus::ALL;
    let todays: Vec<&JobRecord> = jobs.iter().filter(|j| j.created_at >= today).collect();
    let jobs_today =
        statuses.iter().map(|s| (status_name(*s), todays.iter().filter(|j| j.status == *s).count())).collect();
    let done: Vec<&&JobRecord> = todays.iter().filter(|j| j.status.is_terminal()).collect();
    let ok = done.iter().filter(|j| j.status == JobStatus::Succeeded).count();
    let success_rate = (!done.is_empty()).then(|| (ok * 100 / done.len()) as u64);
    let settled_today = |j: &JobRecord| j.finished_at.unwrap_or(j.created_at) >= today;
    let mut s = Summary {
        users_total: users.len(),
        users_new_today: users.iter().filter(|u| u.created_at >= today).count(),
        users_active_7d: active.len(),
        jobs_today,
        success_rate,
        held_today: todays.iter().filter(|j| j.hold_id.is_some()).map(|j| j.price.0).sum(),
        captured_today: 0,
        released_today: 0,
        queue_depth,
        models: Vec::new(),
        jobs_per_day: vec![0; CHART_DAYS],
        credits_per_day: vec![0; CHART_DAYS],
        first_day: fmt_time(first)[..10].to_string(),
        failovers_24h: 0,
        failovers_total: 0,
        recent_failovers: Vec::new(),
    };
    let mut moved: Vec<&JobRecord> = jobs.iter().filter(|j| j.failover.is_some()).collect();
    moved.sort_by_key(|j| std::cmp::Reverse(j.failover.as_ref().map_or(0, |f| f.at)));
    s.failovers_total = moved.len() as u64;
    s.failovers_24h = moved.iter().filter(|j| j.failover.as_ref().is_some_and(|f| f.at >= now - DAY)).count() as u64;
    s.recent_failovers = moved.iter().take(RECENT_FAILOVERS).filter_map(|j| FailoverRow::of(j)).collect();
    let mut durations: BTreeMap<&str, (u64, u64, Vec<u64>)> = BTreeMap::new();
    for j in jobs {
        let day = usize::try_from((j.created_at - first).div_euclid(DAY)).ok().filter(|d| *d < CHART_DAYS);
        if let Some(d) = day {
            s.jobs_per_day[d] += 1;
        }
        match j.settlement {
            Some(Settlement::Captured(_)) => {
                if settled_today(j) {
                    s.captured_today += j.price.0;
                }
                if let Some(d) = day {
                    s.credits_per_day[d] += u64::try_from(j.price.0).unwrap_or(0);
                }
            }
            Some(Settlement::Released(_)) if settled_today(j) => s.released_today += j.price.0,
            _ => {}
        }
        let e = durations.entry(j.model_id.as_str()).or_default();
        match j.status {
            JobStatus::Succeeded => {
                e.0 += 1;
                if let Some(f) = j.finished_at {
                    e.2.push(u64::try_from(f - j.created_at).unwrap_or(0));
                }
            }
            JobStatus::Failed => e.1 += 1,
            _ => {}
        }
    }
    s.models = durations
        .into_iter()
        .map(|(m, (ok, failed, mut d))| {
            d.sort_unstable();
            ModelStats {
                model: m.into(),
                succeeded: ok,
                failed,
                p50_ms: percentile(&d, 50),
                p95_ms: percentile(&d, 95),
            }
        })
        .collect();
    s
}

/// A bar chart as SVG markup. Only numbers go into it, so it is safe to embed unescaped.
pub fn bar_chart(values: &[u64], label: &str) -> String {
    let (w, h) = (600u64, 120u64);
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let n = values.len().max(1) as u64;
    let bw = w / n;
    let mut out = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {}\" role=\"img\" aria-label=\"{label}\" xmlns=\"http://www.w3.org/2000/svg\">",
        h + 14
    );
    for (i, v) in values.iter().enumerate() {
        let bh = v * h / max;
        let x = i as u64 * bw;
        let _ = write!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{bh}\" fill=\"#3b6ea8\"><title>{v}</title></rect>",
            x + 1,
            h - bh,
            bw.saturating_sub(2).max(1)
        );
    }
    let _ = write!(out, "<text x=\"0\" y=\"{}\" font-size=\"11\">max {max}</text></svg>", h + 12);
    out
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/dashboard.html")]
pub struct DashboardPage {
    layout: Layout,
    s: Summary,
    jobs_chart: String,
    credits_chart: String,
}

/// Durations sampled per model for p50/p95.
const DURATION_SAMPLE: usize = 500;

/// The dashboard from maintained aggregates (see the module doc).
pub fn from_aggregates(rx: &Rx, now: i64) -> Result<Summary, StoreError> {
    let today = day_of(now);
    let first = today - (CHART_DAYS as i64 - 1);
    let daily = rx.find_daily(first, today)?;
    let get = |day: i64, name: &str| daily.iter().find(|(d, n, _)| *d == day && n == name).map_or(0, |(_, _, v)| *v);
    let jobs_today: Vec<(&'static str, usize)> = JobStatus::ALL
        .iter()
        .map(|s| (status_name(*s), usize::try_from(get(today, &counter::jobs(status_name(*s)))).unwrap_or(0)))
        .collect();
    let count = |name: &str| jobs_today.iter().find(|(n, _)| *n == name).map_or(0, |(_, c)| *c);
    let (ok, failed, cancelled) = (count("succeeded"), count("failed"), count("cancelled"));
    let done = ok + failed + cancelled;
    let mut s = Summary {
        users_total: usize::try_from(rx.count_users()?).unwrap_or(usize::MAX),
        users_new_today: usize::try_from(get(today, counter::USERS_NEW)).unwrap_or(0),
        users_active_7d: daily
            .iter()
            .filter(|(d, n, _)| *d >= day_of(now - 7 * DAY) && n == counter::LAST_ACTIVE)
            .map(|(_, _, v)| usize::try_from(*v).unwrap_or(0))
            .sum(),
        jobs_today,
        success_rate: (done > 0).then(|| (ok * 100 / done) as u64),
        held_today: get(today, counter::HELD),
        captured_today: get(today, counter::CAPTURED),
        released_today: get(today, counter::RELEASED),
        queue_depth: usize::try_from(rx.count_active_jobs()?).unwrap_or(usize::MAX),
        models: Vec::new(),
        jobs_per_day: vec![0; CHART_DAYS],
        credits_per_day: vec![0; CHART_DAYS],
        first_day: fmt_time(first * DAY)[..10].to_string(),
        failovers_24h: 0,
        failovers_total: 0,
        recent_failovers: Vec::new(),
    };
    (s.failovers_24h, s.failovers_total) = rx.count_failovers(now - DAY)?;
    s.recent_failovers = rx.find_recent_failovers(RECENT_FAILOVERS)?.iter().filter_map(FailoverRow::of).collect();
    let mut models: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (day, name, v) in &daily {
        let Ok(i) = usize::try_from(day - first) else { continue };
        let v = u64::try_from(*v).unwrap_or(0);
        if name.starts_with("jobs:") {
            s.jobs_per_day[i] += v;
        } else if name == counter::CAPTURED {
            s.credits_per_day[i] += v;
        } else if let Some(m) = name.strip_prefix("model_ok:") {
            models.entry(m.to_string()).or_default().0 += v;
        } else if let Some(m) = name.strip_prefix("model_failed:") {
            models.entry(m.to_string()).or_default().1 += v;
        }
    }
    for (model, (succeeded, failed)) in models {
        let mut d = rx.find_recent_durations(&model, DURATION_SAMPLE)?;
        d.sort_unstable();
        s.models.push(ModelStats { p50_ms: percentile(&d, 50), p95_ms: percentile(&d, 95), model, succeeded, failed });
    }
    Ok(s)
}

/// How long one computed summary serves every admin's dashboard.
pub const SUMMARY_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// The last summary and when it was made; see [`SUMMARY_TTL`].
#[derive(Default)]
pub struct SummaryCache(std::sync::Mutex<Option<(std::time::Instant, Summary)>>);

impl SummaryCache {
    fn fresh(&self) -> Option<Summary> {
        let g = self.0.lock().ok()?;
        g.as_ref().filter(|(at, _)| at.elapsed() < SUMMARY_TTL).map(|(_, s)| s.clone())
    }
    fn put(&self, s: &Summary) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some((std::time::Instant::now(), s.clone()));
        }
    }
}

/// `GET /admin`. Numbers may be up to [`SUMMARY_TTL`] old: a wall of open dashboards (or a
/// reload storm) then costs one aggregate read per second, not one per request.
pub async fn get(State(st): State<WebState>, session: AdminSession) -> Result<DashboardPage, WebError> {
    let s = match st.summary.fresh() {
        Some(s) => s,
        None => {
            let now = now_ms();
            let s = st.store.read(move |rx| from_aggregates(rx, now)).await?;
            st.summary.put(&s);
            s
        }
    };
    let jobs_chart = bar_chart(&s.jobs_per_day, "jobs per day");
    let credits_chart = bar_chart(&s.credits_per_day, "credits captured per day");
    Ok(DashboardPage { layout: Layout::new("Dashboard", Some(&session)), s, jobs_chart, credits_chart })
}
