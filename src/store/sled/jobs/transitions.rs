//! The sled job store's state-machine transitions (add, take, finish, leases) and the reads
//! workers make; the `JobStore` impl in `mod.rs` delegates here.

use super::*;

impl SledJobStore {
    pub(super) async fn add(
        &self,
        queue: &str,
        jobs: Vec<NewJob>,
        now: Millis,
    ) -> Result<Vec<Added>, StoreError> {
        let index = self.queue(queue);
        let mut writes = Vec::with_capacity(jobs.len() * 2);
        let mut added = Vec::with_capacity(jobs.len());
        let mut fresh: Vec<Arc<str>> = Vec::new();
        // Adds of the same `jobId` still in flight: this add is acknowledged only after them.
        let mut earlier: Vec<PendingAdd> = Vec::new();
        let mut counter = 0;
        let own = {
            let mut guard = index.lock();
            // Every job of this add shares one handle on the commit's outcome.
            let (tell, told) = oneshot::channel::<Result<(), StoreError>>();
            let commit: PendingAdd = async move { told.await.unwrap_or(Err(StoreError::Closed)) }
                .boxed()
                .shared();
            for job in jobs {
                let existing = job.opts.job_id.as_deref().and_then(|id| guard.jobs.get(id));
                if let Some(entry) = existing {
                    if let Some(pending) = &entry.pending {
                        earlier.push(pending.clone());
                    }
                    added.push(Added {
                        id: entry.id.to_string(),
                        existed: true,
                        state: entry.status.state,
                    });
                    continue;
                }
                let order = self.next_order();
                counter = order;
                let id: Arc<str> = match job.opts.job_id.as_deref() {
                    Some(id) => Arc::from(id),
                    None => {
                        // Automatic ids come from the order counter; skip any a caller took.
                        let mut candidate = order;
                        while guard.jobs.contains_key(candidate.to_string().as_str()) {
                            candidate = self.next_order();
                            counter = candidate;
                        }
                        Arc::from(candidate.to_string().as_str())
                    }
                };
                let (state, ready_at) = if job.opts.delay_ms > 0 {
                    (JobState::Delayed, now.saturating_add(job.opts.delay_ms))
                } else {
                    (JobState::Waiting, now)
                };
                let mut status = JobStatus::new(state, &job.opts, order, ready_at);
                status.entered_at = now;
                let spec = JobSpec {
                    name: job.name,
                    data: job.data,
                    opts: job.opts,
                    created_at: now,
                };
                // A new job's keys: deleted before the next checkpoint, they never reach sled.
                writes.push(Write::PutNew(
                    key(SPEC, queue, &id),
                    encode_versioned(&spec)?,
                ));
                writes.push(Write::PutNew(
                    key(STATUS, queue, &id),
                    encode_versioned(&status)?,
                ));
                added.push(Added {
                    id: id.to_string(),
                    existed: false,
                    state,
                });
                fresh.push(id.clone());
                guard.jobs.insert(
                    id.clone(),
                    Entry {
                        id,
                        status,
                        pending: Some(commit.clone()),
                        unread_spec: Some(spec),
                    },
                );
            }
            if fresh.is_empty() {
                None
            } else {
                let publish_index = index.clone();
                let publish: AfterCommit = Box::new(move |result| {
                    let mut guard = publish_index.lock();
                    for id in &fresh {
                        let Some(mut entry) = guard.jobs.remove(id) else {
                            continue;
                        };
                        if result.is_ok() {
                            entry.pending = None;
                            guard.insert_visible(entry);
                        }
                    }
                    drop(guard);
                    // Takeable from now on; the engine that added it wakes the workers once it
                    // has announced it (`WorkWatch`).
                    let _ = tell.send(result.clone());
                });
                Some(
                    self.committer
                        .submit_durable(writes, counter, Some(publish)),
                )
            }
        };
        wait(own).await?;
        for pending in earlier {
            pending.await?;
        }
        Ok(added)
    }

