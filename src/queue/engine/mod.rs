//! The queue engine: named queues over a [`JobStore`], with workers, a timer and retention.
//!
//! Each registered queue runs three kinds of tasks once started:
//! - `concurrency` workers that take the next job, run its processor and record the outcome;
//!   an idle worker sleeps on its queue's [`WorkWatch`], which the store signals whenever a job
//!   may have become takeable (by any handle or instance on the store); it looks again without
//!   a signal only when the store says its signals can be lost, or `idle_recheck_ms` says so;
//! - one timer that sleeps until the next delayed job is due or the next lease expires (never
//!   polling), promotes due jobs and asks the store to expire lapsed leases;
//! - one retention task that trims finished jobs to the queue's defaults.
//!
//! The engine holds no job state of its own beyond the cancel handles of the jobs running in this
//! process: leases, rate windows and every transition are calls to the store, which is the truth.
//!
//! Here: the configuration, the processor interface and [`QueueManager`]; `handle` holds
//! [`Queue`], `worker` the workers, `timers` the timer and the retention task.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use parking_lot::{Mutex, RwLock};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::clock::Clock;
use super::error::QueueError;
use super::events::{EventHub, EventKind, QueueEvent};
use super::metrics::{MetricsSnapshot, QueueMetrics};
use super::model::{
    Added, Complete, Counts, Expired, Fail, FailOutcome, GroupLimits, Job, JobOptions, JobPage,
    JobState, KeepJobs, Millis, NewJob, Take, TakeRequest, TakenJob,
};
use super::options;
use crate::store::{JobStore, RemovedOutcome, WorkWatch};

mod handle;
mod timers;
mod worker;

pub use self::handle::Queue;
use self::timers::{retention, timer};
use self::worker::worker;

/// Longest job name accepted.
pub const MAX_NAME_LEN: usize = 128;
/// Default limit on a job's data (JSON text).
pub const DEFAULT_MAX_DATA_BYTES: usize = 1024 * 1024;
/// Processor key that handles job names without a processor of their own.
pub const ANY_NAME: &str = "*";

pub use super::model::RateLimit;

/// How one queue runs.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub name: String,
    pub concurrency: usize,
    pub rate_limit: Option<RateLimit>,
    /// At most this many jobs of one group (`JobOptions::group`) run at once, across every
    /// worker and instance on the store; `None`: any number. Groups take turns either way.
    pub group_concurrency: Option<u32>,
    /// Each group's own limit on job starts (on top of `rate_limit`).
    pub group_rate_limit: Option<RateLimit>,
    /// How long a running job's lease lasts without renewal before it counts as stalled.
    pub lease_ms: u64,
    /// Stalls allowed before a job fails (Bull's `maxStalledCount`).
    pub max_stalled_count: u32,
    /// Retention for jobs that do not say (`removeOnComplete` / `removeOnFail` unset).
    pub keep_completed: KeepJobs,
    pub keep_failed: KeepJobs,
    pub max_data_bytes: usize,
    /// How often finished jobs are trimmed to the defaults above.
    pub retention_interval_ms: u64,
    /// How long an idle worker (and the timer) sleeps without a wake-up before it looks again.
    /// `None` follows the store ([`WorkWatch::recheck_after`]: never for the in-process
    /// stores, whose signals cannot be lost; a shared store's interval otherwise).
    pub idle_recheck_ms: Option<u64>,
}

impl QueueConfig {
    pub fn new(name: impl Into<String>) -> QueueConfig {
        QueueConfig {
            name: name.into(),
            concurrency: 1,
            rate_limit: None,
            group_concurrency: None,
            group_rate_limit: None,
            lease_ms: 30_000,
            max_stalled_count: 1,
            keep_completed: KeepJobs::ALL,
            keep_failed: KeepJobs::ALL,
            max_data_bytes: DEFAULT_MAX_DATA_BYTES,
            retention_interval_ms: 5_000,
            idle_recheck_ms: None,
        }
    }
}

/// Why a job attempt failed: a message and the chain of causes (or the panic message).
#[derive(Debug, Clone, PartialEq)]
pub struct JobFailure {
    pub message: String,
    pub chain: Vec<String>,
}

impl JobFailure {
    pub fn msg(message: impl Into<String>) -> JobFailure {
        let message = message.into();
        JobFailure {
            chain: vec![message.clone()],
            message,
        }
    }

    /// The failure as stored: each cause on its own line.
    pub fn stack(&self) -> String {
        self.chain.join("\n  caused by: ")
    }
}

impl<E: std::error::Error> From<E> for JobFailure {
    fn from(err: E) -> JobFailure {
        let mut chain = vec![err.to_string()];
        let mut source = err.source();
        while let Some(cause) = source {
            chain.push(cause.to_string());
            source = cause.source();
        }
        JobFailure {
            message: err.to_string(),
            chain,
        }
    }
}

pub type JobResult = Result<Value, JobFailure>;
pub type ProcessorFuture = Pin<Box<dyn Future<Output = JobResult> + Send>>;

