//! Everything the roles share: domain types, configuration, the five backend seams
//! (queue, event bus, token pool, store, blob store) with their embedded and distributed
//! implementations, and the Grok upstream client.
//!
//! Handlers in the role crates only ever see the traits defined here, never an AMQP,
//! Redis, SQL or S3 type.

pub mod backends;
pub mod batch;
pub mod blob;
pub mod bus;
pub mod config;
pub mod crypto;
pub mod event;
pub mod fetch;
pub mod job;
pub mod leader;
pub mod metrics;
pub mod models;
pub mod ops;
pub mod pool;
pub mod queue;
pub mod ratelimit;
pub mod secret;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod time;
pub mod upstream;

pub use secret::Secret;
