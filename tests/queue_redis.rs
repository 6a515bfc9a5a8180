//! Two instances on one Redis: two job stores opened on the same server and key prefix, each
//! with its own engine, share the queues. What one adds the other runs, woken by pub/sub; a job
//! whose instance
//! went away is recovered by the other once its lease lapses, and runs to completion once.
//! Only with the `redis` feature; without a server the tests say why and pass (not in CI).
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::time::Duration;

use courier::queue::model::{Complete, JobOptions, JobState, KeepJobs, NewJob, TakeRequest};
use courier::queue::{JobContext, LocalHub, QueueConfig, QueueManager};
use courier::store::job::GroupLimits;
use courier::store::redis::{Durability, RedisJobStore};
use courier::store::JobStore;
use serde_json::json;
use tokio::sync::mpsc;

#[allow(unused_macros)]
#[macro_use]
mod job_backends;
use job_backends::{redis_server, Backend};

const GUARD: Duration = Duration::from_secs(30);

/// Two stores (two "instances") on the one key space of `dir`, or `None` without a server.
fn two_instances(dir: &std::path::Path) -> Option<(Arc<dyn JobStore>, Arc<dyn JobStore>)> {
    if job_backends::skipped(Backend::Redis) {
        return None;
    }
    let url = redis_server::url()?;
    let prefix = redis_server::prefix_for(dir);
    let open = || -> Arc<dyn JobStore> { Arc::new(RedisJobStore::open(url, &prefix).unwrap()) };
    Some((open(), open()))
}

// Named `redis::...` like the conformance tests, so `.ci/run` picks them with the same filter.
mod redis {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_added_on_one_instance_runs_on_the_other() {
        super::a_job_added_on_one_instance_runs_on_the_other().await
    }

    #[tokio::test]
    async fn a_job_of_a_dead_instance_is_recovered_by_the_other_once() {
        super::a_job_of_a_dead_instance_is_recovered_by_the_other_once().await
    }

    #[test]
    fn the_store_reads_how_durable_the_server_is() {
        super::the_store_reads_how_durable_the_server_is()
    }

    #[test]
    fn the_test_server_refuses_a_script_key_outside_its_slot() {
        super::the_test_server_refuses_a_script_key_outside_its_slot()
    }
}

/// The test binary's own server fsyncs every write (`appendfsync always`), and the store says
/// so; a server named by REDIS_URL may be configured any way, so there only the read is checked.
fn the_store_reads_how_durable_the_server_is() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_, _)) = two_instances(dir.path()) else {
        return;
    };
    let url = redis_server::url().unwrap();
    let store = RedisJobStore::open(url, &redis_server::prefix_for(dir.path())).unwrap();
    // What the health report shows as `storage.durability`.
    let shown = store.stats().and_then(|stats| stats.durability());
    assert_eq!(shown, Some(store.durability().as_str()));
    if std::env::var("REDIS_URL").is_err() {
        assert_eq!(store.durability(), Durability::Always);
    } else {
        eprintln!(
            "REDIS_URL's server: durability {}",
            store.durability().as_str()
        );
    }
}

