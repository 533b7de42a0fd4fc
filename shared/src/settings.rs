//! Settings that change at runtime: the admin API stores overrides in the Store's
//! `settings` table, and every process applies them on top of its loaded configuration.
//!
//! [`LiveConfig`] is the one handle code reads live settings through: `live.get()` returns
//! the effective configuration (loaded config plus stored overrides) at that moment. Each
//! process polls the stored overrides about once a second ([`LiveConfig::watch`]), so a
//! change made through any gateway reaches every replica within a second or so.
//!
//! Only the keys in [`LIVE_KEYS`] may be overridden; everything else (listen address,
//! backends, keys of the at-rest cipher, worker concurrency, ...) is read once at start and
//! needs a restart.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::Secret;
use crate::config::Config;
use crate::store::{Store, StoreError};

/// Settings-table key of the stored overrides: `{"version": n, "values": {section: {key: v}}}`.
pub const OVERRIDES_SETTING: &str = "config.overrides";

/// How often each process looks for changed overrides.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What a secret looks like when the configuration is read back (see `Secret`'s `Serialize`);
/// posting it (or `REDACTED_LONG`) back means "keep the current value".
pub const REDACTED: &str = "***";
pub const REDACTED_LONG: &str = "********";

/// Keys that may change at runtime, `section.key`. Each is read through [`LiveConfig`] where
/// it is used, so a change applies to the next request.
pub const LIVE_KEYS: &[&str] = &[
    "app.app_url",
    "app.api_key",
    "app.thinking",
    "app.reasoning_format",
    "app.temporary",
    "app.disable_memory",
    "app.video_format",
    "retry.max_retry",
    "token.basic_quota",
    "token.super_quota",
    "chat.timeout_secs",
    "image.timeout_secs",
    "image.nsfw",
    "image.enable_pro",
    "image.response_format",
    "video.timeout_secs",
];

/// Why a set of overrides was refused; `key` names the offending key (`section.key`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SettingsError {
    pub key: String,
    pub message: String,
}

fn refuse(key: impl Into<String>, message: impl Into<String>) -> SettingsError {
    SettingsError {
        key: key.into(),
        message: message.into(),
    }
}

fn typed<T: DeserializeOwned>(key: &str, value: &Value) -> Result<T, SettingsError> {
    serde_json::from_value(value.clone())
        .map_err(|e| refuse(key, format!("wrong type or value ({e})")))
}

/// Sets one live key on a configuration.
fn set(config: &mut Config, key: &str, v: &Value) -> Result<(), SettingsError> {
    let c = config;
    match key {
        "app.app_url" => c.app.app_url = typed(key, v)?,
        "app.api_key" => c.app.api_key = Secret::new(typed::<String>(key, v)?),
        "app.thinking" => c.app.thinking = typed(key, v)?,
        "app.reasoning_format" => c.app.reasoning_format = typed(key, v)?,
        "app.temporary" => c.app.temporary = typed(key, v)?,
        "app.disable_memory" => c.app.disable_memory = typed(key, v)?,
        "app.video_format" => c.app.video_format = typed(key, v)?,
        "retry.max_retry" => c.retry.max_retry = typed(key, v)?,
        "token.basic_quota" => c.token.basic_quota = typed(key, v)?,
        "token.super_quota" => c.token.super_quota = typed(key, v)?,
        "chat.timeout_secs" => c.chat.timeout_secs = typed(key, v)?,
        "image.timeout_secs" => c.image.timeout_secs = typed(key, v)?,
        "image.nsfw" => c.image.nsfw = typed(key, v)?,
        "image.enable_pro" => c.image.enable_pro = typed(key, v)?,
        "image.response_format" => c.image.response_format = typed(key, v)?,
        "video.timeout_secs" => c.video.timeout_secs = typed(key, v)?,
        _ => return Err(refuse(key, "cannot be changed at runtime")),
    }
    Ok(())
}

/// Extra bounds for live keys beyond what [`Config::validate`] checks at start.
fn check_bounds(c: &Config) -> Result<(), SettingsError> {
    let url = &c.app.app_url;
    if !url.is_empty()
        && url::Url::parse(url)
            .map(|u| !matches!(u.scheme(), "http" | "https"))
            .unwrap_or(true)
    {
        return Err(refuse("app.app_url", "must be empty or an http(s) URL"));
    }
    for (key, value, max) in [
        ("retry.max_retry", c.retry.max_retry as u64, 20),
        ("chat.timeout_secs", c.chat.timeout_secs, 3600),
        ("image.timeout_secs", c.image.timeout_secs, 3600),
        ("video.timeout_secs", c.video.timeout_secs, 7200),
    ] {
        if value == 0 || value > max {
            return Err(refuse(key, format!("between 1 and {max}")));
        }
    }
    for (key, value) in [
        ("token.basic_quota", c.token.basic_quota),
        ("token.super_quota", c.token.super_quota),
    ] {
        if !(0..=1_000_000).contains(&value) {
            return Err(refuse(key, "between 0 and 1000000"));
        }
    }
    Ok(())
}

