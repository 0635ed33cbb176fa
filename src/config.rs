//! Typed settings: defaults → TOML file → environment (`MEDIABOT_<SECTION>__<KEY>`).
//!
//! Secrets (bot token, provider keys) are [`Secret`]s: their `Debug`/`Display` print `***`, so
//! they cannot leak through `tracing` fields or error messages. A provider key can also be read
//! from a named environment variable (`api_key_env`), which keeps it out of the config file.

use crate::domain::{Credits, Format, Task};
use crate::providers::SizeParam;
use figment::Figment;
use figment::providers::{Env, Serialized};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// A string whose value never appears in `Debug` or `Display` output.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must send it (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub telegram: TelegramConfig,
    pub web: WebConfig,
    pub storage: StorageConfig,
    pub billing: BillingConfig,
    pub jobs: JobsConfig,
    pub library: LibraryConfig,
    pub providers: Vec<ProviderConfig>,
    pub models: Vec<ModelConfig>,
    /// The video flows' switches ([`VideoConfig`]).
    pub video: VideoConfig,
    /// Optional language model for prompt writing and translation ([`LlmConfig`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelegramConfig {
    /// Bot token from @BotFather. Prefer `MEDIABOT_TELEGRAM__TOKEN` over the file.
    pub token: Secret,
    /// Bot API base URL (a local Bot API server, or the emulator).
    pub api_url: String,
    /// Long-poll timeout for getUpdates, seconds (must stay below the HTTP client's 17 s).
    pub poll_timeout_secs: u32,
    /// Telegram user ids that receive admin alerts and may jump the queue.
    pub admins: Vec<i64>,
    /// Pace sends with teloxide's Throttle (Telegram's per-chat and global message limits).
    /// Turn off only for a local Bot API server without limits.
    pub throttle: bool,
    /// Public HTTPS URL Telegram POSTs updates to (a reverse proxy forwarding to `web.listen`;
    /// the URL's path is the route on the listener). Empty: long polling with getUpdates.
    pub webhook_url: String,
    /// Value Telegram sends in `X-Telegram-Bot-Api-Secret-Token` (1–256 of `A-Z a-z 0-9 _ -`).
    /// Empty: a random one per start (setWebhook runs at every start, so that is enough).
    pub webhook_secret: Secret,
    /// The last line of every result caption, so forwarded results advertise the bot.
    /// `"auto"` (default): the bot's own `t.me/<username>` link; `""`: no line; anything else
    /// (≤ 200 characters, one line) is written as is.
    pub caption_link: String,
}

impl Default for TelegramConfig {
    fn default() -> Self {
        TelegramConfig {
            token: Secret::default(),
            api_url: "https://api.telegram.org".into(),
            poll_timeout_secs: 10,
            admins: Vec::new(),
            throttle: true,
            webhook_url: String::new(),
            webhook_secret: Secret::default(),
            caption_link: "auto".into(),
        }
    }
}

impl TelegramConfig {
    /// The listener route for webhook updates: the path of `webhook_url` (so a reverse proxy
    /// forwards the URL unchanged). `Ok(None)` in long-polling mode. Errors (the message for
    /// the config error): not `https://`, no path, or a path the panel already uses.
    pub fn webhook_route(&self) -> Result<Option<String>, String> {
        if self.webhook_url.is_empty() {
            return Ok(None);
        }
        let url = url::Url::parse(&self.webhook_url).map_err(|e| format!("not a URL: {e}"))?;
        if url.scheme() != "https" {
            return Err("Telegram delivers webhooks only to https:// URLs".into());
        }
        let path = url.path().to_string();
        let taken = ["/admin", "/healthz", "/metrics", "/sandbox", "/emulator"];
        if path == "/" || taken.iter().any(|t| path == *t || path.starts_with(&format!("{t}/"))) {
            return Err(format!("use a path of its own, e.g. /telegram/webhook (got {path:?})"));
        }
        Ok(Some(path))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Listen address of the web panel (and, in sandbox mode, the emulator). An IP literal:
    /// a static binary must not resolve names through glibc NSS.
    pub listen: String,
    /// Reverse proxies (IP literals or CIDR blocks, e.g. `127.0.0.1`, `10.0.0.0/8`) whose
    /// `X-Forwarded-For` / `X-Real-IP` name the real client. From any other peer those headers
    /// are ignored. Empty: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Public HTTPS address of this appliance's web listener (behind a reverse proxy), e.g.
    /// `https://bot.example.org`. When set, a result over Telegram's 50 MB upload limit is sent
    /// as a signed link to `<public_url>/download/…` (valid 7 days); unset, such a result fails
    /// and its hold is released. An https URL with a host and no query or fragment.
    #[serde(default)]
    pub public_url: Option<String>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig { listen: "127.0.0.1:8080".into(), trusted_proxies: Vec::new(), public_url: None }
    }
}

impl WebConfig {
    /// `trusted_proxies` parsed; a bare IP is a one-address block. Errors: the entry's index
    /// (config validation reports it first).
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, usize> {
        self.trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = s.trim();
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| i)
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Holds `mediabot.redb` and `media/` (result files named by sha256).
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { data_dir: PathBuf::from("./mediabot-data") }
    }
}

/// The name of the bot's money per language, each either a plain label (`"⭐"`) or the
/// noun's plural forms joined by `|` in CLDR order (`"credit|credits"`,
/// `"кредит|кредита|кредитов"`: one|few|many). Config: `currency = "⭐"` for every language,
/// or `currency = { en = "credit|credits", ru = "кредит|кредита|кредитов" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency(std::collections::BTreeMap<String, String>);

impl Currency {
    /// From `(language code, forms)` pairs.
    pub fn from_forms<'a>(forms: impl IntoIterator<Item = (&'a str, &'a str)>) -> Currency {
        Currency(forms.into_iter().map(|(l, f)| (l.to_string(), f.to_string())).collect())
    }

    /// The forms for language `code`: its own, else English's, else any.
    pub fn label(&self, code: &str) -> &str {
        self.0.get(code).or_else(|| self.0.get("en")).or_else(|| self.0.values().next()).map_or("", String::as_str)
    }
}

impl From<&str> for Currency {
    fn from(plain: &str) -> Currency {
        Currency::from_forms([("en", plain)])
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Currency, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Plain(String),
            ByLanguage(std::collections::BTreeMap<String, String>),
        }
        Ok(match Raw::deserialize(d)? {
            // One label for every language: it must win over the default's Russian forms.
            Raw::Plain(p) => Currency::from_forms([("en", p.as_str()), ("ru", p.as_str())]),
            Raw::ByLanguage(m) => Currency(m),
        })
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label("en"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// The name of the money after amounts, per language with plural forms (see [`Currency`]).
    pub currency: Currency,
    /// Credited once, when a user first sends /start.
    pub signup_bonus: Credits,
    /// Price of one "📝 Add text" job (drawn locally, no provider). Free by default.
    pub add_text_price: Credits,
    /// Price of one "🔍 Resize" job (2×/4× enlargement, drawn locally). Free by default.
    pub resize_price: Credits,
    /// Price of one "✍️ Write" job (a prompt written by the `[llm]` language model). Free by
    /// default; held when the job is made and captured only when the prompt is delivered.
    pub write_price: Credits,
    /// Access level ids without rules (the older, short form): every level unlimited, every
    /// model allowed; the first is everyone's default. Ignored when `[[billing.level]]` is
    /// given (then leave it out, or list the same ids). Read the levels through
    /// [`BillingConfig::level_rules`] / [`BillingConfig::level_ids`].
    pub levels: Vec<String>,
    /// Access levels with their rules (`[[billing.level]]`, see [`LevelConfig`]); the first is
    /// everyone's default. Empty: the ids of `levels`, unlimited.
    pub level: Vec<LevelConfig>,
    /// The level the bot's admins (`telegram.admins`) always have, whatever level is stored
    /// for them or bought (typically an unlimited `admin` level). Unset: admins are ordinary
    /// users for quotas and models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_level: Option<String>,
    /// IANA time zone the bot shows dates in (the user's history) and resets daily quotas in
    /// at local midnight (`Europe/Moscow`, `UTC`): one zone for both, so "today" means the
    /// same day in the history and in the quota.
    pub time_zone: String,
    /// Top-up packages (`[[billing.packages]]`) offered under "💳 Top up" and by `/buy`. Empty:
    /// no top-ups (the button is not shown and `/buy` says so).
    pub packages: Vec<Package>,
    /// The `/terms` text (Telegram asks bots selling digital goods for one). Empty: the built-in
    /// text of the user's language.
    pub terms: String,
    /// Whom `/paysupport` tells users to contact (`@name`, an e-mail, a URL). Empty: the bot's
    /// admins (`telegram.admins`), through this chat.
    pub support: String,
    /// The referral programme (`[billing.referral]`); all zero by default (links work, nobody
    /// is rewarded).
    pub referral: ReferralConfig,
    /// Crypto top-ups through @CryptoBot's Crypto Pay API (`[billing.crypto_pay]`); absent:
    /// no crypto buttons, no poller, no webhook route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crypto_pay: Option<CryptoPayConfig>,
}

/// Crypto Pay (protocols.md §9): packages with a `crypto` price get a "💎 Crypto" button; an
/// invoice is credited once, from the `invoice_paid` webhook or from polling `getInvoices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CryptoPayConfig {
    /// The app's API token from @CryptoBot (Crypto Pay → Create App). Prefer the environment:
    /// `MEDIABOT_BILLING__CRYPTO_PAY__TOKEN`. It also keys the webhook signature.
    pub token: Secret,
    /// API root: `https://pay.crypt.bot` (mainnet) or `https://testnet-pay.crypt.bot`
    /// (testnet tokens come from @CryptoTestnetBot). `https://` only (`http://` is accepted for
    /// loopback addresses, which only tests use).
    pub base_url: String,
    /// Seconds between two `getInvoices` calls for the invoices still open (always on: it is
    /// what credits payments when no webhook reaches this host). 5–3600.
    #[serde(alias = "poll_interval")]
    pub poll_interval_secs: u64,
    /// Seconds an invoice stays payable (`expires_in`, 60–2678400); then it is marked expired
    /// and never credited.
    pub invoice_ttl_secs: u64,
    /// Serve `POST /crypto-pay/webhook` on the web listener, for the webhook URL set in
    /// @CryptoBot (Crypto Pay → My Apps → Webhooks). Off: polling alone credits payments.
    pub webhook: bool,
}

impl Default for CryptoPayConfig {
    fn default() -> Self {
        CryptoPayConfig {
            token: Secret::default(),
            base_url: "https://pay.crypt.bot".into(),
            poll_interval_secs: 30,
            invoice_ttl_secs: 3600,
            webhook: false,
        }
    }
}

