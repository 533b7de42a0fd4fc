//! The gateway's shared state, built once and handed to handlers through `State`.

use std::sync::Arc;

use shared::Secret;
use shared::backends::Backends;
use shared::config::Config;
use tokio_util::sync::CancellationToken;

use crate::auth::AdminKey;

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub config: Arc<Config>,
    pub backends: Backends,
    pub admin_key: AdminKey,
    pub api_keys: Vec<Secret>,
    /// Cancelled when the process starts draining: open streams end with a final event.
    pub shutdown: CancellationToken,
    /// Named client API keys: lookup cache, rate limits, usage counters.
    pub client_keys: Arc<crate::client_keys::ClientKeys>,
    /// Playground tasks (`/v1/public/*`), connected on first use.
    pub public_tasks: crate::public::tasks::TaskStoreCell,
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        backends: Backends,
        admin_key: AdminKey,
        shutdown: CancellationToken,
    ) -> Self {
        let api_keys = config.app.api_keys();
        let config_redis_url = config.backend.redis_url.clone();
        let config_prefix = config.backend.prefix.clone();
        AppState(Arc::new(Inner {
            config,
            backends,
            admin_key,
            api_keys,
            shutdown,
            client_keys: Arc::new(crate::client_keys::ClientKeys::new(
                config_redis_url.expose(),
                &config_prefix,
            )),
            public_tasks: Default::default(),
        }))
    }
}
