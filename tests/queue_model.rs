//! Model-based property test of the [`JobStore`] backends, run on each (memory and sled): random
//! operations, *reopen* included, are applied both to the real store (sled's in a temp dir) and to
//! a small model written from the trait's contract, and after every step the two must agree on
//! every observable: counts, each job's record, the state lists, what `take` hands out and what
//! every call returns.
//!
//! A reopen is a restart, which only a durable backend has: on sled the store is closed and opened
//! again, and the start-up recovery then finds the dead process's active jobs stalled. A memory
//! store does not outlive its process, so there the restart is skipped and only the recovery
//! runs, on the live store: the same transitions, with tokens that stay stale rather than dying
//! with a process.
//!
//! The model never predicts automatic ids (it records what `add` returns) nor `order` values (it
//! keeps its own increasing counter, assigned at the same moments: only relative order matters).
//! Time is a logical clock the operations advance. Where the contract leaves a choice open (which
//! eligible jobs a limited `clean` removes) the model accepts any valid choice.
//!
//! Jobs carry groups, and each queue limits how many of a group's jobs may be active at once
//! ([`GROUP_LIMITS`]): which group's turn it is is the store's choice (round robin), so the
//! model accepts any job that heads an eligible lane (a group under its limit, or the jobs
//! without a group), and checks after every step that no group has more active jobs than its
//! limit, restarts included.
//!
//! The `regression_*` tests at the end replay the minimal sequences of bugs this test found.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use courier::queue::model::{
    Added, Complete, Fail, FailOutcome, Job, JobOptions, JobState, KeepJobs, Millis, NewJob,
    TakeRequest,
};
use courier::store::{self, JobStore, RemovedOutcome, StoreConfig, StoreError};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{TestCaseError, TestRunner};

#[macro_use]
mod job_backends;

use job_backends::Backend;

/// The lease every take in the model asks for.
const LEASE_MS: u64 = 5_000;
/// What a worker of `queue` asks for: the model's lease, and the queue's group limit.
fn take_request(queue: usize) -> TakeRequest {
    TakeRequest {
        groups: courier::store::job::GroupLimits {
            concurrency: Some(GROUP_LIMITS[queue]),
            rate: None,
        },
        ..TAKE
    }
}

const TAKE: TakeRequest = TakeRequest {
    lease_ms: LEASE_MS,
    limit: None,
    groups: courier::store::job::GroupLimits::NONE,
};

const QUEUES: [&str; 2] = ["main", "other"];
/// How many jobs of one group each queue lets run at once.
const GROUP_LIMITS: [u32; 2] = [1, 2];
const GROUPS: [&str; 3] = ["g1", "g2", "g3"];
/// Caller-chosen ids: letters, and numbers that collide with automatic ids.
const CUSTOM_IDS: [&str; 5] = ["a", "b", "c", "3", "7"];
/// A realistic epoch time, so `now - grace` never saturates at zero.
const START: Millis = 1_700_000_000_000;
const STALLED_REASON: &str = "job stalled more than allowable limit";

// ---------------------------------------------------------------------------------------------
// Operations

#[derive(Debug, Clone)]
struct AddSpec {
    priority: Option<u32>,
    delay_ms: u64,
    lifo: bool,
    job_id: Option<&'static str>,
    group: Option<&'static str>,
}

#[derive(Debug, Clone, Copy)]
enum RetryAt {
    Never,
    Now,
    Past(u64),
    Later(u64),
}

#[derive(Debug, Clone, Copy)]
enum StaleCall {
    Complete,
    Fail,
    Stall,
    Release,
    Progress,
}

#[derive(Debug, Clone)]
enum Op {
    Add {
        queue: usize,
        jobs: Vec<AddSpec>,
    },
    Take {
        queue: usize,
    },
    Complete {
        queue: usize,
        pick: Index,
        keep: KeepJobs,
    },
    Fail {
        queue: usize,
        pick: Index,
        retry: RetryAt,
        keep: KeepJobs,
    },
    Stall {
        queue: usize,
        pick: Index,
        max_stalled: u32,
    },
    Release {
        queue: usize,
        pick: Index,
    },
    Progress {
        queue: usize,
        pick: Index,
    },
    /// A worker whose lease is gone (or who names the wrong queue) tries to finish its job.
    Stale {
        pick: Index,
        call: StaleCall,
        cross_queue: bool,
    },
    ForceFail {
        queue: usize,
        pick: Index,
    },
    Advance {
        ms: u64,
    },
    PromoteDue {
        queue: usize,
    },
    Promote {
        queue: usize,
        pick: Index,
    },
    Retry {
        queue: usize,
        pick: Index,
    },
    RetryAllFailed {
        queue: usize,
    },
    Remove {
        queue: usize,
        pick: Index,
    },
    Clean {
        queue: usize,
        state: JobState,
        grace_ms: u64,
        limit: u64,
    },
    Drain {
        queue: usize,
        include_delayed: bool,
    },
    SetPaused {
        queue: usize,
        paused: bool,
    },
    Trim {
        queue: usize,
        keep_completed: KeepJobs,
        keep_failed: KeepJobs,
    },
    Log {
        queue: usize,
        pick: Index,
    },
    Reopen {
        max_stalled: u32,
    },
}

fn queue_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![6 => Just(0usize), 1 => Just(1usize)]
}

fn keep_strategy() -> impl Strategy<Value = KeepJobs> {
    prop_oneof![
        3 => Just(KeepJobs::ALL),
        2 => Just(KeepJobs::NONE),
        3 => (1u64..=3).prop_map(|count| KeepJobs { count: Some(count), age_ms: None }),
        1 => prop_oneof![Just(0u64), 1u64..=3_000]
            .prop_map(|age| KeepJobs { count: None, age_ms: Some(age) }),
    ]
}

fn add_spec_strategy() -> impl Strategy<Value = AddSpec> {
    (
        prop_oneof![2 => Just(None), 3 => (1u32..=3).prop_map(Some)],
        prop_oneof![3 => Just(0u64), 1 => 1u64..=3_000],
        prop::bool::weighted(0.25),
        prop_oneof![3 => Just(None), 1 => prop::sample::select(&CUSTOM_IDS[..]).prop_map(Some)],
        prop_oneof![1 => Just(None), 2 => prop::sample::select(&GROUPS[..]).prop_map(Some)],
    )
        .prop_map(|(priority, delay_ms, lifo, job_id, group)| AddSpec {
            priority,
            delay_ms,
            lifo,
            job_id,
            group,
        })
}

fn retry_strategy() -> impl Strategy<Value = RetryAt> {
    prop_oneof![
        3 => Just(RetryAt::Never),
        1 => Just(RetryAt::Now),
        1 => (1u64..=1_000).prop_map(RetryAt::Past),
        2 => (1u64..=3_000).prop_map(RetryAt::Later),
    ]
}

