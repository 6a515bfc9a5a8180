//! Queue health and alerts: the checks behind `GET /api/messages/queue/health` and their
//! thresholds ([`HealthSettings`]), and the monitor task ([`spawn`]) that runs the checks
//! periodically, logs each change of the overall state once, and posts it to
//! `ALERT_WEBHOOK_URL` with retries, never holding anything else up.
//!
//! Reads the queue engine (counts, metrics including stalls, oldest waiting age) and the
//! free space of `DATA_DIR`; knows nothing of HTTP routes. The webhook body is the one serde type
//! here: it is an outbound request, owned by its sender as a client's would be.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::queue::model::Counts;
use crate::queue::{Queue, QueueManager};
use crate::store::CommitTimeLog;

/// The window of the rate-based checks (failure rate, stalls), in minutes.
pub const WINDOW_MINUTES: usize = 5;
/// Alerts waiting for delivery; past this, new ones are dropped (and logged) rather than queued.
const ALERT_BACKLOG: usize = 64;

/// Two thresholds of one check: crossing the first makes it `degraded`, the second `unhealthy`.
/// A threshold of `0` turns that level off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Levels {
    pub degraded: f64,
    pub unhealthy: f64,
}

impl Levels {
    /// Levels for a value that is worse when higher: `value >= threshold` trips.
    fn above(&self, value: f64) -> Option<(Status, f64)> {
        if self.unhealthy > 0.0 && value >= self.unhealthy {
            Some((Status::Unhealthy, self.unhealthy))
        } else if self.degraded > 0.0 && value >= self.degraded {
            Some((Status::Degraded, self.degraded))
        } else {
            None
        }
    }

    /// Levels for a value that is worse when lower: `value < threshold` trips.
    fn below(&self, value: f64) -> Option<(Status, f64)> {
        if self.unhealthy > 0.0 && value < self.unhealthy {
            Some((Status::Unhealthy, self.unhealthy))
        } else if self.degraded > 0.0 && value < self.degraded {
            Some((Status::Degraded, self.degraded))
        } else {
            None
        }
    }
}

fn parse_levels(text: &str) -> Result<Levels, String> {
    let (degraded, unhealthy) = text
        .split_once(',')
        .ok_or_else(|| "expected two numbers, `degraded,unhealthy`".to_owned())?;
    let number = |part: &str| -> Result<f64, String> {
        let value: f64 = part
            .trim()
            .parse()
            .map_err(|_| format!("`{}` is not a number", part.trim()))?;
        if !value.is_finite() || value < 0.0 {
            return Err(format!("`{}` must be zero or positive", part.trim()));
        }
        Ok(value)
    };
    Ok(Levels {
        degraded: number(degraded)?,
        unhealthy: number(unhealthy)?,
    })
}

/// `degraded,unhealthy` for a check that is worse when higher.
fn parse_above(text: &str) -> Result<Levels, String> {
    let levels = parse_levels(text)?;
    if levels.degraded > 0.0 && levels.unhealthy > 0.0 && levels.degraded > levels.unhealthy {
        return Err("the degraded threshold must not exceed the unhealthy one".to_owned());
    }
    Ok(levels)
}

fn parse_rate(text: &str) -> Result<Levels, String> {
    let levels = parse_above(text)?;
    if levels.degraded > 1.0 || levels.unhealthy > 1.0 {
        return Err("rates are fractions between 0 and 1".to_owned());
    }
    Ok(levels)
}

/// `degraded,unhealthy` for a check that is worse when lower (free disk).
fn parse_below(text: &str) -> Result<Levels, String> {
    let levels = parse_levels(text)?;
    if levels.degraded > 0.0 && levels.unhealthy > 0.0 && levels.degraded < levels.unhealthy {
        return Err("the degraded threshold must not be below the unhealthy one".to_owned());
    }
    Ok(levels)
}

