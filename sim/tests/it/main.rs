//! The simulator driven over real HTTP and WebSocket connections.

mod common;
mod faults;
mod quota;
mod rest;
mod session;
mod stats;
mod ws_gateway;
