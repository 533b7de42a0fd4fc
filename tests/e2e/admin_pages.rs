//! The admin pages: served with the right types and a strict CSP, assets embedded, no path
//! escapes; and, in headless Chromium against the real binary and the simulator, the whole
//! admin flow: log in, add a token, refresh it with live batch progress, edit the config,
//! download a generated image from the cache page, create a client key.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::browser::Browser;
use crate::harness::{ADMIN_KEY, API_KEY, Cluster, Shape};

const PAGES: [&str; 5] = [
    "/admin/login",
    "/admin/token",
    "/admin/config",
    "/admin/cache",
    "/admin/keys",
];

/// Every `/static/...` path a page or script refers to (`src=`, `href=`, `import ... from`).
fn static_refs(text: &str) -> Vec<String> {
    let mut refs = vec![];
    for quote in ['"', '\''] {
        for part in text.split(quote).skip(1).step_by(2) {
            if part.starts_with("/static/") && !refs.iter().any(|r| r == part) {
                refs.push(part.to_owned());
            }
        }
    }
    refs
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn assert_csp(r: &reqwest::Response, what: &str) {
    let csp = r
        .headers()
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what} has no CSP"))
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'self'"), "{what}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-eval"), "{what}: {csp}");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{what}");
}

/// Sends one raw HTTP/1.1 GET, so the path reaches the server exactly as written (HTTP
/// clients normalise `..` away), and returns the status code.
async fn raw_get_status(base: &str, path: &str) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let head = String::from_utf8_lossy(&answer);
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head}"))
}

