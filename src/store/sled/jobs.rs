//! The sled job store: job records on disk, their indexes in memory.
//!
//! Each job is two keys in one tree: its spec (name, data, options; written once) and its status
//! (state, attempts, timestamps; rewritten by every transition). The indexes a scheduler needs
//! (waiting by priority and order, delayed by due time, finished jobs by age) live only in memory
//! and are rebuilt from the status records at start-up, so they can never disagree with the disk:
//! the status record *is* the index. A transition changes the in-memory state and queues its
//! writes to the [`Committer`] under one per-queue lock, so the disk sees transitions in the order
//! memory did.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use super::committer::{AfterCommit, Committer, Write};
use super::Database;
use crate::store::codec::{decode, decode_versioned, encode, encode_versioned};
use crate::store::groups::{Lanes, Pick};
use crate::store::job::{
    Added, Complete, Counts, Expired, Fail, FailOutcome, Job, JobPage, JobSpec, JobState,
    JobStatus, KeepJobs, Millis, NewJob, Take, TakeRequest, TakenJob,
};
use crate::store::leases::{Leases, RateWindow};
use crate::store::watch::Watches;
use crate::store::{
    CommitTimeLog, JobStore, RemovedIds, RemovedOutcome, StorageStats, StoreActivity, StoreError,
    WorkWatch,
};

const SPEC: u8 = b'd';
const STATUS: u8 = b's';
const LOG: u8 = b'l';
const PAUSED: u8 = b'p';
const COUNTER_KEY: &[u8] = b"m:order";
/// Removals done inline by one completion; the background trim does the rest.
const MAX_INLINE_TRIM: usize = 1_000;

/// `order` values of LIFO jobs sort below this, FIFO jobs above, so at equal priority every LIFO
/// job (newest first) runs before the FIFO ones, as in Bull.
const LIFO_PIVOT: u64 = 1 << 62;

type IndexKey = (u64, u64, Arc<str>);

/// Resolves with the outcome of an add's commit.
type PendingAdd = Shared<BoxFuture<'static, Result<(), StoreError>>>;

fn key(kind: u8, queue: &str, id: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(2 + queue.len() + id.len());
    bytes.push(kind);
    bytes.extend_from_slice(queue.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(id.as_bytes());
    bytes
}

fn log_key(queue: &str, id: &str, n: u32) -> Vec<u8> {
    let mut bytes = key(LOG, queue, id);
    bytes.push(0);
    bytes.extend_from_slice(&n.to_be_bytes());
    bytes
}

fn paused_key(queue: &str) -> Vec<u8> {
    let mut bytes = vec![PAUSED];
    bytes.extend_from_slice(queue.as_bytes());
    bytes
}

/// Splits a spec or status key into (queue, id).
fn split_key(bytes: &[u8]) -> Option<(String, String)> {
    let rest = bytes.get(1..)?;
    let zero = rest.iter().position(|&b| b == 0)?;
    let queue = std::str::from_utf8(&rest[..zero]).ok()?;
    let id = std::str::from_utf8(&rest[zero + 1..]).ok()?;
    Some((queue.to_owned(), id.to_owned()))
}

/// Where a status sits in its state's index.
fn index_key(id: &Arc<str>, status: &JobStatus) -> IndexKey {
    match status.state {
        JobState::Waiting => {
            let order = if status.lifo {
                LIFO_PIVOT - status.order.min(LIFO_PIVOT - 1)
            } else {
                LIFO_PIVOT + status.order
            };
            (u64::from(status.priority), order, id.clone())
        }
        JobState::Delayed => (status.ready_at, status.order, id.clone()),
        JobState::Active => (status.processed_at.unwrap_or(0), status.order, id.clone()),
        JobState::Completed | JobState::Failed => {
            (status.finished_at.unwrap_or(0), status.order, id.clone())
        }
    }
}

struct Entry {
    id: Arc<str>,
    status: JobStatus,
    /// Added but not yet durable: invisible to every operation but dedupe, which waits on this
    /// for the add's outcome.
    pending: Option<PendingAdd>,
    /// The spec of a job added by this process and not yet taken, so its first `take` need not
    /// read it back and decode it. Only jobs waiting to run hold one.
    unread_spec: Option<JobSpec>,
}

#[derive(Default)]
struct QueueIndex {
    jobs: HashMap<Arc<str>, Entry>,
    by_state: [BTreeSet<IndexKey>; 5],
    paused: bool,
    /// Lease deadlines of the active jobs' attempts. In memory only: the process that holds a
    /// lease is the only one using the database, so none survives a restart, and active jobs
    /// found at open are recovered by the first expiry pass.
    leases: Leases,
    /// The rate limit's current window (in memory, like the leases).
    rate: RateWindow,
    /// Waiting jobs by group in turn order, each group's active count and rate window (in
    /// memory, rebuilt from the status records like the indexes).
    lanes: Lanes<IndexKey>,
    /// A job of a group with waiting jobs left `active` since the last look.
    freed: bool,
}

fn slot(state: JobState) -> usize {
    match state {
        JobState::Waiting => 0,
        JobState::Delayed => 1,
        JobState::Active => 2,
        JobState::Completed => 3,
        JobState::Failed => 4,
    }
}

impl QueueIndex {
    /// The active jobs with the token of the attempt that holds each.
    fn active(&self) -> Vec<(Arc<str>, u64)> {
        self.set(JobState::Active)
            .iter()
            .filter_map(|(_, _, id)| {
                let entry = self.jobs.get(id)?;
                Some((id.clone(), entry.status.token))
            })
            .collect()
    }

    fn set(&self, state: JobState) -> &BTreeSet<IndexKey> {
        &self.by_state[slot(state)]
    }

    fn insert_visible(&mut self, entry: Entry) {
        let index = index_key(&entry.id, &entry.status);
        self.lanes.enter(
            entry.status.group.as_deref(),
            entry.status.state,
            index.clone(),
        );
        self.by_state[slot(entry.status.state)].insert(index);
        self.jobs.insert(entry.id.clone(), entry);
    }

    /// Whether a job of a group with waiting jobs left `active` since the last call (a worker
    /// may start one of them now).
    fn take_freed(&mut self) -> bool {
        std::mem::take(&mut self.freed)
    }

    /// Whether `token` is the current attempt of an active job.
    fn owns(&self, id: &str, token: u64) -> bool {
        self.visible(id).is_some_and(|entry| {
            entry.status.state == JobState::Active && entry.status.token == token
        })
    }

    fn is_in(&self, id: &str, state: JobState) -> bool {
        self.visible(id)
            .is_some_and(|entry| entry.status.state == state)
    }

    fn visible(&self, id: &str) -> Option<&Entry> {
        self.jobs.get(id).filter(|entry| entry.pending.is_none())
    }

    /// Applies `change` to a visible job's status, keeping its index entry in step, and returns
    /// the new status.
    fn update(&mut self, id: &str, change: impl FnOnce(&mut JobStatus)) -> Option<&JobStatus> {
        let entry = self
            .jobs
            .get_mut(id)
            .filter(|entry| entry.pending.is_none())?;
        let (state_before, before) = (entry.status.state, index_key(&entry.id, &entry.status));
        change(&mut entry.status);
        let after = index_key(&entry.id, &entry.status);
        // Progress and log updates leave the job where it is in its index.
        if entry.status.state != state_before || after != before {
            let group = entry.status.group.as_deref();
            self.freed |= self.lanes.leave(group, state_before, &before);
            self.lanes.enter(group, entry.status.state, after.clone());
            self.by_state[slot(state_before)].remove(&before);
            self.by_state[slot(entry.status.state)].insert(after);
        }
        Some(&entry.status)
    }

    fn remove(&mut self, id: &str) -> Option<Entry> {
        let entry = self.jobs.remove(id)?;
        if entry.pending.is_some() {
            // Never indexed: an add whose commit failed.
            return Some(entry);
        }
        let index = index_key(&entry.id, &entry.status);
        self.freed |= self
            .lanes
            .leave(entry.status.group.as_deref(), entry.status.state, &index);
        self.by_state[slot(entry.status.state)].remove(&index);
        Some(entry)
    }

    fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for state in JobState::ALL {
            *counts.get_mut(state) = self.set(state).len() as u64;
        }
        counts
    }
}