fn stale_call_strategy() -> impl Strategy<Value = StaleCall> {
    prop_oneof![
        Just(StaleCall::Complete),
        Just(StaleCall::Fail),
        Just(StaleCall::Stall),
        Just(StaleCall::Release),
        Just(StaleCall::Progress),
    ]
}

fn clean_state_strategy() -> impl Strategy<Value = JobState> {
    // Active jobs belong to their workers; the engine refuses to clean them.
    prop::sample::select(vec![
        JobState::Waiting,
        JobState::Delayed,
        JobState::Completed,
        JobState::Failed,
    ])
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let q = queue_strategy;
    prop_oneof![
        20 => (q(), prop_oneof![3 => prop::collection::vec(add_spec_strategy(), 1..=1),
                               1 => prop::collection::vec(add_spec_strategy(), 2..=4)])
            .prop_map(|(queue, jobs)| Op::Add { queue, jobs }),
        15 => q().prop_map(|queue| Op::Take { queue }),
        8 => (q(), any::<Index>(), keep_strategy())
            .prop_map(|(queue, pick, keep)| Op::Complete { queue, pick, keep }),
        8 => (q(), any::<Index>(), retry_strategy(), keep_strategy())
            .prop_map(|(queue, pick, retry, keep)| Op::Fail { queue, pick, retry, keep }),
        3 => (q(), any::<Index>(), 0u32..=2)
            .prop_map(|(queue, pick, max_stalled)| Op::Stall { queue, pick, max_stalled }),
        2 => (q(), any::<Index>()).prop_map(|(queue, pick)| Op::Release { queue, pick }),
        2 => (q(), any::<Index>()).prop_map(|(queue, pick)| Op::Progress { queue, pick }),
        4 => (any::<Index>(), stale_call_strategy(), prop::bool::weighted(0.3))
            .prop_map(|(pick, call, cross_queue)| Op::Stale { pick, call, cross_queue }),
        2 => (q(), any::<Index>()).prop_map(|(queue, pick)| Op::ForceFail { queue, pick }),
        8 => prop_oneof![1u64..=10, 100u64..=3_500].prop_map(|ms| Op::Advance { ms }),
        5 => q().prop_map(|queue| Op::PromoteDue { queue }),
        3 => (q(), any::<Index>()).prop_map(|(queue, pick)| Op::Promote { queue, pick }),
        3 => (q(), any::<Index>()).prop_map(|(queue, pick)| Op::Retry { queue, pick }),
        2 => q().prop_map(|queue| Op::RetryAllFailed { queue }),
        3 => (q(), any::<Index>()).prop_map(|(queue, pick)| Op::Remove { queue, pick }),
        3 => (q(), clean_state_strategy(), prop::sample::select(vec![0u64, 500, 2_000]),
              prop::sample::select(vec![0u64, 1, 2, 5]))
            .prop_map(|(queue, state, grace_ms, limit)| Op::Clean { queue, state, grace_ms, limit }),
        1 => (q(), any::<bool>()).prop_map(|(queue, include_delayed)| Op::Drain { queue, include_delayed }),
        3 => (q(), prop::bool::weighted(0.6)).prop_map(|(queue, paused)| Op::SetPaused { queue, paused }),
        2 => (q(), keep_strategy(), keep_strategy())
            .prop_map(|(queue, keep_completed, keep_failed)| Op::Trim { queue, keep_completed, keep_failed }),
        2 => (q(), any::<Index>()).prop_map(|(queue, pick)| Op::Log { queue, pick }),
        5 => (0u32..=2).prop_map(|max_stalled| Op::Reopen { max_stalled }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model

#[derive(Debug, Clone)]
struct ModelJob {
    name: String,
    created_at: Millis,
    state: JobState,
    /// From the model's own counter, assigned whenever the job enters `waiting` or `delayed`.
    order: u64,
    priority: u32,
    lifo: bool,
    ready_at: Millis,
    /// When the job entered its current state (for `waiting`: when it became ready to run).
    entered_at: Millis,
    processed_at: Option<Millis>,
    finished_at: Option<Millis>,
    attempts_made: u32,
    stalled_count: u32,
    /// The current attempt's token while active.
    token: Option<u64>,
    /// While active: when the current attempt's lease lapses.
    lease_until: Option<Millis>,
    return_value: Option<String>,
    failed_reason: Option<String>,
    logs: Vec<String>,
    group: Option<String>,
}

impl ModelJob {
    /// Position in `waiting`: priority first (None ranks last), then every LIFO job newest
    /// first, then the FIFO jobs oldest first.
    fn waiting_rank(&self) -> (u32, u8, u64) {
        if self.lifo {
            (self.priority, 0, u64::MAX - self.order)
        } else {
            (self.priority, 1, self.order)
        }
    }

    /// Age rank among finished jobs: finish time, ties by queue position.
    fn finished_rank(&self) -> (Millis, u64) {
        (self.finished_at.unwrap_or(0), self.order)
    }

    fn enter_waiting(&mut self, order: u64, now: Millis) {
        self.state = JobState::Waiting;
        self.order = order;
        self.ready_at = now;
        self.entered_at = now;
        self.token = None;
    }

    fn enter_failed(&mut self, reason: &str, now: Millis) {
        self.state = JobState::Failed;
        self.finished_at = Some(now);
        self.entered_at = now;
        self.failed_reason = Some(reason.to_owned());
        self.token = None;
    }

    fn revive(&mut self, order: u64, now: Millis) {
        self.enter_waiting(order, now);
        self.attempts_made = 0;
        self.stalled_count = 0;
        self.finished_at = None;
        self.processed_at = None;
        self.failed_reason = None;
        self.return_value = None;
    }
}

#[derive(Debug, Default)]
struct ModelQueue {
    jobs: BTreeMap<String, ModelJob>,
    /// Every id this queue ever held, so removed jobs can be checked to be gone.
    ever: BTreeSet<String>,
    paused: bool,
}

impl ModelQueue {
    /// The jobs `take` may hand out next: the first waiting job (by priority, then FIFO/LIFO)
    /// of each lane that may start one, that is of the jobs without a group and of each group
    /// with fewer than `group_limit` active. Which of them is the store's turn order.
    fn takeable(&self, group_limit: u32) -> BTreeSet<String> {
        if self.paused {
            return BTreeSet::new();
        }
        let mut heads: BTreeMap<Option<&str>, (&ModelJob, &String)> = BTreeMap::new();
        for (id, job) in &self.jobs {
            if job.state != JobState::Waiting {
                continue;
            }
            let lane = job.group.as_deref();
            let earlier = heads
                .get(&lane)
                .is_some_and(|(head, _)| head.waiting_rank() <= job.waiting_rank());
            if !earlier {
                heads.insert(lane, (job, id));
            }
        }
        heads
            .into_iter()
            .filter(|(lane, _)| {
                lane.is_none_or(|group| self.active_in(group) < group_limit as usize)
            })
            .map(|(_, (_, id))| id.clone())
            .collect()
    }

    fn active_in(&self, group: &str) -> usize {
        self.jobs
            .values()
            .filter(|job| job.state == JobState::Active && job.group.as_deref() == Some(group))
            .count()
    }

    /// Ids in `state` sorted by `rank`, for operations that walk a state oldest first.
    fn sorted_by<K: Ord>(&self, state: JobState, rank: impl Fn(&ModelJob) -> K) -> Vec<String> {
        let mut ids: Vec<(K, String)> = self
            .jobs
            .iter()
            .filter(|(_, job)| job.state == state)
            .map(|(id, job)| (rank(job), id.clone()))
            .collect();
        ids.sort_by(|a, b| a.0.cmp(&b.0));
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Removes finished jobs in `state` beyond `keep`: the oldest past the count, and any
    /// finished `age_ms` or more ago ("keep only jobs finished less than age_ms ago").
    fn trim(&mut self, state: JobState, keep: KeepJobs, now: Millis) -> u64 {
        if keep.keeps_everything() {
            return 0;
        }
        let oldest_first = self.sorted_by(state, ModelJob::finished_rank);
        let over_count = keep.count.map_or(0, |count| {
            (oldest_first.len() as u64).saturating_sub(count) as usize
        });
        let mut removed = 0;
        for (position, id) in oldest_first.iter().enumerate() {
            let finished_at = self.jobs[id].finished_at.unwrap_or(0);
            // A job finished exactly `age_ms` ago goes too, as in Bull (see
            // `regression_age_retention_removes_jobs_exactly_that_old`).
            let too_old = keep.age_ms.is_some_and(|age| now - finished_at >= age);
            if position < over_count || too_old {
                self.jobs.remove(id);
                removed += 1;
            }
        }
        removed
    }

    fn counts(&self) -> [u64; 5] {
        let mut counts = [0; 5];
        for job in self.jobs.values() {
            counts[state_slot(job.state)] += 1;
        }
        counts
    }
}

fn state_slot(state: JobState) -> usize {
    JobState::ALL
        .iter()
        .position(|candidate| *candidate == state)
        .unwrap_or_default()
}

#[derive(Debug)]
struct Model {
    now: Millis,
    order: u64,
    names: u64,
    queues: [ModelQueue; 2],
    /// Tokens of attempts that ended, with their queue and job: each must stay powerless.
    stale: Vec<(usize, String, u64)>,
    /// Highest token handed out by this store process, per queue: tokens count up within a
    /// queue (a Redis store keeps one counter per queue, so its keys share one Cluster slot).
    last_token: [u64; 2],
    /// Highest automatic id handed out per queue; automatic ids never repeat, even across
    /// reopen.
    last_auto_id: [u64; 2],
}

impl Model {
    fn new() -> Model {
        Model {
            now: START,
            order: 0,
            names: 0,
            queues: Default::default(),
            stale: Vec::new(),
            last_token: [0; 2],
            last_auto_id: [0; 2],
        }
    }

    fn next_order(&mut self) -> u64 {
        self.order += 1;
        self.order
    }

    fn retire_token(&mut self, queue: usize, id: &str) {
        if let Some(token) = self.queues[queue].jobs.get(id).and_then(|job| job.token) {
            self.stale.push((queue, id.to_owned(), token));
        }
    }

    /// Sends an active job back to waiting in its old place, or to failed past `max_stalled`
    /// (stall, recovery).
    fn stall(&mut self, queue: usize, id: &str, max_stalled: u32) -> JobState {
        self.retire_token(queue, id);
        let now = self.now;
        let job = self.queues[queue]
            .jobs
            .get_mut(id)
            .expect("model: stalled job exists");
        job.stalled_count += 1;
        if job.stalled_count > max_stalled {
            job.enter_failed(STALLED_REASON, now);
        } else {
            let order = job.order;
            job.enter_waiting(order, now);
        }
        job.state
    }
}

// ---------------------------------------------------------------------------------------------
// Harness: the real store next to the model

trait OrFail<T> {
    fn or_fail(self) -> Result<T, TestCaseError>;
}

impl<T> OrFail<T> for Result<T, StoreError> {
    fn or_fail(self) -> Result<T, TestCaseError> {
        self.map_err(|err| TestCaseError::fail(format!("store error: {err}")))
    }
}

struct Harness {
    backend: Backend,
    dir: tempfile::TempDir,
    store: Option<Arc<dyn JobStore>>,
    model: Model,
}

/// What the test compares of one job: the fields its state gives meaning to.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    name: String,
    created_at: Millis,
    state: JobState,
    priority: u32,
    lifo: bool,
    attempts_made: u32,
    stalled_count: u32,
    ready_at: Option<Millis>,
    processed_at: Option<Millis>,
    finished_at: Option<Millis>,
    token: Option<u64>,
    return_value: Option<String>,
    failed_reason: Option<String>,
    log_count: u32,
    /// The group, as the spec and as the status record hold it.
    group: (Option<String>, Option<String>),
}

fn seen_from_store(job: &Job) -> Seen {
    let status = &job.status;
    let state = status.state;
    let waiting_or_delayed = matches!(state, JobState::Waiting | JobState::Delayed);
    let finished = matches!(state, JobState::Completed | JobState::Failed);
    Seen {
        name: job.spec.name.clone(),
        created_at: job.spec.created_at,
        state,
        priority: status.priority,
        lifo: status.lifo,
        attempts_made: status.attempts_made,
        stalled_count: status.stalled_count,
        ready_at: waiting_or_delayed.then_some(status.ready_at),
        processed_at: if state == JobState::Active {
            status.processed_at
        } else {
            None
        },
        finished_at: if finished { status.finished_at } else { None },
        token: (state == JobState::Active).then_some(status.token),
        return_value: if state == JobState::Completed {
            status.return_value.clone()
        } else {
            None
        },
        failed_reason: if state == JobState::Failed {
            status.failed_reason.clone()
        } else {
            None
        },
        log_count: status.log_count,
        group: (job.spec.opts.group.clone(), status.group.clone()),
    }
}

fn seen_from_model(job: &ModelJob) -> Seen {
    let state = job.state;
    let waiting_or_delayed = matches!(state, JobState::Waiting | JobState::Delayed);
    let finished = matches!(state, JobState::Completed | JobState::Failed);
    Seen {
        name: job.name.clone(),
        created_at: job.created_at,
        state,
        priority: job.priority,
        lifo: job.lifo,
        attempts_made: job.attempts_made,
        stalled_count: job.stalled_count,
        ready_at: waiting_or_delayed.then_some(job.ready_at),
        processed_at: if state == JobState::Active {
            job.processed_at
        } else {
            None
        },
        finished_at: if finished { job.finished_at } else { None },
        token: if state == JobState::Active {
            job.token
        } else {
            None
        },
        return_value: if state == JobState::Completed {
            job.return_value.clone()
        } else {
            None
        },
        failed_reason: if state == JobState::Failed {
            job.failed_reason.clone()
        } else {
            None
        },
        log_count: job.logs.len() as u32,
        group: (job.group.clone(), job.group.clone()),
    }
}

impl Harness {
    fn new(backend: Backend) -> Result<Harness, TestCaseError> {
        let dir = tempfile::tempdir().map_err(|err| TestCaseError::fail(err.to_string()))?;
        let store = backend.open(dir.path()).or_fail()?;
        Ok(Harness {
            backend,
            dir,
            store: Some(store),
            model: Model::new(),
        })
    }

    fn store(&self) -> Arc<dyn JobStore> {
        // Only `reopen` empties the slot, and it refills it before returning.
        self.store.clone().expect("store is open")
    }

    /// The active jobs of a queue with their tokens, in id order.
    fn active(&self, queue: usize) -> Vec<(String, u64)> {
        self.model.queues[queue]
            .jobs
            .iter()
            .filter(|(_, job)| job.state == JobState::Active)
            .map(|(id, job)| (id.clone(), job.token.unwrap_or_default()))
            .collect()
    }

    /// The active jobs of a queue; when there are none, a worker first takes one (checked like
    /// any `take`), so finishing operations rarely find nothing to finish.
    async fn active_or_take(&mut self, queue: usize) -> Result<Vec<(String, u64)>, TestCaseError> {
        if self.active(queue).is_empty() {
            self.take(queue).await?;
        }
        Ok(self.active(queue))
    }

    /// Any job of a queue, or (one time in `n + 1`) an id the queue does not hold.
    fn any_id(&self, queue: usize, pick: &Index) -> String {
        let ids: Vec<&String> = self.model.queues[queue].jobs.keys().collect();
        let position = pick.index(ids.len() + 1);
        ids.get(position)
            .map_or_else(|| "missing".to_owned(), |id| (*id).clone())
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        if let Op::Reopen { max_stalled } = op {
            // Before this function takes its own handle: reopening needs every handle gone.
            return self.reopen(*max_stalled).await;
        }
        let store = self.store();
        let now = self.model.now;
        match op {
            Op::Add { queue, jobs } => self.add(*queue, jobs).await?,
            Op::Take { queue } => self.take(*queue).await?,
            Op::Complete { queue, pick, keep } => {
                let name = QUEUES[*queue];
                let active = self.active_or_take(*queue).await?;
                if active.is_empty() {
                    let done = store
                        .complete(
                            name,
                            Complete {
                                id: "missing".to_owned(),
                                token: 1,
                                return_value: "null".into(),
                                keep: *keep,
                            },
                            now,
                        )
                        .await
                        .or_fail()?;
                    prop_assert!(!done, "completing a job that does not exist");
                    return Ok(());
                }
                let (id, token) = active[pick.index(active.len())].clone();
                let return_value = format!("\"{id} done at {now}\"");
                let done = store
                    .complete(
                        name,
                        Complete {
                            id: id.clone(),
                            token,
                            return_value: return_value.clone(),
                            keep: *keep,
                        },
                        now,
                    )
                    .await
                    .or_fail()?;
                prop_assert!(done, "complete of active job {} with its token", id);
                self.model.retire_token(*queue, &id);
                let model_queue = &mut self.model.queues[*queue];
                if *keep == KeepJobs::NONE {
                    // Bull's `removeOnComplete: true`: the job goes, other completed jobs stay.
                    model_queue.jobs.remove(&id);
                } else {
                    let job = model_queue
                        .jobs
                        .get_mut(&id)
                        .expect("model: active job exists");
                    job.state = JobState::Completed;
                    job.attempts_made += 1;
                    job.finished_at = Some(now);
                    job.entered_at = now;
                    job.return_value = Some(return_value);
                    job.token = None;
                    model_queue.trim(JobState::Completed, *keep, now);
                }
            }
            Op::Fail {
                queue,
                pick,
                retry,
                keep,
            } => {
                let name = QUEUES[*queue];
                let retry_at = match retry {
                    RetryAt::Never => None,
                    RetryAt::Now => Some(now),
                    RetryAt::Past(ms) => Some(now - ms),
                    RetryAt::Later(ms) => Some(now + ms),
                };
                let active = self.active_or_take(*queue).await?;
                if active.is_empty() {
                    let outcome = store
                        .fail(
                            name,
                            Fail {
                                id: "missing".to_owned(),
                                token: 1,
                                reason: "boom".into(),
                                stack: "trace".into(),
                                retry_at,
                                keep: *keep,
                            },
                            now,
                        )
                        .await
                        .or_fail()?;
                    prop_assert_eq!(outcome, FailOutcome::Stale);
                    return Ok(());
                }
                let (id, token) = active[pick.index(active.len())].clone();
                let reason = format!("{id} failed at {now}");
                let outcome = store
                    .fail(
                        name,
                        Fail {
                            id: id.clone(),
                            token,
                            reason: reason.clone(),
                            stack: "trace".into(),
                            retry_at,
                            keep: *keep,
                        },
                        now,
                    )
                    .await
                    .or_fail()?;
                let expected = match retry_at {
                    Some(at) => FailOutcome::Retrying { at },
                    None => FailOutcome::Failed,
                };
                prop_assert_eq!(outcome, expected);
                self.model.retire_token(*queue, &id);
                let order = self.model.next_order();
                let model_queue = &mut self.model.queues[*queue];
                if retry_at.is_none() && *keep == KeepJobs::NONE {
                    model_queue.jobs.remove(&id);
                    return Ok(());
                }
                let job = model_queue
                    .jobs
                    .get_mut(&id)
                    .expect("model: active job exists");
                job.attempts_made += 1;
                match retry_at {
                    Some(at) if at > now => {
                        job.state = JobState::Delayed;
                        job.order = order;
                        job.ready_at = at;
                        job.entered_at = now;
                        job.token = None;
                        job.failed_reason = Some(reason);
                    }
                    Some(_) => {
                        job.enter_waiting(order, now);
                        job.failed_reason = Some(reason);
                    }
                    None => {
                        job.enter_failed(&reason, now);
                        model_queue.trim(JobState::Failed, *keep, now);
                    }
                }
            }
            Op::Stall {
                queue,
                pick,
                max_stalled,
            } => {
                let name = QUEUES[*queue];
                let active = self.active_or_take(*queue).await?;
                if active.is_empty() {
                    let state = store
                        .stall(name, "missing", 1, *max_stalled, now)
                        .await
                        .or_fail()?;
                    prop_assert_eq!(state, None);
                    return Ok(());
                }
                let (id, token) = active[pick.index(active.len())].clone();
                let state = store
                    .stall(name, &id, token, *max_stalled, now)
                    .await
                    .or_fail()?;
                let expected = self.model.stall(*queue, &id, *max_stalled);
                prop_assert_eq!(state, Some(expected));
            }
            Op::Release { queue, pick } => {
                let name = QUEUES[*queue];
                let active = self.active_or_take(*queue).await?;
                if active.is_empty() {
                    let released = store.release(name, "missing", 1, now).await.or_fail()?;
                    prop_assert!(!released);
                    return Ok(());
                }
                let (id, token) = active[pick.index(active.len())].clone();
                let released = store.release(name, &id, token, now).await.or_fail()?;
                prop_assert!(released, "release of active job {} with its token", id);
                self.model.retire_token(*queue, &id);
                let job = self.model.queues[*queue]
                    .jobs
                    .get_mut(&id)
                    .expect("model: active job exists");
                // Back in its old place.
                let order = job.order;
                job.enter_waiting(order, now);
            }
            Op::Progress { queue, pick } => {
                let name = QUEUES[*queue];
                let active = self.active_or_take(*queue).await?;
                let Some((id, token)) = active.get(pick.index(active.len().max(1))).cloned() else {
                    return Ok(());
                };
                let progress = format!("{{\"at\":{now}}}");
                let recorded = store
                    .progress(name, &id, token, progress.clone())
                    .await
                    .or_fail()?;
                prop_assert!(recorded, "progress of active job {} with its token", id);
                let job = store.get(name, &id).await.or_fail()?;
                prop_assert_eq!(job.map(|job| job.status.progress), Some(progress));
            }
            Op::Stale {
                pick,
                call,
                cross_queue,
            } => {
                let target = if *cross_queue {
                    // A live token presented to the wrong queue.
                    let mut live: Vec<(usize, String, u64)> = Vec::new();
                    for queue in 0..QUEUES.len() {
                        live.extend(
                            self.active(queue)
                                .into_iter()
                                .map(|(id, token)| (1 - queue, id, token)),
                        );
                    }
                    live.get(pick.index(live.len().max(1))).cloned()
                } else {
                    let stale = &self.model.stale;
                    stale.get(pick.index(stale.len().max(1))).cloned()
                };
                let Some((queue, id, token)) = target else {
                    return Ok(());
                };
                let name = QUEUES[queue];
                let changed = match call {
                    StaleCall::Complete => store
                        .complete(
                            name,
                            Complete {
                                id: id.clone(),
                                token,
                                return_value: "null".into(),
                                keep: KeepJobs::ALL,
                            },
                            now,
                        )
                        .await
                        .or_fail()?,
                    StaleCall::Fail => {
                        let outcome = store
                            .fail(
                                name,
                                Fail {
                                    id: id.clone(),
                                    token,
                                    reason: "late".into(),
                                    stack: "late".into(),
                                    retry_at: None,
                                    keep: KeepJobs::ALL,
                                },
                                now,
                            )
                            .await
                            .or_fail()?;
                        outcome != FailOutcome::Stale
                    }
                    StaleCall::Stall => store
                        .stall(name, &id, token, 0, now)
                        .await
                        .or_fail()?
                        .is_some(),
                    StaleCall::Release => store.release(name, &id, token, now).await.or_fail()?,
                    StaleCall::Progress => store
                        .progress(name, &id, token, "50".into())
                        .await
                        .or_fail()?,
                };
                prop_assert!(
                    !changed,
                    "a stale token {} moved job {}/{}",
                    token,
                    name,
                    id
                );
            }
            Op::ForceFail { queue, pick } => {
                let id = self.any_id(*queue, pick);
                let reason = format!("cancelled at {now}");
                let failed = store
                    .force_fail(QUEUES[*queue], &id, reason.clone(), now)
                    .await
                    .or_fail()?;
                let is_active = self.model.queues[*queue]
                    .jobs
                    .get(&id)
                    .is_some_and(|job| job.state == JobState::Active);
                prop_assert_eq!(failed, is_active, "force_fail of {}", id);
                if is_active {
                    self.model.retire_token(*queue, &id);
                    let job = self.model.queues[*queue]
                        .jobs
                        .get_mut(&id)
                        .expect("model: active job exists");
                    job.attempts_made += 1;
                    job.enter_failed(&reason, now);
                }
            }
            Op::Advance { ms } => self.model.now += ms,
            Op::PromoteDue { queue } => {
                let mut promoted = store.promote_due(QUEUES[*queue], now).await.or_fail()?;
                let due: Vec<String> = self.model.queues[*queue]
                    .sorted_by(JobState::Delayed, |job| (job.ready_at, job.order))
                    .into_iter()
                    .filter(|id| self.model.queues[*queue].jobs[id].ready_at <= now)
                    .collect();
                // Earlier due dates queue first; a promoted job has been ready since it was due.
                for id in &due {
                    let order = self.model.next_order();
                    let job = self.model.queues[*queue]
                        .jobs
                        .get_mut(id)
                        .expect("model: due job exists");
                    let due_at = job.ready_at;
                    job.enter_waiting(order, due_at);
                }
                let mut due = due;
                promoted.sort();
                due.sort();
                prop_assert_eq!(promoted, due);
            }
            Op::Promote { queue, pick } => {
                let id = self.any_id(*queue, pick);
                let promoted = store.promote(QUEUES[*queue], &id, now).await.or_fail()?;
                let delayed = self.model.queues[*queue]
                    .jobs
                    .get(&id)
                    .is_some_and(|job| job.state == JobState::Delayed);
                prop_assert_eq!(promoted, delayed, "promote of {}", id);
                if delayed {
                    let order = self.model.next_order();
                    let job = self.model.queues[*queue]
                        .jobs
                        .get_mut(&id)
                        .expect("model: delayed job exists");
                    job.enter_waiting(order, now);
                }
            }
            Op::Retry { queue, pick } => {
                let id = self.any_id(*queue, pick);
                let retried = store.retry(QUEUES[*queue], &id, now).await.or_fail()?;
                let failed = self.model.queues[*queue]
                    .jobs
                    .get(&id)
                    .is_some_and(|job| job.state == JobState::Failed);
                prop_assert_eq!(retried, failed, "retry of {}", id);
                if failed {
                    let order = self.model.next_order();
                    let job = self.model.queues[*queue]
                        .jobs
                        .get_mut(&id)
                        .expect("model: failed job exists");
                    job.revive(order, now);
                }
            }
            Op::RetryAllFailed { queue } => {
                let count = store
                    .retry_all_failed(QUEUES[*queue], now)
                    .await
                    .or_fail()?;
                // Oldest failure first, so retried jobs keep the order they failed in.
                let failed =
                    self.model.queues[*queue].sorted_by(JobState::Failed, ModelJob::finished_rank);
                prop_assert_eq!(count, failed.len() as u64);
                for id in &failed {
                    let order = self.model.next_order();
                    let job = self.model.queues[*queue]
                        .jobs
                        .get_mut(id)
                        .expect("model: failed job exists");
                    job.revive(order, now);
                }
            }
            Op::Remove { queue, pick } => {
                let id = self.any_id(*queue, pick);
                let outcome = store.remove(QUEUES[*queue], &id).await.or_fail()?;
                let model_queue = &mut self.model.queues[*queue];
                let expected = match model_queue.jobs.get(&id).map(|job| job.state) {
                    None => RemovedOutcome::NotFound,
                    Some(JobState::Active) => RemovedOutcome::Active,
                    Some(_) => {
                        model_queue.jobs.remove(&id);
                        RemovedOutcome::Removed
                    }
                };
                prop_assert_eq!(outcome, expected, "remove of {}", id);
            }
            Op::Clean {
                queue,
                state,
                grace_ms,
                limit,
            } => {
                let removed = store
                    .clean(QUEUES[*queue], *state, *grace_ms, *limit, now)
                    .await
                    .or_fail()?;
                let model_queue = &mut self.model.queues[*queue];
                let eligible: BTreeSet<String> = model_queue
                    .jobs
                    .iter()
                    // "Entered it at least grace_ms ago"; for delayed jobs that is when they were
                    // delayed, not when they are due (see
                    // `regression_clean_delayed_counts_from_when_the_job_was_delayed`).
                    .filter(|(_, job)| job.state == *state && now - job.entered_at >= *grace_ms)
                    .map(|(id, _)| id.clone())
                    .collect();
                let expected_len = if *limit == 0 {
                    eligible.len()
                } else {
                    eligible.len().min(*limit as usize)
                };
                let removed_set: BTreeSet<String> = removed.iter().cloned().collect();
                prop_assert_eq!(
                    removed_set.len(),
                    removed.len(),
                    "clean returned an id twice: {:?}",
                    removed
                );
                prop_assert!(
                    removed_set.is_subset(&eligible),
                    "clean removed {:?}, but only {:?} were eligible",
                    removed_set,
                    eligible
                );
                prop_assert_eq!(
                    removed.len(),
                    expected_len,
                    "clean removed {:?} of eligible {:?}",
                    removed_set,
                    eligible
                );
                for id in &removed {
                    model_queue.jobs.remove(id);
                }
            }
            Op::Drain {
                queue,
                include_delayed,
            } => {
                let count = store
                    .drain(QUEUES[*queue], *include_delayed)
                    .await
                    .or_fail()?;
                let model_queue = &mut self.model.queues[*queue];
                let before = model_queue.jobs.len();
                model_queue.jobs.retain(|_, job| {
                    job.state != JobState::Waiting
                        && !(*include_delayed && job.state == JobState::Delayed)
                });
                prop_assert_eq!(count, (before - model_queue.jobs.len()) as u64);
            }
            Op::SetPaused { queue, paused } => {
                store.set_paused(QUEUES[*queue], *paused).await.or_fail()?;
                self.model.queues[*queue].paused = *paused;
            }
            Op::Trim {
                queue,
                keep_completed,
                keep_failed,
            } => {
                let count = store
                    .trim(QUEUES[*queue], *keep_completed, *keep_failed, now)
                    .await
                    .or_fail()?;
                let model_queue = &mut self.model.queues[*queue];
                let expected = model_queue.trim(JobState::Completed, *keep_completed, now)
                    + model_queue.trim(JobState::Failed, *keep_failed, now);
                prop_assert_eq!(count, expected);
            }
            Op::Log { queue, pick } => {
                let name = QUEUES[*queue];
                let id = self.any_id(*queue, pick);
                let line = format!("line at {now}");
                let logged = store.log(name, &id, line.clone()).await.or_fail()?;
                let job = self.model.queues[*queue].jobs.get_mut(&id);
                prop_assert_eq!(logged, job.is_some(), "log to {}", id);
                if let Some(job) = job {
                    job.logs.push(line);
                    let lines = store.logs(name, &id).await.or_fail()?;
                    // Lines logged but not yet group-committed must show too (see
                    // `regression_logs_returns_lines_just_logged`).
                    prop_assert_eq!(&lines, &job.logs, "logs of {}", id);
                }
            }
            Op::Reopen { .. } => {}
        }
        Ok(())
    }

    async fn add(&mut self, queue: usize, specs: &[AddSpec]) -> Result<(), TestCaseError> {
        let now = self.model.now;
        let jobs: Vec<NewJob> = specs
            .iter()
            .map(|spec| {
                self.model.names += 1;
                NewJob {
                    name: format!("job-{}", self.model.names),
                    data: format!("{{\"n\":{}}}", self.model.names),
                    opts: JobOptions {
                        priority: spec.priority,
                        delay_ms: spec.delay_ms,
                        lifo: spec.lifo,
                        job_id: spec.job_id.map(str::to_owned),
                        group: spec.group.map(str::to_owned),
                        ..JobOptions::default()
                    },
                }
            })
            .collect();
        let added = self
            .store()
            .add(QUEUES[queue], jobs.clone(), now)
            .await
            .or_fail()?;
        prop_assert_eq!(added.len(), jobs.len());
        for (job, result) in jobs.into_iter().zip(added) {
            if let Some(existing) = job
                .opts
                .job_id
                .as_ref()
                .and_then(|id| self.model.queues[queue].jobs.get(id))
            {
                let expected = Added {
                    id: job.opts.job_id.clone().unwrap_or_default(),
                    existed: true,
                    state: existing.state,
                };
                prop_assert_eq!(result, expected);
                continue;
            }
            let state = if job.opts.delay_ms > 0 {
                JobState::Delayed
            } else {
                JobState::Waiting
            };
            prop_assert!(
                !result.existed,
                "fresh job reported as existing: {:?}",
                result
            );
            prop_assert_eq!(result.state, state);
            prop_assert!(
                !self.model.queues[queue].jobs.contains_key(&result.id),
                "add returned id {} of another job",
                result.id
            );
            match &job.opts.job_id {
                Some(id) => prop_assert_eq!(&result.id, id),
                None => {
                    let numeric: u64 = result.id.parse().map_err(|_| {
                        TestCaseError::fail(format!("automatic id {} is not a number", result.id))
                    })?;
                    prop_assert!(
                        numeric > self.model.last_auto_id[queue],
                        "automatic id {} after {}",
                        numeric,
                        self.model.last_auto_id[queue]
                    );
                    self.model.last_auto_id[queue] = numeric;
                }
            }
            let order = self.model.next_order();
            let ready_at = now + job.opts.delay_ms;
            let model_queue = &mut self.model.queues[queue];
            model_queue.ever.insert(result.id.clone());
            model_queue.jobs.insert(
                result.id,
                ModelJob {
                    name: job.name,
                    created_at: now,
                    state,
                    order,
                    priority: job.opts.priority.unwrap_or(u32::MAX),
                    lifo: job.opts.lifo,
                    ready_at,
                    entered_at: now,
                    processed_at: None,
                    finished_at: None,
                    attempts_made: 0,
                    stalled_count: 0,
                    token: None,
                    lease_until: None,
                    return_value: None,
                    failed_reason: None,
                    logs: Vec::new(),
                    group: job.opts.group.clone(),
                },
            );
        }
        Ok(())
    }

    async fn take(&mut self, queue: usize) -> Result<(), TestCaseError> {
        let now = self.model.now;
        let taken = self
            .store()
            .take(QUEUES[queue], take_request(queue), now)
            .await
            .or_fail()?
            .job();
        let takeable = self.model.queues[queue].takeable(GROUP_LIMITS[queue]);
        let Some(taken) = taken else {
            prop_assert!(
                takeable.is_empty(),
                "take found nothing while {:?} could run",
                takeable
            );
            return Ok(());
        };
        prop_assert!(
            takeable.contains(&taken.id),
            "take handed out {} instead of one of {:?}",
            taken.id,
            takeable
        );
        let id = taken.id.clone();
        prop_assert!(
            taken.token > self.model.last_token[queue],
            "token {} reused",
            taken.token
        );
        self.model.last_token[queue] = taken.token;
        let model_queue = &mut self.model.queues[queue];
        let job = model_queue
            .jobs
            .get_mut(&id)
            .expect("model: taken job exists");
        prop_assert_eq!(&taken.spec.name, &job.name);
        prop_assert_eq!(taken.attempts_made, job.attempts_made);
        prop_assert_eq!(taken.ready_at, job.ready_at);
        job.state = JobState::Active;
        job.processed_at = Some(now);
        job.entered_at = now;
        job.token = Some(taken.token);
        job.lease_until = Some(now + LEASE_MS);
        let more_waiting = model_queue
            .jobs
            .values()
            .any(|job| job.state == JobState::Waiting);
        prop_assert_eq!(taken.more_waiting, more_waiting);
        Ok(())
    }

    /// Closes the store (everything queued is committed on drop) and opens it again, then
    /// recovers each queue's active jobs as the engine does at start-up.
    ///
    /// A backend that is not durable has no restart: it keeps its store, and only the recovery
    /// runs. Its tokens do not die with a process, so the recovered jobs' tokens stay on the
    /// stale list (each must stay powerless) and new tokens keep counting up.
    async fn reopen(&mut self, max_stalled: u32) -> Result<(), TestCaseError> {
        let durable = self.backend.is_durable();
        let store = if durable {
            drop(self.store.take());
            let store = open_again(self.dir.path()).await?;
            self.store = Some(store.clone());
            self.model.stale.clear();
            self.model.last_token = [0; 2];
            store
        } else {
            self.store()
        };
        let now = self.model.now;
        for (queue, name) in QUEUES.iter().enumerate() {
            let mut recovered: Vec<String> = store
                .expire_leases(name, now, max_stalled)
                .await
                .or_fail()?
                .into_iter()
                .map(|expired| expired.id)
                .collect();
            // A process that ended held no lease: all its active jobs lapsed. A live store keeps
            // the leases it granted, and only the lapsed ones expire.
            let queue_model = &self.model.queues[queue];
            let mut expected: Vec<String> = queue_model
                .sorted_by(JobState::Active, |job| {
                    (job.processed_at.unwrap_or(0), job.order)
                })
                .into_iter()
                .filter(|id| {
                    durable
                        || queue_model
                            .jobs
                            .get(id)
                            .is_some_and(|job| job.lease_until.unwrap_or(0) <= now)
                })
                .collect();
            for id in &expected {
                self.model.stall(queue, id, max_stalled);
            }
            recovered.sort();
            expected.sort();
            prop_assert_eq!(recovered, expected, "expire_leases of {}", name);
        }
        if durable {
            // The dead process's tokens died with it.
            self.model.stale.clear();
        }
        Ok(())
    }

    /// Every observable of both queues agrees with the model.
    async fn check(&self) -> Result<(), TestCaseError> {
        let store = self.store();
        for (queue, name) in QUEUES.iter().enumerate() {
            let model_queue = &self.model.queues[queue];
            let counts = store.counts(name).await.or_fail()?;
            let expected = model_queue.counts();
            let actual: Vec<u64> = JobState::ALL
                .iter()
                .map(|state| counts.get(*state))
                .collect();
            prop_assert_eq!(
                &actual[..],
                &expected[..],
                "counts of {} (waiting, delayed, active, completed, failed)",
                name
            );
            prop_assert_eq!(counts.total(), model_queue.jobs.len() as u64);

            let mut listed: BTreeMap<String, JobState> = BTreeMap::new();
            let mut active_by_group: BTreeMap<String, usize> = BTreeMap::new();
            for state in JobState::ALL {
                let page = store.list(name, state, 0, 10_000).await.or_fail()?;
                prop_assert_eq!(
                    page.total,
                    counts.get(state),
                    "list total of {} {}",
                    name,
                    state
                );
                prop_assert_eq!(
                    page.jobs.len() as u64,
                    page.total,
                    "list of {} {}",
                    name,
                    state
                );
                for job in page.jobs {
                    prop_assert_eq!(job.status.state, state, "{} listed under {}", job.id, state);
                    if let (JobState::Active, Some(group)) = (state, &job.status.group) {
                        *active_by_group.entry(group.clone()).or_default() += 1;
                    }
                    let twice = listed.insert(job.id.clone(), state);
                    prop_assert!(
                        twice.is_none(),
                        "{}/{} listed twice: {:?} and {}",
                        name,
                        job.id,
                        twice,
                        state
                    );
                }
            }
            let expected_listing: BTreeMap<String, JobState> = model_queue
                .jobs
                .iter()
                .map(|(id, job)| (id.clone(), job.state))
                .collect();
            prop_assert_eq!(listed, expected_listing, "lists of {}", name);

            // Only the attempt holding an active job's current token owns it.
            for (id, job) in &model_queue.jobs {
                let token = job.token.unwrap_or(0);
                let expected = job.state == JobState::Active && job.token.is_some();
                let owns = store.owns(name, id, token).await.or_fail()?;
                prop_assert_eq!(owns, expected, "{}/{} owned by token {}", name, id, token);
                let other = store.owns(name, id, token + 1).await.or_fail()?;
                prop_assert!(!other, "{}/{} owned by a token never handed out", name, id);
            }

            // Ids of both queues: a job must not be visible through the other queue's name.
            let every_id = self.model.queues[0].ever.union(&self.model.queues[1].ever);
            for id in every_id {
                let job = store.get(name, id).await.or_fail()?;
                match (job, model_queue.jobs.get(id)) {
                    (Some(job), Some(expected)) => {
                        prop_assert_eq!(&job.id, id);
                        prop_assert_eq!(
                            seen_from_store(&job),
                            seen_from_model(expected),
                            "job {}/{}",
                            name,
                            id
                        );
                    }
                    (None, None) => {}
                    (job, expected) => {
                        return Err(TestCaseError::fail(format!(
                            "job {name}/{id}: store has {:?}, model has {:?}",
                            job.map(|job| job.status.state),
                            expected.map(|job| job.state)
                        )))
                    }
                }
            }

            // No group ever has more active jobs than its queue allows, as the store lists them.
            for (group, active) in &active_by_group {
                prop_assert!(
                    *active <= GROUP_LIMITS[queue] as usize,
                    "{} jobs of group {} active in {}",
                    active,
                    group,
                    name
                );
                prop_assert_eq!(*active, model_queue.active_in(group), "active in {}", group);
            }

            prop_assert_eq!(store.is_paused(name).await.or_fail()?, model_queue.paused);
            let next_due = model_queue
                .jobs
                .values()
                .filter(|job| job.state == JobState::Delayed)
                .map(|job| job.ready_at)
                .min();
            prop_assert_eq!(
                store.next_due(name).await.or_fail()?,
                next_due,
                "next_due of {}",
                name
            );
            let oldest_waiting = model_queue
                .jobs
                .values()
                .filter(|job| job.state == JobState::Waiting)
                .map(|job| job.ready_at)
                .min();
            prop_assert_eq!(
                store.oldest_waiting(name).await.or_fail()?,
                oldest_waiting,
                "oldest_waiting of {}",
                name
            );
        }
        Ok(())
    }
}

/// Opens the store again after its previous handle was dropped. sled 0.34 releases its file
/// lock from background threads a moment after the last `Db` handle goes (spacejam/sled#1234,
/// #1289), so a same-process reopen waits out that window; a real restart is a new process.
async fn open_again(dir: &Path) -> Result<Arc<dyn JobStore>, TestCaseError> {
    let mut attempts = 0;
    loop {
        match store::open(&StoreConfig::sled(dir)).map(|stores| stores.jobs) {
            Ok(store) => return Ok(store),
            Err(StoreError::Io(message))
                if message.contains("could not acquire lock") && attempts < 300 =>
            {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => return Err(TestCaseError::fail(format!("reopen failed: {err}"))),
        }
    }
}

fn at_step(step: usize, op: &Op, err: TestCaseError) -> TestCaseError {
    match err {
        TestCaseError::Fail(reason) => {
            TestCaseError::fail(format!("step {step} {op:?}: {}", reason.message()))
        }
        other => other,
    }
}

async fn run(backend: Backend, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut harness = Harness::new(backend)?;
    for (step, op) in ops.iter().enumerate() {
        harness
            .apply(op)
            .await
            .map_err(|err| at_step(step, op, err))?;
        harness
            .check()
            .await
            .map_err(|err| at_step(step, op, err))?;
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(64)
}

on_every_backend! {
    #[test]
    fn store_agrees_with_the_model;
    #[test]
    fn regression_logs_returns_lines_just_logged;
    #[test]
    fn regression_clean_delayed_counts_from_when_the_job_was_delayed;
    #[test]
    fn regression_age_retention_removes_jobs_exactly_that_old;
}

/// The property: `cases()` random sequences of up to 40 operations, on every backend alike.
fn store_agrees_with_the_model(backend: Backend) {
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(),
        // Failures print their minimal sequence; keep the source tree free of regression files.
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let ops = prop::collection::vec(op_strategy(), 1..=40);
    if let Err(failure) = runner.run(&ops, |ops| runtime().block_on(run(backend, ops))) {
        panic!("{backend:?} store disagrees with the model: {failure}");
    }
}

fn single_job(delay_ms: u64) -> Vec<NewJob> {
    vec![NewJob {
        name: "job".to_owned(),
        data: "{}".to_owned(),
        opts: JobOptions {
            delay_ms,
            ..JobOptions::default()
        },
    }]
}

/// `log` only queues its write for the commit thread while `logs` reads the tree, so the lines
/// a caller just appended are missing until the next group commit lands.
fn regression_logs_returns_lines_just_logged(backend: Backend) {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = backend.open(dir.path()).unwrap();
        let id = store.add("main", single_job(0), START).await.unwrap()[0]
            .id
            .clone();
        let mut expected = Vec::new();
        for n in 0..20 {
            let line = format!("line {n}");
            assert!(store.log("main", &id, line.clone()).await.unwrap());
            expected.push(line);
            let lines = store.logs("main", &id).await.unwrap();
            assert_eq!(lines, expected, "logs right after log #{n}");
        }
    });
}

/// `clean(Delayed, grace_ms)` measures a delayed job's age from its due time (`ready_at`, in the
/// future) rather than from when it entered `delayed`, so jobs delayed long ago are never cleaned
/// while they wait, and `grace_ms = 0` does not clean every delayed job.
fn regression_clean_delayed_counts_from_when_the_job_was_delayed(backend: Backend) {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = backend.open(dir.path()).unwrap();
        let first = store.add("main", single_job(1_000), START).await.unwrap()[0]
            .id
            .clone();
        let removed = store
            .clean("main", JobState::Delayed, 0, 0, START)
            .await
            .unwrap();
        assert_eq!(
            removed,
            vec![first],
            "grace 0: every delayed job entered its state >= 0 ms ago"
        );

        let second = store.add("main", single_job(10_000), START).await.unwrap()[0]
            .id
            .clone();
        let removed = store
            .clean("main", JobState::Delayed, 1_000, 0, START + 2_000)
            .await
            .unwrap();
        assert_eq!(removed, vec![second], "delayed 2000 ms ago, grace 1000 ms");
    });
}

/// `KeepJobs::age_ms` keeps "only jobs finished less than this many milliseconds ago", but the
/// trim keeps a job finished exactly `age_ms` ago (it removes `finished_at < now - age` rather than
/// `<=`; Bull's `removeJobsByMaxAge` is inclusive too).
fn regression_age_retention_removes_jobs_exactly_that_old(backend: Backend) {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = backend.open(dir.path()).unwrap();
        store.add("main", single_job(0), START).await.unwrap();
        let taken = store
            .take("main", TAKE, START)
            .await
            .unwrap()
            .job()
            .unwrap();
        let done = store
            .complete(
                "main",
                Complete {
                    id: taken.id.clone(),
                    token: taken.token,
                    return_value: "null".into(),
                    keep: KeepJobs::ALL,
                },
                START,
            )
            .await
            .unwrap();
        assert!(done);
        let keep = KeepJobs {
            count: None,
            age_ms: Some(1_000),
        };
        let removed = store
            .trim("main", keep, KeepJobs::ALL, START + 1_000)
            .await
            .unwrap();
        assert_eq!(
            removed, 1,
            "a job finished exactly 1000 ms ago is not younger than 1000 ms"
        );
        assert_eq!(store.counts("main").await.unwrap().completed, 0);
    });
}
