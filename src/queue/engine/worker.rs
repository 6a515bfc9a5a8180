//! A queue's workers: take a job, run its processor with a timeout, panic capture and lease
//! renewal, and record the outcome.

use super::*;

pub(super) async fn worker(queue: Arc<QueueShared>) {
    loop {
        if queue.stop.is_cancelled() {
            return;
        }
        let now = queue.clock.now();
        let request = TakeRequest {
            lease_ms: queue.lease_ms(),
            limit: queue.config.rate_limit,
            groups: GroupLimits {
                concurrency: queue.config.group_concurrency,
                rate: queue.config.group_rate_limit,
            },
        };
        let taken = match queue.store.take(&queue.name, request, now).await {
            Ok(Take::Job(job)) => *job,
            Ok(Take::Empty) => {
                let recheck = async {
                    match queue.recheck_after() {
                        Some(after) => tokio::time::sleep(after).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = queue.work.changed() => continue,
                    _ = recheck => continue,
                    _ = queue.stop.cancelled() => return,
                }
            }
            Ok(Take::RateLimited { until }) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(queue.clock.instant_at(until)) => continue,
                    _ = queue.stop.cancelled() => return,
                }
            }
            Err(err) => {
                tracing::error!(queue = %queue.name, error = %err, "cannot take a job");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = queue.stop.cancelled() => return,
                }
            }
        };
        if taken.more_waiting {
            queue.work.wake();
        }
        run_job(&queue, taken).await;
    }
}

enum Outcome {
    Finished(JobResult),
    Cancelled,
    Abandoned,
}

fn panic_failure(payload: Box<dyn std::any::Any + Send>) -> JobFailure {
    let message = payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned());
    JobFailure::msg(format!("processor panicked: {message}"))
}

async fn run_job(queue: &Arc<QueueShared>, job: TakenJob) {
    let started = queue.clock.now();
    queue.metrics.record_wait(
        started,
        started.saturating_sub(job.ready_at).saturating_mul(1000),
    );
    let started_at = Instant::now();
    let id: Arc<str> = Arc::from(job.id.as_str());
    let cancel = Arc::new(Notify::new());
    let lease_ms = queue.lease_ms();
    let first_lease = {
        let mut running = queue.running.lock();
        running.insert(
            id.clone(),
            Running {
                token: job.token,
                cancel: cancel.clone(),
            },
        );
        running.len() == 1
    };
    // A cancel that came between the take and the registration above failed the job in the
    // store but found nothing running to stop: the attempt no longer owns the job, so it must not
    // run. (A cancel after this check finds it registered.)
    if let Ok(false) = queue.store.owns(&queue.name, &id, job.token).await {
        queue.end_running(&id, job.token);
        return;
    }
    // The timer plans its sleep around the earliest lease expiry; only the first running job
    // can bring it earlier than what the timer already knows.
    if first_lease {
        queue.timer_wake.notify_one();
        // Let the timer see the lease before the processor runs: a processor that hogs this
        // thread would otherwise also hold up the timer task just woken onto it.
        tokio::task::yield_now().await;
    }
    queue.publish(EventKind::Active, Some(&id), None);

    let context = JobContext {
        queue: queue.clone(),
        id: job.id.clone(),
        name: job.spec.name.clone(),
        data: job.spec.data.clone(),
        attempts_made: job.attempts_made,
        token: job.token,
    };
    let processor = queue.processor_for(&job.spec.name);
    let name = job.spec.name.clone();
    let work = async move {
        match processor {
            Some(processor) => AssertUnwindSafe(processor.process(context))
                .catch_unwind()
                .await
                .unwrap_or_else(|payload| Err(panic_failure(payload))),
            None => Err(JobFailure::msg(format!("no processor for job name {name}"))),
        }
    };
    let timed = async {
        match job.spec.opts.timeout_ms {
            Some(ms) => tokio::time::timeout(Duration::from_millis(ms), work)
                .await
                .unwrap_or_else(|_| Err(JobFailure::msg(format!("job timed out after {ms} ms")))),
            None => work.await,
        }
    };
    // Renewal runs in the worker's own task: a processor that blocks its thread stops renewing,
    // and the timer then hands the job to another worker (Bull's stalled-job semantics).
    let renew = async {
        loop {
            tokio::time::sleep(Duration::from_millis(lease_ms / 2)).await;
            let until = queue.clock.now() + lease_ms;
            if let Err(err) = queue.store.renew(&queue.name, &id, job.token, until).await {
                tracing::error!(queue = %queue.name, job = %id, error = %err, "cannot renew a lease");
            }
        }
    };
    let outcome = tokio::select! {
        result = timed => Outcome::Finished(result),
        _ = renew => Outcome::Abandoned,
        _ = cancel.notified() => Outcome::Cancelled,
        _ = queue.abandon.cancelled() => Outcome::Abandoned,
    };
    queue.end_running(&id, job.token);
    let now = queue.clock.now();
    let elapsed_us = started_at.elapsed().as_micros() as u64;
    let result = match outcome {
        Outcome::Cancelled => return,
        Outcome::Abandoned => queue
            .store
            .release(&queue.name, &id, job.token, now)
            .await
            .map(|_| ()),
        Outcome::Finished(Ok(value)) => {
            let keep = queue.keep_completed(&job.spec.opts);
            let text = value.to_string();
            match queue
                .store
                .complete(
                    &queue.name,
                    Complete {
                        id: id.to_string(),
                        token: job.token,
                        return_value: text.clone(),
                        keep,
                    },
                    now,
                )
                .await
            {
                Ok(true) => {
                    queue.metrics.record_completed(now, elapsed_us);
                    queue.publish(EventKind::Completed, Some(&id), Some(text));
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(err) => Err(err),
            }
        }
        Outcome::Finished(Err(failure)) => {
            record_failure(queue, &id, &job, failure, now, elapsed_us).await
        }
    };
    if let Err(err) = result {
        tracing::error!(queue = %queue.name, job = %id, error = %err, "cannot record a job outcome");
    }
}

async fn record_failure(
    queue: &Arc<QueueShared>,
    id: &str,
    job: &TakenJob,
    failure: JobFailure,
    now: Millis,
    elapsed_us: u64,
) -> Result<(), crate::store::StoreError> {
    let opts = &job.spec.opts;
    let attempts_made = job.attempts_made + 1;
    let retry_at = (attempts_made < opts.attempts).then(|| {
        let delay = opts
            .backoff
            .map(|backoff| backoff.delay_after(attempts_made, rand::random::<f64>()))
            .unwrap_or(0);
        now.saturating_add(delay)
    });
    let keep = queue.keep_failed(opts);
    let outcome = queue
        .store
        .fail(
            &queue.name,
            Fail {
                id: id.to_owned(),
                token: job.token,
                reason: failure.message.clone(),
                stack: failure.stack(),
                retry_at,
                keep,
            },
            now,
        )
        .await?;
    tracing::debug!(queue = %queue.name, job = %id, reason = %failure.message, "job attempt failed");
    match outcome {
        FailOutcome::Retrying { at } => {
            queue.metrics.record_failed(now, elapsed_us, false);
            if at > now {
                queue.publish(EventKind::Delayed, Some(id), Some(failure.message));
                queue.timer_wake.notify_one();
            } else {
                queue.publish(EventKind::Waiting, Some(id), Some(failure.message));
            }
        }
        FailOutcome::Failed => {
            queue.metrics.record_failed(now, elapsed_us, true);
            queue.publish(EventKind::Failed, Some(id), Some(failure.message));
        }
        FailOutcome::Stale => {}
    }
    Ok(())
}
