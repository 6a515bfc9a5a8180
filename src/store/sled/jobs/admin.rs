//! The sled job store's reads and admin operations (get, list, retry, promote, remove, clean,
//! drain, trim, pause); the `JobStore` impl in `mod.rs` delegates here.

use super::*;

impl SledJobStore {
    pub(super) async fn logs(&self, queue: &str, id: &str) -> Result<Vec<String>, StoreError> {
        // Lines are queued, not awaited, by `log`: let the committer apply them first.
        self.flush().await?;
        let count = {
            let index = self.queue(queue);
            let guard = index.lock();
            match guard.visible(id) {
                Some(entry) => entry.status.log_count,
                None => return Ok(Vec::new()),
            }
        };
        let mut lines = Vec::with_capacity(count as usize);
        for n in 0..count {
            if let Some(bytes) = self.committer.get(&log_key(queue, id, n))? {
                lines.push(decode(&bytes)?);
            }
        }
        Ok(lines)
    }

    pub(super) async fn get(&self, queue: &str, id: &str) -> Result<Option<Job>, StoreError> {
        let status = {
            let index = self.queue(queue);
            let guard = index.lock();
            match guard.visible(id) {
                Some(entry) => entry.status.clone(),
                None => return Ok(None),
            }
        };
        // The spec is written in the same batch as the first status, so a visible job has one;
        // a job removed between the two reads is simply gone.
        match self.committer.get(&key(SPEC, queue, id))? {
            Some(bytes) => Ok(Some(Job {
                queue: queue.to_owned(),
                id: id.to_owned(),
                spec: decode_versioned(&bytes)?,
                status,
            })),
            None => Ok(None),
        }
    }

    pub(super) async fn counts(&self, queue: &str) -> Result<Counts, StoreError> {
        Ok(self.queue(queue).lock().counts())
    }

    pub(super) async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> Result<JobPage, StoreError> {
        let (page, total) = {
            let index = self.queue(queue);
            let guard = index.lock();
            let set = guard.set(state);
            let page: Vec<(Arc<str>, JobStatus)> = set
                .iter()
                .rev()
                .skip(offset as usize)
                .take(limit as usize)
                .filter_map(|(_, _, id)| {
                    guard
                        .jobs
                        .get(id)
                        .map(|entry| (id.clone(), entry.status.clone()))
                })
                .collect();
            (page, set.len() as u64)
        };
        let mut jobs = Vec::with_capacity(page.len());
        for (id, status) in page {
            if let Some(bytes) = self.committer.get(&key(SPEC, queue, &id))? {
                jobs.push(Job {
                    queue: queue.to_owned(),
                    id: id.to_string(),
                    spec: decode_versioned(&bytes)?,
                    status,
                });
            }
        }
        Ok(JobPage { jobs, total })
    }

    pub(super) async fn retry(
        &self,
        queue: &str,
        id: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let index = self.queue(queue);
        let writes = {
            let mut guard = index.lock();
            let failed = guard.is_in(id, JobState::Failed);
            if !failed {
                return Ok(false);
            }
            let order = self.next_order();
            let mut writes = Vec::with_capacity(1);
            if let Some(status) = guard.update(id, |status| revive(status, order, now)) {
                put_status(&mut writes, queue, id, status)?;
            }
            self.submit(writes, order)
        };
        wait(writes).await?;
        self.watches.wake(queue);
        Ok(true)
    }

    pub(super) async fn retry_all_failed(
        &self,
        queue: &str,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let index = self.queue(queue);
        let (writes, count) = {
            let mut guard = index.lock();
            let failed: Vec<Arc<str>> = guard
                .set(JobState::Failed)
                .iter()
                .map(|(_, _, id)| id.clone())
                .collect();
            let mut writes = Vec::with_capacity(failed.len());
            let mut order = 0;
            for id in &failed {
                order = self.next_order();
                if let Some(status) = guard.update(id, |status| revive(status, order, now)) {
                    put_status(&mut writes, queue, id, status)?;
                }
            }
            (self.submit(writes, order), failed.len() as u64)
        };
        wait(writes).await?;
        if count > 0 {
            self.watches.wake(queue);
        }
        Ok(count)
    }

    pub(super) async fn promote(
        &self,
        queue: &str,
        id: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let index = self.queue(queue);
        let writes = {
            let mut guard = index.lock();
            let delayed = guard.is_in(id, JobState::Delayed);
            if !delayed {
                return Ok(false);
            }
            let order = self.next_order();
            let mut writes = Vec::with_capacity(1);
            if let Some(status) = guard.update(id, |status| {
                status.state = JobState::Waiting;
                status.entered_at = now;
                status.order = order;
                status.ready_at = now;
            }) {
                put_status(&mut writes, queue, id, status)?;
            }
            self.submit(writes, order)
        };
        wait(writes).await?;
        self.watches.wake(queue);
        Ok(true)
    }

