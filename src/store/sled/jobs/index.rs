//! The in-memory indexes of one queue of the sled job store: its jobs' statuses, one ordered set
//! per state, its lanes of groups, leases and rate window. Rebuilt from the status records at
//! start-up (the status record *is* the index entry).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures_util::future::{BoxFuture, Shared};

use crate::store::groups::Lanes;
use crate::store::job::{Counts, JobSpec, JobState, JobStatus};
use crate::store::leases::{Leases, RateWindow};
use crate::store::StoreError;

/// `order` values of LIFO jobs sort below this, FIFO jobs above, so at equal priority every LIFO
/// job (newest first) runs before the FIFO ones, as in Bull.
pub(super) const LIFO_PIVOT: u64 = 1 << 62;

pub(super) type IndexKey = (u64, u64, Arc<str>);

/// Resolves with the outcome of an add's commit.
pub(super) type PendingAdd = Shared<BoxFuture<'static, Result<(), StoreError>>>;

/// Where a status sits in its state's index.
pub(super) fn index_key(id: &Arc<str>, status: &JobStatus) -> IndexKey {
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

pub(super) struct Entry {
    pub(super) id: Arc<str>,
    pub(super) status: JobStatus,
    /// Added but not yet durable: invisible to every operation but dedupe, which waits on this
    /// for the add's outcome.
    pub(super) pending: Option<PendingAdd>,
    /// The spec of a job added by this process and not yet taken, so its first `take` need not
    /// read it back and decode it. Only jobs waiting to run hold one.
    pub(super) unread_spec: Option<JobSpec>,
}

#[derive(Default)]
pub(super) struct QueueIndex {
    pub(super) jobs: HashMap<Arc<str>, Entry>,
    pub(super) by_state: [BTreeSet<IndexKey>; 5],
    pub(super) paused: bool,
    /// Lease deadlines of the active jobs' attempts. In memory only: the process that holds a
    /// lease is the only one using the database, so none survives a restart, and active jobs
    /// found at open are recovered by the first expiry pass.
    pub(super) leases: Leases,
    /// The rate limit's current window (in memory, like the leases).
    pub(super) rate: RateWindow,
    /// Waiting jobs by group in turn order, each group's active count and rate window (in
    /// memory, rebuilt from the status records like the indexes).
    pub(super) lanes: Lanes<IndexKey>,
    /// A job of a group with waiting jobs left `active` since the last look.
    pub(super) freed: bool,
}

pub(super) fn slot(state: JobState) -> usize {
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
    pub(super) fn active(&self) -> Vec<(Arc<str>, u64)> {
        self.set(JobState::Active)
            .iter()
            .filter_map(|(_, _, id)| {
                let entry = self.jobs.get(id)?;
                Some((id.clone(), entry.status.token))
            })
            .collect()
    }

    pub(super) fn set(&self, state: JobState) -> &BTreeSet<IndexKey> {
        &self.by_state[slot(state)]
    }

    pub(super) fn insert_visible(&mut self, entry: Entry) {
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
    pub(super) fn take_freed(&mut self) -> bool {
        std::mem::take(&mut self.freed)
    }

    /// Whether `token` is the current attempt of an active job.
    pub(super) fn owns(&self, id: &str, token: u64) -> bool {
        self.visible(id).is_some_and(|entry| {
            entry.status.state == JobState::Active && entry.status.token == token
        })
    }

    pub(super) fn is_in(&self, id: &str, state: JobState) -> bool {
        self.visible(id)
            .is_some_and(|entry| entry.status.state == state)
    }

    pub(super) fn visible(&self, id: &str) -> Option<&Entry> {
        self.jobs.get(id).filter(|entry| entry.pending.is_none())
    }

    /// Applies `change` to a visible job's status, keeping its index entry in step, and returns
    /// the new status.
    pub(super) fn update(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut JobStatus),
    ) -> Option<&JobStatus> {
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

    pub(super) fn remove(&mut self, id: &str) -> Option<Entry> {
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

    pub(super) fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for state in JobState::ALL {
            *counts.get_mut(state) = self.set(state).len() as u64;
        }
        counts
    }
}
