//! Storage seam: the traits the domain layers persist through, and their backends.
//!
//! Only this module knows a database. `queue/` talks to a [`JobStore`]; each backend implements the
//! job state machine's transitions as single atomic operations (a sled write batch here; a Lua
//! script per operation in a Redis backend). Backends are chosen in one place, [`open`].

pub mod accounts;
pub mod chat;
pub mod chat_groups;
pub mod codec;
pub(crate) mod groups;
pub mod job;
pub(crate) mod leases;
pub mod memory;
#[cfg(feature = "mongodb")]
pub mod mongodb;
#[cfg(feature = "redis")]
pub mod redis;
pub mod search;
pub mod sled;
pub mod stats;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use self::chat::ChatStore;
pub use self::stats::{CommitTimeLog, CommitTimes, StorageStats, StoreActivity};
pub use self::watch::WorkWatch;
use crate::store::job::{
    Added, Complete, Counts, Expired, Fail, FailOutcome, Job, JobPage, JobState, KeepJobs, Millis,
    NewJob, Take, TakeRequest,
};

/// The underlying error a [`StoreError`] keeps as its source (shared, so the error stays `Clone`).
pub type ErrorSource = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the storage layer.
///
/// Two kinds matter to callers: [`StoreError::Unavailable`] (and [`StoreError::Io`], a disk that
/// may recover) are "try again later" (HTTP 503 with Retry-After); the others are faults
/// (HTTP 500) or answers.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage i/o failed: {0}")]
    Io(String),
    #[error("stored record is unreadable: {0}")]
    Codec(String),
    #[error("storage is shutting down")]
    Closed,
    /// The write names an account that was deleted (a message still on its way when its sender
    /// or receiver was removed).
    #[error("the account {0} was deleted")]
    Deleted(String),
    /// The configuration asks for a backend this binary cannot open (built without its
    /// feature, or not implemented yet).
    #[error("{0}")]
    Unsupported(String),
    /// The backend cannot be reached right now (connection lost, failover, timeout): nothing was
    /// decided, the same call may succeed later.
    #[error("storage is unavailable: {message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<ErrorSource>,
    },
    /// The backend failed in a way retrying does not mend; `source` is what it reported.
    #[error("storage failed: {message}")]
    Fault {
        message: String,
        #[source]
        source: ErrorSource,
    },
}

impl StoreError {
    /// The backend is out of reach for now (see [`StoreError::Unavailable`]).
    pub fn unavailable(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::Unavailable {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// A fault of the backend, keeping what it reported as the source.
    pub fn fault(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> StoreError {
        StoreError::Fault {
            message: message.into(),
            source: Arc::new(source),
        }
    }

    /// Whether the same call may succeed later (answered 503 with Retry-After over HTTP).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Io(_) | StoreError::Closed | StoreError::Unavailable { .. }
        )
    }
}

impl From<::sled::Error> for StoreError {
    fn from(err: ::sled::Error) -> Self {
        StoreError::Io(err.to_string())
    }
}

/// What a clean-up removed.
pub type RemovedIds = Vec<String>;

/// The job state machine's atomic operations.
///
/// Rules every backend keeps:
/// - each method that changes state is one atomic write: after a crash at any instant every job
///   is in exactly one state and every index agrees with the job records;
/// - methods marked *durable* return only after their write is on disk; the others are ordered
///   before every later durable write, so a crash loses at most a suffix of them;
/// - a job being added becomes visible to `take` only once its add is durable;
/// - `now` is always passed in, so time is the engine's to decide (and tests control it).
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Adds jobs atomically (all or none) and durably. Delayed jobs (`delay_ms > 0`) go to
    /// `delayed`, others to `waiting`. A job whose `job_id` exists is not written; its current
    /// state is returned with `existed: true`.
    async fn add(
        &self,
        queue: &str,
        jobs: Vec<NewJob>,
        now: Millis,
    ) -> Result<Vec<Added>, StoreError>;

    /// Moves the first waiting job (by priority, then FIFO/LIFO order) to `active` with a new
    /// token and a lease until `now + request.lease_ms`, unless the queue is paused or the
    /// request's rate limit allows no more starts in its window ([`Take::RateLimited`]; a take
    /// that finds no job uses no slot). Not
    /// durable: after a crash the job is found active with no live lease, and the first
    /// [`JobStore::expire_leases`] recovers it as stalled.
    async fn take(
        &self,
        queue: &str,
        request: TakeRequest,
        now: Millis,
    ) -> Result<Take, StoreError>;

    /// Extends the lease of the attempt holding `token` to `until`. `false` (and nothing
    /// changes) when that attempt no longer owns the job (stalled, cancelled, finished).
    async fn renew(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        until: Millis,
    ) -> Result<bool, StoreError>;

