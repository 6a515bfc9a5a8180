//! The checks: [`HealthMonitor`] reads the queues, their metrics, the store's statistics and
//! the free disk of `DATA_DIR`, and judges them against the thresholds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::report::{Check, HealthReport, Issue, QueueHealth, Status, StorageHealth};
use super::settings::HealthSettings;
use super::WINDOW_MINUTES;
use crate::queue::model::Counts;
use crate::queue::{Queue, QueueManager};
use crate::store::CommitTimeLog;

/// Runs health checks. Cheap to clone; shared by the HTTP routes and the monitor task.
#[derive(Clone)]
pub struct HealthMonitor {
    inner: Arc<MonitorInner>,
}

struct MonitorInner {
    settings: HealthSettings,
    data_dir: PathBuf,
    write_failures: parking_lot::Mutex<WriteFailures>,
    commit_window: parking_lot::Mutex<CommitWindow>,
}

/// How long storage stays unhealthy after a commit or checkpoint failed.
const WRITE_FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// The store's failed commits and checkpoints as the monitor last saw them.
#[derive(Debug, Default)]
struct WriteFailures {
    seen: u64,
    last_increase: Option<Instant>,
}

impl WriteFailures {
    /// Takes the store's current count; an issue while the last new failure is recent.
    fn observe(&mut self, count: u64, now: Instant) -> Option<Issue> {
        if count > self.seen {
            self.seen = count;
            self.last_increase = Some(now);
        }
        let since = now.duration_since(self.last_increase?);
        if since > WRITE_FAILURE_WINDOW {
            return None;
        }
        Some(Issue {
            check: Check::Storage,
            status: Status::Unhealthy,
            message: format!(
                "{count} storage writes (commits or checkpoints) failed since start-up, the last {}s ago: \
                 see the server log",
                since.as_secs()
            ),
            value: count as f64,
            threshold: 0.0,
        })
    }
}

/// The commit times a check judges reach back at least this far (and at most about half as
/// far again), once the server has run that long.
const COMMIT_WINDOW: Duration = Duration::from_secs(60);
/// Fewer commits than this in the window say nothing about the disk.
const COMMIT_WINDOW_MIN: u64 = 10;

/// Snapshots of the store's cumulative commit times, oldest first: a check judges the commits
/// since the oldest one kept (since start-up until the first is taken).
#[derive(Default)]
struct CommitWindow {
    snapshots: std::collections::VecDeque<(Instant, CommitTimeLog)>,
}

impl CommitWindow {
    /// Takes the store's times so far; the p99 (ms) and number of the commits in the window.
    fn observe(&mut self, current: CommitTimeLog, now: Instant) -> Option<(f64, u64)> {
        // The oldest kept is the newest that is at least a window old.
        while self
            .snapshots
            .get(1)
            .is_some_and(|(at, _)| now.duration_since(*at) >= COMMIT_WINDOW)
        {
            self.snapshots.pop_front();
        }
        let recent = match self.snapshots.front() {
            Some((_, oldest)) => current.since(oldest)?,
            None => current.clone(),
        };
        let newest = self.snapshots.back().map(|(at, _)| *at);
        if newest.is_none_or(|at| now.duration_since(at) >= COMMIT_WINDOW / 2) {
            self.snapshots.push_back((now, current));
        }
        let commits = recent.commits();
        (commits >= COMMIT_WINDOW_MIN).then(|| (recent.p99_ms(), commits))
    }
}

impl HealthMonitor {
    pub fn new(settings: HealthSettings, data_dir: PathBuf) -> HealthMonitor {
        HealthMonitor {
            inner: Arc::new(MonitorInner {
                settings,
                data_dir,
                write_failures: parking_lot::Mutex::new(WriteFailures::default()),
                commit_window: parking_lot::Mutex::new(CommitWindow::default()),
            }),
        }
    }

    pub fn settings(&self) -> &HealthSettings {
        &self.inner.settings
    }

    /// Checks every queue and the storage.
    pub async fn check(&self, queues: &QueueManager) -> HealthReport {
        let mut report = HealthReport {
            overall: Status::Healthy,
            queues: Vec::new(),
            storage: self.check_storage(queues),
        };
        for queue in queues.queues() {
            report.queues.push(self.check_queue(&queue).await);
        }
        report.overall = report
            .queues
            .iter()
            .map(|queue| queue.status)
            .chain([report.storage.status])
            .max()
            .unwrap_or_default();
        report
    }