/// Health thresholds and the monitor's pace. Each pair is `degraded,unhealthy`; `0` turns a
/// level off. Flattened into [`crate::config::Config`], so each is a flag and a variable.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct HealthSettings {
    /// Seconds between the health monitor's checks (alerts go out when the state changes).
    #[arg(
        long = "health-check-interval-secs",
        env = "HEALTH_CHECK_INTERVAL_SECS",
        default_value_t = 15,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub check_interval_secs: u64,

    /// Failed (dead-letter) jobs in a queue: `degraded,unhealthy`.
    #[arg(long = "health-failed-jobs", env = "HEALTH_FAILED_JOBS", default_value = "10,1000", value_parser = parse_above)]
    pub failed_jobs: Levels,

    /// Share of attempts that failed in the last 5 minutes: `degraded,unhealthy` (0 to 1).
    #[arg(long = "health-failure-rate", env = "HEALTH_FAILURE_RATE", default_value = "0.1,0.5", value_parser = parse_rate)]
    pub failure_rate: Levels,

    /// Attempts a queue must have finished in the last 5 minutes before its failure rate counts.
    #[arg(
        long = "health-failure-rate-min-attempts",
        env = "HEALTH_FAILURE_RATE_MIN_ATTEMPTS",
        default_value_t = 20
    )]
    pub failure_rate_min_attempts: u64,

    /// Jobs waiting in a queue: `degraded,unhealthy`.
    #[arg(long = "health-waiting-jobs", env = "HEALTH_WAITING_JOBS", default_value = "1000,10000", value_parser = parse_above)]
    pub waiting_jobs: Levels,

    /// Seconds the oldest waiting job has waited: `degraded,unhealthy`.
    #[arg(long = "health-oldest-waiting-secs", env = "HEALTH_OLDEST_WAITING_SECS", default_value = "60,600", value_parser = parse_above)]
    pub oldest_waiting_secs: Levels,

    /// Jobs that stalled (lost their worker) in the last 5 minutes: `degraded,unhealthy`.
    #[arg(long = "health-stalled-jobs", env = "HEALTH_STALLED_JOBS", default_value = "1,10", value_parser = parse_above)]
    pub stalled_jobs: Levels,

    /// Free space in DATA_DIR, in MB, below which health degrades: `degraded,unhealthy`.
    #[arg(long = "health-min-free-disk-mb", env = "HEALTH_MIN_FREE_DISK_MB", default_value = "1024,100", value_parser = parse_below)]
    pub min_free_disk_mb: Levels,

    /// p99, in ms, of the time the store's commits took to write and sync over the last minute
    /// or two (at least 10 commits): `degraded,unhealthy`. Every send waits for one or two.
    #[arg(long = "health-commit-p99-ms", env = "HEALTH_COMMIT_P99_MS", default_value = "50,500", value_parser = parse_above)]
    pub commit_p99_ms: Levels,
}

impl Default for HealthSettings {
    /// The same values as the flags' defaults (a unit test keeps them equal).
    fn default() -> HealthSettings {
        HealthSettings {
            check_interval_secs: 15,
            failed_jobs: Levels {
                degraded: 10.0,
                unhealthy: 1000.0,
            },
            failure_rate: Levels {
                degraded: 0.1,
                unhealthy: 0.5,
            },
            failure_rate_min_attempts: 20,
            waiting_jobs: Levels {
                degraded: 1000.0,
                unhealthy: 10_000.0,
            },
            oldest_waiting_secs: Levels {
                degraded: 60.0,
                unhealthy: 600.0,
            },
            stalled_jobs: Levels {
                degraded: 1.0,
                unhealthy: 10.0,
            },
            min_free_disk_mb: Levels {
                degraded: 1024.0,
                unhealthy: 100.0,
            },
            commit_p99_ms: Levels {
                degraded: 50.0,
                unhealthy: 500.0,
            },
        }
    }
}