    /// Takes every active job whose lease lapsed at `now` away from its worker: back to
    /// `waiting` with its stall counted, or to `failed` once it has stalled more than
    /// `max_stalled` times (durable). Active jobs with no live lease (left by a process that
    /// ended) count as lapsed. Returns what happened to each.
    async fn expire_leases(
        &self,
        queue: &str,
        now: Millis,
        max_stalled: u32,
    ) -> Result<Vec<Expired>, StoreError>;

    /// When the earliest lease of an active job lapses (a time in the past when one already
    /// has); `None` when no job is active.
    async fn next_lease_expiry(&self, queue: &str) -> Result<Option<Millis>, StoreError>;

    /// Moves delayed jobs that are due at `now` to `waiting`; returns their ids.
    async fn promote_due(&self, queue: &str, now: Millis) -> Result<Vec<String>, StoreError>;

    /// When the earliest delayed job becomes due.
    async fn next_due(&self, queue: &str) -> Result<Option<Millis>, StoreError>;

    /// Marks an active job `completed` (or removes it, as `keep` says) and trims the completed
    /// jobs to `keep`. Returns `false` (and changes nothing) when `token` no longer owns the job.
    async fn complete(
        &self,
        queue: &str,
        request: Complete,
        now: Millis,
    ) -> Result<bool, StoreError>;

    /// Records a failed attempt of an active job: to `delayed` at `retry_at` (or straight to
    /// `waiting` when `retry_at <= now`) when given, else to `failed`, trimmed to `keep`.
    async fn fail(
        &self,
        queue: &str,
        request: Fail,
        now: Millis,
    ) -> Result<FailOutcome, StoreError>;

    /// Takes an active job away from its worker: back to `waiting` with its stall counted, or to
    /// `failed` once it has stalled more than `max_stalled` times. `None` when the token is stale.
    async fn stall(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        max_stalled: u32,
        now: Millis,
    ) -> Result<Option<JobState>, StoreError>;

    /// Returns an active job to `waiting` without counting a stall or an attempt (shutdown).
    async fn release(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        now: Millis,
    ) -> Result<bool, StoreError>;

    /// Whether the attempt holding `token` still owns the job (it is active under that token).
    async fn owns(&self, queue: &str, id: &str, token: u64) -> Result<bool, StoreError>;

    /// Durably fails an active job now (cancel); its worker's token becomes stale.
    async fn force_fail(
        &self,
        queue: &str,
        id: &str,
        reason: String,
        now: Millis,
    ) -> Result<bool, StoreError>;

    /// Records progress (JSON text) of an active job. Not durable: a backend may keep it in
    /// memory until the job's next transition writes the job's status.
    async fn progress(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        progress: String,
    ) -> Result<bool, StoreError>;

    /// Appends a log line to a job.
    async fn log(&self, queue: &str, id: &str, line: String) -> Result<bool, StoreError>;

    async fn logs(&self, queue: &str, id: &str) -> Result<Vec<String>, StoreError>;

    async fn get(&self, queue: &str, id: &str) -> Result<Option<Job>, StoreError>;

    async fn counts(&self, queue: &str) -> Result<Counts, StoreError>;

    /// Jobs in `state`, newest first, with the number of jobs in that state.
    async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> Result<JobPage, StoreError>;

    /// Moves one failed job back to `waiting` with fresh attempts (durable).
    async fn retry(&self, queue: &str, id: &str, now: Millis) -> Result<bool, StoreError>;

    /// Retries every failed job (durable); returns how many.
    async fn retry_all_failed(&self, queue: &str, now: Millis) -> Result<u64, StoreError>;

    /// Moves one delayed job to `waiting` now (durable).
    async fn promote(&self, queue: &str, id: &str, now: Millis) -> Result<bool, StoreError>;

    /// Removes a job that is not active, with its logs (durable).
    async fn remove(&self, queue: &str, id: &str) -> Result<RemovedOutcome, StoreError>;

    /// Removes up to `limit` jobs in `state` that entered it at least `grace_ms` ago (durable).
    async fn clean(
        &self,
        queue: &str,
        state: JobState,
        grace_ms: u64,
        limit: u64,
        now: Millis,
    ) -> Result<RemovedIds, StoreError>;

    /// Removes every waiting (and, when asked, delayed) job (durable).
    async fn drain(&self, queue: &str, include_delayed: bool) -> Result<u64, StoreError>;

    /// Trims finished jobs to the given retention (durable); returns how many were removed.
    async fn trim(
        &self,
        queue: &str,
        keep_completed: KeepJobs,
        keep_failed: KeepJobs,
        now: Millis,
    ) -> Result<u64, StoreError>;

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError>;

