//! Scenario 10, secrets: account tokens are sealed at rest under a key that rotates
//! without downtime (`security.previous_token_keys` plus `grok2api reseal`), and no secret
//! (admin key, API key, account token, token key) appears in any log line or API response.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::{Value, json};
use shared::Secret;
use shared::crypto::{TokenCipher, generate_key};

use crate::both_shapes;
use crate::harness::{ADMIN_KEY, API_KEY, Cluster, Options, Shape, sse_data};

fn ask(prompt: &str, stream: bool) -> Value {
    json!({"model": "grok-4.1-fast", "stream": stream,
        "messages": [{"role": "user", "content": prompt}]})
}

fn key_id(key: &str) -> String {
    TokenCipher::new(&Secret::new(key), &[])
        .unwrap()
        .key_id()
        .to_owned()
}

/// The key id of every stored token's sealed value, read straight from the database.
async fn stored_key_ids(c: &Cluster) -> Vec<String> {
    let url = c.database_url();
    let rows: Vec<(String,)> = if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let rows = sqlx::query_as("SELECT sealed FROM tokens")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    } else {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let rows = sqlx::query_as("SELECT sealed FROM tokens")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    };
    rows.into_iter()
        .map(|(sealed,)| sealed.split('.').nth(1).unwrap_or_default().to_owned())
        .collect()
}

