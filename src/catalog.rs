//! The models users can pick, as configured and as changed at runtime: switched off by an
//! admin or by the engine (a retired model, a provider refusing our key), repriced, or given
//! another concurrency in the panel.
//!
//! The config file is the base; the `disabled-1` and `settings-1` tables hold the runtime
//! changes under typed keys ([`Switch`], [`Setting`]), mirrored here so a keyboard or a
//! scheduler pass never reads the database for them. Writers (the `admin` service, the job
//! engine) change the tables and then call [`Catalog::reload`], which tells the listeners
//! ([`Catalog::on_change`]) at once — the job engine resizes its provider semaphores there.

use crate::config::{Choices, Config, ModelConfig, ProviderConfig};
use crate::domain::{Credits, Setting, Switch, Task};
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

/// Shared handle; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// In config order (keyboards list them so).
    models: Vec<ModelConfig>,
    providers: Vec<ProviderConfig>,
    state: RwLock<State>,
    /// Called after every reload; a listener returning false is dropped (its owner is gone).
    listeners: Mutex<Vec<Listener>>,
}

type Listener = Box<dyn Fn() -> bool + Send + Sync>;

/// The runtime layer over the config.
#[derive(Default)]
struct State {
    /// Switched off, with the reason.
    disabled: HashMap<Switch, String>,
    settings: HashMap<Setting, i64>,
}

