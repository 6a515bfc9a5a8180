//! One queue of the memory store: its jobs, and a line per state that orders them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::store::groups::Lanes;
use crate::store::leases::{Leases, RateWindow};

use crate::store::job::{
    Added, Counts, Job, JobSpec, JobState, JobStatus, KeepJobs, Millis, NewJob,
};

/// At most this many finished jobs are trimmed by the completion or failure that finished one
/// more; `trim` removes the rest (the sled store's bound too).
pub(super) const INLINE_TRIM_LIMIT: usize = 1_000;

/// Failure traces a job keeps; `fail` drops the oldest beyond it.
pub(super) const KEPT_TRACES: usize = 10;

const STALLED_TOO_OFTEN: &str = "job stalled more than allowable limit";

/// A job's position in its state's line: by `rank`, then by id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Place {
    pub(super) rank: (u64, u64),
    pub(super) id: Arc<str>,
}

impl Place {
    fn of(id: &Arc<str>, status: &JobStatus) -> Place {
        let rank = match status.state {
            // Priority first (1 runs first, none runs last). At equal priority LIFO jobs, newest
            // first, come before FIFO jobs, oldest first: the low bit puts LIFO ahead, and a
            // LIFO job's order counts down.
            JobState::Waiting => {
                let fifo = u64::from(!status.lifo);
                let class = (u64::from(status.priority) << 1) | fifo;
                let position = if status.lifo {
                    u64::MAX - status.order
                } else {
                    status.order
                };
                (class, position)
            }
            // Soonest due first.
            JobState::Delayed => (status.ready_at, status.order),
            // Longest running first.
            JobState::Active => (status.processed_at.unwrap_or(0), status.order),
            // Oldest finished first: trimming and `clean` walk from this end, `list` from the other.
            JobState::Completed | JobState::Failed => {
                (status.finished_at.unwrap_or(0), status.order)
            }
        };
        Place {
            rank,
            id: id.clone(),
        }
    }
}

pub(super) type Line = BTreeSet<Place>;

/// What the store holds of one job.
pub(super) struct StoredJob {
    pub(super) spec: JobSpec,
    pub(super) status: JobStatus,
    logs: Vec<String>,
}

/// The counters shared by every queue of the store.
#[derive(Default)]
pub(super) struct Counters {
    /// Source of `order` values and of automatic ids.
    order: u64,
    /// Attempt tokens: unique within the store's life, 0 never handed out.
    token: u64,
}

impl Counters {
    pub(super) fn next_order(&mut self) -> u64 {
        self.order += 1;
        self.order
    }

    pub(super) fn next_token(&mut self) -> u64 {
        self.token += 1;
        self.token
    }
}

/// One queue: its jobs, a line per state (each job in exactly the line of its state), paused.
#[derive(Default)]
pub(super) struct Queue {
    jobs: HashMap<Arc<str>, StoredJob>,
    lines: [Line; 5],
    pub(super) paused: bool,
    /// Lease deadlines of the active jobs' attempts.
    pub(super) leases: Leases,
    /// The rate limit's current window.
    pub(super) rate: RateWindow,
    /// Waiting jobs by group, in turn order, and each group's active count.
    pub(super) lanes: Lanes<Place>,
    /// A job of a group with waiting jobs left `active` since the last look: a worker may start
    /// one of them now.
    freed: bool,
}

fn line_of(state: JobState) -> usize {
    match state {
        JobState::Waiting => 0,
        JobState::Delayed => 1,
        JobState::Active => 2,
        JobState::Completed => 3,
        JobState::Failed => 4,
    }
}

/// `status` enters `waiting` at the end of its priority's FIFO (or the head of its LIFO) jobs,
/// ready to run since `since`.
pub(super) fn to_waiting(status: &mut JobStatus, order: u64, since: Millis) {
    status.state = JobState::Waiting;
    status.order = order;
    status.ready_at = since;
    status.entered_at = since;
    status.token = 0;
}

