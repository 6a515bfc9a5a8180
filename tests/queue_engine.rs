//! Engine behaviour through the real sled store: each option and transition on its own (and, at
//! the end, the engine on the memory store).
//!
//! Time-based tests run with `tokio::time::pause()`; they assert on the engine's clock (which
//! follows tokio time), so they do not depend on how fast the machine is.

use std::sync::Arc;
use std::time::Duration;

use courier::queue::model::{
    Backoff, BackoffKind, Complete, JobOptions, JobState, KeepJobs, TakeRequest,
};
/// A lease longer than any test: the job stays with the test that took it.
const TAKE: TakeRequest = TakeRequest {
    lease_ms: 600_000,
    limit: None,
    groups: courier::store::job::GroupLimits::NONE,
};

use courier::queue::{
    EventKind, JobContext, JobFailure, LocalHub, Queue, QueueConfig, QueueError, QueueManager,
    RateLimit,
};
use courier::store::memory::MemoryJobStore;
use courier::store::{self, JobStore, StoreConfig};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tempfile::TempDir;

struct Engine {
    manager: QueueManager,
    store: Arc<dyn JobStore>,
    _dir: TempDir,
}

fn engine() -> Engine {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&StoreConfig::sled(dir.path()))
        .map(|stores| stores.jobs)
        .unwrap();
    Engine {
        manager: QueueManager::new(store.clone(), Arc::new(LocalHub::default())),
        store,
        _dir: dir,
    }
}

async fn queue(engine: &Engine, configure: impl FnOnce(&mut QueueConfig)) -> Queue {
    let mut config = QueueConfig::new("work");
    configure(&mut config);
    engine.manager.register(config).await.unwrap()
}

/// Records `(job data "n", engine time)` for every attempt, in the order they ran.
type Log = Arc<Mutex<Vec<(i64, u64)>>>;

fn recording(queue: &Queue) -> Log {
    let log: Log = Arc::default();
    let seen = log.clone();
    let clock = queue.clone();
    queue.process("*", move |job: JobContext| {
        let seen = seen.clone();
        let clock = clock.clone();
        async move {
            let data: Value = job.data_as()?;
            seen.lock()
                .push((data["n"].as_i64().unwrap_or(-1), clock.now()));
            Ok(json!(null))
        }
    });
    log
}

