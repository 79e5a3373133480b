-- Shared helpers, prepended to every script by shim_core/scripts.py (never loaded alone).
-- Keys built here mirror shim_core/keys.py: prefix .. 'task:' .. id, 'ready:' .. queue, ...
-- Everything is local: a script that touches a global would poison fakeredis.
local rcall = redis.call

-- Error codes of the replies, named as shim_core/errors.py ErrorCode names them.
local NOT_FOUND, STALE_LEASE, WRONG_STATE = -1, -2, -3
local DUPLICATE, MISSING_DEPENDENCY, WORKER_GONE = -4, -5, -6

-- Entries kept in the namespace's event stream (about: trimmed with MAXLEN ~). An entry holds
-- the events of one script call; a task's life is 3 to 5 events.
local EVENT_HISTORY = 100000
local HEARTBEAT_CHANNEL = 'worker:heartbeat'

local BANDS = {critical = 0, high = 1, normal = 2, low = 3}
local BAND_WIDTH = 10000000000000 -- 1e13 FIFO slots per priority band; scores stay exact doubles

-- Writes that many tasks of one call share are gathered here and sent once, when the script
-- ends (scripts.py calls flush() after every script): per-type counts, wake markers, worker
-- statistics, duration history, finished-set moves and events. A batch of 100 completions then
-- costs one HINCRBY per type, not 200. A script starts with a fresh one; in the function
-- library (scripts.py) every call begins with `acc = new_acc()`, as the library outlives calls.
-- Its parts are made when first used (see gathered): a Lua table costs about 1k instructions
-- with its share of garbage collection, and most calls gather one or two kinds of write.
local function new_acc()
  return {}
end
local acc = new_acc()

-- acc[name], an empty map the first time it is asked for.
local function gathered(name)
  local map = acc[name]
  if map == nil then
    map = {}
    acc[name] = map
  end
  return map
end

