//! Wake-ups for idle workers: "a job may have become takeable in this queue".
//!
//! A worker whose `take` found nothing waits on its queue's [`WorkWatch`] instead of polling.
//! The store signals it from every transition that makes a job takeable (a promotion, a retry,
//! an expired lease, a release, a resume, a group freeing a slot), so the wake-up reaches
//! workers of every handle on the store, not only the process that caused it. An add is the
//! exception in process: the engine that added signals the watch itself once it has published
//! the job's `added` and `waiting` events, so no worker's `active` comes before them (a store
//! waking at visibility raced the announcement); the watch being the store's, workers of every
//! handle still wake. A shared backend still publishes an add for the other instances. Memory and
//! sled signal in process; the Redis backend publishes on a channel per queue after each such
//! transition and has one subscriber task per store call [`WorkWatch::wake`] on each message;
//! pub/sub can drop a message, so its watches are [`WorkWatch::lossy`] and the engine re-checks
//! at their interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// One queue's wake-up signal; cheap to clone (clones share the signal).
#[derive(Clone, Default)]
pub struct WorkWatch {
    signal: Arc<Notify>,
    /// How long a waiter should wait before looking anyway; `None`: signals are never lost.
    recheck_after: Option<Duration>,
}

impl std::fmt::Debug for WorkWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkWatch")
    }
}

impl WorkWatch {
    /// A watch whose every signal arrives (the store lives in this process).
    pub fn new() -> WorkWatch {
        WorkWatch::default()
    }

    /// A watch whose signals can be lost (they cross a network): waiters look again after
    /// `recheck_after` without one.
    pub fn lossy(recheck_after: Duration) -> WorkWatch {
        WorkWatch {
            signal: Arc::default(),
            recheck_after: Some(recheck_after),
        }
    }

    /// How long a waiter should wait for a signal before it looks anyway (`None`: no need).
    pub fn recheck_after(&self) -> Option<Duration> {
        self.recheck_after
    }

    /// Resolves once a job may have become takeable. A signal sent while nobody waits is kept
    /// for the next waiter, so one sent between an empty `take` and this wait is not lost.
    pub async fn changed(&self) {
        self.signal.notified().await
    }

    /// Wakes one waiter (or keeps the signal for the next one). Each woken worker that takes a
    /// job while more wait wakes the next, so one signal per transition is enough.
    pub fn wake(&self) {
        self.signal.notify_one();
    }
}

/// The watches of a store that lives in this process, by queue.
#[derive(Default)]
pub(crate) struct Watches {
    by_queue: Mutex<HashMap<String, WorkWatch>>,
}

impl Watches {
    pub(crate) fn watch(&self, queue: &str) -> WorkWatch {
        self.by_queue
            .lock()
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    pub(crate) fn wake(&self, queue: &str) {
        self.watch(queue).wake();
    }
}
