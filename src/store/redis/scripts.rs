//! The Lua scripts of the Redis job store: one per state transition, so each is atomic on the
//! server (Redis runs a script start to finish with nothing in between), as Bull's are.
//!
//! Each is the shared prelude (`prelude.lua`: key names, indexes, helpers) followed by its body.
//! [`Script`] hashes it once and calls it by SHA (`EVALSHA`), loading it when the server does
//! not know it yet (a restart, a failover). `KEYS[1]` is always the queue's `meta` hash.

use std::sync::LazyLock;

use redis::Script;

const PRELUDE: &str = include_str!("prelude.lua");

/// A script with the `#!lua` shebang (Redis 7.0+): on a Cluster the server then refuses any
/// command of it on a key outside the slot of its first key, so a key built outside the queue's
/// hash tag fails every test rather than only a multi-node deployment (the test server runs in
/// cluster mode for that). Without flags it is also refused while the server is out of memory.
fn script(body: &str) -> Script {
    Script::new(&format!("#!lua\n{PRELUDE}\n{body}"))
}

/// Every script, built once per process.
pub(super) struct Scripts {
    pub(super) add: Script,
    pub(super) take: Script,
    pub(super) renew: Script,
    pub(super) expire_leases: Script,
    pub(super) promote_due: Script,
    pub(super) complete: Script,
    pub(super) fail: Script,
    pub(super) stall: Script,
    pub(super) release: Script,
    pub(super) force_fail: Script,
    pub(super) progress: Script,
    pub(super) log: Script,
    pub(super) retry: Script,
    pub(super) promote: Script,
    pub(super) remove: Script,
    pub(super) clean: Script,
    pub(super) drain: Script,
    pub(super) trim: Script,
    pub(super) set_paused: Script,
}

pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    add: script(ADD),
    take: script(TAKE),
    renew: script(RENEW),
    expire_leases: script(EXPIRE_LEASES),
    promote_due: script(PROMOTE_DUE),
    complete: script(COMPLETE),
    fail: script(FAIL),
    stall: script(STALL),
    release: script(RELEASE),
    force_fail: script(FORCE_FAIL),
    progress: script(PROGRESS),
    log: script(LOG),
    retry: script(RETRY),
    promote: script(PROMOTE),
    remove: script(REMOVE),
    clean: script(CLEAN),
    drain: script(DRAIN),
    trim: script(TRIM),
    set_paused: script(SET_PAUSED),
});

/// ARGV: now, then per job: job id ('' for automatic), delay, priority rank, lifo (0/1), has a
/// group (0/1), group, spec (JSON). Returns per job: id, existed (0/1), state.
const ADD: &str = r#"
local now = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 7 do
  local job_id, delay = ARGV[i], tonumber(ARGV[i + 1])
  local existing = nil
  if job_id ~= '' then existing = redis.call('HGET', jkey(job_id), 'state') end
  if existing then
    table.insert(out, job_id); table.insert(out, 1); table.insert(out, existing)
  else
    local order = next_order()
    local id = job_id
    if id == '' then
      local number = order
      while redis.call('EXISTS', jkey(num(number))) == 1 do number = next_order() end
      id = num(number)
    end
    local state = 'waiting'
    if delay > 0 then state = 'delayed' end
    local job = { state = state, order = num(order), prio = ARGV[i + 2], lifo = ARGV[i + 3],
      ready = num(now + delay), attempts = '0', stalled = '0', token = '0', entered = num(now),
      trace = '[]' }
    if ARGV[i + 4] == '1' then job.group = ARGV[i + 5] end
    local fields = { 'spec', ARGV[i + 6], 'progress', '0', 'logs', '0' }
    for name, value in pairs(job) do
      table.insert(fields, name); table.insert(fields, value)
    end
    redis.call('HSET', jkey(id), unpack(fields))
    file(id, job)
    table.insert(out, id); table.insert(out, 0); table.insert(out, state)
  end
end
return out
"#;

