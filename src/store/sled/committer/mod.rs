//! Group commit: one thread merges every pending write into one log entry and one sync.
//!
//! Callers send their writes (already in the order their in-memory state changed) and, for
//! durable operations, wait for the acknowledgement. A cycle takes everything queued, appends it
//! to Courier's write-ahead log as one checksummed entry and `fdatasync`s it (`wal.rs`): from
//! then on the cycle survives a crash or a power loss, atomically. A second thread then applies
//! the writes to sled key by key and settles the cycle (after-commit callbacks, then
//! acknowledgements, in commit order), while the first thread logs the next cycle: the device's
//! latency overlaps sled's CPU work. While one cycle syncs, the next gathers by itself: the
//! busier the store, the larger each cycle.
//!
//! sled is flushed (and its log file synced, `durable.rs`) only at checkpoints: the commit thread
//! switches to the spare log and carries on, while a third thread flushes and syncs sled and then
//! empties the old log for the next switch, so no commit waits for a checkpoint. Start-up replays
//! whatever the logs still hold. One thread serves
//! every tree of a database ([`Committer::share`]), so the job store and the chat store share each
//! entry and each sync. The job tree's writes go to an in-memory [`Overlay`] first, so short-lived
//! jobs never reach sled.

mod pipeline;
#[cfg(test)]
mod tests;

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use super::durable::Durable;
use super::prefill::Prefiller;
use super::wal::{encode_entry, TreeWrites, Wal};
use crate::store::{CommitTimeLog, StoreError};
use crate::telemetry;
use pipeline::*;