    pub(super) async fn take(
        &self,
        queue: &str,
        request: TakeRequest,
        now: Millis,
    ) -> Result<Take, StoreError> {
        let index = self.queue(queue);
        let mut guard = index.lock();
        if guard.paused {
            return Ok(Take::Empty);
        }
        let choice = match guard.lanes.pick(request.groups, now) {
            Pick::Job(choice) => choice,
            Pick::Empty => return Ok(Take::Empty),
            Pick::RateLimited(until) => return Ok(Take::RateLimited { until }),
        };
        let id = choice.key.2.clone();
        if let Err(until) = guard.rate.admit(request.limit, now) {
            return Ok(Take::RateLimited { until });
        }
        guard.lanes.commit(&choice, request.groups, now);
        let kept = guard
            .jobs
            .get_mut(&id)
            .and_then(|entry| entry.unread_spec.take());
        let spec = match kept {
            Some(spec) => spec,
            None => self.read_spec(queue, &id)?,
        };
        let token = self.next_token();
        let mut writes = Vec::with_capacity(1);
        let status = guard
            .update(&id, |status| {
                status.state = JobState::Active;
                status.entered_at = now;
                status.token = token;
                status.processed_at = Some(now);
            })
            .cloned();
        let Some(status) = status else {
            return Ok(Take::Empty);
        };
        put_status(&mut writes, queue, &id, &status)?;
        self.committer.submit(writes, 0);
        guard
            .leases
            .grant(id.clone(), token, now.saturating_add(request.lease_ms));
        Ok(Take::Job(Box::new(TakenJob {
            id: id.to_string(),
            spec,
            attempts_made: status.attempts_made,
            token,
            ready_at: status.ready_at,
            more_waiting: !guard.set(JobState::Waiting).is_empty(),
        })))
    }

    pub(super) async fn promote_due(
        &self,
        queue: &str,
        now: Millis,
    ) -> Result<Vec<String>, StoreError> {
        let index = self.queue(queue);
        let mut guard = index.lock();
        let due: Vec<Arc<str>> = guard
            .set(JobState::Delayed)
            .iter()
            .take_while(|(ready_at, _, _)| *ready_at <= now)
            .map(|(_, _, id)| id.clone())
            .collect();
        let mut writes = Vec::with_capacity(due.len());
        let mut counter = 0;
        for id in &due {
            let order = self.next_order();
            counter = order;
            let status = guard.update(id, |status| {
                status.state = JobState::Waiting;
                // It has been ready since it was due, however late the timer got to it.
                status.entered_at = status.ready_at;
                status.order = order;
            });
            if let Some(status) = status {
                put_status(&mut writes, queue, id, status)?;
            }
        }
        self.committer.submit(writes, counter);
        if !due.is_empty() {
            self.watches.wake(queue);
        }
        Ok(due.iter().map(|id| id.to_string()).collect())
    }

    pub(super) async fn next_due(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        let index = self.queue(queue);
        let guard = index.lock();
        Ok(guard.set(JobState::Delayed).first().map(|(at, _, _)| *at))
    }

    pub(super) async fn complete(
        &self,
        queue: &str,
        request: Complete,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let Complete {
            id,
            token,
            return_value,
            keep,
        } = request;
        let id = id.as_str();
        let index = self.queue(queue);
        let mut guard = index.lock();
        let owned = guard.owns(id, token);
        if !owned {
            return Ok(false);
        }
        let mut writes = Vec::with_capacity(2);
        if keep == KeepJobs::NONE {
            if let Some(entry) = guard.remove(id) {
                delete_job(&mut writes, queue, id, &entry.status);
            }
        } else {
            if let Some(status) = guard.update(id, |status| {
                status.state = JobState::Completed;
                status.entered_at = now;
                status.attempts_made += 1;
                status.finished_at = Some(now);
                status.return_value = Some(return_value);
                status.token = 0;
            }) {
                put_status(&mut writes, queue, id, status)?;
            }
            trim_state(
                &mut guard,
                &mut writes,
                queue,
                JobState::Completed,
                keep,
                now,
                MAX_INLINE_TRIM,
            );
        }
        self.committer.submit(writes, 0);
        if guard.take_freed() {
            self.watches.wake(queue);
        }
        Ok(true)
    }