/// Runs jobs of one name. Any `Fn(JobContext) -> impl Future<Output = JobResult>` is one.
pub trait Processor: Send + Sync + 'static {
    fn process(&self, job: JobContext) -> ProcessorFuture;
}

impl<F, Fut> Processor for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = JobResult> + Send + 'static,
{
    fn process(&self, job: JobContext) -> ProcessorFuture {
        Box::pin(self(job))
    }
}

/// What a processor sees of its job.
pub struct JobContext {
    queue: Arc<QueueShared>,
    pub id: String,
    pub name: String,
    /// The job's data as JSON text.
    pub data: String,
    /// Attempts finished before this one.
    pub attempts_made: u32,
    token: u64,
}

impl JobContext {
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, JobFailure> {
        serde_json::from_str(&self.data).map_err(JobFailure::from)
    }

    /// Reports progress (any JSON, usually a percentage); stale attempts are ignored.
    pub async fn progress(&self, progress: Value) -> Result<(), JobFailure> {
        let text = progress.to_string();
        let recorded = self
            .queue
            .store
            .progress(&self.queue.name, &self.id, self.token, text.clone())
            .await?;
        if recorded {
            self.queue
                .publish(EventKind::Progress, Some(&self.id), Some(text));
        }
        Ok(())
    }

    /// Appends a line to the job's log.
    pub async fn log(&self, line: impl Into<String>) -> Result<(), JobFailure> {
        self.queue
            .store
            .log(&self.queue.name, &self.id, line.into())
            .await?;
        Ok(())
    }

    pub fn queue_name(&self) -> &str {
        &self.queue.name
    }
}

/// An attempt running in this process: how to stop it when the store takes the job away.
/// (Its lease deadline lives in the store, so any instance's timer can expire it.)
struct Running {
    token: u64,
    cancel: Arc<Notify>,
}

struct QueueShared {
    name: Arc<str>,
    config: QueueConfig,
    store: Arc<dyn JobStore>,
    hub: Arc<dyn EventHub>,
    clock: Clock,
    metrics: QueueMetrics,
    processors: RwLock<HashMap<String, Arc<dyn Processor>>>,
    /// The store's wake-up for this queue: wakes one idle worker (of any instance); a worker that
    /// takes a job while more wait passes it on.
    work: WorkWatch,
    /// Wakes the timer when a new delayed job may be due earlier than it planned.
    timer_wake: Notify,
    running: Mutex<HashMap<Arc<str>, Running>>,
    /// Stop taking new jobs.
    stop: CancellationToken,
    /// Abandon running jobs (after the shutdown grace period).
    abandon: CancellationToken,
    tasks: TaskTracker,
    started: Mutex<bool>,
}

impl QueueShared {
    /// Forgets the attempt holding `token` (a later attempt of the same job stays).
    fn end_running(&self, id: &str, token: u64) {
        let mut running = self.running.lock();
        if running
            .get(id)
            .is_some_and(|attempt| attempt.token == token)
        {
            running.remove(id);
        }
    }

    /// Stops the attempt of `id` running here, if any (cancelled, or its lease expired).
    fn stop_running(&self, id: &str) {
        if let Some(attempt) = self.running.lock().remove(id) {
            attempt.cancel.notify_one();
        }
    }

    /// Reports jobs whose lease lapsed, which the store moved on, and stops any running here.
    fn expired(&self, expired: &[Expired], now: Millis) {
        for job in expired {
            self.stop_running(&job.id);
            tracing::warn!(queue = %self.name, job = %job.id, "job stalled: its worker stopped renewing the lease");
            self.metrics.record_stalled(now);
            self.publish(EventKind::Stalled, Some(&job.id), None);
            if job.state == JobState::Failed {
                self.metrics.record_failed(now, 0, true);
                self.publish(
                    EventKind::Failed,
                    Some(&job.id),
                    Some("job stalled more than allowable limit".to_owned()),
                );
            }
        }
    }

    /// How long an idle worker or timer waits for a wake-up before it looks anyway.
    fn recheck_after(&self) -> Option<Duration> {
        match self.config.idle_recheck_ms {
            Some(ms) => Some(Duration::from_millis(ms.max(1))),
            None => self.work.recheck_after(),
        }
    }

    /// How long a lease lasts before its worker must renew it.
    fn lease_ms(&self) -> u64 {
        self.config.lease_ms.max(2)
    }

    fn publish(&self, kind: EventKind, job_id: Option<&str>, detail: Option<String>) {
        self.hub.publish(QueueEvent {
            queue: self.name.clone(),
            kind,
            job_id: job_id.map(Arc::from),
            detail,
        });
    }

    fn processor_for(&self, name: &str) -> Option<Arc<dyn Processor>> {
        let processors = self.processors.read();
        processors
            .get(name)
            .or_else(|| processors.get(ANY_NAME))
            .cloned()
    }

    fn keep_completed(&self, opts: &JobOptions) -> KeepJobs {
        opts.remove_on_complete
            .unwrap_or(self.config.keep_completed)
    }

