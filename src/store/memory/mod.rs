//! Stores that keep everything in memory: for tests, `--ephemeral`, and as the reference model of
//! the conformance suite.

mod jobs;

pub use jobs::MemoryJobStore;
