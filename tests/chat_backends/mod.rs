//! The chat store backends the conformance suite (`chat_store.rs`, `account_store.rs`) runs on,
//! and the macro that runs each test on every one of them.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use courier::store::chat::{ChatStore, CreateUser, UserRecord};
use courier::store::memory::MemoryChatStore;
use courier::store::{self, StoreConfig, StoreError, Stores};

/// A user record for the suite: the name and address follow from `id`, created at `at`.
pub fn user(id: &str, at: u64) -> UserRecord {
    UserRecord {
        id: id.to_owned(),
        full_name: format!("User {id}"),
        email: format!("{id}@example.com"),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        profile_pic: String::new(),
        created_at: at,
        updated_at: at,
    }
}

/// A fresh store of `backend` in `dir` with the users `ada`, `bob` and `cy`.
pub async fn open_with_users(backend: Backend, dir: &Path, at: u64) -> Arc<dyn ChatStore> {
    let store = backend.open(dir).await;
    for id in ["ada", "bob", "cy"] {
        assert_eq!(
            store.create_user(user(id, at)).await.unwrap(),
            CreateUser::Created
        );
    }
    store
}

/// A chat store backend under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Sled,
}

impl Backend {
    /// A fresh store; sled's lives in `dir` (memory ignores it).
    pub async fn open(self, dir: &Path) -> Arc<dyn ChatStore> {
        match self {
            Backend::Memory => Arc::new(MemoryChatStore::new()),
            Backend::Sled => open_sled(dir).await.expect("open the sled stores").chat,
        }
    }

    /// A restart of the process: sled's store is dropped and `dir` opened again (the caller
    /// must hold no other handle to it). Memory keeps nothing across a restart, so for it this
    /// is the same store: what a test checks after a reopen still holds (nothing was lost), and
    /// durability itself is checked on sled only.
    pub async fn reopen(self, store: Arc<dyn ChatStore>, dir: &Path) -> Arc<dyn ChatStore> {
        match self {
            Backend::Memory => store,
            Backend::Sled => {
                drop(store);
                self.open(dir).await
            }
        }
    }
}

/// Opens both sled stores of `dir`. sled 0.34 releases its file lock from background threads a
/// moment after the last `Db` handle goes, so a same-process reopen waits out that window (up
/// to ~3 s).
pub async fn open_sled(dir: &Path) -> Result<Stores, StoreError> {
    let mut attempts = 0;
    loop {
        match store::open(&StoreConfig::sled(dir)) {
            Ok(stores) => return Ok(stores),
            Err(StoreError::Io(message))
                if message.contains("could not acquire lock") && attempts < 300 =>
            {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// Runs each listed test — an `async fn name(backend: Backend)` of the calling file — on every
/// backend, as `memory::name` and `sled::name`, so a failure names its backend. Each entry is
/// the test's attribute and its name:
///
/// ```ignore
/// on_every_backend! {
///     #[tokio::test] users_are_listed_oldest_first;
/// }
/// ```
macro_rules! on_every_backend {
    ($( #[$attr:meta] $name:ident; )*) => {
        mod memory {
            $(
                #[$attr]
                async fn $name() {
                    super::$name($crate::chat_backends::Backend::Memory).await
                }
            )*
        }
        mod sled {
            $(
                #[$attr]
                async fn $name() {
                    super::$name($crate::chat_backends::Backend::Sled).await
                }
            )*
        }
    };
}
