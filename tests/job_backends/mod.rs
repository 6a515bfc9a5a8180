//! The job store backends the conformance tests run on, and the macro that runs a test on each.
//!
//! A test is written once, as a function of a [`Backend`]; `on_every_backend!` makes a test of
//! it per backend, `memory::name` and `sled::name`, so a failure names its backend. Restarts and
//! everything about durability (what survives a reopen) are for sled alone: a memory store lives
//! and dies with its process.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use courier::store::memory::MemoryJobStore;
use courier::store::{self, JobStore, StoreConfig, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sled,
}

impl Backend {
    /// A fresh job store; sled's lives in `dir`, memory ignores it.
    pub fn open(self, dir: &Path) -> Result<Arc<dyn JobStore>, StoreError> {
        match self {
            Backend::Memory => Ok(Arc::new(MemoryJobStore::new())),
            Backend::Sled => store::open(&StoreConfig::sled(dir)).map(|stores| stores.jobs),
        }
    }

    /// Whether what the store holds outlives the store (a restart finds it again).
    pub fn is_durable(self) -> bool {
        match self {
            Backend::Memory => false,
            Backend::Sled => true,
        }
    }
}

/// For each listed test function `name(backend: Backend)`, a test `memory::name` and a test
/// `sled::name` carrying the given attributes. List `fn name;` for a plain function and
/// `async fn name;` for one to await (under an async test attribute such as `#[tokio::test]`).
macro_rules! on_every_backend {
    (@tests $backend:ident;) => {};
    (@tests $backend:ident; $(#[$attr:meta])* async fn $name:ident; $($rest:tt)*) => {
        $(#[$attr])*
        async fn $name() {
            super::$name(super::Backend::$backend).await
        }
        on_every_backend!(@tests $backend; $($rest)*);
    };
    (@tests $backend:ident; $(#[$attr:meta])* fn $name:ident; $($rest:tt)*) => {
        $(#[$attr])*
        fn $name() {
            super::$name(super::Backend::$backend)
        }
        on_every_backend!(@tests $backend; $($rest)*);
    };
    ($($tests:tt)*) => {
        mod memory {
            on_every_backend!(@tests Memory; $($tests)*);
        }
        mod sled {
            on_every_backend!(@tests Sled; $($tests)*);
        }
    };
}