impl CryptoPayConfig {
    /// Checks the section; `Err((field, message))`. Messages never quote the token.
    fn check(&self) -> Result<(), (&'static str, String)> {
        let t = self.token.expose();
        // Tokens look like `12345:AAzQcZWQqQAbsfgPnOLr4FHC8Doa4L7KryC`.
        if t.is_empty()
            || t.len() > 256
            || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '_' || c == '-')
        {
            return Err(("token", "the app token from @CryptoBot (set MEDIABOT_BILLING__CRYPTO_PAY__TOKEN)".into()));
        }
        let url = url::Url::parse(&self.base_url).map_err(|_| ("base_url", "not a URL".to_string()))?;
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        let ok = url.query().is_none()
            && url.username().is_empty()
            && url.password().is_none()
            && (url.scheme() == "https" || (url.scheme() == "http" && loopback));
        if !ok {
            return Err((
                "base_url",
                "an https:// URL such as https://pay.crypt.bot or https://testnet-pay.crypt.bot".into(),
            ));
        }
        if !(5..=3600).contains(&self.poll_interval_secs) {
            return Err(("poll_interval_secs", "5–3600 seconds".into()));
        }
        if !(60..=2_678_400).contains(&self.invoice_ttl_secs) {
            return Err(("invoice_ttl_secs", "60–2678400 seconds (Crypto Pay's expires_in)".into()));
        }
        Ok(())
    }
}

/// One access level (`[[billing.level]]`): what a user of this level may do each day.
///
/// ```toml
/// [[billing.level]]
/// id = "standard"                       # the first level is everyone's default
/// name = { ru = "Стандарт", en = "Standard" }
/// daily_limit = 3                       # generations per day; leave out for no limit
/// models = ["*"]                        # "*" = every model, or model ids
/// free = false                          # true: jobs cost 0 credits (still counted)
/// subscription = { stars = 250 }        # sold as a 30-day Telegram Stars subscription
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelConfig {
    /// Stable id, 1–32 of `a-z 0-9 _ -`: stored on users and in subscription invoice payloads.
    pub id: String,
    /// Name shown to users per language (`{ ru = "…", en = "…" }`); empty: the id.
    #[serde(default)]
    pub name: std::collections::BTreeMap<String, String>,
    /// Generations (model jobs; the local tools and "✍️ Write" are not counted) a user may
    /// start per day in `billing.time_zone`; `None` = no limit. A failed or cancelled job gives
    /// its one back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_limit: Option<u32>,
    /// Model ids this level may use; `"*"` = all.
    #[serde(default = "all_models")]
    pub models: Vec<String>,
    /// Jobs of this level cost 0 credits (they still count against `daily_limit`).
    #[serde(default)]
    pub free: bool,
    /// Sold as a Telegram Stars subscription (30 days, renewed by Telegram each period).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<LevelSubscription>,
}

/// The price of a level's subscription (`subscription = { stars = 250 }`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelSubscription {
    /// Stars per 30-day period (currency `XTR`, 1–10000: Telegram's subscription price cap).
    pub stars: i64,
    /// Credits added with each paid period (first payment and renewals), as one `Purchase`
    /// ledger row; 0 (default): the subscription buys only the level.
    #[serde(default)]
    pub credits: Credits,
}

fn all_models() -> Vec<String> {
    vec!["*".into()]
}

impl LevelConfig {
    /// An unlimited level allowing every model (the short `levels = [...]` form).
    pub fn unlimited(id: &str) -> LevelConfig {
        LevelConfig {
            id: id.into(),
            name: Default::default(),
            daily_limit: None,
            models: all_models(),
            free: false,
            subscription: None,
        }
    }

    /// The name in language `code`: its own, else English, else the id.
    pub fn label(&self, code: &str) -> &str {
        self.name.get(code).or_else(|| self.name.get("en")).map_or(self.id.as_str(), String::as_str)
    }

    /// Whether this level may run model `id`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == "*" || m == model)
    }
}

impl BillingConfig {
    /// The levels with their rules, the default first: `[[billing.level]]`, else the short
    /// `levels` list as unlimited levels.
    pub fn level_rules(&self) -> Vec<LevelConfig> {
        if self.level.is_empty() {
            self.levels.iter().map(|id| LevelConfig::unlimited(id)).collect()
        } else {
            self.level.clone()
        }
    }

    /// The level ids, the default first.
    pub fn level_ids(&self) -> Vec<String> {
        self.level_rules().into_iter().map(|l| l.id).collect()
    }
}

/// Rewards for inviting users (`[billing.referral]`), each paid to the referrer as one
/// `Referral` ledger row in the same transaction as its cause.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReferralConfig {
    /// Credits to the referrer when a user registers through their link.
    pub signup_bonus: Credits,
    /// Percent (0–100) of the credits of each referee purchase given to the referrer, rounded down.
    pub purchase_percent: u8,
    /// Most credits one referrer earns per day in `billing.time_zone` (a reward beyond it is cut
    /// to what is left); 0 = no cap.
    pub daily_cap: Credits,
}

/// One top-up package (`[[billing.packages]]`): what a user buys with Telegram Stars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    /// Stable id, 1–24 of `a-z 0-9 _ -`: it is in invoice payloads (`pkg:<id>:<user>`) and
    /// callback data, so renaming a package makes its unpaid invoices void.
    pub id: String,
    /// Credits bought (> 0), before the bonus.
    pub credits: Credits,
    /// Price in Telegram Stars (currency `XTR`, whole Stars, > 0).
    pub stars: i64,
    /// Price for Crypto Pay (`[billing.crypto_pay]`): a crypto asset or a fiat amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crypto: Option<CryptoPrice>,
    /// Extra credits, percent of `credits` rounded down (0–100).
    #[serde(default)]
    pub bonus_percent: u8,
}

/// A Crypto Pay price: `amount` is a decimal string (`"1.5"`) in exactly one of `asset` (a
/// crypto asset code, `USDT`: invoice `currency_type = crypto`) or `fiat` (`USD`, `RUB`:
/// `currency_type = fiat`, the payer picks the asset in @CryptoBot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoPrice {
    pub amount: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub asset: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fiat: String,
}

impl CryptoPrice {
    /// The currency code shown and sent: the asset, else the fiat code.
    pub fn currency(&self) -> &str {
        if self.asset.is_empty() { &self.fiat } else { &self.asset }
    }

    /// Whether the price is in fiat (`currency_type = fiat`).
    pub fn is_fiat(&self) -> bool {
        self.asset.is_empty()
    }
}

impl Package {
    /// The bonus credits (`credits × bonus_percent / 100`, rounded down).
    pub fn bonus(&self) -> Credits {
        Credits(self.credits.0.saturating_mul(i64::from(self.bonus_percent)) / 100)
    }

    /// Credits a purchase adds: `credits + bonus`.
    pub fn total(&self) -> Credits {
        Credits(self.credits.0.saturating_add(self.bonus().0))
    }

