//! `/admin/models`: configured providers and models (read-only) with 30-day outcomes.

use super::Layout;
use super::dashboard::{ModelStats, summarize};
use crate::domain::now_ms;
use crate::web::auth::AdminSession;
use crate::web::error::WebError;
use crate::web::{WebState, day_start};
use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;

/// A model row for display.
pub struct ModelRow {
    pub id: String,
    pub provider: String,
    pub name: String,
    pub price: i64,
    pub enabled: bool,
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
        .read(move |rx| Ok(summarize(&[], &rx.find_jobs_since(day_start(now) - 29 * 86_400_000)?, 0, now).models))
        .await?;
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
            max_concurrency: p.max_concurrency,
            timeout_secs: p.timeout_secs,
        })
        .collect();
    Ok(ModelsPage { layout: Layout::new("Models & providers", Some(&session)), providers, models })
}