    fn keep_failed(&self, opts: &JobOptions) -> KeepJobs {
        opts.remove_on_fail.unwrap_or(self.config.keep_failed)
    }
}

/// Every queue of the application, over one store and one event hub.
#[derive(Clone)]
pub struct QueueManager {
    store: Arc<dyn JobStore>,
    hub: Arc<dyn EventHub>,
    clock: Clock,
    queues: Arc<RwLock<Vec<Queue>>>,
    started: Arc<Mutex<bool>>,
}

impl QueueManager {
    pub fn new(store: Arc<dyn JobStore>, hub: Arc<dyn EventHub>) -> QueueManager {
        QueueManager::with_clock(store, hub, Clock::new())
    }

    /// A manager whose clock reads `start` (epoch milliseconds) now, instead of the wall clock:
    /// for simulations that restart the engine and need time to go on from where it was, the
    /// same on every run (see tests/queue_simulation.rs).
    pub fn starting_at(
        store: Arc<dyn JobStore>,
        hub: Arc<dyn EventHub>,
        start: Millis,
    ) -> QueueManager {
        QueueManager::with_clock(store, hub, Clock::starting_at(start))
    }

    fn with_clock(store: Arc<dyn JobStore>, hub: Arc<dyn EventHub>, clock: Clock) -> QueueManager {
        QueueManager {
            store,
            hub,
            clock,
            queues: Arc::new(RwLock::new(Vec::new())),
            started: Arc::new(Mutex::new(false)),
        }
    }

    /// Registers a queue and recovers the jobs a previous process left active (stalled).
    pub async fn register(&self, config: QueueConfig) -> Result<Queue, QueueError> {
        if !valid_queue_name(&config.name) {
            return Err(QueueError::InvalidOptions(format!(
                "queue name {:?} must be 1 to 64 of a-z, 0-9, - and _",
                config.name
            )));
        }
        if self
            .queues
            .read()
            .iter()
            .any(|queue| queue.name() == config.name)
        {
            return Err(QueueError::AlreadyRegistered(config.name));
        }
        let name: Arc<str> = Arc::from(config.name.as_str());
        let shared = Arc::new(QueueShared {
            name: name.clone(),
            store: self.store.clone(),
            hub: self.hub.clone(),
            clock: self.clock,
            metrics: QueueMetrics::new(),
            processors: RwLock::new(HashMap::new()),
            work: self.store.watch(&name),
            timer_wake: Notify::new(),
            running: Mutex::new(HashMap::new()),
            stop: CancellationToken::new(),
            abandon: CancellationToken::new(),
            tasks: TaskTracker::new(),
            started: Mutex::new(false),
            config,
        });
        // Jobs left active by a process that ended hold no live lease: expire them now, so a
        // restart requeues them before the first worker runs.
        let now = self.clock.now();
        let stalled = shared
            .store
            .expire_leases(&name, now, shared.config.max_stalled_count)
            .await?;
        if !stalled.is_empty() {
            tracing::warn!(queue = %name, count = stalled.len(), "recovered jobs left active by a previous run");
        }
        for job in &stalled {
            shared.metrics.record_stalled(now);
            shared.publish(EventKind::Stalled, Some(&job.id), None);
        }
        let queue = Queue { shared };
        self.queues.write().push(queue.clone());
        if *self.started.lock() {
            queue.start();
        }
        Ok(queue)
    }

    pub fn queue(&self, name: &str) -> Result<Queue, QueueError> {
        self.queues
            .read()
            .iter()
            .find(|queue| queue.name() == name)
            .cloned()
            .ok_or_else(|| QueueError::UnknownQueue(name.to_owned()))
    }

    pub fn queues(&self) -> Vec<Queue> {
        self.queues.read().clone()
    }

    pub fn hub(&self) -> &Arc<dyn EventHub> {
        &self.hub
    }

    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.store
    }

    /// Starts the workers of every queue (registered now or later).
    pub fn start(&self) {
        *self.started.lock() = true;
        for queue in self.queues.read().iter() {
            queue.start();
        }
    }

    /// Stops taking jobs, gives running jobs `grace` to finish, returns the rest to `waiting`,
    /// and flushes the store.
    pub async fn shutdown(&self, grace: Duration) -> Result<(), QueueError> {
        let queues = self.queues();
        for queue in &queues {
            queue.shared.stop.cancel();
            queue.shared.tasks.close();
        }
        let deadline = Instant::now() + grace;
        for queue in &queues {
            if tokio::time::timeout_at(deadline, queue.shared.tasks.wait())
                .await
                .is_err()
            {
                tracing::warn!(queue = %queue.name(), "jobs still running after the grace period: returning them to waiting");
            }
        }
        for queue in &queues {
            queue.shared.abandon.cancel();
            queue.shared.tasks.wait().await;
            // Processors often hold what holds this manager; dropping them breaks that cycle so
            // the store can close.
            queue.shared.processors.write().clear();
        }
        self.store.flush().await?;
        Ok(())
    }
}

fn valid_queue_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