    /// Checks one package; `Err((field, message))`.
    fn check(&self) -> Result<(), (&'static str, String)> {
        let id_ok = (1..=24).contains(&self.id.len())
            && self.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !id_ok {
            return Err(("id", format!("{:?}: 1–24 of a-z 0-9 _ -", self.id)));
        }
        if self.credits.0 <= 0 {
            return Err(("credits", "must be greater than 0".into()));
        }
        if !(1..=100_000).contains(&self.stars) {
            return Err(("stars", "whole Stars, 1–100000".into()));
        }
        if self.bonus_percent > 100 {
            return Err(("bonus_percent", "0–100".into()));
        }
        if let Some(c) = &self.crypto {
            let mut parts = c.amount.splitn(2, '.');
            let int = parts.next().unwrap_or_default();
            let frac = parts.next();
            let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
            let positive = c.amount.chars().any(|ch| ch.is_ascii_digit() && ch != '0');
            if !digits(int) || frac.is_some_and(|f| !digits(f)) || !positive {
                return Err(("crypto.amount", format!("{:?}: a positive decimal string such as \"1.5\"", c.amount)));
            }
            let code = |s: &str| {
                (2..=10).contains(&s.len()) && s.chars().all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit())
            };
            match (c.asset.is_empty(), c.fiat.is_empty()) {
                (false, true) if !code(&c.asset) => {
                    return Err(("crypto.asset", format!("{:?}: an asset code such as USDT or TON", c.asset)));
                }
                (true, false) if !code(&c.fiat) => {
                    return Err(("crypto.fiat", format!("{:?}: a fiat code such as USD or RUB", c.fiat)));
                }
                (false, false) | (true, true) => {
                    return Err((
                        "crypto.asset",
                        "give exactly one of asset (USDT, TON …) or fiat (USD, RUB …)".into(),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            currency: Currency::from_forms([("en", "credit|credits"), ("ru", "кредит|кредита|кредитов")]),
            signup_bonus: Credits(100),
            add_text_price: Credits::ZERO,
            resize_price: Credits::ZERO,
            write_price: Credits::ZERO,
            levels: vec!["standard".into(), "vip".into()],
            level: Vec::new(),
            admin_level: None,
            time_zone: "Europe/Moscow".into(),
            packages: Vec::new(),
            terms: String::new(),
            support: String::new(),
            referral: ReferralConfig::default(),
            crypto_pay: None,
        }
    }
}

/// Retention of the image library (`[library]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LibraryConfig {
    /// Items one user keeps; beyond it their oldest non-favourite items are removed (table row,
    /// and the file once nothing else references it). Favourites are never removed: a user whose
    /// quota is full of favourites is told. 0 = no limit.
    pub max_items_per_user: u32,
    /// Megabytes all result files and live uploaded photos may take under `media/`; beyond it
    /// the oldest non-favourite items of anyone are removed. 0 = no limit.
    pub disk_budget_mb: u64,
    /// Days an uploaded photo (an edit's input) and an unanswered prompt (a draft) are kept
    /// after their last use; a photo a library item or a running job still uses stays.
    /// "🔁 Again" on an edit needs its photos. 0 = kept forever.
    pub input_retention_days: u32,
}

impl Default for LibraryConfig {
    fn default() -> Self {
        LibraryConfig { max_items_per_user: 500, disk_budget_mb: 10_240, input_retention_days: 7 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Attempts for transient provider errors before the job fails and the hold is released.
    pub max_attempts: u32,
    /// First retry delay, milliseconds (doubles each attempt, with jitter).
    pub retry_base_ms: u64,
    /// Minimum interval between progress edits in one chat, milliseconds (Telegram flood limits).
    pub progress_interval_ms: u64,
    /// Progress edits per second across all chats.
    pub edits_per_sec: u32,
    /// Jobs one user may have running at once (others wait in the queue).
    pub per_user_running: u32,
    /// How long a job moved to a pricier fallback model waits for the user's yes or no,
    /// seconds; unanswered, its hold is released and the user told.
    pub failover_answer_secs: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            max_attempts: 3,
            retry_base_ms: 2000,
            progress_interval_ms: 3000,
            edits_per_sec: 20,
            per_user_running: 2,
            failover_answer_secs: 86_400,
        }
    }
}

/// Which protocol a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// fal.ai queue API (protocols.md §2).
    Fal,
    /// ComfyUI native HTTP + WebSocket API (protocols.md §3).
    Comfyui,
    /// WaveSpeed AI task API (protocols.md §8), e.g. its face swap.
    Wavespeed,
    /// Local renderer used by `sandbox` when nothing real is configured.
    Demo,
    /// The ComfyUI-Connect plugin's workflow endpoints on a ComfyUI server (protocols.md
    /// §3.4); a model's `endpoint` names the saved workflow.
    ComfyuiConnect,
    /// OpenAI Images or any compatible server (protocols.md §4); `endpoint` = the model name
    /// (`gpt-image-1`, `dall-e-3`).
    Openai,
    /// Google Gemini `generateContent` with image output (protocols.md §5); `endpoint` = the
    /// model id (`gemini-2.5-flash-image`).
    Gemini,
    /// Hugging Face Inference Providers, text-to-image (protocols.md §6); `endpoint` = the
    /// model id (`black-forest-labs/FLUX.1-schnell`).
    Huggingface,
    /// Replicate predictions (protocols.md §7); `endpoint` = `owner/name` (an official model)
    /// or a 64-hex version id.
    Replicate,
}

impl ProviderKind {
    /// The API root used when `base_url` is left empty; `None`: the kind needs one.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com/v1beta"),
            ProviderKind::Huggingface => Some("https://router.huggingface.co/hf-inference"),
            ProviderKind::Replicate => Some("https://api.replicate.com"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub id: String,
    pub kind: ProviderKind,
    /// fal: `https://queue.fal.run`; ComfyUI and ComfyUI-Connect: `http://127.0.0.1:8188`;
    /// WaveSpeed: `https://api.wavespeed.ai/api/v3`. May be left empty for the kinds with a
    /// default ([`ProviderKind::default_base_url`]: OpenAI, Gemini, Hugging Face, Replicate).
    #[serde(default)]
    pub base_url: String,
    /// ComfyUI only: a pool of servers (`["http://gpu1:8188", "http://gpu2:8188"]`, 1–32
    /// http(s) URLs, no duplicates) given *instead of* `base_url` (setting both is an error).
    /// Each job goes to the healthy server with the fewest jobs in flight; the server is stored
    /// with the job, so a restart polls the right one ([`crate::providers::comfyui`]).
    #[serde(default)]
    pub base_urls: Vec<String>,
    #[serde(default)]
    pub api_key: Secret,
    /// Name of an environment variable holding the key (read at startup; wins over `api_key`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Requests in flight at once against this provider.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: u32,
    /// Overall time for one request, seconds (submit to result).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Poll interval for status checks, milliseconds (ComfyUI-Connect: between looks at
    /// `/history` when the run's answer had no file; 3000 suits it).
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Requests in flight at once per API key, across every provider entry using that key
    /// (fal documents 10 concurrent per key). Default: 10 for fal, unlimited otherwise.
    #[serde(default)]
    pub key_concurrency: Option<u32>,
    /// HTTPS proxy for this provider only (`http://host:port`), for providers unreachable
    /// from the host's country.
    #[serde(default)]
    pub proxy: Option<String>,
}

/// Which API the `[llm]` section speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmKind {
    /// Any OpenAI-compatible chat completions server: OpenAI, OpenRouter, llama.cpp, vLLM,
    /// Ollama (protocols.md §4.4).
    Openai,
    /// fal's `fal-ai/any-llm` through the queue API (protocols.md §2).
    Fal,
}

/// `[llm]`: a language model that turns a short idea into an image prompt and translates
/// prompts into English (used by the "✍️ Написать" flow).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub kind: LlmKind,
    /// openai: the API root including `/v1` (`https://api.openai.com/v1`,
    /// `http://127.0.0.1:8080/v1`); fal: the queue host, default `https://queue.fal.run`.
    #[serde(default)]
    pub base_url: String,
    /// openai: the model name (`gpt-4o-mini`; single-model servers such as llama.cpp ignore
    /// it); fal: the model any-llm routes to (`google/gemini-flash-1.5`).
    pub model: String,
    /// Optional for local servers (no `Authorization` header is sent without a key).
    #[serde(default)]
    pub api_key: Secret,
    /// Name of an environment variable holding the key (`FAL_KEY`; wins over `api_key`).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Bound on one whole exchange (request, queue polls, answer), seconds, 1–300.
    #[serde(default = "default_llm_timeout")]
    pub timeout_secs: u64,
    /// System prompt of `write_prompt`, ≤ 4000 characters.
    #[serde(default = "default_writer_prompt")]
    pub writer_system_prompt: String,
    /// System prompt of `translate`, ≤ 4000 characters.
    #[serde(default = "default_translate_prompt")]
    pub translate_system_prompt: String,
    /// Bound on translating one job's prompt (models with `translate = true`), seconds, 1–60.
    /// Shorter than `timeout_secs`: the job waits for it, and on expiry the original prompt is
    /// sent.
    #[serde(default = "default_translate_timeout")]
    pub translate_timeout_secs: u64,
}

/// fal's queue host, the `[llm]` default for `kind = "fal"`.
pub const FAL_QUEUE_URL: &str = "https://queue.fal.run";

fn default_llm_timeout() -> u64 {
    30
}

fn default_translate_timeout() -> u64 {
    8
}

/// Default `writer_system_prompt`.
pub fn default_writer_prompt() -> String {
    "You write prompts for an image generation model. The user gives a short idea, in any \
     language. Turn it into one detailed image prompt in English, in this order: the subject; \
     its appearance; the setting; the light; the style or medium. Keep everything consistent: \
     no details that contradict each other or the idea. Do not add technical parameters \
     (resolution, aspect ratio, seeds, model names, weights or flags). Answer with the prompt \
     only: no introduction, no quotes, no explanations."
        .into()
}

/// Default `translate_system_prompt`.
pub fn default_translate_prompt() -> String {
    "Translate the user's image generation prompt into English. Keep its meaning, details and \
     order; do not add, drop or explain anything. If it is already in English, return it \
     unchanged. Answer with the translation only."
        .into()
}

impl LlmConfig {
    /// `base_url` without a trailing slash; for fal, the queue host when none is given.
    pub fn effective_base_url(&self) -> String {
        let base = self.base_url.trim().trim_end_matches('/');
        match (self.kind, base.is_empty()) {
            (LlmKind::Fal, true) => FAL_QUEUE_URL.to_string(),
            _ => base.to_string(),
        }
    }

    /// The API key, from `api_key_env` if set and present, else `api_key` (may be empty).
    pub fn resolved_key(&self) -> Secret {
        resolve_key(&self.api_key, self.api_key_env.as_deref())
    }

    /// The section's own rules; errors name the key (`llm.timeout_secs`).
    fn validate(&self) -> Result<(), ConfigError> {
        let base = self.effective_base_url();
        let url_ok = url::Url::parse(&base).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
        if !url_ok {
            let what = match self.kind {
                LlmKind::Openai => "must be the http(s) API root, e.g. https://api.openai.com/v1",
                LlmKind::Fal => "must be an http(s) URL (default https://queue.fal.run)",
            };
            return Err(bad("llm.base_url", what));
        }
        if self.model.trim().is_empty() || self.model.len() > 200 {
            return Err(bad("llm.model", "1–200 characters (e.g. gpt-4o-mini, google/gemini-flash-1.5)"));
        }
        if !(1..=300).contains(&self.timeout_secs) {
            return Err(bad("llm.timeout_secs", "1–300 seconds"));
        }
        if !(1..=60).contains(&self.translate_timeout_secs) {
            return Err(bad("llm.translate_timeout_secs", "1–60 seconds"));
        }
        for (key, prompt) in [
            ("llm.writer_system_prompt", &self.writer_system_prompt),
            ("llm.translate_system_prompt", &self.translate_system_prompt),
        ] {
            if prompt.trim().is_empty() || prompt.chars().count() > 4000 {
                return Err(bad(key, "1–4000 characters"));
            }
        }
        Ok(())
    }
}

/// `api_key_env`'s variable when set and present, else `api_key`.
fn resolve_key(api_key: &Secret, api_key_env: Option<&str>) -> Secret {
    if let Some(var) = api_key_env {
        if let Ok(v) = std::env::var(var) {
            return Secret::new(v);
        }
    }
    api_key.clone()
}

/// `[video]`: how the 🎬 flows behave (seed 004's video bot).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VideoConfig {
    /// A photo sent with no flow open starts ⚡ quick mode (a video at once) instead of the
    /// "what can I do with it" offer. Only when an `image_to_video` model exists.
    pub photo_starts_quick: bool,
    /// The values ⚡ quick mode picks, by option name (`duration = 10`, `quality = 600`); an
    /// option not named here, or whose value the model lacks, takes its first value.
    pub quick: serde_json::Map<String, serde_json::Value>,
    /// The `image_to_video` model ⚡ quick mode uses; unset: the first usable one.
    pub quick_model: Option<String>,
}

impl Default for VideoConfig {
    fn default() -> Self {
        let mut quick = serde_json::Map::new();
        quick.insert("duration".into(), 10.into());
        quick.insert("quality".into(), 600.into());
        VideoConfig { photo_starts_quick: false, quick, quick_model: None }
    }
}

fn default_concurrency() -> u32 {
    2
}
fn default_timeout() -> u64 {
    600
}
fn default_poll_ms() -> u64 {
    1000
}

impl ProviderConfig {
    /// Concurrency limit shared by everything using this provider's key.
    pub fn key_limit(&self) -> Option<u32> {
        self.key_concurrency.or(match self.kind {
            ProviderKind::Fal => Some(10),
            _ => None,
        })
    }

    /// The API key, from `api_key_env` if set and present, else `api_key`.
    pub fn resolved_key(&self) -> Secret {
        resolve_key(&self.api_key, self.api_key_env.as_deref())
    }

    /// `base_url` without a trailing slash, or the kind's default when it is empty; for a
    /// ComfyUI pool ([`Self::base_urls`]) its first server.
    pub fn effective_base_url(&self) -> String {
        let base = self.base_url.trim().trim_end_matches('/');
        match (base.is_empty(), self.kind.default_base_url(), self.base_urls.first()) {
            (true, _, Some(first)) => first.trim().trim_end_matches('/').to_string(),
            (true, Some(d), None) => d.to_string(),
            _ => base.to_string(),
        }
    }

    /// The servers of a ComfyUI provider, in config order, without trailing slashes:
    /// `base_urls` when given, else the one `base_url`.
    pub fn servers(&self) -> Vec<String> {
        if self.base_urls.is_empty() {
            vec![self.effective_base_url()]
        } else {
            self.base_urls.iter().map(|u| u.trim().trim_end_matches('/').to_string()).collect()
        }
    }

