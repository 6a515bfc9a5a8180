//! The job model: states, options and the records a job store keeps.
//!
//! Plain data with no behaviour beyond small pure helpers, shared by the engine (`queue/`) and the
//! storage backends (`store/`). Nothing here knows about tokio, sled or HTTP.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, as read from the engine's clock.
pub type Millis = u64;

/// Where a job is in its life. A job is in exactly one state at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum JobState {
    Waiting,
    Delayed,
    Active,
    Completed,
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Waiting,
        JobState::Delayed,
        JobState::Active,
        JobState::Completed,
        JobState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Delayed => "delayed",
            JobState::Active => "active",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<JobState> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long to wait before the next attempt of a failed job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackoffKind {
    Fixed,
    Exponential,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    pub kind: BackoffKind,
    /// Base delay in milliseconds.
    pub delay: u64,
    /// Fraction (0.0..=1.0) of the computed delay that is randomised, so retries of many jobs
    /// failing together do not hit a recovering dependency at the same instant.
    pub jitter: f64,
}

impl Backoff {
    /// The delay before attempt `attempts_made + 1`, given that `attempts_made` attempts have
    /// failed (so `attempts_made >= 1`). `random` is a sample in `0.0..1.0`.
    pub fn delay_after(&self, attempts_made: u32, random: f64) -> u64 {
        let base = match self.kind {
            BackoffKind::Fixed => self.delay,
            BackoffKind::Exponential => {
                // 2^(n-1) * delay, saturating: attempt counts are small but the caller chooses them.
                let exponent = attempts_made.saturating_sub(1).min(40);
                self.delay.saturating_mul(1u64 << exponent)
            }
        };
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return base;
        }
        // Spread the delay over [base * (1 - jitter), base].
        let cut = (base as f64 * jitter * random.clamp(0.0, 1.0)) as u64;
        base.saturating_sub(cut)
    }
}

/// How many finished jobs to keep (Bull's `removeOnComplete` / `removeOnFail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KeepJobs {
    /// Keep at most this many (newest first); `None` keeps any number.
    pub count: Option<u64>,
    /// Keep only jobs finished less than this many milliseconds ago; `None` keeps any age.
    pub age_ms: Option<u64>,
}

impl KeepJobs {
    pub const ALL: KeepJobs = KeepJobs {
        count: None,
        age_ms: None,
    };
    pub const NONE: KeepJobs = KeepJobs {
        count: Some(0),
        age_ms: None,
    };

    pub fn keeps_everything(&self) -> bool {
        self.count.is_none() && self.age_ms.is_none()
    }
}

/// Options of one job, validated by the engine before they reach a store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobOptions {
    /// 1 is the highest priority; `None` runs after every prioritised job (as in Bull).
    pub priority: Option<u32>,
    pub delay_ms: u64,
    pub attempts: u32,
    pub backoff: Option<Backoff>,
    pub timeout_ms: Option<u64>,
    /// A caller-chosen id: adding a job whose id exists returns the existing job.
    pub job_id: Option<String>,
    pub lifo: bool,
    /// `None` falls back to the queue's default.
    pub remove_on_complete: Option<KeepJobs>,
    pub remove_on_fail: Option<KeepJobs>,
    /// The job's group (for chat: its conversation). A queue can limit how many jobs of one
    /// group run at once and how often they start, and `take` serves groups in turn.
    pub group: Option<String>,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            priority: None,
            delay_ms: 0,
            attempts: 1,
            backoff: None,
            timeout_ms: None,
            job_id: None,
            lifo: false,
            remove_on_complete: None,
            remove_on_fail: None,
            group: None,
        }
    }
}

/// A job to add. `data` is the job's JSON payload, kept as text.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub name: String,
    pub data: String,
    pub opts: JobOptions,
}

/// The immutable part of a stored job, written once when it is added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub data: String,
    pub opts: JobOptions,
    pub created_at: Millis,
}

/// The mutable part of a stored job: every transition rewrites only this small record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub state: JobState,
    /// Position among jobs of equal priority; taken from one increasing counter when the job
    /// enters `waiting`, so FIFO order survives restarts.
    pub order: u64,
    /// Priority rank (1 runs first); jobs added without a priority rank `u32::MAX`. Kept here
    /// (not only in the options) so indexes are rebuilt from these small records alone.
    pub priority: u32,
    pub lifo: bool,
    /// When the job becomes due (`delayed`) or entered `waiting`, in ms.
    pub ready_at: Millis,
    pub attempts_made: u32,
    pub stalled_count: u32,
    /// Progress reported by the processor, as JSON text.
    pub progress: String,
    pub processed_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub failed_reason: Option<String>,
    /// Error chain (or panic message) of each failed attempt, oldest first.
    pub stacktrace: Vec<String>,
    /// The processor's return value, as JSON text.
    pub return_value: Option<String>,
    /// Identifies the current attempt; a worker whose lease was taken away cannot finish the job.
    pub token: u64,
    /// Number of log lines stored under this job.
    pub log_count: u32,
    /// When the job entered its current state (for `clean` with a grace period).
    pub entered_at: Millis,
    /// The job's group (a copy of the option), so the group indexes are rebuilt from these
    /// records alone.
    pub group: Option<String>,
}