/// A job added through A, whose engine runs no worker, is processed by B's worker, woken by A's
/// message on the queue's channel: B's idle re-check is far longer than the test.
async fn a_job_added_on_one_instance_runs_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let Some((a, b)) = two_instances(dir.path()) else {
        return;
    };
    let adder = QueueManager::new(a.clone(), Arc::new(LocalHub::default()));
    let runner = QueueManager::new(b, Arc::new(LocalHub::default()));
    let mut config = QueueConfig::new("shared");
    config.idle_recheck_ms = Some(24 * 3_600_000);
    let adding = adder.register(config.clone()).await.unwrap();
    let running = runner.register(config).await.unwrap();
    let (ran, mut runs) = mpsc::unbounded_channel::<String>();
    running.process("*", move |job: JobContext| {
        let ran = ran.clone();
        async move {
            let _ = ran.send(job.name.clone());
            Ok(json!({"on": "b"}))
        }
    });
    runner.start();
    // B's worker has found nothing and sleeps on its watch (and B's listener has subscribed)
    // before A adds.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let added = adding
        .add("from-a", &json!({}), JobOptions::default())
        .await
        .unwrap();
    let run = tokio::time::timeout(GUARD, runs.recv())
        .await
        .expect("the job added on A never ran on B");
    assert_eq!(run.as_deref(), Some("from-a"));
    eprintln!("added on A, running on B after {:?}", started.elapsed());
    // A reads the result B stored.
    for _ in 0..200 {
        if adding.counts().await.unwrap().completed == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let job = a.get("shared", &added.id).await.unwrap().unwrap();
    assert_eq!(job.status.state, JobState::Completed);
    assert_eq!(job.status.return_value.as_deref(), Some(r#"{"on":"b"}"#));
    runner.shutdown(Duration::from_secs(5)).await.unwrap();
    adder.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A takes a job and goes away without a word (its lease is all that is left of it, in Redis).
/// Once the lease lapses B recovers the job as stalled, takes it and completes it; A's token is
/// stale by then, so the job completes exactly once.
async fn a_job_of_a_dead_instance_is_recovered_by_the_other_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some((a, b)) = two_instances(dir.path()) else {
        return;
    };
    let take = TakeRequest {
        lease_ms: 1_000,
        limit: None,
        groups: GroupLimits::NONE,
    };
    let now = 1_000_000;
    let job = NewJob {
        name: "work".to_owned(),
        data: "{}".to_owned(),
        opts: JobOptions::default(),
    };
    let id = a.add("q", vec![job], now).await.unwrap()[0].id.clone();
    let held = a.take("q", take, now).await.unwrap().job().unwrap();
    drop(a);

    // Before the lease lapses B leaves the job alone.
    assert!(b.expire_leases("q", now + 999, 1).await.unwrap().is_empty());
    assert_eq!(b.next_lease_expiry("q").await.unwrap(), Some(now + 1_000));
    let expired = b.expire_leases("q", now + 1_000, 1).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].state, JobState::Waiting);
    let retaken = b.take("q", take, now + 1_001).await.unwrap().job().unwrap();
    assert_eq!(retaken.id, id);
    assert!(retaken.token > held.token);
    let complete = |token| Complete {
        id: id.clone(),
        token,
        return_value: "1".to_owned(),
        keep: KeepJobs::ALL,
    };
    assert!(b
        .complete("q", complete(retaken.token), now + 1_002)
        .await
        .unwrap());
    // The dead instance's attempt, had it come back, finishes nothing.
    assert!(!b
        .complete("q", complete(held.token), now + 1_003)
        .await
        .unwrap());
    let stored = b.get("q", &id).await.unwrap().unwrap();
    assert_eq!(stored.status.state, JobState::Completed);
    assert_eq!(stored.status.stalled_count, 1);
    assert_eq!(stored.status.attempts_made, 1);
    assert_eq!(b.counts("q").await.unwrap().completed, 1);
}

/// The guard the conformance suite relies on is live: the test binary's server (cluster mode)
/// refuses a `#!lua` script touching a key outside the slot of its first key, as it would refuse
/// any store script that built a key outside the queue's hash tag. (Not for REDIS_URL's server,
/// which need not run in cluster mode.)
fn the_test_server_refuses_a_script_key_outside_its_slot() {
    if job_backends::skipped(Backend::Redis) || std::env::var("REDIS_URL").is_ok() {
        return;
    }
    let url = redis_server::url().unwrap();
    let mut connection = ::redis::Client::open(url)
        .unwrap()
        .get_connection()
        .unwrap();
    let inside = ::redis::Script::new("#!lua\nreturn redis.call('INCR', '{courier:q}:probe')");
    let _: i64 = inside
        .key("{courier:q}:meta")
        .invoke(&mut connection)
        .unwrap();
    let outside = ::redis::Script::new("#!lua\nreturn redis.call('INCR', '{courier:other}:probe')");
    let refused = outside
        .key("{courier:q}:meta")
        .invoke::<i64>(&mut connection)
        .unwrap_err();
    assert!(refused.to_string().contains("same slot"), "{refused}");
}