    /// Checks `base_urls` (config key `key`): only for `kind = "comfyui"`, not together with
    /// `base_url`, 1–32 entries, each an http(s) URL with a host, no duplicates. Messages
    /// never quote a URL (it may carry `user:password@`); they name the entry's index.
    fn validate_servers(&self, key: &str) -> Result<(), ConfigError> {
        if self.base_urls.is_empty() {
            return Ok(());
        }
        if self.kind != ProviderKind::Comfyui {
            return Err(bad(key, "only a comfyui provider takes a list of servers"));
        }
        if !self.base_url.trim().is_empty() {
            return Err(bad(key, "give either base_url (one server) or base_urls (a pool), not both"));
        }
        if self.base_urls.len() > MAX_COMFY_SERVERS {
            return Err(bad(key, format!("at most {MAX_COMFY_SERVERS} servers")));
        }
        let mut seen = HashSet::new();
        for (j, raw) in self.servers().iter().enumerate() {
            let ok = url::Url::parse(raw)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty()));
            let Some(u) = ok else {
                return Err(bad(format!("{key}[{j}]"), "not an http(s) URL with a host (value not shown)"));
            };
            if !seen.insert(u.to_string().trim_end_matches('/').to_string()) {
                return Err(bad(format!("{key}[{j}]"), "the same server is listed twice"));
            }
        }
        Ok(())
    }
}

/// Most servers one ComfyUI provider may list in `base_urls`.
pub const MAX_COMFY_SERVERS: usize = 32;

/// `url` as it may be shown (check-config, the admin panel, logs): scheme, host, port and path,
/// without `user:password@`, query or fragment. Text that is not a URL becomes `(not a URL)`.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url.trim()) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Stable id used in callbacks, the ledger and stats (`flux-dev`).
    pub id: String,
    /// `[[providers]] id` this model runs on.
    pub provider: String,
    /// Name shown on buttons.
    pub display_name: String,
    #[serde(default = "default_task")]
    pub task: Task,
    /// fal endpoint id (`fal-ai/flux/dev`), WaveSpeed model id (`wavespeed-ai/image-face-swap`)
    /// or ComfyUI-Connect workflow name (`wan-i2v`).
    #[serde(default)]
    pub endpoint: String,
    /// ComfyUI API-format workflow file with `{{prompt}}`, `{{negative}}`, `{{width}}`,
    /// `{{height}}`, `{{seed}}`, `{{input_image}}` placeholders (video: also `{{duration}}`,
    /// `{{frames}}`, `{{fps}}`). Relative paths are resolved
    /// against the config file's directory.
    #[serde(default)]
    pub workflow: Option<PathBuf>,
    /// Price per job.
    pub price: Credits,
    #[serde(default = "default_formats")]
    pub formats: Vec<Format>,
    /// Extra names accepted in `| model=…`.
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub size_param: SizeParam,
    /// Extra input fields merged into the provider request.
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Overrides the provider's timeout for this model, seconds.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Input images the model takes: `images = 1` or `images = { min = 2, max = 4 }` (at most
    /// [`MAX_INPUT_IMAGES`]). Unset: the task's default ([`Task::default_images`]).
    #[serde(default)]
    pub images: Option<ImageCount>,
    /// The model needs a mask image (inpainting). No flow draws masks yet, so `check-config`
    /// refuses it rather than offer a model nobody can use.
    #[serde(default)]
    pub mask: bool,
    /// Choices the user makes after the format, asked in this order. The chosen value goes to
    /// the provider under `name`; its `price` is added to the model's `price`.
    #[serde(default)]
    pub options: Vec<ModelOption>,
    /// The request field of each input photo, in the order the task asks for them
    /// ([`Task::slots`]): `image_fields = ["swap_image_url", "base_image_url"]` for fal's
    /// face swap (the face, then the photo to change), `["face_image", "image"]` for
    /// WaveSpeed's. One name takes every photo (a list when there are several). Unset: the
    /// provider's default (fal: `image_urls` for edits and several photos, else `image_url`;
    /// WaveSpeed: `image`, or `images` for several; ComfyUI-Connect: the `$tag` titles of the
    /// LoadImage nodes, default `image`, `image_2`, …).
    #[serde(default)]
    pub image_fields: Vec<String>,
    /// A fixed instruction sent as the prompt, before the user's own words if any (the seed's
    /// "Усилить черты" retouch: an edit model told to keep age, lips and structure).
    #[serde(default)]
    pub instruction: Option<String>,
    /// The model understands English only (Seedream): the user's prompt is translated into
    /// English by the `[llm]` language model before the first submit (see
    /// [`crate::jobs::generate`] for when the call is skipped and what happens on failure).
    /// `instruction` is sent as written. `check-config` refuses it without an `[llm]` section.
    #[serde(default)]
    pub translate: bool,
    /// Models a job moves to, in this order, when this one cannot run it: its provider or the
    /// model switched off (retired, key refused, region blocked, payment required) or a
    /// transient failure outlasting the retries. Each must exist, differ from this model,
    /// have the same task and take every input count this model takes (`check-config`). The
    /// first usable one runs the job; a pricier one only after the user agrees
    /// ([`crate::jobs::generate`]).
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

/// Most input images one job takes (a Telegram album holds 10).
pub const MAX_INPUT_IMAGES: u8 = 10;

/// How many images a model takes (`images = 2` or `images = { min = 1, max = 4 }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ImageCount {
    Exactly(u8),
    Range { min: u8, max: u8 },
}

/// One declared option of a model (`[[models.options]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOption {
    /// What the option is (`duration`, `quality`, `aspect_ratio`, `strength`): picks the
    /// question's text (`option_<name>` in the locales, else the name itself) and, unless
    /// `field` says otherwise, the request field the value is sent as. Video models name
    /// `duration` (seconds) and `quality` (pixels of the longer side) so the job's size,
    /// ComfyUI's `{{duration}}` / `{{frames}}` and the ETA statistics can use them.
    pub name: String,
    /// Request field the value is sent as when it differs from `name` (fal Wan takes
    /// `num_frames`, Kling `duration`).
    #[serde(default)]
    pub field: Option<String>,
    /// The choices, in button order; the first is the default.
    pub values: Vec<OptionValue>,
}

/// One choice of a [`ModelOption`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionValue {
    /// Sent to the provider as is (a string, number or boolean).
    pub value: serde_json::Value,
    /// Button text; default: the value (`5`, `hd`).
    #[serde(default)]
    pub label: Option<String>,
    /// Credits added to the model's price when this value is chosen (≥ 0).
    #[serde(default)]
    pub price: Credits,
}

impl OptionValue {
    /// What the button shows.
    pub fn label(&self) -> String {
        match (&self.label, &self.value) {
            (Some(l), _) => l.clone(),
            (None, serde_json::Value::String(s)) => s.clone(),
            (None, v) => v.to_string(),
        }
    }
}

/// Chosen option values of a job: option name → index into its `values`.
pub type Choices = std::collections::BTreeMap<String, u8>;

impl ModelConfig {
    /// Inclusive range of input images the model takes.
    pub fn image_range(&self) -> (u8, u8) {
        match self.images {
            Some(ImageCount::Exactly(n)) => (n, n),
            Some(ImageCount::Range { min, max }) => (min, max),
            None => self.task.default_images(),
        }
    }

    /// Whether a job with `n` input images fits the model.
    pub fn takes_images(&self, n: usize) -> bool {
        let (min, max) = self.image_range();
        (usize::from(min)..=usize::from(max)).contains(&n)
    }

    /// Price of a job: `base` (the model's price now) plus the price of each chosen value; an
    /// option not chosen counts as its first value. `None` on overflow.
    pub fn quote(&self, base: Credits, choices: &Choices) -> Option<Credits> {
        self.options.iter().try_fold(base, |sum, o| {
            let i = usize::from(choices.get(&o.name).copied().unwrap_or(0));
            sum.checked_add(o.values.get(i).map_or(Credits::ZERO, |v| v.price))
        })
    }

    /// Each option with its chosen value (the first for an option not chosen).
    fn chosen<'a>(&'a self, choices: &'a Choices) -> impl Iterator<Item = (&'a ModelOption, &'a OptionValue)> + 'a {
        self.options
            .iter()
            .filter_map(|o| o.values.get(usize::from(choices.get(&o.name).copied().unwrap_or(0))).map(|v| (o, v)))
    }

    /// The chosen values by option name (`duration → 10`), first values for options not chosen.
    pub fn chosen_values(&self, choices: &Choices) -> serde_json::Map<String, serde_json::Value> {
        self.chosen(choices).map(|(o, v)| (o.name.clone(), v.value.clone())).collect()
    }

    /// The chosen values as request fields (`field → value`), first values for options not
    /// chosen; for `GenerateRequest::extra`.
    pub fn chosen_params(&self, choices: &Choices) -> serde_json::Map<String, serde_json::Value> {
        self.chosen(choices)
            .map(|(o, v)| (o.field.clone().unwrap_or_else(|| o.name.clone()), v.value.clone()))
            .collect()
    }
}

fn default_task() -> Task {
    Task::TextToImage
}
fn default_formats() -> Vec<Format> {
    Format::ALL.to_vec()
}
fn yes() -> bool {
    true
}

/// `SECTION__KEY` (what follows `MEDIABOT_`): a config variable. Anything without the double
/// underscore (`MEDIABOT_CHECKOUT`) belongs to someone else.
fn is_config_var(name: &str) -> bool {
    name.split_once("__").is_some_and(|(section, key)| !section.is_empty() && !key.is_empty())
}

/// Keys whose values may be or contain a secret: the bot token, the webhook secret, provider
/// keys, and URLs (a proxy or base URL can carry `user:password@`). `key` is a dotted path
/// (`providers.0.api_key`).
pub fn is_secret_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    matches!(last, "token" | "webhook_secret" | "api_key" | "proxy" | "base_url" | "base_urls" | "api_url")
}

/// A deserialization error without the offending value (serde's messages quote it).
fn value_free(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::InvalidType(_, expected) | Kind::InvalidValue(_, expected) => {
            format!("invalid value (not shown: it may be secret); expected {expected}")
        }
        _ => "invalid value (not shown: it may be secret)".into(),
    }
}

