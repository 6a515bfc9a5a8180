//! Group commit: one thread merges every pending write into one sled batch and one flush.
//!
//! sled's flush cost grows with the number of write batches since the last flush, not with the
//! number of keys, so durability is cheap only when many operations share a batch. Callers send
//! their writes (already in the order their in-memory state changed) and, for durable operations,
//! wait for the acknowledgement that follows the flush. While one flush runs, the next batch
//! gathers by itself: the busier the store, the larger each batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::store::StoreError;

/// One key write.
pub enum Write {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// Runs on the committer thread once the commit's batch is applied and flushed (or failed),
/// before the acknowledgement is sent.
pub type AfterCommit = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;

struct Commit {
    writes: Vec<Write>,
    /// Highest value of the store's order counter this commit's writes used (0: none).
    counter: u64,
    after: Option<AfterCommit>,
    ack: Option<oneshot::Sender<Result<(), StoreError>>>,
}

/// Most commits merged into one batch; bounds the latency of the first one in it.
const MAX_COMMITS_PER_BATCH: usize = 20_000;

pub struct Committer {
    sender: Mutex<Option<mpsc::Sender<Commit>>>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
    errors: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
}

impl Committer {
    /// Starts the thread. `counter_key` names the key where the highest counter value used by any
    /// commit is kept; the thread writes it (never decreasing) in the batch that uses the value,
    /// so ids taken from the counter are never handed out twice, even across crashes.
    pub fn start(
        db: sled::Db,
        tree: sled::Tree,
        counter_key: Vec<u8>,
        counter_start: u64,
    ) -> Result<Committer, StoreError> {
        let (sender, receiver) = mpsc::channel::<Commit>();
        let errors = Arc::new(AtomicU64::new(0));
        let batches = Arc::new(AtomicU64::new(0));
        let thread_errors = errors.clone();
        let thread_batches = batches.clone();
        let handle = thread::Builder::new()
            .name("courier-commit".to_owned())
            .spawn(move || {
                let counter = CounterKey {
                    key: counter_key,
                    written: counter_start,
                };
                run(db, tree, counter, receiver, thread_errors, thread_batches)
            })
            .map_err(|err| StoreError::Io(format!("cannot start the commit thread: {err}")))?;
        Ok(Committer {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(handle)),
            errors,
            batches,
        })
    }

    /// Queues writes without waiting. They are applied in submission order, before any later
    /// durable commit is acknowledged.
    pub fn submit(&self, writes: Vec<Write>, counter: u64) {
        if writes.is_empty() {
            return;
        }
        self.send(Commit {
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
            writes,
            counter,
            after,
            ack: Some(ack),
        });
        done
    }

    fn send(&self, commit: Commit) {
        let sender = self.sender.lock();
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

    /// Number of batches that failed to apply or flush since start.
    pub fn error_count(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Number of batches committed since start (for benchmarks and tests of group commit).
    pub fn batch_count(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Commits everything queued so far, then stops the thread.
    pub fn close(&self) {
        self.sender.lock().take();
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.close();
    }
}

struct CounterKey {
    key: Vec<u8>,
    written: u64,
}

fn run(
    db: sled::Db,
    tree: sled::Tree,
    mut counter: CounterKey,
    receiver: mpsc::Receiver<Commit>,
    errors: Arc<AtomicU64>,
    batches: Arc<AtomicU64>,
) {
    let mut commits = Vec::new();
    while let Ok(first) = receiver.recv() {
        commits.push(first);
        while commits.len() < MAX_COMMITS_PER_BATCH {
            match receiver.try_recv() {
                Ok(next) => commits.push(next),
                Err(_) => break,
            }
        }
        let mut batch = sled::Batch::default();
        let used = commits
            .iter()
            .map(|commit| commit.counter)
            .max()
            .unwrap_or(0);
        let counter_before = counter.written;
        if used > counter.written {
            counter.written = used;
            batch.insert(counter.key.clone(), used.to_be_bytes().to_vec());
        }
        for commit in commits.iter_mut() {
            for write in commit.writes.drain(..) {
                match write {
                    Write::Put(key, value) => batch.insert(key, value),
                    Write::Delete(key) => batch.remove(key),
                }
            }
        }
        let result = tree
            .apply_batch(batch)
            .and_then(|()| db.flush().map(|_| ()))
            .map_err(StoreError::from);
        batches.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = &result {
            counter.written = counter_before;
            errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %err, "storage commit failed");
        }
        for commit in commits.drain(..) {
            if let Some(after) = commit.after {
                after(&result);
            }
            if let Some(ack) = commit.ack {
                let _ = ack.send(result.clone());
            }
        }
    }
}
