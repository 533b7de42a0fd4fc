//! The admin pages: login, tokens, config, cache and client keys.
//!
//! The pages themselves are public HTML; every piece of data they show comes from the admin
//! API, which the page's script calls with the admin key as a Bearer header.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Response};
use axum::response::Redirect;
use axum::routing::get;

use crate::state::AppState;

/// `(route, asset)` of every admin page.
pub const PAGES: [(&str, &str); 5] = [
    ("/admin/login", "admin/login.html"),
    ("/admin/token", "admin/token.html"),
    ("/admin/config", "admin/config.html"),
    ("/admin/cache", "admin/cache.html"),
    ("/admin/keys", "admin/keys.html"),
];

pub fn router() -> Router<AppState> {
    let mut router = Router::new().route("/admin", get(|| async { Redirect::to("/admin/login") }));
    for (route, asset) in PAGES {
        router = router.route(
            route,
            get(move |headers: HeaderMap| async move { page(asset, &headers) }),
        );
    }
    router
}

fn page(asset: &str, headers: &HeaderMap) -> Response<Body> {
    super::serve_asset(asset, headers)
}