/// Reads the config file. A syntax error is reported by line and key only: the parser's own
/// message quotes the offending line, which may hold a token.
fn read_toml(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| bad("--config", format!("{}: {e}", path.display())))?;
    let e = match toml::from_str::<toml::Table>(&text) {
        Ok(table) => return Ok(table),
        Err(e) => e,
    };
    let at = e.span().map_or(0, |s| s.start).min(text.len());
    let line_no = text[..at].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or_default();
    let section = text[..at]
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[').map(|h| h.trim_matches(|c| c == '[' || c == ']' || c == ' ')))
        .filter(|h| !h.is_empty());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "_-.\"".contains(c)))
        .map(|k| match section {
            Some(sec) => format!("{sec}.{}", k.trim_matches('"')),
            None => k.trim_matches('"').to_string(),
        });
    let message = format!("{}: TOML syntax error on line {line_no}: {}", path.display(), e.message().trim());
    Err(bad(key.unwrap_or_else(|| "config".into()), message))
}

/// A configuration problem, naming the offending key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn bad(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), message: message.into() }
}

impl Config {
    /// Finds the file to load: `--config PATH`, else `./mediabot.toml`, else
    /// `/etc/mediabot/config.toml`; `None` when none exists (defaults + env only).
    pub fn locate(explicit: Option<&Path>) -> Option<PathBuf> {
        if let Some(p) = explicit {
            return Some(p.to_path_buf());
        }
        ["./mediabot.toml", "/etc/mediabot/config.toml"].iter().map(PathBuf::from).find(|p| p.exists())
    }

