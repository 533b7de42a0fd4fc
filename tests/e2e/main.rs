//! End-to-end tests: the real `grok2api` binary in separate processes on random ports,
//! driven over HTTP, with the simulator as the upstream. Every scenario runs against both
//! shapes: `serve` on embedded backends, and two gateways plus two workers on RabbitMQ,
//! Redis and PostgreSQL.

mod admin;
mod admin_batch;
mod chat;
mod files;
mod harness;
mod images;
mod metrics;
mod openai_client;
mod pool_lifecycle;
mod tracing;
mod videos;