    async fn is_paused(&self, queue: &str) -> Result<bool, StoreError>;

    /// When the longest-waiting job entered `waiting`.
    async fn oldest_waiting(&self, queue: &str) -> Result<Option<Millis>, StoreError>;

    /// The wake-up signal of `queue`: it fires when a job may have become takeable there, by
    /// whichever handle or instance caused it (see [`WorkWatch`]; the Redis backend publishes on a
    /// channel per queue after each such transition and wakes its local waiters from one
    /// subscriber task). In process, an add is signalled by the engine that made it, after it
    /// announced the job.
    fn watch(&self, queue: &str) -> WorkWatch;

    /// Makes every write so far durable.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Resolves, with why, if the store fails in a way only a restart can mend (by default,
    /// never). Everything acknowledged before is durable; the server shuts down on it.
    async fn failed_for_good(&self) -> String {
        std::future::pending().await
    }

    /// The backend's statistics and health signals, if it keeps any (see [`StorageStats`]).
    fn stats(&self) -> Option<&dyn StorageStats> {
        None
    }
}

/// What `remove` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovedOutcome {
    Removed,
    NotFound,
    /// Active jobs are owned by a worker: cancel them first.
    Active,
}

/// Where the job queues live.
#[derive(Clone, PartialEq, Eq)]
pub enum JobBackend {
    /// The embedded database under [`StoreConfig::data_dir`].
    Sled,
    /// Process memory: nothing is written, everything is gone when the process ends.
    Memory,
    /// A Redis server (needs the `redis` cargo feature), as a `redis://[:password@]host:port/db`
    /// or `rediss://` URL; it may hold a password.
    Redis { url: String },
}

impl std::fmt::Debug for JobBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobBackend::Sled => f.write_str("Sled"),
            JobBackend::Memory => f.write_str("Memory"),
            JobBackend::Redis { url } => f
                .debug_struct("Redis")
                .field("url", &redact_url(url))
                .finish(),
        }
    }
}

/// `url` with its password (between `:` and `@` after the scheme) replaced, for logs.
pub fn redact_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|at| at + 3) else {
        return url.to_owned();
    };
    let rest = &url[start..];
    match rest.rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or_default();
            format!("{}{}:<redacted>@{}", &url[..start], user, &rest[at + 1..])
        }
        None => url.to_owned(),
    }
}

/// Where users, conversations and messages live.
#[derive(Clone, PartialEq, Eq)]
pub enum ChatBackend {
    /// The embedded database under [`StoreConfig::data_dir`].
    Sled,
    /// Process memory: nothing is written, everything is gone when the process ends.
    Memory,
    /// A MongoDB deployment (needs the `mongodb` cargo feature); the URI may hold credentials.
    Mongodb { uri: String },
}

impl std::fmt::Debug for ChatBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChatBackend::Sled => f.write_str("Sled"),
            ChatBackend::Memory => f.write_str("Memory"),
            ChatBackend::Mongodb { .. } => f.write_str("Mongodb { uri: <redacted> }"),
        }
    }
}

/// What [`open`] opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The folder of the embedded database (used when either store is on sled).
    pub data_dir: PathBuf,
    /// sled's page cache.
    pub cache_bytes: u64,
    pub jobs: JobBackend,
    pub chat: ChatBackend,
    /// Whether the chat store indexes messages for search (`SEARCH_INDEX`; sled only: the
    /// memory store always does).
    pub search_index: bool,
}

impl StoreConfig {
    /// Both stores in memory: nothing touches `data_dir`.
    pub fn memory() -> StoreConfig {
        StoreConfig {
            data_dir: PathBuf::new(),
            cache_bytes: 0,
            jobs: JobBackend::Memory,
            chat: ChatBackend::Memory,
            search_index: true,
        }
    }

    /// Both stores on sled under `data_dir`, with the default cache.
    pub fn sled(data_dir: impl AsRef<Path>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.as_ref().to_path_buf(),
            cache_bytes: sled::DEFAULT_CACHE_BYTES,
            jobs: JobBackend::Sled,
            chat: ChatBackend::Sled,
            search_index: true,
        }
    }
}

/// The job store and the chat store of one process.
#[derive(Clone)]
pub struct Stores {
    pub jobs: Arc<dyn JobStore>,
    pub chat: Arc<dyn ChatStore>,
}

