//! The monitor task: checks health every interval, logs each change of the overall status
//! once, and posts it to the webhook from a task of its own, so a slow webhook never delays a
//! check.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::monitor::HealthMonitor;
use super::report::{HealthReport, Issue, Status};
use super::settings::HealthSettings;
use crate::queue::QueueManager;

/// Alerts waiting for delivery; past this, new ones are dropped (and logged) rather than queued.
const ALERT_BACKLOG: usize = 64;

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
///
/// Checks stop at [`AlertTask::shutdown`]; see [`spawn_under`] for a monitor under a parent token.
pub fn spawn(monitor: HealthMonitor, queues: QueueManager, options: AlertOptions) -> AlertTask {
    spawn_under(monitor, queues, options, &CancellationToken::new())
}

/// [`spawn`] with checks that also stop when `shutdown` (the server's root token) is cancelled.
/// Delivery has a token of its own, cancelled only after the grace [`AlertTask::shutdown`]
/// gives alerts already queued.
pub fn spawn_under(
    monitor: HealthMonitor,
    queues: QueueManager,
    options: AlertOptions,
    shutdown: &CancellationToken,
) -> AlertTask {
    let tasks = TaskTracker::new();
    let stop_watching = shutdown.child_token();
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
