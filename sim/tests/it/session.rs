use serde_json::{Value, json};

use crate::common::{http, start, token};

async fn lookup(base: &str, cookie: Option<&str>) -> Value {
    let mut request = http().get(format!("{base}/api/auth/session"));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn session_names_the_user_of_the_token() {
    let sim = start().await;
    let token = token("basic");
    let body = lookup(&sim.base_url(), Some(&format!("sso={token}"))).await;
    assert_eq!(body["status"], "authenticated");
    assert_eq!(body["session"]["userId"], sim::user_id_for(&token));
    let other = lookup(&sim.base_url(), Some("sso=someone-else")).await;
    assert_ne!(other["session"]["userId"], body["session"]["userId"]);
}

#[tokio::test]
async fn session_without_a_valid_cookie_is_unauthenticated() {
    let sim = start().await;
    let base = sim.base_url();
    let unauthenticated = json!({"status": "unauthenticated"});
    assert_eq!(lookup(&base, None).await, unauthenticated);
    assert_eq!(lookup(&base, Some("sso=")).await, unauthenticated);
    assert_eq!(lookup(&base, Some("other=1")).await, unauthenticated);
    let revoked = format!("sso={}", token("fault-401"));
    assert_eq!(lookup(&base, Some(&revoked)).await, unauthenticated);
}

#[tokio::test]
async fn session_of_a_blocked_account_says_blocked() {
    let sim = start().await;
    let cookie = format!("sso={}", token("super-fault-blocked"));
    assert_eq!(
        lookup(&sim.base_url(), Some(&cookie)).await,
        json!({"status": "blocked"})
    );
}
