//! The in-memory job store: every queue's jobs in plain maps, behind one lock.
//!
//! It keeps the [`JobStore`] contract the way the sled store does (same ordering, same ids, same
//! tokens, same results), minus everything about disks: a write is visible the moment its call
//! returns and lost with the process, so *durable* means nothing here and `flush` has nothing to
//! do. Every operation runs start to finish under the one lock, which makes each one atomic.
//!
//! A queue keeps each state's jobs in a line ([`queue`]): the order in which `take`,
//! `promote_due`, trimming, `clean` and `list` walk them.

mod queue;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::store::groups::Pick;
use crate::store::job::{
    Added, Complete, Counts, Expired, Fail, FailOutcome, Job, JobPage, JobState, KeepJobs, Millis,
    NewJob, Take, TakeRequest, TakenJob,
};
use crate::store::watch::Watches;
use crate::store::{JobStore, RemovedIds, RemovedOutcome, StoreError, WorkWatch};

use self::queue::{
    back_to_waiting, revive, to_failed, to_waiting, Counters, Queue, INLINE_TRIM_LIMIT, KEPT_TRACES,
};

/// Every queue of the store, and the counters they share.
#[derive(Default)]
struct Queues {
    by_name: HashMap<String, Queue>,
    counters: Counters,
}

/// A [`JobStore`] that keeps everything in memory; see the module documentation.
#[derive(Default)]
pub struct MemoryJobStore {
    queues: Mutex<Queues>,
    /// Wakes idle workers of every handle when a job becomes takeable.
    watches: Watches,
}

impl MemoryJobStore {
    pub fn new() -> MemoryJobStore {
        MemoryJobStore::default()
    }

    /// Runs `read` on a queue under the lock. A queue nothing was written to reads as empty.
    fn read<T>(&self, queue: &str, read: impl FnOnce(&Queue) -> T) -> T {
        let queues = self.queues.lock();
        match queues.by_name.get(queue) {
            Some(found) => read(found),
            None => read(&Queue::default()),
        }
    }

    /// Runs `write` on a queue, created if need be, under the lock: one atomic operation. A job
    /// of a group with waiting jobs leaving `active` wakes a worker for the group's next one.
    fn write<T>(&self, queue: &str, write: impl FnOnce(&mut Queue, &mut Counters) -> T) -> T {
        let mut queues = self.queues.lock();
        let Queues { by_name, counters } = &mut *queues;
        let found = by_name.entry(queue.to_owned()).or_default();
        let result = write(found, counters);
        if found.take_freed() {
            self.watches.wake(queue);
        }
        result
    }
}

fn strings(ids: Vec<Arc<str>>) -> Vec<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