/// Flattens `{section: {key: value}}` into `("section.key", value)` pairs, refusing
/// anything that is not a known key of the configuration (`known` is the configuration
/// read back as JSON).
fn flatten(patch: &Value, known: &Value) -> Result<Vec<(String, Value)>, SettingsError> {
    let sections = patch
        .as_object()
        .ok_or_else(|| refuse("body", "must be an object of sections"))?;
    let mut out = vec![];
    for (section, body) in sections {
        let Some(known_section) = known.get(section).and_then(Value::as_object) else {
            return Err(refuse(section.as_str(), "unknown section"));
        };
        let fields = body
            .as_object()
            .ok_or_else(|| refuse(section.as_str(), "must be an object of keys"))?;
        for (key, value) in fields {
            let full = format!("{section}.{key}");
            if !known_section.contains_key(key) {
                return Err(refuse(full, "unknown key"));
            }
            out.push((full, value.clone()));
        }
    }
    Ok(out)
}

/// A redaction placeholder posted back for a secret: the current value stays.
fn is_placeholder(value: &Value) -> bool {
    matches!(value.as_str(), Some(REDACTED | REDACTED_LONG))
}

/// The stored overrides, decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub version: u64,
    /// `{section: {key: value}}`, only live keys.
    pub values: Map<String, Value>,
}

impl Overrides {
    pub fn parse(raw: &str) -> Result<Overrides, SettingsError> {
        let v: Value = serde_json::from_str(raw)
            .map_err(|_| refuse(OVERRIDES_SETTING, "stored overrides are not JSON"))?;
        Ok(Overrides {
            version: v.get("version").and_then(Value::as_u64).unwrap_or(0),
            values: v
                .get("values")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        })
    }

    pub fn to_json(&self) -> String {
        json!({"version": self.version, "values": self.values}).to_string()
    }

    /// `base` with these overrides applied and checked.
    pub fn apply(&self, base: &Config) -> Result<Config, SettingsError> {
        let mut config = base.clone();
        for (section, fields) in &self.values {
            for (key, value) in fields.as_object().into_iter().flatten() {
                set(&mut config, &format!("{section}.{key}"), value)?;
            }
        }
        config
            .validate()
            .map_err(|e| match e {
                crate::config::ConfigError::Invalid { key, message } => refuse(key, message),
                other => refuse("config", other.to_string()),
            })
            .and(check_bounds(&config))?;
        Ok(config)
    }

    /// Deep-merges a posted partial configuration into these overrides. Unknown keys,
    /// keys that cannot change at runtime, wrong types and values the loader would refuse
    /// are errors naming the key; a redaction placeholder for a secret keeps its value.
    pub fn merge(&self, base: &Config, patch: &Value) -> Result<Overrides, SettingsError> {
        let current = self.apply(base)?;
        let known = serde_json::to_value(&current).expect("the configuration serializes");
        let mut next = self.clone();
        for (key, value) in flatten(patch, &known)? {
            let (section, field) = key.split_once('.').expect("flatten joins with a dot");
            if is_placeholder(&value) && known[section][field] == json!(REDACTED) {
                continue;
            }
            // Unchanged values of keys that cannot change are accepted, so a client may
            // post back the whole configuration it read with only live keys edited.
            if !LIVE_KEYS.contains(&key.as_str()) {
                if known[section][field] == value {
                    continue;
                }
                return Err(refuse(
                    key,
                    "cannot be changed at runtime; set it in the config file or environment and restart",
                ));
            }
            let mut probe = current.clone();
            set(&mut probe, &key, &value)?;
            next.values
                .entry(section.to_owned())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("sections are objects")
                .insert(field.to_owned(), value);
        }
        next.apply(base)?;
        next.version = self.version + 1;
        Ok(next)
    }
}

/// The effective configuration of this process, swapped atomically when the stored
/// overrides change. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct LiveConfig(Arc<Inner>);

struct Inner {
    base: Arc<Config>,
    current: ArcSwap<Config>,
    /// The overrides last applied (raw text), to skip work when nothing changed.
    applied: Mutex<Option<String>>,
}

impl LiveConfig {
    pub fn new(base: Arc<Config>) -> LiveConfig {
        LiveConfig(Arc::new(Inner {
            current: ArcSwap::new(base.clone()),
            base,
            applied: Mutex::new(None),
        }))
    }

    /// The effective configuration now. Hold the returned `Arc` for one request at most.
    pub fn get(&self) -> Arc<Config> {
        self.0.current.load_full()
    }

    /// The configuration this process loaded at start (no overrides).
    pub fn base(&self) -> &Config {
        &self.0.base
    }

