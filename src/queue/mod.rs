//! Durable job queues with Bull's semantics.

pub mod model;
