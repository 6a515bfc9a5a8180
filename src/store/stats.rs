//! What a backend can tell about itself, apart from the job state machine: size on disk,
//! counters of its write path, and how long its commits take. A backend offers these through
//! [`JobStore::stats`](super::JobStore::stats) when it has them; the health checks and the
//! Prometheus endpoint read them, and do without when a backend has none.

use hdrhistogram::Histogram;

/// Statistics and health signals of a storage backend.
pub trait StorageStats: Send + Sync {
    /// Bytes the store occupies on disk, when known.
    fn size_on_disk(&self) -> Option<u64>;

    /// What an acknowledged write survives, for a backend whose server decides it (Redis:
    /// `always`, `everysec`, `none` or `unknown`); `None` where the backend itself fsyncs.
    fn durability(&self) -> Option<&'static str> {
        None
    }

    /// What the store's write path has done since start-up, where the backend counts it.
    fn activity(&self) -> StoreActivity {
        StoreActivity::default()
    }

    /// Every commit's duration since start-up (`None` where a backend does not time its
    /// commits); the health monitor judges the difference of two readings.
    fn commit_times(&self) -> Option<CommitTimeLog> {
        None
    }
}

/// Counters of a store's write path since start-up (for metrics; `None` where a backend does
/// not count that).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoreActivity {
    /// Durable commits: each one write of the log and one sync, shared by every operation that
    /// arrived while the previous one was on its way to disk.
    pub commits: Option<u64>,
    /// Checkpoints: the database flushed and synced, a log emptied.
    pub checkpoints: Option<u64>,
    /// Commits or checkpoints that failed.
    pub errors: Option<u64>,
    /// How long the commits' log writes and syncs took since start-up.
    pub commit_times: Option<CommitTimes>,
}

/// Percentiles of the time a commit's log write and sync took: the disk's share of the latency
/// of every durable operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommitTimes {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The durations of commits, cumulative: 1 µs to 1 hour at two significant digits (a few
/// kilobytes whatever the count). Subtracting an earlier reading gives the commits between.
#[derive(Clone)]
pub struct CommitTimeLog {
    micros: Histogram<u64>,
}

impl Default for CommitTimeLog {
    fn default() -> Self {
        CommitTimeLog::new()
    }
}

impl std::fmt::Debug for CommitTimeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitTimeLog")
            .field("commits", &self.commits())
            .finish()
    }
}

impl CommitTimeLog {
    pub fn new() -> CommitTimeLog {
        CommitTimeLog {
            // Constant bounds that hdrhistogram accepts (low ≥ 1, high ≥ 2·low, 2 digits).
            micros: Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .expect("constant histogram bounds are valid"),
        }
    }

    /// Counts one commit that took `micros` microseconds (beyond an hour counts as an hour).
    pub fn record(&mut self, micros: u64) {
        self.micros.saturating_record(micros.max(1));
    }

    /// Commits counted.
    pub fn commits(&self) -> u64 {
        self.micros.len()
    }

    /// The commits counted since `earlier`, a previous reading of the same log (`None` if it
    /// is not one: it holds commits this one lacks).
    pub fn since(&self, earlier: &CommitTimeLog) -> Option<CommitTimeLog> {
        let mut recent = self.clone();
        recent.micros.subtract(&earlier.micros).ok()?;
        Some(recent)
    }

    /// The 99th percentile, in milliseconds (0 with no commits).
    pub fn p99_ms(&self) -> f64 {
        self.micros.value_at_quantile(0.99) as f64 / 1000.0
    }

    /// Median, 99th percentile and maximum (`None` with no commits).
    pub fn times(&self) -> Option<CommitTimes> {
        if self.micros.is_empty() {
            return None;
        }
        let millis = |micros: u64| micros as f64 / 1000.0;
        Some(CommitTimes {
            p50_ms: millis(self.micros.value_at_quantile(0.5)),
            p99_ms: self.p99_ms(),
            max_ms: millis(self.micros.max()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_reading_minus_an_earlier_one_is_the_commits_between() {
        let mut log = CommitTimeLog::new();
        assert_eq!(log.times(), None);
        for _ in 0..10 {
            log.record(900_000);
        }
        let earlier = log.clone();
        for _ in 0..100 {
            log.record(2_000);
        }
        let recent = log.since(&earlier).unwrap();
        assert_eq!(recent.commits(), 100);
        assert!(
            (1.99..2.01).contains(&recent.p99_ms()),
            "{}",
            recent.p99_ms()
        );
        let all = log.times().unwrap();
        assert!(all.max_ms > 899.0, "{all:?}");
        // Not an earlier reading: it holds commits the later one lacks.
        assert!(earlier.since(&log).is_none());
    }
}
