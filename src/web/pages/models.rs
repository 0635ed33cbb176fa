//! `/admin/models`: configured providers and models (read-only) with 30-day outcomes.

use super::Layout;
use super::dashboard::{ModelStats, summarize};
use crate::domain::now_ms;
use crate::web::auth::AdminSession;
use crate::web::error::WebError;
use crate::web::{WebState, day_start};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Path, State};
use axum::response::Redirect;

/// A model row for display.
pub struct ModelRow {
    pub id: String,
    pub provider: String,
    pub name: String,
    pub price: i64,
    pub enabled: bool,
    /// Why it is disabled at runtime (by an admin or after a provider error); empty if not.
    pub disabled: String,
    pub succeeded: u64,
    pub failed: u64,
    pub p50_ms: u64,
    pub p95_ms: u64,
}

/// A provider row for display (no keys, no URLs with credentials: only what is harmless).
pub struct ProviderRow {
    pub id: String,
    pub kind: String,
    pub max_concurrency: u32,
    pub timeout_secs: u64,
    pub disabled: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin/models.html")]
pub struct ModelsPage {
    layout: Layout,
    providers: Vec<ProviderRow>,
    models: Vec<ModelRow>,
}

/// `GET /admin/models`.
pub async fn list(State(st): State<WebState>, session: AdminSession) -> Result<ModelsPage, WebError> {
    let now = now_ms();
    let (stats, disabled, settings) = st
        .store
        .read(move |rx| {
            let since = day_start(now) - 29 * 86_400_000;
            Ok((summarize(&[], &rx.find_jobs_since(since)?, 0, now).models, rx.find_disabled()?, rx.find_settings()?))
        })
        .await?;
    let setting_of = |key: String| settings.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let reason = |key: String| disabled.iter().find(|(k, _)| *k == key).map(|(_, r)| r.clone()).unwrap_or_default();
    let find = |id: &str| stats.iter().find(|s| s.model == id).cloned();
    let models = st
        .config
        .models
        .iter()
        .map(|m| {
            let s = find(&m.id).unwrap_or(ModelStats {
                model: m.id.clone(),
                succeeded: 0,
                failed: 0,
                p50_ms: 0,
                p95_ms: 0,
            });
            ModelRow {
                id: m.id.clone(),
                provider: m.provider.clone(),
                name: m.display_name.clone(),
                price: setting_of(format!("price:{}", m.id)).unwrap_or(m.price.0),
                enabled: m.enabled,
                disabled: reason(format!("model:{}", m.id)),
                succeeded: s.succeeded,
                failed: s.failed,
                p50_ms: s.p50_ms,
                p95_ms: s.p95_ms,
            }
        })
        .collect();
    let providers = st
        .config
        .providers
        .iter()
        .map(|p| ProviderRow {
            id: p.id.clone(),
            kind: format!("{:?}", p.kind).to_lowercase(),
            max_concurrency: setting_of(format!("concurrency:{}", p.id))
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(p.max_concurrency),
            timeout_secs: p.timeout_secs,
            disabled: reason(format!("provider:{}", p.id)),
        })
        .collect();
    Ok(ModelsPage { layout: Layout::new("Models & providers", Some(&session)), providers, models })
}

#[derive(Debug, serde::Deserialize)]
pub struct ToggleForm {
    #[serde(default)]
    csrf: String,
    /// `enable` or `disable`.
    #[serde(default)]
    action: String,
}

/// Disables or enables a `model:<id>` / `provider:<id>` key: stored (so it survives a restart)
/// with its audit entry in one transaction, then pushed to the running engine.
async fn toggle(st: WebState, session: AdminSession, key: String, f: ToggleForm) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    let disable = match f.action.as_str() {
        "disable" => true,
        "enable" => false,
        _ => return Err(WebError::BadRequest("action must be enable or disable".into())),
    };
    let reason = format!("disabled by {} in the panel", session.actor());
    st.store
        .write(move |tx| {
            let changed = tx.set_disabled(&key, disable.then_some(reason.as_str()))?;
            if changed {
                let (before, after) = if disable { ("enabled", "disabled") } else { ("disabled", "enabled") };
                tx.insert_audit(&session.audit("toggle", key, before.into(), after.into()))?;
            }
            Ok(())
        })
        .await?;
    if let Ok(engine) = st.jobs() {
        engine.reload_disabled().await.map_err(|e| WebError::Internal(e.to_string()))?;
    }
    Ok(Redirect::to("/admin/models"))
}

/// `POST /admin/models/{id}/toggle` (`action=enable|disable`); 404 for a model not in the config.
pub async fn toggle_model(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<String>,
    Form(f): Form<ToggleForm>,
) -> Result<Redirect, WebError> {
    if !st.config.models.iter().any(|m| m.id == id) {
        return Err(WebError::NotFound);
    }
    toggle(st, session, format!("model:{id}"), f).await
}

/// `POST /admin/providers/{id}/toggle` (`action=enable|disable`); 404 for an unknown provider.
pub async fn toggle_provider(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<String>,
    Form(f): Form<ToggleForm>,
) -> Result<Redirect, WebError> {
    if !st.config.providers.iter().any(|p| p.id == id) {
        return Err(WebError::NotFound);
    }
    toggle(st, session, format!("provider:{id}"), f).await
}

#[derive(Debug, serde::Deserialize)]
pub struct ValueForm {
    #[serde(default)]
    csrf: String,
    /// The new value; empty = back to the config file's.
    #[serde(default)]
    value: String,
}

/// Stores (or clears) one runtime setting with its audit entry, then pushes it to the engine.
async fn setting(
    st: WebState,
    session: AdminSession,
    key: String,
    f: ValueForm,
    range: std::ops::RangeInclusive<i64>,
    config_value: i64,
) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    let value = match f.value.trim() {
        "" => None,
        v => Some(v.parse::<i64>().ok().filter(|v| range.contains(v)).ok_or_else(|| {
            WebError::BadRequest(format!("a whole number from {} to {}", range.start(), range.end()))
        })?),
    };
    st.store
        .write(move |tx| {
            let before = tx.set_setting(&key, value)?.unwrap_or(config_value);
            let after = value.unwrap_or(config_value);
            tx.insert_audit(&session.audit("setting", key, before.to_string(), after.to_string()))
        })
        .await?;
    if let Ok(engine) = st.jobs() {
        engine.reload_disabled().await.map_err(|e| WebError::Internal(e.to_string()))?;
    }
    Ok(Redirect::to("/admin/models"))
}

/// `POST /admin/models/{id}/price` (`value` = credits 0–1 000 000, empty = config): the next
/// job and the next keyboard use it; stored, so it survives a restart.
pub async fn set_price(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<String>,
    Form(f): Form<ValueForm>,
) -> Result<Redirect, WebError> {
    let config_price = st.config.models.iter().find(|m| m.id == id).ok_or(WebError::NotFound)?.price.0;
    setting(st, session, format!("price:{id}"), f, 0..=1_000_000, config_price).await
}

/// `POST /admin/providers/{id}/concurrency` (`value` = 1–64 jobs at once, empty = config):
/// the provider's semaphore is resized at once (running jobs finish first when it shrinks).
pub async fn set_concurrency(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<String>,
    Form(f): Form<ValueForm>,
) -> Result<Redirect, WebError> {
    let config_value = st.config.providers.iter().find(|p| p.id == id).ok_or(WebError::NotFound)?.max_concurrency;
    setting(st, session, format!("concurrency:{id}"), f, 1..=64, i64::from(config_value)).await
}