/// Opens the configured stores: the one place backends are chosen, used by the server, the
/// tests and the examples alike. Blocking (a sled open replays its log): call it from
/// `spawn_blocking` in async code.
///
/// A backend this binary was built without, or one that does not exist yet, is
/// [`StoreError::Unsupported`]: a setting to fix, not a fault to retry.
pub fn open(config: &StoreConfig) -> Result<Stores, StoreError> {
    // sled allows one open `Db` per path: both sled stores share it (and its commit thread).
    let mut database: Option<sled::Database> = None;
    let mut sled_database = || -> Result<sled::Database, StoreError> {
        if let Some(open) = &database {
            return Ok(open.clone());
        }
        let open = sled::open_db_with_cache(&config.data_dir, config.cache_bytes)?;
        database = Some(open.clone());
        Ok(open)
    };
    let jobs: Arc<dyn JobStore> = match &config.jobs {
        JobBackend::Sled => Arc::new(sled::SledJobStore::open(&sled_database()?)?),
        JobBackend::Memory => Arc::new(memory::MemoryJobStore::new()),
        JobBackend::Redis { .. } => open_redis(&config.jobs)?,
    };
    let chat: Arc<dyn ChatStore> = match &config.chat {
        ChatBackend::Sled => Arc::new(sled::SledChatStore::open(
            &sled_database()?,
            config.search_index,
        )?),
        ChatBackend::Memory => Arc::new(memory::MemoryChatStore::new()),
        ChatBackend::Mongodb { uri } => open_mongodb(uri)?,
    };
    Ok(Stores { jobs, chat })
}

#[cfg(feature = "redis")]
fn open_redis(backend: &JobBackend) -> Result<Arc<dyn JobStore>, StoreError> {
    redis::open(backend)
}

#[cfg(not(feature = "redis"))]
fn open_redis(_backend: &JobBackend) -> Result<Arc<dyn JobStore>, StoreError> {
    Err(StoreError::Unsupported(
        "QUEUE_BACKEND=redis needs a courier built with the `redis` cargo feature \
         (cargo build --release --features redis)"
            .to_owned(),
    ))
}

#[cfg(feature = "mongodb")]
fn open_mongodb(uri: &str) -> Result<Arc<dyn ChatStore>, StoreError> {
    mongodb::open(uri)
}

#[cfg(not(feature = "mongodb"))]
fn open_mongodb(_uri: &str) -> Result<Arc<dyn ChatStore>, StoreError> {
    Err(StoreError::Unsupported(
        "CHAT_BACKEND=mongodb needs a courier built with the `mongodb` cargo feature \
         (cargo build --release --features mongodb)"
            .to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Memory stores open with no database and no folder.
    #[tokio::test]
    async fn memory_stores_touch_no_disk() {
        let stores = open(&StoreConfig::memory()).unwrap();
        assert!(stores.jobs.stats().is_none());
        assert_eq!(stores.chat.message_count().await.unwrap(), 0);
        assert!(stores.jobs.counts("q").await.is_ok());
        assert!(!std::path::Path::new("db").exists());
    }

    #[test]
    fn a_redis_password_never_reaches_a_log() {
        assert_eq!(
            redact_url("redis://:secret@host:6379/2"),
            "redis://:<redacted>@host:6379/2"
        );
        assert_eq!(
            redact_url("rediss://user:secret@host/0"),
            "rediss://user:<redacted>@host/0"
        );
        assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
    }

    /// No fallback: a backend this build cannot open (or cannot reach) is refused before
    /// anything is opened.
    #[test]
    fn a_backend_this_build_cannot_open_is_unsupported() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::sled(dir.path());
        config.jobs = JobBackend::Redis {
            url: "redis://:secret@127.0.0.1:1/0".to_owned(),
        };
        // With the feature the store opens only a server that answers: nothing listens on
        // port 1, which is "unavailable", named without its password.
        let message = match open(&config) {
            Err(StoreError::Unsupported(message)) if !cfg!(feature = "redis") => message,
            Err(err @ StoreError::Unavailable { .. }) if cfg!(feature = "redis") => err.to_string(),
            Err(err) => panic!("unexpected error {err:?}"),
            Ok(_) => panic!("a Redis job store opened"),
        };
        let expected = if cfg!(feature = "redis") {
            "cannot reach Redis at redis://:<redacted>@127.0.0.1:1/0"
        } else {
            "`redis` cargo feature"
        };
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains("secret"), "{message}");
        assert!(!format!("{config:?}").contains("secret"));

        let mut config = StoreConfig::sled(dir.path());
        config.chat = ChatBackend::Mongodb {
            uri: "mongodb://user:secret@127.0.0.1:1/chat".to_owned(),
        };
        let Err(StoreError::Unsupported(message)) = open(&config) else {
            panic!("a MongoDB chat store opened");
        };
        let expected = if cfg!(feature = "mongodb") {
            "not implemented yet"
        } else {
            "`mongodb` cargo feature"
        };
        assert!(message.contains(expected), "{message}");
        assert!(!format!("{config:?}").contains("secret"));
    }
}
