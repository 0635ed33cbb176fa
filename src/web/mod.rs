//! Admin web panel: server-rendered askama pages under `/admin`, embedded assets, `/healthz`
//! and `/metrics`. [`router`] builds the whole tree so tests drive exactly what `app` serves.

pub mod assets;
pub mod auth;
pub mod crypto_pay;
pub mod error;
pub mod listener;
pub mod pages;

use crate::admin::Admin;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::jobs::JobEngine;
use crate::store::Store;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{Next, from_fn};
use axum::response::Response;
use axum::routing::{get, post};
use std::sync::{Arc, OnceLock};

/// What the panel's handlers get.
#[derive(Clone)]
pub struct WebState {
    pub store: Store,
    pub config: Arc<Config>,
    /// Models with their runtime state (the models page).
    pub catalog: Catalog,
    /// Every operator action goes through it (balance, ban, level, model state).
    pub admin: Admin,
    pub auth: Arc<auth::Auth>,
    /// The job engine, set by `app` once the bot runs. The panel starts before it (and runs
    /// alone without a bot token), so actions that need it answer 503 until then.
    pub jobs: Arc<OnceLock<JobEngine>>,
    /// What `/healthz` reports.
    pub health: Arc<crate::health::Health>,
    /// The dashboard's last summary (kept for `pages::dashboard::SUMMARY_TTL`).
    pub summary: Arc<pages::dashboard::SummaryCache>,
    /// `web.trusted_proxies`, parsed (see [`auth::client_ip`]).
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
    /// The download links' key, read (or made) on first use.
    pub download_key: Arc<OnceLock<crate::downloads::LinkKey>>,
}

impl WebState {
    pub fn new(store: Store, config: Arc<Config>, catalog: Catalog, health: Arc<crate::health::Health>) -> Self {
        // Validated with the config; an entry that still does not parse trusts nobody.
        let trusted_proxies = config.web.trusted_proxy_nets().unwrap_or_default().into();
        WebState {
            health,
            admin: Admin::new(store.clone(), catalog.clone(), &config),
            catalog,
            store,
            config,
            auth: Arc::new(auth::Auth::default()),
            jobs: Arc::new(OnceLock::new()),
            summary: Arc::default(),
            trusted_proxies,
            download_key: Arc::default(),
        }
    }

    /// The client's address for a request (see [`auth::client_ip`]).
    pub fn client_ip(&self, parts: &axum::http::request::Parts) -> std::net::IpAddr {
        auth::client_ip(parts, &self.trusted_proxies)
    }

    /// The key that signs download links (`<data_dir>/download-link.key`, made on first use).
    /// Errors: [`error::WebError::Internal`] when it cannot be read or created.
    pub fn download_key(&self) -> Result<&crate::downloads::LinkKey, error::WebError> {
        if let Some(k) = self.download_key.get() {
            return Ok(k);
        }
        let key = crate::downloads::LinkKey::load_or_create(&self.config.storage.data_dir)
            .map_err(|e| error::WebError::Internal(format!("download link key: {e}")))?;
        Ok(self.download_key.get_or_init(|| key))
    }

    /// The running job engine. Errors: [`error::WebError::Unavailable`] without a bot.
    pub fn jobs(&self) -> Result<&JobEngine, error::WebError> {
        self.jobs.get().ok_or(error::WebError::Unavailable("the bot is not running (no token configured)"))
    }
}

/// The panel's routes with their security headers. Merge it into the listener's router.
pub fn router(state: WebState) -> Router {
    use pages::*;
    Router::new()
        .route("/admin", get(dashboard::get))
        .route("/admin/login", get(login::get).post(login::post))
        .route("/admin/logout", post(login::logout))
        .route("/admin/users", get(users::list))
        .route("/admin/users/{id}", get(users::get))
        .route("/admin/users/{id}/balance", post(users::adjust))
        .route("/admin/users/{id}/ban", post(users::ban))
        .route("/admin/users/{id}/unban", post(users::unban))
        .route("/admin/users/{id}/level", post(users::set_level))
        .route("/admin/ledger", get(ledger::list))
        .route("/admin/ledger.csv", get(ledger::csv))
        .route("/admin/payments", get(payments::list))
        .route("/admin/payments/refund", post(payments::refund))
        .route("/admin/jobs", get(jobs::list))
        .route("/admin/jobs/rows", get(jobs::rows))
        .route("/admin/jobs/{id}", get(jobs::get))
        .route("/admin/jobs/{id}/cancel", post(jobs::cancel))
        .route("/admin/jobs/{id}/retry", post(jobs::retry))
        .route("/admin/library", get(library::list))
        .route("/admin/library/{id}/thumb", get(library::thumb))
        .route("/admin/library/{id}/file", get(library::file))
        .route("/admin/library/{id}/delete", post(library::delete))
        .route("/admin/audit", get(audit::list))
        .route("/admin/models", get(models::list))
        .route("/admin/models/{id}/toggle", post(models::toggle_model))
        .route("/admin/providers/{id}/toggle", post(models::toggle_provider))
        .route("/admin/models/{id}/price", post(models::set_price))
        .route("/admin/providers/{id}/concurrency", post(models::set_concurrency))
        .route(
            "/admin/broadcasts",
            get(broadcasts::list)
                .post(broadcasts::create)
                .layer(axum::extract::DefaultBodyLimit::max(broadcasts::MAX_IMAGE_BYTES + (64 << 10))),
        )
        .route("/admin/broadcasts/{id}", get(broadcasts::get))
        .route("/admin/broadcasts/{id}/progress", get(broadcasts::progress))
        .route("/admin/broadcasts/{id}/image", get(broadcasts::image))
        .route("/admin/broadcasts/{id}/start", post(broadcasts::start))
        .route("/admin/broadcasts/{id}/cancel", post(broadcasts::cancel))
        .route("/admin/static/{hash}/{*path}", get(assets::get))
        .route("/download/{id}", get(download::get))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .layer(from_fn(security_headers))
        .with_state(state)
}

