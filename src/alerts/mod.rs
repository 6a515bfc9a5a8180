//! Queue health and alerts: the checks behind `GET /api/messages/queue/health` and their
//! thresholds ([`HealthSettings`], `settings`), the report they produce (`report`), the checks
//! themselves ([`HealthMonitor`], `monitor`), and the monitor task ([`spawn`], `task`) that runs
//! the checks periodically, logs each change of the overall state once, and posts it to
//! `ALERT_WEBHOOK_URL` with retries, never holding anything else up.
//!
//! Reads the queue engine (counts, metrics including stalls, oldest waiting age) and the
//! free space of `DATA_DIR`; knows nothing of HTTP routes. The webhook body is the one serde type
//! here: it is an outbound request, owned by its sender as a client's would be.

mod monitor;
mod report;
mod settings;
mod task;

pub use monitor::HealthMonitor;
pub use report::{Check, HealthReport, Issue, QueueHealth, Status, StorageHealth};
pub use settings::{HealthSettings, Levels};
pub use task::{spawn, spawn_under, AlertBody, AlertIssue, AlertOptions, AlertTask};

/// The window of the rate-based checks (failure rate, stalls), in minutes.
pub const WINDOW_MINUTES: usize = 5;