/// One key write.
pub enum Write {
    Put(Vec<u8>, Vec<u8>),
    /// A put of a key the caller knows is absent from the store (a new job's records). In a tree
    /// with an overlay, a key put this way and deleted before the next checkpoint never reaches
    /// sled at all.
    PutNew(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// Runs on the apply thread once the commit is logged, synced and applied (or failed), before
/// the acknowledgement is sent; callbacks run in commit order.
pub type AfterCommit = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;

struct Commit {
    target: Arc<Target>,
    writes: Vec<Write>,
    /// Highest value of the target's counter this commit's writes used (0: none).
    counter: u64,
    after: Option<AfterCommit>,
    ack: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// A tree the thread writes, and its counter key.
struct Target {
    tree: sled::Tree,
    counter_key: Vec<u8>,
    /// Highest counter value written; only the commit thread touches it.
    counter_written: Mutex<u64>,
    /// Where this tree's writes go between checkpoints, if it has one (see [`Overlay`]).
    overlay: Option<Overlay>,
}

/// A tree's writes since the last checkpoint, kept in memory instead of in sled: the apply thread
/// writes here, reads look here first ([`Committer::get`]), and each checkpoint moves every slot
/// that arrived before it into sled, a chunk after each cycle ([`Overlay::fold_step`]), before
/// its log may be emptied. The job tree has one: most jobs are added, run and removed within a
/// few seconds, and a job whose records were put with [`Write::PutNew`] and deleted before the
/// checkpoint costs sled nothing at all. (Trees that are scanned, like the chat tree, write sled
/// directly: an overlay would have to be merged into every range scan.)
#[derive(Default)]
struct Overlay {
    slots: RwLock<HashMap<Vec<u8>, Slot>>,
    /// Keys in the order they entered: slots older than [`OVERLAY_AGE`] move to sled a few at
    /// a time after each cycle, so a checkpoint only has the young ones left to move. Only the
    /// apply thread touches it.
    arrivals: Mutex<Arrivals>,
}

#[derive(Default)]
struct Arrivals {
    /// When each key entered and its arrival number, oldest first.
    queue: VecDeque<(Instant, u64, Vec<u8>)>,
    /// The next arrival's number.
    next: u64,
}

impl Arrivals {
    fn push(&mut self, at: Instant, key: Vec<u8>) {
        self.queue.push_back((at, self.next, key));
        self.next += 1;
    }
}

/// How long a key stays in the overlay before it moves to sled (unless deleted first).
const OVERLAY_AGE: Duration = Duration::from_millis(500);

/// Slots a checkpoint moves into sled after each cycle (and after each [`FOLD_IDLE`] without
/// one). Moving them all at once took 47-71 ms at 5,000 messages/s, during which no cycle was
/// applied or acknowledged; 16 take about 0.2 ms, a few times what aging moves per cycle
/// anyway, so the work is spread instead of arriving as one burst of CPU.
const FOLD_CHUNK: usize = 16;

/// How long the apply thread waits for a cycle before it moves a chunk of a checkpoint anyway.
const FOLD_IDLE: Duration = Duration::from_millis(1);

/// An overlay emptied after holding this many keys gets new containers.
const EMPTY_CAPACITY: usize = 4096;

struct Slot {
    /// The key's value, or `None` for a deletion sled still has to see.
    value: Option<Vec<u8>>,
    /// Whether sled may hold the key (it was not put with [`Write::PutNew`] in this window).
    in_sled: bool,
}

impl Overlay {
    fn apply(&self, writes: Vec<KeyWrite>, fresh: Vec<bool>) {
        let now = Instant::now();
        let mut arrivals = self.arrivals.lock();
        let mut slots = self.slots.write();
        for ((key, value), fresh) in writes.into_iter().zip(fresh) {
            match (slots.entry(key), value) {
                (Entry::Occupied(mut slot), Some(value)) => slot.get_mut().value = Some(value),
                (Entry::Vacant(slot), Some(value)) => {
                    arrivals.push(now, slot.key().clone());
                    slot.insert(Slot {
                        value: Some(value),
                        in_sled: !fresh,
                    });
                }
                (Entry::Occupied(mut slot), None) => {
                    if slot.get().in_sled {
                        slot.get_mut().value = None;
                    } else {
                        slot.remove();
                    }
                }
                (Entry::Vacant(slot), None) => {
                    arrivals.push(now, slot.key().clone());
                    slot.insert(Slot {
                        value: None,
                        in_sled: true,
                    });
                }
            }
        }
    }

    /// Writes every slot into `tree` as one batch (the caller flushes, then [`Overlay::clear`]s).
    fn fold_into(&self, tree: &sled::Tree) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for (key, slot) in self.slots.read().iter() {
            match &slot.value {
                Some(value) => batch.insert(key.as_slice(), value.as_slice()),
                None => batch.remove(key.as_slice()),
            }
            any = true;
        }
        if any {
            tree.apply_batch(batch)?;
        }
        Ok(())
    }

    /// Moves slots older than [`OVERLAY_AGE`] into `tree`, key by key.
    fn age_out(&self, tree: &sled::Tree) -> Result<(), StoreError> {
        let now = Instant::now();
        self.move_oldest(tree, usize::MAX, |since, _| {
            now.duration_since(since) >= OVERLAY_AGE
        })?;
        Ok(())
    }

    /// The number the next arriving key will get: every slot that arrived before now has a
    /// smaller one.
    fn boundary(&self) -> u64 {
        self.arrivals.lock().next
    }

    /// Moves up to `limit` of the slots that arrived before `boundary` into `tree`; `true` once
    /// none is left. A slot updated since it arrived moves with its latest value, which is as
    /// good: the newer write is in the newer log too.
    fn fold_step(
        &self,
        tree: &sled::Tree,
        boundary: u64,
        limit: usize,
    ) -> Result<bool, StoreError> {
        self.move_oldest(tree, limit, |_, number| number < boundary)
    }

    /// Moves the oldest slots into `tree`, key by key, while `due` says so, at most `limit` of
    /// them; `true` when it stopped because the next one is not due (or none is left).
    fn move_oldest(
        &self,
        tree: &sled::Tree,
        limit: usize,
        due: impl Fn(Instant, u64) -> bool,
    ) -> Result<bool, StoreError> {
        let mut arrivals = self.arrivals.lock();
        let mut moved = 0;
        while let Some(&(since, number, _)) = arrivals.queue.front() {
            if !due(since, number) {
                break;
            }
            if moved == limit {
                return Ok(false);
            }
            moved += 1;
            let Some((_, _, key)) = arrivals.queue.pop_front() else {
                break;
            };
            let slot = self
                .slots
                .read()
                .get(&key)
                .map(|slot| (slot.value.clone(), slot.in_sled));
            match slot {
                // Deleted meanwhile, and never in sled.
                None => continue,
                Some((Some(value), _)) => {
                    tree.insert(key.as_slice(), value)?;
                }
                Some((None, _)) => {
                    tree.remove(key.as_slice())?;
                }
            }
            // sled has it now; readers find the same value there.
            self.slots.write().remove(&key);
        }
        if arrivals.queue.is_empty() && arrivals.queue.capacity() > EMPTY_CAPACITY {
            // New containers, so the memory of a busy window is given back.
            arrivals.queue = VecDeque::new();
            let mut slots = self.slots.write();
            if slots.is_empty() {
                *slots = HashMap::new();
            }
        }
        Ok(true)
    }

    fn clear(&self) {
        // New containers, so the memory of a busy window is given back.
        *self.slots.write() = HashMap::new();
        self.arrivals.lock().queue = VecDeque::new();
    }
}

/// Most commits merged into one batch; bounds the latency of the first one in it.
const MAX_COMMITS_PER_BATCH: usize = 20_000;

/// What every handle on one commit thread shares; dropping the last handle stops the thread
/// after it has committed everything queued.
struct Shared {
    sender: Mutex<Option<mpsc::Sender<Commit>>>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
    counters: Arc<Counters>,
}

/// What the storage threads count, for metrics, benchmarks and tests.
#[derive(Default)]
struct Counters {
    /// Cycles or checkpoints that failed.
    errors: AtomicU64,
    /// Set, with why, when sled refused a write it had to take: sled 0.34 keeps the first I/O
    /// error and refuses everything after it, so only a restart (which replays the logs) helps.
    failed: Failure,
    /// Commit cycles (one log entry and one sync each).
    batches: AtomicU64,
    /// Checkpoints completed (sled flushed and synced, a log emptied).
    checkpoints: AtomicU64,
    /// How long each cycle's log write and sync took, in microseconds: the disk's share of
    /// every durable operation's latency. Only the commit thread records.
    commit_time: Mutex<CommitTimeLog>,
}

impl Counters {
    fn record_commit_time(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.commit_time.lock().record(micros);
    }
}

/// The store's failure for good, once it happens.
#[derive(Default)]
struct Failure {
    reason: Mutex<Option<String>>,
    happened: tokio_util::sync::CancellationToken,
}

impl Failure {
    fn set(&self, reason: String) {
        let mut slot = self.reason.lock();
        if slot.is_none() {
            *slot = Some(reason);
            self.happened.cancel();
        }
    }
}

/// When the commit thread starts a checkpoint.
#[derive(Clone, Copy)]
pub struct CheckpointPolicy {
    /// Once the log holds this many bytes...
    pub bytes: u64,
    /// ...or its oldest entry is this old (checked when idle too).
    pub age: Duration,
}

/// The environment variable that overrides [`CheckpointPolicy::bytes`] (tests use it to make
/// checkpoints frequent).
pub const CHECKPOINT_BYTES_ENV: &str = "COURIER_WAL_CHECKPOINT_BYTES";

impl CheckpointPolicy {
    /// 32 MiB or 5 s, unless `COURIER_WAL_CHECKPOINT_BYTES` says otherwise.
    pub fn from_env() -> CheckpointPolicy {
        let bytes = std::env::var(CHECKPOINT_BYTES_ENV)
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(32 * 1024 * 1024);
        CheckpointPolicy {
            bytes,
            age: Duration::from_secs(5),
        }
    }
}

impl Shared {
    fn close(&self) {
        self.sender.lock().take();
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.close();
    }
}

/// A handle that commits to one tree through a (possibly shared) commit thread.
/// What the commit thread takes: the log to append to, the spare log, and the syncer.
pub type LogFiles = (Wal, Wal, Durable);

pub struct Committer {
    shared: Arc<Shared>,
    target: Arc<Target>,
}

impl Committer {
    /// Starts the thread. `counter_key` names the key where the highest counter value used by any
    /// commit is kept; the thread writes it (never decreasing) in the batch that uses the value,
    /// so ids taken from the counter are never handed out twice, even across crashes.
    /// `overlay` keeps the tree's writes in memory between checkpoints (see [`Overlay`]).
    pub fn start(
        db: &sled::Db,
        logs: LogFiles,
        tree: sled::Tree,
        counter_key: Vec<u8>,
        counter_start: u64,
        overlay: bool,
    ) -> Result<Committer, StoreError> {
        let policy = CheckpointPolicy::from_env();
        Committer::start_with(db, logs, tree, counter_key, counter_start, overlay, policy)
    }

    /// [`Committer::start`] with an explicit checkpoint policy.
    pub fn start_with(
        db: &sled::Db,
        logs: LogFiles,
        tree: sled::Tree,
        counter_key: Vec<u8>,
        counter_start: u64,
        overlay: bool,
        policy: CheckpointPolicy,
    ) -> Result<Committer, StoreError> {
        let (mut wal, mut spare, durable) = logs;
        let prefiller = start_prefiller(&mut wal, &mut spare);
        let db = db.clone();
        let (sender, receiver) = mpsc::channel::<Commit>();
        let counters = Arc::new(Counters::default());
        let logs = Logs {
            wal,
            spare,
            durable,
        };
        let thread_counters = counters.clone();
        let handle = thread::Builder::new()
            .name("courier-commit".to_owned())
            .spawn(move || {
                run(db, logs, policy, receiver, thread_counters);
                // Only now: no filler write may land in a log once it can be opened again.
                drop(prefiller);
            })
            .map_err(|err| StoreError::Io(format!("cannot start the commit thread: {err}")))?;
        Ok(Committer {
            shared: Arc::new(Shared {
                sender: Mutex::new(Some(sender)),
                thread: Mutex::new(Some(handle)),
                counters,
            }),
            target: Arc::new(Target {
                tree,
                counter_key,
                counter_written: Mutex::new(counter_start),
                overlay: overlay.then(Overlay::default),
            }),
        })
    }

    /// The current value of `key` in this handle's tree: the overlay's, if it has the key, else
    /// sled's.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(overlay) = &self.target.overlay {
            if let Some(slot) = overlay.slots.read().get(key) {
                return Ok(slot.value.clone());
            }
        }
        Ok(self.target.tree.get(key)?.map(|value| value.to_vec()))
    }

