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
    /// `None` follows the store ([`WorkWatch::recheck_after`]: never for memory and sled, whose
    /// signals cannot be lost; a shared store's interval otherwise).
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

/// A handle to one queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    shared: Arc<QueueShared>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl Queue {
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn config(&self) -> &QueueConfig {
        &self.shared.config
    }

    /// Registers the processor for jobs called `name` ([`ANY_NAME`] for every other name).
    pub fn process(&self, name: &str, processor: impl Processor) {
        self.shared
            .processors
            .write()
            .insert(name.to_owned(), Arc::new(processor));
        // Jobs may wait for this processor: a local event the store knows nothing of.
        self.shared.work.wake();
    }

    fn check(&self, job: &NewJob) -> Result<(), QueueError> {
        if job.name.is_empty() || job.name.len() > MAX_NAME_LEN {
            return Err(QueueError::InvalidOptions(format!(
                "job name must be 1 to {MAX_NAME_LEN} bytes"
            )));
        }
        if job.data.len() > self.shared.config.max_data_bytes {
            return Err(QueueError::DataTooLarge {
                size: job.data.len(),
                limit: self.shared.config.max_data_bytes,
            });
        }
        options::validate(&job.opts)
    }

    /// Adds one job; returns once it is durable.
    pub async fn add(
        &self,
        name: &str,
        data: &Value,
        opts: JobOptions,
    ) -> Result<Added, QueueError> {
        let job = NewJob {
            name: name.to_owned(),
            data: data.to_string(),
            opts,
        };
        let mut added = self.add_bulk(vec![job]).await?;
        added
            .pop()
            .ok_or_else(|| QueueError::InvalidOptions("no job was added".to_owned()))
    }

    /// Adds jobs as one atomic, durable batch: all of them or none.
    pub async fn add_bulk(&self, jobs: Vec<NewJob>) -> Result<Vec<Added>, QueueError> {
        if self.shared.stop.is_cancelled() {
            return Err(QueueError::ShuttingDown);
        }
        for job in &jobs {
            self.check(job)?;
        }
        let shared = self.shared.clone();
        // The add and its wake-ups run in their own task, so a caller that gives up waiting
        // (a dropped HTTP request) cannot leave a durable job unannounced.
        let task = tokio::spawn(async move {
            let now = shared.clock.now();
            let added = shared.store.add(&shared.name, jobs, now).await?;
            let mut delayed = false;
            for job in added.iter().filter(|job| !job.existed) {
                shared.publish(EventKind::Added, Some(&job.id), None);
                match job.state {
                    JobState::Delayed => {
                        delayed = true;
                        shared.publish(EventKind::Delayed, Some(&job.id), None);
                    }
                    _ => shared.publish(EventKind::Waiting, Some(&job.id), None),
                }
            }
            // The store woke the workers of waiting jobs; the timer is this process's own.
            if delayed {
                shared.timer_wake.notify_one();
            }
            Ok::<_, QueueError>(added)
        });
        task.await.map_err(|_| QueueError::ShuttingDown)?
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>, QueueError> {
        Ok(self.shared.store.get(&self.shared.name, id).await?)
    }

    pub async fn logs(&self, id: &str) -> Result<Vec<String>, QueueError> {
        Ok(self.shared.store.logs(&self.shared.name, id).await?)
    }

    pub async fn counts(&self) -> Result<Counts, QueueError> {
        Ok(self.shared.store.counts(&self.shared.name).await?)
    }

    /// Jobs in `state`, newest first.
    pub async fn list(
        &self,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> Result<JobPage, QueueError> {
        Ok(self
            .shared
            .store
            .list(&self.shared.name, state, offset, limit)
            .await?)
    }

    async fn explain_miss(&self, id: &str, expected: &'static str) -> QueueError {
        match self.get(id).await {
            Ok(Some(job)) => QueueError::WrongState {
                id: id.to_owned(),
                state: job.status.state.to_string(),
                expected,
            },
            Ok(None) => QueueError::JobNotFound(id.to_owned()),
            Err(err) => err,
        }
    }

    /// Sends one failed job back to `waiting` with fresh attempts.
    pub async fn retry(&self, id: &str) -> Result<(), QueueError> {
        let now = self.shared.clock.now();
        if !self.shared.store.retry(&self.shared.name, id, now).await? {
            return Err(self.explain_miss(id, "failed").await);
        }
        self.shared.publish(EventKind::Waiting, Some(id), None);
        Ok(())
    }

    pub async fn retry_all_failed(&self) -> Result<u64, QueueError> {
        let now = self.shared.clock.now();
        let count = self
            .shared
            .store
            .retry_all_failed(&self.shared.name, now)
            .await?;
        if count > 0 {
            self.shared
                .publish(EventKind::Waiting, None, Some(count.to_string()));
        }
        Ok(count)
    }

    /// Runs a delayed job now.
    pub async fn promote(&self, id: &str) -> Result<(), QueueError> {
        let now = self.shared.clock.now();
        if !self
            .shared
            .store
            .promote(&self.shared.name, id, now)
            .await?
        {
            return Err(self.explain_miss(id, "delayed").await);
        }
        self.shared.publish(EventKind::Waiting, Some(id), None);
        Ok(())
    }

    pub async fn remove(&self, id: &str) -> Result<(), QueueError> {
        match self.shared.store.remove(&self.shared.name, id).await? {
            RemovedOutcome::Removed => {
                self.shared.publish(EventKind::Removed, Some(id), None);
                Ok(())
            }
            RemovedOutcome::NotFound => Err(QueueError::JobNotFound(id.to_owned())),
            RemovedOutcome::Active => Err(QueueError::JobActive(id.to_owned())),
        }
    }

    /// Removes up to `limit` (0: all) jobs in `state` older than `grace_ms`. Active jobs are
    /// owned by workers and cannot be cleaned; cancel them instead.
    pub async fn clean(
        &self,
        state: JobState,
        grace_ms: u64,
        limit: u64,
    ) -> Result<Vec<String>, QueueError> {
        if state == JobState::Active {
            return Err(QueueError::InvalidOptions(
                "active jobs cannot be cleaned: cancel them".to_owned(),
            ));
        }
        let now = self.shared.clock.now();
        let removed = self
            .shared
            .store
            .clean(&self.shared.name, state, grace_ms, limit, now)
            .await?;
        for id in &removed {
            self.shared.publish(EventKind::Removed, Some(id), None);
        }
        Ok(removed)
    }

    /// Removes every waiting job (and delayed ones when asked).
    pub async fn drain(&self, include_delayed: bool) -> Result<u64, QueueError> {
        let count = self
            .shared
            .store
            .drain(&self.shared.name, include_delayed)
            .await?;
        self.shared
            .publish(EventKind::Drained, None, Some(count.to_string()));
        Ok(count)
    }

    pub async fn pause(&self) -> Result<(), QueueError> {
        self.shared
            .store
            .set_paused(&self.shared.name, true)
            .await?;
        self.shared.publish(EventKind::Paused, None, None);
        Ok(())
    }

    pub async fn resume(&self) -> Result<(), QueueError> {
        self.shared
            .store
            .set_paused(&self.shared.name, false)
            .await?;
        self.shared.publish(EventKind::Resumed, None, None);
        Ok(())
    }

    pub async fn is_paused(&self) -> Result<bool, QueueError> {
        Ok(self.shared.store.is_paused(&self.shared.name).await?)
    }

    /// Fails an active job now; its processor is stopped at its next await point.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<(), QueueError> {
        let now = self.shared.clock.now();
        let reason = if reason.is_empty() {
            "cancelled"
        } else {
            reason
        };
        if !self
            .shared
            .store
            .force_fail(&self.shared.name, id, reason.to_owned(), now)
            .await?
        {
            return Err(self.explain_miss(id, "active").await);
        }
        self.shared.stop_running(id);
        self.shared.metrics.record_failed(now, 0, true);
        self.shared
            .publish(EventKind::Failed, Some(id), Some(reason.to_owned()));
        Ok(())
    }

    pub fn metrics(&self, window_minutes: usize) -> MetricsSnapshot {
        self.shared
            .metrics
            .snapshot(self.shared.clock.now(), window_minutes)
    }

    /// How long the longest-waiting job has waited, in ms.
    pub async fn oldest_waiting_ms(&self) -> Result<Option<u64>, QueueError> {
        let now = self.shared.clock.now();
        let oldest = self.shared.store.oldest_waiting(&self.shared.name).await?;
        Ok(oldest.map(|at| now.saturating_sub(at)))
    }

    /// Current time on the engine's clock.
    pub fn now(&self) -> Millis {
        self.shared.clock.now()
    }

    fn start(&self) {
        let mut started = self.shared.started.lock();
        if *started {
            return;
        }
        *started = true;
        let tasks = &self.shared.tasks;
        for _ in 0..self.shared.config.concurrency.max(1) {
            tasks.spawn(worker(self.shared.clone()));
        }
        tasks.spawn(timer(self.shared.clone()));
        tasks.spawn(retention(self.shared.clone()));
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
        QueueManager {
            store,
            hub,
            clock: Clock::new(),
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

async fn worker(queue: Arc<QueueShared>) {
    loop {
        if queue.stop.is_cancelled() {
            return;
        }
        let now = queue.clock.now();
        let request = TakeRequest {
            lease_ms: queue.lease_ms(),
            limit: queue.config.rate_limit,
            groups: GroupLimits {
                concurrency: queue.config.group_concurrency,
                rate: queue.config.group_rate_limit,
            },
        };
        let taken = match queue.store.take(&queue.name, request, now).await {
            Ok(Take::Job(job)) => *job,
            Ok(Take::Empty) => {
                let recheck = async {
                    match queue.recheck_after() {
                        Some(after) => tokio::time::sleep(after).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = queue.work.changed() => continue,
                    _ = recheck => continue,
                    _ = queue.stop.cancelled() => return,
                }
            }
            Ok(Take::RateLimited { until }) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(queue.clock.instant_at(until)) => continue,
                    _ = queue.stop.cancelled() => return,
                }
            }
            Err(err) => {
                tracing::error!(queue = %queue.name, error = %err, "cannot take a job");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = queue.stop.cancelled() => return,
                }
            }
        };
        if taken.more_waiting {
            queue.work.wake();
        }
        run_job(&queue, taken).await;
    }
}

enum Outcome {
    Finished(JobResult),
    Cancelled,
    Abandoned,
}

fn panic_failure(payload: Box<dyn std::any::Any + Send>) -> JobFailure {
    let message = payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned());
    JobFailure::msg(format!("processor panicked: {message}"))
}

