//! The Store's client-key contract, run against SQLite (a temporary file) and PostgreSQL (a
//! database created for the test and dropped afterwards).

use std::sync::Arc;

use shared::Secret;
use shared::crypto::{TokenCipher, generate_key};
use shared::store::{self, ClientKeyRecord, ClientKeyUpdate, ClientKeyUsage, Store};

use crate::common::{create_postgres_db, drop_postgres_db, run_then_cleanup};

async fn open(url: &str) -> Arc<dyn Store> {
    let cipher = TokenCipher::new(&Secret::new(generate_key()), &[]).unwrap();
    let store = store::connect(url, cipher)
        .await
        .expect("connect the store");
    store.migrate().await.expect("migrate");
    store
}

async fn run_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let dir = std::env::temp_dir().join(format!("g2a-keys-{}", uuid::Uuid::new_v4().simple()));
    let store = open(&format!("sqlite://{}", dir.join("k.db").display())).await;
    run_then_cleanup(case(store), async {
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await;
}

async fn run_postgres<F, Fut>(case: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (name, url) = create_postgres_db().await;
    let store = open(&url).await;
    run_then_cleanup(case(store), drop_postgres_db(&name)).await;
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test]
                async fn sqlite() {
                    super::run_sqlite(super::$case).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::run_postgres(super::$case).await;
                }
            }
        )*
    };
}

conformance!(
    client_keys_round_trip_and_find_by_prefix,
    client_key_updates_change_only_named_fields,
    client_key_usage_adds_up_in_batches,
    client_key_prefix_is_unique_and_delete_revokes,
);

fn key(id: &str, prefix: &str, created_at_ms: i64) -> ClientKeyRecord {
    ClientKeyRecord {
        id: id.into(),
        prefix: prefix.into(),
        key_sha256: format!("{:0>64}", id),
        name: format!("key {id}"),
        models: vec!["grok-4".into(), "grok-3".into()],
        rate_limit_per_minute: 30,
        enabled: true,
        request_count: 0,
        created_at_ms,
        last_used_at_ms: None,
    }
}

async fn client_keys_round_trip_and_find_by_prefix(s: Arc<dyn Store>) {
    assert!(s.list_client_keys().await.unwrap().is_empty());
    let a = key("a1", "sk-g2a-aaaa1111", 2);
    let b = ClientKeyRecord {
        models: vec![],
        rate_limit_per_minute: 0,
        enabled: false,
        ..key("b2", "sk-g2a-bbbb2222", 1)
    };
    s.create_client_key(&a).await.unwrap();
    s.create_client_key(&b).await.unwrap();
    assert_eq!(
        s.list_client_keys().await.unwrap(),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(
        s.client_key_by_prefix("sk-g2a-aaaa1111").await.unwrap(),
        Some(a)
    );
    assert_eq!(
        s.client_key_by_prefix("sk-g2a-cccc3333").await.unwrap(),
        None
    );
}

async fn client_key_updates_change_only_named_fields(s: Arc<dyn Store>) {
    let a = key("a1", "sk-g2a-aaaa1111", 1);
    s.create_client_key(&a).await.unwrap();
    let changed = s
        .update_client_key(
            "a1",
            &ClientKeyUpdate {
                models: Some(vec![]),
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .expect("the key exists");
    let expected = ClientKeyRecord {
        models: vec![],
        enabled: false,
        ..a
    };
    assert_eq!(changed, expected);
    assert_eq!(
        s.client_key_by_prefix("sk-g2a-aaaa1111").await.unwrap(),
        Some(expected)
    );
    assert_eq!(
        s.update_client_key("nope", &ClientKeyUpdate::default())
            .await
            .unwrap(),
        None
    );
}

async fn client_key_usage_adds_up_in_batches(s: Arc<dyn Store>) {
    s.create_client_key(&key("a1", "sk-g2a-aaaa1111", 1))
        .await
        .unwrap();
    s.create_client_key(&key("b2", "sk-g2a-bbbb2222", 2))
        .await
        .unwrap();
    let usage = |id: &str, requests, at| ClientKeyUsage {
        id: id.into(),
        requests,
        last_used_at_ms: at,
    };
    s.add_client_key_usage(&[usage("a1", 3, 100), usage("b2", 1, 50), usage("gone", 9, 1)])
        .await
        .unwrap();
    // A late batch with an older time adds its count but keeps the newest time.
    s.add_client_key_usage(&[usage("a1", 2, 90)]).await.unwrap();
    s.add_client_key_usage(&[]).await.unwrap();
    let listed = s.list_client_keys().await.unwrap();
    let got: Vec<(i64, Option<i64>)> = listed
        .iter()
        .map(|k| (k.request_count, k.last_used_at_ms))
        .collect();
    assert_eq!(got, vec![(5, Some(100)), (1, Some(50))]);
}

async fn client_key_prefix_is_unique_and_delete_revokes(s: Arc<dyn Store>) {
    s.create_client_key(&key("a1", "sk-g2a-aaaa1111", 1))
        .await
        .unwrap();
    assert!(
        s.create_client_key(&key("b2", "sk-g2a-aaaa1111", 2))
            .await
            .is_err()
    );
    assert!(s.delete_client_key("a1").await.unwrap());
    assert!(!s.delete_client_key("a1").await.unwrap());
    assert_eq!(
        s.client_key_by_prefix("sk-g2a-aaaa1111").await.unwrap(),
        None
    );
}