/// ARGV: now, lease ms, queue rate max (-1: none), its window, group concurrency (-1: none),
/// group rate max (-1: none), its window. Returns {'empty'}, {'limited', until} or
/// {'job', id, spec, attempts made, token, ready at, more waiting (0/1)}.
///
/// Groups take turns: `ring` lists the lanes (`u` for jobs without a group, `g:<name>`) with
/// waiting jobs in turn order; the first lane that may start a job is served and moves to the
/// back, a lane at its limit keeps its place (the memory store's `Lanes`).
const TAKE: &str = r#"
local now, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local rate_max, rate_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local group_limit = tonumber(ARGV[5])
local group_rate_max, group_rate_ms = tonumber(ARGV[6]), tonumber(ARGV[7])
if redis.call('HGET', KEYS[1], 'paused') == '1' then return { 'empty' } end
local ring = redis.call('LRANGE', P .. 'ring', 0, -1)
local limited_until = nil
local lane, member = nil, nil
for _, candidate in ipairs(ring) do
  local first = redis.call('ZRANGE', P .. 'lane:' .. candidate, 0, 0)[1]
  if not first then
    redis.call('LREM', P .. 'ring', 1, candidate)
    redis.call('SREM', P .. 'ringset', candidate)
    -- An idle group's rate window is forgotten once it is over (a window still open stays
    -- until the group runs again and passes here dry after it).
    if candidate ~= 'u' then
      local group = string.sub(candidate, 3)
      local window = P .. 'grate:' .. group
      if not redis.call('HGET', P .. 'gactive', group)
        and not rate_check(window, 0, group_rate_ms, now) then
        redis.call('DEL', window)
      end
    end
  elseif candidate == 'u' then
    lane, member = candidate, first
    break
  else
    local group = string.sub(candidate, 3)
    local active = tonumber(redis.call('HGET', P .. 'gactive', group) or '0')
    if group_limit < 0 or active < group_limit then
      local until_ms = rate_check(P .. 'grate:' .. group, group_rate_max, group_rate_ms, now)
      if until_ms then
        if not limited_until or until_ms < limited_until then limited_until = until_ms end
      else
        lane, member = candidate, first
        break
      end
    end
  end
end
if not lane then
  if limited_until then return { 'limited', num(limited_until) } end
  return { 'empty' }
end
local until_ms = rate_admit(P .. 'rate', rate_max, rate_ms, now)
if until_ms then return { 'limited', num(until_ms) } end
redis.call('LREM', P .. 'ring', 1, lane)
redis.call('RPUSH', P .. 'ring', lane)
if lane ~= 'u' then
  rate_admit(P .. 'grate:' .. string.sub(lane, 3), group_rate_max, group_rate_ms, now)
end
local id = id_of(member)
local job = load(id)
local token = redis.call('INCR', P .. 'token')
local lease_until = now + lease_ms
change(id, job, { state = 'active', entered = now, token = token, processed = now,
  lease = lease_until })
redis.call('ZADD', P .. 'leases', lease_until, id)
local more = 0
if redis.call('ZCARD', P .. 'waiting') > 0 then more = 1 end
return { 'job', id, redis.call('HGET', jkey(id), 'spec'), job.attempts, num(token), job.ready,
  more }
"#;

/// ARGV: id, token, until. Returns 1 when the attempt still owns the job.
const RENEW: &str = r#"
local id = ARGV[1]
local job = load(id)
if not owned(job, ARGV[2]) then return 0 end
redis.call('HSET', jkey(id), 'lease', ARGV[3])
redis.call('ZADD', P .. 'leases', tonumber(ARGV[3]), id)
return 1
"#;

/// ARGV: now, max stalled. Returns {wake (0/1), id, state, id, state, ...}, longest running
/// first.
const EXPIRE_LEASES: &str = r#"
local now, max_stalled = tonumber(ARGV[1]), tonumber(ARGV[2])
local lapsed = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now)
local found = {}
for _, id in ipairs(lapsed) do
  local job = load(id)
  if job and job.state == 'active' then
    local _, member = place(id, job)
    table.insert(found, member)
  else
    redis.call('ZREM', P .. 'leases', id)
  end
end
table.sort(found)
local out, wake = { 0 }, false
for _, member in ipairs(found) do
  local id = id_of(member)
  local state, freed = stall(id, load(id), max_stalled, now)
  wake = wake or freed or state == 'waiting'
  table.insert(out, id); table.insert(out, state)
