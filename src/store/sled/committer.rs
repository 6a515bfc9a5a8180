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
//! sled is flushed (and its log file synced, `durable.rs`) only at checkpoints, after which the
//! write-ahead log is emptied; start-up replays whatever the log still holds. One thread serves
//! every tree of a database ([`Committer::share`]), so the job store and the chat store share each
//! entry and each sync.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::durable::{Database, Durable};
use super::wal::{encode_entry, TreeWrites, Wal};
use crate::store::StoreError;

/// One key write.
pub enum Write {
    Put(Vec<u8>, Vec<u8>),
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
}

/// Most commits merged into one batch; bounds the latency of the first one in it.
const MAX_COMMITS_PER_BATCH: usize = 20_000;

/// What every handle on one commit thread shares; dropping the last handle stops the thread
/// after it has committed everything queued.
struct Shared {
    sender: Mutex<Option<mpsc::Sender<Commit>>>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
    errors: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
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
pub struct Committer {
    shared: Arc<Shared>,
    target: Arc<Target>,
}

impl Committer {
    /// Starts the thread. `counter_key` names the key where the highest counter value used by any
    /// commit is kept; the thread writes it (never decreasing) in the batch that uses the value,
    /// so ids taken from the counter are never handed out twice, even across crashes.
    pub fn start(
        db: &Database,
        tree: sled::Tree,
        counter_key: Vec<u8>,
        counter_start: u64,
    ) -> Result<Committer, StoreError> {
        let (wal, durable) = db.take_log()?;
        let db = db.db.clone();
        let (sender, receiver) = mpsc::channel::<Commit>();
        let errors = Arc::new(AtomicU64::new(0));
        let batches = Arc::new(AtomicU64::new(0));
        let thread_errors = errors.clone();
        let thread_batches = batches.clone();
        let handle = thread::Builder::new()
            .name("courier-commit".to_owned())
            .spawn(move || run(db, wal, durable, receiver, thread_errors, thread_batches))
            .map_err(|err| StoreError::Io(format!("cannot start the commit thread: {err}")))?;
        Ok(Committer {
            shared: Arc::new(Shared {
                sender: Mutex::new(Some(sender)),
                thread: Mutex::new(Some(handle)),
                errors,
                batches,
            }),
            target: Arc::new(Target {
                tree,
                counter_key,
                counter_written: Mutex::new(counter_start),
            }),
        })
    }

