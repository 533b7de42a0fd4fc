//! Where the test services are, and names that keep parallel tests apart.
//!
//! Each URL can be overridden by environment, so the suite runs against any server.

#![allow(dead_code)]

pub fn amqp_url() -> String {
    std::env::var("GROK2API_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn redis_url() -> String {
    std::env::var("GROK2API_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// A PostgreSQL URL for a server where the test user may create databases.
pub fn postgres_admin_url() -> String {
    std::env::var("GROK2API_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A prefix unique to one test, for queue names and Redis keys.
pub fn unique_prefix(test: &str) -> String {
    format!("t-{}-{}", test, uuid::Uuid::new_v4().simple())
}
