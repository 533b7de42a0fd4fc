//! The playground pages: login, chat, imagine, video and voice. They exist only while
//! `app.public_enabled` is true (404 otherwise, like `/v1/public/*`); everything they show
//! comes from `/v1/public/*`, called with the public key as a Bearer header.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

use crate::state::AppState;

/// `(route, asset)` of every playground page.
pub const PAGES: [(&str, &str); 5] = [
    ("/login", "playground/login.html"),
    ("/chat", "playground/chat.html"),
    ("/imagine", "playground/imagine.html"),
    ("/video", "playground/video.html"),
    ("/voice", "playground/voice.html"),
];

pub fn router() -> Router<AppState> {
    let mut router = Router::new().route("/", get(root));
    for (route, asset) in PAGES {
        router = router.route(
            route,
            get(
                move |State(state): State<AppState>, headers: HeaderMap| async move {
                    page(&state, asset, &headers)
                },
            ),
        );
    }
    router
}

/// `/`: the playground when it is on, else the admin login.
async fn root(State(state): State<AppState>) -> Redirect {
    if state.config.app.public_enabled {
        Redirect::to("/login")
    } else {
        Redirect::to("/admin/login")
    }
}

fn page(state: &AppState, asset: &str, headers: &HeaderMap) -> Response<Body> {
    if !state.config.app.public_enabled {
        return crate::public::auth::disabled().into_response();
    }
    super::serve_asset(asset, headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_playground_page_and_script_is_embedded() {
        let scripts = [
            "common.js",
            "login.js",
            "chat.js",
            "imagine.js",
            "video.js",
            "voice.js",
        ];
        let assets = PAGES
            .iter()
            .map(|(_, asset)| (*asset).to_owned())
            .chain(scripts.iter().map(|s| format!("playground/{s}")))
            .chain(["playground/playground.css".to_owned()]);
        for asset in assets {
            let response = super::super::serve_asset(&asset, &HeaderMap::new());
            assert_eq!(response.status(), 200, "{asset} missing");
        }
    }
}
