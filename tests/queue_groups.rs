//! Job groups in the store: `take` serves groups in turn, never starts a job of a group at its
//! limit, keeps priority and FIFO order within a group, counts no delayed retry as active, and
//! holds each group to its own rate limit. Run on every backend, and through the engine with
//! many workers.

use std::sync::Arc;
use std::time::Duration;

use courier::queue::model::{
    Complete, Fail, GroupLimits, JobOptions, KeepJobs, Millis, NewJob, RateLimit, Take,
    TakeRequest, TakenJob,
};
use courier::queue::{JobContext, LocalHub, QueueConfig, QueueManager};
use courier::store::JobStore;
use parking_lot::Mutex;
use serde_json::json;

#[macro_use]
mod job_backends;
use job_backends::Backend;

const QUEUE: &str = "groups";
const NOW: Millis = 1_700_000_000_000;

fn one_at_a_time() -> TakeRequest {
    TakeRequest {
        lease_ms: 60_000,
        limit: None,
        groups: GroupLimits {
            concurrency: Some(1),
            rate: None,
        },
    }
}

/// A job named `name` in `group` (`None`: ungrouped) with an optional priority.
fn job(name: &str, group: Option<&str>, priority: Option<u32>) -> NewJob {
    NewJob {
        name: name.to_owned(),
        data: "{}".to_owned(),
        opts: JobOptions {
            group: group.map(str::to_owned),
            priority,
            ..JobOptions::default()
        },
    }
}

async fn take(store: &Arc<dyn JobStore>, request: TakeRequest) -> Option<TakenJob> {
    store.take(QUEUE, request, NOW).await.unwrap().job()
}

async fn take_name(store: &Arc<dyn JobStore>, request: TakeRequest) -> Option<String> {
    take(store, request).await.map(|job| job.spec.name)
}

async fn complete(store: &Arc<dyn JobStore>, job: &TakenJob) {
    let done = Complete {
        id: job.id.clone(),
        token: job.token,
        return_value: "null".to_owned(),
        keep: KeepJobs::ALL,
    };
    assert!(store.complete(QUEUE, done, NOW).await.unwrap());
}

/// Lanes take turns in the order they first had work; the ungrouped jobs are one lane, in
/// their own priority/FIFO order.
async fn groups_take_turns(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).unwrap();
    let jobs = vec![
        job("a1", Some("a"), None),
        job("a2", Some("a"), None),
        job("a3", Some("a"), None),
        job("b1", Some("b"), None),
        job("u1", None, None),
        job("b2", Some("b"), None),
        job("u2", None, Some(1)),
    ];
    store.add(QUEUE, jobs, NOW).await.unwrap();
    let unlimited = TakeRequest {
        groups: GroupLimits::NONE,
        ..one_at_a_time()
    };
    let mut order = Vec::new();
    while let Some(name) = take_name(&store, unlimited).await {
        order.push(name);
    }
    assert_eq!(order, ["a1", "b1", "u2", "a2", "b2", "u1", "a3"]);
}

/// A group at its limit is passed over, and keeps its turn for when its job finishes.
async fn a_group_at_its_limit_waits_for_its_active_job(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).unwrap();
    let jobs = vec![
        job("a1", Some("a"), None),
        job("a2", Some("a"), None),
        job("b1", Some("b"), None),
    ];
    store.add(QUEUE, jobs, NOW).await.unwrap();
    let a1 = take(&store, one_at_a_time()).await.unwrap();
    assert_eq!(a1.spec.name, "a1");
    let b1 = take(&store, one_at_a_time()).await.unwrap();
    assert_eq!(b1.spec.name, "b1");
    assert!(
        matches!(
            store.take(QUEUE, one_at_a_time(), NOW).await.unwrap(),
            Take::Empty
        ),
        "a2 started while a1 ran"
    );
    let watch = store.watch(QUEUE);
    complete(&store, &b1).await;
    complete(&store, &a1).await;
    // a1 leaving `active` freed a slot a waiting job can use: a worker is woken for it.
    tokio::time::timeout(Duration::from_secs(30), watch.changed())
        .await
        .expect("a freed group slot woke no worker");
    assert_eq!(
        take_name(&store, one_at_a_time()).await.as_deref(),
        Some("a2")
    );
}

/// Within a group, priority first, then FIFO.
async fn a_group_keeps_priority_then_fifo(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).unwrap();
    let jobs = vec![
        job("late", Some("a"), None),
        job("first", Some("a"), Some(1)),
        job("second", Some("a"), Some(1)),
        job("third", Some("a"), Some(2)),
    ];
    store.add(QUEUE, jobs, NOW).await.unwrap();
    let mut order = Vec::new();
    while let Some(taken) = take(&store, one_at_a_time()).await {
        order.push(taken.spec.name.clone());
        complete(&store, &taken).await;
    }
    assert_eq!(order, ["first", "second", "third", "late"]);
}

/// A failed attempt waiting for its retry is not active: the group's next job may start.
async fn a_delayed_retry_does_not_hold_its_group(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).unwrap();
    let jobs = vec![job("a1", Some("a"), None), job("a2", Some("a"), None)];
    store.add(QUEUE, jobs, NOW).await.unwrap();
    let a1 = take(&store, one_at_a_time()).await.unwrap();
    let fail = Fail {
        id: a1.id.clone(),
        token: a1.token,
        reason: "try again".to_owned(),
        stack: "try again".to_owned(),
        retry_at: Some(NOW + 60_000),
        keep: KeepJobs::ALL,
    };
    store.fail(QUEUE, fail, NOW).await.unwrap();
    assert_eq!(
        take_name(&store, one_at_a_time()).await.as_deref(),
        Some("a2")
    );
}

