//! Group commit: one thread merges every pending write into one sled batch per tree and one
//! flush.
//!
//! sled's flush cost grows with the number of write batches since the last flush, not with the
//! number of keys, so durability is cheap only when many operations share a batch. Callers send
//! their writes (already in the order their in-memory state changed) and, for durable operations,
//! wait for the acknowledgement that follows the flush. While one flush runs, the next batch
//! gathers by itself: the busier the store, the larger each batch.
//!
//! One thread serves every tree of a database ([`Committer::share`]): a flush makes the whole
//! log durable, so the job store and the chat store share each flush instead of paying for two.
//! sled's own flush does not survive a power loss, so a second thread completes flushes with
//! [`Durable::sync`] (`fdatasync`): one sync covers every cycle flushed while the previous sync
//! ran, and the commit thread goes on building the next cycle meanwhile. Acknowledgements (and
//! after-commit callbacks) come from the sync thread, in commit order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::durable::{Database, Durable};
use crate::store::StoreError;

/// One key write.
pub enum Write {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// Runs on the sync thread once the commit is applied, flushed and synced (or failed), before
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
        let durable = db.take_syncer()?;
        let db = db.db.clone();
        let (sender, receiver) = mpsc::channel::<Commit>();
        let errors = Arc::new(AtomicU64::new(0));
        let batches = Arc::new(AtomicU64::new(0));
        let thread_errors = errors.clone();
        let thread_batches = batches.clone();
        let handle = thread::Builder::new()
            .name("courier-commit".to_owned())
            .spawn(move || run(db, durable, receiver, thread_errors, thread_batches))
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

/// One tree's part of a commit cycle: its batch, and which commits it holds.
struct TreeBatch {
    target: Arc<Target>,
    batch: sled::Batch,
    /// Keys in `batch`: an empty batch is not applied (sled would still log a batch marker).
    writes: usize,
    counter_before: u64,
    result: Result<(), StoreError>,
}

/// A commit cycle applied and flushed by the commit thread, on its way to the sync thread.
struct Flushed {
    commits: Vec<Commit>,
    /// For each commit, its tree's result so far.
    results: Vec<Result<(), StoreError>>,
}

fn run(
    db: sled::Db,
    durable: Durable,
    receiver: mpsc::Receiver<Commit>,
    errors: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
) {
    // The sync runs beside the commit thread: while the device writes one cycle out, the next
    // cycle's batch is built, applied and flushed, and one `fdatasync` covers every cycle
    // flushed meanwhile. Dropping `to_sync` at the end lets the sync thread finish the rest.
    let (to_sync, flushed) = mpsc::channel::<Flushed>();
    let sync_errors = errors.clone();
    let sync_thread = thread::Builder::new()
        .name("courier-sync".to_owned())
        .spawn(move || sync_loop(durable, flushed, sync_errors));
    let sync_thread = match sync_thread {
        Ok(handle) => handle,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the sync thread; nothing will commit");
            return;
        }
    };
    let mut commits = Vec::new();
    while let Ok(first) = receiver.recv() {
        commits.push(first);
        while commits.len() < MAX_COMMITS_PER_BATCH {
            match receiver.try_recv() {
                Ok(next) => commits.push(next),
                Err(_) => break,
            }
        }
        let results = apply(&db, &mut commits, &errors);
        batches.fetch_add(1, Ordering::Relaxed);
        let cycle = Flushed {
            commits: std::mem::take(&mut commits),
            results,
        };
        if let Err(mpsc::SendError(cycle)) = to_sync.send(cycle) {
            settle(cycle, &Err(StoreError::Closed));
        }
    }
    drop(to_sync);
    let _ = sync_thread.join();
}

/// Applies one cycle's writes (one batch per tree, in the order the commits came) and flushes
/// sled; returns each commit's result.
fn apply(db: &sled::Db, commits: &mut [Commit], errors: &AtomicU64) -> Vec<Result<(), StoreError>> {
    // A database has a handful of trees: a linear search finds a commit's.
    let mut trees: Vec<TreeBatch> = Vec::new();
    let mut tree_of = Vec::with_capacity(commits.len());
    for commit in commits.iter_mut() {
        let index = match trees
            .iter()
            .position(|tree| Arc::ptr_eq(&tree.target, &commit.target))
        {
            Some(index) => index,
            None => {
                let counter_before = *commit.target.counter_written.lock();
                trees.push(TreeBatch {
                    target: commit.target.clone(),
                    batch: sled::Batch::default(),
                    writes: 0,
                    counter_before,
                    result: Ok(()),
                });
                trees.len() - 1
            }
        };
        tree_of.push(index);
        let tree = &mut trees[index];
        let mut written = tree.target.counter_written.lock();
        if commit.counter > *written {
            *written = commit.counter;
            tree.batch.insert(
                tree.target.counter_key.clone(),
                commit.counter.to_be_bytes().to_vec(),
            );
            tree.writes += 1;
        }
        drop(written);
        tree.writes += commit.writes.len();
        for write in commit.writes.drain(..) {
            match write {
                Write::Put(key, value) => tree.batch.insert(key, value),
                Write::Delete(key) => tree.batch.remove(key),
            }
        }
    }
    for tree in trees.iter_mut().filter(|tree| tree.writes > 0) {
        let batch = std::mem::take(&mut tree.batch);
        tree.result = tree
            .target
            .tree
            .apply_batch(batch)
            .map_err(StoreError::from);
    }
    let flushed = db.flush().map(|_| ()).map_err(StoreError::from);
    for tree in trees.iter_mut() {
        if tree.result.is_ok() {
            tree.result = flushed.clone();
        }
        if let Err(err) = &tree.result {
            *tree.target.counter_written.lock() = tree.counter_before;
            errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %err, "storage commit failed");
        }
    }
    tree_of
        .into_iter()
        .map(|index| trees[index].result.clone())
        .collect()
}

/// The sync thread: one `fdatasync` for every cycle flushed since the last one, then each
/// commit's callback and acknowledgement, in commit order.
fn sync_loop(mut durable: Durable, flushed: mpsc::Receiver<Flushed>, errors: Arc<AtomicU64>) {
    let mut cycles = Vec::new();
    while let Ok(first) = flushed.recv() {
        cycles.push(first);
        cycles.extend(flushed.try_iter());
        let synced = durable.sync();
        if let Err(err) = &synced {
            errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %err, "storage sync failed");
        }
        for cycle in cycles.drain(..) {
            settle(cycle, &synced);
        }
    }
}

/// Runs the callbacks and sends the acknowledgements of one cycle.
fn settle(cycle: Flushed, synced: &Result<(), StoreError>) {
    for (commit, result) in cycle.commits.into_iter().zip(cycle.results) {
        let result = result.and_then(|()| synced.clone());
        if let Some(after) = commit.after {
            after(&result);
        }
        if let Some(ack) = commit.ack {
            let _ = ack.send(result);
        }
    }
}
