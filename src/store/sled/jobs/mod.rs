//! The sled job store: job records on disk, their indexes in memory.
//!
//! Each job is two keys in one tree: its spec (name, data, options; written once) and its status
//! (state, attempts, timestamps; rewritten by every transition). The indexes a scheduler needs
//! (waiting by priority and order, delayed by due time, finished jobs by age) live only in memory
//! and are rebuilt from the status records at start-up, so they can never disagree with the disk:
//! the status record *is* the index. A transition changes the in-memory state and queues its
//! writes to the [`Committer`] under one per-queue lock, so the disk sees transitions in the order
//! memory did.
//!
//! Its parts: `keys` (the tree's key layouts), `index` (one queue's in-memory indexes),
//! `transitions` (the state machine's operations) and `admin` (reads and admin operations); the
//! [`JobStore`] impl here delegates to them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::future::FutureExt;
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use super::committer::{AfterCommit, Committer, Write};
use super::Database;
use crate::store::codec::{decode, decode_versioned, encode, encode_versioned};
use crate::store::groups::Pick;
use crate::store::job::{
    Added, Complete, Counts, Expired, Fail, FailOutcome, Job, JobPage, JobSpec, JobState,
    JobStatus, KeepJobs, Millis, NewJob, Take, TakeRequest, TakenJob,
};
use crate::store::watch::Watches;
use crate::store::{
    CommitTimeLog, JobStore, RemovedIds, RemovedOutcome, StorageStats, StoreActivity, StoreError,
    WorkWatch,
};

mod admin;
mod index;
mod keys;
mod transitions;

use self::index::{Entry, PendingAdd, QueueIndex};
use self::keys::{key, log_key, paused_key, split_key, COUNTER_KEY, PAUSED, SPEC, STATUS};

/// Removals done inline by one completion; the background trim does the rest.
const MAX_INLINE_TRIM: usize = 1_000;

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
            // Back in its old place (its `order` is kept): a job cut off mid-run goes before
            // the ones queued after it, so a group's send order survives a crash.
            status.state = JobState::Waiting;
            status.entered_at = now;
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
        SledJobStore::add(self, queue, jobs, now).await
    }

    async fn take(
        &self,
        queue: &str,
        request: TakeRequest,
        now: Millis,
    ) -> Result<Take, StoreError> {
        SledJobStore::take(self, queue, request, now).await
    }

    async fn promote_due(&self, queue: &str, now: Millis) -> Result<Vec<String>, StoreError> {
        SledJobStore::promote_due(self, queue, now).await
    }

    async fn next_due(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        SledJobStore::next_due(self, queue).await
    }

    async fn complete(
        &self,
        queue: &str,
        request: Complete,
        now: Millis,
    ) -> Result<bool, StoreError> {
        SledJobStore::complete(self, queue, request, now).await
    }

    async fn fail(
        &self,
        queue: &str,
        request: Fail,
        now: Millis,
    ) -> Result<FailOutcome, StoreError> {
        SledJobStore::fail(self, queue, request, now).await
    }

    async fn stall(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        max_stalled: u32,
        now: Millis,
    ) -> Result<Option<JobState>, StoreError> {
        SledJobStore::stall(self, queue, id, token, max_stalled, now).await
    }

    async fn renew(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        until: Millis,
    ) -> Result<bool, StoreError> {
        SledJobStore::renew(self, queue, id, token, until).await
    }

    async fn expire_leases(
        &self,
        queue: &str,
        now: Millis,
        max_stalled: u32,
    ) -> Result<Vec<Expired>, StoreError> {
        SledJobStore::expire_leases(self, queue, now, max_stalled).await
    }

    async fn next_lease_expiry(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        SledJobStore::next_lease_expiry(self, queue).await
    }

    async fn release(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        now: Millis,
    ) -> Result<bool, StoreError> {
        SledJobStore::release(self, queue, id, token, now).await
    }

    async fn owns(&self, queue: &str, id: &str, token: u64) -> Result<bool, StoreError> {
        SledJobStore::owns(self, queue, id, token).await
    }

    async fn force_fail(
        &self,
        queue: &str,
        id: &str,
        reason: String,
        now: Millis,
    ) -> Result<bool, StoreError> {
        SledJobStore::force_fail(self, queue, id, reason, now).await
    }

    async fn progress(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        progress: String,
    ) -> Result<bool, StoreError> {
        SledJobStore::progress(self, queue, id, token, progress).await
    }

    async fn log(&self, queue: &str, id: &str, line: String) -> Result<bool, StoreError> {
        SledJobStore::log(self, queue, id, line).await
    }

    async fn logs(&self, queue: &str, id: &str) -> Result<Vec<String>, StoreError> {
        SledJobStore::logs(self, queue, id).await
    }

    async fn get(&self, queue: &str, id: &str) -> Result<Option<Job>, StoreError> {
        SledJobStore::get(self, queue, id).await
    }

    async fn counts(&self, queue: &str) -> Result<Counts, StoreError> {
        SledJobStore::counts(self, queue).await
    }

    async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> Result<JobPage, StoreError> {
        SledJobStore::list(self, queue, state, offset, limit).await
    }

    async fn retry(&self, queue: &str, id: &str, now: Millis) -> Result<bool, StoreError> {
        SledJobStore::retry(self, queue, id, now).await
    }

    async fn retry_all_failed(&self, queue: &str, now: Millis) -> Result<u64, StoreError> {
        SledJobStore::retry_all_failed(self, queue, now).await
    }

    async fn promote(&self, queue: &str, id: &str, now: Millis) -> Result<bool, StoreError> {
        SledJobStore::promote(self, queue, id, now).await
    }

    async fn remove(&self, queue: &str, id: &str) -> Result<RemovedOutcome, StoreError> {
        SledJobStore::remove(self, queue, id).await
    }

    async fn clean(
        &self,
        queue: &str,
        state: JobState,
        grace_ms: u64,
        limit: u64,
        now: Millis,
    ) -> Result<RemovedIds, StoreError> {
        SledJobStore::clean(self, queue, state, grace_ms, limit, now).await
    }

    async fn drain(&self, queue: &str, include_delayed: bool) -> Result<u64, StoreError> {
        SledJobStore::drain(self, queue, include_delayed).await
    }

    async fn trim(
        &self,
        queue: &str,
        keep_completed: KeepJobs,
        keep_failed: KeepJobs,
        now: Millis,
    ) -> Result<u64, StoreError> {
        SledJobStore::trim(self, queue, keep_completed, keep_failed, now).await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError> {
        SledJobStore::set_paused(self, queue, paused).await
    }

    async fn is_paused(&self, queue: &str) -> Result<bool, StoreError> {
        SledJobStore::is_paused(self, queue).await
    }

    async fn oldest_waiting(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        SledJobStore::oldest_waiting(self, queue).await
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
