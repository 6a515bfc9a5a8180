//! Lease deadlines of active jobs, for backends that keep them in process memory (memory and
//! sled: one process owns the store, so a lease never has to outlive it).
//!
//! A lease is held by the attempt that took the job (its token). An active job without a
//! lease of its current token has lapsed: after a restart every active job is in that state, so
//! the first expiry pass recovers the jobs a dead process left active.

use std::collections::HashMap;
use std::sync::Arc;

use crate::store::job::{Millis, RateLimit};

/// A queue's fixed rate-limit window: `used` starts in the window opened at `start` (by the
/// first start after the previous window closed).
#[derive(Debug, Default)]
pub(crate) struct RateWindow {
    start: Option<Millis>,
    used: u32,
}

impl RateWindow {
    /// Counts a job start at `now` under `limit`, or says when the next slot opens.
    pub(crate) fn admit(&mut self, limit: Option<RateLimit>, now: Millis) -> Result<(), Millis> {
        let Some(limit) = limit else {
            return Ok(());
        };
        let start = match self.start {
            Some(start) if now < start.saturating_add(limit.duration_ms) => start,
            _ => {
                self.used = 0;
                *self.start.insert(now)
            }
        };
        if self.used >= limit.max {
            return Err(start.saturating_add(limit.duration_ms));
        }
        self.used += 1;
        Ok(())
    }

    /// Whether [`RateWindow::admit`] would count a start at `now`, without counting it.
    pub(crate) fn check(&self, limit: Option<RateLimit>, now: Millis) -> Result<(), Millis> {
        let Some(limit) = limit else {
            return Ok(());
        };
        match self.start {
            Some(start)
                if now < start.saturating_add(limit.duration_ms) && self.used >= limit.max =>
            {
                Err(start.saturating_add(limit.duration_ms))
            }
            _ => Ok(()),
        }
    }

    /// Whether the last window opened is over at `now` under `limit` (so forgetting it changes
    /// nothing); always true without a limit.
    pub(crate) fn is_over(&self, limit: Option<RateLimit>, now: Millis) -> bool {
        match (limit, self.start) {
            (Some(limit), Some(start)) => now >= start.saturating_add(limit.duration_ms),
            _ => true,
        }
    }

    /// Whether no window was ever opened (nothing to remember about this limit).
    pub(crate) fn is_unused(&self) -> bool {
        self.start.is_none()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Leases {
    by_job: HashMap<Arc<str>, Lease>,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    token: u64,
    until: Millis,
}

impl Leases {
    /// Records the lease of the attempt holding `token` (a take or a renewal).
    pub(crate) fn grant(&mut self, id: Arc<str>, token: u64, until: Millis) {
        self.by_job.insert(id, Lease { token, until });
    }

    /// When the lease of the attempt holding `token` lapses; `0` (lapsed) when it has none.
    pub(crate) fn until(&self, id: &str, token: u64) -> Millis {
        self.by_job
            .get(id)
            .filter(|lease| lease.token == token)
            .map_or(0, |lease| lease.until)
    }

    /// Whether the lease of the attempt holding `token` has lapsed at `now`.
    pub(crate) fn lapsed(&self, id: &str, token: u64, now: Millis) -> bool {
        self.until(id, token) <= now
    }

    /// Forgets leases whose attempt no longer owns its job.
    pub(crate) fn retain(&mut self, mut owned: impl FnMut(&str, u64) -> bool) {
        self.by_job.retain(|id, lease| owned(id, lease.token));
    }

    /// Forgets the lease of a job that left `active`.
    pub(crate) fn end(&mut self, id: &str) {
        self.by_job.remove(id);
    }
}