fn clamp(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn add(
        &self,
        queue: &str,
        jobs: Vec<NewJob>,
        now: Millis,
    ) -> Result<Vec<Added>, StoreError> {
        let added: Vec<Added> = self.write(queue, |found, counters| {
            jobs.into_iter()
                .map(|job| found.add(job, counters, now))
                .collect()
        });
        // The engine that added wakes the workers once it has announced the jobs (`WorkWatch`).
        Ok(added)
    }

    async fn take(
        &self,
        queue: &str,
        request: TakeRequest,
        now: Millis,
    ) -> Result<Take, StoreError> {
        Ok(self.write(queue, |queue, counters| {
            if queue.paused {
                return Take::Empty;
            }
            let choice = match queue.lanes.pick(request.groups, now) {
                Pick::Job(choice) => choice,
                Pick::Empty => return Take::Empty,
                Pick::RateLimited(until) => return Take::RateLimited { until },
            };
            let id = choice.key.id.clone();
            if let Err(until) = queue.rate.admit(request.limit, now) {
                return Take::RateLimited { until };
            }
            queue.lanes.commit(&choice, request.groups, now);
            let token = counters.next_token();
            let Some(job) = queue.change(&id, |status| {
                status.state = JobState::Active;
                status.entered_at = now;
                status.token = token;
                status.processed_at = Some(now);
            }) else {
                return Take::Empty;
            };
            let lease_until = now.saturating_add(request.lease_ms);
            let (spec, attempts_made, ready_at) = (
                job.spec.clone(),
                job.status.attempts_made,
                job.status.ready_at,
            );
            queue.leases.grant(id.clone(), token, lease_until);
            Take::Job(Box::new(TakenJob {
                id: id.to_string(),
                spec,
                attempts_made,
                token,
                ready_at,
                more_waiting: !queue.line(JobState::Waiting).is_empty(),
            }))
        }))
    }

    async fn promote_due(&self, queue: &str, now: Millis) -> Result<Vec<String>, StoreError> {
        let promoted = self.write(queue, |queue, counters| {
            let due: Vec<Arc<str>> = queue
                .line(JobState::Delayed)
                .iter()
                .take_while(|place| place.rank.0 <= now)
                .map(|place| place.id.clone())
                .collect();
            for id in &due {
                let order = counters.next_order();
                // Ready since it was due, however late the timer came to it.
                queue.change(id, |status| to_waiting(status, order, status.ready_at));
            }
            strings(due)
        });
        if !promoted.is_empty() {
            self.watches.wake(queue);
        }
        Ok(promoted)
    }

    async fn next_due(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        Ok(self.read(queue, |queue| {
            queue
                .line(JobState::Delayed)
                .first()
                .map(|place| place.rank.0)
        }))
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
        Ok(self.write(queue, |queue, _| {
            if !queue.owned_by(id, token) {
                return false;
            }
            if keep == KeepJobs::NONE {
                queue.take_out(id);
                return true;
            }
            queue.change(id, |status| {
                status.state = JobState::Completed;
                status.entered_at = now;
                status.attempts_made += 1;
                status.finished_at = Some(now);
                status.return_value = Some(return_value);
                status.token = 0;
            });
            queue.trim(JobState::Completed, keep, now, INLINE_TRIM_LIMIT);
            true
        }))
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
        let outcome = self.write(queue, |queue, counters| {
            if !queue.owned_by(id, token) {
                return FailOutcome::Stale;
            }
            let order = counters.next_order();
            if retry_at.is_none() && keep == KeepJobs::NONE {
                queue.take_out(id);
                return FailOutcome::Failed;
            }
            queue.change(id, |status| {
                status.attempts_made += 1;
                status.stacktrace.push(stack);
                // The newest traces only: a job retried forever must not grow without bound.
                if status.stacktrace.len() > KEPT_TRACES {
                    status.stacktrace.remove(0);
                }
                match retry_at {
                    Some(at) if at > now => {
                        status.state = JobState::Delayed;
                        status.order = order;
                        status.ready_at = at;
                        status.entered_at = now;
                        status.token = 0;
                        status.failed_reason = Some(reason);
                    }
                    Some(_) => {
                        to_waiting(status, order, now);
                        status.failed_reason = Some(reason);
                    }
                    None => to_failed(status, reason, now),
                }
            });
            match retry_at {
                Some(at) => FailOutcome::Retrying { at },
                None => {
                    queue.trim(JobState::Failed, keep, now, INLINE_TRIM_LIMIT);
                    FailOutcome::Failed
                }
            }
        });
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
        let state = self.write(queue, |queue, _| {
            if !queue.owned_by(id, token) {
                return None;
            }
            queue.stall(id, max_stalled, now)
        });
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
        Ok(self.write(queue, |queue, _| {
            if !queue.owned_by(id, token) {
                return false;
            }
            queue.leases.grant(Arc::from(id), token, until);
            true
        }))
    }

    async fn expire_leases(
        &self,
        queue: &str,
        now: Millis,
        max_stalled: u32,
    ) -> Result<Vec<Expired>, StoreError> {
        let expired: Vec<Expired> = self.write(queue, |queue, _| {
            let mut expired = Vec::new();
            for (id, token) in queue.active() {
                if !queue.leases.lapsed(&id, token, now) {
                    continue;
                }
                queue.leases.end(&id);
                if let Some(state) = queue.stall(&id, max_stalled, now) {
                    expired.push(Expired {
                        id: id.to_string(),
                        state,
                    });
                }
            }
            let active: HashMap<Arc<str>, u64> = queue.active().into_iter().collect();
            queue
                .leases
                .retain(|id, token| active.get(id) == Some(&token));
            expired
        });
        if expired.iter().any(|job| job.state == JobState::Waiting) {
            self.watches.wake(queue);
        }
        Ok(expired)
    }

    async fn next_lease_expiry(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        Ok(self.write(queue, |queue, _| {
            queue
                .active()
                .iter()
                .map(|(id, token)| queue.leases.until(id, *token))
                .min()
        }))
    }

    async fn release(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let released = self.write(queue, |queue, _| {
            if !queue.owned_by(id, token) {
                return false;
            }
            queue.change(id, |status| back_to_waiting(status, now));
            true
        });
        if released {
            self.watches.wake(queue);
        }
        Ok(released)
    }

    async fn owns(&self, queue: &str, id: &str, token: u64) -> Result<bool, StoreError> {
        Ok(self.read(queue, |queue| queue.owned_by(id, token)))
    }

    async fn force_fail(
        &self,
        queue: &str,
        id: &str,
        reason: String,
        now: Millis,
    ) -> Result<bool, StoreError> {
        Ok(self.write(queue, |queue, _| {
            if queue.state_of(id) != Some(JobState::Active) {
                return false;
            }
            queue.change(id, |status| {
                status.attempts_made += 1;
                status.stacktrace.push(reason.clone());
                to_failed(status, reason, now);
            });
            true
        }))
    }

    async fn progress(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        progress: String,
    ) -> Result<bool, StoreError> {
        Ok(self.write(queue, |queue, _| {
            if !queue.owned_by(id, token) {
                return false;
            }
            queue.change(id, |status| status.progress = progress);
            true
        }))
    }

    async fn log(&self, queue: &str, id: &str, line: String) -> Result<bool, StoreError> {
        Ok(self.write(queue, |queue, _| queue.log(id, line)))
    }

    async fn logs(&self, queue: &str, id: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.read(queue, |queue| queue.logs(id)))
    }

    async fn get(&self, queue: &str, id: &str) -> Result<Option<Job>, StoreError> {
        Ok(self.read(queue, |found| found.job(queue, id)))
    }

    async fn counts(&self, queue: &str) -> Result<Counts, StoreError> {
        Ok(self.read(queue, Queue::counts))
    }

    async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> Result<JobPage, StoreError> {
        Ok(self.read(queue, |found| {
            let line = found.line(state);
            let jobs = line
                .iter()
                .rev()
                .skip(clamp(offset))
                .take(clamp(limit))
                .filter_map(|place| found.job(queue, &place.id))
                .collect();
            JobPage {
                jobs,
                total: line.len() as u64,
            }
        }))
    }

    async fn retry(&self, queue: &str, id: &str, now: Millis) -> Result<bool, StoreError> {
        let retried = self.write(queue, |queue, counters| {
            if queue.state_of(id) != Some(JobState::Failed) {
                return false;
            }
            let order = counters.next_order();
            queue.change(id, |status| revive(status, order, now));
            true
        });
        if retried {
            self.watches.wake(queue);
        }
        Ok(retried)
    }

    async fn retry_all_failed(&self, queue: &str, now: Millis) -> Result<u64, StoreError> {
        let retried = self.write(queue, |queue, counters| {
            // Oldest failure first, so the retried jobs queue up in the order they failed.
            let failed = queue.ids_in(JobState::Failed);
            for id in &failed {
                let order = counters.next_order();
                queue.change(id, |status| revive(status, order, now));
            }
            failed.len() as u64
        });
        if retried > 0 {
            self.watches.wake(queue);
        }
        Ok(retried)
    }

    async fn promote(&self, queue: &str, id: &str, now: Millis) -> Result<bool, StoreError> {
        let promoted = self.write(queue, |queue, counters| {
            if queue.state_of(id) != Some(JobState::Delayed) {
                return false;
            }
            let order = counters.next_order();
            queue.change(id, |status| to_waiting(status, order, now));
            true
        });
        if promoted {
            self.watches.wake(queue);
        }
        Ok(promoted)
    }

    async fn remove(&self, queue: &str, id: &str) -> Result<RemovedOutcome, StoreError> {
        Ok(self.write(queue, |queue, _| match queue.state_of(id) {
            None => RemovedOutcome::NotFound,
            Some(JobState::Active) => RemovedOutcome::Active,
            Some(_) => {
                queue.take_out(id);
                RemovedOutcome::Removed
            }
        }))
    }

    async fn clean(
        &self,
        queue: &str,
        state: JobState,
        grace_ms: u64,
        limit: u64,
        now: Millis,
    ) -> Result<RemovedIds, StoreError> {
        Ok(self.write(queue, |queue, _| {
            let cutoff = now.saturating_sub(grace_ms);
            let limit = if limit == 0 { usize::MAX } else { clamp(limit) };
            let doomed: Vec<Arc<str>> = queue
                .line(state)
                .iter()
                .filter(|place| {
                    queue
                        .status(&place.id)
                        .is_some_and(|status| status.entered_at <= cutoff)
                })
                .take(limit)
                .map(|place| place.id.clone())
                .collect();
            for id in &doomed {
                queue.take_out(id);
            }
            strings(doomed)
        }))
    }

    async fn drain(&self, queue: &str, include_delayed: bool) -> Result<u64, StoreError> {
        Ok(self.write(queue, |queue, _| {
            let mut doomed = queue.ids_in(JobState::Waiting);
            if include_delayed {
                doomed.extend(queue.ids_in(JobState::Delayed));
            }
            for id in &doomed {
                queue.take_out(id);
            }
            doomed.len() as u64
        }))
    }

    async fn trim(
        &self,
        queue: &str,
        keep_completed: KeepJobs,
        keep_failed: KeepJobs,
        now: Millis,
    ) -> Result<u64, StoreError> {
        Ok(self.write(queue, |queue, _| {
            queue.trim(JobState::Completed, keep_completed, now, usize::MAX)
                + queue.trim(JobState::Failed, keep_failed, now, usize::MAX)
        }))
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError> {
        self.write(queue, |queue, _| queue.paused = paused);
        if !paused {
            self.watches.wake(queue);
        }
        Ok(())
    }

    async fn is_paused(&self, queue: &str) -> Result<bool, StoreError> {
        Ok(self.read(queue, |queue| queue.paused))
    }

    async fn oldest_waiting(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        // Waiting is ordered by priority, not age: look at every waiting job.
        Ok(self.read(queue, |queue| {
            queue
                .line(JobState::Waiting)
                .iter()
                .filter_map(|place| queue.status(&place.id))
                .map(|status| status.ready_at)
                .min()
        }))
    }

    fn watch(&self, queue: &str) -> WorkWatch {
        self.watches.watch(queue)
    }

    /// Nothing to flush: every write was complete when its call returned.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