impl JobStatus {
    pub fn new(state: JobState, opts: &JobOptions, order: u64, ready_at: Millis) -> JobStatus {
        JobStatus {
            state,
            order,
            priority: opts.priority.unwrap_or(u32::MAX),
            lifo: opts.lifo,
            ready_at,
            attempts_made: 0,
            stalled_count: 0,
            progress: "0".to_owned(),
            processed_at: None,
            finished_at: None,
            failed_reason: None,
            stacktrace: Vec::new(),
            return_value: None,
            token: 0,
            log_count: 0,
            entered_at: ready_at,
            group: opts.group.clone(),
        }
    }
}

/// A whole job as read back from a store.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub queue: String,
    pub id: String,
    pub spec: JobSpec,
    pub status: JobStatus,
}

/// What `add` did with one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub id: String,
    /// `true` when a job with this `jobId` already existed and nothing was written.
    pub existed: bool,
    pub state: JobState,
}

/// A job handed to a worker by `take`.
#[derive(Debug, Clone)]
pub struct TakenJob {
    pub id: String,
    pub spec: JobSpec,
    pub attempts_made: u32,
    pub token: u64,
    /// When the job became ready to run (for wait-time metrics).
    pub ready_at: Millis,
    /// Whether other jobs were still waiting after this one was taken.
    pub more_waiting: bool,
}

/// At most `max` jobs start per `duration_ms` (Bull's limiter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max: u32,
    pub duration_ms: u64,
}

/// How a queue limits each job group (jobs without a group are not limited by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupLimits {
    /// At most this many active jobs per group; `None`: any number.
    pub concurrency: Option<u32>,
    /// At most `max` starts per group per window; `None`: no limit.
    pub rate: Option<RateLimit>,
}

impl GroupLimits {
    pub const NONE: GroupLimits = GroupLimits {
        concurrency: None,
        rate: None,
    };
}

/// `JobStore::take`: what the worker asks for along with the next job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeRequest {
    /// How long the lease the worker gets lasts before it must renew it.
    pub lease_ms: u64,
    /// The queue's limit on job starts, counted by the store (so it holds across instances).
    pub limit: Option<RateLimit>,
    /// The queue's limits per job group, counted by the store like `limit`.
    pub groups: GroupLimits,
}

/// What `JobStore::take` found.
#[derive(Debug, Clone)]
pub enum Take {
    /// The job taken (boxed: the other answers are a word).
    Job(Box<TakenJob>),
    /// Nothing to take: no job waits, the queue is paused, or every group with waiting jobs
    /// has as many active as it may (one of them finishing signals the queue's watch).
    Empty,
    /// Jobs wait, but the rate limit's window (the queue's, or that of every group whose turn
    /// it could be) is used up until `until`.
    RateLimited { until: Millis },
}

impl Take {
    /// The job taken, if any.
    pub fn job(self) -> Option<TakenJob> {
        match self {
            Take::Job(job) => Some(*job),
            Take::Empty | Take::RateLimited { .. } => None,
        }
    }
}

/// A job `JobStore::expire_leases` took away from a worker whose lease lapsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub id: String,
    /// `Waiting` (to run again) or `Failed` (stalled more than allowed).
    pub state: JobState,
}

/// `JobStore::complete`: the attempt holding `token` finished `id` with `return_value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complete {
    pub id: String,
    pub token: u64,
    /// The processor's result, as JSON text.
    pub return_value: String,
    /// How many completed jobs the queue keeps (the job itself is removed when it keeps none).
    pub keep: KeepJobs,
}

/// `JobStore::fail`: the attempt holding `token` of `id` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    pub id: String,
    pub token: u64,
    pub reason: String,
    pub stack: String,
    /// When to try again; `None` when the job has no attempts left.
    pub retry_at: Option<Millis>,
    /// How many failed jobs the queue keeps.
    pub keep: KeepJobs,
}

/// What a failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Another attempt is scheduled at the given time.
    Retrying { at: Millis },
    /// No attempts left: the job is `failed`.
    Failed,
    /// The attempt no longer owned the job (lease lost, cancelled or removed): nothing changed.
    Stale,
}