    /// Applies stored overrides (raw setting text); a no-op when they did not change.
    /// Overrides that no longer apply (for example after an upgrade tightened a rule) are
    /// logged and skipped, leaving the previous configuration in force.
    pub fn apply_raw(&self, raw: Option<&str>) {
        let mut applied = self.0.applied.lock().expect("not poisoned");
        if applied.as_deref() == raw {
            return;
        }
        let overrides = match raw.map(Overrides::parse).transpose() {
            Ok(o) => o.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "stored configuration overrides ignored");
                return;
            }
        };
        match overrides.apply(&self.0.base) {
            Ok(config) => {
                self.0.current.store(Arc::new(config));
                *applied = raw.map(str::to_owned);
                tracing::info!(
                    version = overrides.version,
                    "configuration overrides applied"
                );
            }
            Err(e) => tracing::error!(error = %e, "stored configuration overrides ignored"),
        }
    }

    /// Reads the stored overrides once and applies them.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        let raw = store.get_setting(OVERRIDES_SETTING).await?;
        self.apply_raw(raw.as_deref());
        Ok(())
    }

    /// Polls the store every [`POLL_INTERVAL`] for as long as any clone of this handle
    /// lives. Store errors are logged and retried on the next tick (the last good
    /// configuration stays in force).
    pub fn watch(&self, store: Arc<dyn Store>) {
        let weak: Weak<Inner> = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failures = 0u32;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                match LiveConfig(inner).refresh(store.as_ref()).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        // The first polls of `serve` may run before its migrations: only a
                        // failure that lasts is worth a warning (once per outage).
                        if failures == 3 {
                            tracing::warn!(error = %e, "reading configuration overrides keeps failing; retrying");
                        } else {
                            tracing::debug!(error = %e, "reading configuration overrides failed");
                        }
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        let mut c = Config::defaults();
        c.app.api_key = Secret::new("sk-operator");
        c
    }

    #[test]
    fn merge_applies_live_keys_and_names_bad_ones() {
        let base = base();
        let o = Overrides::default()
            .merge(
                &base,
                &json!({"app": {"thinking": false}, "retry": {"max_retry": 5}}),
            )
            .unwrap();
        assert_eq!(o.version, 1);
        let c = o.apply(&base).unwrap();
        assert!(!c.app.thinking);
        assert_eq!(c.retry.max_retry, 5);
        // A second patch deep-merges: earlier keys stay.
        let o2 = o.merge(&base, &json!({"image": {"nsfw": false}})).unwrap();
        let c2 = o2.apply(&base).unwrap();
        assert!(!c2.app.thinking && !c2.image.nsfw);
        for (patch, key) in [
            (json!({"app": {"nope": 1}}), "app.nope"),
            (json!({"nope": {}}), "nope"),
            (json!({"app": {"thinking": "yes"}}), "app.thinking"),
            (json!({"server": {"port": 1}}), "server.port"),
            (json!({"retry": {"max_retry": 0}}), "retry.max_retry"),
            (
                json!({"image": {"response_format": "gif"}}),
                "image.response_format",
            ),
            (json!({"app": {"app_url": "ftp://x"}}), "app.app_url"),
        ] {
            assert_eq!(o.merge(&base, &patch).unwrap_err().key, key, "{patch}");
        }
    }

    #[test]
    fn placeholders_keep_secrets_and_unchanged_fixed_keys_pass() {
        let base = base();
        let read_back = serde_json::to_value(&base).unwrap();
        assert_eq!(read_back["app"]["api_key"], REDACTED);
        // Posting the whole configuration back unchanged is accepted and changes nothing.
        let o = Overrides::default().merge(&base, &read_back).unwrap();
        assert_eq!(o.apply(&base).unwrap().app.api_key.expose(), "sk-operator");
        let o = o
            .merge(&base, &json!({"app": {"api_key": "sk-new"}}))
            .unwrap();
        assert_eq!(o.apply(&base).unwrap().app.api_key.expose(), "sk-new");
        let o = o
            .merge(&base, &json!({"app": {"api_key": REDACTED_LONG}}))
            .unwrap();
        assert_eq!(o.apply(&base).unwrap().app.api_key.expose(), "sk-new");
    }

    #[test]
    fn live_handle_swaps_on_change_only() {
        let live = LiveConfig::new(Arc::new(base()));
        let o = Overrides::default()
            .merge(live.base(), &json!({"chat": {"timeout_secs": 7}}))
            .unwrap();
        live.apply_raw(Some(&o.to_json()));
        assert_eq!(live.get().chat.timeout_secs, 7);
        live.apply_raw(Some("not json"));
        assert_eq!(live.get().chat.timeout_secs, 7);
        live.apply_raw(None);
        assert_eq!(live.get().chat.timeout_secs, base().chat.timeout_secs);
    }
}
