//! The application's queues and how each one runs.
//!
//! The engine in `queue/` is generic; this is where Courier names its three queues and picks
//! their concurrency and retention. Processors are attached by the domain that owns the work.

use crate::queue::model::KeepJobs;
use crate::queue::{QueueConfig, QueueError, QueueManager, RateLimit};

pub const MESSAGE_QUEUE: &str = "message";
pub const NOTIFICATION_QUEUE: &str = "notification";
pub const EMAIL_QUEUE: &str = "email";

const HOUR_MS: u64 = 3_600_000;
const WEEK_MS: u64 = 7 * 24 * HOUR_MS;

/// The settings of each application queue.
pub fn queue_configs() -> Vec<QueueConfig> {
    // Failed jobs are the dead letters an operator inspects: keep a week of them, bounded.
    let dead_letters = KeepJobs {
        count: Some(10_000),
        age_ms: Some(WEEK_MS),
    };
    let mut message = QueueConfig::new(MESSAGE_QUEUE);
    message.concurrency = 64;
    // One job per conversation at a time, in send order: how messages get their `seq` in the
    // order they were sent (see `chat::messages`).
    message.group_concurrency = Some(1);
    // Senders read their job's final state, so completed jobs stay an hour (up to 10,000).
    message.keep_completed = KeepJobs {
        count: Some(10_000),
        age_ms: Some(HOUR_MS),
    };
    message.keep_failed = dead_letters;

    let mut notification = QueueConfig::new(NOTIFICATION_QUEUE);
    notification.concurrency = 32;
    notification.keep_completed = KeepJobs {
        count: Some(1_000),
        age_ms: Some(HOUR_MS),
    };
    notification.keep_failed = dead_letters;

    let mut email = QueueConfig::new(EMAIL_QUEUE);
    email.concurrency = 4;
    // Stay polite with the SMTP relay.
    email.rate_limit = Some(RateLimit {
        max: 10,
        duration_ms: 1_000,
    });
    email.keep_completed = KeepJobs {
        count: Some(1_000),
        age_ms: Some(24 * HOUR_MS),
    };
    email.keep_failed = dead_letters;

    vec![message, notification, email]
}

/// Registers the application queues (recovering jobs a previous run left active).
pub async fn register_queues(manager: &QueueManager) -> Result<(), QueueError> {
    for config in queue_configs() {
        manager.register(config).await?;
    }
    Ok(())
}