    pub(super) async fn fail(
        &self,
        queue: &str,
        request: Fail,
        now: Millis,
    ) -> Result<FailOutcome, StoreError> {
        let Fail {
            id,
            token,
            reason,
            stack,
            retry_at,
            keep,
        } = request;
        let id = id.as_str();
        let index = self.queue(queue);
        let mut guard = index.lock();
        let owned = guard.owns(id, token);
        if !owned {
            return Ok(FailOutcome::Stale);
        }
        let order = self.next_order();
        let mut writes = Vec::with_capacity(2);
        let outcome = match retry_at {
            Some(at) => FailOutcome::Retrying { at },
            None => FailOutcome::Failed,
        };
        let removed = retry_at.is_none() && keep == KeepJobs::NONE;
        if removed {
            if let Some(entry) = guard.remove(id) {
                delete_job(&mut writes, queue, id, &entry.status);
            }
        } else if let Some(status) = guard.update(id, |status| {
            status.attempts_made += 1;
            status.token = 0;
            status.failed_reason = Some(reason);
            status.stacktrace.push(stack);
            // Keep the newest traces only: a job retried forever must not grow without bound.
            if status.stacktrace.len() > 10 {
                status.stacktrace.remove(0);
            }
            match retry_at {
                Some(at) if at > now => {
                    status.state = JobState::Delayed;
                    status.entered_at = now;
                    status.ready_at = at;
                    status.order = order;
                }
                Some(_) => {
                    status.state = JobState::Waiting;
                    status.entered_at = now;
                    status.ready_at = now;
                    status.order = order;
                }
                None => {
                    status.state = JobState::Failed;
                    status.entered_at = now;
                    status.finished_at = Some(now);
                }
            }
        }) {
            put_status(&mut writes, queue, id, status)?;
        }
        if retry_at.is_none() && !removed {
            trim_state(
                &mut guard,
                &mut writes,
                queue,
                JobState::Failed,
                keep,
                now,
                MAX_INLINE_TRIM,
            );
        }
        self.committer.submit(writes, order);
        if guard.take_freed() {
            self.watches.wake(queue);
        }
        if matches!(outcome, FailOutcome::Retrying { at } if at <= now) {
            self.watches.wake(queue);
        }
        Ok(outcome)
    }

    pub(super) async fn stall(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        max_stalled: u32,
        now: Millis,
    ) -> Result<Option<JobState>, StoreError> {
        let index = self.queue(queue);
        let mut guard = index.lock();
        let owned = guard.owns(id, token);
        if !owned {
            return Ok(None);
        }
        let mut writes = Vec::with_capacity(1);
        let state = stall_entry(&mut guard, &mut writes, queue, id, max_stalled, now)?;
        // No new position to count: the job keeps its old one.
        self.committer.submit(writes, 0);
        if guard.take_freed() {
            self.watches.wake(queue);
        }
        if state == Some(JobState::Waiting) {
            self.watches.wake(queue);
        }
        Ok(state)
    }

    pub(super) async fn renew(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        until: Millis,
    ) -> Result<bool, StoreError> {
        let index = self.queue(queue);
        let mut guard = index.lock();
        if !guard.owns(id, token) {
            return Ok(false);
        }
        guard.leases.grant(Arc::from(id), token, until);
        Ok(true)
    }

