//! Leases held by the job store: `take` grants one, `renew` extends it, `expire_leases` takes
//! lapsed jobs away (counting a stall, failing past the limit), `next_lease_expiry` plans the
//! timer; and the per-queue rate limit `take` counts. Run on every backend; time is passed in,
//! so nothing here sleeps.

use std::sync::Arc;

use courier::queue::model::{
    Complete, Expired, JobOptions, JobState, KeepJobs, Millis, NewJob, RateLimit, Take,
    TakeRequest, TakenJob,
};
use courier::store::{JobStore, StoreError};

#[macro_use]
mod job_backends;
use job_backends::Backend;

const LEASE_MS: u64 = 1_000;
const TAKE: TakeRequest = TakeRequest {
    lease_ms: LEASE_MS,
    limit: None,
    groups: courier::store::job::GroupLimits::NONE,
};

fn one_job() -> Vec<NewJob> {
    vec![NewJob {
        name: "job".to_owned(),
        data: "{}".to_owned(),
        opts: JobOptions::default(),
    }]
}

async fn take_at(store: &Arc<dyn JobStore>, now: Millis) -> TakenJob {
    store
        .take("main", TAKE, now)
        .await
        .unwrap()
        .job()
        .expect("a waiting job to take")
}

/// Opens the sled store again once the dropped one let go of the database's lock (its
/// commit thread releases it shortly after the drop).
async fn reopen(dir: &std::path::Path) -> Arc<dyn JobStore> {
    let mut attempts = 0;
    loop {
        match Backend::Sled.open(dir) {
            Ok(store) => return store,
            Err(StoreError::Io(message))
                if message.contains("could not acquire lock") && attempts < 300 =>
            {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(err) => panic!("reopen failed: {err}"),
        }
    }
}

async fn stalled_count(store: &Arc<dyn JobStore>, id: &str) -> (JobState, u32) {
    let job = store
        .get("main", id)
        .await
        .unwrap()
        .expect("the job exists");
    (job.status.state, job.status.stalled_count)
}

async fn a_lapsed_lease_requeues_with_a_stall_then_fails_past_max_stalled(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).unwrap();
    store.add("main", one_job(), 0).await.unwrap();
    assert_eq!(store.next_lease_expiry("main").await.unwrap(), None);

    let first = take_at(&store, 100).await;
    assert_eq!(
        store.next_lease_expiry("main").await.unwrap(),
        Some(100 + LEASE_MS)
    );
    // One millisecond before the lease lapses nothing moves.
    assert!(store
        .expire_leases("main", 100 + LEASE_MS - 1, 1)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        stalled_count(&store, &first.id).await,
        (JobState::Active, 0)
    );

    let expired = store
        .expire_leases("main", 100 + LEASE_MS, 1)
        .await
        .unwrap();
    assert_eq!(
        expired,
        vec![Expired {
            id: first.id.clone(),
            state: JobState::Waiting
        }]
    );
    assert_eq!(
        stalled_count(&store, &first.id).await,
        (JobState::Waiting, 1)
    );
    assert_eq!(store.next_lease_expiry("main").await.unwrap(), None);
    // The attempt that lost its lease no longer owns the job.
    assert!(!store
        .renew("main", &first.id, first.token, 5_000)
        .await
        .unwrap());
    let late = Complete {
        id: first.id.clone(),
        token: first.token,
        return_value: "null".to_owned(),
        keep: KeepJobs::ALL,
    };
    assert!(!store.complete("main", late, 2_000).await.unwrap());

    // Stalling a second time is more than max_stalled = 1 allows.
    let second = take_at(&store, 3_000).await;
    assert_eq!(second.id, first.id);
    assert!(second.token != first.token);
    let expired = store
        .expire_leases("main", 3_000 + LEASE_MS, 1)
        .await
        .unwrap();
    assert_eq!(
        expired,
        vec![Expired {
            id: first.id.clone(),
            state: JobState::Failed
        }]
    );
    assert_eq!(
        stalled_count(&store, &first.id).await,
        (JobState::Failed, 2)
    );
    let job = store.get("main", &first.id).await.unwrap().unwrap();
    assert_eq!(
        job.status.failed_reason.as_deref(),
        Some("job stalled more than allowable limit")
    );
}

async fn renew_pushes_the_expiry_and_a_stale_token_is_refused(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).unwrap();
    store.add("main", one_job(), 0).await.unwrap();
    let taken = take_at(&store, 0).await;

    assert!(store
        .renew("main", &taken.id, taken.token, 5_000)
        .await
        .unwrap());
    assert_eq!(store.next_lease_expiry("main").await.unwrap(), Some(5_000));
    // The original deadline passed, the renewed one has not.
    assert!(store
        .expire_leases("main", 4_999, 0)
        .await
        .unwrap()
        .is_empty());

    // Another token (an older attempt's, or a guess) cannot renew, nor shorten, the lease.
    assert!(!store
        .renew("main", &taken.id, taken.token + 1, 100)
        .await
        .unwrap());
    assert!(!store
        .renew("main", "missing", taken.token, 100)
        .await
        .unwrap());
    assert_eq!(store.next_lease_expiry("main").await.unwrap(), Some(5_000));

    // A finished job's lease is gone: renewing it is refused and nothing is left to expire.
    let done = Complete {
        id: taken.id.clone(),
        token: taken.token,
        return_value: "null".to_owned(),
        keep: KeepJobs::ALL,
    };
    assert!(store.complete("main", done, 1_000).await.unwrap());
    assert!(!store
        .renew("main", &taken.id, taken.token, 9_000)
        .await
        .unwrap());
    assert_eq!(store.next_lease_expiry("main").await.unwrap(), None);
    assert!(store
        .expire_leases("main", 10_000, 0)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        stalled_count(&store, &taken.id).await,
        (JobState::Completed, 0)
    );
}

