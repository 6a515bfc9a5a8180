//! Stores that keep everything in memory: for tests, `--ephemeral`, and as the reference model of
//! the conformance suite.

mod chat;

pub use chat::MemoryChatStore;