/// Opens the store again once the dropped one has let go of sled's file lock (its threads and
/// the tasks holding it end a moment after the last handle is dropped).
async fn reopen(dir: &std::path::Path) -> Arc<dyn courier::store::JobStore> {
    for _ in 0..200 {
        match store::open(&StoreConfig::sled(dir)).map(|stores| stores.jobs) {
            Ok(store) => return store,
            Err(err) if err.to_string().contains("could not acquire lock") => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => panic!("cannot reopen the store: {err}"),
        }
    }
    panic!("the dropped store never let go of its lock");
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..2_000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn until_counts(queue: &Queue, state: JobState, expected: u64) {
    until(&format!("{expected} {state} jobs"), async || {
        queue.counts().await.unwrap().get(state) == expected
    })
    .await;
}

fn numbered(n: i64) -> Value {
    json!({ "n": n })
}

#[tokio::test]
async fn priority_runs_first_and_unprioritised_jobs_run_last() {
    let engine = engine();
    let queue = queue(&engine, |_| {}).await;
    let log = recording(&queue);
    for (n, priority) in [
        (0, None),
        (1, Some(3)),
        (2, Some(1)),
        (3, Some(2)),
        (4, Some(1)),
    ] {
        let opts = JobOptions {
            priority,
            ..JobOptions::default()
        };
        queue.add("job", &numbered(n), opts).await.unwrap();
    }
    engine.manager.start();
    until_counts(&queue, JobState::Completed, 5).await;
    let order: Vec<i64> = log.lock().iter().map(|(n, _)| *n).collect();
    assert_eq!(order, vec![2, 4, 3, 1, 0]);
}

#[tokio::test]
async fn fifo_by_default_and_lifo_jobs_jump_the_line() {
    let engine = engine();
    let queue = queue(&engine, |_| {}).await;
    let log = recording(&queue);
    for n in 0..3 {
        queue
            .add("job", &numbered(n), JobOptions::default())
            .await
            .unwrap();
    }
    for n in 3..5 {
        let opts = JobOptions {
            lifo: true,
            ..JobOptions::default()
        };
        queue.add("job", &numbered(n), opts).await.unwrap();
    }
    engine.manager.start();
    until_counts(&queue, JobState::Completed, 5).await;
    let order: Vec<i64> = log.lock().iter().map(|(n, _)| *n).collect();
    assert_eq!(order, vec![4, 3, 0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn delayed_jobs_wait_for_their_delay_then_run() {
    let engine = engine();
    let queue = queue(&engine, |_| {}).await;
    let log = recording(&queue);
    engine.manager.start();
    let added_at = queue.now();
    let opts = JobOptions {
        delay_ms: 5_000,
        ..JobOptions::default()
    };
    let added = queue.add("job", &numbered(1), opts).await.unwrap();
    assert_eq!(added.state, JobState::Delayed);
    assert_eq!(queue.counts().await.unwrap().delayed, 1);
    until_counts(&queue, JobState::Completed, 1).await;
    let ran_at = log.lock()[0].1;
    assert!(
        ran_at >= added_at + 5_000,
        "ran {} ms after the add",
        ran_at - added_at
    );
}

// Real time here: a paused clock would jump to the delayed job's due time whenever the runtime
// waits for the disk, and this test is about *not* waiting for it.
#[tokio::test]
async fn promote_runs_a_delayed_job_at_once() {
    let engine = engine();
    let queue = queue(&engine, |_| {}).await;
    let log = recording(&queue);
    engine.manager.start();
    let opts = JobOptions {
        delay_ms: 3_600_000,
        ..JobOptions::default()
    };
    let late = queue.add("job", &numbered(2), opts).await.unwrap();
    let before = queue.now();
    queue.promote(&late.id).await.unwrap();
    until_counts(&queue, JobState::Completed, 1).await;
    assert!(log.lock()[0].1 < before + 3_600_000);
    assert!(matches!(
        queue.promote(&late.id).await,
        Err(QueueError::WrongState { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn failed_attempts_back_off_exponentially_then_fail_with_the_cause() {
    let engine = engine();
    let queue = queue(&engine, |_| {}).await;
    let attempts: Log = Arc::default();
    let seen = attempts.clone();
    let clock = queue.clone();
    queue.process("flaky", move |job: JobContext| {
        let seen = seen.clone();
        let clock = clock.clone();
        async move {
            seen.lock()
                .push((i64::from(job.attempts_made), clock.now()));
            let cause = std::io::Error::other("disk on fire");
            Err(JobFailure::from(cause))
        }
    });
    engine.manager.start();
    let opts = JobOptions {
        attempts: 4,
        backoff: Some(Backoff {
            kind: BackoffKind::Exponential,
            delay: 1_000,
            jitter: 0.0,
        }),
        ..JobOptions::default()
    };
    let added = queue.add("flaky", &json!({}), opts).await.unwrap();
    until_counts(&queue, JobState::Failed, 1).await;
    let times: Vec<u64> = attempts.lock().iter().map(|(_, at)| *at).collect();
    assert_eq!(times.len(), 4);
    let gaps: Vec<u64> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
    for (gap, expected) in gaps.iter().zip([1_000, 2_000, 4_000]) {
        assert!(*gap >= expected && *gap < expected + 500, "gaps {gaps:?}");
    }
    let job = queue.get(&added.id).await.unwrap().unwrap();
    assert_eq!(job.status.state, JobState::Failed);
    assert_eq!(job.status.attempts_made, 4);
    assert_eq!(job.status.failed_reason.as_deref(), Some("disk on fire"));
    assert_eq!(job.status.stacktrace.len(), 4);
}

#[tokio::test]
async fn error_chains_panics_and_missing_processors_are_recorded() {
    #[derive(Debug, thiserror::Error)]
    #[error("cannot save message")]
    struct SaveError(#[source] std::io::Error);

    let engine = engine();
    let queue = queue(&engine, |_| {}).await;
    queue.process("chain", |_job: JobContext| async move {
        Err(JobFailure::from(SaveError(std::io::Error::other(
            "connection reset",
        ))))
    });
    queue.process("panic", |_job: JobContext| async move {
        if true {
            panic!("boom");
        }
        Ok(json!(null))
    });
    engine.manager.start();
    let chain = queue
        .add("chain", &json!({}), JobOptions::default())
        .await
        .unwrap();
    let panic = queue
        .add("panic", &json!({}), JobOptions::default())
        .await
        .unwrap();
    let orphan = queue
        .add("nobody", &json!({}), JobOptions::default())
        .await
        .unwrap();
    until_counts(&queue, JobState::Failed, 3).await;
    let stack = |id: String| {
        let queue = queue.clone();
        async move {
            queue
                .get(&id)
                .await
                .unwrap()
                .unwrap()
                .status
                .stacktrace
                .join("|")
        }
    };
    assert_eq!(
        stack(chain.id).await,
        "cannot save message\n  caused by: connection reset"
    );
    assert!(stack(panic.id).await.contains("processor panicked: boom"));
    assert!(stack(orphan.id)
        .await
        .contains("no processor for job name nobody"));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_counts_as_a_failed_attempt() {
    let engine = engine();
    let queue = queue(&engine, |_| {}).await;
    queue.process("*", |_job: JobContext| async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(json!(null))
    });
    engine.manager.start();
    let opts = JobOptions {
        timeout_ms: Some(100),
        attempts: 2,
        ..JobOptions::default()
    };
    let added = queue.add("slow", &json!({}), opts).await.unwrap();
    until_counts(&queue, JobState::Failed, 1).await;
    let job = queue.get(&added.id).await.unwrap().unwrap();
    assert_eq!(job.status.attempts_made, 2);
    assert_eq!(
        job.status.failed_reason.as_deref(),
        Some("job timed out after 100 ms")
    );
}

#[tokio::test]
async fn adding_an_existing_job_id_returns_the_existing_job() {
    let engine = engine();
    let queue = queue(&engine, |_| {}).await;
    let opts = JobOptions {
        job_id: Some("msg-1".into()),
        ..JobOptions::default()
    };
    let first = queue.add("job", &numbered(1), opts.clone()).await.unwrap();
    let second = queue.add("job", &numbered(2), opts).await.unwrap();
    assert_eq!(first.id, "msg-1");
    assert!(!first.existed);
    assert_eq!(second.id, "msg-1");
    assert!(second.existed);
    assert_eq!(queue.counts().await.unwrap().waiting, 1);
    let job = queue.get("msg-1").await.unwrap().unwrap();
    assert_eq!(job.spec.data, numbered(1).to_string());
}

#[tokio::test]
async fn completed_jobs_are_trimmed_by_count_or_removed_at_once() {
    let engine = engine();
    let queue = queue(&engine, |_| {}).await;
    recording(&queue);
    engine.manager.start();
    let keep_two = JobOptions {
        remove_on_complete: Some(KeepJobs {
            count: Some(2),
            age_ms: None,
        }),
        ..JobOptions::default()
    };
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = queue
            .add("job", &numbered(n), keep_two.clone())
            .await
            .unwrap()
            .id;
        until(&format!("job {id} to complete"), async || {
            queue
                .get(&id)
                .await
                .unwrap()
                .is_some_and(|job| job.status.state == JobState::Completed)
        })
        .await;
        ids.push(id);
    }
    let page = queue.list(JobState::Completed, 0, 10).await.unwrap();
    let kept: Vec<&str> = page.jobs.iter().map(|job| job.id.as_str()).collect();
    assert_eq!(kept, vec![ids[4].as_str(), ids[3].as_str()]);
    assert!(queue.get(&ids[0]).await.unwrap().is_none());

    let remove = JobOptions {
        remove_on_complete: Some(KeepJobs::NONE),
        ..JobOptions::default()
    };
    let gone = queue.add("job", &numbered(9), remove).await.unwrap();
    until("job removed on completion", async || {
        queue.get(&gone.id).await.unwrap().is_none()
    })
    .await;
    assert_eq!(queue.counts().await.unwrap().completed, 2);
}

#[tokio::test]
async fn retention_frees_finished_jobs_in_the_background() {
    let engine = engine();
    let queue = queue(&engine, |config| {
        // Anything finished more than 1 ms ago goes at the next sweep.
        config.keep_completed = KeepJobs {
            count: None,
            age_ms: Some(1),
        };
        config.keep_failed = KeepJobs {
            count: Some(1),
            age_ms: None,
        };
        config.retention_interval_ms = 100;
    })
    .await;
    queue.process("*", |job: JobContext| async move {
        if job.name == "bad" {
            return Err(JobFailure::msg("bad"));
        }
        Ok(json!(null))
    });
    engine.manager.start();
    let done = queue
        .add("good", &json!({}), JobOptions::default())
        .await
        .unwrap();
    for _ in 0..3 {
        queue
            .add("bad", &json!({}), JobOptions::default())
            .await
            .unwrap();
    }
    until("completed job freed", async || {
        queue.get(&done.id).await.unwrap().is_none()
    })
    .await;
    until_counts(&queue, JobState::Failed, 1).await;
    assert_eq!(queue.counts().await.unwrap().total(), 1);
}

#[tokio::test]
async fn trimming_by_age_keeps_young_jobs_and_frees_old_ones() {
    let engine = engine();
    let store = &engine.store;
    let jobs = (0..2)
        .map(|n| courier::queue::model::NewJob {
            name: "job".into(),
            data: numbered(n).to_string(),
            opts: JobOptions::default(),
        })
        .collect();
    store.add("work", jobs, 0).await.unwrap();
    // The first job finishes at t=1s, the second at t=5s.
    for finished_at in [1_000, 5_000] {
        let taken = store
            .take("work", TAKE, finished_at)
            .await
            .unwrap()
            .job()
            .unwrap();
        assert!(store
            .complete(
                "work",
                Complete {
                    id: taken.id.clone(),
                    token: taken.token,
                    return_value: "null".into(),
                    keep: KeepJobs::ALL
                },
                finished_at
            )
            .await
            .unwrap());
    }
    let keep = KeepJobs {
        count: None,
        age_ms: Some(3_000),
    };
    assert_eq!(
        store
            .trim("work", keep, KeepJobs::ALL, 7_000)
            .await
            .unwrap(),
        1
    );
    let left = store
        .list("work", JobState::Completed, 0, 10)
        .await
        .unwrap();
    assert_eq!(left.total, 1);
    assert_eq!(left.jobs[0].status.finished_at, Some(5_000));
    // A count limit keeps the newest.
    let keep_none_by_count = KeepJobs {
        count: Some(0),
        age_ms: None,
    };
    assert_eq!(
        store
            .trim("work", keep_none_by_count, KeepJobs::ALL, 7_000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.counts("work").await.unwrap().total(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_spreads_job_starts_over_windows() {
    let engine = engine();
    let queue = queue(&engine, |config| {
        config.concurrency = 4;
        config.rate_limit = Some(RateLimit {
            max: 2,
            duration_ms: 1_000,
        });
    })
    .await;
    let log = recording(&queue);
    for n in 0..6 {
        queue
            .add("job", &numbered(n), JobOptions::default())
            .await
            .unwrap();
    }
    engine.manager.start();
    until_counts(&queue, JobState::Completed, 6).await;
    let mut starts: Vec<u64> = log.lock().iter().map(|(_, at)| *at).collect();
    starts.sort_unstable();
    // Any 1-second span holds at most two starts.
    for (i, start) in starts.iter().enumerate() {
        let in_window = starts[i..].iter().filter(|at| **at < start + 1_000).count();
        assert!(in_window <= 2, "starts {starts:?}");
    }
    assert!(starts[5] - starts[0] >= 2_000, "starts {starts:?}");
}

#[tokio::test(start_paused = true)]
async fn a_paused_queue_keeps_its_jobs_until_resumed() {
    let engine = engine();
    let queue = queue(&engine, |_| {}).await;
    recording(&queue);
    engine.manager.start();
    queue.pause().await.unwrap();
    assert!(queue.is_paused().await.unwrap());
    queue
        .add("job", &numbered(1), JobOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(queue.counts().await.unwrap().waiting, 1);
    queue.resume().await.unwrap();
    until_counts(&queue, JobState::Completed, 1).await;
}

#[tokio::test]
async fn jobs_left_active_by_a_dead_process_are_recovered_as_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = store::open(&StoreConfig::sled(dir.path()))
            .map(|stores| stores.jobs)
            .unwrap();
        let manager = QueueManager::new(store.clone(), Arc::new(LocalHub::default()));
        let queue = manager.register(QueueConfig::new("work")).await.unwrap();
        let added = queue
            .add("job", &numbered(1), JobOptions::default())
            .await
            .unwrap();
        // A worker takes it, then the process "dies" before it finishes.
        let taken = store
            .take("work", TAKE, queue.now())
            .await
            .unwrap()
            .job()
            .unwrap();
        assert_eq!(taken.id, added.id);
        store.flush().await.unwrap();
        added.id
    };
    let store = reopen(dir.path()).await;
    let manager = QueueManager::new(store, Arc::new(LocalHub::default()));
    let mut events = manager.hub().subscribe();
    let queue = manager.register(QueueConfig::new("work")).await.unwrap();
    let job = queue.get(&id).await.unwrap().unwrap();
    assert_eq!(job.status.state, JobState::Waiting);
    assert_eq!(job.status.stalled_count, 1);
    let event = events.recv().await.unwrap();
    assert_eq!(
        (event.kind, event.job_id.as_deref()),
        (EventKind::Stalled, Some(id.as_str()))
    );
    recording(&queue);
    manager.start();
    until_counts(&queue, JobState::Completed, 1).await;
}

#[tokio::test]
async fn jobs_that_stall_too_often_fail() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..2 {
        let store = store::open(&StoreConfig::sled(dir.path()))
            .map(|stores| stores.jobs)
            .unwrap();
        let manager = QueueManager::new(store.clone(), Arc::new(LocalHub::default()));
        let queue = manager.register(QueueConfig::new("work")).await.unwrap();
        let counts = queue.counts().await.unwrap();
        if counts.total() == 0 {
            queue
                .add("job", &numbered(1), JobOptions::default())
                .await
                .unwrap();
        }
        let taken = store.take("work", TAKE, queue.now()).await.unwrap().job();
        assert!(
            taken.is_some(),
            "round {round}: nothing to take; counts before {counts:?}, now {:?}",
            queue.counts().await.unwrap()
        );
        store.flush().await.unwrap();
    }
    let store = store::open(&StoreConfig::sled(dir.path()))
        .map(|stores| stores.jobs)
        .unwrap();
    let manager = QueueManager::new(store, Arc::new(LocalHub::default()));
    let queue = manager.register(QueueConfig::new("work")).await.unwrap();
    let failed = queue.list(JobState::Failed, 0, 10).await.unwrap();
    assert_eq!(failed.total, 1);
    assert_eq!(failed.jobs[0].status.stalled_count, 2);
    assert_eq!(
        failed.jobs[0].status.failed_reason.as_deref(),
        Some("job stalled more than allowable limit")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_blocks_past_its_lease_loses_the_job() {
    let engine = engine();
    let queue = queue(&engine, |config| {
        config.lease_ms = 200;
        config.max_stalled_count = 5;
    })
    .await;
    let runs = Arc::new(Mutex::new(0u32));
    let counter = runs.clone();
    queue.process("*", move |_job: JobContext| {
        let counter = counter.clone();
        async move {
            let first = {
                let mut runs = counter.lock();
                *runs += 1;
                *runs == 1
            };
            if first {
                // Hogs its thread: the lease cannot be renewed.
                std::thread::sleep(Duration::from_millis(800));
            }
            Ok(json!("done"))
        }
    });
    let mut events = engine.manager.hub().subscribe();
    engine.manager.start();
    let added = queue
        .add("job", &json!({}), JobOptions::default())
        .await
        .unwrap();
    until_counts(&queue, JobState::Completed, 1).await;
    let job = queue.get(&added.id).await.unwrap().unwrap();
    assert_eq!(job.status.stalled_count, 1);
    assert_eq!(job.status.return_value.as_deref(), Some("\"done\""));
    let mut kinds = Vec::new();
    while let Ok(event) = events.try_recv() {
        kinds.push(event.kind);
    }
    assert!(kinds.contains(&EventKind::Stalled), "{kinds:?}");
    // The hung first run finishes later; its stale token must not complete the job twice.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(queue.counts().await.unwrap().completed, 1);
    assert_eq!(queue.metrics(5).completed_in_window, 1);
}

#[tokio::test]
async fn cancelling_an_active_job_fails_it_and_stops_its_processor() {
    let engine = engine();
    let queue = queue(&engine, |_| {}).await;
    let dropped = Arc::new(Mutex::new(false));
    let started = Arc::new(Mutex::new(false));
    let (flag, running) = (dropped.clone(), started.clone());
    queue.process("*", move |_job: JobContext| {
        struct OnDrop(Arc<Mutex<bool>>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                *self.0.lock() = true;
            }
        }
        let guard = OnDrop(flag.clone());
        let running = running.clone();
        async move {
            let _guard = guard;
            *running.lock() = true;
            std::future::pending::<()>().await;
            Ok(json!(null))
        }
    });
    engine.manager.start();
    let added = queue
        .add("job", &json!({}), JobOptions::default())
        .await
        .unwrap();
    // Once the processor runs, not merely once the job is active: a cancel that lands before
    // the processor is first polled stops it before it ever starts (`tests/cancel_window.rs`).
    until("processor started", async || *started.lock()).await;
    queue.cancel(&added.id, "stopped by admin").await.unwrap();
    let job = queue.get(&added.id).await.unwrap().unwrap();
    assert_eq!(job.status.state, JobState::Failed);
    assert_eq!(
        job.status.failed_reason.as_deref(),
        Some("stopped by admin")
    );
    until("processor dropped", async || *dropped.lock()).await;
    assert!(matches!(
        queue.cancel(&added.id, "").await,
        Err(QueueError::WrongState { .. })
    ));
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let engine = engine();
    let queue = queue(&engine, |config| config.max_data_bytes = 1_000).await;
    assert!(matches!(
        engine.manager.queue("nope"),
        Err(QueueError::UnknownQueue(_))
    ));
    let zero = JobOptions {
        attempts: 0,
        ..JobOptions::default()
    };
    assert!(matches!(
        queue.add("job", &json!({}), zero).await,
        Err(QueueError::InvalidOptions(_))
    ));
    let big = json!({ "text": "x".repeat(2_000) });
    assert!(matches!(
        queue.add("job", &big, JobOptions::default()).await,
        Err(QueueError::DataTooLarge { .. })
    ));
    // One bad job in a bulk add refuses the whole batch.
    let good = courier::queue::model::NewJob {
        name: "job".into(),
        data: "{}".into(),
        opts: JobOptions::default(),
    };
    let bad = courier::queue::model::NewJob {
        name: String::new(),
        ..good.clone()
    };
    assert!(queue.add_bulk(vec![good, bad]).await.is_err());
    assert!(matches!(
        courier::queue::options::from_json(&json!({"delay": -1})),
        Err(QueueError::InvalidOptions(_))
    ));
    assert_eq!(queue.counts().await.unwrap().total(), 0);
    assert!(matches!(
        engine.manager.register(QueueConfig::new("Bad Name")).await,
        Err(QueueError::InvalidOptions(_))
    ));
}

#[tokio::test]
async fn admin_operations_list_retry_remove_clean_and_drain() {
    let engine = engine();
    let queue = queue(&engine, |_| {}).await;
    let failing_on = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let switch = failing_on.clone();
    queue.process("*", move |job: JobContext| {
        let switch = switch.clone();
        async move {
            let data: Value = job.data_as()?;
            if data["fail"] == json!(true) && switch.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(JobFailure::msg("fails until switched off"));
            }
            job.progress(json!(50)).await?;
            job.log("halfway").await?;
            Ok(json!({ "ok": true }))
        }
    });
    let mut failing = Vec::new();
    for n in 0..3 {
        failing.push(
            queue
                .add(
                    "job",
                    &json!({ "fail": true, "n": n }),
                    JobOptions::default(),
                )
                .await
                .unwrap()
                .id,
        );
    }
    engine.manager.start();
    until_counts(&queue, JobState::Failed, 3).await;

    let page = queue.list(JobState::Failed, 0, 2).await.unwrap();
    assert_eq!(page.total, 3);
    assert_eq!(page.jobs.len(), 2);
    let second = queue.list(JobState::Failed, 2, 2).await.unwrap();
    assert_eq!(second.jobs.len(), 1);

    failing_on.store(false, std::sync::atomic::Ordering::SeqCst);
    queue.retry(&failing[0]).await.unwrap();
    until_counts(&queue, JobState::Completed, 1).await;
    let done = queue.get(&failing[0]).await.unwrap().unwrap();
    assert_eq!(done.status.progress, "50");
    assert_eq!(
        queue.logs(&failing[0]).await.unwrap(),
        vec!["halfway".to_owned()]
    );
    assert!(matches!(
        queue.retry(&failing[0]).await,
        Err(QueueError::WrongState { .. })
    ));
    assert!(matches!(
        queue.retry("missing").await,
        Err(QueueError::JobNotFound(_))
    ));

    assert_eq!(queue.retry_all_failed().await.unwrap(), 2);
    until_counts(&queue, JobState::Completed, 3).await;

    queue.remove(&failing[1]).await.unwrap();
    assert!(queue.get(&failing[1]).await.unwrap().is_none());
    assert!(queue.logs(&failing[1]).await.unwrap().is_empty());
    assert!(matches!(
        queue.remove(&failing[1]).await,
        Err(QueueError::JobNotFound(_))
    ));

    // Clean respects the grace period, then removes.
    assert!(queue
        .clean(JobState::Completed, 3_600_000, 0)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        queue.clean(JobState::Completed, 0, 0).await.unwrap().len(),
        2
    );

    queue.pause().await.unwrap();
    for n in 0..4 {
        queue
            .add("job", &numbered(n), JobOptions::default())
            .await
            .unwrap();
    }
    let later = JobOptions {
        delay_ms: 60_000,
        ..JobOptions::default()
    };
    queue.add("job", &numbered(9), later).await.unwrap();
    assert_eq!(queue.drain(false).await.unwrap(), 4);
    assert_eq!(queue.counts().await.unwrap().delayed, 1);
    assert_eq!(queue.drain(true).await.unwrap(), 1);
    assert_eq!(queue.counts().await.unwrap().total(), 0);
}

#[tokio::test]
async fn events_follow_a_job_through_its_states() {
    let engine = engine();
    let queue = queue(&engine, |_| {}).await;
    queue.process("*", |job: JobContext| async move {
        job.progress(json!(10)).await?;
        Ok(json!(1))
    });
    let mut events = engine.manager.hub().subscribe();
    engine.manager.start();
    let added = queue
        .add("job", &json!({}), JobOptions::default())
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while kinds.last() != Some(&EventKind::Completed) {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event.job_id.as_deref(), Some(added.id.as_str()));
        kinds.push(event.kind);
    }
    assert_eq!(
        kinds,
        vec![
            EventKind::Added,
            EventKind::Waiting,
            EventKind::Active,
            EventKind::Progress,
            EventKind::Completed
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_count_outcomes_and_time_every_job() {
    let engine = engine();
    let queue = queue(&engine, |_| {}).await;
    queue.process("*", |job: JobContext| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if job.name == "bad" {
            return Err(JobFailure::msg("no"));
        }
        Ok(json!(null))
    });
    engine.manager.start();
    for _ in 0..8 {
        queue
            .add("good", &json!({}), JobOptions::default())
            .await
            .unwrap();
    }
    for _ in 0..2 {
        queue
            .add("bad", &json!({}), JobOptions::default())
            .await
            .unwrap();
    }
    until_counts(&queue, JobState::Failed, 2).await;
    until_counts(&queue, JobState::Completed, 8).await;
    let metrics = queue.metrics(60);
    assert_eq!(metrics.completed_in_window, 8);
    assert_eq!(metrics.failed_in_window, 2);
    assert_eq!(metrics.processing_ms.count, 10);
    assert!(
        metrics.processing_ms.p50 >= 19.0,
        "{:?}",
        metrics.processing_ms
    );
    assert_eq!(metrics.wait_ms.count, 10);
    assert!((metrics.error_rate - 0.2).abs() < 1e-9);
    assert_eq!(
        metrics
            .per_minute
            .iter()
            .map(|minute| minute.completed)
            .sum::<u64>(),
        8
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_add_is_acknowledged_only_once_the_original_is_durable() {
    let engine = engine();
    let queue = queue(&engine, |_| {}).await;
    for n in 0..200 {
        let id = format!("x{n}");
        let opts = JobOptions {
            job_id: Some(id.clone()),
            ..JobOptions::default()
        };
        let first = {
            let queue = queue.clone();
            let opts = opts.clone();
            tokio::spawn(async move { queue.add("job", &json!({}), opts).await })
        };
        tokio::task::yield_now().await;
        let second = queue.add("job", &json!({}), opts).await.unwrap();
        // Whichever add won, the job is stored by the time either is acknowledged.
        assert!(
            queue.get(&id).await.unwrap().is_some(),
            "round {n}: acknowledged {second:?} but not stored"
        );
        first.await.unwrap().unwrap();
    }
    assert_eq!(queue.counts().await.unwrap().waiting, 200);
}

/// The engine on the memory store, end to end: jobs run, fail, back off, retry and finish (or
/// run out of attempts) just as they do on sled.
#[tokio::test(start_paused = true)]
async fn the_engine_runs_jobs_with_retries_and_backoff_on_the_memory_store() {
    let store: Arc<dyn JobStore> = Arc::new(MemoryJobStore::new());
    let manager = QueueManager::new(store, Arc::new(LocalHub::default()));
    let queue = manager.register(QueueConfig::new("work")).await.unwrap();
    let attempts: Log = Arc::default();
    let seen = attempts.clone();
    let clock = queue.clone();
    queue.process("*", move |job: JobContext| {
        let seen = seen.clone();
        let clock = clock.clone();
        async move {
            let data: Value = job.data_as()?;
            let n = data["n"].as_i64().unwrap_or(-1);
            seen.lock().push((n, clock.now()));
            // Job n fails its first n attempts.
            if i64::from(job.attempts_made) < n {
                let attempt = job.attempts_made + 1;
                let cause = std::io::Error::other(format!("attempt {attempt} of job {n}"));
                return Err(JobFailure::from(cause));
            }
            Ok(json!({ "n": n }))
        }
    });
    manager.start();
    let opts = JobOptions {
        attempts: 3,
        backoff: Some(Backoff {
            kind: BackoffKind::Exponential,
            delay: 1_000,
            jitter: 0.0,
        }),
        ..JobOptions::default()
    };
    let mut ids = Vec::new();
    for n in 0..4 {
        let added = queue.add("job", &numbered(n), opts.clone()).await.unwrap();
        ids.push(added.id);
    }
    until_counts(&queue, JobState::Completed, 3).await;
    until_counts(&queue, JobState::Failed, 1).await;

    for (n, id) in (0..).zip(&ids) {
        let job = queue.get(id).await.unwrap().unwrap();
        if n < 3 {
            assert_eq!(job.status.state, JobState::Completed, "job {n}");
            assert_eq!(job.status.attempts_made, n + 1, "job {n}");
            let value: Value =
                serde_json::from_str(job.status.return_value.as_deref().unwrap()).unwrap();
            assert_eq!(value, json!({ "n": n }));
        } else {
            assert_eq!(job.status.state, JobState::Failed, "job {n}");
            assert_eq!(job.status.attempts_made, 3);
            assert_eq!(
                job.status.failed_reason.as_deref(),
                Some("attempt 3 of job 3")
            );
            assert_eq!(job.status.stacktrace.len(), 3);
        }
    }
    // Every retry waited out its backoff: 1 s after the first failure, 2 s after the second.
    let log = attempts.lock().clone();
    for n in 0..4 {
        let times: Vec<u64> = log
            .iter()
            .filter(|(job, _)| *job == n)
            .map(|(_, at)| *at)
            .collect();
        assert_eq!(times.len() as i64, (n + 1).min(3), "attempts of job {n}");
        let gaps: Vec<u64> = times.windows(2).map(|pair| pair[1] - pair[0]).collect();
        for (gap, expected) in gaps.iter().zip([1_000, 2_000]) {
            assert!(
                *gap >= expected && *gap < expected + 500,
                "job {n}: gaps {gaps:?}"
            );
        }
    }
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
}