/// How healthy something is; ordered from best to worst, so the worst of several is their max.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Status {
    #[default]
    Healthy,
    Degraded,
    Unhealthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which check raised an issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Check {
    FailedJobs,
    FailureRate,
    WaitingJobs,
    OldestWaiting,
    StalledJobs,
    Paused,
    Storage,
    FreeDisk,
    SlowDisk,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::FailedJobs => "failedJobs",
            Check::FailureRate => "failureRate",
            Check::WaitingJobs => "waitingJobs",
            Check::OldestWaiting => "oldestWaiting",
            Check::StalledJobs => "stalledJobs",
            Check::Paused => "paused",
            Check::Storage => "storage",
            Check::FreeDisk => "freeDisk",
            Check::SlowDisk => "slowDisk",
        }
    }
}

/// One reason something is not healthy.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub check: Check,
    pub status: Status,
    /// A sentence for people, e.g. `12 failed jobs (degraded at 10)`.
    pub message: String,
    /// The measured value and the threshold it crossed, in the check's unit.
    pub value: f64,
    pub threshold: f64,
}

/// The health of one queue.
#[derive(Debug, Clone)]
pub struct QueueHealth {
    pub name: String,
    pub status: Status,
    pub counts: Counts,
    pub paused: bool,
    pub issues: Vec<Issue>,
}

/// The health of the storage shared by every queue.
#[derive(Debug, Clone, Default)]
pub struct StorageHealth {
    pub status: Status,
    pub size_on_disk: Option<u64>,
    pub free_bytes: Option<u64>,
    pub issues: Vec<Issue>,
}

/// Everything one health check found.
#[derive(Debug, Clone)]
pub struct HealthReport {
    /// The worst status of any queue or of storage.
    pub overall: Status,
    pub queues: Vec<QueueHealth>,
    pub storage: StorageHealth,
}

impl HealthReport {
    /// Every issue, prefixed with what it is about, for logs and alert texts.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        let issues = self
            .queues
            .iter()
            .flat_map(|queue| {
                queue
                    .issues
                    .iter()
                    .map(move |issue| (queue.name.as_str(), issue))
            })
            .chain(self.storage.issues.iter().map(|issue| ("storage", issue)));
        for (subject, issue) in issues {
            if !text.is_empty() {
                text.push_str("; ");
            }
            let _ = write!(text, "{subject}: {}", issue.message);
        }
        if text.is_empty() {
            text.push_str("no issues");
        }
        text
    }
}

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
        let mut storage = StorageHealth {
            size_on_disk: queues
                .store()
                .stats()
                .and_then(|stats| stats.size_on_disk()),
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

/// How the monitor task runs and delivers alerts.
#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// Time between checks.
    pub interval: Duration,
    /// Where alerts are posted; `None` only logs them.
    pub webhook_url: Option<String>,
    /// Delivery attempts per alert (the first included).
    pub attempts: u32,
    /// Delay before the second attempt; it doubles for each one after.
    pub backoff: Duration,
    /// Time limit of one delivery request.
    pub request_timeout: Duration,
}

