//! [`Queue`], the handle to one queue: adding jobs and the admin operations (retry, promote,
//! remove, clean, drain, pause, cancel), each a call to the store plus its events.

use super::*;

/// A handle to one queue; cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pub(super) shared: Arc<QueueShared>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.shared.name)
            .finish()
    }
}

impl Queue {
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn config(&self) -> &QueueConfig {
        &self.shared.config
    }

    /// Registers the processor for jobs called `name` ([`ANY_NAME`] for every other name).
    pub fn process(&self, name: &str, processor: impl Processor) {
        self.shared
            .processors
            .write()
            .insert(name.to_owned(), Arc::new(processor));
        // Jobs may wait for this processor: a local event the store knows nothing of.
        self.shared.work.wake();
    }

    fn check(&self, job: &NewJob) -> Result<(), QueueError> {
        if job.name.is_empty() || job.name.len() > MAX_NAME_LEN {
            return Err(QueueError::InvalidOptions(format!(
                "job name must be 1 to {MAX_NAME_LEN} bytes"
            )));
        }
        if job.data.len() > self.shared.config.max_data_bytes {
            return Err(QueueError::DataTooLarge {
                size: job.data.len(),
                limit: self.shared.config.max_data_bytes,
            });
        }
        options::validate(&job.opts)
    }

    /// Adds one job; returns once it is durable.
    pub async fn add(
        &self,
        name: &str,
        data: &Value,
        opts: JobOptions,
    ) -> Result<Added, QueueError> {
        let job = NewJob {
            name: name.to_owned(),
            data: data.to_string(),
            opts,
        };
        let mut added = self.add_bulk(vec![job]).await?;
        added
            .pop()
            .ok_or_else(|| QueueError::InvalidOptions("no job was added".to_owned()))
    }

    /// Adds jobs as one atomic, durable batch: all of them or none.
    pub async fn add_bulk(&self, jobs: Vec<NewJob>) -> Result<Vec<Added>, QueueError> {
        if self.shared.stop.is_cancelled() {
            return Err(QueueError::ShuttingDown);
        }
        for job in &jobs {
            self.check(job)?;
        }
        let shared = self.shared.clone();
        // The add and its wake-ups run in their own task, so a caller that gives up waiting
        // (a dropped HTTP request) cannot leave a durable job unannounced.
        let task = tokio::spawn(async move {
            let now = shared.clock.now();
            let added = shared.store.add(&shared.name, jobs, now).await?;
            let (mut delayed, mut waiting) = (false, false);
            for job in added.iter().filter(|job| !job.existed) {
                shared.publish(EventKind::Added, Some(&job.id), None);
                match job.state {
                    JobState::Delayed => {
                        delayed = true;
                        shared.publish(EventKind::Delayed, Some(&job.id), None);
                    }
                    _ => {
                        waiting = true;
                        shared.publish(EventKind::Waiting, Some(&job.id), None);
                    }
                }
            }
            // Announced first, then the wake-up (the store leaves an add's to the engine that
            // made it, see `WorkWatch`): an idle worker's `active` never comes before `added`.
            // The watch is the store's, so workers of every handle on it wake.
            if waiting {
                shared.work.wake();
            }
            if delayed {
                shared.timer_wake.notify_one();
            }
            Ok::<_, QueueError>(added)
        });
        task.await.map_err(|_| QueueError::ShuttingDown)?
    }

    pub async fn get(&self, id: &str) -> Result<Option<Job>, QueueError> {
        Ok(self.shared.store.get(&self.shared.name, id).await?)
    }

    pub async fn logs(&self, id: &str) -> Result<Vec<String>, QueueError> {
        Ok(self.shared.store.logs(&self.shared.name, id).await?)
    }

    pub async fn counts(&self) -> Result<Counts, QueueError> {
        Ok(self.shared.store.counts(&self.shared.name).await?)
    }