/// An active job cut off mid-run (stalled, released) goes back to `waiting` in its old place:
/// before the jobs queued after it, so a group's order survives a crash.
pub(super) fn back_to_waiting(status: &mut JobStatus, since: Millis) {
    let order = status.order;
    to_waiting(status, order, since);
}

pub(super) fn to_failed(status: &mut JobStatus, reason: String, now: Millis) {
    status.state = JobState::Failed;
    status.entered_at = now;
    status.finished_at = Some(now);
    status.failed_reason = Some(reason);
    status.token = 0;
}

/// A failed job retried by hand: waiting, with a fresh set of attempts (its traces stay).
pub(super) fn revive(status: &mut JobStatus, order: u64, now: Millis) {
    to_waiting(status, order, now);
    status.attempts_made = 0;
    status.stalled_count = 0;
    status.processed_at = None;
    status.finished_at = None;
    status.failed_reason = None;
    status.return_value = None;
}

impl Queue {
    pub(super) fn line(&self, state: JobState) -> &Line {
        &self.lines[line_of(state)]
    }

    /// The ids in `state`, in line order.
    pub(super) fn ids_in(&self, state: JobState) -> Vec<Arc<str>> {
        self.line(state)
            .iter()
            .map(|place| place.id.clone())
            .collect()
    }

    pub(super) fn status(&self, id: &str) -> Option<&JobStatus> {
        self.jobs.get(id).map(|job| &job.status)
    }

    pub(super) fn state_of(&self, id: &str) -> Option<JobState> {
        self.status(id).map(|status| status.state)
    }

    /// Appends a line to a job's logs; `false` when there is no such job.
    pub(super) fn log(&mut self, id: &str, line: String) -> bool {
        // The line count is no part of a job's place: its line needs no refiling.
        let Some(job) = self.jobs.get_mut(id) else {
            return false;
        };
        job.status.log_count += 1;
        job.logs.push(line);
        true
    }

    pub(super) fn logs(&self, id: &str) -> Vec<String> {
        self.jobs
            .get(id)
            .map(|job| job.logs.clone())
            .unwrap_or_default()
    }

    /// Whether `token` is the current attempt of an active job.
    pub(super) fn owned_by(&self, id: &str, token: u64) -> bool {
        self.jobs
            .get(id)
            .is_some_and(|job| job.status.state == JobState::Active && job.status.token == token)
    }

    fn insert(&mut self, id: Arc<str>, job: StoredJob) {
        let place = Place::of(&id, &job.status);
        self.lanes
            .enter(job.status.group.as_deref(), job.status.state, place.clone());
        self.lines[line_of(job.status.state)].insert(place);
        self.jobs.insert(id, job);
    }

    /// Removes a job, with its logs, from the queue and its line.
    pub(super) fn take_out(&mut self, id: &str) -> Option<StoredJob> {
        let (id, job) = self.jobs.remove_entry(id)?;
        let place = Place::of(&id, &job.status);
        self.freed |= self
            .lanes
            .leave(job.status.group.as_deref(), job.status.state, &place);
        self.lines[line_of(job.status.state)].remove(&place);
        Some(job)
    }

    /// Whether a job of a group with waiting jobs left `active` since the last call.
    pub(super) fn take_freed(&mut self) -> bool {
        std::mem::take(&mut self.freed)
    }

    /// Applies `edit` to a job's status and files the job in the line of its new state.
    pub(super) fn change(
        &mut self,
        id: &str,
        edit: impl FnOnce(&mut JobStatus),
    ) -> Option<&StoredJob> {
        let (id, mut job) = self.jobs.remove_entry(id)?;
        let (state_before, before) = (job.status.state, Place::of(&id, &job.status));
        edit(&mut job.status);
        let after = Place::of(&id, &job.status);
        // Progress and log updates leave the job where it is.
        if job.status.state != state_before || after != before {
            let group = job.status.group.as_deref();
            self.freed |= self.lanes.leave(group, state_before, &before);
            self.lanes.enter(group, job.status.state, after.clone());
            self.lines[line_of(state_before)].remove(&before);
            self.lines[line_of(job.status.state)].insert(after);
        }
        Some(self.jobs.entry(id).or_insert(job))
    }