pub struct SledJobStore {
    db: sled::Db,
    queues: RwLock<HashMap<String, Arc<Mutex<QueueIndex>>>>,
    /// Source of `order` values and automatic job ids; persisted by the committer.
    counter: Arc<AtomicU64>,
    /// Attempt tokens; only need to be unique within one process lifetime.
    tokens: AtomicU64,
    committer: Committer,
    /// Wakes idle workers of every handle when a job becomes takeable.
    watches: Watches,
}

impl SledJobStore {
    /// Opens the job tree of `db` and rebuilds every index from the stored status records.
    pub fn open(database: &Database) -> Result<SledJobStore, StoreError> {
        let db = database.db.clone();
        let tree = db.open_tree("jobs")?;
        let mut queues: HashMap<String, QueueIndex> = HashMap::new();
        let mut highest = match tree.get(COUNTER_KEY)? {
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .as_ref()
                    .try_into()
                    .map_err(|_| StoreError::Codec("bad order counter".to_owned()))?,
            ),
            None => 0,
        };
        for item in tree.scan_prefix([STATUS]) {
            let (stored_key, value) = item?;
            let (queue, id) = split_key(&stored_key)
                .ok_or_else(|| StoreError::Codec("bad job key".to_owned()))?;
            let status: JobStatus = decode_versioned(&value)?;
            highest = highest.max(status.order);
            if let Ok(numeric) = id.parse::<u64>() {
                highest = highest.max(numeric);
            }
            let entry = Entry {
                id: Arc::from(id.as_str()),
                status,
                pending: None,
                unread_spec: None,
            };
            queues.entry(queue).or_default().insert_visible(entry);
        }
        for item in tree.scan_prefix([PAUSED]) {
            let (stored_key, _) = item?;
            let queue = String::from_utf8_lossy(&stored_key[1..]).into_owned();
            queues.entry(queue).or_default().paused = true;
        }
        let committer = database.committer(tree.clone(), COUNTER_KEY.to_vec(), highest, true)?;
        Ok(SledJobStore {
            db,
            queues: RwLock::new(
                queues
                    .into_iter()
                    .map(|(name, index)| (name, Arc::new(Mutex::new(index))))
                    .collect(),
            ),
            counter: Arc::new(AtomicU64::new(highest)),
            tokens: AtomicU64::new(0),
            committer,
            watches: Watches::default(),
        })
    }

    fn queue(&self, name: &str) -> Arc<Mutex<QueueIndex>> {
        if let Some(queue) = self.queues.read().get(name) {
            return queue.clone();
        }
        self.queues
            .write()
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    fn next_order(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn next_token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn read_spec(&self, queue: &str, id: &str) -> Result<JobSpec, StoreError> {
        match self.committer.get(&key(SPEC, queue, id))? {
            Some(bytes) => decode_versioned(&bytes),
            None => Err(StoreError::Codec(format!("job {queue}/{id} has no spec"))),
        }
    }

    /// Number of batches committed so far (group commit makes this far below the op count).
    pub fn batch_count(&self) -> u64 {
        self.committer.batch_count()
    }

    pub fn storage_errors(&self) -> u64 {
        self.committer.error_count()
    }

    /// Number of checkpoints completed so far (sled flushed and synced, a log emptied).
    pub fn checkpoint_count(&self) -> u64 {
        self.committer.checkpoint_count()
    }

    /// Queues writes for a durable operation. Call it while holding the queue's lock, so the
    /// disk sees this operation's writes in the order memory did; await the result after.
    fn submit(&self, writes: Vec<Write>, counter: u64) -> Option<Durable> {
        if writes.is_empty() {
            return None;
        }
        Some(self.committer.submit_durable(writes, counter, None))
    }
}

type Durable = oneshot::Receiver<Result<(), StoreError>>;

/// Waits until a durable operation's writes are on disk.
async fn wait(durable: Option<Durable>) -> Result<(), StoreError> {
    match durable {
        Some(receiver) => receiver.await.unwrap_or(Err(StoreError::Closed)),
        None => Ok(()),
    }
}

fn put_status(
    writes: &mut Vec<Write>,
    queue: &str,
    id: &str,
    status: &JobStatus,
) -> Result<(), StoreError> {
    writes.push(Write::Put(
        key(STATUS, queue, id),
        encode_versioned(status)?,
    ));
    Ok(())
}

fn delete_job(writes: &mut Vec<Write>, queue: &str, id: &str, status: &JobStatus) {
    writes.push(Write::Delete(key(SPEC, queue, id)));
    writes.push(Write::Delete(key(STATUS, queue, id)));
    for n in 0..status.log_count {
        writes.push(Write::Delete(log_key(queue, id, n)));
    }
}

/// Removes finished jobs in `state` beyond `keep`, oldest first, up to `limit` of them.
fn trim_state(
    index: &mut QueueIndex,
    writes: &mut Vec<Write>,
    queue: &str,
    state: JobState,
    keep: KeepJobs,
    now: Millis,
    limit: usize,
) -> u64 {
    if keep.keeps_everything() {
        return 0;
    }
    let mut doomed: Vec<Arc<str>> = Vec::new();
    let set = index.set(state);
    let over_count = match keep.count {
        Some(count) => (set.len() as u64).saturating_sub(count) as usize,
        None => 0,
    };
    let cutoff = keep.age_ms.map(|age| now.saturating_sub(age));
    for (position, (finished_at, _, id)) in set.iter().enumerate() {
        if doomed.len() >= limit {
            break;
        }
        let too_many = position < over_count;
        // Bull removes a job exactly `age` old too.
        let too_old = cutoff.is_some_and(|cutoff| *finished_at <= cutoff);
        if !too_many && !too_old {
            break;
        }
        doomed.push(id.clone());
    }
    for id in &doomed {
        if let Some(entry) = index.remove(id) {
            delete_job(writes, queue, id, &entry.status);
        }
    }
    doomed.len() as u64
}

/// Sends a job back to `waiting` (or `failed` past the stall limit) after its worker was lost.
fn stall_entry(
    index: &mut QueueIndex,
    writes: &mut Vec<Write>,
    queue: &str,
    id: &str,
    max_stalled: u32,
    order: u64,
    now: Millis,
) -> Result<Option<JobState>, StoreError> {
    let status = index.update(id, |status| {
        status.stalled_count += 1;
        status.token = 0;
        if status.stalled_count > max_stalled {
            status.state = JobState::Failed;
            status.entered_at = now;
            status.finished_at = Some(now);
            status.failed_reason = Some("job stalled more than allowable limit".to_owned());
        } else {
            status.state = JobState::Waiting;
            status.entered_at = now;
            status.order = order;
            status.ready_at = now;
        }
    });
    match status {
        Some(status) => {
            let state = status.state;
            put_status(writes, queue, id, status)?;
            Ok(Some(state))
        }
        None => Ok(None),
    }
}

#[async_trait]
impl JobStore for SledJobStore {
    async fn add(
        &self,
        queue: &str,
        jobs: Vec<NewJob>,
        now: Millis,
    ) -> Result<Vec<Added>, StoreError> {
        let index = self.queue(queue);
        let mut writes = Vec::with_capacity(jobs.len() * 2);
        let mut added = Vec::with_capacity(jobs.len());
        let mut fresh: Vec<Arc<str>> = Vec::new();
        // Adds of the same `jobId` still in flight: this add is acknowledged only after them.
        let mut earlier: Vec<PendingAdd> = Vec::new();
        let mut counter = 0;
        let mut any_waiting = false;
        let own = {
            let mut guard = index.lock();
            // Every job of this add shares one handle on the commit's outcome.
            let (tell, told) = oneshot::channel::<Result<(), StoreError>>();
            let commit: PendingAdd = async move { told.await.unwrap_or(Err(StoreError::Closed)) }
                .boxed()
                .shared();
            for job in jobs {
                let existing = job.opts.job_id.as_deref().and_then(|id| guard.jobs.get(id));
                if let Some(entry) = existing {
                    if let Some(pending) = &entry.pending {
                        earlier.push(pending.clone());
                    }
                    added.push(Added {
                        id: entry.id.to_string(),
                        existed: true,
                        state: entry.status.state,
                    });
                    continue;
                }
                let order = self.next_order();
                counter = order;
                let id: Arc<str> = match job.opts.job_id.as_deref() {
                    Some(id) => Arc::from(id),
                    None => {
                        // Automatic ids come from the order counter; skip any a caller took.
                        let mut candidate = order;
                        while guard.jobs.contains_key(candidate.to_string().as_str()) {
                            candidate = self.next_order();
                            counter = candidate;
                        }
                        Arc::from(candidate.to_string().as_str())
                    }
                };
                let (state, ready_at) = if job.opts.delay_ms > 0 {
                    (JobState::Delayed, now.saturating_add(job.opts.delay_ms))
                } else {
                    (JobState::Waiting, now)
                };
                let mut status = JobStatus::new(state, &job.opts, order, ready_at);
                status.entered_at = now;
                let spec = JobSpec {
                    name: job.name,
                    data: job.data,
                    opts: job.opts,
                    created_at: now,
                };
                // A new job's keys: deleted before the next checkpoint, they never reach sled.
                writes.push(Write::PutNew(
                    key(SPEC, queue, &id),
                    encode_versioned(&spec)?,
                ));
                writes.push(Write::PutNew(
                    key(STATUS, queue, &id),
                    encode_versioned(&status)?,
                ));
                added.push(Added {
                    id: id.to_string(),
                    existed: false,
                    state,
                });
                any_waiting |= state == JobState::Waiting;
                fresh.push(id.clone());
                guard.jobs.insert(
                    id.clone(),
                    Entry {
                        id,
                        status,
                        pending: Some(commit.clone()),
                        unread_spec: Some(spec),
                    },
                );
            }
            if fresh.is_empty() {
                None
            } else {
                let publish_index = index.clone();
                let watch = self.watches.watch(queue);
                let publish: AfterCommit = Box::new(move |result| {
                    let mut guard = publish_index.lock();
                    for id in &fresh {
                        let Some(mut entry) = guard.jobs.remove(id) else {
                            continue;
                        };
                        if result.is_ok() {
                            entry.pending = None;
                            guard.insert_visible(entry);
                        }
                    }
                    drop(guard);
                    // Takeable from now on, by any worker on this store.
                    if result.is_ok() && any_waiting {
                        watch.wake();
                    }
                    let _ = tell.send(result.clone());
                });
                Some(
                    self.committer
                        .submit_durable(writes, counter, Some(publish)),
                )
            }
        };
        wait(own).await?;
        for pending in earlier {
            pending.await?;
        }
        Ok(added)
    }

    async fn take(
        &self,
        queue: &str,
        request: TakeRequest,
        now: Millis,
    ) -> Result<Take, StoreError> {
        let index = self.queue(queue);
        let mut guard = index.lock();
        if guard.paused {
            return Ok(Take::Empty);
        }
        let choice = match guard.lanes.pick(request.groups, now) {
            Pick::Job(choice) => choice,
            Pick::Empty => return Ok(Take::Empty),
            Pick::RateLimited(until) => return Ok(Take::RateLimited { until }),
        };
        let id = choice.key.2.clone();
        if let Err(until) = guard.rate.admit(request.limit, now) {
            return Ok(Take::RateLimited { until });
        }
        guard.lanes.commit(&choice, request.groups, now);
        let kept = guard
            .jobs
            .get_mut(&id)
            .and_then(|entry| entry.unread_spec.take());
        let spec = match kept {
            Some(spec) => spec,
            None => self.read_spec(queue, &id)?,
        };
        let token = self.next_token();
        let mut writes = Vec::with_capacity(1);
        let status = guard
            .update(&id, |status| {
                status.state = JobState::Active;
                status.entered_at = now;
                status.token = token;
                status.processed_at = Some(now);
            })
            .cloned();
        let Some(status) = status else {
            return Ok(Take::Empty);
        };
        put_status(&mut writes, queue, &id, &status)?;
        self.committer.submit(writes, 0);
        guard
            .leases
            .grant(id.clone(), token, now.saturating_add(request.lease_ms));
        Ok(Take::Job(Box::new(TakenJob {
            id: id.to_string(),
            spec,
            attempts_made: status.attempts_made,
            token,
            ready_at: status.ready_at,
            more_waiting: !guard.set(JobState::Waiting).is_empty(),
        })))
    }

    async fn promote_due(&self, queue: &str, now: Millis) -> Result<Vec<String>, StoreError> {
        let index = self.queue(queue);
        let mut guard = index.lock();
        let due: Vec<Arc<str>> = guard
            .set(JobState::Delayed)
            .iter()
            .take_while(|(ready_at, _, _)| *ready_at <= now)
            .map(|(_, _, id)| id.clone())
            .collect();
        let mut writes = Vec::with_capacity(due.len());
        let mut counter = 0;
        for id in &due {
            let order = self.next_order();
            counter = order;
            let status = guard.update(id, |status| {
                status.state = JobState::Waiting;
                // It has been ready since it was due, however late the timer got to it.
                status.entered_at = status.ready_at;
                status.order = order;
            });
            if let Some(status) = status {
                put_status(&mut writes, queue, id, status)?;
            }
        }
        self.committer.submit(writes, counter);
        if !due.is_empty() {
            self.watches.wake(queue);
        }
        Ok(due.iter().map(|id| id.to_string()).collect())
    }

    async fn next_due(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        let index = self.queue(queue);
        let guard = index.lock();
        Ok(guard.set(JobState::Delayed).first().map(|(at, _, _)| *at))
    }

    async fn complete(
        &self,
        queue: &str,
        request: Complete,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let Complete {
            id,
            token,
            return_value,
            keep,
        } = request;
        let id = id.as_str();
        let index = self.queue(queue);
        let mut guard = index.lock();
        let owned = guard.owns(id, token);
        if !owned {
            return Ok(false);
        }
        let mut writes = Vec::with_capacity(2);
        if keep == KeepJobs::NONE {
            if let Some(entry) = guard.remove(id) {
                delete_job(&mut writes, queue, id, &entry.status);
            }
        } else {
            if let Some(status) = guard.update(id, |status| {
                status.state = JobState::Completed;
                status.entered_at = now;
                status.attempts_made += 1;
                status.finished_at = Some(now);
                status.return_value = Some(return_value);
                status.token = 0;
            }) {
                put_status(&mut writes, queue, id, status)?;
            }
            trim_state(
                &mut guard,
                &mut writes,
                queue,
                JobState::Completed,
                keep,
                now,
                MAX_INLINE_TRIM,
            );
        }
        self.committer.submit(writes, 0);
        if guard.take_freed() {
            self.watches.wake(queue);
        }
        Ok(true)
    }

    async fn fail(
        &self,
        queue: &str,
        request: Fail,
        now: Millis,
    ) -> Result<FailOutcome, StoreError> {
        let Fail {
            id,
            token,
            reason,
            stack,
            retry_at,
            keep,
        } = request;
        let id = id.as_str();
        let index = self.queue(queue);
        let mut guard = index.lock();
        let owned = guard.owns(id, token);
        if !owned {
            return Ok(FailOutcome::Stale);
        }
        let order = self.next_order();
        let mut writes = Vec::with_capacity(2);
        let outcome = match retry_at {
            Some(at) => FailOutcome::Retrying { at },
            None => FailOutcome::Failed,
        };
        let removed = retry_at.is_none() && keep == KeepJobs::NONE;
        if removed {
            if let Some(entry) = guard.remove(id) {
                delete_job(&mut writes, queue, id, &entry.status);
            }
        } else if let Some(status) = guard.update(id, |status| {
            status.attempts_made += 1;
            status.token = 0;
            status.failed_reason = Some(reason);
            status.stacktrace.push(stack);
            // Keep the newest traces only: a job retried forever must not grow without bound.
            if status.stacktrace.len() > 10 {
                status.stacktrace.remove(0);
            }
            match retry_at {
                Some(at) if at > now => {
                    status.state = JobState::Delayed;
                    status.entered_at = now;
                    status.ready_at = at;
                    status.order = order;
                }
                Some(_) => {
                    status.state = JobState::Waiting;
                    status.entered_at = now;
                    status.ready_at = now;
                    status.order = order;
                }
                None => {
                    status.state = JobState::Failed;
                    status.entered_at = now;
                    status.finished_at = Some(now);
                }
            }
        }) {
            put_status(&mut writes, queue, id, status)?;
        }
        if retry_at.is_none() && !removed {
            trim_state(
                &mut guard,
                &mut writes,
                queue,
                JobState::Failed,
                keep,
                now,
                MAX_INLINE_TRIM,
            );
        }
        self.committer.submit(writes, order);
        if guard.take_freed() {
            self.watches.wake(queue);
        }
        if matches!(outcome, FailOutcome::Retrying { at } if at <= now) {
            self.watches.wake(queue);
        }
        Ok(outcome)
    }

    async fn stall(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        max_stalled: u32,
        now: Millis,
    ) -> Result<Option<JobState>, StoreError> {
        let index = self.queue(queue);
        let mut guard = index.lock();
        let owned = guard.owns(id, token);
        if !owned {
            return Ok(None);
        }
        let order = self.next_order();
        let mut writes = Vec::with_capacity(1);
        let state = stall_entry(&mut guard, &mut writes, queue, id, max_stalled, order, now)?;
        self.committer.submit(writes, order);
        if guard.take_freed() {
            self.watches.wake(queue);
        }
        if state == Some(JobState::Waiting) {
            self.watches.wake(queue);
        }
        Ok(state)
    }

    async fn renew(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        until: Millis,
    ) -> Result<bool, StoreError> {
        let index = self.queue(queue);
        let mut guard = index.lock();
        if !guard.owns(id, token) {
            return Ok(false);
        }
        guard.leases.grant(Arc::from(id), token, until);
        Ok(true)
    }

    async fn expire_leases(
        &self,
        queue: &str,
        now: Millis,
        max_stalled: u32,
    ) -> Result<Vec<Expired>, StoreError> {
        let index = self.queue(queue);
        let (writes, expired) = {
            let mut guard = index.lock();
            let lapsed: Vec<Arc<str>> = guard
                .active()
                .into_iter()
                .filter(|(id, token)| guard.leases.lapsed(id, *token, now))
                .map(|(id, _)| id)
                .collect();
            let mut writes = Vec::with_capacity(lapsed.len());
            let mut expired = Vec::with_capacity(lapsed.len());
            let mut order = 0;
            for id in &lapsed {
                guard.leases.end(id);
                order = self.next_order();
                if let Some(state) =
                    stall_entry(&mut guard, &mut writes, queue, id, max_stalled, order, now)?
                {
                    expired.push(Expired {
                        id: id.to_string(),
                        state,
                    });
                }
            }
            let active: HashMap<Arc<str>, u64> = guard.active().into_iter().collect();
            guard
                .leases
                .retain(|id, token| active.get(id) == Some(&token));
            if guard.take_freed() {
                self.watches.wake(queue);
            }
            if expired.is_empty() {
                return Ok(expired);
            }
            (self.submit(writes, order), expired)
        };
        wait(writes).await?;
        if expired.iter().any(|job| job.state == JobState::Waiting) {
            self.watches.wake(queue);
        }
        Ok(expired)
    }

    async fn next_lease_expiry(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        let index = self.queue(queue);
        let guard = index.lock();
        Ok(guard
            .active()
            .iter()
            .map(|(id, token)| guard.leases.until(id, *token))
            .min())
    }

    async fn release(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let index = self.queue(queue);
        let writes = {
            let mut guard = index.lock();
            let owned = guard.owns(id, token);
            if !owned {
                return Ok(false);
            }
            let order = self.next_order();
            let mut writes = Vec::with_capacity(1);
            if let Some(status) = guard.update(id, |status| {
                status.state = JobState::Waiting;
                status.entered_at = now;
                status.token = 0;
                status.order = order;
                status.ready_at = now;
            }) {
                put_status(&mut writes, queue, id, status)?;
            }
            // Released jobs wake a worker below; a freed group slot is part of that.
            guard.take_freed();
            self.submit(writes, order)
        };
        wait(writes).await?;
        self.watches.wake(queue);
        Ok(true)
    }

    async fn owns(&self, queue: &str, id: &str, token: u64) -> Result<bool, StoreError> {
        Ok(self.queue(queue).lock().owns(id, token))
    }

    async fn force_fail(
        &self,
        queue: &str,
        id: &str,
        reason: String,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let index = self.queue(queue);
        let writes = {
            let mut guard = index.lock();
            let active = guard.is_in(id, JobState::Active);
            if !active {
                return Ok(false);
            }
            let mut writes = Vec::with_capacity(1);
            if let Some(status) = guard.update(id, |status| {
                status.state = JobState::Failed;
                status.entered_at = now;
                status.token = 0;
                status.attempts_made += 1;
                status.finished_at = Some(now);
                status.stacktrace.push(reason.clone());
                status.failed_reason = Some(reason);
            }) {
                put_status(&mut writes, queue, id, status)?;
            }
            if guard.take_freed() {
                self.watches.wake(queue);
            }
            self.submit(writes, 0)
        };
        wait(writes).await?;
        Ok(true)
    }

    async fn progress(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        progress: String,
    ) -> Result<bool, StoreError> {
        let index = self.queue(queue);
        let mut guard = index.lock();
        let owned = guard.owns(id, token);
        if !owned {
            return Ok(false);
        }
        // Memory only: the job's next transition writes its whole status, progress included.
        // Progress is not durable anyway, and a job running when the process dies runs again
        // from the start; a write per update cost more than the rest of a short job.
        guard.update(id, |status| status.progress = progress);
        Ok(true)
    }

    async fn log(&self, queue: &str, id: &str, line: String) -> Result<bool, StoreError> {
        let index = self.queue(queue);
        let mut guard = index.lock();
        let mut writes = Vec::with_capacity(2);
        let Some(status) = guard.update(id, |status| status.log_count += 1) else {
            return Ok(false);
        };
        let n = status.log_count - 1;
        put_status(&mut writes, queue, id, status)?;
        writes.push(Write::Put(log_key(queue, id, n), encode(&line)?));
        self.committer.submit(writes, 0);
        Ok(true)
    }

    async fn logs(&self, queue: &str, id: &str) -> Result<Vec<String>, StoreError> {
        // Lines are queued, not awaited, by `log`: let the committer apply them first.
        self.flush().await?;
        let count = {
            let index = self.queue(queue);
            let guard = index.lock();
            match guard.visible(id) {
                Some(entry) => entry.status.log_count,
                None => return Ok(Vec::new()),
            }
        };
        let mut lines = Vec::with_capacity(count as usize);
        for n in 0..count {
            if let Some(bytes) = self.committer.get(&log_key(queue, id, n))? {
                lines.push(decode(&bytes)?);
            }
        }
        Ok(lines)
    }

    async fn get(&self, queue: &str, id: &str) -> Result<Option<Job>, StoreError> {
        let status = {
            let index = self.queue(queue);
            let guard = index.lock();
            match guard.visible(id) {
                Some(entry) => entry.status.clone(),
                None => return Ok(None),
            }
        };
        // The spec is written in the same batch as the first status, so a visible job has one;
        // a job removed between the two reads is simply gone.
        match self.committer.get(&key(SPEC, queue, id))? {
            Some(bytes) => Ok(Some(Job {
                queue: queue.to_owned(),
                id: id.to_owned(),
                spec: decode_versioned(&bytes)?,
                status,
            })),
            None => Ok(None),
        }
    }

    async fn counts(&self, queue: &str) -> Result<Counts, StoreError> {
        Ok(self.queue(queue).lock().counts())
    }

    async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> Result<JobPage, StoreError> {
        let (page, total) = {
            let index = self.queue(queue);
            let guard = index.lock();
            let set = guard.set(state);
            let page: Vec<(Arc<str>, JobStatus)> = set
                .iter()
                .rev()
                .skip(offset as usize)
                .take(limit as usize)
                .filter_map(|(_, _, id)| {
                    guard
                        .jobs
                        .get(id)
                        .map(|entry| (id.clone(), entry.status.clone()))
                })
                .collect();
            (page, set.len() as u64)
        };
        let mut jobs = Vec::with_capacity(page.len());
        for (id, status) in page {
            if let Some(bytes) = self.committer.get(&key(SPEC, queue, &id))? {
                jobs.push(Job {
                    queue: queue.to_owned(),
                    id: id.to_string(),
                    spec: decode_versioned(&bytes)?,
                    status,
                });
            }
        }
        Ok(JobPage { jobs, total })
    }

    async fn retry(&self, queue: &str, id: &str, now: Millis) -> Result<bool, StoreError> {
        let index = self.queue(queue);
        let writes = {
            let mut guard = index.lock();
            let failed = guard.is_in(id, JobState::Failed);
            if !failed {
                return Ok(false);
            }
            let order = self.next_order();
            let mut writes = Vec::with_capacity(1);
            if let Some(status) = guard.update(id, |status| revive(status, order, now)) {
                put_status(&mut writes, queue, id, status)?;
            }
            self.submit(writes, order)
        };
        wait(writes).await?;
        self.watches.wake(queue);
        Ok(true)
    }

    async fn retry_all_failed(&self, queue: &str, now: Millis) -> Result<u64, StoreError> {
        let index = self.queue(queue);
        let (writes, count) = {
            let mut guard = index.lock();
            let failed: Vec<Arc<str>> = guard
                .set(JobState::Failed)
                .iter()
                .map(|(_, _, id)| id.clone())
                .collect();
            let mut writes = Vec::with_capacity(failed.len());
            let mut order = 0;
            for id in &failed {
                order = self.next_order();
                if let Some(status) = guard.update(id, |status| revive(status, order, now)) {
                    put_status(&mut writes, queue, id, status)?;
                }
            }
            (self.submit(writes, order), failed.len() as u64)
        };
        wait(writes).await?;
        if count > 0 {
            self.watches.wake(queue);
        }
        Ok(count)
    }

    async fn promote(&self, queue: &str, id: &str, now: Millis) -> Result<bool, StoreError> {
        let index = self.queue(queue);
        let writes = {
            let mut guard = index.lock();
            let delayed = guard.is_in(id, JobState::Delayed);
            if !delayed {
                return Ok(false);
            }
            let order = self.next_order();
            let mut writes = Vec::with_capacity(1);
            if let Some(status) = guard.update(id, |status| {
                status.state = JobState::Waiting;
                status.entered_at = now;
                status.order = order;
                status.ready_at = now;
            }) {
                put_status(&mut writes, queue, id, status)?;
            }
            self.submit(writes, order)
        };
        wait(writes).await?;
        self.watches.wake(queue);
        Ok(true)
    }

    async fn remove(&self, queue: &str, id: &str) -> Result<RemovedOutcome, StoreError> {
        let index = self.queue(queue);
        let writes = {
            let mut guard = index.lock();
            match guard.visible(id).map(|entry| entry.status.state) {
                None => return Ok(RemovedOutcome::NotFound),
                Some(JobState::Active) => return Ok(RemovedOutcome::Active),
                Some(_) => {}
            }
            let mut writes = Vec::with_capacity(2);
            if let Some(entry) = guard.remove(id) {
                delete_job(&mut writes, queue, id, &entry.status);
            }
            self.submit(writes, 0)
        };
        wait(writes).await?;
        Ok(RemovedOutcome::Removed)
    }

    async fn clean(
        &self,
        queue: &str,
        state: JobState,
        grace_ms: u64,
        limit: u64,
        now: Millis,
    ) -> Result<RemovedIds, StoreError> {
        let index = self.queue(queue);
        let (writes, removed) = {
            let mut guard = index.lock();
            let cutoff = now.saturating_sub(grace_ms);
            let doomed: Vec<Arc<str>> = guard
                .set(state)
                .iter()
                .filter(|(_, _, id)| {
                    guard
                        .jobs
                        .get(id)
                        .is_some_and(|entry| entry.status.entered_at <= cutoff)
                })
                .take(if limit == 0 {
                    usize::MAX
                } else {
                    limit as usize
                })
                .map(|(_, _, id)| id.clone())
                .collect();
            let mut writes = Vec::with_capacity(doomed.len() * 2);
            for id in &doomed {
                if let Some(entry) = guard.remove(id) {
                    delete_job(&mut writes, queue, id, &entry.status);
                }
            }
            (self.submit(writes, 0), doomed)
        };
        wait(writes).await?;
        Ok(removed.iter().map(|id| id.to_string()).collect())
    }

    async fn drain(&self, queue: &str, include_delayed: bool) -> Result<u64, StoreError> {
        let index = self.queue(queue);
        let (writes, count) = {
            let mut guard = index.lock();
            let mut doomed: Vec<Arc<str>> = guard
                .set(JobState::Waiting)
                .iter()
                .map(|(_, _, id)| id.clone())
                .collect();
            if include_delayed {
                doomed.extend(
                    guard
                        .set(JobState::Delayed)
                        .iter()
                        .map(|(_, _, id)| id.clone()),
                );
            }
            let mut writes = Vec::with_capacity(doomed.len() * 2);
            for id in &doomed {
                if let Some(entry) = guard.remove(id) {
                    delete_job(&mut writes, queue, id, &entry.status);
                }
            }
            (self.submit(writes, 0), doomed.len() as u64)
        };
        wait(writes).await?;
        Ok(count)
    }

    async fn trim(
        &self,
        queue: &str,
        keep_completed: KeepJobs,
        keep_failed: KeepJobs,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let index = self.queue(queue);
        let (writes, removed) = {
            let mut guard = index.lock();
            let mut writes = Vec::new();
            let mut removed = trim_state(
                &mut guard,
                &mut writes,
                queue,
                JobState::Completed,
                keep_completed,
                now,
                usize::MAX,
            );
            removed += trim_state(
                &mut guard,
                &mut writes,
                queue,
                JobState::Failed,
                keep_failed,
                now,
                usize::MAX,
            );
            (self.submit(writes, 0), removed)
        };
        wait(writes).await?;
        Ok(removed)
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError> {
        let index = self.queue(queue);
        let writes = {
            let mut guard = index.lock();
            guard.paused = paused;
            let writes = if paused {
                vec![Write::Put(paused_key(queue), vec![1])]
            } else {
                vec![Write::Delete(paused_key(queue))]
            };
            self.submit(writes, 0)
        };
        wait(writes).await?;
        if !paused {
            self.watches.wake(queue);
        }
        Ok(())
    }

    async fn is_paused(&self, queue: &str) -> Result<bool, StoreError> {
        Ok(self.queue(queue).lock().paused)
    }

    async fn oldest_waiting(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        let index = self.queue(queue);
        let guard = index.lock();
        // Waiting is ordered by priority, not age: look at every waiting job. Cheap next to the
        // jobs themselves, and only monitoring calls it.
        Ok(guard
            .set(JobState::Waiting)
            .iter()
            .filter_map(|(_, _, id)| guard.jobs.get(id).map(|entry| entry.status.ready_at))
            .min())
    }

    fn watch(&self, queue: &str) -> WorkWatch {
        self.watches.watch(queue)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        // An empty durable commit is acknowledged after everything queued before it. It writes
        // nothing, so a server stopped without traffic leaves the log as it found it and the
        // next start-up has no log to replay.
        self.committer
            .submit_durable(Vec::new(), 0, None)
            .await
            .unwrap_or(Err(StoreError::Closed))
    }

    async fn failed_for_good(&self) -> String {
        self.committer.failed().await
    }

    fn stats(&self) -> Option<&dyn StorageStats> {
        Some(self)
    }
}

/// The database's figures (shared by both sled stores: one file, one commit thread).
impl StorageStats for SledJobStore {
    fn size_on_disk(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }

    fn activity(&self) -> StoreActivity {
        StoreActivity {
            commits: Some(self.committer.batch_count()),
            checkpoints: Some(self.committer.checkpoint_count()),
            errors: Some(self.committer.error_count()),
            commit_times: self.committer.commit_times().times(),
        }
    }

    fn commit_times(&self) -> Option<CommitTimeLog> {
        Some(self.committer.commit_times())
    }
}

/// A failed job's status when it is retried by hand: waiting, with a fresh set of attempts.
fn revive(status: &mut JobStatus, order: u64, now: Millis) {
    status.state = JobState::Waiting;
    status.entered_at = now;
    status.order = order;
    status.ready_at = now;
    status.attempts_made = 0;
    status.stalled_count = 0;
    status.finished_at = None;
    status.processed_at = None;
    status.failed_reason = None;
    status.return_value = None;
    status.token = 0;
}

impl Drop for SledJobStore {
    fn drop(&mut self) {
        self.committer.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Golden bytes of the job tree's key layouts, one per kind. If this fails, stored jobs would
    /// no longer be found: never edit the hex (see `store::codec`'s golden tests for what to do
    /// instead).
    #[test]
    fn key_layouts_are_frozen() {
        assert_eq!(hex(&key(SPEC, "mail", "7")), "646d61696c0037");
        assert_eq!(hex(&key(STATUS, "mail", "7")), "736d61696c0037");
        assert_eq!(hex(&log_key("mail", "7", 258)), "6c6d61696c00370000000102");
        assert_eq!(hex(&paused_key("mail")), "706d61696c");
        assert_eq!(hex(COUNTER_KEY), "6d3a6f72646572");
    }

    #[test]
    fn spec_and_status_keys_split_back_into_queue_and_id() {
        let stored = key(STATUS, "mail", "invoice-7");
        assert_eq!(
            split_key(&stored),
            Some(("mail".to_owned(), "invoice-7".to_owned()))
        );
        assert_eq!(split_key(b"s"), None);
        assert_eq!(split_key(b"smail"), None);
    }
}
