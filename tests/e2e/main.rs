//! End-to-end tests: the real `grok2api` binary in separate processes on random ports,
//! driven over HTTP, with the simulator as the upstream. Every scenario runs against both
//! shapes: `serve` on embedded backends, and two gateways plus two workers on RabbitMQ,
//! Redis and PostgreSQL.

mod admin;
mod admin_batch;
mod admin_cache;
mod admin_config;
mod admin_keys;
mod admin_pages;
mod admin_tokens_io;
mod browser;
mod chat;
mod files;
mod harness;
mod images;
mod media_inputs;
mod metrics;
mod openai_client;
mod playground_pages;
mod pool_lifecycle;
mod public_api;
mod storage_upkeep;
mod tracing;
mod video_durability;
mod videos;