    /// Jobs in `state`, newest first.
    pub async fn list(
        &self,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> Result<JobPage, QueueError> {
        Ok(self
            .shared
            .store
            .list(&self.shared.name, state, offset, limit)
            .await?)
    }

    async fn explain_miss(&self, id: &str, expected: &'static str) -> QueueError {
        match self.get(id).await {
            Ok(Some(job)) => QueueError::WrongState {
                id: id.to_owned(),
                state: job.status.state.to_string(),
                expected,
            },
            Ok(None) => QueueError::JobNotFound(id.to_owned()),
            Err(err) => err,
        }
    }

    /// Sends one failed job back to `waiting` with fresh attempts.
    pub async fn retry(&self, id: &str) -> Result<(), QueueError> {
        let now = self.shared.clock.now();
        if !self.shared.store.retry(&self.shared.name, id, now).await? {
            return Err(self.explain_miss(id, "failed").await);
        }
        self.shared.publish(EventKind::Waiting, Some(id), None);
        Ok(())
    }

    pub async fn retry_all_failed(&self) -> Result<u64, QueueError> {
        let now = self.shared.clock.now();
        let count = self
            .shared
            .store
            .retry_all_failed(&self.shared.name, now)
            .await?;
        if count > 0 {
            self.shared
                .publish(EventKind::Waiting, None, Some(count.to_string()));
        }
        Ok(count)
    }

    /// Runs a delayed job now.
    pub async fn promote(&self, id: &str) -> Result<(), QueueError> {
        let now = self.shared.clock.now();
        if !self
            .shared
            .store
            .promote(&self.shared.name, id, now)
            .await?
        {
            return Err(self.explain_miss(id, "delayed").await);
        }
        self.shared.publish(EventKind::Waiting, Some(id), None);
        Ok(())
    }

    pub async fn remove(&self, id: &str) -> Result<(), QueueError> {
        match self.shared.store.remove(&self.shared.name, id).await? {
            RemovedOutcome::Removed => {
                self.shared.publish(EventKind::Removed, Some(id), None);
                Ok(())
            }
            RemovedOutcome::NotFound => Err(QueueError::JobNotFound(id.to_owned())),
            RemovedOutcome::Active => Err(QueueError::JobActive(id.to_owned())),
        }
    }

    /// Removes up to `limit` (0: all) jobs in `state` older than `grace_ms`. Active jobs are
    /// owned by workers and cannot be cleaned; cancel them instead.
    pub async fn clean(
        &self,
        state: JobState,
        grace_ms: u64,
        limit: u64,
    ) -> Result<Vec<String>, QueueError> {
        if state == JobState::Active {
            return Err(QueueError::InvalidOptions(
                "active jobs cannot be cleaned: cancel them".to_owned(),
            ));
        }
        let now = self.shared.clock.now();
        let removed = self
            .shared
            .store
            .clean(&self.shared.name, state, grace_ms, limit, now)
            .await?;
        for id in &removed {
            self.shared.publish(EventKind::Removed, Some(id), None);
        }
        Ok(removed)
    }

    /// Removes every waiting job (and delayed ones when asked).
    pub async fn drain(&self, include_delayed: bool) -> Result<u64, QueueError> {
        let count = self
            .shared
            .store
            .drain(&self.shared.name, include_delayed)
            .await?;
        self.shared
            .publish(EventKind::Drained, None, Some(count.to_string()));
        Ok(count)
    }

    pub async fn pause(&self) -> Result<(), QueueError> {
        self.shared
            .store
            .set_paused(&self.shared.name, true)
            .await?;
        self.shared.publish(EventKind::Paused, None, None);
        Ok(())
    }

    pub async fn resume(&self) -> Result<(), QueueError> {
        self.shared
            .store
            .set_paused(&self.shared.name, false)
            .await?;
        self.shared.publish(EventKind::Resumed, None, None);
        Ok(())
    }

    pub async fn is_paused(&self) -> Result<bool, QueueError> {
        Ok(self.shared.store.is_paused(&self.shared.name).await?)
    }

    /// Fails an active job now; its processor is stopped at its next await point.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<(), QueueError> {
        let now = self.shared.clock.now();
        let reason = if reason.is_empty() {
            "cancelled"
        } else {
            reason
        };
        if !self
            .shared
            .store
            .force_fail(&self.shared.name, id, reason.to_owned(), now)
            .await?
        {
            return Err(self.explain_miss(id, "active").await);
        }
        self.shared.stop_running(id);
        self.shared.metrics.record_failed(now, 0, true);
        self.shared
            .publish(EventKind::Failed, Some(id), Some(reason.to_owned()));
        Ok(())
    }

    pub fn metrics(&self, window_minutes: usize) -> MetricsSnapshot {
        self.shared
            .metrics
            .snapshot(self.shared.clock.now(), window_minutes)
    }

    /// How long the longest-waiting job has waited, in ms.
    pub async fn oldest_waiting_ms(&self) -> Result<Option<u64>, QueueError> {
        let now = self.shared.clock.now();
        let oldest = self.shared.store.oldest_waiting(&self.shared.name).await?;
        Ok(oldest.map(|at| now.saturating_sub(at)))
    }

    /// Current time on the engine's clock.
    pub fn now(&self) -> Millis {
        self.shared.clock.now()
    }

    pub(super) fn start(&self) {
        let mut started = self.shared.started.lock();
        if *started {
            return;
        }
        *started = true;
        let tasks = &self.shared.tasks;
        for _ in 0..self.shared.config.concurrency.max(1) {
            tasks.spawn(worker(self.shared.clone()));
        }
        tasks.spawn(timer(self.shared.clone()));
        tasks.spawn(retention(self.shared.clone()));
    }
}