/// Non-streamed chats in a loop, each sent to the next gateway that accepts connections
/// (as a load balancer would), until stopped; counts answers that were not a 200.
struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(c: &Cluster) -> Load {
        let (stop, served, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let gateways = c.gateways.clone();
        let http = c.http.clone();
        let (s, ok, bad) = (stop.clone(), served.clone(), failed.clone());
        let task = tokio::spawn(async move {
            let mut i = 0usize;
            while !s.load(Ordering::SeqCst) {
                i += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let base = &gateways[i % gateways.len()];
                let sent = http
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(API_KEY)
                    .json(&ask(&format!("during rotation {i}"), false))
                    .send()
                    .await;
                match sent {
                    // A gateway that is restarting refuses connections: try the next.
                    Err(e) if e.is_connect() => continue,
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => {
                        eprintln!(
                            "failed during rotation: {} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        );
                        bad.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        eprintln!("failed during rotation: {e}");
                        bad.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        });
        Load {
            stop,
            served,
            failed,
            task,
        }
    }

    async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        (
            self.served.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// Restarts every process with `changes`, one at a time.
async fn roll(c: &mut Cluster, changes: &[(&str, &str)]) {
    let names = match c.shape {
        Shape::Embedded => vec!["serve"],
        Shape::Distributed => vec!["worker-0", "worker-1", "gateway-0", "gateway-1"],
    };
    for name in names {
        c.respawn_with(name, changes).await;
    }
}

async fn assert_chat_works(c: &Cluster, what: &str) {
    for gw in 0..c.gateways.len() {
        let r = c.chat(gw, ask(what, false)).await;
        if r.status() != 200 {
            let body = r.text().await.unwrap();
            panic!("{what}: {body}; tokens: {:?}", c.tokens().await);
        }
    }
}

async fn token_key_rotates_without_downtime(shape: Shape) {
    let (key_a, key_b) = (generate_key(), generate_key());
    let (id_a, id_b) = (key_id(&key_a), key_id(&key_b));
    let only = |current: &str, previous: &[&str]| {
        let list: Vec<String> = previous.iter().map(|k| format!("\"{k}\"")).collect();
        (current.to_owned(), format!("[{}]", list.join(",")))
    };
    let options = Options {
        extra_env: vec![
            ("GROK2API_SECURITY__TOKEN_KEY".into(), key_a.clone()),
            ("GROK2API_SECURITY__PREVIOUS_TOKEN_KEYS".into(), "[]".into()),
        ],
        ..Default::default()
    };
    let mut c = Cluster::start_with(shape, "rotation", options).await;
    // Quota enough for the steady load of the whole rotation.
    c.post_tokens(
        json!({"ssoBasic": [{"token": "rotating-token-1", "quota": 100000},
        {"token": "rotating-token-2", "quota": 100000}]}),
    )
    .await;
    assert_chat_works(&c, "under key A").await;
    assert_eq!(stored_key_ids(&c).await, vec![id_a.clone(); 2]);

    let load = (shape == Shape::Distributed).then(|| Load::start(&c));
    // 1. Every process learns key B (still sealing with A), so none is ever handed a value
    //    it cannot open while the next step rolls out.
    let (current, previous) = only(&key_a, &[&key_b]);
    roll(
        &mut c,
        &[
            ("GROK2API_SECURITY__TOKEN_KEY", &current),
            ("GROK2API_SECURITY__PREVIOUS_TOKEN_KEYS", &previous),
        ],
    )
    .await;
    // 2. Seal with B; A still opens what it sealed.
    let (current, previous) = only(&key_b, &[&key_a]);
    roll(
        &mut c,
        &[
            ("GROK2API_SECURITY__TOKEN_KEY", &current),
            ("GROK2API_SECURITY__PREVIOUS_TOKEN_KEYS", &previous),
        ],
    )
    .await;
    assert_chat_works(&c, "under key B, A still known").await;
    assert_eq!(
        stored_key_ids(&c).await,
        vec![id_a.clone(); 2],
        "nothing rewrote the store yet"
    );

    // 3. Re-seal the store under B (beside the live processes).
    let out = c.run_command(&["reseal"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("resealed 2 tokens"), "{stdout}");
    assert_eq!(stored_key_ids(&c).await, vec![id_b.clone(); 2]);
    // Running it again finds nothing to do.
    let again = String::from_utf8_lossy(&c.run_command(&["reseal"], &[]).stdout).into_owned();
    assert!(again.contains("resealed 0 tokens"), "{again}");

    // 4. Drop A.
    let (current, previous) = only(&key_b, &[]);
    roll(
        &mut c,
        &[
            ("GROK2API_SECURITY__TOKEN_KEY", &current),
            ("GROK2API_SECURITY__PREVIOUS_TOKEN_KEYS", &previous),
        ],
    )
    .await;
    assert_chat_works(&c, "under key B alone").await;
    assert_eq!(c.tokens().await.len(), 2);
    if let Some(load) = load {
        let (served, failed) = load.finish().await;
        assert_eq!(
            failed, 0,
            "requests failed during the rotation ({served} served)"
        );
        assert!(served > 0);
    }
    // The key material itself never reached a log.
    let logs = c.logs();
    for key in [&key_a, &key_b] {
        assert!(!logs.contains(key.as_str()), "a token key is in the logs");
    }
}
both_shapes!(token_key_rotates_without_downtime);

async fn no_secret_in_any_log_line_or_response(shape: Shape) {
    let token_key = generate_key();
    let options = Options {
        extra_env: vec![
            ("GROK2API_LOG__LEVEL".into(), "debug".into()),
            ("GROK2API_SECURITY__TOKEN_KEY".into(), token_key.clone()),
            ("GROK2API_TOKEN__FAIL_THRESHOLD".into(), "1".into()),
        ],
        scheduler: true,
        ..Default::default()
    };
    let c = Cluster::start_with(shape, "secrets", options).await;
    let good = "eyJhbGciOiJIUzI1NiJ9.secret-good-account-token";
    let limited = "eyJhbGciOiJIUzI1NiJ9.secret-limited-fault-429";
    let dead = "eyJhbGciOiJIUzI1NiJ9.secret-dead-fault-401";
    let mut seen: Vec<String> = Vec::new();

    // Admin: add tokens (one with an `sso=` prefix), list them.
    c.post_tokens(
        json!({"ssoBasic": [{"token": format!("sso={good}"), "quota": 10},
        {"token": limited, "quota": 100}, {"token": dead, "quota": 90}]}),
    )
    .await;
    let r = c
        .http
        .get(c.url("/v1/admin/tokens"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    seen.push(r.text().await.unwrap());
    // Chats, streamed and not, through every failure mode of these accounts.
    for stream in [false, true] {
        for gw in 0..c.gateways.len() {
            let r = c.chat(gw, ask("tell me a secret", stream)).await;
            assert_eq!(r.status(), 200);
            seen.push(if stream {
                sse_data(r).await.join("\n")
            } else {
                r.text().await.unwrap()
            });
        }
    }
    // An image.
    let r = c
        .http
        .post(c.url("/v1/images/generations"))
        .bearer_auth(API_KEY)
        .json(&json!({"prompt": "a secret cat", "response_format": "url"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    seen.push(r.text().await.unwrap());
    // Failures: bad keys, and nothing left to serve.
    for key in ["sk-wrong", &format!("{API_KEY}x")] {
        let r = c
            .http
            .post(c.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&ask("x", false))
            .send()
            .await
            .unwrap();
        seen.push(r.text().await.unwrap());
    }
    c.set_tokens(&[limited, dead], &[]).await;
    let r = c.chat(0, ask("no one left", false)).await;
    assert!(r.status().as_u16() >= 400);
    seen.push(r.text().await.unwrap());
    let r = c
        .http
        .post(c.url("/v1/admin/tokens/refresh"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    seen.push(r.text().await.unwrap());
    for (_, base) in c.metrics_urls() {
        seen.push(c.scrape(&base).await);
    }
    // `grok2api config` prints the effective configuration.
    let out = c.run_command(&["config"], &[]);
    seen.push(String::from_utf8_lossy(&out.stdout).into_owned());

    let logs = c.logs();
    assert!(
        logs.lines().count() > 50,
        "debug logging produced little output"
    );
    let secrets = [
        ("the admin key", ADMIN_KEY.to_owned()),
        ("the API key", API_KEY.to_owned()),
        ("the token key", token_key.clone()),
        ("an account token", good.to_owned()),
        ("an account token", limited.to_owned()),
        ("an account token", dead.to_owned()),
        // The part after the common JWT-like head, in case a token is cut or prefixed.
        (
            "part of an account token",
            "secret-good-account-token".to_owned(),
        ),
        (
            "part of an account token",
            "secret-limited-fault".to_owned(),
        ),
        ("part of an account token", "secret-dead-fault".to_owned()),
    ];
    for (what, secret) in &secrets {
        if let Some(line) = logs.lines().find(|l| l.contains(secret.as_str())) {
            panic!("{what} is in a log line: {line:.300}");
        }
        for body in &seen {
            assert!(
                !body.contains(secret.as_str()),
                "{what} is in a response: {body:.300}"
            );
        }
    }
}
both_shapes!(no_secret_in_any_log_line_or_response);
