//! The Redis job store (cargo feature `redis`): job queues that several Courier instances share.
//!
//! Every state transition is one Lua script ([`scripts`]), so it is atomic on the server and
//! nothing the engine relies on lives in process memory: priorities, FIFO/LIFO, delays, leases
//! (tokens and expiries), rate windows, group turns and limits, jobId dedupe, retention,
//! progress and logs are all keys of the queue. The keys of a queue share the hash tag
//! `{<prefix>:<queue>}`, so they sit in one Cluster slot and a script may touch them all:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `job:<id>` | hash | the spec (JSON) and the status fields of one job |
//! | `logs:<id>` | list | its log lines |
//! | `waiting`, `delayed`, `active`, `completed`, `failed` | sorted set | the jobs in each state, in line order: member = 16-digit position + id; score = priority class (waiting: priority × 2, LIFO before FIFO, a LIFO job's position counting down), due time, start or finish |
//! | `lane:u`, `lane:g:<group>` | sorted set | waiting jobs without a group, and of each group |
//! | `ring` (+ `ringset`) | list (+ set) | lanes with waiting jobs, in turn order |
//! | `gactive` | hash | active jobs per group |
//! | `leases` | sorted set | lease expiry of each active job |
//! | `wready` | sorted set | when each waiting job became ready (`oldest_waiting`) |
//! | `rate`, `grate:<group>` | hash | the queue's and each group's rate window |
//! | `order`, `token` | string | counters of positions (and automatic ids) and attempt tokens |
//! | `meta` | hash | `paused` |
//!
//! Wake-ups cross instances by pub/sub: a transition that makes a job takeable (an add too)
//! wakes this instance's idle workers and publishes the instance's id on the queue's channel
//! `{<prefix>:<queue>}:wake`; one task per store listens on `{<prefix>:*}:wake` and wakes the
//! local workers of the queue named, ignoring its own messages. Pub/sub may drop a message (a
//! reconnection), so the watches are lossy: idle workers look again every second anyway, and
//! after a reconnection every watch is woken once.

mod record;
mod scripts;
mod server;
mod wakeups;

pub use self::server::Durability;
use self::wakeups::Listener;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script, ScriptInvocation, Value};
use tokio::sync::OnceCell;

use self::scripts::SCRIPTS;
use super::job::{
    Added, Complete, Counts, Expired, Fail, FailOutcome, Job, JobPage, JobState, KeepJobs, Millis,
    NewJob, RateLimit, Take, TakeRequest, TakenJob,
};
use super::{
    JobBackend, JobStore, RemovedIds, RemovedOutcome, StorageStats, StoreError, WorkWatch,
};

/// The key prefix of a server's queues (before the queue name, inside the hash tag).
pub const DEFAULT_PREFIX: &str = "courier";

/// How long an idle worker waits for a wake-up before it looks again: what a job may wait at
/// most when its pub/sub message was lost.
const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// The longest pause between two attempts of the wake-up listener to subscribe again.
const MAX_RESUBSCRIBE_DELAY: Duration = Duration::from_secs(5);

/// How long one command or script may take before the call is answered as unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting may take, at start-up and on each reconnection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens the job store on the Redis server `backend` names, with the default key prefix.
pub fn open(backend: &JobBackend) -> Result<Arc<dyn JobStore>, StoreError> {
    let JobBackend::Redis { url } = backend else {
        return Err(StoreError::Unsupported(
            "the Redis job store needs a Redis backend".to_owned(),
        ));
    };
    Ok(Arc::new(RedisJobStore::open(url, DEFAULT_PREFIX)?))
}