-- map[key], set to `init` the first time. The map's array part lists its keys in the order
-- they came (keys are strings, so they never meet the array's integer indexes): ipairs(map)
-- walks them in that order.
local function once(map, key, init)
  local v = map[key]
  if v == nil then
    v = init
    map[key] = v
    map[#map + 1] = key
  end
  return v
end

-- map[key], a new list the first time (made only then).
local function once_list(map, key)
  return map[key] or once(map, key, {})
end

-- A number read from a hash, or `default` when it holds none: hashes are data anyone with write
-- access may change, and arithmetic on nil would fail the whole script (a claim of every task in
-- the queue, a batch of completions).
local function num(text, default)
  return tonumber(text) or default
end

-- An integer as the string Redis and JSON take. Given a Lua number, Redis formats it with
-- '%.17g' and cjson with '%.14g': a printf of a double, several times the cost of '%d'.
local function istr(n)
  return string.format('%d', n)
end

local function now_ms()
  if acc.now then return acc.now end
  local t = rcall('TIME')
  acc.now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  acc.now = math.floor(acc.now_us / 1000)
  return acc.now
end

-- now_ms() as a string, formatted once per call.
local function now_text()
  if not acc.now_s then acc.now_s = istr(now_ms()) end
  return acc.now_s
end

-- `n` fresh fencing tokens: returns `base`, the tokens are base + 1 .. base + n. Each is larger
-- than every token handed out before, also after a failover that lost the latest writes
-- (replication is asynchronous): the counter never falls behind the server clock in
-- microseconds, so a promoted replica whose copy of it is stale still issues tokens above
-- every one the old master issued (given the servers' clocks agree to within the failover
-- time). Tokens stay below 2^53: exact in Lua numbers, JSON and Python.
local function next_tokens(prefix, n)
  now_ms()
  local key = prefix .. 'fence'
  local base = math.max(num(rcall('GET', key), 0), acc.now_us)
  rcall('SET', key, istr(base + n))
  return base
end

-- Add `n` to the count `field` ('<status>:<type>') of the namespace.
local function bump(prefix, field, n)
  acc.prefix = prefix
  local counts = gathered('counts')
  counts[field] = once(counts, field, 0) + n
end

-- Wake markers: a queue's marker holds one member per blocked claimer it should wake (each
-- BZPOPMIN takes one), up to WAKE_MAX, so a burst of work wakes that many idle workers at once
-- instead of one after another.
local WAKE_MAX = 32

-- One more task became pending in the queue of wake marker `key`.
local function wake(key)
  local wakes = gathered('wakes')
  wakes[key] = once(wakes, key, 0) + 1
end

-- The marker of a queue with `n` claimable tasks left (0: removed) when the script ends.
local function wake_for(key, n)
  local wakes = gathered('wakes')
  once(wakes, key, 0)
  wakes[key] = n
end

-- Sorted-set moves of finished work, sent as one ZREM / ZADD per key.
local function defer_zrem(key, member)
  table.insert(once_list(gathered('zrem'), key), member)
end

local function defer_zadd(key, score, member)
  local list = once_list(gathered('zadd'), key)
  table.insert(list, score)
  table.insert(list, member)
end

local function chunked(cmd, key, list, step)
  for i = 1, #list, step do
    rcall(cmd, key, unpack(list, i, math.min(i + step - 1, #list)))
  end
end

-- Send everything gathered; called once after the script's body.
local function flush()
  local prefix = acc.prefix
  -- Removals first: a key that has both (a set a task leaves and enters again) ends with the
  -- member in it.
  local zrem, zadd = acc.zrem, acc.zadd
  if zrem then
    for _, key in ipairs(zrem) do chunked('ZREM', key, zrem[key], 1000) end
  end
  if zadd then
    for _, key in ipairs(zadd) do chunked('ZADD', key, zadd[key], 1000) end
  end
  local counts = acc.counts
  if counts then
    for _, field in ipairs(counts) do
      local n = counts[field]
      if n ~= 0 then rcall('HINCRBY', prefix .. 'counts', field, istr(n)) end
    end
  end
  local history = acc.history
  if history then
    for _, ttype in ipairs(history) do
      local h = history[ttype]
      rcall('HINCRBY', prefix .. 'history', ttype .. ':n', istr(h[1]))
      rcall('HINCRBY', prefix .. 'history', ttype .. ':ms', istr(h[2]))
    end
  end
  local workers = acc.workers
  if workers then
    for _, worker in ipairs(workers) do
      local w = workers[worker]
      local wkey = prefix .. 'worker:' .. worker
      local cur = rcall('HMGET', wkey, 'id', 'current_task')
      if cur[1] then -- registered (a hash without its id is a leftover: never recreated here)
        -- redis.pcall: a statistic that is no number (changed by hand) is left as it is, and
        -- the completions it counts are recorded all the same.
        for field, n in pairs(w.fields) do redis.pcall('HINCRBY', wkey, field, istr(n)) end
        if w.duration > 0 then redis.pcall('HINCRBY', wkey, 'total_duration', istr(w.duration)) end
        if cur[2] and w.done[cur[2]] then rcall('HDEL', wkey, 'current_task') end
      end
    end
  end
  local wakes = acc.wakes
  if wakes then
    for _, key in ipairs(wakes) do
      local n = math.min(wakes[key], WAKE_MAX)
      if n > 0 then
        local members = {}
        for i = 1, n do
          members[2 * i - 1] = '0'
          members[2 * i] = istr(i)
        end
        rcall('ZADD', key, unpack(members))
      else
        rcall('DEL', key)
      end
    end
  end
  local events = acc.events
  if not events then return end
  local n = #events
  if n > 0 then
    -- One id counter step and one message per channel: a batch of events on a channel is
    -- published as a JSON array of events (a single one as the event itself).
    local last = rcall('INCRBY', prefix .. 'evseq', istr(n))
    local channels = {}
    for i, e in ipairs(events) do
      e.body.id = istr(last - n + i)
      local json = cjson.encode(e.body)
      if e.tail then json = string.sub(json, 1, -2) .. ',' .. e.tail .. '}' end
      table.insert(once_list(channels, e.channel), json)
    end
    local durable = {}
    for _, channel in ipairs(channels) do
      local list = channels[channel]
      if #list == 1 then
        rcall('PUBLISH', channel, list[1])
      else
        rcall('PUBLISH', channel, '[' .. table.concat(list, ',') .. ']')
      end
      if string.sub(channel, -#HEARTBEAT_CHANNEL) ~= HEARTBEAT_CHANNEL then
        for _, json in ipairs(list) do table.insert(durable, json) end
      end
    end
    -- The durable history: every event but heartbeats (state, not history), one stream entry
    -- per script call, so a reader that was not listening replays what it missed.
    if #durable > 0 then
      local entry = durable[1]
      if #durable > 1 then entry = '[' .. table.concat(durable, ',') .. ']' end
      rcall('XADD', prefix .. 'events', 'MAXLEN', '~', EVENT_HISTORY, '*', 'e', entry)
    end
  end
end

local function queue_of(ttype, assigned_to)
  if assigned_to and assigned_to ~= '' then return '@' .. assigned_to end
  return ttype
end

local function ready_score(priority, seq)
  return (BANDS[priority] or 2) * BAND_WIDTH + num(seq, 0)
end

local function state_key(prefix, status, queue)
  if status == 'pending' then return prefix .. 'ready:' .. queue end
  if status == 'waiting' then return prefix .. 'waiting' end
  if status == 'claimed' or status == 'running' then return prefix .. 'active' end
  if status == 'retrying' then return prefix .. 'delayed' end
  return prefix .. status
end

-- Remove a task from the state set of `status` and from the per-type count.
local function leave(prefix, id, status, queue, ttype)
  local key = state_key(prefix, status, queue)
  if status == 'waiting' then rcall('SREM', key, id) else rcall('ZREM', key, id) end
  bump(prefix, status .. ':' .. ttype, -1)
end

-- The state-set side of a task entering `status` (score: ready order, deadline, due or finish
-- time): the set, the per-type count and, when pending, the queue's wake marker. The caller
-- writes the status field. `deferred`: a sorted set's ZADD waits for flush(), where a batch
-- shares one.
local function enter_set(prefix, id, status, queue, ttype, score, deferred)
  local key = state_key(prefix, status, queue)
  if status == 'waiting' then
    rcall('SADD', key, id)
  elseif deferred then
    defer_zadd(key, score, id)
  else
    rcall('ZADD', key, score, id)
  end
  bump(prefix, status .. ':' .. ttype, 1)
  if status == 'pending' then wake(prefix .. 'wake:' .. queue) end
end

-- Put a task in the state set of `status` and write its status field.
-- `more`: further {field, value, ...} of the task hash, written in the same HSET as its status.
local function enter(prefix, id, status, queue, ttype, score, more)
  enter_set(prefix, id, status, queue, ttype, score, false)
  if status == 'pending' then -- when it became claimable: where its claim latency starts
    more = more or {}
    table.insert(more, 'ready_at')
    table.insert(more, now_ms())
  end
  if more then
    rcall('HSET', prefix .. 'task:' .. id, 'status', status, unpack(more))
  else
    rcall('HSET', prefix .. 'task:' .. id, 'status', status)
  end
end

-- The event members '"timestamp":<now>' (and ',"attempt":<n>' when known) as raw JSON, and
-- `tail` after them: formatted as integers here (see istr), not by cjson.
local function event_numbers(now, attempt, tail)
  local json = '"timestamp":' .. (now == acc.now and now_text() or istr(now))
  if attempt then json = json .. ',"attempt":' .. istr(attempt) end
  if tail then json = json .. ',' .. tail end
  return json
end

-- Publish a ProgressEvent (JSON) on prefix .. 'task:' .. etype when the script ends. `tail` is
-- raw JSON members spliced in as-is (e.g. '"completion":{...}'), so stored JSON is never
-- decoded and re-encoded.
local function emit(prefix, etype, id, worker, status, attempt, now, tail)
  acc.prefix = prefix
  -- Totals per event type (counts field 'event:<type>', read by the metrics), progress aside.
  if etype ~= 'progress' then bump(prefix, 'event:' .. etype, 1) end
  table.insert(gathered('events'), {channel = prefix .. 'task:' .. etype,
    tail = event_numbers(now, attempt, tail),
    body = {type = etype, task_id = id, worker_id = worker or '', status = status}})
end

-- The queue a task becomes pending in: its worker's own queue, unless that worker is known to
-- have left (crashed or offline): then the target is dropped and any worker may claim it.
local function home_queue(prefix, id, ttype, assigned)
  if assigned and assigned ~= '' then
    local st = rcall('HGET', prefix .. 'worker:' .. assigned, 'status')
    if st == 'crashed' or st == 'offline' then
      rcall('HDEL', prefix .. 'task:' .. id, 'assigned_to')
      rcall('SADD', prefix .. 'queues', ttype)
      return ttype
    end
  end
  return queue_of(ttype, assigned)
end

-- Move a task from `from` to pending in its ready queue (wakes a blocked claimer).
local function make_pending(prefix, id, from, now, etype)
  local key = prefix .. 'task:' .. id
  local f = rcall('HMGET', key, 'type', 'assigned_to', 'priority', 'seq', 'attempts')
  leave(prefix, id, from, queue_of(f[1], f[2]), f[1])
  enter(prefix, id, 'pending', home_queue(prefix, id, f[1], f[2]), f[1], ready_score(f[3], f[4]))
  emit(prefix, etype, id, nil, 'pending', tonumber(f[5]), now)
end

-- Forget a task in the dependents sets of its dependencies (it is removed, or cancelled while
-- waiting), so that a later task reusing its id is not released by them.
local function unlink(prefix, id)
  local deps = rcall('HGET', prefix .. 'task:' .. id, 'dependencies')
  if deps then
    for _, dep in ipairs(cjson.decode(deps)) do rcall('SREM', prefix .. 'dependents:' .. dep, id) end
  end
end

-- Cancel every not-yet-final task that (transitively) depends on `root`.
local function cancel_dependents(prefix, root, now, reason)
  local todo = {root}
  local count = 0
  while #todo > 0 do
    local parent = table.remove(todo)
    local depkey = prefix .. 'dependents:' .. parent
    local children = rcall('SMEMBERS', depkey)
    rcall('DEL', depkey)
    for _, child in ipairs(children) do
      local key = prefix .. 'task:' .. child
      local f = rcall('HMGET', key, 'status', 'type', 'assigned_to', 'attempts')
      local st = f[1]
      if st and st ~= 'complete' and st ~= 'failed' and st ~= 'cancelled' then
        unlink(prefix, child)
        leave(prefix, child, st, queue_of(f[2], f[3]), f[2])
        enter(prefix, child, 'cancelled', nil, f[2], now)
        local result = cjson.encode({success = false, error = reason})
        rcall('HSET', key, 'result', result, 'completed_at', now)
        emit(prefix, 'cancelled', child, nil, 'cancelled', tonumber(f[4]), now,
             '"completion":' .. result)
        count = count + 1
        table.insert(todo, child)
      end
    end
  end
  return count
end

-- Count a finished dependency for each waiting dependent; release those with none left.
local function release_dependents(prefix, id, now)
  local released = 0
  local depkey = prefix .. 'dependents:' .. id
  local children = rcall('SMEMBERS', depkey)
  for _, child in ipairs(children) do
    local ckey = prefix .. 'task:' .. child
    -- A count that is no number (changed by hand) fails HINCRBY: that dependent keeps waiting
    -- (never run before its dependencies), and this completion is recorded all the same.
    if rcall('HGET', ckey, 'status') == 'waiting'
        and num(redis.pcall('HINCRBY', ckey, 'deps_left', -1), 1) <= 0 then
      make_pending(prefix, child, 'waiting', now, 'released')
      released = released + 1
    end
  end
  if #children > 0 then rcall('DEL', depkey) end
  return released
end

-- Final failure: record it, publish it, then cancel the dependents, or release them when the
-- task's plan said on_failure = continue. Returns the number of dependents cancelled.
local function fail_final(prefix, id, status, queue, ttype, now, result, worker, attempt)
  local key = prefix .. 'task:' .. id
  leave(prefix, id, status, queue, ttype)
  enter(prefix, id, 'failed', nil, ttype, now)
  rcall('HSET', key, 'result', result, 'completed_at', now)
  emit(prefix, 'failed', id, worker, 'failed', attempt, now, '"completion":' .. result)
  if rcall('HGET', key, 'on_failure') == 'continue' then
    release_dependents(prefix, id, now)
    return 0
  end
  return cancel_dependents(prefix, id, now, 'dependency ' .. id .. ' failed')
end

-- Publish a worker event on prefix .. 'worker:' .. etype when the script ends.
local function emit_worker(prefix, etype, worker, now, tail)
  acc.prefix = prefix
  table.insert(gathered('events'), {channel = prefix .. 'worker:' .. etype,
    tail = event_numbers(now, nil, tail), body = {type = etype, worker_id = worker}})
end

-- A lease was lost without the worker reporting (stall, crash): back to pending with a stall
-- counted, or failed for good past max_stalled. Returns the new status.
local function requeue_stalled(prefix, id, now, why)
  local key = prefix .. 'task:' .. id
  local f = rcall('HMGET', key, 'status', 'type', 'max_stalled', 'worker_id', 'attempts')
  local stalls = num(redis.pcall('HINCRBY', key, 'stalls', 1), nil)
  if not stalls then -- a count that is no number (changed by hand): counted anew
    stalls = 1
    rcall('HSET', key, 'stalls', 1)
  end
  rcall('HSET', key, 'lease', 0)
  if stalls > num(f[3], 0) then
    local result = cjson.encode({success = false, error = why .. ' (stalled ' .. stalls .. ' times)'})
    fail_final(prefix, id, f[1], nil, f[2], now, result, f[4], tonumber(f[5]))
    return 'failed'
  end
  make_pending(prefix, id, f[1], now, 'stalled')
  return 'pending'
end

-- Move a pending task to another ready queue (target '' = its type's queue).
local function retarget(prefix, id, target)
  local key = prefix .. 'task:' .. id
  local f = rcall('HMGET', key, 'type', 'assigned_to', 'priority', 'seq')
  rcall('ZREM', prefix .. 'ready:' .. queue_of(f[1], f[2]), id)
  if target == '' then rcall('HDEL', key, 'assigned_to') else rcall('HSET', key, 'assigned_to', target) end
  local queue = queue_of(f[1], target)
  rcall('SADD', prefix .. 'queues', queue)
  rcall('ZADD', prefix .. 'ready:' .. queue, ready_score(f[3], f[4]), id)
  wake(prefix .. 'wake:' .. queue)
end

-- Tasks assigned to a worker that left go back to their type's queue for anyone to claim.
local function untarget(prefix, worker, now)
  for _, id in ipairs(rcall('ZRANGE', prefix .. 'ready:@' .. worker, 0, -1)) do
    retarget(prefix, id, '')
  end
  -- Its wake marker too: nobody claims from that queue any more (a stopping worker's own wake,
  -- a task targeted at it, left there).
  rcall('DEL', prefix .. 'wake:@' .. worker)
end

-- Declare a worker crashed and requeue every task it held. Returns {id, outcome, ...}.
local function crash_worker(prefix, worker, now, reason)
  local wkey = prefix .. 'worker:' .. worker
  rcall('HSET', wkey, 'status', 'crashed', 'crashed_at', now, 'crash_reason', reason)
  rcall('HDEL', wkey, 'suspect_since', 'current_task')
  rcall('ZREM', prefix .. 'workers', worker)
  local out = {}
  for _, id in ipairs(rcall('ZRANGE', prefix .. 'active', 0, -1)) do
    if rcall('HGET', prefix .. 'task:' .. id, 'worker_id') == worker then
      table.insert(out, id)
      table.insert(out, requeue_stalled(prefix, id, now, 'worker ' .. worker .. ' ' .. reason))
    end
  end
  untarget(prefix, worker, now)
  emit_worker(prefix, 'crashed', worker, now, nil)
  return out
end

-- Worker statistics kept by the scripts that finish a task (only for registered workers),
-- written when the script ends.
local function count_for_worker(prefix, worker, id, field, duration)
  if not worker or worker == '' then return end
  acc.prefix = prefix
  local workers = gathered('workers')
  local w = workers[worker]
  if w == nil then
    w = {fields = {}, duration = 0, done = {}}
    once(workers, worker, w)
  end
  w.fields[field] = (w.fields[field] or 0) + 1
  if duration then w.duration = w.duration + duration end
  w.done[id] = true
end

-- Count a finished execution of type `ttype` that took `took` ms (the estimates' history).
local function add_history(prefix, ttype, took)
  acc.prefix = prefix
  local history = gathered('history')
  local h = history[ttype] or once(history, ttype, {0, 0})
  h[1] = h[1] + 1
  h[2] = h[2] + took
end

-- Renew the leases given as args[first..] (task id, token pairs) until `deadline`; appends the
-- ids whose lease is gone (stale token, not active any more) to `lost` and returns it.
local function renew_leases(prefix, args, first, deadline, lost)
  for i = first, #args, 2 do
    local id, token = args[i], args[i + 1]
    local key = prefix .. 'task:' .. id
    local f = rcall('HMGET', key, 'status', 'lease')
    if f[2] == token and (f[1] == 'running' or f[1] == 'claimed') then
      rcall('ZADD', prefix .. 'active', 'XX', deadline, id)
      rcall('HSET', key, 'lease_deadline', deadline)
    else
      table.insert(lost, id)
    end
  end
  return lost
end


-- An amount in USD for a message, to 10 significant digits: a sum kept by HINCRBYFLOAT reads
-- 0.6 as Redis stores it, also where the store writes 0.59999999999999998 (the embedded one).
local function usd(n)
  return string.format('%.10g', n)
end

-- Add an execution's reported cost (ARGV string, '' for none) to its run's total.
-- redis.pcall: a cost_usd that is not a number (written by hand) must not fail the completion
-- that reports the cost; claims then stop the run's spending (see claimable).
local function add_cost(prefix, run, cost)
  if cost and cost ~= '' and run and run ~= '' and tonumber(cost) then
    redis.pcall('HINCRBYFLOAT', prefix .. 'run:' .. run, 'cost_usd', cost)
  end
end

-- Cancel an unfinished task (not waiting on the caller's lease) and its dependents.
-- Returns the number of dependents cancelled.
local function cancel_task(prefix, id, status, ttype, queue, worker, attempts, now, reason)
  local key = prefix .. 'task:' .. id
  unlink(prefix, id)
  leave(prefix, id, status, queue, ttype)
  enter(prefix, id, 'cancelled', nil, ttype, now)
  local result = cjson.encode({success = false, error = reason})
  rcall('HSET', key, 'result', result, 'completed_at', now)
  emit(prefix, 'cancelled', id, worker, 'cancelled', attempts, now, '"completion":' .. result)
  return cancel_dependents(prefix, id, now, 'dependency ' .. id .. ' cancelled')
end

-- Tasks a claim looks at past the head of a queue for one this worker may take.
local LOOKAHEAD = 20

-- The fields claiming reads, of a task hash as HGETALL returns it (a map of the whole hash
-- would grow and rehash its table several times per task).
local CLAIM_FIELDS = {type = true, executor = true, agent = true, assigned_to = true,
                      run_id = true, attempts = true}
local function claim_view(flat)
  local h = {}
  for i = 1, #flat, 2 do
    if CLAIM_FIELDS[flat[i]] then h[flat[i]] = flat[i + 1] end
  end
  return h
end

-- What a worker's hash says it leaves to others: {agents = {agent = reason}, executors =
-- {name = true}, types = {type = true}} from its 'refused' field (agents it cannot run) and its
-- 'deny' field (executors it is not allowed to run, and the types whose tasks run on one of
-- them when they name no executor). Malformed JSON (the hash is data anyone with write access
-- could change) counts as nothing left.
local function decode_or(raw, default)
  if not raw then return default end
  local ok, value = pcall(cjson.decode, raw)
  if ok and type(value) == 'table' then return value end
  return default
end

local function worker_policy(refused, deny)
  local policy = {agents = decode_or(refused, {}), executors = {}, types = {}}
  local d = decode_or(deny, {})
  for _, name in ipairs(type(d.executors) == 'table' and d.executors or {}) do
    if type(name) == 'string' then policy.executors[name] = true end
  end
  for _, name in ipairs(type(d.types) == 'table' and d.types or {}) do
    if type(name) == 'string' then policy.types[name] = true end
  end
  return policy
end

-- Whether pending task `id` (its hash as a table `h`) may be claimed now: 'ok'; 'moved' when it
-- left the queue (its agent cools down after a rate limit: to retrying until then, no attempt
-- spent; its run's budget is spent: cancelled); 'skip' when this worker may not run its
-- executor or refuses its agent (left for other workers).
local function claimable(prefix, id, h, policy, now)
  local executor = h.executor
  if executor and executor ~= '' then
    if policy.executors[executor] then return 'skip' end
  elseif policy.types[h.type] then
    return 'skip'
  end
  local agent = h.agent
  if not agent or agent == '' then return 'ok' end
  local queue = queue_of(h.type, h.assigned_to)
  local cool = num(rcall('HGET', prefix .. 'cooldowns', agent), 0)
  if cool > now then
    leave(prefix, id, 'pending', queue, h.type)
    enter(prefix, id, 'retrying', nil, h.type, cool, {'due_at', cool})
    emit(prefix, 'retrying', id, nil, 'retrying', tonumber(h.attempts), now)
    return 'moved'
  end
  local run = h.run_id
  if run and run ~= '' then
    local b = rcall('HMGET', prefix .. 'run:' .. run, 'budget_usd', 'cost_usd')
    if b[1] then
      -- A record someone wrote by hand may not hold numbers: no more spending then either
      -- (and no script error, which would stop every claim of this queue).
      local budget, spent = tonumber(b[1]), tonumber(b[2] or '0')
      local why = nil
      if not (budget and spent) then
        why = 'budget unreadable: run ' .. run .. ' has budget_usd ' .. string.sub(b[1], 1, 40)
              .. ', cost_usd ' .. string.sub(b[2] or '0', 1, 40)
      elseif spent >= budget then
        why = 'budget exhausted: run ' .. run .. ' spent $' .. usd(spent) .. ' of $' .. usd(budget)
      end
      if why then
        cancel_task(prefix, id, 'pending', h.type, queue, nil, tonumber(h.attempts), now, why)
        return 'moved'
      end
    end
  end
  if policy.agents[agent] then return 'skip' end
  return 'ok'
end

-- Up to `want` tasks at the head of ready queue `rkey` that this worker may claim now, in queue
-- order: {{id =, score =, flat = HGETALL reply, h = table}, ...}. Also returns whether tasks it
-- refuses were passed over, and how many tasks remain in the queue when that is known without
-- asking (nil otherwise).
local function head_claimable(prefix, rkey, want, policy, now)
  local found, skipped = {}, false
  local pos, skips = 0, 0 -- rank of the next task not looked at; refused tasks passed over
  while #found < want and skips < LOOKAHEAD do
    local window = want - #found + (skips > 0 and LOOKAHEAD or 0)
    local items = rcall('ZRANGE', rkey, pos, pos + window - 1, 'WITHSCORES')
    for i = 1, #items, 2 do
      local id = items[i]
      local flat = rcall('HGETALL', prefix .. 'task:' .. id)
      local h = claim_view(flat)
      local verdict
      if not h.type then
        rcall('ZREM', rkey, id) -- an id without its task (removed by hand): not claimable
        verdict = 'moved'
      else
        verdict = claimable(prefix, id, h, policy, now)
      end
      if verdict == 'ok' then
        table.insert(found, {id = id, score = tonumber(items[i + 1]), flat = flat, h = h})
        pos = pos + 1
      elseif verdict == 'skip' then
        skipped = true
        skips = skips + 1
        pos = pos + 1
      end -- 'moved': it left the queue, the next task has its rank
      if #found >= want or skips >= LOOKAHEAD then return found, skipped, nil end
    end
    if #items < window * 2 then return found, skipped, pos end -- the queue ends here
  end
  return found, skipped, nil
end

-- Claim up to `count` pending tasks from the `ready` queue keys, highest priority first, FIFO in
-- a band, after promoting due retries (claim-3 and complete_claim-4). Tasks of an agent that
-- cools down, or of a run whose budget is spent, leave the queue on the way (see claimable);
-- tasks the worker may not run (its executor is not allowed there, or the worker refuses its
-- agent: see worker_policy) are left for others.
-- Returns {ms until the next retry is due or -1, token1, {field, value, ...}, token2, ...}.
local function claim_tasks(prefix, delayed, paused, ready, worker, count, lease, status)
  if count <= 0 then return {-1} end
  local now = now_ms()
  local due = rcall('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if due[1] and tonumber(due[2]) <= now then
    for _, id in ipairs(rcall('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)) do
      make_pending(prefix, id, 'retrying', now, 'released')
    end
    due = rcall('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  end
  local out = {-1}
  if due[1] then out[1] = math.max(0, tonumber(due[2]) - now) end
  if rcall('EXISTS', paused) == 1 then return out end
  local wkey = prefix .. 'worker:' .. worker
  local has_worker, policy = false, worker_policy(nil, nil)
  if worker ~= '' then
    local w = rcall('HMGET', wkey, 'id', 'refused', 'deny') -- a registered worker has its id
    has_worker = w[1] ~= false
    policy = worker_policy(w[2], w[3])
  end
  -- The best `count` of the heads of every queue (each head is in queue order: a merge).
  local heads, skipped, left = {}, {}, {}
  for q, rkey in ipairs(ready) do
    local found, passed, size = head_claimable(prefix, rkey, count, policy, now)
    heads[q] = {list = found, next = 1}
    skipped[q] = passed
    left[q] = size
  end
  local chosen = {}
  while #chosen < count do
    local best, best_score = nil, nil
    for q, head in ipairs(heads) do
      local c = head.list[head.next]
      if c and (best_score == nil or c.score < best_score) then best, best_score = q, c.score end
    end
    if not best then break end
    local head = heads[best]
    local c = head.list[head.next]
    head.next = head.next + 1
    c.q = best
    table.insert(chosen, c)
  end
  if #chosen > 0 then
    local top = next_tokens(prefix, #chosen) + #chosen
    local deadline = now + lease
    local taken, active = {}, {} -- taken[q]: the ids claimed from queue q
    local deadline_s = istr(deadline)
    for i, c in ipairs(chosen) do
      local token = top - #chosen + i
      local attempt = num(c.h.attempts, 0) + 1
      local key = prefix .. 'task:' .. c.id
      local ids = taken[c.q]
      if not ids then
        ids = {}
        taken[c.q] = ids
      end
      table.insert(ids, c.id)
      table.insert(active, deadline_s)
      table.insert(active, c.id)
      bump(prefix, 'pending:' .. c.h.type, -1)
      bump(prefix, status .. ':' .. c.h.type, 1)
      local fields = {'status', status, 'lease', istr(token), 'worker_id', worker,
                      'claimed_at', now_text(), 'lease_deadline', deadline_s, 'progress', '0',
                      'progress_message', '', 'attempts', istr(attempt)}
      rcall('HSET', key, unpack(fields))
      if status == 'running' then emit(prefix, 'started', c.id, worker, status, attempt, now) end
      -- The reply is the hash as read plus the fields just written (later pairs win).
      local flat = c.flat
      for _, v in ipairs(fields) do table.insert(flat, v) end
      table.insert(out, token)
      table.insert(out, flat)
    end
    for q, ids in pairs(taken) do chunked('ZREM', ready[q], ids, 1000) end
    chunked('ZADD', prefix .. 'active', active, 1000)
    if has_worker then
      rcall('HSET', wkey, 'current_task', chosen[#chosen].id, 'last_activity_at', now_text())
    end
    for q, ids in pairs(taken) do
      if left[q] then left[q] = left[q] - #ids end
    end
  end
  -- Keep each wake marker in step with its queue: set while work remains (so the next blocked
  -- claimer wakes), gone when the queue is empty (so no claimer wakes for nothing). A queue
  -- whose remaining tasks this worker refused keeps its marker as it is: re-setting it would
  -- wake this same worker again and again; the others find the tasks on their next claim.
  for q, rkey in ipairs(ready) do
    if not skipped[q] then
      local remaining = left[q] or rcall('ZCARD', rkey)
      wake_for(prefix .. 'wake:' .. string.sub(rkey, #prefix + 7), remaining)
    end
  end
  return out
end

-- Record a task's success and release the dependents waiting only on it (complete-2 and
-- complete_claim-4). Returns {1, released}, {0} when this lease already completed it, or an
-- error code (-1 not found, -2 stale lease, -3 wrong state with the status).
local function complete_task(prefix, id, token, result, cost)
  local key = prefix .. 'task:' .. id
  local f = rcall('HMGET', key, 'status', 'lease', 'worker_id', 'attempts', 'type', 'claimed_at',
                  'run_id')
  if not f[1] then return {NOT_FOUND} end
  if f[2] ~= token then return {STALE_LEASE} end
  if f[1] == 'complete' then return {0} end
  if f[1] ~= 'running' and f[1] ~= 'claimed' then return {WRONG_STATE, f[1]} end
  local now = now_ms()
  local took = now - num(f[6], now)
  defer_zrem(prefix .. 'active', id)
  bump(prefix, f[1] .. ':' .. f[5], -1)
  defer_zadd(prefix .. 'complete', now_text(), id)
  bump(prefix, 'complete:' .. f[5], 1)
  rcall('HSET', key, 'status', 'complete', 'result', result, 'completed_at', now_text(),
        'progress', '1', 'actual_duration', istr(took))
  add_cost(prefix, f[7], cost)
  emit(prefix, 'completed', id, f[3], 'complete', tonumber(f[4]), now, '"completion":' .. result)
  count_for_worker(prefix, f[3], id, 'tasks_completed', took)
  add_history(prefix, f[5], took)
  return {1, release_dependents(prefix, id, now)}
end
