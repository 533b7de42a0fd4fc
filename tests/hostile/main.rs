//! The reliability suite's second part: overload, upstream faults, hostile input and
//! secrets. Like the end-to-end tests, it runs the real `grok2api` binary on random ports
//! against the simulator, on both shapes, and drives it over HTTP and raw TCP.
//! Scenarios, promises and results: docs/RELIABILITY.md.

#[path = "../e2e/harness.rs"]
mod harness;

mod hostile_input;
mod overload;
mod probe;
mod secrets;
mod upstream_faults;
