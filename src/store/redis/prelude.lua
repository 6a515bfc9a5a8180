-- Shared by every script of the Redis job store (src/store/redis/scripts.rs prepends it).
--
-- KEYS[1] is the queue's `meta` hash, `{<prefix>:<queue>}:meta`; every other key of the queue is
-- built from the same hash-tagged prefix, so all of them live in one Cluster slot (as Bull's
-- scripts build theirs). Numbers cross as decimal strings; a missing hash field is `nil`.
local P = string.sub(KEYS[1], 1, -5)
local STATES = { 'waiting', 'delayed', 'active', 'completed', 'failed' }
local LIFO_TOP = 9007199254740991
local INLINE_TRIM_LIMIT = 1000
local KEPT_TRACES = 10
local STALLED_TOO_OFTEN = 'job stalled more than allowable limit'
local FIELDS = { 'state', 'order', 'prio', 'lifo', 'ready', 'attempts', 'stalled', 'token',
  'entered', 'group', 'trace', 'processed', 'finished' }

local function num(n) return string.format('%.0f', n) end
local function pad(n) return string.format('%016.0f', n) end
local function jkey(id) return P .. 'job:' .. id end
local function lkey(id) return P .. 'logs:' .. id end
local function skey(state) return P .. state end

-- The fields a transition needs of job `id`, or nil when there is no such job.
local function load(id)
  local values = redis.call('HMGET', jkey(id), unpack(FIELDS))
  if not values[1] then return nil end
  local job = {}
  for i, name in ipairs(FIELDS) do
    if values[i] then job[name] = values[i] end
  end
  return job
end

local function lane_of(job)
  if job.group then return 'g:' .. job.group end
  return 'u'
end

-- Score and member of a job in its state's sorted set. Waiting: priority class (1 first, LIFO
-- ahead of FIFO), then position; the others: their time, then `order`. Members sort by a
-- fixed-width position, then id, as the memory store's lines do.
local function place(id, job)
  local order = tonumber(job.order)
  if job.state == 'waiting' then
    local lifo = job.lifo == '1'
    local class = tonumber(job.prio) * 2 + (lifo and 0 or 1)
    local position = lifo and (LIFO_TOP - order) or order
    return class, pad(position) .. id
  end
  local time
  if job.state == 'delayed' then time = job.ready
  elseif job.state == 'active' then time = job.processed
  else time = job.finished end
  return tonumber(time or '0'), pad(order) .. id
end

local function id_of(member) return string.sub(member, 17) end

-- Puts a job into the indexes of its state.
local function file(id, job)
  local score, member = place(id, job)
  redis.call('ZADD', skey(job.state), score, member)
  if job.state == 'waiting' then
    local lane = lane_of(job)
    redis.call('ZADD', P .. 'lane:' .. lane, score, member)
    redis.call('ZADD', P .. 'wready', tonumber(job.ready), id)
    if redis.call('SADD', P .. 'ringset', lane) == 1 then
      redis.call('RPUSH', P .. 'ring', lane)
    end
  elseif job.state == 'active' and job.group then
    redis.call('HINCRBY', P .. 'gactive', job.group, 1)
  end
end

-- Takes a job out of the indexes of its state. True when this freed a slot of a group with
-- jobs waiting (a worker may start one now).
local function unfile(id, job)
  local _, member = place(id, job)
  redis.call('ZREM', skey(job.state), member)
  if job.state == 'waiting' then
    redis.call('ZREM', P .. 'lane:' .. lane_of(job), member)
    redis.call('ZREM', P .. 'wready', id)
  elseif job.state == 'active' then
    redis.call('ZREM', P .. 'leases', id)
    if job.group then
      if redis.call('HINCRBY', P .. 'gactive', job.group, -1) <= 0 then
        redis.call('HDEL', P .. 'gactive', job.group)
      end
      return redis.call('ZCARD', P .. 'lane:g:' .. job.group) > 0
    end
  end
  return false
end

