//! Durable job queues with Bull's semantics over a [`crate::store::JobStore`].
//!
//! `model` is the plain data (states, options, records), owned by the store (`store::job`) whose
//! contract it is and re-exported here; `options` parses Bull-style JSON options;
//! `engine` runs queues (workers, timer, retention); `events` and `metrics` are what the outside
//! world observes. Nothing here imports a web framework or a database crate.

pub mod clock;
pub mod engine;
pub mod error;
pub mod events;
pub mod metrics;
pub use crate::store::job as model;
pub mod options;

pub use engine::{
    JobContext, JobFailure, JobResult, Processor, Queue, QueueConfig, QueueManager, RateLimit,
    ANY_NAME,
};
pub use error::QueueError;
pub use events::{EventHub, EventKind, LocalHub, QueueEvent};