/// Each group has its own rate window; other groups are not held back by it.
async fn each_group_has_its_own_rate_limit(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).unwrap();
    let jobs = vec![
        job("a1", Some("a"), None),
        job("a2", Some("a"), None),
        job("b1", Some("b"), None),
    ];
    store.add(QUEUE, jobs, NOW).await.unwrap();
    let limited = TakeRequest {
        groups: GroupLimits {
            concurrency: None,
            rate: Some(RateLimit {
                max: 1,
                duration_ms: 1_000,
            }),
        },
        ..one_at_a_time()
    };
    assert_eq!(take_name(&store, limited).await.as_deref(), Some("a1"));
    assert_eq!(take_name(&store, limited).await.as_deref(), Some("b1"));
    match store.take(QUEUE, limited, NOW).await.unwrap() {
        Take::RateLimited { until } => assert_eq!(until, NOW + 1_000),
        other => panic!("a2 was not held by its group's rate limit: {other:?}"),
    }
    let later = store.take(QUEUE, limited, NOW + 1_000).await.unwrap().job();
    assert_eq!(later.map(|job| job.spec.name).as_deref(), Some("a2"));
}

/// After a restart the groups are rebuilt from the stored records: waiting jobs keep their
/// order within the group, the job active at the restart still counts until it is recovered,
/// and then it runs first, in its old place.
async fn sled_groups_survive_a_restart(backend: Backend) {
    if !backend.is_durable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let store = backend.open(dir.path()).unwrap();
        let jobs = vec![
            job("a1", Some("a"), None),
            job("a2", Some("a"), None),
            job("a3", Some("a"), None),
        ];
        store.add(QUEUE, jobs, NOW).await.unwrap();
        take(&store, one_at_a_time()).await.unwrap();
        store.flush().await.unwrap();
    }
    let store = loop {
        match backend.open(dir.path()) {
            Ok(store) => break store,
            Err(err) if err.to_string().contains("could not acquire lock") => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(err) => panic!("reopen failed: {err}"),
        }
    };
    assert!(
        take(&store, one_at_a_time()).await.is_none(),
        "a2 started while a1 was still active"
    );
    let recovered = store.expire_leases(QUEUE, NOW, 5).await.unwrap();
    assert_eq!(recovered.len(), 1);
    let mut order = Vec::new();
    while let Some(taken) = take(&store, one_at_a_time()).await {
        order.push(taken.spec.name.clone());
        complete(&store, &taken).await;
    }
    // A recovered job keeps its place: the conversation's send order survives the crash.
    assert_eq!(order, ["a1", "a2", "a3"]);
}

/// Through the engine: many workers, two groups limited to one job each, and every group's jobs
/// run one at a time in the order they were added.
async fn many_workers_run_each_group_one_job_at_a_time(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).unwrap();
    let manager = QueueManager::new(store, Arc::new(LocalHub::default()));
    let mut config = QueueConfig::new(QUEUE);
    config.concurrency = 8;
    config.group_concurrency = Some(1);
    let queue = manager.register(config).await.unwrap();
    // Per group: how many run now, and the order they ran in.
    type Runs = Arc<Mutex<std::collections::HashMap<String, (u32, Vec<u64>)>>>;
    let runs: Runs = Arc::default();
    let seen = runs.clone();
    queue.process("*", move |job: JobContext| {
        let seen = seen.clone();
        async move {
            let data: serde_json::Value = job.data_as()?;
            let group = data["group"].as_str().unwrap_or_default().to_owned();
            {
                let mut runs = seen.lock();
                let (running, order) = runs.entry(group.clone()).or_default();
                *running += 1;
                assert_eq!(*running, 1, "two jobs of group {group} ran at once");
                order.push(data["n"].as_u64().unwrap_or_default());
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
            seen.lock().entry(group).or_default().0 -= 1;
            Ok(json!(null))
        }
    });
    let mut jobs = Vec::new();
    for n in 0..40u64 {
        let group = if n % 3 == 0 { "x" } else { "y" };
        jobs.push(NewJob {
            name: "step".to_owned(),
            data: json!({ "group": group, "n": n }).to_string(),
            opts: JobOptions {
                group: Some(group.to_owned()),
                ..JobOptions::default()
            },
        });
    }
    queue.add_bulk(jobs).await.unwrap();
    manager.start();
    for _ in 0..6_000 {
        if queue.counts().await.unwrap().completed == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(queue.counts().await.unwrap().completed, 40);
    for (group, (_, order)) in runs.lock().iter() {
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, &sorted, "group {group} ran out of order");
    }
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

on_every_backend! {
    #[tokio::test]
    async fn groups_take_turns;
    #[tokio::test]
    async fn a_group_at_its_limit_waits_for_its_active_job;
    #[tokio::test]
    async fn a_group_keeps_priority_then_fifo;
    #[tokio::test]
    async fn a_delayed_retry_does_not_hold_its_group;
    #[tokio::test]
    async fn each_group_has_its_own_rate_limit;
    #[tokio::test]
    async fn sled_groups_survive_a_restart;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_workers_run_each_group_one_job_at_a_time;
}
