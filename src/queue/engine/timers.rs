//! A queue's timer (promotes due jobs, expires lapsed leases, sleeping until the next of either)
//! and its retention task.

use super::*;

/// Promotes due delayed jobs and takes expired leases away, sleeping in between.
pub(super) async fn timer(queue: Arc<QueueShared>) {
    loop {
        let now = queue.clock.now();
        match queue.store.promote_due(&queue.name, now).await {
            Ok(promoted) => {
                for id in &promoted {
                    queue.publish(EventKind::Waiting, Some(id), None);
                }
            }
            Err(err) => {
                tracing::error!(queue = %queue.name, error = %err, "cannot promote delayed jobs")
            }
        }
        match queue
            .store
            .expire_leases(&queue.name, now, queue.config.max_stalled_count)
            .await
        {
            Ok(expired) => queue.expired(&expired, now),
            Err(err) => {
                tracing::error!(queue = %queue.name, error = %err, "cannot requeue stalled jobs")
            }
        }
        let next_due = queue.store.next_due(&queue.name).await.unwrap_or(None);
        let next_lease = queue
            .store
            .next_lease_expiry(&queue.name)
            .await
            .unwrap_or(None);
        // Delayed jobs and leases of other instances on a shared store wake no timer here: look
        // again after the idle re-check at the latest.
        let recheck = queue
            .recheck_after()
            .map(|after| now.saturating_add(after.as_millis() as Millis));
        let wake_at = [next_due, next_lease, recheck].into_iter().flatten().min();
        match wake_at {
            Some(at) => tokio::select! {
                _ = tokio::time::sleep_until(queue.clock.instant_at(at)) => {}
                _ = queue.timer_wake.notified() => {}
                _ = queue.stop.cancelled() => return,
            },
            None => tokio::select! {
                _ = queue.timer_wake.notified() => {}
                _ = queue.stop.cancelled() => return,
            },
        }
    }
}

/// Trims finished jobs to the queue's default retention, in the background.
pub(super) async fn retention(queue: Arc<QueueShared>) {
    let config = &queue.config;
    if config.keep_completed.keeps_everything() && config.keep_failed.keeps_everything() {
        return;
    }
    let every = Duration::from_millis(config.retention_interval_ms.max(100));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = queue.stop.cancelled() => return,
        }
        let now = queue.clock.now();
        match queue
            .store
            .trim(&queue.name, config.keep_completed, config.keep_failed, now)
            .await
        {
            Ok(0) => {}
            Ok(removed) => {
                tracing::debug!(queue = %queue.name, removed, "retention trimmed finished jobs")
            }
            Err(err) => tracing::error!(queue = %queue.name, error = %err, "retention failed"),
        }
    }
}