/// A [`JobStore`] on a Redis server; see the module documentation.
pub struct RedisJobStore {
    client: redis::Client,
    /// Connected on first use, on the runtime of that use (opening is blocking and may run
    /// outside any runtime); it reconnects by itself after a drop.
    connection: OnceCell<ConnectionManager>,
    prefix: String,
    durability: Durability,
    watches: Arc<Mutex<HashMap<String, WorkWatch>>>,
    /// Identifies this store's wake-up messages, so its listener skips them.
    instance: String,
    /// Whether the wake-up listener was started (by the first `watch` inside a runtime).
    listening: std::sync::atomic::AtomicBool,
    /// Stops the listener when the store goes.
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for RedisJobStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RedisJobStore {
    /// Checks that the server at `url` answers (blocking, at most a few seconds) and reads how
    /// durable its writes are; keys go under `{<prefix>:<queue>}`. Unreachable is
    /// [`StoreError::Unavailable`] with a message naming the server (its password hidden).
    pub fn open(url: &str, prefix: &str) -> Result<RedisJobStore, StoreError> {
        let shown = redact(url);
        let client = redis::Client::open(url).map_err(|err| {
            StoreError::Unsupported(format!("REDIS_URL {shown} is not a Redis URL: {err}"))
        })?;
        let durability = server::check(&client, &shown)?;
        Ok(RedisJobStore {
            client,
            connection: OnceCell::new(),
            prefix: prefix.to_owned(),
            durability,
            watches: Arc::default(),
            instance: format!("{:016x}", rand::random::<u64>()),
            listening: std::sync::atomic::AtomicBool::new(false),
            stop: tokio_util::sync::CancellationToken::new(),
        })
    }

    /// What an acknowledged write survives on this server.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let connection = self
            .connection
            .get_or_try_init(|| {
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT));
                ConnectionManager::new_with_config(self.client.clone(), config)
            })
            .await
            .map_err(store_error)?;
        Ok(connection.clone())
    }

    /// The key of `name` in `queue` (`{courier:queue}:name`).
    fn key(&self, queue: &str, name: &str) -> String {
        format!("{{{}:{}}}:{}", self.prefix, queue, name)
    }

    /// Runs `script` on `queue` (its `meta` key first, so Cluster routes it to the queue's slot).
    async fn run<T: redis::FromRedisValue>(
        &self,
        queue: &str,
        script: &Script,
        args: impl FnOnce(&mut ScriptInvocation<'_>),
    ) -> Result<T, StoreError> {
        let mut connection = self.connection().await?;
        let mut invocation = script.key(self.key(queue, "meta"));
        args(&mut invocation);
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(store_error)
    }

    /// Wakes the idle workers of `queue` here, and tells the other instances.
    fn wake(&self, queue: &str) {
        self.watch(queue).wake();
        self.publish(queue);
    }

    fn wake_if(&self, queue: &str, wake: bool) {
        if wake {
            self.wake(queue);
        }
    }

    /// Publishes this instance's id on `queue`'s wake-up channel, without waiting: a lost
    /// message costs a re-check interval, never a job.
    fn publish(&self, queue: &str) {
        let (Some(connection), Ok(runtime)) =
            (self.connection.get(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let mut connection = connection.clone();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(self.key(queue, "wake")).arg(&self.instance);
        runtime.spawn(async move {
            let _: Result<u64, RedisError> = publish.query_async(&mut connection).await;
        });
    }

    /// Starts the wake-up listener on the current runtime, once.
    fn listen(&self) {
        use std::sync::atomic::Ordering;
        if self.listening.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.listening.swap(true, Ordering::AcqRel) {
            return;
        }
        let listener = Listener {
            client: self.client.clone(),
            tag: format!("{{{}:", self.prefix),
            instance: self.instance.clone(),
            watches: self.watches.clone(),
        };
        let stop = self.stop.clone();
        runtime.spawn(async move {
            tokio::select! {
                () = listener.run() => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

use super::redact_url as redact;

/// Connection trouble is "try again later"; anything else the server said is a fault.
fn store_error(err: RedisError) -> StoreError {
    if err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
    {
        StoreError::unavailable(format!("redis is unreachable: {err}"), err)
    } else {
        StoreError::fault(format!("redis refused a command: {err}"), err)
    }
}

fn codec(message: impl Into<String>) -> StoreError {
    StoreError::Codec(message.into())
}

/// A retention as script arguments: count and age, `-1` for no limit.
fn keep_args(keep: KeepJobs) -> (i64, i64) {
    let limit = |value: Option<u64>| value.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    (limit(keep.count), limit(keep.age_ms))
}

/// A rate limit as script arguments: max and window, `-1` for none.
fn rate_args(limit: Option<RateLimit>) -> (i64, u64) {
    match limit {
        Some(limit) => (i64::from(limit.max), limit.duration_ms),
        None => (-1, 0),
    }
}

fn text(value: &Value) -> Result<String, StoreError> {
    redis::from_redis_value_ref::<String>(value).map_err(|err| codec(err.to_string()))
}

fn number(value: &Value) -> Result<u64, StoreError> {
    redis::from_redis_value_ref::<u64>(value).map_err(|err| codec(err.to_string()))
}

fn state(text: &str) -> Result<JobState, StoreError> {
    JobState::parse(text).ok_or_else(|| codec(format!("unknown job state {text:?}")))
}

/// A `{flag, wake}` reply.
fn flag_and_wake(reply: &[u64]) -> (bool, bool) {
    (
        reply.first() == Some(&1),
        reply.get(1).is_some_and(|wake| *wake == 1),
    )
}

#[async_trait]
impl JobStore for RedisJobStore {
    async fn add(
        &self,
        queue: &str,
        jobs: Vec<NewJob>,
        now: Millis,
    ) -> Result<Vec<Added>, StoreError> {
        let mut specs = Vec::with_capacity(jobs.len());
        for job in &jobs {
            specs.push(record::spec_json(job, now)?);
        }
        let reply: Vec<Value> = self
            .run(queue, &SCRIPTS.add, |call| {
                call.arg(now);
                for (job, spec) in jobs.iter().zip(&specs) {
                    call.arg(job.opts.job_id.as_deref().unwrap_or(""))
                        .arg(job.opts.delay_ms)
                        .arg(job.opts.priority.unwrap_or(u32::MAX))
                        .arg(u8::from(job.opts.lifo))
                        .arg(u8::from(job.opts.group.is_some()))
                        .arg(job.opts.group.as_deref().unwrap_or(""))
                        .arg(spec.as_str());
                }
            })
            .await?;
        let added = reply
            .chunks(3)
            .map(|added| match added {
                [id, existed, found] => Ok(Added {
                    id: text(id)?,
                    existed: number(existed)? == 1,
                    state: state(&text(found)?)?,
                }),
                _ => Err(codec("add: short reply")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The engine that added wakes this instance's workers once it has announced the jobs
        // (`WorkWatch`); the other instances hear of them now.
        if added
            .iter()
            .any(|job| !job.existed && job.state == JobState::Waiting)
        {
            self.publish(queue);
        }
        Ok(added)
    }

    async fn take(
        &self,
        queue: &str,
        request: TakeRequest,
        now: Millis,
    ) -> Result<Take, StoreError> {
        let (rate_max, rate_ms) = rate_args(request.limit);
        let (group_rate_max, group_rate_ms) = rate_args(request.groups.rate);
        let group_limit = request.groups.concurrency.map_or(-1, i64::from);
        let reply: Vec<Value> = self
            .run(queue, &SCRIPTS.take, |call| {
                call.arg(now)
                    .arg(request.lease_ms)
                    .arg(rate_max)
                    .arg(rate_ms)
                    .arg(group_limit)
                    .arg(group_rate_max)
                    .arg(group_rate_ms);
            })
            .await?;
        let kind = reply.first().map(text).transpose()?.unwrap_or_default();
        match (kind.as_str(), reply.as_slice()) {
            ("empty", _) => Ok(Take::Empty),
            ("limited", [_, until]) => Ok(Take::RateLimited {
                until: text(until)?.parse().map_err(|_| codec("take: bad time"))?,
            }),
            ("job", [_, id, spec, attempts, token, ready, more]) => {
                let parse = |value: &Value| -> Result<u64, StoreError> {
                    text(value)?.parse().map_err(|_| codec("take: bad number"))
                };
                Ok(Take::Job(Box::new(TakenJob {
                    id: text(id)?,
                    spec: record::parse_spec(&text(spec)?)?,
                    attempts_made: u32::try_from(parse(attempts)?).unwrap_or(u32::MAX),
                    token: parse(token)?,
                    ready_at: parse(ready)?,
                    more_waiting: number(more)? == 1,
                })))
            }
            _ => Err(codec(format!("take: unexpected reply {reply:?}"))),
        }
    }

    async fn renew(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        until: Millis,
    ) -> Result<bool, StoreError> {
        let renewed: u64 = self
            .run(queue, &SCRIPTS.renew, |call| {
                call.arg(id).arg(token).arg(until);
            })
            .await?;
        Ok(renewed == 1)
    }

    async fn expire_leases(
        &self,
        queue: &str,
        now: Millis,
        max_stalled: u32,
    ) -> Result<Vec<Expired>, StoreError> {
        let reply: Vec<Value> = self
            .run(queue, &SCRIPTS.expire_leases, |call| {
                call.arg(now).arg(max_stalled);
            })
            .await?;
        let Some((wake, pairs)) = reply.split_first() else {
            return Err(codec("expire_leases: empty reply"));
        };
        let expired = pairs
            .chunks(2)
            .map(|pair| match pair {
                [id, found] => Ok(Expired {
                    id: text(id)?,
                    state: state(&text(found)?)?,
                }),
                _ => Err(codec("expire_leases: short reply")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.wake_if(queue, number(wake)? == 1);
        Ok(expired)
    }

    async fn next_lease_expiry(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        self.first_score(queue, "leases").await
    }

    async fn promote_due(&self, queue: &str, now: Millis) -> Result<Vec<String>, StoreError> {
        let promoted: Vec<String> = self
            .run(queue, &SCRIPTS.promote_due, |call| {
                call.arg(now);
            })
            .await?;
        self.wake_if(queue, !promoted.is_empty());
        Ok(promoted)
    }

    async fn next_due(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        self.first_score(queue, "delayed").await
    }

    async fn complete(
        &self,
        queue: &str,
        request: Complete,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let (count, age) = keep_args(request.keep);
        let reply: Vec<u64> = self
            .run(queue, &SCRIPTS.complete, |call| {
                call.arg(&request.id)
                    .arg(request.token)
                    .arg(&request.return_value)
                    .arg(count)
                    .arg(age)
                    .arg(now);
            })
            .await?;
        let (done, wake) = flag_and_wake(&reply);
        self.wake_if(queue, wake);
        Ok(done)
    }

    async fn fail(
        &self,
        queue: &str,
        request: Fail,
        now: Millis,
    ) -> Result<FailOutcome, StoreError> {
        let (count, age) = keep_args(request.keep);
        let retry_at = request
            .retry_at
            .map_or(-1, |at| i64::try_from(at).unwrap_or(i64::MAX));
        let reply: Vec<Value> = self
            .run(queue, &SCRIPTS.fail, |call| {
                call.arg(&request.id)
                    .arg(request.token)
                    .arg(&request.reason)
                    .arg(&request.stack)
                    .arg(retry_at)
                    .arg(count)
                    .arg(age)
                    .arg(now);
            })
            .await?;
        let [outcome, wake] = reply.as_slice() else {
            return Err(codec("fail: short reply"));
        };
        self.wake_if(queue, number(wake)? == 1);
        match (text(outcome)?.as_str(), request.retry_at) {
            ("stale", _) => Ok(FailOutcome::Stale),
            ("retrying", Some(at)) => Ok(FailOutcome::Retrying { at }),
            _ => Ok(FailOutcome::Failed),
        }
    }

    async fn stall(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        max_stalled: u32,
        now: Millis,
    ) -> Result<Option<JobState>, StoreError> {
        let reply: Vec<Value> = self
            .run(queue, &SCRIPTS.stall, |call| {
                call.arg(id).arg(token).arg(max_stalled).arg(now);
            })
            .await?;
        let [found, wake] = reply.as_slice() else {
            return Err(codec("stall: short reply"));
        };
        self.wake_if(queue, number(wake)? == 1);
        let found = text(found)?;
        if found.is_empty() {
            return Ok(None);
        }
        Ok(Some(state(&found)?))
    }

    async fn release(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let released: u64 = self
            .run(queue, &SCRIPTS.release, |call| {
                call.arg(id).arg(token).arg(now);
            })
            .await?;
        self.wake_if(queue, released == 1);
        Ok(released == 1)
    }

    async fn owns(&self, queue: &str, id: &str, token: u64) -> Result<bool, StoreError> {
        let mut connection = self.connection().await?;
        let (found, held): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(self.key(queue, &format!("job:{id}")))
            .arg("state")
            .arg("token")
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        Ok(found.as_deref() == Some("active") && held == Some(token.to_string()))
    }

    async fn force_fail(
        &self,
        queue: &str,
        id: &str,
        reason: String,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let reply: Vec<u64> = self
            .run(queue, &SCRIPTS.force_fail, |call| {
                call.arg(id).arg(&reason).arg(now);
            })
            .await?;
        let (failed, wake) = flag_and_wake(&reply);
        self.wake_if(queue, wake);
        Ok(failed)
    }

    async fn progress(
        &self,
        queue: &str,
        id: &str,
        token: u64,
        progress: String,
    ) -> Result<bool, StoreError> {
        let recorded: u64 = self
            .run(queue, &SCRIPTS.progress, |call| {
                call.arg(id).arg(token).arg(&progress);
            })
            .await?;
        Ok(recorded == 1)
    }

    async fn log(&self, queue: &str, id: &str, line: String) -> Result<bool, StoreError> {
        let logged: u64 = self
            .run(queue, &SCRIPTS.log, |call| {
                call.arg(id).arg(&line);
            })
            .await?;
        Ok(logged == 1)
    }

    async fn logs(&self, queue: &str, id: &str) -> Result<Vec<String>, StoreError> {
        let mut connection = self.connection().await?;
        redis::cmd("LRANGE")
            .arg(self.key(queue, &format!("logs:{id}")))
            .arg(0)
            .arg(-1)
            .query_async(&mut connection)
            .await
            .map_err(store_error)
    }

    async fn get(&self, queue: &str, id: &str) -> Result<Option<Job>, StoreError> {
        let mut connection = self.connection().await?;
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key(queue, &format!("job:{id}")))
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        if fields.is_empty() {
            return Ok(None);
        }
        record::job(queue, id, &fields).map(Some)
    }

    async fn counts(&self, queue: &str) -> Result<Counts, StoreError> {
        let mut connection = self.connection().await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for state in JobState::ALL {
            pipe.cmd("ZCARD").arg(self.key(queue, state.as_str()));
        }
        let sizes: Vec<u64> = pipe
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        let mut counts = Counts::default();
        for (state, size) in JobState::ALL.into_iter().zip(sizes) {
            *counts.get_mut(state) = size;
        }
        Ok(counts)
    }

    async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: u64,
        limit: u64,
    ) -> Result<JobPage, StoreError> {
        let mut connection = self.connection().await?;
        let key = self.key(queue, state.as_str());
        if limit == 0 {
            let total: u64 = redis::cmd("ZCARD")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .map_err(store_error)?;
            return Ok(JobPage {
                jobs: Vec::new(),
                total,
            });
        }
        let last = offset.saturating_add(limit - 1).min(i64::MAX as u64);
        let (total, members): (u64, Vec<String>) = redis::pipe()
            .atomic()
            .cmd("ZCARD")
            .arg(&key)
            .cmd("ZRANGE")
            .arg(&key)
            .arg(offset.min(i64::MAX as u64))
            .arg(last)
            .arg("REV")
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        let ids = members
            .iter()
            .map(|member| record::id_of(member))
            .collect::<Result<Vec<_>, _>>()?;
        if ids.is_empty() {
            // redis-rs refuses a pipeline of no commands.
            return Ok(JobPage {
                jobs: Vec::new(),
                total,
            });
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL")
                .arg(self.key(queue, &format!("job:{id}")));
        }
        let hashes: Vec<HashMap<String, String>> = pipe
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        let mut jobs = Vec::with_capacity(ids.len());
        for (id, fields) in ids.iter().zip(&hashes) {
            // A job removed since the page was read is left out, as it would be a moment later.
            if !fields.is_empty() {
                jobs.push(record::job(queue, id, fields)?);
            }
        }
        Ok(JobPage { jobs, total })
    }

    async fn retry(&self, queue: &str, id: &str, now: Millis) -> Result<bool, StoreError> {
        let retried: u64 = self
            .run(queue, &SCRIPTS.retry, |call| {
                call.arg(id).arg(now);
            })
            .await?;
        self.wake_if(queue, retried > 0);
        Ok(retried > 0)
    }

    async fn retry_all_failed(&self, queue: &str, now: Millis) -> Result<u64, StoreError> {
        let retried: u64 = self
            .run(queue, &SCRIPTS.retry, |call| {
                call.arg("").arg(now);
            })
            .await?;
        self.wake_if(queue, retried > 0);
        Ok(retried)
    }

    async fn promote(&self, queue: &str, id: &str, now: Millis) -> Result<bool, StoreError> {
        let promoted: u64 = self
            .run(queue, &SCRIPTS.promote, |call| {
                call.arg(id).arg(now);
            })
            .await?;
        self.wake_if(queue, promoted == 1);
        Ok(promoted == 1)
    }

    async fn remove(&self, queue: &str, id: &str) -> Result<RemovedOutcome, StoreError> {
        let reply: Vec<Value> = self
            .run(queue, &SCRIPTS.remove, |call| {
                call.arg(id);
            })
            .await?;
        match reply.first().map(text).transpose()?.as_deref() {
            Some("removed") => Ok(RemovedOutcome::Removed),
            Some("active") => Ok(RemovedOutcome::Active),
            _ => Ok(RemovedOutcome::NotFound),
        }
    }

    async fn clean(
        &self,
        queue: &str,
        state: JobState,
        grace_ms: u64,
        limit: u64,
        now: Millis,
    ) -> Result<RemovedIds, StoreError> {
        self.run(queue, &SCRIPTS.clean, |call| {
            call.arg(state.as_str()).arg(grace_ms).arg(limit).arg(now);
        })
        .await
    }

    async fn drain(&self, queue: &str, include_delayed: bool) -> Result<u64, StoreError> {
        self.run(queue, &SCRIPTS.drain, |call| {
            call.arg(u8::from(include_delayed));
        })
        .await
    }

    async fn trim(
        &self,
        queue: &str,
        keep_completed: KeepJobs,
        keep_failed: KeepJobs,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let (completed_count, completed_age) = keep_args(keep_completed);
        let (failed_count, failed_age) = keep_args(keep_failed);
        let reply: Vec<u64> = self
            .run(queue, &SCRIPTS.trim, |call| {
                call.arg(completed_count)
                    .arg(completed_age)
                    .arg(failed_count)
                    .arg(failed_age)
                    .arg(now);
            })
            .await?;
        self.wake_if(queue, reply.get(1) == Some(&1));
        Ok(reply.first().copied().unwrap_or(0))
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), StoreError> {
        let _: u64 = self
            .run(queue, &SCRIPTS.set_paused, |call| {
                call.arg(u8::from(paused));
            })
            .await?;
        self.wake_if(queue, !paused);
        Ok(())
    }

    async fn is_paused(&self, queue: &str) -> Result<bool, StoreError> {
        let mut connection = self.connection().await?;
        let paused: Option<String> = redis::cmd("HGET")
            .arg(self.key(queue, "meta"))
            .arg("paused")
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        Ok(paused.as_deref() == Some("1"))
    }

    async fn oldest_waiting(&self, queue: &str) -> Result<Option<Millis>, StoreError> {
        self.first_score(queue, "wready").await
    }

    fn watch(&self, queue: &str) -> WorkWatch {
        self.listen();
        self.watches
            .lock()
            .entry(queue.to_owned())
            .or_insert_with(|| WorkWatch::lossy(RECHECK_AFTER))
            .clone()
    }

    /// Nothing to flush: each write was as durable as the server makes it when it returned.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn stats(&self) -> Option<&dyn StorageStats> {
        Some(self)
    }
}

/// The health report shows the server's durability; the size is the server's business.
impl StorageStats for RedisJobStore {
    fn size_on_disk(&self) -> Option<u64> {
        None
    }

    fn durability(&self) -> Option<&'static str> {
        Some(self.durability.as_str())
    }
}

impl RedisJobStore {
    /// The lowest score in the sorted set `name` of `queue`.
    async fn first_score(&self, queue: &str, name: &str) -> Result<Option<Millis>, StoreError> {
        let mut connection = self.connection().await?;
        let first: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.key(queue, name))
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut connection)
            .await
            .map_err(store_error)?;
        Ok(first.first().map(|(_, score)| score.max(0.0) as Millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_server_is_unavailable_and_named() {
        let Err(err) = RedisJobStore::open("redis://:secret@127.0.0.1:1/", "t") else {
            panic!("nothing listens on port 1");
        };
        assert!(err.is_retryable(), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("cannot reach Redis at redis://"),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");
    }
}
