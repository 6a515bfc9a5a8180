//! Stores that keep everything in memory: for tests, `--ephemeral`, and as the reference model of
//! the conformance suite.

mod chat;
mod jobs;

pub use chat::MemoryChatStore;
pub use jobs::MemoryJobStore;