async fn pages_and_assets_are_served_with_types_and_csp(shape: Shape) {
    let c = Cluster::start(shape, "admin-pages-http").await;
    let http = no_redirects();

    let r = http.get(c.url("/admin")).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    assert_eq!(r.headers()["location"], "/admin/login");

    let mut assets = vec![];
    for page in PAGES {
        let r = http.get(c.url(page)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{page}");
        assert_eq!(
            r.headers()["content-type"],
            "text/html; charset=utf-8",
            "{page}"
        );
        assert_csp(&r, page);
        let html = r.text().await.unwrap();
        // No inline script or style: the CSP would block it.
        assert!(!html.contains("<script>"), "{page} has an inline script");
        assert!(!html.contains("style=\""), "{page} has an inline style");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{page} loads from elsewhere"
        );
        assets.extend(static_refs(&html));
    }
    // Follow module imports too, until every referenced asset was fetched once.
    let mut seen: Vec<String> = vec![];
    while let Some(path) = assets.pop() {
        if seen.contains(&path) {
            continue;
        }
        let r = http.get(c.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let want = if path.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else if path.ends_with(".css") {
            "text/css; charset=utf-8"
        } else {
            panic!("unexpected asset {path}")
        };
        assert_eq!(r.headers()["content-type"], want, "{path}");
        assert_csp(&r, &path);
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        let text = r.text().await.unwrap();
        assert!(!text.is_empty(), "{path} is empty");
        assets.extend(static_refs(&text));
        // A revalidation with the ETag is a bodiless 304.
        let again = http
            .get(c.url(&path))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
        assert!(again.bytes().await.unwrap().is_empty());
        seen.push(path);
    }
    for expected in [
        "/static/common/api.js",
        "/static/common/ui.js",
        "/static/common/base.css",
        "/static/admin/shell.js",
        "/static/admin/batch.js",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "{expected} never referenced"
        );
    }

    let r = http
        .get(c.url("/static/admin/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    // Encoded and literal escapes out of the assets folder.
    for path in [
        "/static/%2e%2e/Cargo.toml",
        "/static/admin/%2e%2e%2f%2e%2e%2fsrc%2flib.rs",
        "/static/..%2F..%2FCargo.toml",
        "/static/admin/..%5c..%5cCargo.toml",
        "/static/.%2e/.%2e/.%2e/etc/passwd",
    ] {
        let r = http.get(c.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    for path in [
        "/static/../../Cargo.toml",
        "/static/admin/../../src/lib.rs",
        "/static/../gateway/src/lib.rs",
    ] {
        let status = raw_get_status(&c.gateways[0], path).await;
        assert!(status == 404 || status == 400, "{path} answered {status}");
    }
}
crate::both_shapes!(pages_and_assets_are_served_with_types_and_csp);

/// The token the page shows for `id`, read through the API.
async fn token_by_id(c: &Cluster, id: &str) -> Option<Value> {
    c.tokens().await.into_iter().find(|t| t["id"] == id)
}

async fn admin_flow_in_chromium(shape: Shape) {
    let c = Cluster::start(shape, "admin-pages-browser").await;
    let test = match shape {
        Shape::Embedded => "admin_pages_embedded",
        Shape::Distributed => "admin_pages_distributed",
    };
    let mut b = Browser::start(test, &c.gateways[0]).await;

    // Log in: /admin sends to the login page; a wrong key is refused in place.
    b.goto("/admin").await;
    b.wait_for_path("/admin/login").await;
    b.fill("#admin-key", "not-the-key").await;
    b.click("#login-submit").await;
    b.wait_for_text("#login-error", "not valid").await;
    b.fill("#admin-key", ADMIN_KEY).await;
    b.screenshot("login").await;
    b.click("#login-submit").await;
    b.wait_for_path("/admin/token").await;
    b.wait_for_text("#token-rows", "No tokens yet").await;
    // The key sits in localStorage and never in the address bar.
    assert!(!b.path().await.contains(ADMIN_KEY));

    // Add a token through the modal; it is listed masked, with its type and status badges.
    // The simulator reports a quota of 37 for this account, so a refresh is visible.
    let token = format!("browser-basic-quota-37-{}", uuid::Uuid::new_v4().simple());
    let id = shared::crypto::token_id(&token);
    b.click("#open-add").await;
    b.fill("#edit-token", &token).await;
    b.fill("#edit-note", "added in the browser").await;
    b.click("#edit-save").await;
    let row = format!("#token-rows tr[data-id=\"{id}\"]");
    b.wait_for(&row).await;
    let text = b.text(&row).await;
    assert!(text.contains("Basic"), "{text}");
    assert!(text.contains("active"), "{text}");
    assert!(text.contains("added in the browser"), "{text}");
    assert!(
        !text.contains(&token),
        "the page shows the token in clear: {text}"
    );
    assert_eq!(b.text("#stat-total").await, "1");
    let stored = token_by_id(&c, &id).await.expect("the token was stored");
    assert_eq!(stored["note"], "added in the browser");
    b.screenshot("token-added").await;

    // Refresh it as a batch, following the progress stream to the end.
    b.click(&format!("{row} .row-select")).await;
    b.wait_for_text("#batch-count", "1 selected").await;
    b.click("#batch-refresh").await;
    b.wait_for_text("#progress-text", "Done").await;
    b.wait_for_text("#progress-ok", "ok 1").await;
    b.screenshot("refresh-progress").await;
    b.click("#progress-close").await;
    b.wait_gone("#progress-modal").await;
    let refreshed = token_by_id(&c, &id).await.unwrap();
    assert_eq!(
        refreshed["quota"], 37,
        "the refresh did not reach the account"
    );
    b.wait_for_text(&format!("{row} .quota"), "37").await;

    // Edit the config: a valid change is saved, an invalid one shows the server's message.
    b.goto("/admin/config").await;
    b.fill("#cfg-retry-max_retry", "5").await;
    b.click("#config-save").await;
    b.wait_for_text("#toasts", "Configuration saved").await;
    let config: Value = c
        .http
        .get(c.url("/v1/admin/config"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["retry"]["max_retry"], 5, "{config}");
    assert_eq!(config["app"]["app_key"], "***", "secrets stay hidden");
    b.fill("#cfg-retry-max_retry", "0").await;
    b.click("#config-save").await;
    b.wait_for_text("#config-error", "max_retry").await;
    b.screenshot("config-invalid").await;

    // Generate two images through the API, then download them from the cache page: one
    // file as itself, both as a ZIP.
    let prompt = "a lighthouse in the browser test";
    let r = c
        .http
        .post(c.url("/v1/images/generations"))
        .bearer_auth(API_KEY)
        .json(&json!({"model": "grok-imagine-1.0", "prompt": prompt, "n": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    let names: Vec<String> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["url"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names.len(), 2, "{body}");
    b.goto("/admin/cache").await;
    let first = format!(".media-card[data-name=\"{}\"]", names[0]);
    b.wait_for(&format!(".media-card[data-name=\"{}\"]", names[1]))
        .await;
    b.wait_for_text("#stat-images", "2").await;
    b.screenshot("cache").await;
    b.click(&format!("{first} .media-download-one")).await;
    let wanted = names[0].clone();
    let file = b.wait_for_download(move |n| n == wanted).await;
    let expected = sim::imagine_image(prompt, 0);
    let other = sim::imagine_image(prompt, 1);
    let got = std::fs::read(&file).unwrap();
    assert!(
        got == expected || got == other,
        "the download is not the generated image ({} bytes)",
        got.len()
    );
    b.click("#media-select-all").await;
    b.click("#media-download").await;
    let zip = b.wait_for_download(|n| n.ends_with(".zip")).await;
    let zip = std::fs::read(zip).unwrap();
    assert!(zip.starts_with(b"PK\x03\x04"), "not a ZIP");
    // Stored without compression: both images appear verbatim inside.
    for image in [&expected, &other] {
        assert!(
            zip.windows(image.len()).any(|w| w == image.as_slice()),
            "an image is missing from the ZIP"
        );
    }
    // Preview opens in the lightbox.
    b.click(&format!("{first} .media-view")).await;
    b.wait_for("#lightbox img").await;
    b.screenshot("cache-preview").await;
    b.click("#lightbox [data-close]").await;

    // A generated video plays inline and downloads as itself.
    let r = c
        .chat(
            0,
            json!({"model": "grok-imagine-1.0-video",
                   "messages": [{"role": "user", "content": "a fox in the browser test"}]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    let at = content.find("/v1/files/video/").expect("a video link") + "/v1/files/video/".len();
    let video: String = content[at..]
        .chars()
        .take_while(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_'))
        .collect();
    b.click("#tab-video").await;
    let card = format!(".media-card[data-name=\"{video}\"]");
    b.wait_for(&format!("{card} video")).await;
    b.click(&format!("{card} .media-view")).await;
    let player = b.wait_for("#lightbox video").await;
    assert!(player.attr("controls").await.unwrap().is_some());
    assert!(player.attr("src").await.unwrap().unwrap().ends_with(&video));
    b.screenshot("cache-video").await;
    b.click("#lightbox [data-close]").await;
    b.click(&format!("{card} .media-download-one")).await;
    let wanted = video.clone();
    let file = b.wait_for_download(move |n| n == wanted).await;
    assert_eq!(
        std::fs::read(file).unwrap(),
        sim::generated_video("a fox in the browser test", 6, None)
    );

    // Create a client key: shown once, and it works on the OpenAI API.
    b.goto("/admin/keys").await;
    b.fill("#key-name", "browser-key").await;
    b.click("#key-create").await;
    let key = b.wait_for_text("#key-value", "sk-").await;
    b.wait_for_text("#key-rows", "browser-key").await;
    b.screenshot("key-created").await;
    let r = c
        .http
        .get(c.url("/v1/models"))
        .bearer_auth(key.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the new key does not work");
    b.click("#key-dismiss").await;
    b.wait_gone("#key-created").await;
    assert!(
        !b.eval("return document.body.innerText", vec![])
            .await
            .as_str()
            .unwrap()
            .contains(key.trim())
    );

    // Logging out forgets the key.
    b.click("#logout").await;
    b.wait_for_path("/admin/login").await;
    let stored = b
        .eval("return localStorage.getItem('grok2api_admin_key')", vec![])
        .await;
    assert!(stored.is_null(), "{stored}");
    b.close().await;
}
crate::both_shapes!(admin_flow_in_chromium);

async fn admin_actions_in_chromium(shape: Shape) {
    let c = Cluster::start(shape, "admin-pages-actions").await;
    let test = match shape {
        Shape::Embedded => "admin_actions_embedded",
        Shape::Distributed => "admin_actions_distributed",
    };
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let basic = format!("actions-basic-{suffix}");
    c.set_tokens(&[&basic], &[]).await;
    let mut b = Browser::start(test, &c.gateways[0]).await;
    b.goto("/admin/login").await;
    b.fill("#admin-key", ADMIN_KEY).await;
    b.click("#login-submit").await;
    b.wait_for_path("/admin/token").await;
    b.wait_for_text("#stat-total", "1").await;

    // Import two accounts into the Super pool; they are merged with the one already there.
    let supers = [
        format!("actions-super-a-{suffix}"),
        format!("actions-super-b-{suffix}"),
    ];
    b.click("#open-import").await;
    b.select("#import-pool", "ssoSuper").await;
    b.fill(
        "#import-text",
        &format!("{}\nsso={}\n", supers[0], supers[1]),
    )
    .await;
    b.click("#import-save").await;
    b.wait_for_text("#stat-total", "3").await;
    let rows = "#token-rows tr[data-id]";
    b.wait_for_count(rows, 3).await;
    // The Super tab shows only those two, each with its amber type badge.
    b.click(".tab[data-filter=\"super\"]").await;
    b.wait_for_count(rows, 2).await;
    assert_eq!(b.count("#token-rows .badge-super").await, 2);
    b.click(".tab[data-filter=\"basic\"]").await;
    b.wait_for_count(rows, 1).await;
    assert_eq!(b.count("#token-rows .badge-basic").await, 1);

    // Export all, then only the selected Super accounts (matched by id in the browser).
    b.click("#export-all").await;
    let all = b.wait_for_download(|n| n == "tokens.txt").await;
    let all = std::fs::read_to_string(all).unwrap();
    let mut lines: Vec<&str> = all.lines().collect();
    lines.sort();
    let mut want = vec![basic.as_str(), supers[0].as_str(), supers[1].as_str()];
    want.sort();
    assert_eq!(lines, want);
    b.click(".tab[data-filter=\"super\"]").await;
    b.wait_for_count(rows, 2).await;
    b.click(&format!(
        "#token-rows tr[data-id=\"{}\"] .row-select",
        shared::crypto::token_id(&supers[1])
    ))
    .await;
    b.wait_for_text("#batch-count", "1 selected").await;
    b.click("#batch-export").await;
    let one = b
        .wait_for_download(|n| n.starts_with("tokens") && n != "tokens.txt")
        .await;
    assert_eq!(std::fs::read_to_string(one).unwrap().trim(), supers[1]);
    b.click("#select-none").await;
    b.click(".tab[data-filter=\"all\"]").await;
    b.wait_for_count(rows, 3).await;

    // Edit the Basic account's note.
    let basic_id = shared::crypto::token_id(&basic);
    let row = format!("#token-rows tr[data-id=\"{basic_id}\"]");
    b.click(&format!("{row} .row-edit")).await;
    b.fill("#edit-note", "edited in the browser").await;
    b.click("#edit-save").await;
    b.wait_for_text(&format!("{row} .note"), "edited in the browser")
        .await;
    let stored = token_by_id(&c, &basic_id).await.unwrap();
    assert_eq!(stored["note"], "edited in the browser");

    // Enable NSFW for every account: the batch runs with progress, then each row is tagged.
    b.click(".tab[data-filter=\"all\"]").await;
    b.click("#nsfw-all").await;
    b.wait_for_text("#progress-text", "Done · 3 / 3").await;
    b.wait_for_text("#progress-ok", "ok 3").await;
    b.click("#progress-close").await;
    b.wait_for_count("#token-rows .badge-nsfw", 3).await;
    b.click(".tab[data-filter=\"nsfw\"]").await;
    b.wait_for_count(rows, 3).await;
    b.screenshot("nsfw-tagged").await;

    // Delete the two Super accounts through the selection bar.
    b.click(".tab[data-filter=\"super\"]").await;
    b.wait_for_count(rows, 2).await;
    b.click("#select-filtered").await;
    b.wait_for_text("#batch-count", "2 selected").await;
    b.click("#batch-delete").await;
    let question = b.accept_dialog().await;
    assert!(question.contains("Delete 2 tokens"), "{question}");
    b.wait_for_text("#stat-total", "1").await;
    let left: Vec<String> = c
        .tokens()
        .await
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, vec![basic_id.clone()]);

    // Cache: delete one image, then clear the rest.
    let r = c
        .http
        .post(c.url("/v1/images/generations"))
        .bearer_auth(API_KEY)
        .json(&json!({"model": "grok-imagine-1.0", "prompt": "cache actions", "n": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    b.goto("/admin/cache").await;
    b.wait_for_count(".media-card", 2).await;
    b.click(".media-card .media-delete-one").await;
    b.accept_dialog().await;
    b.wait_for_count(".media-card", 1).await;
    b.wait_for_text("#stat-images", "1").await;
    b.click("#media-clear").await;
    b.accept_dialog().await;
    b.wait_for_text("#media-grid", "No cached images").await;
    let listed: Value = c
        .http
        .get(c.url("/v1/admin/cache/list?type=image"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total"], 0, "{listed}");

    // Online assets: loading counts every account's assets upstream as a batch.
    b.click("#online-load-all").await;
    b.wait_for_text("#progress-text", "Done · 1 / 1").await;
    b.click("#progress-close").await;
    b.wait_for_text("#online-rows", "loaded").await;
    b.wait_for_text("#stat-online-status", "loaded").await;
    b.screenshot("online-loaded").await;

    // Keys: a revoked key stops working.
    b.goto("/admin/keys").await;
    b.fill("#key-name", "short-lived").await;
    b.click("#key-create").await;
    let key = b.wait_for_text("#key-value", "sk-").await.trim().to_owned();
    let models = |key: String| {
        let http = c.http.clone();
        let url = c.url("/v1/models");
        async move {
            http.get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(models(key.clone()).await, 200);
    b.click(".key-revoke").await;
    b.accept_dialog().await;
    b.wait_for_text("#key-rows", "No keys yet").await;
    // Revocation reaches every gateway within the key cache's lifetime.
    let start = std::time::Instant::now();
    while models(key.clone()).await != 401 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the revoked key still works"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.close().await;
}
crate::both_shapes!(admin_actions_in_chromium);