end
if wake then out[1] = 1 end
return out
"#;

/// ARGV: now. Returns the ids promoted, soonest due first.
const PROMOTE_DUE: &str = r#"
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', skey('delayed'), '-inf', now)
local out = {}
for _, member in ipairs(due) do
  local id = id_of(member)
  local job = load(id)
  change(id, job, to_waiting(next_order(), job.ready))
  table.insert(out, id)
end
return out
"#;

/// ARGV: id, token, return value, keep count (-1: any), keep age (-1: any), now. Returns
/// {done (0/1), wake (0/1)}.
const COMPLETE: &str = r#"
local id, now = ARGV[1], tonumber(ARGV[6])
local count, age = tonumber(ARGV[4]), tonumber(ARGV[5])
local job = load(id)
if not owned(job, ARGV[2]) then return { 0, 0 } end
local freed
if count == 0 and age < 0 then
  freed = take_out(id, job)
else
  freed = change(id, job, { state = 'completed', entered = now,
    attempts = tonumber(job.attempts) + 1, finished = now, ret = ARGV[3], token = '0',
    lease = false })
  local _, trimmed = trim('completed', count, age, now, INLINE_TRIM_LIMIT)
  freed = freed or trimmed
end
return { 1, freed and 1 or 0 }
"#;

/// ARGV: id, token, reason, stack, retry at (-1: none), keep count, keep age, now. Returns
/// {outcome ('stale', 'failed', 'retrying'), wake (0/1)}.
const FAIL: &str = r#"
local id, token, reason, stack = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local retry_at, count, age = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local now = tonumber(ARGV[8])
local job = load(id)
if not owned(job, token) then return { 'stale', 0 } end
local order = next_order()
if retry_at < 0 and count == 0 and age < 0 then
  local freed = take_out(id, job)
  return { 'failed', freed and 1 or 0 }
end
local changes
if retry_at > now then
  changes = { state = 'delayed', order = order, ready = retry_at, entered = now, token = '0',
    lease = false, reason = reason }
elseif retry_at >= 0 then
  changes = to_waiting(order, now)
  changes.reason = reason
else
  changes = to_failed({}, reason, now)
end
changes.attempts = tonumber(job.attempts) + 1
changes.trace = push_trace(job, stack)
local freed = change(id, job, changes)
if retry_at < 0 then
  local _, trimmed = trim('failed', count, age, now, INLINE_TRIM_LIMIT)
  return { 'failed', (freed or trimmed) and 1 or 0 }
end
local wake = freed or retry_at <= now
return { 'retrying', wake and 1 or 0 }
"#;

/// ARGV: id, token, max stalled, now. Returns {state ('' when stale), wake (0/1)}.
const STALL: &str = r#"
local id = ARGV[1]
local job = load(id)
if not owned(job, ARGV[2]) then return { '', 0 } end
local state, freed = stall(id, job, tonumber(ARGV[3]), tonumber(ARGV[4]))
return { state, (freed or state == 'waiting') and 1 or 0 }
"#;

/// ARGV: id, token, now. Returns 1 when released.
const RELEASE: &str = r#"
local id = ARGV[1]
local job = load(id)
if not owned(job, ARGV[2]) then return 0 end
change(id, job, to_waiting(job.order, tonumber(ARGV[3])))
return 1
"#;

/// ARGV: id, reason, now. Returns {failed (0/1), wake (0/1)}.
const FORCE_FAIL: &str = r#"
local id, reason, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local job = load(id)
if not job or job.state ~= 'active' then return { 0, 0 } end
local changes = to_failed({}, reason, now)
changes.attempts = tonumber(job.attempts) + 1
changes.trace = push_trace(job, reason)
local freed = change(id, job, changes)
return { 1, freed and 1 or 0 }
"#;

/// ARGV: id, token, progress. Returns 1 when recorded.
const PROGRESS: &str = r#"
local id = ARGV[1]
if not owned(load(id), ARGV[2]) then return 0 end
redis.call('HSET', jkey(id), 'progress', ARGV[3])
return 1
"#;