impl Catalog {
    /// Reads the runtime state (blocking: called at start and by CLI commands).
    pub fn open(store: Store, config: &Config) -> Result<Catalog, StoreError> {
        let state = store.read_blocking(load)?;
        Ok(Catalog {
            inner: Arc::new(Inner {
                store,
                models: config.models.clone(),
                providers: config.providers.clone(),
                state: RwLock::new(state),
                listeners: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Re-reads the runtime state after a writer changed it, and tells the listeners.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let state = self.inner.store.read(load).await?;
        if let Ok(mut s) = self.inner.state.write() {
            *s = state;
        }
        if let Ok(mut listeners) = self.inner.listeners.lock() {
            listeners.retain(|l| l());
        }
        Ok(())
    }

    /// Calls `listener` after every [`Catalog::reload`] until it returns false.
    pub fn on_change(&self, listener: impl Fn() -> bool + Send + Sync + 'static) {
        if let Ok(mut listeners) = self.inner.listeners.lock() {
            listeners.push(Box::new(listener));
        }
    }

    /// The configured model `id` with its current base price, whether usable or not.
    pub fn model(&self, id: &str) -> Option<ModelConfig> {
        self.inner.models.iter().find(|m| m.id == id).map(|m| self.priced(m))
    }

    /// Model `id` as the config file has it (no runtime changes).
    pub fn configured(&self, id: &str) -> Option<&ModelConfig> {
        self.inner.models.iter().find(|m| m.id == id)
    }

    /// Provider `id` as the config file has it.
    pub fn configured_provider(&self, id: &str) -> Option<&ProviderConfig> {
        self.inner.providers.iter().find(|p| p.id == id)
    }

    /// The configured model whose id or alias is `name` (case-insensitive).
    pub fn find(&self, name: &str) -> Option<ModelConfig> {
        let n = name.to_lowercase();
        self.inner
            .models
            .iter()
            .find(|m| m.id.to_lowercase() == n || m.aliases.iter().any(|a| a.to_lowercase() == n))
            .map(|m| self.priced(m))
    }

    /// Every configured model (usable or not) with its current base price, in config order.
    pub fn all(&self) -> Vec<ModelConfig> {
        self.inner.models.iter().map(|m| self.priced(m)).collect()
    }

    /// Models a user can pick now, in config order, with current prices: enabled in the config,
    /// and either runnable ([`Catalog::is_usable`]) or switched off with a usable fallback
    /// that takes its jobs ([`Catalog::is_offered`]).
    pub fn usable(&self) -> Vec<ModelConfig> {
        self.inner.models.iter().filter(|m| self.is_offered(&m.id)).map(|m| self.priced(m)).collect()
    }

    /// Whether a user may pick model `id` now: it runs, or it is switched off (not disabled in
    /// the config) and one of its `fallbacks` runs instead.
    pub fn is_offered(&self, id: &str) -> bool {
        self.is_usable(id)
            || self
                .configured(id)
                .is_some_and(|m| m.enabled && self.fallback_for(id, usize::from(m.image_range().0)).is_some())
    }

    /// The first of model `id`'s `fallbacks` that runs now and takes a job with `images` input
    /// photos (config validation already made sure each has the same task), with its current
    /// price; `None` when there is none.
    pub fn fallback_for(&self, id: &str, images: usize) -> Option<ModelConfig> {
        let m = self.configured(id)?;
        m.fallbacks
            .iter()
            .filter(|f| self.is_usable(f))
            .filter_map(|f| self.configured(f))
            .find(|f| f.task == m.task && f.takes_images(images))
            .map(|f| self.priced(f))
    }

    /// [`Catalog::usable`] models of one task.
    pub fn for_task(&self, task: Task) -> Vec<ModelConfig> {
        self.usable().into_iter().filter(|m| m.task == task).collect()
    }

    /// Usable models of `task` other than `except` (offered when `except` stopped working).
    pub fn alternatives(&self, task: Task, except: &str) -> Vec<ModelConfig> {
        self.for_task(task).into_iter().filter(|m| m.id != except).collect()
    }

    /// Whether model `id` can take a job now.
    pub fn is_usable(&self, id: &str) -> bool {
        let Some(m) = self.inner.models.iter().find(|m| m.id == id) else { return false };
        let Ok(s) = self.inner.state.read() else { return false };
        m.enabled
            && !s.disabled.contains_key(&Switch::Model(m.id.clone()))
            && !s.disabled.contains_key(&Switch::Provider(m.provider.clone()))
    }

    /// Why `switch` is off, if it is.
    pub fn disabled_reason(&self, switch: &Switch) -> Option<String> {
        self.inner.state.read().ok()?.disabled.get(switch).cloned()
    }

    /// A model's base price now: the admin's setting, else the config's.
    pub fn base_price(&self, m: &ModelConfig) -> Credits {
        self.setting(&Setting::Price(m.id.clone())).map_or(m.price, Credits)
    }

    /// What a job on `model` with `choices` costs now (base + chosen option prices). `None`
    /// for an unknown model or an overflowing sum.
    pub fn quote(&self, model: &str, choices: &Choices) -> Option<Credits> {
        let m = self.inner.models.iter().find(|m| m.id == model)?;
        m.quote(self.base_price(m), choices)
    }

    /// Jobs provider `id` may run at once: the admin's setting, else the config's.
    pub fn concurrency(&self, id: &str) -> Option<u32> {
        let configured = self.configured_provider(id)?.max_concurrency;
        let set = self.setting(&Setting::Concurrency(id.to_string())).and_then(|v| u32::try_from(v).ok());
        Some(set.filter(|v| *v > 0).unwrap_or(configured))
    }

    /// The admin's override of `setting`, if any.
    pub fn setting(&self, setting: &Setting) -> Option<i64> {
        self.inner.state.read().ok()?.settings.get(setting).copied()
    }

    /// Switches `switch` off for `reason` (persisted), for the engine's verdicts (a retired
    /// model, a provider refusing our key). True if it was on.
    pub async fn disable(&self, switch: Switch, reason: String) -> Result<bool, StoreError> {
        let s = switch.clone();
        let changed = self.inner.store.write(move |tx| tx.set_disabled(&s, Some(&reason))).await?;
        self.reload().await?;
        Ok(changed)
    }

    fn priced(&self, m: &ModelConfig) -> ModelConfig {
        ModelConfig { price: self.base_price(m), ..m.clone() }
    }
}

fn load(rx: &crate::store::Rx) -> Result<State, StoreError> {
    Ok(State {
        disabled: rx.find_disabled()?.into_iter().collect(),
        settings: rx.find_settings()?.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ModelOption, OptionValue};

    fn config() -> Config {
        let mut c = Config::default().with_demo();
        c.models.truncate(1);
        let mut video = c.models[0].clone();
        video.id = "video".into();
        video.price = Credits(0);
        video.options = vec![ModelOption {
            name: "duration".into(),
            field: None,
            values: [(5, 5), (10, 10), (15, 15)]
                .into_iter()
                .map(|(v, p)| OptionValue { value: v.into(), label: None, price: Credits(p) })
                .collect(),
        }];
        c.models.push(video);
        c
    }

    #[tokio::test]
    async fn runtime_changes_layer_over_the_config_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::open(dir.path()).expect("open");
        let cfg = config();
        let catalog = Catalog::open(store.clone(), &cfg).expect("catalog");
        let heard = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let h = heard.clone();
        catalog.on_change(move || h.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 1);
        assert_eq!(catalog.usable().len(), 2);
        assert_eq!(catalog.quote("demo", &Choices::new()), Some(Credits(10)));
        // The seed video bot's prices: 5 / 10 / 15 for 5 / 10 / 15 s.
        for (i, want) in [(0u8, 5), (1, 10), (2, 15)] {
            let choices = Choices::from([("duration".to_string(), i)]);
            assert_eq!(catalog.quote("video", &choices), Some(Credits(want)));
        }
        assert!(catalog.disable(Switch::Model("demo".into()), "retired".into()).await.expect("disable"));
        assert_eq!(heard.load(std::sync::atomic::Ordering::SeqCst), 1, "listeners hear of it");
        assert!(!catalog.is_usable("demo"));
        assert_eq!(catalog.disabled_reason(&Switch::Model("demo".into())).as_deref(), Some("retired"));
        store.write(|tx| tx.set_setting(&Setting::Price("video".into()), Some(3))).await.expect("price");
        store.write(|tx| tx.set_setting(&Setting::Concurrency("demo".into()), Some(7))).await.expect("conc");
        catalog.reload().await.expect("reload");
        catalog.reload().await.expect("reload");
        assert_eq!(heard.load(std::sync::atomic::Ordering::SeqCst), 2, "a listener returning false is dropped");
        let choices = Choices::from([("duration".to_string(), 2u8)]);
        assert_eq!(catalog.quote("video", &choices), Some(Credits(18)), "base 3 + 15");
        assert_eq!(catalog.concurrency("demo"), Some(7));
        drop(catalog);
        let again = Catalog::open(store, &cfg).expect("reopen");
        assert_eq!(again.usable().iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["video"]);
        assert!(!again.is_usable("nope"));
        store_provider_switch_hides_its_models(again).await;
    }

    async fn store_provider_switch_hides_its_models(catalog: Catalog) {
        catalog.disable(Switch::Provider("demo".into()), "401".into()).await.expect("disable");
        assert!(catalog.usable().is_empty(), "every model of a disabled provider is hidden");
        assert!(catalog.model("video").is_some(), "but still known");
    }
}