    async fn check_queue(&self, queue: &Queue) -> QueueHealth {
        let settings = &self.inner.settings;
        let mut issues = Vec::new();
        let read = async {
            let counts = queue.counts().await?;
            let paused = queue.is_paused().await?;
            let oldest = queue.oldest_waiting_ms().await?;
            Ok::<_, crate::queue::QueueError>((counts, paused, oldest.unwrap_or(0)))
        };
        let (counts, paused, oldest_waiting_ms) = match read.await {
            Ok(read) => read,
            Err(err) => {
                tracing::error!(queue = queue.name(), error = %err, "health check cannot read the queue");
                issues.push(Issue {
                    check: Check::Storage,
                    status: Status::Unhealthy,
                    message: "cannot read the queue from storage".to_owned(),
                    value: 1.0,
                    threshold: 1.0,
                });
                (Counts::default(), false, 0)
            }
        };
        let mut raise = |check: Check, tripped: Option<(Status, f64)>, value: f64, what: String| {
            if let Some((status, threshold)) = tripped {
                issues.push(Issue {
                    check,
                    status,
                    message: format!("{what} ({status} at {})", trim_number(threshold)),
                    value,
                    threshold,
                });
            }
        };
        let failed = counts.failed as f64;
        raise(
            Check::FailedJobs,
            settings.failed_jobs.above(failed),
            failed,
            format!("{} failed jobs", counts.failed),
        );
        let metrics = queue.metrics(WINDOW_MINUTES);
        // Every finished attempt (completed or failed) records one processing time.
        let attempts = metrics.processing_ms.count;
        if attempts >= settings.failure_rate_min_attempts.max(1) {
            raise(
                Check::FailureRate,
                settings.failure_rate.above(metrics.error_rate),
                metrics.error_rate,
                format!(
                    "{:.1}% of {attempts} attempts failed in the last {WINDOW_MINUTES} minutes",
                    metrics.error_rate * 100.0
                ),
            );
        }
        let waiting = counts.waiting as f64;
        raise(
            Check::WaitingJobs,
            settings.waiting_jobs.above(waiting),
            waiting,
            format!("{} jobs waiting", counts.waiting),
        );
        let oldest_secs = oldest_waiting_ms as f64 / 1000.0;
        raise(
            Check::OldestWaiting,
            settings.oldest_waiting_secs.above(oldest_secs),
            oldest_secs,
            format!("the oldest waiting job has waited {oldest_secs:.0} s"),
        );
        let stalled = queue.metrics(WINDOW_MINUTES).stalled_in_window;
        raise(
            Check::StalledJobs,
            settings.stalled_jobs.above(stalled as f64),
            stalled as f64,
            format!("{stalled} jobs stalled in the last {WINDOW_MINUTES} minutes"),
        );
        if paused {
            issues.push(Issue {
                check: Check::Paused,
                status: Status::Degraded,
                message: "the queue is paused".to_owned(),
                value: 1.0,
                threshold: 1.0,
            });
        }
        QueueHealth {
            name: queue.name().to_owned(),
            status: issues
                .iter()
                .map(|issue| issue.status)
                .max()
                .unwrap_or_default(),
            counts,
            paused,
            issues,
        }
    }

