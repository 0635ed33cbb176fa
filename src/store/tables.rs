//! Every redb table, in one place. A value layout change means a new table name (`-2`) plus a
//! migration: redb records key/value type names and refuses a mismatched open.
//!
//! Values are records encoded by [`super::records::Record`] (JSON with a version field), so adding
//! an optional field needs no migration.

use redb::TableDefinition;

/// meta: key = name (`schema_version`, `last_update_id`) → value = bytes (u64 little-endian or text).
pub const META_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("meta-1");
/// users: key = Telegram user id → value = `UserRecord`.
pub const USERS_TABLE: TableDefinition<i64, &[u8]> = TableDefinition::new("users-1");
/// ledger: key = (user id, operation id UUIDv7 as u128, time ordered) → value = `Operation`.
pub const LEDGER_TABLE: TableDefinition<(i64, u128), &[u8]> = TableDefinition::new("ledger-1");
/// jobs: key = job id (UUIDv7 u128, so key order is FIFO) → value = `JobRecord`.
pub const JOBS_TABLE: TableDefinition<u128, &[u8]> = TableDefinition::new("jobs-1");
/// active jobs (the queue): key = job id → value = user id. A job is here until it is terminal
/// and its delivery is settled; workers scan only this table.
pub const ACTIVE_JOBS_TABLE: TableDefinition<u128, i64> = TableDefinition::new("active-jobs-1");
/// processing stats: key = (model id, format, job id) → value = duration in milliseconds.
pub const STATS_TABLE: TableDefinition<(&str, &str, u128), u64> = TableDefinition::new("stats-1");
/// library: key = image id → value = `LibraryItem`.
pub const LIBRARY_TABLE: TableDefinition<u128, &[u8]> = TableDefinition::new("library-1");
/// library index by owner: key = (user id, image id) → value = unit.
pub const LIBRARY_BY_USER_TABLE: TableDefinition<(i64, u128), ()> = TableDefinition::new("library-by-user-1");
/// media reference counts: key = sha256 hex of a file under `media/` → value = number of
/// library items pointing at it (the file is deleted when it reaches 0).
pub const MEDIA_REFS_TABLE: TableDefinition<&str, u64> = TableDefinition::new("media-refs-1");
/// dialogue state: key = chat id → value = the bot's state for that chat (opaque JSON).
pub const DIALOGUES_TABLE: TableDefinition<i64, &[u8]> = TableDefinition::new("dialogues-1");
/// drafts: key = draft id (u128) → value = `Draft` (a prompt waiting for model/format buttons).
pub const DRAFTS_TABLE: TableDefinition<u128, &[u8]> = TableDefinition::new("drafts-1");
/// processed updates: key = Telegram update_id → value = when it was handled (ms). Telegram
/// re-sends unconfirmed updates after a restart; this makes each one handled once.
pub const UPDATES_TABLE: TableDefinition<i64, i64> = TableDefinition::new("updates-1");
/// update_id → the update as Bot API JSON, from receipt until its handler finished.
pub const INBOX_TABLE: TableDefinition<i64, &[u8]> = TableDefinition::new("inbox-1");
/// runtime switches: key = `model:<id>` / `provider:<id>` → value = reason it was disabled.
/// Present = disabled; survives restarts.
pub const DISABLED_TABLE: TableDefinition<&str, &str> = TableDefinition::new("disabled-1");
/// admin audit log: key = entry id (UUIDv7 u128, so key order is time order) → value = `AuditEntry`.
pub const AUDIT_TABLE: TableDefinition<u128, &[u8]> = TableDefinition::new("audit-1");
/// library categories: key = (user id, category number, 1-based per user) → value = the name
/// as the user typed it. Items keep category *names* (`LibraryItem::categories`); the number is
/// what callback data carries (names may be long or contain `:`).
pub const CATEGORIES_TABLE: TableDefinition<(i64, u32), &str> = TableDefinition::new("categories-1");
/// generation presets: key = (user id, preset number, 1-based per user) → value = `Preset`.
pub const PRESETS_TABLE: TableDefinition<(i64, u32), &[u8]> = TableDefinition::new("presets-1");
/// counters: key = name → value = count. `media_bytes`: bytes of distinct files under `media/`
/// that library items reference (the disk budget's measure); `inline_chosen`: inline results
/// users picked (chosen_inline_result updates).
pub const COUNTERS_TABLE: TableDefinition<&str, u64> = TableDefinition::new("counters-1");
/// per-day counters for the dashboard: key = (day number since 1970-01-01 UTC, counter name,
/// see `stats::counter`) → value = count or credits. Kept in step by the write paths.
pub const DAILY_TABLE: TableDefinition<(i64, &str), i64> = TableDefinition::new("daily-1");
/// activity: key = (day number, user id) → unit; the user created a job that day.
pub const ACTIVE_DAYS_TABLE: TableDefinition<(i64, i64), ()> = TableDefinition::new("active-days-1");
/// user search index: key = (lower-case word of first name or username, user id) → value =
/// the user's list row, `UserSummary` (the same in each of the user's entries), so a search
/// page is one index walk. Replaced `user-names-1` (value = unit) in migration 006.
pub const USER_NAMES_TABLE: TableDefinition<(&str, i64), &[u8]> = TableDefinition::new("user-names-2");
/// admin broadcasts: key = broadcast id (UUIDv7 u128) → value = `Broadcast` (with its cursor).
pub const BROADCASTS_TABLE: TableDefinition<u128, &[u8]> = TableDefinition::new("broadcasts-1");
/// jobs by owner: key = (user id, job id) → unit, for a user's job list without a scan.
pub const USER_JOBS_TABLE: TableDefinition<(i64, u128), ()> = TableDefinition::new("user-jobs-1");
/// admin runtime settings: key = `price:<model id>` (credits) or `concurrency:<provider id>`
/// (jobs at once) → value. Overrides the config file until removed; survives restarts.
pub const SETTINGS_TABLE: TableDefinition<&str, i64> = TableDefinition::new("settings-1");
/// last activity: key = user id → value = day number of the user's newest job; keeps the
/// dashboard's `last_active` counters (users per last-active day) without a scan.
pub const LAST_ACTIVE_TABLE: TableDefinition<i64, i64> = TableDefinition::new("last-active-1");
/// uploaded inputs: key = sha256 hex of a file under `media/` that a user sent as a job input
/// → value = `InputRecord` (extension, size, last use). Present = live: pruned
/// `library.input_retention_days` after the last use (the file only when no library item and
/// no active job references it).
pub const INPUTS_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("inputs-1");
/// Telegram Stars charges: key = `telegram_payment_charge_id` → value = `PaymentRecord`
/// (user, package, credits, Stars, state). Inserted in the transaction that writes the
/// `Purchase` ledger row, so a charge id already here is never credited again.
pub const PAYMENTS_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("payments-1");
/// Crypto Pay invoices (protocols.md §9): key = `invoice_id` → value = `CryptoInvoice`
/// (user, package, credits, price, status). Written when the invoice is created; its status
/// turns `paid` in the transaction that writes the `Purchase` ledger row, so an invoice is
/// credited at most once.
pub const CRYPTO_INVOICES_TABLE: TableDefinition<i64, &[u8]> = TableDefinition::new("crypto-invoices-1");
/// Crypto Pay invoices still `active`: key = `invoice_id` → value = created (unix ms). Kept in
/// step by `Tx::put_crypto_invoice`; the poller asks Crypto Pay about these only.
pub const CRYPTO_ACTIVE_TABLE: TableDefinition<i64, i64> = TableDefinition::new("crypto-active-1");
/// daily generation quotas: key = (UserId, local day `yyyymmdd` in `billing.time_zone`) →
/// generations started that day and not given back (a released hold gives its one back).
/// Written inside the submit transaction, so two parallel submits cannot both take the last one.
pub const QUOTA_TABLE: TableDefinition<(i64, i32), u32> = TableDefinition::new("quota-1");
/// failovers: key = (ms since the epoch the job moved or its owner was asked, job id) →
/// unit, so the dashboard counts the last 24 h with one range and lists the newest without a
/// scan of the jobs; the move itself (from, to, why) is on the job (`JobRecord::failover`).
/// Written by `Tx::put_job` in the transaction that first stores a job's failover.
pub const FAILOVERS_TABLE: TableDefinition<(i64, u128), ()> = TableDefinition::new("failovers-1");
