//! A cancel that lands between a worker's take and the registration of its lease: the store
//! fails the job, but no lease is there yet to stop the processor. The engine must notice that
//! its attempt no longer owns the job and never start the processor (for a message: never save
//! or deliver what an admin cancelled). On a multi-threaded runtime that window is a few
//! microseconds wide; here a store that delegates everything to a real store cancels the job
//! from inside `take`, which puts the cancel in the window every time. Run on every backend.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use courier::queue::model::{
    Added, Complete, Counts, Expired, Fail, FailOutcome, Job, JobOptions, JobPage, JobState,
    KeepJobs, Millis, NewJob, Take, TakeRequest,
};
use courier::queue::{JobContext, LocalHub, Queue, QueueConfig, QueueManager};
use courier::store::{JobStore, RemovedIds, RemovedOutcome, StoreError, WorkWatch};
use parking_lot::Mutex;
use serde_json::json;

#[macro_use]
mod job_backends;

use job_backends::Backend;

/// A real store, except that `take` cancels the job it took before returning it.
struct CancelsOnTake {
    inner: Arc<dyn JobStore>,
    engine: OnceLock<Queue>,
}

#[async_trait]
impl JobStore for CancelsOnTake {
    async fn add(
        &self,
        queue: &str,
        jobs: Vec<NewJob>,
        now: Millis,
    ) -> Result<Vec<Added>, StoreError> {
        self.inner.add(queue, jobs, now).await
    }

    /// The real take; then, before the engine can register the attempt's lease, the cancel.
    async fn take(
        &self,
        queue: &str,
        request: TakeRequest,
        now: Millis,
    ) -> Result<Take, StoreError> {
        let taken = self.inner.take(queue, request, now).await?;
        if let (Take::Job(job), Some(engine)) = (&taken, self.engine.get()) {
            engine.cancel(&job.id, "cancelled at once").await.unwrap();
        }
        Ok(taken)
    }

    async fn promote_due(&self, queue: &str, now: Millis) -> Result<Vec<String>, StoreError> {
        self.inner.promote_due(queue, now).await
    }

    async fn next_due(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        self.inner.next_due(queue).await
    }

    async fn complete(
        &self,
        queue: &str,
        request: Complete,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.inner.complete(queue, request, now).await
    }

    async fn fail(
        &self,
        queue: &str,
        request: Fail,
        now: Millis,
    ) -> Result<FailOutcome, StoreError> {
        self.inner.fail(queue, request, now).await
    }

    async fn stall(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        max_stalled: u32,
        now: Millis,
    ) -> Result<Option<JobState>, StoreError> {
        self.inner.stall(queue, id, token, max_stalled, now).await
    }

    async fn release(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.inner.release(queue, id, token, now).await
    }

    async fn owns(&self, queue: &str, id: &str, token: u64) -> Result<bool, StoreError> {
        self.inner.owns(queue, id, token).await
    }

    async fn force_fail(
        &self,
        queue: &str,
        id: &str,
        reason: String,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.inner.force_fail(queue, id, reason, now).await
    }

    async fn progress(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        progress: String,
    ) -> Result<bool, StoreError> {
        self.inner.progress(queue, id, token, progress).await
    }

    async fn log(&self, queue: &str, id: &str, line: String) -> Result<bool, StoreError> {
        self.inner.log(queue, id, line).await
    }

    async fn logs(&self, queue: &str, id: &str) -> Result<Vec<String>, StoreError> {
        self.inner.logs(queue, id).await
    }

    async fn get(&self, queue: &str, id: &str) -> Result<Option<Job>, StoreError> {
        self.inner.get(queue, id).await
    }

    async fn counts(&self, queue: &str) -> Result<Counts, StoreError> {
        self.inner.counts(queue).await
    }

    async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> Result<JobPage, StoreError> {
        self.inner.list(queue, state, offset, limit).await
    }