    pub(super) async fn remove(&self, queue: &str, id: &str) -> Result<RemovedOutcome, StoreError> {
        let index = self.queue(queue);
        let writes = {
            let mut guard = index.lock();
            match guard.visible(id).map(|entry| entry.status.state) {
                None => return Ok(RemovedOutcome::NotFound),
                Some(JobState::Active) => return Ok(RemovedOutcome::Active),
                Some(_) => {}
            }
            let mut writes = Vec::with_capacity(2);
            if let Some(entry) = guard.remove(id) {
                delete_job(&mut writes, queue, id, &entry.status);
            }
            self.submit(writes, 0)
        };
        wait(writes).await?;
        Ok(RemovedOutcome::Removed)
    }

    pub(super) async fn clean(
        &self,
        queue: &str,
        state: JobState,
        grace_ms: u64,
        limit: u64,
        now: Millis,
    ) -> Result<RemovedIds, StoreError> {
        let index = self.queue(queue);
        let (writes, removed) = {
            let mut guard = index.lock();
            let cutoff = now.saturating_sub(grace_ms);
            let doomed: Vec<Arc<str>> = guard
                .set(state)
                .iter()
                .filter(|(_, _, id)| {
                    guard
                        .jobs
                        .get(id)
                        .is_some_and(|entry| entry.status.entered_at <= cutoff)
                })
                .take(if limit == 0 {
                    usize::MAX
                } else {
                    limit as usize
                })
                .map(|(_, _, id)| id.clone())
                .collect();
            let mut writes = Vec::with_capacity(doomed.len() * 2);
            for id in &doomed {
                if let Some(entry) = guard.remove(id) {
                    delete_job(&mut writes, queue, id, &entry.status);
                }
            }
            (self.submit(writes, 0), doomed)
        };
        wait(writes).await?;
        Ok(removed.iter().map(|id| id.to_string()).collect())
    }

    pub(super) async fn drain(
        &self,
        queue: &str,
        include_delayed: bool,
    ) -> Result<u64, StoreError> {
        let index = self.queue(queue);
        let (writes, count) = {
            let mut guard = index.lock();
            let mut doomed: Vec<Arc<str>> = guard
                .set(JobState::Waiting)
                .iter()
                .map(|(_, _, id)| id.clone())
                .collect();
            if include_delayed {
                doomed.extend(
                    guard
                        .set(JobState::Delayed)
                        .iter()
                        .map(|(_, _, id)| id.clone()),
                );
            }
            let mut writes = Vec::with_capacity(doomed.len() * 2);
            for id in &doomed {
                if let Some(entry) = guard.remove(id) {
                    delete_job(&mut writes, queue, id, &entry.status);
                }
            }
            (self.submit(writes, 0), doomed.len() as u64)
        };
        wait(writes).await?;
        Ok(count)
    }

    pub(super) async fn trim(
        &self,
        queue: &str,
        keep_completed: KeepJobs,
        keep_failed: KeepJobs,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let index = self.queue(queue);
        let (writes, removed) = {
            let mut guard = index.lock();
            let mut writes = Vec::new();
            let mut removed = trim_state(
                &mut guard,
                &mut writes,
                queue,
                JobState::Completed,
                keep_completed,
                now,
                usize::MAX,
            );
            removed += trim_state(
                &mut guard,
                &mut writes,
                queue,
                JobState::Failed,
                keep_failed,
                now,
                usize::MAX,
            );
            (self.submit(writes, 0), removed)
        };
        wait(writes).await?;
        Ok(removed)
    }

    pub(super) async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError> {
        let index = self.queue(queue);
        let writes = {
            let mut guard = index.lock();
            guard.paused = paused;
            let writes = if paused {
                vec![Write::Put(paused_key(queue), vec![1])]
            } else {
                vec![Write::Delete(paused_key(queue))]
            };
            self.submit(writes, 0)
        };
        wait(writes).await?;
        if !paused {
            self.watches.wake(queue);
        }
        Ok(())
    }

    pub(super) async fn is_paused(&self, queue: &str) -> Result<bool, StoreError> {
        Ok(self.queue(queue).lock().paused)
    }

    pub(super) async fn oldest_waiting(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        let index = self.queue(queue);
        let guard = index.lock();
        // Waiting is ordered by priority, not age: look at every waiting job. Cheap next to the
        // jobs themselves, and only monitoring calls it.
        Ok(guard
            .set(JobState::Waiting)
            .iter()
            .filter_map(|(_, _, id)| guard.jobs.get(id).map(|entry| entry.status.ready_at))
            .min())
    }
}