impl AlertOptions {
    pub fn new(settings: &HealthSettings, webhook_url: Option<String>) -> AlertOptions {
        AlertOptions {
            interval: Duration::from_secs(settings.check_interval_secs.max(1)),
            webhook_url,
            attempts: 5,
            backoff: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The JSON posted to `ALERT_WEBHOOK_URL`. `text` makes it readable by chat webhooks (Slack,
/// Mattermost) as it is; the other fields are for machines.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertBody {
    pub text: String,
    pub source: &'static str,
    pub status: &'static str,
    pub previous: &'static str,
    pub timestamp: u64,
    pub issues: Vec<AlertIssue>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertIssue {
    pub subject: String,
    pub check: &'static str,
    pub status: &'static str,
    pub message: String,
}

impl AlertBody {
    fn new(report: &HealthReport, previous: Status) -> AlertBody {
        let mut issues = Vec::new();
        for queue in &report.queues {
            for issue in &queue.issues {
                issues.push(AlertIssue::new(&queue.name, issue));
            }
        }
        for issue in &report.storage.issues {
            issues.push(AlertIssue::new("storage", issue));
        }
        AlertBody {
            text: format!(
                "Courier queue health is {} (was {previous}): {}",
                report.overall,
                report.summary()
            ),
            source: "courier",
            status: report.overall.as_str(),
            previous: previous.as_str(),
            timestamp: crate::time::now_millis(),
            issues,
        }
    }
}

impl AlertIssue {
    fn new(subject: &str, issue: &Issue) -> AlertIssue {
        AlertIssue {
            subject: subject.to_owned(),
            check: issue.check.as_str(),
            status: issue.status.as_str(),
            message: issue.message.clone(),
        }
    }
}

/// The running monitor: stop it with [`AlertTask::shutdown`].
pub struct AlertTask {
    stop_watching: CancellationToken,
    stop_delivering: CancellationToken,
    tasks: TaskTracker,
}

/// Starts the monitor: it checks health every
/// `options.interval`, and on each change of the overall status logs it once and (with a webhook)
/// queues an alert for delivery. Delivery runs in its own task, so a slow or failing webhook never
/// delays a check.
pub fn spawn(monitor: HealthMonitor, queues: QueueManager, options: AlertOptions) -> AlertTask {
    let tasks = TaskTracker::new();
    let stop_watching = CancellationToken::new();
    let stop_delivering = CancellationToken::new();
    let sender = match options.webhook_url.clone() {
        Some(url) => match reqwest::Client::builder()
            .timeout(options.request_timeout)
            .build()
        {
            Ok(client) => {
                let (sender, receiver) = mpsc::channel(ALERT_BACKLOG);
                tasks.spawn(deliver(
                    client,
                    url,
                    receiver,
                    options.clone(),
                    stop_delivering.clone(),
                ));
                Some(sender)
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot build the alert webhook client; alerts are only logged");
                None
            }
        },
        None => None,
    };
    tasks.spawn(watch(
        monitor,
        queues,
        options.interval,
        sender,
        stop_watching.clone(),
    ));
    tasks.close();
    AlertTask {
        stop_watching,
        stop_delivering,
        tasks,
    }
}

impl AlertTask {
    /// Stops checking, gives alerts already queued up to `grace` to be delivered, then stops.
    pub async fn shutdown(self, grace: Duration) {
        self.stop_watching.cancel();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("alerts still undelivered at shutdown are dropped");
        }
        self.stop_delivering.cancel();
        self.tasks.wait().await;
    }
}

async fn watch(
    monitor: HealthMonitor,
    queues: QueueManager,
    interval: Duration,
    alerts: Option<mpsc::Sender<AlertBody>>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last = Status::Healthy;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {
                crate::telemetry::run_upkeep();
                let report = monitor.check(&queues).await;
                if report.overall != last {
                    announce(&report, last);
                    if let Some(alerts) = &alerts {
                        if alerts.try_send(AlertBody::new(&report, last)).is_err() {
                            tracing::warn!("alert webhook is backed up; this alert is dropped");
                        }
                    }
                    last = report.overall;
                }
            }
        }
    }
}

/// Logs a change of the overall status, once, at a level that matches it.
fn announce(report: &HealthReport, previous: Status) {
    let status = report.overall.as_str();
    let previous = previous.as_str();
    let summary = report.summary();
    match report.overall {
        Status::Healthy => {
            tracing::info!(status, previous, "queue health recovered: {summary}")
        }
        Status::Degraded => {
            tracing::warn!(status, previous, "queue health degraded: {summary}")
        }
        Status::Unhealthy => {
            tracing::error!(status, previous, "queue health unhealthy: {summary}")
        }
    }
}

/// Posts queued alerts in order, retrying each with exponential backoff. The URL is never
/// logged: webhook URLs usually carry their credential.
async fn deliver(
    client: reqwest::Client,
    url: String,
    mut receiver: mpsc::Receiver<AlertBody>,
    options: AlertOptions,
    stop: CancellationToken,
) {
    loop {
        let alert = tokio::select! {
            () = stop.cancelled() => return,
            alert = receiver.recv() => match alert {
                Some(alert) => alert,
                None => return,
            },
        };
        let attempts = options.attempts.max(1);
        for attempt in 1..=attempts {
            let outcome = client.post(&url).json(&alert).send().await;
            let retry = match &outcome {
                Ok(response) if response.status().is_success() => {
                    tracing::debug!(status = alert.status, "alert delivered");
                    break;
                }
                // The receiver refuses this request for good (except timeouts and limits).
                Ok(response)
                    if response.status().is_client_error()
                        && response.status() != reqwest::StatusCode::REQUEST_TIMEOUT
                        && response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS =>
                {
                    false
                }
                _ => attempt < attempts,
            };
            let reason = match outcome {
                Ok(response) => format!("webhook answered {}", response.status().as_u16()),
                Err(err) => format!("webhook unreachable: {}", without_url(err)),
            };
            if !retry {
                tracing::warn!(attempt, %reason, "alert not delivered; giving up");
                break;
            }
            tracing::debug!(attempt, %reason, "alert not delivered yet; retrying");
            let delay = options
                .backoff
                .saturating_mul(1u32 << (attempt - 1).min(16));
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// The error and its causes, with the URL taken out of reqwest's message.
fn without_url(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(&err);
    while let Some(current) = cause {
        text.push_str(": ");
        text.push_str(&current.to_string());
        cause = current.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

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

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        settings: HealthSettings,
    }

    #[test]
    fn defaults_match_the_flags() {
        let parsed = Wrapper::try_parse_from(["courier"]).unwrap();
        // Variables in the test environment would override the flags' defaults.
        if std::env::vars().all(|(name, _)| !name.starts_with("HEALTH_")) {
            assert_eq!(parsed.settings, HealthSettings::default());
        }
    }

    #[test]
    fn levels_are_validated() {
        assert_eq!(
            parse_above("2, 5").unwrap(),
            Levels {
                degraded: 2.0,
                unhealthy: 5.0
            }
        );
        assert!(parse_above("5,2").is_err());
        assert!(parse_above("0,2").is_ok());
        assert!(parse_above("5").is_err());
        assert!(parse_above("-1,2").is_err());
        assert!(parse_rate("0.1,1.5").is_err());
        assert!(parse_below("100,1024").is_err());
        assert!(parse_below("1024,100").is_ok());
        let error = Wrapper::try_parse_from(["courier", "--health-failed-jobs", "x,1"])
            .err()
            .unwrap();
        assert!(error.to_string().contains("not a number"), "{error}");
    }

    #[test]
    fn levels_trip_at_their_thresholds_and_zero_is_off() {
        let levels = Levels {
            degraded: 10.0,
            unhealthy: 100.0,
        };
        assert_eq!(levels.above(9.0), None);
        assert_eq!(levels.above(10.0), Some((Status::Degraded, 10.0)));
        assert_eq!(levels.above(100.0), Some((Status::Unhealthy, 100.0)));
        let off = Levels {
            degraded: 0.0,
            unhealthy: 0.0,
        };
        assert_eq!(off.above(1e9), None);
        let disk = Levels {
            degraded: 1024.0,
            unhealthy: 100.0,
        };
        assert_eq!(disk.below(2048.0), None);
        assert_eq!(disk.below(500.0), Some((Status::Degraded, 1024.0)));
        assert_eq!(disk.below(50.0), Some((Status::Unhealthy, 100.0)));
    }

    #[test]
    fn numbers_print_without_a_useless_fraction() {
        assert_eq!(trim_number(10.0), "10");
        assert_eq!(trim_number(0.1), "0.1");
    }
}