    /// Loads defaults → file → `MEDIABOT_<SECTION>__<KEY>` env, then validates. Other
    /// `MEDIABOT_*` variables are not config and are ignored. Errors name the key; for keys
    /// that may hold a secret ([`is_secret_key`]) the value is never part of the message.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(bad("--config", format!("file {} does not exist", path.display())));
            }
            // Parsed here rather than by figment's Toml provider, whose syntax errors quote the line.
            fig = fig.merge(Serialized::from(read_toml(path)?, figment::Profile::Default));
        }
        fig = fig.merge(Env::prefixed("MEDIABOT_").filter(|k| is_config_var(k.as_str())).split("__"));
        let mut cfg: Config = fig.extract().map_err(|e| {
            let key = e.path.join(".");
            let message = if is_secret_key(&key) { value_free(&e.kind) } else { e.kind.to_string() };
            bad(if key.is_empty() { "config".to_string() } else { key }, message)
        })?;
        if let Some(dir) = file.and_then(|p| p.parent()) {
            for m in &mut cfg.models {
                if let Some(w) = &m.workflow {
                    if w.is_relative() {
                        m.workflow = Some(dir.join(w));
                    }
                }
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// `billing.levels`, `[[billing.level]]` and `billing.admin_level`.
    fn validate_levels(&self) -> Result<(), ConfigError> {
        let b = &self.billing;
        let ids = b.level_ids();
        let key = if b.level.is_empty() { "billing.levels" } else { "billing.level" };
        if ids.is_empty() {
            return Err(bad(key, "needs at least one level (the first is the default)"));
        }
        // The short list is only a default unless it was written next to the long form: then
        // the two must agree, or an operator would wonder which one counts.
        let default_list = BillingConfig::default().levels;
        if !b.level.is_empty() && !b.levels.is_empty() && b.levels != default_list && b.levels != ids {
            return Err(bad(
                "billing.levels",
                "give either levels = [...] or [[billing.level]] (or the same ids in both)",
            ));
        }
        for (i, l) in ids.iter().enumerate() {
            let ok = (1..=32).contains(&l.len())
                && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !ok || ids[..i].contains(l) {
                let key = if b.level.is_empty() { key.to_string() } else { format!("billing.level[{i}].id") };
                return Err(bad(key, format!("{l:?}: 1–32 of a-z 0-9 _ -, each once")));
            }
        }
        for (i, l) in b.level.iter().enumerate() {
            let k = |f: &str| format!("billing.level[{i}].{f}");
            if l.models.is_empty() {
                return Err(bad(k("models"), "list model ids, or \"*\" for every model"));
            }
            for (j, m) in l.models.iter().enumerate() {
                if m != "*" && !self.models.iter().any(|c| &c.id == m) {
                    return Err(bad(k(&format!("models[{j}]")), format!("{m:?} is not a [[models]] id (or \"*\")")));
                }
            }
            if l.name.values().any(|n| n.trim().is_empty() || n.chars().count() > 32) {
                return Err(bad(k("name"), "1–32 characters per language"));
            }
            if let Some(s) = &l.subscription {
                if i == 0 {
                    return Err(bad(k("subscription"), "the first level is everyone's default; sell another one"));
                }
                if !(1..=10_000).contains(&s.stars) {
                    return Err(bad(k("subscription.stars"), "whole Stars, 1–10000 (Telegram's subscription cap)"));
                }
                if s.credits.is_negative() {
                    return Err(bad(k("subscription.credits"), "must not be negative"));
                }
            }
        }
        if let Some(a) = &b.admin_level {
            if !ids.contains(a) {
                return Err(bad("billing.admin_level", format!("{a:?} is not a level id ({})", ids.join(", "))));
            }
        }
        Ok(())
    }

    /// Checks cross-field rules serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_levels()?;
        let r = &self.billing.referral;
        if r.purchase_percent > 100 || r.signup_bonus.0 < 0 || r.daily_cap.0 < 0 {
            return Err(bad("billing.referral", "purchase_percent 0–100; signup_bonus and daily_cap ≥ 0"));
        }
        if jiff::tz::TimeZone::get(&self.billing.time_zone).is_err() {
            return Err(bad("billing.time_zone", "an IANA time zone name such as Europe/Moscow or UTC"));
        }
        if !self.telegram.api_url.starts_with("http://") && !self.telegram.api_url.starts_with("https://") {
            return Err(bad("telegram.api_url", "must be an http(s) URL"));
        }
        if !self.telegram.webhook_url.is_empty() {
            self.telegram.webhook_route().map_err(|m| bad("telegram.webhook_url", m))?;
        }
        let secret = self.telegram.webhook_secret.expose();
        if secret.len() > 256 || !secret.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(bad("telegram.webhook_secret", "1-256 characters from A-Z a-z 0-9 _ - (Telegram's rule)"));
        }
        let link = &self.telegram.caption_link;
        if link.chars().count() > 200 || link.contains(['\n', '\r']) {
            return Err(bad("telegram.caption_link", "one line of at most 200 characters (\"auto\": the bot's link)"));
        }
        if let Some(id) = &self.video.quick_model {
            if !self.models.iter().any(|m| &m.id == id && m.task == Task::ImageToVideo) {
                return Err(bad("video.quick_model", format!("{id:?} is not an image_to_video model")));
            }
        }
        if self.web.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad("web.listen", "must be IP:PORT (an IP literal, e.g. 127.0.0.1:8080)"));
        }
        if let Some(u) = &self.web.public_url {
            let ok = url::Url::parse(u)
                .is_ok_and(|u| u.scheme() == "https" && u.has_host() && u.query().is_none() && u.fragment().is_none());
            if !ok {
                return Err(bad("web.public_url", "must be an https URL without query, e.g. https://bot.example.org"));
            }
        }
        if let Err(i) = self.web.trusted_proxy_nets() {
            return Err(bad(
                format!("web.trusted_proxies[{i}]"),
                "must be an IP address or a CIDR block (e.g. 127.0.0.1 or 10.0.0.0/8)",
            ));
        }
        if self.billing.signup_bonus.is_negative() {
            return Err(bad("billing.signup_bonus", "must not be negative"));
        }
        if self.billing.add_text_price.is_negative() {
            return Err(bad("billing.add_text_price", "must not be negative"));
        }
        if self.billing.write_price.is_negative() {
            return Err(bad("billing.write_price", "must not be negative"));
        }
        if self.billing.resize_price.is_negative() {
            return Err(bad("billing.resize_price", "must not be negative"));
        }
        let mut package_ids = HashSet::new();
        for (i, p) in self.billing.packages.iter().enumerate() {
            p.check().map_err(|(field, m)| bad(format!("billing.packages[{i}].{field}"), m))?;
            if !package_ids.insert(p.id.as_str()) {
                return Err(bad(format!("billing.packages[{i}].id"), format!("{:?} is used twice", p.id)));
            }
        }
        if let Some(cp) = &self.billing.crypto_pay {
            cp.check().map_err(|(field, m)| bad(format!("billing.crypto_pay.{field}"), m))?;
        }
        if self.billing.terms.chars().count() > 4000 {
            return Err(bad("billing.terms", "at most 4000 characters (one Telegram message)"));
        }
        if self.billing.support.chars().count() > 200 || self.billing.support.contains(['\n', '\r']) {
            return Err(bad("billing.support", "one line of at most 200 characters"));
        }
        if self.jobs.per_user_running == 0 || self.jobs.edits_per_sec == 0 {
            return Err(bad(
                "jobs.per_user_running",
                "jobs.per_user_running and jobs.edits_per_sec must be at least 1",
            ));
        }
        if !(60..=7 * 86_400).contains(&self.jobs.failover_answer_secs) {
            return Err(bad("jobs.failover_answer_secs", "60 s to 7 days"));
        }
        if self.jobs.max_attempts == 0 {
            return Err(bad("jobs.max_attempts", "must be at least 1"));
        }
        let mut ids = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let k = |f: &str| format!("providers[{i}].{f}");
            if p.id.is_empty() || !ids.insert(p.id.as_str()) {
                return Err(bad(k("id"), format!("must be non-empty and unique (got {:?})", p.id)));
            }
            if p.id == crate::domain::LOCAL_PROVIDER || p.id == crate::domain::LLM_PROVIDER {
                return Err(bad(k("id"), format!("{:?} is reserved for the built-in tools", p.id)));
            }
            p.validate_servers(&k("base_urls"))?;
            if p.kind != ProviderKind::Demo && url::Url::parse(&p.effective_base_url()).is_err() {
                return Err(bad(k("base_url"), "not a URL"));
            }
            if p.max_concurrency == 0 {
                return Err(bad(k("max_concurrency"), "must be at least 1"));
            }
            if p.timeout_secs == 0 {
                return Err(bad(k("timeout_secs"), "must be at least 1"));
            }
            if let Some(proxy) = &p.proxy {
                if reqwest::Proxy::all(proxy.as_str()).is_err() {
                    return Err(bad(k("proxy"), "not a proxy URL (value not shown: it may hold credentials)"));
                }
            }
        }
        if let Some(llm) = &self.llm {
            llm.validate()?;
        }
        let mut mids = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let k = |f: &str| format!("models[{i}].{f}");
            if m.id.is_empty() || m.id.len() > 24 || !mids.insert(m.id.as_str()) {
                return Err(bad(k("id"), "must be unique, 1–24 characters"));
            }
            if [crate::domain::ADD_TEXT_MODEL, crate::domain::RESIZE_MODEL, crate::domain::WRITE_MODEL]
                .contains(&m.id.as_str())
            {
                return Err(bad(k("id"), format!("{:?} is reserved for a built-in tool", m.id)));
            }
            let Some(p) = self.providers.iter().find(|p| p.id == m.provider) else {
                return Err(bad(k("provider"), format!("no provider with id {:?}", m.provider)));
            };
            if m.price.is_negative() {
                return Err(bad(k("price"), "must not be negative"));
            }
            if m.formats.is_empty() {
                return Err(bad(k("formats"), "list at least one format"));
            }
            if !Task::HANDLED.contains(&m.task) {
                let handled: Vec<&str> = Task::HANDLED.iter().map(|t| t.as_str()).collect();
                return Err(bad(
                    k("task"),
                    format!("no bot flow handles {:?} yet (handled: {})", m.task.as_str(), handled.join(", ")),
                ));
            }
            if m.mask {
                return Err(bad(k("mask"), "no bot flow draws a mask yet"));
            }
            let (min, max) = m.image_range();
            if min > max || max > MAX_INPUT_IMAGES {
                return Err(bad(k("images"), format!("min ≤ max ≤ {MAX_INPUT_IMAGES} (got {min}–{max})")));
            }
            match m.task {
                Task::TextToImage if max > 0 => {
                    return Err(bad(k("images"), "text_to_image models take no input images yet"));
                }
                Task::ImageToVideo if max > 1 => {
                    return Err(bad(k("images"), "image_to_video models take one photo"));
                }
                Task::TextToVideo if max > 0 => {
                    return Err(bad(k("images"), "text_to_video models take no input images"));
                }
                Task::TextToImage | Task::TextToVideo => {}
                _ if min == 0 => {
                    return Err(bad(k("images"), format!("{} models take at least 1 image", m.task.as_str())));
                }
                t if t.slots().is_some() && (min, max) != (2, 2) => {
                    return Err(bad(k("images"), format!("{} models take exactly 2 images", t.as_str())));
                }
                _ => {}
            }
            let field_ok =
                |f: &String| (1..=64).contains(&f.len()) && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if m.image_fields.iter().any(|f| !field_ok(f))
                || (m.image_fields.len() > 1 && m.image_fields.len() != usize::from(max))
            {
                return Err(bad(k("image_fields"), format!("one field name (a-z 0-9 _) or one per image ({max})")));
            }
            // Neither API has a default field for "the face" or "the style": the model says where
            // each photo goes, or (fal) names one list field that takes both in order. Guessing
            // would swap the face and the photo.
            let named = match p.kind {
                ProviderKind::Fal => !m.image_fields.is_empty(),
                ProviderKind::Wavespeed => m.image_fields.len() == 2,
                _ => true,
            };
            if m.task.slots().is_some() && !named {
                return Err(bad(
                    k("image_fields"),
                    format!("name the request field of each of the 2 photos of {}, in order", m.task.as_str()),
                ));
            }
            if m.translate && self.llm.is_none() {
                return Err(bad(k("translate"), "needs an [llm] section: the language model translates the prompts"));
            }
            if m.instruction.as_deref().is_some_and(|i| i.trim().is_empty() || i.len() > 4000) {
                return Err(bad(k("instruction"), "1–4000 characters"));
            }
            let mut names = HashSet::new();
            for (j, o) in m.options.iter().enumerate() {
                let ko = |f: &str| k(&format!("options[{j}].{f}"));
                let ok = (1..=32).contains(&o.name.len())
                    && o.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                if !ok || !names.insert(o.name.as_str()) {
                    return Err(bad(ko("name"), "unique, 1–32 of a-z 0-9 _"));
                }
                if o.field.as_ref().is_some_and(|f| !field_ok(f)) {
                    return Err(bad(ko("field"), "a request field name: 1–64 of a-z A-Z 0-9 _"));
                }
                // Callback data carries the chosen index in one byte (and buttons must fit a row).
                if o.values.is_empty() || o.values.len() > 8 {
                    return Err(bad(ko("values"), "list 1 to 8 values"));
                }
                if let Some(v) = o.values.iter().find(|v| v.price.is_negative()) {
                    return Err(bad(ko("values"), format!("price of {} must not be negative", v.label())));
                }
            }
            if m.options.len() > 6 {
                return Err(bad(k("options"), "at most 6 options"));
            }
            self.validate_fallbacks(i, m)?;
            match p.kind {
                ProviderKind::Fal if m.endpoint.is_empty() => {
                    return Err(bad(k("endpoint"), "fal models need an endpoint id like fal-ai/flux/dev"));
                }
                ProviderKind::Wavespeed if m.endpoint.is_empty() => {
                    return Err(bad(
                        k("endpoint"),
                        "WaveSpeed models need a model id like wavespeed-ai/image-face-swap",
                    ));
                }
                ProviderKind::Openai | ProviderKind::Gemini | ProviderKind::Huggingface
                    if m.endpoint.trim().is_empty() || m.endpoint.contains('?') =>
                {
                    return Err(bad(
                        k("endpoint"),
                        "name the provider's model (gpt-image-1, gemini-2.5-flash-image, black-forest-labs/FLUX.1-schnell)",
                    ));
                }
                ProviderKind::Huggingface if m.task != Task::TextToImage => {
                    return Err(bad(k("task"), "Hugging Face models here do text_to_image only"));
                }
                ProviderKind::Replicate if !crate::providers::replicate::valid_endpoint(&m.endpoint) => {
                    return Err(bad(
                        k("endpoint"),
                        "owner/name of an official Replicate model, or a 64-hex version id",
                    ));
                }
                ProviderKind::ComfyuiConnect
                    if m.endpoint.is_empty() || m.endpoint.contains('/') || m.endpoint.contains('?') =>
                {
                    return Err(bad(
                        k("endpoint"),
                        "ComfyUI-Connect models name a saved workflow (Workflow > Save API Endpoint), e.g. wan-i2v",
                    ));
                }
                ProviderKind::Comfyui => {
                    let Some(w) = &m.workflow else {
                        return Err(bad(k("workflow"), "ComfyUI models need a workflow file"));
                    };
                    let text =
                        std::fs::read_to_string(w).map_err(|e| bad(k("workflow"), format!("{}: {e}", w.display())))?;
                    let v: serde_json::Value = serde_json::from_str(&text)
                        .map_err(|e| bad(k("workflow"), format!("{}: not JSON: {e}", w.display())))?;
                    if !v.is_object() {
                        return Err(bad(k("workflow"), "must be an API-format workflow (a JSON object of nodes)"));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `models[i].fallbacks`: each names another configured model of the same task that
    /// takes every input count `m` takes, once.
    fn validate_fallbacks(&self, i: usize, m: &ModelConfig) -> Result<(), ConfigError> {
        let key = format!("models[{i}].fallbacks");
        if m.fallbacks.len() > 5 {
            return Err(bad(&key, "at most 5 fallbacks"));
        }
        let (min, max) = m.image_range();
        for (j, id) in m.fallbacks.iter().enumerate() {
            if *id == m.id {
                return Err(bad(&key, format!("{id:?} is this model itself")));
            }
            if m.fallbacks[..j].contains(id) {
                return Err(bad(&key, format!("{id:?} is listed twice")));
            }
            let Some(f) = self.models.iter().find(|f| f.id == *id) else {
                return Err(bad(&key, format!("no model with id {id:?}")));
            };
            if f.task != m.task {
                return Err(bad(&key, format!("{id:?} does {}, this model {}", f.task.as_str(), m.task.as_str())));
            }
            let (fmin, fmax) = f.image_range();
            if fmin > min || fmax < max {
                return Err(bad(
                    &key,
                    format!("{id:?} takes {fmin}–{fmax} images, this model {min}–{max}: a job could not move"),
                ));
            }
        }
        Ok(())
    }

    /// Adds the built-in demo provider and model (used by `sandbox` when nothing is configured).
    pub fn with_demo(mut self) -> Config {
        if self.providers.is_empty() {
            self.providers.push(ProviderConfig {
                id: "demo".into(),
                kind: ProviderKind::Demo,
                base_url: String::new(),
                base_urls: vec![],
                api_key: Secret::default(),
                api_key_env: None,
                max_concurrency: 4,
                timeout_secs: 60,
                poll_interval_ms: 200,
                key_concurrency: None,
                proxy: None,
            });
            self.models.push(ModelConfig {
                id: "demo".into(),
                provider: "demo".into(),
                display_name: "Demo renderer".into(),
                task: Task::TextToImage,
                endpoint: String::new(),
                workflow: None,
                price: Credits(10),
                formats: Format::ALL.to_vec(),
                aliases: vec!["test".into()],
                size_param: SizeParam::ImageSize,
                params: Default::default(),
                timeout_secs: None,
                enabled: true,
                images: None,
                mask: false,
                options: vec![],
                image_fields: vec![],
                instruction: None,
                translate: false,
                fallbacks: vec![],
            });
            // One demo model per photo mode, so every flow can be tried in the sandbox.
            let demo = self.models.last().cloned().expect("just pushed");
            for (task, id, label) in [
                (Task::Edit, "demo-edit", "Demo ✏️"),
                (Task::Upscale, "demo-upscale", "Demo ⬆️ ×2"),
                (Task::RemoveBackground, "demo-cutout", "Demo ✂️"),
                (Task::Retouch, "demo-retouch", "Demo ✨"),
                (Task::FaceSwap, "demo-faceswap", "Demo 🔄"),
                (Task::Variations, "demo-variations", "Demo 🎲"),
                (Task::StyleTransfer, "demo-style", "Demo 🖼"),
                (Task::Sketch, "demo-sketch", "Demo ✍️"),
                (Task::Reference, "demo-reference", "Demo 🧬"),
            ] {
                self.models.push(ModelConfig {
                    id: id.into(),
                    display_name: label.into(),
                    task,
                    aliases: vec![],
                    images: matches!(task, Task::Edit | Task::Reference)
                        .then_some(ImageCount::Range { min: 1, max: 4 }),
                    ..demo.clone()
                });
            }
            // Seed 004's video bot: 5 / 10 / 15 s for 5 / 10 / 15 credits, 300 / 600 / 832 px.
            let option = |name: &str, values: [(i64, i64); 3]| ModelOption {
                name: name.into(),
                field: None,
                values: values
                    .into_iter()
                    .map(|(v, price)| OptionValue { value: v.into(), label: None, price: Credits(price) })
                    .collect(),
            };
            for (task, id, label) in
                [(Task::ImageToVideo, "demo-video", "Demo 🎬"), (Task::TextToVideo, "demo-text-video", "Demo 🎬 text")]
            {
                self.models.push(ModelConfig {
                    id: id.into(),
                    display_name: label.into(),
                    task,
                    aliases: vec![],
                    price: Credits(0),
                    size_param: SizeParam::None,
                    options: vec![
                        option("duration", [(5, 5), (10, 10), (15, 15)]),
                        option("quality", [(300, 0), (600, 0), (832, 0)]),
                    ],
                    ..demo.clone()
                });
            }
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_printed() {
        let s = Secret::new("123456:ABCDEF");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert_eq!(format!("{s}"), "***");
        let mut c = Config::default();
        c.telegram.token = s;
        assert!(!format!("{c:?}").contains("ABCDEF"));
    }

    #[test]
    fn errors_on_secret_keys_name_the_key_never_the_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        let cases = [
            // Wrong types: serde's message would quote the value.
            ("[telegram]\ntoken = 987654321\n", "telegram.token", "987654321"),
            ("[telegram]\nwebhook_secret = 555123555\n", "telegram.webhook_secret", "555123555"),
            (
                "[[providers]]\nid = \"f\"\nkind = \"fal\"\nbase_url = \"https://queue.fal.run\"\napi_key = 424242424242\n",
                "providers.0.api_key",
                "424242424242",
            ),
            // A syntax error: the TOML parser's message quotes the line.
            ("[telegram]\ntoken = 123456:AAsecretTokenPart\n", "telegram.token", "AAsecretTokenPart"),
            // Validation of a proxy URL with credentials.
            (
                "[[providers]]\nid = \"f\"\nkind = \"fal\"\nbase_url = \"https://queue.fal.run\"\nproxy = \"http://user:hunter2pass@[bad\"\n",
                "providers[0].proxy",
                "hunter2pass",
            ),
            (
                "[[providers]]\nid = \"f\"\nkind = \"fal\"\nbase_url = \"https://user:s3cretpw@ bad host\"\n",
                "providers[0].base_url",
                "s3cretpw",
            ),
        ];
        for (toml, key, secret) in cases {
            std::fs::write(&p, toml).expect("write");
            let e = Config::load(Some(&p)).expect_err(toml);
            assert_eq!(e.key, key, "{e}");
            assert!(!e.to_string().contains(secret), "{key}: the value leaked: {e}");
        }
        // Keys that hold no secret keep the helpful message with the value.
        std::fs::write(&p, "[billing]\nsignup_bonus = \"lots\"\n").expect("write");
        assert!(Config::load(Some(&p)).expect_err("type").to_string().contains("lots"));
    }

    #[test]
    fn only_double_underscore_env_names_are_config() {
        assert!(is_config_var("TELEGRAM__TOKEN"));
        assert!(is_config_var("web__trusted_proxies"));
        assert!(!is_config_var("CHECKOUT"));
        assert!(!is_config_var("TEST_ARTIFACTS"));
        assert!(!is_config_var("__TOKEN"));
        assert!(!is_config_var("TELEGRAM__"));
    }

    #[test]
    fn trusted_proxies_parse_and_bad_entries_are_named() {
        let mut c = Config::default();
        c.web.trusted_proxies = vec!["127.0.0.1".into(), "10.0.0.0/8".into(), "::1".into()];
        assert_eq!(c.web.trusted_proxy_nets().expect("nets").len(), 3);
        c.validate().expect("valid");
        c.web.trusted_proxies.push("nginx.local".into());
        assert_eq!(c.validate().expect_err("a name is no address").key, "web.trusted_proxies[3]");
    }

    #[test]
    fn the_shipped_package_example_validates_once_uncommented() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/config.toml")).expect("read");
        let (_, rest) = text.split_once("# [[billing.packages]]\n").expect("a commented package example");
        let block: Vec<&str> = std::iter::once("[[billing.packages]]")
            .chain(rest.lines().take_while(|l| l.starts_with("# ")).map(|l| &l[2..]))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        let body = format!("[storage]\ndata_dir = {:?}\n{}\n", dir.path().display().to_string(), block.join("\n"));
        std::fs::write(&p, body).expect("write");
        let c = Config::load(Some(&p)).expect("the example validates");
        let ids: Vec<&str> = c.billing.packages.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["small", "large"]);
        assert_eq!(c.billing.packages[1].total(), Credits(550));
    }

    #[test]
    fn the_shipped_referral_example_validates_and_bad_rules_are_named() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/config.toml")).expect("read");
        let (_, rest) = text.split_once("# [billing.referral]\n").expect("a commented referral example");
        let block: Vec<&str> = std::iter::once("[billing.referral]")
            .chain(rest.lines().take_while(|l| l.starts_with("# ")).map(|l| &l[2..]))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        let body = format!("[storage]\ndata_dir = {:?}\n{}\n", dir.path().display().to_string(), block.join("\n"));
        std::fs::write(&p, body).expect("write");
        let c = Config::load(Some(&p)).expect("the example validates");
        assert_eq!(c.billing.referral, ReferralConfig::default());
        let mut c = c;
        c.billing.referral.purchase_percent = 101;
        assert_eq!(c.validate().expect_err("over 100%").key, "billing.referral");
    }

    #[test]
    fn the_shipped_crypto_pay_example_validates_and_bad_settings_are_named_without_the_token() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/config.toml")).expect("read");
        let (_, rest) = text.split_once("# [billing.crypto_pay]\n").expect("a commented crypto_pay example");
        let block: Vec<&str> = std::iter::once("[billing.crypto_pay]")
            .chain(rest.lines().take_while(|l| l.starts_with("# ")).map(|l| &l[2..]))
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        let body = format!("[storage]\ndata_dir = {:?}\n{}\n", dir.path().display().to_string(), block.join("\n"));
        std::fs::write(&p, &body).expect("write");
        // The example leaves the token to the environment: without one it is refused, by key.
        let e = Config::load(Some(&p)).expect_err("no token");
        assert_eq!(e.key, "billing.crypto_pay.token");
        let body = body.replace("token = \"\"", "token = \"12345:AAzQcZWQqQAbsfgPnOLr4FHC8Doa4L7KryC\"");
        std::fs::write(&p, &body).expect("write");
        let c = Config::load(Some(&p)).expect("the example validates");
        let cp = c.billing.crypto_pay.clone().expect("section");
        assert_eq!((cp.base_url.as_str(), cp.poll_interval_secs, cp.webhook), ("https://pay.crypt.bot", 30, false));
        assert!(!format!("{cp:?}").contains("AAzQ"), "Debug hides the token");
        for (change, key) in [
            (CryptoPayConfig { base_url: "http://pay.crypt.bot".into(), ..cp.clone() }, "billing.crypto_pay.base_url"),
            (CryptoPayConfig { base_url: "http://127.0.0.1:9/".into(), ..cp.clone() }, ""),
            (CryptoPayConfig { poll_interval_secs: 1, ..cp.clone() }, "billing.crypto_pay.poll_interval_secs"),
            (CryptoPayConfig { invoice_ttl_secs: 10, ..cp.clone() }, "billing.crypto_pay.invoice_ttl_secs"),
            (CryptoPayConfig { token: Secret::new("12345:AAzQ cZ"), ..cp.clone() }, "billing.crypto_pay.token"),
        ] {
            let mut c = c.clone();
            c.billing.crypto_pay = Some(change);
            match c.validate() {
                Ok(()) => assert_eq!(key, "", "accepted"),
                Err(e) => {
                    assert_eq!(e.key, key);
                    assert!(!e.to_string().contains("AAzQ"), "{e}");
                }
            }
        }
    }

    #[test]
    fn packages_are_checked_with_the_key_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        let load = |body: &str| {
            std::fs::write(&p, format!("[storage]\ndata_dir = {:?}\n{body}", dir.path().display().to_string()))
                .expect("write");
            Config::load(Some(&p))
        };
        let ok = load(
            "[[billing.packages]]\nid = \"small\"\ncredits = 100\nstars = 50\nbonus_percent = 10\n\
             crypto = { amount = \"1.5\", asset = \"USDT\" }\n",
        )
        .expect("valid package");
        assert_eq!(ok.billing.packages[0].total(), Credits(110));
        for (body, key) in [
            ("id = \"Big One\"\ncredits = 1\nstars = 1", "billing.packages[0].id"),
            ("id = \"a\"\ncredits = 0\nstars = 1", "billing.packages[0].credits"),
            ("id = \"a\"\ncredits = 1\nstars = 0", "billing.packages[0].stars"),
            ("id = \"a\"\ncredits = 1\nstars = 1\nbonus_percent = 101", "billing.packages[0].bonus_percent"),
            (
                "id = \"a\"\ncredits = 1\nstars = 1\ncrypto = { amount = \"1,5\", asset = \"USDT\" }",
                "billing.packages[0].crypto.amount",
            ),
            (
                "id = \"a\"\ncredits = 1\nstars = 1\ncrypto = { amount = \"2\", asset = \"usdt\" }",
                "billing.packages[0].crypto.asset",
            ),
        ] {
            let e = load(&format!("[[billing.packages]]\n{body}\n")).expect_err(body);
            assert_eq!(e.key, key, "{body}");
        }
        for (body, key) in [
            ("crypto = { amount = \"2\", asset = \"USDT\", fiat = \"USD\" }", "billing.packages[0].crypto.asset"),
            ("crypto = { amount = \"2\" }", "billing.packages[0].crypto.asset"),
            ("crypto = { amount = \"2\", fiat = \"rub\" }", "billing.packages[0].crypto.fiat"),
        ] {
            let e =
                load(&format!("[[billing.packages]]\nid = \"a\"\ncredits = 1\nstars = 1\n{body}\n")).expect_err(body);
            assert_eq!(e.key, key, "{body}");
        }
        let fiat = load(
            "[[billing.packages]]\nid = \"a\"\ncredits = 1\nstars = 1\ncrypto = { amount = \"300\", fiat = \"RUB\" }\n",
        )
        .expect("a fiat price");
        let price = fiat.billing.packages[0].crypto.clone().expect("crypto");
        assert_eq!((price.is_fiat(), price.currency()), (true, "RUB"));
        let twice = "[[billing.packages]]\nid = \"a\"\ncredits = 1\nstars = 1\n";
        let e = load(&format!("{twice}{twice}")).expect_err("same id twice");
        assert_eq!(e.key, "billing.packages[1].id");
    }

    #[test]
    fn bad_key_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[web]\nlisten = \"localhost:80\"\n").expect("write");
        let e = Config::load(Some(&p)).expect_err("must fail");
        assert_eq!(e.key, "web.listen");
        std::fs::write(&p, "[billing]\nsignup_bonus = \"lots\"\n").expect("write");
        let e = Config::load(Some(&p)).expect_err("must fail");
        assert_eq!(e.key, "billing.signup_bonus", "{e}");
        std::fs::write(&p, "[[models]]\nid=\"x\"\nprovider=\"nope\"\ndisplay_name=\"X\"\nprice=1\n").expect("write");
        let e = Config::load(Some(&p)).expect_err("must fail");
        assert_eq!(e.key, "models[0].provider");
        std::fs::write(&p, "[telegram]\nwebhook_url = \"http://bot.example.org/tg\"\n").expect("write");
        let e = Config::load(Some(&p)).expect_err("plain http is refused");
        assert_eq!(e.key, "telegram.webhook_url", "{e}");
        std::fs::write(&p, "[telegram]\nwebhook_url = \"https://bot.example.org/admin/x\"\n").expect("write");
        let e = Config::load(Some(&p)).expect_err("panel paths are refused");
        assert_eq!(e.key, "telegram.webhook_url", "{e}");
        std::fs::write(&p, "[telegram]\nwebhook_url = \"https://bot.example.org/tg\"\nwebhook_secret = \"a b\"\n")
            .expect("write");
        let e = Config::load(Some(&p)).expect_err("bad secret characters");
        assert_eq!(e.key, "telegram.webhook_secret", "{e}");
        std::fs::write(&p, "[telegram]\nwebhook_url = \"https://bot.example.org/tg\"\nwebhook_secret = \"ok_1-2\"\n")
            .expect("write");
        assert_eq!(Config::load(Some(&p)).expect("valid").telegram.webhook_url, "https://bot.example.org/tg");
    }

    #[test]
    fn levels_take_rules_and_are_checked_with_the_key_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        // The packaging/config.toml example (seed 001), with the admins' level.
        let seed = "[billing]\nadmin_level = \"admin\"\n\
            [[billing.level]]\nid = \"standard\"\nname = { ru = \"Стандарт\", en = \"Standard\" }\n\
            daily_limit = 3\nmodels = [\"*\"]\n\
            [[billing.level]]\nid = \"subscriber\"\nname = { ru = \"Подписчик\", en = \"Subscriber\" }\n\
            daily_limit = 5\nsubscription = { stars = 250 }\n\
            [[billing.level]]\nid = \"admin\"\nname = { ru = \"Админ\", en = \"Admin\" }\n";
        std::fs::write(&p, format!("{}\n{seed}", demo_model(""))).expect("write");
        let c = Config::load(Some(&p)).expect("the seed example is valid");
        assert_eq!(c.billing.level_ids(), ["standard", "subscriber", "admin"]);
        let rules = c.billing.level_rules();
        assert_eq!((rules[0].daily_limit, rules[0].free, rules[0].label("ru")), (Some(3), false, "Стандарт"));
        assert_eq!(rules[1].subscription, Some(LevelSubscription { stars: 250, credits: Credits::ZERO }));
        assert_eq!(rules[2].daily_limit, None, "no limit");
        assert!(rules[0].allows("m") && rules[2].allows("anything"));
        assert_eq!(c.billing.time_zone, "Europe/Moscow", "the default zone");
        // The short form still works: unlimited levels.
        std::fs::write(&p, "[billing]\nlevels = [\"basic\", \"gold\"]\n").expect("write");
        let c = Config::load(Some(&p)).expect("short form");
        assert_eq!(c.billing.level_rules(), [LevelConfig::unlimited("basic"), LevelConfig::unlimited("gold")]);
        for (toml, key) in [
            ("[[billing.level]]\nid = \"a\"\nmodels = [\"m\", \"nope\"]\n", "billing.level[0].models[1]"),
            ("[[billing.level]]\nid = \"a\"\nsubscription = { stars = 5 }\n", "billing.level[0].subscription"),
            (
                "[[billing.level]]\nid = \"a\"\n[[billing.level]]\nid = \"b\"\nsubscription = { stars = 0 }\n",
                "billing.level[1].subscription.stars",
            ),
            ("[[billing.level]]\nid = \"a\"\n[[billing.level]]\nid = \"a\"\n", "billing.level[1].id"),
            ("[billing]\nadmin_level = \"root\"\n", "billing.admin_level"),
            ("[billing]\nlevels = [\"x\"]\n[[billing.level]]\nid = \"a\"\n", "billing.levels"),
            ("[billing]\ntime_zone = \"Mars/Olympus\"\n", "billing.time_zone"),
        ] {
            std::fs::write(&p, format!("{}\n{toml}", demo_model(""))).expect("write");
            let e = Config::load(Some(&p)).expect_err(toml);
            assert_eq!(e.key, key, "{toml}: {e}");
        }
    }

    /// A `[[models]]` entry on a demo provider plus `extra` lines.
    fn demo_model(extra: &str) -> String {
        format!(
            "[[providers]]\nid = \"d\"\nkind = \"demo\"\n\n[[models]]\nid = \"m\"\nprovider = \"d\"\n\
             display_name = \"M\"\nprice = 10\n{extra}"
        )
    }

    #[test]
    fn fallbacks_must_name_a_compatible_other_model() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        let two = |first: &str, second: &str| {
            format!(
                "[[providers]]\nid = \"d\"\nkind = \"demo\"\n\n\
                 [[models]]\nid = \"a\"\nprovider = \"d\"\ndisplay_name = \"A\"\nprice = 10\n{first}\n\
                 [[models]]\nid = \"b\"\nprovider = \"d\"\ndisplay_name = \"B\"\nprice = 12\n{second}\n"
            )
        };
        for (first, second, why) in [
            ("fallbacks = [\"nope\"]", "", "no model with id"),
            ("fallbacks = [\"a\"]", "", "itself"),
            ("fallbacks = [\"b\", \"b\"]", "", "twice"),
            ("fallbacks = [\"b\"]", "task = \"edit\"", "does edit"),
            (
                "task = \"edit\"\nimages = { min = 1, max = 4 }\nfallbacks = [\"b\"]",
                "task = \"edit\"\nimages = { min = 1, max = 2 }",
                "takes 1–2 images",
            ),
        ] {
            std::fs::write(&p, two(first, second)).expect("write");
            let e = Config::load(Some(&p)).expect_err(first);
            assert_eq!(e.key, "models[0].fallbacks", "{first}: {e}");
            assert!(e.to_string().contains(why), "{first}: {e}");
        }
        std::fs::write(
            &p,
            two("task = \"edit\"\nimages = 2\nfallbacks = [\"b\"]", "task = \"edit\"\nimages = { min = 1, max = 4 }"),
        )
        .expect("write");
        assert_eq!(Config::load(Some(&p)).expect("valid").models[0].fallbacks, ["b"]);
    }

    #[test]
    fn model_declarations_are_checked_with_the_key_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        for (extra, key) in [
            ("task = \"image_to_video\"\nimages = 2\n", "models[0].images"),
            ("task = \"text_to_video\"\nimages = 1\n", "models[0].images"),
            (
                "[[models.options]]\nname = \"duration\"\nfield = \"num frames\"\nvalues = [{ value = 5 }]\n",
                "models[0].options[0].field",
            ),
            ("task = \"edit\"\nmask = true\n", "models[0].mask"),
            ("task = \"edit\"\nimages = { min = 3, max = 2 }\n", "models[0].images"),
            ("task = \"edit\"\nimages = 11\n", "models[0].images"),
            ("task = \"edit\"\nimages = 0\n", "models[0].images"),
            ("task = \"upscale\"\nimages = 0\n", "models[0].images"),
            ("task = \"face_swap\"\nimages = 1\n", "models[0].images"),
            ("task = \"retouch\"\nimage_fields = [\"a b\"]\n", "models[0].image_fields"),
            ("task = \"retouch\"\ninstruction = \"  \"\n", "models[0].instruction"),
            ("images = 1\n", "models[0].images"),
            ("[[models.options]]\nname = \"Dur\"\nvalues = [{ value = 5 }]\n", "models[0].options[0].name"),
            ("[[models.options]]\nname = \"d\"\nvalues = []\n", "models[0].options[0].values"),
            ("[[models.options]]\nname = \"d\"\nvalues = [{ value = 5, price = -1 }]\n", "models[0].options[0].values"),
        ] {
            std::fs::write(&p, demo_model(extra)).expect("write");
            let e = Config::load(Some(&p)).expect_err(extra);
            assert_eq!(e.key, key, "{extra}: {e}");
        }
        let ok = "task = \"edit\"\nimages = { min = 2, max = 4 }\n\
                  [[models.options]]\nname = \"duration\"\n\
                  values = [{ value = 5, price = 5 }, { value = 10, label = \"10 s\", price = 10 }]\n";
        std::fs::write(&p, demo_model(ok)).expect("write");
        let c = Config::load(Some(&p)).expect("valid");
        let m = &c.models[0];
        assert_eq!((m.image_range(), m.takes_images(1), m.takes_images(4)), ((2, 4), false, true));
        assert_eq!(m.options[0].values[1].label(), "10 s");
        assert_eq!(m.options[0].values[0].label(), "5");
        let choices = Choices::from([("duration".to_string(), 1)]);
        assert_eq!(m.quote(Credits(10), &choices), Some(Credits(20)));
        assert_eq!(m.chosen_params(&choices).get("duration"), Some(&serde_json::json!(10)));
    }

    #[test]
    fn wavespeed_models_need_a_model_id_and_face_swap_names_both_photo_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        let ws = |extra: &str| {
            format!(
                "[[providers]]\nid = \"ws\"\nkind = \"wavespeed\"\nbase_url = \"https://api.wavespeed.ai/api/v3\"\n\n\
                 [[models]]\nid = \"swap\"\nprovider = \"ws\"\ndisplay_name = \"S\"\nprice = 5\ntask = \"face_swap\"\n{extra}"
            )
        };
        for (extra, key) in [
            ("image_fields = [\"face_image\", \"image\"]\n", "models[0].endpoint"),
            ("endpoint = \"wavespeed-ai/image-face-swap\"\n", "models[0].image_fields"),
            ("endpoint = \"wavespeed-ai/image-face-swap\"\nimage_fields = [\"image\"]\n", "models[0].image_fields"),
        ] {
            std::fs::write(&p, ws(extra)).expect("write");
            let e = Config::load(Some(&p)).expect_err(extra);
            assert_eq!(e.key, key, "{extra}: {e}");
        }
        std::fs::write(
            &p,
            ws("endpoint = \"wavespeed-ai/image-face-swap\"\nimage_fields = [\"face_image\", \"image\"]\n"),
        )
        .expect("write");
        let c = Config::load(Some(&p)).expect("valid");
        assert_eq!((c.providers[0].kind, c.providers[0].key_limit()), (ProviderKind::Wavespeed, None));
    }

    #[test]
    fn the_currency_is_one_label_or_forms_per_language() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[billing]\ncurrency = \"⭐\"\n").expect("write");
        let c = Config::load(Some(&p)).expect("plain");
        assert_eq!((c.billing.currency.label("ru"), c.billing.currency.label("en")), ("⭐", "⭐"));
        std::fs::write(&p, "[billing]\ncurrency = { ru = \"монета|монеты|монет\" }\n").expect("write");
        let c = Config::load(Some(&p)).expect("per language");
        assert_eq!(c.billing.currency.label("ru"), "монета|монеты|монет");
        assert_eq!(c.billing.currency.label("en"), "credit|credits", "the default fills the other languages");
    }
}
