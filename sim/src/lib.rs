//! A strict simulator of the Grok web upstream, with fault modes.
//!
//! It speaks the current upstream protocol: the session lookup, chat over the WebSocket
//! gateway (`/ws/mgw/`), the REST `conversations/new` NDJSON stream guarded by
//! `x-statsig-id`, per-mode rate limits, and the anti-bot and blocked-account refusals.
//! Answers are deterministic ([`answer_for`]), so tests can check every byte a client
//! reassembles. Fault modes are chosen per account token or per request (see [`FAULT_HEADER`]).
//!
//! Test-only endpoints: `POST /sim/sign` (stand-in for the external statsig signer),
//! `GET /sim/stats` and `POST /sim/reset`.

mod account;
mod account_ops;
mod answer;
mod assets;
mod faults;
mod image_edit;
mod imagine;
mod mp4;
mod png;
mod rest;
mod script;
mod stats;
mod statsig;
mod upload;
mod video;
mod voice;
mod ws_gateway;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use account::user_id_for;
pub use account_ops::AccountOps;
pub use answer::{MAX_WORDS, SimAnswer, answer_for};
pub use faults::FAULT_HEADER;
pub use image_edit::{EDIT_IMAGES_PER_CALL, edited_image};
pub use imagine::{
    FAIL_MARKER, MODERATED_MARKER, NOT_IMAGE_MARKER, imagine_image, imagine_preview,
};
pub use stats::{SimStats, TokenStats};
pub use statsig::{SIGNED_LEN, SITE_VERIFICATION};
pub use video::{generated_video, upscaled_video, video_thumbnail};

/// The chat modes the upstream accepts (`modeId`, `session.model`, `modelName`).
pub(crate) const MODES: [&str; 4] = ["fast", "auto", "expert", "heavy"];

/// Timing of the simulated upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Delay before the first answer frame.
    pub ttft_ms: u64,
    /// Delay between answer frames.
    pub frame_delay_ms: u64,
    /// `Retry-After` and window of the `429` fault.
    pub rate_limit_window_secs: u64,
    /// Delay between answer frames under the `slow` fault.
    pub slow_frame_delay_ms: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            ttft_ms: 0,
            frame_delay_ms: 0,
            rate_limit_window_secs: 60,
            slow_frame_delay_ms: 200,
        }
    }
}

/// What every handler shares.
pub(crate) struct SimState {
    pub(crate) config: SimConfig,
    pub(crate) stats: Arc<stats::StatsRegistry>,
    /// Cancelled when the simulator stops, so long-lived streams (stalls) end with it.
    pub(crate) shutdown: CancellationToken,
    /// Uploaded files and generated assets, per account.
    pub(crate) media: Arc<assets::MediaStore>,
    /// Quota windows, terms, birth dates, NSFW switches and online assets, per account.
    pub(crate) accounts: Arc<account_ops::Accounts>,
}

impl SimState {
    fn new(config: SimConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            stats: Arc::default(),
            shutdown: CancellationToken::new(),
            media: assets::new_store(),
            accounts: Arc::default(),
        })
    }
}

/// A running simulator on a random local port; it stops when the handle is dropped.
pub struct SimHandle {
    /// The address the simulator listens on.
    pub addr: SocketAddr,
    state: Arc<SimState>,
    server: JoinHandle<()>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:PORT`
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The same data as `GET /sim/stats`, read in-process.
    pub async fn stats(&self) -> SimStats {
        self.state.stats.snapshot()
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
        self.server.abort();
    }
}

/// Binds 127.0.0.1:0 and serves in a background task until the handle is dropped.
pub async fn spawn(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let state = SimState::new(config);
    let app = router(Arc::clone(&state));
    let server = tokio::spawn(async move {
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(error) = axum::serve(listener, app.into_make_service()).await {
            tracing::warn!(%error, "simulator stopped serving");
        }
    });
    Ok(SimHandle {
        addr,
        state,
        server,
    })
}

/// Serves on an existing listener until the future is dropped.
pub async fn serve(config: SimConfig, listener: TcpListener) -> std::io::Result<()> {
    let state = SimState::new(config);
    // Dropping this future ends the streams still running in their own tasks.
    let _stop_streams = state.shutdown.clone().drop_guard();
    // Like the real upstream's, the simulator's frames leave as soon as they are written.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state).into_make_service()).await
}

fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/api/auth/session", get(account::session))
        .route("/ws/mgw/", get(ws_gateway::upgrade))
        .route(
            "/rest/app-chat/conversations/new",
            post(rest::conversations_new),
        )
        .route("/rest/rate-limits", post(account::rate_limits))
        .route(
            "/rest/media/imagine/quota_info",
            post(account_ops::imagine_quota),
        )
        .route(
            "/auth_mgmt.AuthManagement/SetTosAcceptedVersion",
            post(account_ops::set_tos_accepted_version),
        )
        .route(
            "/rest/auth/set-tos-accepted",
            post(account_ops::set_tos_accepted),
        )
        .route(
            "/rest/auth/set-birth-date",
            post(account_ops::set_birth_date),
        )
        .route(
            "/auth_mgmt.AuthManagement/UpdateUserFeatureControls",
            post(account_ops::update_feature_controls),
        )
        .route("/rest/assets", get(account_ops::list_assets))
        .route(
            "/rest/assets-metadata/{id}",
            axum::routing::delete(account_ops::delete_asset),
        )
        .route("/sim/clock/advance", post(account_ops::advance_clock))
        .route("/sim/accounts", get(account_ops::accounts))
        .route("/ws/imagine/listen", get(imagine::upgrade))
        .route(
            "/http/upload-file-v2/direct",
            post(upload::upload).layer(axum::extract::DefaultBodyLimit::max(
                upload::MAX_UPLOAD_BYTES + 64 * 1024,
            )),
        )
        .route("/users/{*rest}", get(assets::download))
        .route("/rest/media/video/upscale", post(video::upscale))
        .route("/index", get(statsig::index_page))
        .route("/sim/sign", post(statsig::sign))
        .route("/rest/livekit/tokens", post(voice::livekit_tokens))
        .route("/sim/stats", get(sim_stats))
        .route("/sim/reset", post(sim_reset))
        .with_state(state)
}

async fn sim_stats(State(state): State<Arc<SimState>>) -> axum::Json<SimStats> {
    axum::Json(state.stats.snapshot())
}

async fn sim_reset(State(state): State<Arc<SimState>>) -> axum::http::StatusCode {
    state.stats.reset();
    state.accounts.reset();
    axum::http::StatusCode::NO_CONTENT
}