/// Headers for every panel response (and, wired by `app`, the sandbox page's). The CSP allows
/// scripts and styles from our own origin only (no inline code anywhere in the templates), and
/// no framing.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let fixed: [(&str, &str); 6] = [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
             base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("permissions-policy", "camera=(), microphone=(), geolocation=()"),
    ];
    for (k, v) in fixed {
        h.insert(k, HeaderValue::from_static(v));
    }
    // Pages carry balances and CSRF tokens: never cache them (assets set their own policy).
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    res
}

pub use crate::domain::civil_from_days;

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const DAY_MS: i64 = 86_400_000;

/// `YYYY-MM-DD HH:MM` in UTC.
pub fn fmt_time(ms: i64) -> String {
    Time(ms).to_string()
}

/// A time (ms) shown as `YYYY-MM-DD HH:MM` in UTC; a template writes it without a `String`.
/// Pages list up to 100 times each, and `format!` was a tenth of a search page's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(pub i64);

impl Time {
    /// The text for years 0..=9999 (every other year is left to `Display`'s `format!`).
    fn ascii(self) -> Option<[u8; 16]> {
        let (y, m, d) = civil_from_days(self.0.div_euclid(DAY_MS));
        let secs = u32::try_from(self.0.rem_euclid(DAY_MS) / 1000).ok()?;
        let y = u32::try_from(y).ok().filter(|y| *y <= 9999)?;
        let mut b = *b"0000-00-00 00:00";
        for (at, len, v) in [(0, 4, y), (5, 2, m), (8, 2, d), (11, 2, secs / 3600), (14, 2, secs / 60 % 60)] {
            let mut v = v;
            for c in b[at..at + len].iter_mut().rev() {
                *c = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        Some(b)
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(b) = self.ascii() {
            return f.write_str(std::str::from_utf8(&b).map_err(|_| std::fmt::Error)?);
        }
        let (y, m, d) = civil_from_days(self.0.div_euclid(DAY_MS));
        let secs = self.0.rem_euclid(DAY_MS) / 1000;
        write!(f, "{y:04}-{m:02}-{d:02} {:02}:{:02}", secs / 3600, secs / 60 % 60)
    }
}

/// Digits, `-`, `:` and a space: nothing to escape.
impl askama::filters::HtmlSafe for Time {}

/// `YYYY-MM-DD` (UTC) → ms at that midnight.
pub fn parse_date(s: &str) -> Option<i64> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    ((1..=12).contains(&m) && (1..=days_in_month(y, m)).contains(&d)).then(|| days_from_civil(y, m, d) * DAY_MS)
}

/// Days in month `m` of year `y` (proleptic Gregorian calendar).
fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Midnight UTC of the day containing `ms`.
pub fn day_start(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(fmt_time(0), "1970-01-01 00:00");
        assert_eq!(parse_date("2024-02-29"), Some(days_from_civil(2024, 2, 29) * DAY_MS));
        let ms = parse_date("2026-11-22").expect("date") + 3_723_000;
        assert_eq!(fmt_time(ms), "2026-11-22 01:02");
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("2026-02-31"), None, "no 31st of February");
        assert_eq!(parse_date("2026-02-29"), None, "2026 is not a leap year");
        assert_eq!(parse_date("2000-02-29"), Some(days_from_civil(2000, 2, 29) * DAY_MS));
        assert_eq!(parse_date("1900-02-29"), None);
        assert_eq!(parse_date("2026-04-31"), None);
        assert_eq!(day_start(ms), parse_date("2026-11-22").expect("d"));
    }

    #[test]
    fn times_print_like_format_in_every_year() {
        let slow = |ms: i64| {
            let (y, m, d) = civil_from_days(ms.div_euclid(DAY_MS));
            let secs = ms.rem_euclid(DAY_MS) / 1000;
            format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", secs / 3600, secs / 60 % 60)
        };
        let year = 365 * DAY_MS;
        for ms in
            [0, -1, 59_999, 60_000, DAY_MS - 1, -year * 1971, -year * 1969, year * 8029, year * 9000, i64::MAX / 4]
                .into_iter()
                .chain((0..2000).map(|i| i * 7_919_000_123 - year * 100))
        {
            assert_eq!(fmt_time(ms), slow(ms), "{ms}");
            assert_eq!(Time(ms).to_string(), slow(ms), "{ms}");
        }
    }
}
