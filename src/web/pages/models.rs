//! `/admin/models`: configured providers and models (read-only) with 30-day outcomes.

use super::Layout;
use super::dashboard::{ModelStats, summarize};
use crate::domain::{Setting, Switch, now_ms};
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
    /// ComfyUI: its servers (one, or a pool's `base_urls`) without credentials or query;
    /// empty for the other kinds.
    pub servers: Vec<String>,
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
    let stats = st
        .store
        .read(move |rx| {
            let since = day_start(now) - 29 * 86_400_000;
            Ok::<_, WebError>(summarize(&[], &rx.find_jobs_since(since)?, 0, now).models)
        })
        .await?;
    let catalog = &st.catalog;
    let reason = |s: Switch| catalog.disabled_reason(&s).unwrap_or_default();
    let find = |id: &str| stats.iter().find(|s| s.model == id).cloned();
    let models = catalog
        .all()
        .into_iter()
        .map(|m| {
            let s = find(&m.id).unwrap_or(ModelStats {
                model: m.id.clone(),
                succeeded: 0,
                failed: 0,
                p50_ms: 0,
                p95_ms: 0,
            });
            ModelRow {
                disabled: reason(Switch::Model(m.id.clone())),
                id: m.id,
                provider: m.provider,
                name: m.display_name,
                price: m.price.0,
                enabled: m.enabled,
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
            servers: match p.kind {
                crate::config::ProviderKind::Comfyui => {
                    p.servers().iter().map(|u| crate::config::redacted_url(u)).collect()
                }
                _ => vec![],
            },
            max_concurrency: catalog.concurrency(&p.id).unwrap_or(p.max_concurrency),
            timeout_secs: p.timeout_secs,
            disabled: reason(Switch::Provider(p.id.clone())),
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

/// Disables or enables a model or provider through the admin service (stored with its audit
/// entry; the running bot sees it at once).
async fn toggle(st: WebState, session: AdminSession, switch: Switch, f: ToggleForm) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    let enabled = match f.action.as_str() {
        "disable" => false,
        "enable" => true,
        _ => return Err(WebError::BadRequest("action must be enable or disable".into())),
    };
    st.admin.set_enabled(session.actor(), switch, enabled).await?;
    Ok(Redirect::to("/admin/models"))
}

/// `POST /admin/models/{id}/toggle` (`action=enable|disable`); 404 for a model not in the config.
pub async fn toggle_model(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<String>,
    Form(f): Form<ToggleForm>,
) -> Result<Redirect, WebError> {
    toggle(st, session, Switch::Model(id), f).await
}

/// `POST /admin/providers/{id}/toggle` (`action=enable|disable`); 404 for an unknown provider.
pub async fn toggle_provider(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<String>,
    Form(f): Form<ToggleForm>,
) -> Result<Redirect, WebError> {
    toggle(st, session, Switch::Provider(id), f).await
}

#[derive(Debug, serde::Deserialize)]
pub struct ValueForm {
    #[serde(default)]
    csrf: String,
    /// The new value; empty = back to the config file's.
    #[serde(default)]
    value: String,
}

/// Stores (or clears) one runtime setting through the admin service.
async fn setting(st: WebState, session: AdminSession, setting: Setting, f: ValueForm) -> Result<Redirect, WebError> {
    session.check_csrf(&f.csrf)?;
    let value = match f.value.trim() {
        "" => None,
        v => Some(v.parse::<i64>().map_err(|_| WebError::BadRequest(format!("{v:?} is not a whole number")))?),
    };
    st.admin.set_setting(session.actor(), setting, value).await?;
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
    setting(st, session, Setting::Price(id), f).await
}

/// `POST /admin/providers/{id}/concurrency` (`value` = 1–64 jobs at once, empty = config):
/// the provider's semaphore is resized at once (running jobs finish first when it shrinks).
pub async fn set_concurrency(
    State(st): State<WebState>,
    session: AdminSession,
    Path(id): Path<String>,
    Form(f): Form<ValueForm>,
) -> Result<Redirect, WebError> {
    setting(st, session, Setting::Concurrency(id), f).await
}