    /// Another handle on the same thread and tree.
    pub(super) fn handle(&self) -> Committer {
        Committer {
            shared: self.shared.clone(),
            target: self.target.clone(),
        }
    }

    /// A handle for another tree of the same database, committed by the same thread (and the
    /// same flushes). `counter_key`, `counter_start` and `overlay` are that tree's, as for
    /// [`Committer::start`].
    pub fn share(
        &self,
        tree: sled::Tree,
        counter_key: Vec<u8>,
        counter_start: u64,
        overlay: bool,
    ) -> Committer {
        Committer {
            shared: self.shared.clone(),
            target: Arc::new(Target {
                tree,
                counter_key,
                counter_written: Mutex::new(counter_start),
                overlay: overlay.then(Overlay::default),
            }),
        }
    }

    /// Queues writes without waiting. They are applied in submission order, before any later
    /// durable commit is acknowledged.
    pub fn submit(&self, writes: Vec<Write>, counter: u64) {
        if writes.is_empty() {
            return;
        }
        self.send(Commit {
            target: self.target.clone(),
            writes,
            counter,
            after: None,
            ack: None,
        });
    }

    /// Queues writes and returns a receiver that resolves once they are on disk.
    pub fn submit_durable(
        &self,
        writes: Vec<Write>,
        counter: u64,
        after: Option<AfterCommit>,
    ) -> oneshot::Receiver<Result<(), StoreError>> {
        let (ack, done) = oneshot::channel();
        self.send(Commit {
            target: self.target.clone(),
            writes,
            counter,
            after,
            ack: Some(ack),
        });
        done
    }