    pub(super) async fn expire_leases(
        &self,
        queue: &str,
        now: Millis,
        max_stalled: u32,
    ) -> Result<Vec<Expired>, StoreError> {
        let index = self.queue(queue);
        let (writes, expired) = {
            let mut guard = index.lock();
            let lapsed: Vec<Arc<str>> = guard
                .active()
                .into_iter()
                .filter(|(id, token)| guard.leases.lapsed(id, *token, now))
                .map(|(id, _)| id)
                .collect();
            let mut writes = Vec::with_capacity(lapsed.len());
            let mut expired = Vec::with_capacity(lapsed.len());
            for id in &lapsed {
                guard.leases.end(id);
                if let Some(state) =
                    stall_entry(&mut guard, &mut writes, queue, id, max_stalled, now)?
                {
                    expired.push(Expired {
                        id: id.to_string(),
                        state,
                    });
                }
            }
            let active: HashMap<Arc<str>, u64> = guard.active().into_iter().collect();
            guard
                .leases
                .retain(|id, token| active.get(id) == Some(&token));
            if guard.take_freed() {
                self.watches.wake(queue);
            }
            if expired.is_empty() {
                return Ok(expired);
            }
            (self.submit(writes, 0), expired)
        };
        wait(writes).await?;
        if expired.iter().any(|job| job.state == JobState::Waiting) {
            self.watches.wake(queue);
        }
        Ok(expired)
    }

    pub(super) async fn next_lease_expiry(
        &self,
        queue: &str,
    ) -> Result<Option<Millis>, StoreError> {
        let index = self.queue(queue);
        let guard = index.lock();
        Ok(guard
            .active()
            .iter()
            .map(|(id, token)| guard.leases.until(id, *token))
            .min())
    }

    pub(super) async fn release(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let index = self.queue(queue);
        let writes = {
            let mut guard = index.lock();
            let owned = guard.owns(id, token);
            if !owned {
                return Ok(false);
            }
            let mut writes = Vec::with_capacity(1);
            // Back in its old place, as a stalled job (`stall_entry`).
            if let Some(status) = guard.update(id, |status| {
                status.state = JobState::Waiting;
                status.entered_at = now;
                status.token = 0;
                status.ready_at = now;
            }) {
                put_status(&mut writes, queue, id, status)?;
            }
            // Released jobs wake a worker below; a freed group slot is part of that.
            guard.take_freed();
            self.submit(writes, 0)
        };
        wait(writes).await?;
        self.watches.wake(queue);
        Ok(true)
    }

    pub(super) async fn owns(&self, queue: &str, id: &str, token: u64) -> Result<bool, StoreError> {
        Ok(self.queue(queue).lock().owns(id, token))
    }

    pub(super) async fn force_fail(
        &self,
        queue: &str,
        id: &str,
        reason: String,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let index = self.queue(queue);
        let writes = {
            let mut guard = index.lock();
            let active = guard.is_in(id, JobState::Active);
            if !active {
                return Ok(false);
            }
            let mut writes = Vec::with_capacity(1);
            if let Some(status) = guard.update(id, |status| {
                status.state = JobState::Failed;
                status.entered_at = now;
                status.token = 0;
                status.attempts_made += 1;
                status.finished_at = Some(now);
                status.stacktrace.push(reason.clone());
                status.failed_reason = Some(reason);
            }) {
                put_status(&mut writes, queue, id, status)?;
            }
            if guard.take_freed() {
                self.watches.wake(queue);
            }
            self.submit(writes, 0)
        };
        wait(writes).await?;
        Ok(true)
    }

    pub(super) async fn progress(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        progress: String,
    ) -> Result<bool, StoreError> {
        let index = self.queue(queue);
        let mut guard = index.lock();
        let owned = guard.owns(id, token);
        if !owned {
            return Ok(false);
        }
        // Memory only: the job's next transition writes its whole status, progress included.
        // Progress is not durable anyway, and a job running when the process dies runs again
        // from the start; a write per update cost more than the rest of a short job.
        guard.update(id, |status| status.progress = progress);
        Ok(true)
    }

    pub(super) async fn log(
        &self,
        queue: &str,
        id: &str,
        line: String,
    ) -> Result<bool, StoreError> {
        let index = self.queue(queue);
        let mut guard = index.lock();
        let mut writes = Vec::with_capacity(2);
        let Some(status) = guard.update(id, |status| status.log_count += 1) else {
            return Ok(false);
        };
        let n = status.log_count - 1;
        put_status(&mut writes, queue, id, status)?;
        writes.push(Write::Put(log_key(queue, id, n), encode(&line)?));
        self.committer.submit(writes, 0);
        Ok(true)
    }
}
