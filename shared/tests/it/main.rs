//! Integration tests of the shared crate against real backends (RabbitMQ, Redis,
//! PostgreSQL) and the simulator. One binary, one module per seam.

mod blob_conformance;
mod bus_conformance;
mod client_keys_conformance;
mod common;
mod fetch;
mod leader_conformance;
mod pool_conformance;
mod queue_conformance;
mod ratelimit;
mod store_conformance;
mod upstream_sim;