    fn send(&self, commit: Commit) {
        let sender = self.shared.sender.lock();
        let rejected = match sender.as_ref() {
            Some(sender) => sender.send(commit).err().map(|err| err.0),
            None => Some(commit),
        };
        if let Some(commit) = rejected {
            // Callers submit while holding their own locks, and callbacks may take those locks:
            // run the callback (and then the acknowledgement) away from this thread, as the
            // commit thread would have.
            let finish = move || {
                let closed = Err(StoreError::Closed);
                if let Some(after) = commit.after {
                    after(&closed);
                }
                if let Some(ack) = commit.ack {
                    let _ = ack.send(closed);
                }
            };
            if let Err(err) = thread::Builder::new()
                .name("courier-commit-closed".to_owned())
                .spawn(finish)
            {
                tracing::error!(error = %err, "cannot report a commit refused after close");
            }
        }
    }

    /// Resolves once sled has refused a write for good (see [`Counters::failed`]), with why.
    pub async fn failed(&self) -> String {
        let failure = &self.shared.counters.failed;
        failure.happened.cancelled().await;
        failure
            .reason
            .lock()
            .clone()
            .unwrap_or_else(|| "storage failed".to_owned())
    }

    /// Number of commit cycles that failed to apply or flush since start (shared by every
    /// handle on the thread).
    pub fn error_count(&self) -> u64 {
        self.shared.counters.errors.load(Ordering::Relaxed)
    }

    /// Number of commit cycles (one flush each) since start, shared by every handle on the
    /// thread (for benchmarks and tests of group commit).
    pub fn batch_count(&self) -> u64 {
        self.shared.counters.batches.load(Ordering::Relaxed)
    }

    /// Number of checkpoints completed since start, shared by every handle on the thread.
    pub fn checkpoint_count(&self) -> u64 {
        self.shared.counters.checkpoints.load(Ordering::Relaxed)
    }

    /// Every commit's log write and sync time since start.
    pub fn commit_times(&self) -> CommitTimeLog {
        self.shared.counters.commit_time.lock().clone()
    }

    /// Commits everything queued so far and stops the thread, if no other handle shares it; the
    /// last handle to go stops it otherwise.
    pub fn close(&self) {
        if Arc::strong_count(&self.shared) == 1 {
            self.shared.close();
        }
    }
}