-- Applies `changes` (field -> value, `false` deletes) to a job and refiles it. Returns whether
-- a group slot was freed.
local function change(id, job, changes)
  local freed = unfile(id, job)
  local set, del = {}, {}
  for name, value in pairs(changes) do
    if value == false then
      job[name] = nil
      table.insert(del, name)
    else
      if type(value) == 'number' then value = num(value) end
      job[name] = value
      table.insert(set, name)
      table.insert(set, value)
    end
  end
  if #set > 0 then redis.call('HSET', jkey(id), unpack(set)) end
  if #del > 0 then redis.call('HDEL', jkey(id), unpack(del)) end
  file(id, job)
  return freed
end

-- Removes a job with its logs. Returns whether a group slot was freed.
local function take_out(id, job)
  local freed = unfile(id, job)
  redis.call('DEL', jkey(id), lkey(id))
  return freed
end

local function next_order() return redis.call('INCR', P .. 'order') end

local function owned(job, token)
  return job ~= nil and job.state == 'active' and job.token == token
end

local function to_waiting(order, since)
  return { state = 'waiting', order = order, ready = since, entered = since, token = '0',
    lease = false }
end

local function to_failed(changes, reason, now)
  changes.state = 'failed'
  changes.entered = now
  changes.finished = now
  changes.reason = reason
  changes.token = '0'
  changes.lease = false
  return changes
end

local function push_trace(job, line)
  local trace = cjson.decode(job.trace or '[]')
  if type(trace) ~= 'table' then trace = {} end
  table.insert(trace, line)
  while #trace > KEPT_TRACES do table.remove(trace, 1) end
  return cjson.encode(trace)
end

-- An active job whose worker is gone: back to waiting in its old place with the stall
-- counted, or failed past `max_stalled`. Returns the new state and whether a slot was freed.
local function stall(id, job, max_stalled, now)
  local stalled = tonumber(job.stalled or '0') + 1
  local changes
  if stalled > max_stalled then
    changes = to_failed({}, STALLED_TOO_OFTEN, now)
  else
    changes = to_waiting(job.order, now)
  end
  changes.stalled = stalled
  local freed = change(id, job, changes)
  return changes.state, freed
end

-- Removes the finished jobs in `state` that the retention (count, age; -1: no limit) does not
-- keep, oldest first, at most `limit`. Returns how many, and whether a slot was freed.
local function trim(state, count, age, now, limit)
  if count < 0 and age < 0 then return 0, false end
  local key = skey(state)
  local surplus = 0
  if count >= 0 then surplus = math.max(0, redis.call('ZCARD', key) - count) end
  local cutoff = nil
  if age >= 0 then cutoff = now - age end
  local removed, freed = 0, false
  while removed < limit do
    local batch = redis.call('ZRANGE', key, 0, math.min(limit - removed, 1000) - 1, 'WITHSCORES')
    if #batch == 0 then break end
    local stop = false
    for i = 1, #batch, 2 do
      local score = tonumber(batch[i + 1])
      if removed < surplus or (cutoff and score <= cutoff) then
        local id = id_of(batch[i])
        local job = load(id)
        if job then
          freed = take_out(id, job) or freed
        else
          redis.call('ZREM', key, batch[i])
        end
        removed = removed + 1
      else
        stop = true
        break
      end
    end
    if stop then break end
  end
  return removed, freed
end

-- A fixed rate window in hash `key` (start, used); `max` < 0 is no limit. `rate_check` says
-- when a full window reopens (nil: a start may go); `rate_admit` also counts the start.
local function rate_check(key, max, duration, now)
  if max < 0 then return nil end
  local window = redis.call('HMGET', key, 'start', 'used')
  local start, used = tonumber(window[1]), tonumber(window[2] or '0')
  if start and now < start + duration and used >= max then return start + duration end
  return nil
end

local function rate_admit(key, max, duration, now)
  if max < 0 then return nil end
  local window = redis.call('HMGET', key, 'start', 'used')
  local start, used = tonumber(window[1]), tonumber(window[2] or '0')
  if not start or now >= start + duration then
    start, used = now, 0
  end
  if used >= max then
    redis.call('HSET', key, 'start', num(start), 'used', num(used))
    return start + duration
  end
  redis.call('HSET', key, 'start', num(start), 'used', num(used + 1))
  return nil
end