    async fn retry(&self, queue: &str, id: &str, now: Millis) -> Result<bool, StoreError> {
        self.inner.retry(queue, id, now).await
    }

    async fn retry_all_failed(&self, queue: &str, now: Millis) -> Result<u64, StoreError> {
        self.inner.retry_all_failed(queue, now).await
    }

    async fn promote(&self, queue: &str, id: &str, now: Millis) -> Result<bool, StoreError> {
        self.inner.promote(queue, id, now).await
    }

    async fn remove(&self, queue: &str, id: &str) -> Result<RemovedOutcome, StoreError> {
        self.inner.remove(queue, id).await
    }

    async fn clean(
        &self,
        queue: &str,
        state: JobState,
        grace_ms: u64,
        limit: u64,
        now: Millis,
    ) -> Result<RemovedIds, StoreError> {
        self.inner.clean(queue, state, grace_ms, limit, now).await
    }

    async fn drain(&self, queue: &str, include_delayed: bool) -> Result<u64, StoreError> {
        self.inner.drain(queue, include_delayed).await
    }

    async fn trim(
        &self,
        queue: &str,
        keep_completed: KeepJobs,
        keep_failed: KeepJobs,
        now: Millis,
    ) -> Result<u64, StoreError> {
        self.inner
            .trim(queue, keep_completed, keep_failed, now)
            .await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError> {
        self.inner.set_paused(queue, paused).await
    }

    async fn is_paused(&self, queue: &str) -> Result<bool, StoreError> {
        self.inner.is_paused(queue).await
    }

    async fn oldest_waiting(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        self.inner.oldest_waiting(queue).await
    }

    async fn renew(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        until: Millis,
    ) -> Result<bool, StoreError> {
        self.inner.renew(queue, id, token, until).await
    }

    async fn expire_leases(
        &self,
        queue: &str,
        now: Millis,
        max_stalled: u32,
    ) -> Result<Vec<Expired>, StoreError> {
        self.inner.expire_leases(queue, now, max_stalled).await
    }

    async fn next_lease_expiry(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        self.inner.next_lease_expiry(queue).await
    }

    fn watch(&self, queue: &str) -> WorkWatch {
        self.inner.watch(queue)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }

    fn stats(&self) -> Option<&dyn courier::store::StorageStats> {
        self.inner.stats()
    }
}

on_every_backend! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_cancelled_between_its_take_and_its_lease_never_runs;
}

async fn a_job_cancelled_between_its_take_and_its_lease_never_runs(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CancelsOnTake {
        inner: backend.open(dir.path()).unwrap(),
        engine: OnceLock::new(),
    });
    let manager = QueueManager::new(store.clone(), Arc::new(LocalHub::default()));
    let queue = manager.register(QueueConfig::new("work")).await.unwrap();
    assert!(store.engine.set(queue.clone()).is_ok());
    let ran = Arc::new(Mutex::new(Vec::new()));
    let seen = ran.clone();
    queue.process("*", move |job: JobContext| {
        let seen = seen.clone();
        async move {
            seen.lock().push(job.id.clone());
            Ok(json!(null))
        }
    });
    manager.start();
    let mut ids = Vec::new();
    for n in 0..20 {
        let added = queue
            .add("job", &json!({ "n": n }), JobOptions::default())
            .await
            .unwrap();
        ids.push(added.id);
    }
    for _ in 0..2_000 {
        if queue.counts().await.unwrap().get(JobState::Failed) == 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for id in &ids {
        let job = queue.get(id).await.unwrap().unwrap();
        assert_eq!(job.status.state, JobState::Failed, "job {id}");
        assert_eq!(
            job.status.failed_reason.as_deref(),
            Some("cancelled at once")
        );
    }
    // Give any processor that was wrongly started the time to record itself.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        ran.lock().is_empty(),
        "processors ran for cancelled jobs: {:?}",
        ran.lock()
    );
}
