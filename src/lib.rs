//! Courier: a chat server with durable job queues, in one binary.
//!
//! Layers, outermost first (data flows down, events flow back up through the queue's hub):
//! - `http` — axum routes, wire (serde) types, the API error mapping;
//! - `queue` — job options, the state machine's engine, scheduler, workers, events, metrics;
//! - `store` — storage traits and their backends (sled by default).
//!
//! `config` parses settings; `data_dir` keeps the data directory private; `jobs` names the application queues; `server` wires the layers
//! together and runs until shutdown; `testing` starts that whole server inside a Rust test, on
//! memory stores and a free port.

pub mod alerts;
pub mod alloc;
pub mod chat;
pub mod config;
pub mod data_dir;
pub mod http;
pub mod jobs;
pub mod queue;
pub mod server;
#[cfg(feature = "socketio")]
pub mod socketio;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod time;
pub mod ws;