    pub(super) fn add(&mut self, job: NewJob, counters: &mut Counters, now: Millis) -> Added {
        if let Some(existing) = job.opts.job_id.as_deref().and_then(|id| self.jobs.get(id)) {
            return Added {
                id: job.opts.job_id.clone().unwrap_or_default(),
                existed: true,
                state: existing.status.state,
            };
        }
        let order = counters.next_order();
        let id: Arc<str> = match &job.opts.job_id {
            Some(id) => Arc::from(id.as_str()),
            None => {
                // Automatic ids count with `order`, passing over any a caller chose.
                let mut number = order;
                while self.jobs.contains_key(number.to_string().as_str()) {
                    number = counters.next_order();
                }
                Arc::from(number.to_string())
            }
        };
        // A job without a delay is ready now, in `waiting`; a delayed one when its delay is up.
        let state = match job.opts.delay_ms {
            0 => JobState::Waiting,
            _ => JobState::Delayed,
        };
        let ready_at = now.saturating_add(job.opts.delay_ms);
        let status = JobStatus {
            entered_at: now,
            ..JobStatus::new(state, &job.opts, order, ready_at)
        };
        self.insert(
            id.clone(),
            StoredJob {
                spec: JobSpec {
                    name: job.name,
                    data: job.data,
                    opts: job.opts,
                    created_at: now,
                },
                status,
                logs: Vec::new(),
            },
        );
        Added {
            id: id.to_string(),
            existed: false,
            state,
        }
    }

    /// Removes the finished jobs in `state` that `keep` does not keep, oldest first: those past
    /// its count, and those finished `age_ms` or more ago. At most `limit` of them.
    pub(super) fn trim(
        &mut self,
        state: JobState,
        keep: KeepJobs,
        now: Millis,
        limit: usize,
    ) -> u64 {
        if keep.keeps_everything() {
            return 0;
        }
        let line = self.line(state);
        let surplus = keep
            .count
            .map_or(0, |count| (line.len() as u64).saturating_sub(count));
        let cutoff = keep.age_ms.map(|age| now.saturating_sub(age));
        let doomed: Vec<Arc<str>> = line
            .iter()
            .zip(0u64..)
            .take_while(|(place, position)| {
                *position < surplus || cutoff.is_some_and(|cutoff| place.rank.0 <= cutoff)
            })
            .take(limit)
            .map(|(place, _)| place.id.clone())
            .collect();
        for id in &doomed {
            self.take_out(id);
        }
        doomed.len() as u64
    }

    /// An active job whose worker is gone: back to `waiting` with the stall counted, or to
    /// `failed` once it stalled more than `max_stalled` times.
    pub(super) fn stall(&mut self, id: &str, max_stalled: u32, now: Millis) -> Option<JobState> {
        let job = self.change(id, |status| {
            status.stalled_count += 1;
            if status.stalled_count > max_stalled {
                to_failed(status, STALLED_TOO_OFTEN.to_owned(), now);
            } else {
                back_to_waiting(status, now);
            }
        })?;
        Some(job.status.state)
    }

    /// The active jobs with the token of the attempt that holds each.
    pub(super) fn active(&self) -> Vec<(Arc<str>, u64)> {
        self.line(JobState::Active)
            .iter()
            .filter_map(|place| {
                let job = self.jobs.get(&place.id)?;
                Some((place.id.clone(), job.status.token))
            })
            .collect()
    }

    pub(super) fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for state in JobState::ALL {
            *counts.get_mut(state) = self.line(state).len() as u64;
        }
        counts
    }

    pub(super) fn job(&self, queue: &str, id: &str) -> Option<Job> {
        self.jobs.get(id).map(|job| Job {
            queue: queue.to_owned(),
            id: id.to_owned(),
            spec: job.spec.clone(),
            status: job.status.clone(),
        })
    }
}