/// Counts of jobs by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub waiting: u64,
    pub delayed: u64,
    pub active: u64,
    pub completed: u64,
    pub failed: u64,
}

impl Counts {
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Waiting => self.waiting,
            JobState::Delayed => self.delayed,
            JobState::Active => self.active,
            JobState::Completed => self.completed,
            JobState::Failed => self.failed,
        }
    }

    pub fn get_mut(&mut self, state: JobState) -> &mut u64 {
        match state {
            JobState::Waiting => &mut self.waiting,
            JobState::Delayed => &mut self.delayed,
            JobState::Active => &mut self.active,
            JobState::Completed => &mut self.completed,
            JobState::Failed => &mut self.failed,
        }
    }

    pub fn total(&self) -> u64 {
        self.waiting + self.delayed + self.active + self.completed + self.failed
    }
}

/// A page of jobs, newest first, with the number of jobs in that state.
#[derive(Debug, Clone)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    pub total: u64,
}

/// The stored shapes of format 1 ([`crate::store::codec::FORMAT_V1`]), frozen: records written
/// before jobs had groups decode through these into the current types. Never change them.
pub mod v1 {
    use serde::{Deserialize, Serialize};

    use super::{Backoff, JobState, KeepJobs, Millis};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct JobOptions {
        pub priority: Option<u32>,
        pub delay_ms: u64,
        pub attempts: u32,
        pub backoff: Option<Backoff>,
        pub timeout_ms: Option<u64>,
        pub job_id: Option<String>,
        pub lifo: bool,
        pub remove_on_complete: Option<KeepJobs>,
        pub remove_on_fail: Option<KeepJobs>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct JobSpec {
        pub name: String,
        pub data: String,
        pub opts: JobOptions,
        pub created_at: Millis,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct JobStatus {
        pub state: JobState,
        pub order: u64,
        pub priority: u32,
        pub lifo: bool,
        pub ready_at: Millis,
        pub attempts_made: u32,
        pub stalled_count: u32,
        pub progress: String,
        pub processed_at: Option<Millis>,
        pub finished_at: Option<Millis>,
        pub failed_reason: Option<String>,
        pub stacktrace: Vec<String>,
        pub return_value: Option<String>,
        pub token: u64,
        pub log_count: u32,
        pub entered_at: Millis,
    }

    impl From<JobOptions> for super::JobOptions {
        fn from(old: JobOptions) -> super::JobOptions {
            super::JobOptions {
                priority: old.priority,
                delay_ms: old.delay_ms,
                attempts: old.attempts,
                backoff: old.backoff,
                timeout_ms: old.timeout_ms,
                job_id: old.job_id,
                lifo: old.lifo,
                remove_on_complete: old.remove_on_complete,
                remove_on_fail: old.remove_on_fail,
                group: None,
            }
        }
    }

    impl From<JobSpec> for super::JobSpec {
        fn from(old: JobSpec) -> super::JobSpec {
            super::JobSpec {
                name: old.name,
                data: old.data,
                opts: old.opts.into(),
                created_at: old.created_at,
            }
        }
    }

    impl From<JobStatus> for super::JobStatus {
        fn from(old: JobStatus) -> super::JobStatus {
            super::JobStatus {
                state: old.state,
                order: old.order,
                priority: old.priority,
                lifo: old.lifo,
                ready_at: old.ready_at,
                attempts_made: old.attempts_made,
                stalled_count: old.stalled_count,
                progress: old.progress,
                processed_at: old.processed_at,
                finished_at: old.finished_at,
                failed_reason: old.failed_reason,
                stacktrace: old.stacktrace,
                return_value: old.return_value,
                token: old.token,
                log_count: old.log_count,
                entered_at: old.entered_at,
                group: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_from_the_base_delay() {
        let backoff = Backoff {
            kind: BackoffKind::Exponential,
            delay: 100,
            jitter: 0.0,
        };
        let delays: Vec<u64> = (1..=5).map(|n| backoff.delay_after(n, 0.5)).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600]);
    }

    #[test]
    fn fixed_backoff_stays_put_and_jitter_only_shortens() {
        let backoff = Backoff {
            kind: BackoffKind::Fixed,
            delay: 1000,
            jitter: 0.5,
        };
        assert_eq!(backoff.delay_after(3, 0.0), 1000);
        assert_eq!(backoff.delay_after(3, 1.0), 500);
        let middle = backoff.delay_after(3, 0.5);
        assert!((500..=1000).contains(&middle));
    }

    #[test]
    fn exponential_backoff_saturates_instead_of_overflowing() {
        let backoff = Backoff {
            kind: BackoffKind::Exponential,
            delay: u64::MAX / 2,
            jitter: 0.0,
        };
        assert_eq!(backoff.delay_after(100, 0.0), u64::MAX);
    }
}
