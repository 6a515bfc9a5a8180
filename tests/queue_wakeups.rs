//! Wake-ups come from the store: a worker idle on one handle is woken by work another handle
//! (another `QueueManager`, in production another instance) made takeable, with no polling to
//! explain it. Run on every backend; the timeouts are failure guards, not timings.

use std::sync::Arc;
use std::time::Duration;

use courier::queue::model::{Fail, JobOptions, Millis, NewJob, TakeRequest};
use courier::queue::{JobContext, LocalHub, QueueConfig, QueueManager};
use courier::store::{JobStore, WorkWatch};
use futures_util::FutureExt;
use serde_json::json;
use tokio::sync::mpsc;

#[macro_use]
mod job_backends;
use job_backends::Backend;

const QUEUE: &str = "shared";
const GUARD: Duration = Duration::from_secs(30);
const TAKE: TakeRequest = TakeRequest {
    lease_ms: 1_000,
    limit: None,
    groups: courier::store::job::GroupLimits::NONE,
};

fn job(name: &str, delay_ms: u64) -> NewJob {
    NewJob {
        name: name.to_owned(),
        data: "{}".to_owned(),
        opts: JobOptions {
            delay_ms,
            ..JobOptions::default()
        },
    }
}

/// Lets the tasks of this (single-threaded) runtime run until they wait on something.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// `transition` signals `watch` (a signal left from before is dropped first).
async fn check_wakes(what: &str, watch: &WorkWatch, transition: impl AsyncFnOnce()) {
    let _ = watch.changed().now_or_never();
    transition().await;
    tokio::time::timeout(GUARD, watch.changed())
        .await
        .unwrap_or_else(|_| panic!("{what} woke no worker"));
}

/// A job added through manager A runs on a worker registered only on manager B, whose
/// re-check interval is far longer than the test: only the store's wake-up can start it.
async fn a_job_added_through_one_manager_wakes_a_worker_of_another(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).unwrap();
    let adder = QueueManager::new(store.clone(), Arc::new(LocalHub::default()));
    let runner = QueueManager::new(store.clone(), Arc::new(LocalHub::default()));
    let mut config = QueueConfig::new(QUEUE);
    config.idle_recheck_ms = Some(24 * 3_600_000);
    let adding = adder.register(config.clone()).await.unwrap();
    let running = runner.register(config).await.unwrap();
    let (ran, mut runs) = mpsc::unbounded_channel::<String>();
    running.process("*", move |job: JobContext| {
        let ran = ran.clone();
        async move {
            let _ = ran.send(job.name.clone());
            Ok(json!(null))
        }
    });
    runner.start();
    for name in ["first", "second"] {
        // B's worker has found nothing and sleeps on its watch before the add comes.
        settle().await;
        adding
            .add(name, &json!({}), JobOptions::default())
            .await
            .unwrap();
        let run = tokio::time::timeout(GUARD, runs.recv())
            .await
            .unwrap_or_else(|_| panic!("the job {name} added through A never ran on B"));
        assert_eq!(run.as_deref(), Some(name));
    }
    runner.shutdown(Duration::from_secs(5)).await.unwrap();
    adder.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Every transition that makes a job takeable signals the queue's watch, whichever handle
/// watches; one that does not (a delayed add) is left to the timer. An add is signalled by the
/// engine that made it, after announcing it (the test above), not by the store.
async fn every_transition_to_waiting_signals_the_watch(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn JobStore> = backend.open(dir.path()).unwrap();
    let watch = store.watch(QUEUE);
    let now: Millis = 1_000_000;

    store.add(QUEUE, vec![job("now", 0)], now).await.unwrap();
    let taken = store.take(QUEUE, TAKE, now).await.unwrap().job().unwrap();
    check_wakes("a release", &watch, async || {
        assert!(store
            .release(QUEUE, &taken.id, taken.token, now)
            .await
            .unwrap());
    })
    .await;
    let taken = store.take(QUEUE, TAKE, now).await.unwrap().job().unwrap();
    check_wakes("an expired lease", &watch, async || {
        let expired = store.expire_leases(QUEUE, now + 5_000, 5).await.unwrap();
        assert_eq!(expired.len(), 1);
    })
    .await;
    let taken_again = store.take(QUEUE, TAKE, now).await.unwrap().job().unwrap();
    assert_eq!(taken_again.id, taken.id);
    check_wakes("a failure retried at once", &watch, async || {
        let fail = Fail {
            id: taken_again.id.clone(),
            token: taken_again.token,
            reason: "boom".to_owned(),
            stack: "boom".to_owned(),
            retry_at: Some(now),
            keep: Default::default(),
        };
        store.fail(QUEUE, fail, now).await.unwrap();
    })
    .await;
    let taken = store.take(QUEUE, TAKE, now).await.unwrap().job().unwrap();
    let fail = Fail {
        id: taken.id.clone(),
        token: taken.token,
        reason: "boom".to_owned(),
        stack: "boom".to_owned(),
        retry_at: None,
        keep: Default::default(),
    };
    store.fail(QUEUE, fail, now).await.unwrap();
    check_wakes("a retry", &watch, async || {
        assert!(store.retry(QUEUE, &taken.id, now).await.unwrap());
    })
    .await;

    let added = store
        .add(QUEUE, vec![job("later", 60_000)], now)
        .await
        .unwrap();
    check_wakes("a promotion", &watch, async || {
        assert!(store.promote(QUEUE, &added[0].id, now).await.unwrap());
    })
    .await;
    store.add(QUEUE, vec![job("due", 10)], now).await.unwrap();
    check_wakes("a due job promoted", &watch, async || {
        assert_eq!(store.promote_due(QUEUE, now + 10).await.unwrap().len(), 1);
    })
    .await;
    store.set_paused(QUEUE, true).await.unwrap();
    check_wakes("a resume", &watch, async || {
        store.set_paused(QUEUE, false).await.unwrap();
    })
    .await;

    // Another queue's watch hears nothing of this one.
    let other = store.watch("other");
    store.add(QUEUE, vec![job("mine", 0)], now).await.unwrap();
    assert!(other.changed().now_or_never().is_none());
}

on_every_backend! {
    #[tokio::test]
    async fn a_job_added_through_one_manager_wakes_a_worker_of_another;
    #[tokio::test]
    async fn every_transition_to_waiting_signals_the_watch;
}