/// ARGV: id, line. Returns 1 when the job exists.
const LOG: &str = r#"
local id = ARGV[1]
if redis.call('EXISTS', jkey(id)) == 0 then return 0 end
redis.call('HINCRBY', jkey(id), 'logs', 1)
redis.call('RPUSH', lkey(id), ARGV[2])
return 1
"#;

/// ARGV: id ('' for every failed job, oldest failure first), now. Returns how many were
/// retried.
const RETRY: &str = r#"
local now = tonumber(ARGV[2])
local ids = {}
if ARGV[1] == '' then
  for _, member in ipairs(redis.call('ZRANGE', skey('failed'), 0, -1)) do
    table.insert(ids, id_of(member))
  end
else
  ids = { ARGV[1] }
end
local retried = 0
for _, id in ipairs(ids) do
  local job = load(id)
  if job and job.state == 'failed' then
    local changes = to_waiting(next_order(), now)
    changes.attempts = '0'
    changes.stalled = '0'
    changes.processed = false
    changes.finished = false
    changes.reason = false
    changes.ret = false
    change(id, job, changes)
    retried = retried + 1
  end
end
return retried
"#;

/// ARGV: id, now. Returns 1 when the delayed job moved to waiting.
const PROMOTE: &str = r#"
local id = ARGV[1]
local job = load(id)
if not job or job.state ~= 'delayed' then return 0 end
change(id, job, to_waiting(next_order(), tonumber(ARGV[2])))
return 1
"#;

/// ARGV: id. Returns {'removed' | 'missing' | 'active', wake (0/1)}.
const REMOVE: &str = r#"
local id = ARGV[1]
local job = load(id)
if not job then return { 'missing', 0 } end
if job.state == 'active' then return { 'active', 0 } end
take_out(id, job)
return { 'removed', 0 }
"#;

/// ARGV: state, grace ms, limit (0: any), now. Returns the ids removed, in line order.
const CLEAN: &str = r#"
local state, grace, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cutoff = tonumber(ARGV[4]) - grace
local out = {}
for _, member in ipairs(redis.call('ZRANGE', skey(state), 0, -1)) do
  if limit > 0 and #out >= limit then break end
  local id = id_of(member)
  local job = load(id)
  if job and tonumber(job.entered) <= cutoff then
    take_out(id, job)
    table.insert(out, id)
  end
end
return out
"#;

/// ARGV: include delayed (0/1). Returns how many were removed.
const DRAIN: &str = r#"
local states = { 'waiting' }
if ARGV[1] == '1' then table.insert(states, 'delayed') end
local removed = 0
for _, state in ipairs(states) do
  for _, member in ipairs(redis.call('ZRANGE', skey(state), 0, -1)) do
    local id = id_of(member)
    local job = load(id)
    if job then take_out(id, job) end
    removed = removed + 1
  end
end
return removed
"#;

/// ARGV: completed count, completed age, failed count, failed age (-1: any), now. Returns
/// {removed, wake (0/1)}.
const TRIM: &str = r#"
local now = tonumber(ARGV[5])
local a, freed_a = trim('completed', tonumber(ARGV[1]), tonumber(ARGV[2]), now, 1e15)
local b, freed_b = trim('failed', tonumber(ARGV[3]), tonumber(ARGV[4]), now, 1e15)
return { a + b, (freed_a or freed_b) and 1 or 0 }
"#;

/// ARGV: paused (0/1).
const SET_PAUSED: &str = r#"
redis.call('HSET', KEYS[1], 'paused', ARGV[1])
return 1
"#;

/// The state names the scripts use (`JobState::as_str`), for the unit test below.
#[cfg(test)]
const STATE_NAMES: [&str; 5] = ["waiting", "delayed", "active", "completed", "failed"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::job::JobState;

    /// The scripts name states as `JobState::as_str` does, and key each state's set by it.
    #[test]
    fn scripts_name_states_as_the_job_model_does() {
        let names: Vec<&str> = JobState::ALL.iter().map(|state| state.as_str()).collect();
        assert_eq!(names, STATE_NAMES);
        for name in STATE_NAMES {
            assert!(PRELUDE.contains(&format!("'{name}'")), "{name}");
        }
    }
}
