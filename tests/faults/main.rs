//! The reliability fault suite: the distributed shape (two gateways and two workers on
//! RabbitMQ, Redis, PostgreSQL and S3, the simulator upstream) under process and
//! dependency faults. Backends are reached through the suite's own TCP fault proxy, so the
//! shared servers themselves are never touched. Each scenario is described in
//! docs/RELIABILITY.md.

#[path = "../e2e/harness.rs"]
mod harness;
mod proxy;
mod resume;
mod support;

mod cancel;
mod dependencies;
mod drain;
mod poison;
mod worker_kill;