async fn run_job(queue: &Arc<QueueShared>, job: TakenJob) {
    let started = queue.clock.now();
    queue.metrics.record_wait(
        started,
        started.saturating_sub(job.ready_at).saturating_mul(1000),
    );
    let started_at = Instant::now();
    let id: Arc<str> = Arc::from(job.id.as_str());
    let cancel = Arc::new(Notify::new());
    let lease_ms = queue.lease_ms();
    let first_lease = {
        let mut running = queue.running.lock();
        running.insert(
            id.clone(),
            Running {
                token: job.token,
                cancel: cancel.clone(),
            },
        );
        running.len() == 1
    };
    // A cancel that came between the take and the registration above failed the job in the
    // store but found nothing running to stop: the attempt no longer owns the job, so it must not
    // run. (A cancel after this check finds it registered.)
    if let Ok(false) = queue.store.owns(&queue.name, &id, job.token).await {
        queue.end_running(&id, job.token);
        return;
    }
    // The timer plans its sleep around the earliest lease expiry; only the first running job
    // can bring it earlier than what the timer already knows.
    if first_lease {
        queue.timer_wake.notify_one();
        // Let the timer see the lease before the processor runs: a processor that hogs this
        // thread would otherwise also hold up the timer task just woken onto it.
        tokio::task::yield_now().await;
    }
    queue.publish(EventKind::Active, Some(&id), None);

    let context = JobContext {
        queue: queue.clone(),
        id: job.id.clone(),
        name: job.spec.name.clone(),
        data: job.spec.data.clone(),
        attempts_made: job.attempts_made,
        token: job.token,
    };
    let processor = queue.processor_for(&job.spec.name);
    let name = job.spec.name.clone();
    let work = async move {
        match processor {
            Some(processor) => AssertUnwindSafe(processor.process(context))
                .catch_unwind()
                .await
                .unwrap_or_else(|payload| Err(panic_failure(payload))),
            None => Err(JobFailure::msg(format!("no processor for job name {name}"))),
        }
    };
    let timed = async {
        match job.spec.opts.timeout_ms {
            Some(ms) => tokio::time::timeout(Duration::from_millis(ms), work)
                .await
                .unwrap_or_else(|_| Err(JobFailure::msg(format!("job timed out after {ms} ms")))),
            None => work.await,
        }
    };
    // Renewal runs in the worker's own task: a processor that blocks its thread stops renewing,
    // and the timer then hands the job to another worker (Bull's stalled-job semantics).
    let renew = async {
        loop {
            tokio::time::sleep(Duration::from_millis(lease_ms / 2)).await;
            let until = queue.clock.now() + lease_ms;
            if let Err(err) = queue.store.renew(&queue.name, &id, job.token, until).await {
                tracing::error!(queue = %queue.name, job = %id, error = %err, "cannot renew a lease");
            }
        }
    };
    let outcome = tokio::select! {
        result = timed => Outcome::Finished(result),
        _ = renew => Outcome::Abandoned,
        _ = cancel.notified() => Outcome::Cancelled,
        _ = queue.abandon.cancelled() => Outcome::Abandoned,
    };
    queue.end_running(&id, job.token);
    let now = queue.clock.now();
    let elapsed_us = started_at.elapsed().as_micros() as u64;
    let result = match outcome {
        Outcome::Cancelled => return,
        Outcome::Abandoned => queue
            .store
            .release(&queue.name, &id, job.token, now)
            .await
            .map(|_| ()),
        Outcome::Finished(Ok(value)) => {
            let keep = queue.keep_completed(&job.spec.opts);
            let text = value.to_string();
            match queue
                .store
                .complete(
                    &queue.name,
                    Complete {
                        id: id.to_string(),
                        token: job.token,
                        return_value: text.clone(),
                        keep,
                    },
                    now,
                )
                .await
            {
                Ok(true) => {
                    queue.metrics.record_completed(now, elapsed_us);
                    queue.publish(EventKind::Completed, Some(&id), Some(text));
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(err) => Err(err),
            }
        }
        Outcome::Finished(Err(failure)) => {
            record_failure(queue, &id, &job, failure, now, elapsed_us).await
        }
    };
    if let Err(err) = result {
        tracing::error!(queue = %queue.name, job = %id, error = %err, "cannot record a job outcome");
    }
}

async fn record_failure(
    queue: &Arc<QueueShared>,
    id: &str,
    job: &TakenJob,
    failure: JobFailure,
    now: Millis,
    elapsed_us: u64,
) -> Result<(), crate::store::StoreError> {
    let opts = &job.spec.opts;
    let attempts_made = job.attempts_made + 1;
    let retry_at = (attempts_made < opts.attempts).then(|| {
        let delay = opts
            .backoff
            .map(|backoff| backoff.delay_after(attempts_made, rand::random::<f64>()))
            .unwrap_or(0);
        now.saturating_add(delay)
    });
    let keep = queue.keep_failed(opts);
    let outcome = queue
        .store
        .fail(
            &queue.name,
            Fail {
                id: id.to_owned(),
                token: job.token,
                reason: failure.message.clone(),
                stack: failure.stack(),
                retry_at,
                keep,
            },
            now,
        )
        .await?;
    tracing::debug!(queue = %queue.name, job = %id, reason = %failure.message, "job attempt failed");
    match outcome {
        FailOutcome::Retrying { at } => {
            queue.metrics.record_failed(now, elapsed_us, false);
            if at > now {
                queue.publish(EventKind::Delayed, Some(id), Some(failure.message));
                queue.timer_wake.notify_one();
            } else {
                queue.publish(EventKind::Waiting, Some(id), Some(failure.message));
            }
        }
        FailOutcome::Failed => {
            queue.metrics.record_failed(now, elapsed_us, true);
            queue.publish(EventKind::Failed, Some(id), Some(failure.message));
        }
        FailOutcome::Stale => {}
    }
    Ok(())
}

/// Promotes due delayed jobs and takes expired leases away, sleeping in between.
async fn timer(queue: Arc<QueueShared>) {
    loop {
        let now = queue.clock.now();
        match queue.store.promote_due(&queue.name, now).await {
            Ok(promoted) => {
                for id in &promoted {
                    queue.publish(EventKind::Waiting, Some(id), None);
                }
            }
            Err(err) => {
                tracing::error!(queue = %queue.name, error = %err, "cannot promote delayed jobs")
            }
        }
        match queue
            .store
            .expire_leases(&queue.name, now, queue.config.max_stalled_count)
            .await
        {
            Ok(expired) => queue.expired(&expired, now),
            Err(err) => {
                tracing::error!(queue = %queue.name, error = %err, "cannot requeue stalled jobs")
            }
        }
        let next_due = queue.store.next_due(&queue.name).await.unwrap_or(None);
        let next_lease = queue
            .store
            .next_lease_expiry(&queue.name)
            .await
            .unwrap_or(None);
        // Delayed jobs and leases of other instances on a shared store wake no timer here: look
        // again after the idle re-check at the latest.
        let recheck = queue
            .recheck_after()
            .map(|after| now.saturating_add(after.as_millis() as Millis));
        let wake_at = [next_due, next_lease, recheck].into_iter().flatten().min();
        match wake_at {
            Some(at) => tokio::select! {
                _ = tokio::time::sleep_until(queue.clock.instant_at(at)) => {}
                _ = queue.timer_wake.notified() => {}
                _ = queue.stop.cancelled() => return,
            },
            None => tokio::select! {
                _ = queue.timer_wake.notified() => {}
                _ = queue.stop.cancelled() => return,
            },
        }
    }
}

/// Trims finished jobs to the queue's default retention, in the background.
async fn retention(queue: Arc<QueueShared>) {
    let config = &queue.config;
    if config.keep_completed.keeps_everything() && config.keep_failed.keeps_everything() {
        return;
    }
    let every = Duration::from_millis(config.retention_interval_ms.max(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = queue.stop.cancelled() => return,
        }
        let now = queue.clock.now();
        match queue
            .store
            .trim(&queue.name, config.keep_completed, config.keep_failed, now)
            .await
        {
            Ok(0) => {}
            Ok(removed) => {
                tracing::debug!(queue = %queue.name, removed, "retention trimmed finished jobs")
            }
            Err(err) => tracing::error!(queue = %queue.name, error = %err, "retention failed"),
        }
    }
}