async fn leases_are_per_queue(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).unwrap();
    store.add("main", one_job(), 0).await.unwrap();
    store.add("other", one_job(), 0).await.unwrap();
    let main = take_at(&store, 0).await;
    let other = store.take("other", TAKE, 500).await.unwrap().job().unwrap();
    assert_eq!(
        store.next_lease_expiry("main").await.unwrap(),
        Some(LEASE_MS)
    );
    assert_eq!(
        store.next_lease_expiry("other").await.unwrap(),
        Some(500 + LEASE_MS)
    );
    let expired = store.expire_leases("main", LEASE_MS, 3).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, main.id);
    // The other queue's job keeps its lease.
    assert!(store
        .renew("other", &other.id, other.token, 2_000)
        .await
        .unwrap());
}

fn limited(max: u32, duration_ms: u64) -> TakeRequest {
    TakeRequest {
        lease_ms: LEASE_MS,
        limit: Some(RateLimit { max, duration_ms }),
        groups: courier::store::job::GroupLimits::NONE,
    }
}

fn jobs(n: usize) -> Vec<NewJob> {
    (0..n).flat_map(|_| one_job()).collect()
}

async fn the_rate_limit_window_admits_max_starts_then_says_when_it_reopens(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).unwrap();
    store.add("main", jobs(4), 0).await.unwrap();
    let limit = limited(2, 1_000);
    assert!(matches!(
        store.take("main", limit, 0).await.unwrap(),
        Take::Job(_)
    ));
    assert!(matches!(
        store.take("main", limit, 10).await.unwrap(),
        Take::Job(_)
    ));
    for now in [20, 999] {
        match store.take("main", limit, now).await.unwrap() {
            Take::RateLimited { until } => assert_eq!(until, 1_000, "at {now}"),
            other => panic!("at {now}: expected the window to be used up, got {other:?}"),
        }
    }
    // A refused take took nothing.
    assert_eq!(store.counts("main").await.unwrap().waiting, 2);
    assert!(matches!(
        store.take("main", limit, 1_000).await.unwrap(),
        Take::Job(_)
    ));
    // Without a limit the same queue is not held back.
    assert!(matches!(
        store.take("main", TAKE, 1_001).await.unwrap(),
        Take::Job(_)
    ));
}

async fn a_take_that_finds_nothing_uses_no_slot_of_the_window(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = backend.open(dir.path()).unwrap();
    let limit = limited(1, 1_000);
    assert!(matches!(
        store.take("main", limit, 0).await.unwrap(),
        Take::Empty
    ));
    store.add("main", jobs(2), 5).await.unwrap();
    assert!(matches!(
        store.take("main", limit, 5).await.unwrap(),
        Take::Job(_)
    ));
    // The window opened with the first start (at 5), not with the empty take (at 0).
    match store.take("main", limit, 1_004).await.unwrap() {
        Take::RateLimited { until } => assert_eq!(until, 1_005),
        other => panic!("expected the window to be used up, got {other:?}"),
    }
    // Windows are per queue.
    store.add("other", jobs(1), 5).await.unwrap();
    assert!(matches!(
        store.take("other", limit, 10).await.unwrap(),
        Take::Job(_)
    ));
}

on_every_backend! {
    #[tokio::test]
    async fn the_rate_limit_window_admits_max_starts_then_says_when_it_reopens;
    #[tokio::test]
    async fn a_take_that_finds_nothing_uses_no_slot_of_the_window;
    #[tokio::test]
    async fn a_lapsed_lease_requeues_with_a_stall_then_fails_past_max_stalled;
    #[tokio::test]
    async fn renew_pushes_the_expiry_and_a_stale_token_is_refused;
    #[tokio::test]
    async fn leases_are_per_queue;
}

/// A process that ended left its job active: no lease outlives it, so the reopened store's
/// first expiry pass gives the job back, whatever the clock says.
#[tokio::test]
async fn sled_jobs_left_active_by_an_ended_process_have_lapsed_at_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = Backend::Sled.open(dir.path()).unwrap();
        store.add("main", one_job(), 0).await.unwrap();
        let taken = store
            .take(
                "main",
                TakeRequest {
                    lease_ms: 60_000,
                    limit: None,
                    groups: courier::store::job::GroupLimits::NONE,
                },
                0,
            )
            .await
            .unwrap()
            .job()
            .unwrap();
        store.flush().await.unwrap();
        taken.id
    };
    let store = reopen(dir.path()).await;
    assert_eq!(store.next_lease_expiry("main").await.unwrap(), Some(0));
    let expired = store.expire_leases("main", 10, 5).await.unwrap();
    assert_eq!(
        expired,
        vec![Expired {
            id: id.clone(),
            state: JobState::Waiting
        }]
    );
    assert_eq!(stalled_count(&store, &id).await, (JobState::Waiting, 1));
}