    fn check_storage(&self, queues: &QueueManager) -> StorageHealth {
        let stats = queues.store().stats();
        let mut storage = StorageHealth {
            size_on_disk: stats.and_then(|stats| stats.size_on_disk()),
            durability: stats.and_then(|stats| stats.durability()),
            ..StorageHealth::default()
        };
        // statvfs: one quick system call, not worth a blocking-pool hop.
        match fs4::available_space(&self.inner.data_dir) {
            Ok(free) => {
                storage.free_bytes = Some(free);
                let free_mb = free as f64 / 1_048_576.0;
                if let Some((status, threshold)) =
                    self.inner.settings.min_free_disk_mb.below(free_mb)
                {
                    storage.issues.push(Issue {
                        check: Check::FreeDisk,
                        status,
                        message: format!(
                            "{free_mb:.0} MB free in the data directory ({status} below {} MB)",
                            trim_number(threshold)
                        ),
                        value: free_mb,
                        threshold,
                    });
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "health check cannot read the free space of the data directory");
                storage.issues.push(Issue {
                    check: Check::FreeDisk,
                    status: Status::Degraded,
                    message: "cannot read the free space of the data directory".to_owned(),
                    value: 0.0,
                    threshold: 0.0,
                });
            }
        }
        let stats = queues.store().stats();
        if let Some(failed) = stats.and_then(|stats| stats.activity().errors) {
            let issue = self
                .inner
                .write_failures
                .lock()
                .observe(failed, Instant::now());
            storage.issues.extend(issue);
        }
        if let Some(current) = stats.and_then(|stats| stats.commit_times()) {
            let judged = self
                .inner
                .commit_window
                .lock()
                .observe(current, Instant::now());
            if let Some((p99_ms, commits)) = judged {
                if let Some((status, threshold)) = self.inner.settings.commit_p99_ms.above(p99_ms) {
                    storage.issues.push(Issue {
                        check: Check::SlowDisk,
                        status,
                        message: format!(
                            "the disk is slow: the last {commits} commits took {p99_ms:.1} ms at p99 to \
                             write and sync ({status} from {} ms)",
                            trim_number(threshold)
                        ),
                        value: p99_ms,
                        threshold,
                    });
                }
            }
        }
        storage.status = storage
            .issues
            .iter()
            .map(|issue| issue.status)
            .max()
            .unwrap_or_default();
        storage
    }
}

/// `10` rather than `10.0`, `0.1` as is.
fn trim_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cumulative commit-time log after `times` (µs) on top of `before`.
    fn commits(before: &CommitTimeLog, times: &[u64]) -> CommitTimeLog {
        let mut log = before.clone();
        for time in times {
            log.record(*time);
        }
        log
    }

    #[test]
    fn the_commit_window_judges_the_last_minute_or_so() {
        let start = Instant::now();
        let mut window = CommitWindow::default();
        let empty = CommitTimeLog::new();
        // Too few commits say nothing.
        let few = commits(&empty, &[900_000; 5]);
        assert_eq!(window.observe(few.clone(), start), None);
        // Since start-up until a snapshot is a window old: the slow ones count.
        let slow = commits(&few, &[300; 20]);
        let (p99, count) = window
            .observe(slow.clone(), start + COMMIT_WINDOW / 2)
            .unwrap();
        assert_eq!(count, 20, "commits since the first snapshot");
        assert!((0.29..0.31).contains(&p99), "{p99}");
        // A minute and a half of fast commits later, the slow burst has left the window.
        let fast = commits(&slow, &[200; 50]);
        let (p99, count) = window.observe(fast, start + COMMIT_WINDOW * 3 / 2).unwrap();
        assert_eq!(count, 50);
        assert!((0.19..0.21).contains(&p99), "{p99}");
        assert!(window.snapshots.len() <= 3);
    }

    #[test]
    fn storage_is_unhealthy_for_a_while_after_a_write_failed() {
        let mut failures = WriteFailures::default();
        let start = Instant::now();
        assert_eq!(failures.observe(0, start), None);
        let issue = failures.observe(2, start + Duration::from_secs(1)).unwrap();
        assert_eq!(issue.check, Check::Storage);
        assert_eq!(issue.status, Status::Unhealthy);
        assert!(
            issue.message.starts_with("2 storage writes"),
            "{}",
            issue.message
        );
        // No new failure: still reported inside the window, not after it.
        assert!(failures.observe(2, start + WRITE_FAILURE_WINDOW).is_some());
        assert_eq!(
            failures.observe(2, start + WRITE_FAILURE_WINDOW + Duration::from_secs(2)),
            None
        );
        // A new one opens the window again.
        let later = start + WRITE_FAILURE_WINDOW * 3;
        assert!(failures.observe(3, later).is_some());
    }

    #[test]
    fn numbers_print_without_a_useless_fraction() {
        assert_eq!(trim_number(10.0), "10");
        assert_eq!(trim_number(0.1), "0.1");
    }
}
