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
        AppState(Arc::new(Inner {
            config,
            backends,
            admin_key,
            api_keys,
            shutdown,
        }))
    }
}
