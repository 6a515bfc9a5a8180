//! Storage seam: the traits the domain layers persist through, and their backends.
//!
//! Only this module knows a database. `queue/` talks to a [`JobStore`]; each backend implements the
//! job state machine's transitions as single atomic operations (a sled write batch here; a Lua
//! script per operation in a Redis backend). Backends are registered in one place, [`open_job_store`].

pub mod accounts;
pub mod chat;
pub mod codec;
pub mod sled;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use self::chat::ChatStore;
use crate::queue::model::{
    Added, Counts, FailOutcome, Job, JobPage, JobState, KeepJobs, Millis, NewJob, TakenJob,
};

/// Errors of the storage layer.
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
    /// token, unless the queue is paused. Not durable: after a crash the job is found active
    /// and recovered as stalled.
    async fn take(&self, queue: &str, now: Millis) -> Result<Option<TakenJob>, StoreError>;

    /// Moves delayed jobs that are due at `now` to `waiting`; returns their ids.
    async fn promote_due(&self, queue: &str, now: Millis) -> Result<Vec<String>, StoreError>;

    /// When the earliest delayed job becomes due.
    async fn next_due(&self, queue: &str) -> Result<Option<Millis>, StoreError>;

    /// Marks an active job `completed` (or removes it, as `keep` says) and trims the completed
    /// jobs to `keep`. Returns `false` (and changes nothing) when `token` no longer owns the job.
    async fn complete(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        return_value: String,
        keep: KeepJobs,
        now: Millis,
    ) -> Result<bool, StoreError>;

    /// Records a failed attempt of an active job: to `delayed` at `retry_at` (or straight to
    /// `waiting` when `retry_at <= now`) when given, else to `failed`, trimmed to `keep`.
    #[allow(clippy::too_many_arguments)]
    async fn fail(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        reason: String,
        stack: String,
        retry_at: Option<Millis>,
        keep: KeepJobs,
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

    /// At start-up: every job found active belonged to a dead process. Each goes back to
    /// `waiting` with a stall counted (or to `failed` past `max_stalled`); returns their ids.
    async fn recover_stalled(
        &self,
        queue: &str,
        max_stalled: u32,
        now: Millis,
    ) -> Result<Vec<String>, StoreError>;

    /// Makes every write so far durable.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Bytes the store occupies on disk, when known.
    fn size_on_disk(&self) -> Option<u64>;

    /// Resolves, with why, if the store fails in a way only a restart can mend (by default,
    /// never). Everything acknowledged before is durable; the server shuts down on it.
    async fn failed_for_good(&self) -> String {
        std::future::pending().await
    }

    /// What the store's write path has done since start-up, where the backend counts it.
    fn activity(&self) -> StoreActivity {
        StoreActivity::default()
    }

    /// Every commit's log write and sync time since start-up, in microseconds (`None` where a
    /// backend does not time its commits); the health monitor takes differences of two.
    fn commit_histogram(&self) -> Option<hdrhistogram::Histogram<u64>> {
        None
    }
}

/// Counters of a store's write path since start-up (for metrics; `None` where a backend does
/// not count that).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoreActivity {
    /// Durable commits: each one write of the log and one sync, shared by every operation that
    /// arrived while the previous one was on its way to disk.
    pub commits: Option<u64>,
    /// Checkpoints: the database flushed and synced, a log emptied.
    pub checkpoints: Option<u64>,
    /// Commits or checkpoints that failed.
    pub errors: Option<u64>,
    /// How long the commits' log writes and syncs took since start-up.
    pub commit_times: Option<CommitTimes>,
}

/// Percentiles of the time a commit's log write and sync took: the disk's share of the latency
/// of every durable operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommitTimes {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What `remove` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovedOutcome {
    Removed,
    NotFound,
    /// Active jobs are owned by a worker: cancel them first.
    Active,
}

/// Which job store to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobBackend {
    Sled,
}

/// Opens the configured job store; the one place backends are chosen.
pub fn open_job_store(
    backend: JobBackend,
    data_dir: &Path,
) -> Result<Arc<dyn JobStore>, StoreError> {
    match backend {
        JobBackend::Sled => {
            let db = sled::open_db(data_dir)?;
            Ok(Arc::new(sled::SledJobStore::open(&db)?))
        }
    }
}

/// The job store and the chat store of one process.
pub type Stores = (Arc<dyn JobStore>, Arc<dyn ChatStore>);

/// Opens both stores on one sled database under `data_dir` (sled allows one open `Db` per path,
/// so the job and chat stores must share it). Use this rather than [`open_job_store`] when the
/// process needs both.
pub fn open_stores(data_dir: &Path) -> Result<Stores, StoreError> {
    open_stores_with_cache(data_dir, sled::DEFAULT_CACHE_BYTES)
}

/// [`open_stores`] with sled's page cache at `cache_bytes`.
pub fn open_stores_with_cache(data_dir: &Path, cache_bytes: u64) -> Result<Stores, StoreError> {
    let db = sled::open_db_with_cache(data_dir, cache_bytes)?;
    let jobs = sled::SledJobStore::open(&db)?;
    let chat = sled::SledChatStore::open_beside(&db, &jobs)?;
    Ok((Arc::new(jobs), Arc::new(chat)))
}
