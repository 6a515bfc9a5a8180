//! What a health check found: the [`Status`] scale, each [`Issue`] and the [`HealthReport`] of
//! every queue and the storage.

use std::fmt::Write as _;

use crate::queue::model::Counts;

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
    /// What an acknowledged job survives, where the store's server decides it.
    pub durability: Option<&'static str>,
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