    /// A handle for another tree of the same database, committed by the same thread (and the
    /// same flushes). `counter_key` and `counter_start` are that tree's, as for [`Committer::start`].
    pub fn share(&self, tree: sled::Tree, counter_key: Vec<u8>, counter_start: u64) -> Committer {
        Committer {
            shared: self.shared.clone(),
            target: Arc::new(Target {
                tree,
                counter_key,
                counter_written: Mutex::new(counter_start),
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

    /// Number of commit cycles that failed to apply or flush since start (shared by every
    /// handle on the thread).
    pub fn error_count(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// Number of commit cycles (one flush each) since start, shared by every handle on the
    /// thread (for benchmarks and tests of group commit).
    pub fn batch_count(&self) -> u64 {
        self.shared.batches.load(Ordering::Relaxed)
    }

    /// Commits everything queued so far and stops the thread, if no other handle shares it; the
    /// last handle to go stops it otherwise.
    pub fn close(&self) {
        if Arc::strong_count(&self.shared) == 1 {
            self.shared.close();
        }
    }
}

/// One tree's part of a commit cycle: its writes, and its counter before the cycle.
struct TreeCycle {
    target: Arc<Target>,
    writes: Vec<KeyWrite>,
    counter_before: u64,
}

/// One key's write: a value to put, or `None` to delete.
type KeyWrite = (Vec<u8>, Option<Vec<u8>>);

/// A tree and the writes a cycle makes to it, in order.
type TreeApply = (sled::Tree, Vec<KeyWrite>);

/// A checkpoint is due once the log holds this many bytes...
const CHECKPOINT_BYTES: u64 = 32 * 1024 * 1024;
/// ...or its oldest entry is this old (checked when idle too).
const CHECKPOINT_AGE: Duration = Duration::from_secs(5);

/// What the commit thread hands the apply thread, in order.
enum Stage {
    /// A logged (or failed) cycle: apply its writes, then settle its commits.
    Cycle {
        commits: Vec<Commit>,
        writes: Vec<TreeApply>,
        logged: Result<(), StoreError>,
    },
    /// Everything before this is applied: flush and sync sled, and say how it went.
    Checkpoint(mpsc::SyncSender<Result<(), StoreError>>),
}

fn run(
    db: sled::Db,
    mut wal: Wal,
    durable: Durable,
    receiver: mpsc::Receiver<Commit>,
    errors: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
) {
    // Two stages, so one cycle's `fdatasync` (waiting on the device) overlaps the previous
    // cycle's apply (sled's CPU work): this thread logs, the apply thread applies and settles.
    let (to_apply, applying) = mpsc::channel::<Stage>();
    let apply_errors = errors.clone();
    let apply_db = db.clone();
    let apply_thread = thread::Builder::new()
        .name("courier-apply".to_owned())
        .spawn(move || apply_loop(apply_db, durable, applying, apply_errors));
    let apply_thread = match apply_thread {
        Ok(handle) => handle,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the apply thread; nothing will commit");
            return;
        }
    };
    let mut commits = Vec::new();
    // When the log last went from empty to holding an entry.
    let mut oldest_entry: Option<Instant> = None;
    loop {
        let first = match receiver.recv_timeout(CHECKPOINT_AGE) {
            Ok(first) => first,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if !wal.is_empty() {
                    checkpoint(&to_apply, &mut wal, &errors);
                    oldest_entry = None;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        commits.push(first);
        while commits.len() < MAX_COMMITS_PER_BATCH {
            match receiver.try_recv() {
                Ok(next) => commits.push(next),
                Err(_) => break,
            }
        }
        let (writes, logged) = log_cycle(&mut wal, &mut commits, &errors);
        batches.fetch_add(1, Ordering::Relaxed);
        let stage = Stage::Cycle {
            commits: std::mem::take(&mut commits),
            writes,
            logged,
        };
        if to_apply.send(stage).is_err() {
            tracing::error!("the apply thread stopped; nothing more will commit");
            break;
        }
        if wal.is_empty() {
            continue;
        }
        let since = *oldest_entry.get_or_insert_with(Instant::now);
        if wal.len() >= CHECKPOINT_BYTES || since.elapsed() >= CHECKPOINT_AGE {
            checkpoint(&to_apply, &mut wal, &errors);
            oldest_entry = None;
        }
    }
    if !wal.is_empty() {
        checkpoint(&to_apply, &mut wal, &errors);
    }
    drop(to_apply);
    let _ = apply_thread.join();
}

/// The trees' writes of one cycle, ready to apply, with whether logging them worked.
type Logged = (Vec<TreeApply>, Result<(), StoreError>);

/// Gathers one cycle's writes by tree and logs them as one synced entry.
fn log_cycle(wal: &mut Wal, commits: &mut [Commit], errors: &AtomicU64) -> Logged {
    // A database has a handful of trees: a linear search finds a commit's.
    let mut trees: Vec<TreeCycle> = Vec::new();
    for commit in commits.iter_mut() {
        let index = match trees
            .iter()
            .position(|tree| Arc::ptr_eq(&tree.target, &commit.target))
        {
            Some(index) => index,
            None => {
                let counter_before = *commit.target.counter_written.lock();
                trees.push(TreeCycle {
                    target: commit.target.clone(),
                    writes: Vec::new(),
                    counter_before,
                });
                trees.len() - 1
            }
        };
        let tree = &mut trees[index];
        let mut written = tree.target.counter_written.lock();
        if commit.counter > *written {
            *written = commit.counter;
            tree.writes.push((
                tree.target.counter_key.clone(),
                Some(commit.counter.to_be_bytes().to_vec()),
            ));
        }
        drop(written);
        tree.writes
            .extend(commit.writes.drain(..).map(|write| match write {
                Write::Put(key, value) => (key, Some(value)),
                Write::Delete(key) => (key, None),
            }));
    }
    let logged: Vec<TreeWrites> = trees
        .iter_mut()
        .filter(|tree| !tree.writes.is_empty())
        .map(|tree| TreeWrites {
            tree: tree.target.tree.name().to_vec(),
            writes: std::mem::take(&mut tree.writes),
        })
        .collect();
    let result = if logged.is_empty() {
        Ok(())
    } else {
        encode_entry(&logged).and_then(|entry| wal.append(&entry))
    };
    if let Err(err) = &result {
        for tree in &trees {
            *tree.target.counter_written.lock() = tree.counter_before;
        }
        errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %err, "storage commit failed");
    }
    let targets = trees
        .iter()
        .filter(|tree| tree.writes.is_empty())
        .map(|tree| tree.target.tree.clone());
    let writes = targets
        .zip(logged)
        .map(|(tree, logged)| (tree, logged.writes))
        .collect();
    (writes, result)
}

/// Asks the apply thread to make sled hold everything logged so far, then empties the log. On
/// failure the log stays as it is; the next checkpoint or start-up tries again.
fn checkpoint(to_apply: &mpsc::Sender<Stage>, wal: &mut Wal, errors: &AtomicU64) {
    let (reply, done) = mpsc::sync_channel(1);
    let done = to_apply
        .send(Stage::Checkpoint(reply))
        .map_err(|_| StoreError::Closed)
        .and_then(|()| done.recv().map_err(|_| StoreError::Closed)?)
        .and_then(|()| wal.reset());
    if let Err(err) = done {
        errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %err, "storage checkpoint failed");
    }
}

/// The apply thread: applies logged cycles to sled in order, then runs each commit's callback
/// and sends its acknowledgement.
fn apply_loop(
    db: sled::Db,
    mut durable: Durable,
    stages: mpsc::Receiver<Stage>,
    errors: Arc<AtomicU64>,
) {
    while let Ok(stage) = stages.recv() {
        match stage {
            Stage::Cycle {
                commits,
                writes,
                logged,
            } => {
                let result = logged.and_then(|()| {
                    apply(writes).inspect_err(|err| {
                        // Logged but not applied: the replay at the next start applies it.
                        errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %err, "storage apply failed");
                    })
                });
                for commit in commits {
                    if let Some(after) = commit.after {
                        after(&result);
                    }
                    if let Some(ack) = commit.ack {
                        let _ = ack.send(result.clone());
                    }
                }
            }
            Stage::Checkpoint(reply) => {
                let synced = db
                    .flush()
                    .map_err(StoreError::from)
                    .and_then(|_| durable.sync());
                let _ = reply.send(synced);
            }
        }
    }
}

/// Applies one cycle's writes, key by key. The cycle is already durable in the log, which is
/// what makes it atomic: a crash part-way leaves sled with some of its keys, and the replay at
/// start-up writes them all. Not `apply_batch`: each sled batch seals sled's log buffer and hands
/// its write to sled's I/O pool, waking every thread of the pool (measured: ~190 µs of CPU per
/// batch on this machine), while single-key writes wait in the buffer for the next checkpoint.
fn apply(writes: Vec<TreeApply>) -> Result<(), StoreError> {
    for (tree, writes) in writes {
        // Only the last write of a key in the cycle matters (a take and a delete of the same job).
        let last: BTreeMap<Vec<u8>, Option<Vec<u8>>> = writes.into_iter().collect();
        for (key, value) in last {
            match value {
                Some(value) => {
                    tree.insert(key, value)?;
                }
                None => {
                    tree.remove(key)?;
                }
            }
        }
    }
    Ok(())
}
