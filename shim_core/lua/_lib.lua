-- Shared helpers, prepended to every script by shim_core/scripts.py (never loaded alone).
-- Keys built here mirror shim_core/keys.py: prefix .. 'task:' .. id, 'ready:' .. queue, ...
-- Everything is local: a script that touches a global would poison fakeredis.
local rcall = redis.call

local BANDS = {critical = 0, high = 1, normal = 2, low = 3}
local BAND_WIDTH = 10000000000000 -- 1e13 FIFO slots per priority band; scores stay exact doubles

local function now_ms()
  local t = rcall('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function queue_of(ttype, assigned_to)
  if assigned_to and assigned_to ~= '' then return '@' .. assigned_to end
  return ttype
end

local function ready_score(priority, seq)
  return (BANDS[priority] or 2) * BAND_WIDTH + tonumber(seq)
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
  rcall('HINCRBY', prefix .. 'counts', status .. ':' .. ttype, -1)
end

-- Put a task in the state set of `status` (score: ready order, deadline, due or finish time).
local function enter(prefix, id, status, queue, ttype, score)
  local key = state_key(prefix, status, queue)
  if status == 'waiting' then rcall('SADD', key, id) else rcall('ZADD', key, score, id) end
  rcall('HINCRBY', prefix .. 'counts', status .. ':' .. ttype, 1)
  rcall('HSET', prefix .. 'task:' .. id, 'status', status)
  if status == 'pending' then rcall('ZADD', prefix .. 'wake:' .. queue, 0, '1') end
end

-- Publish a ProgressEvent (JSON) on prefix .. 'task:' .. etype. `tail` is raw JSON members
-- spliced in as-is (e.g. '"completion":{...}'), so stored JSON is never decoded and re-encoded.
local function emit(prefix, etype, id, worker, status, attempt, now, tail)
  local event = cjson.encode({
    id = tostring(rcall('INCR', prefix .. 'evseq')),
    type = etype, task_id = id, worker_id = worker or '',
    status = status, attempt = attempt, timestamp = now,
  })
  if tail then event = string.sub(event, 1, -2) .. ',' .. tail .. '}' end
  rcall('PUBLISH', prefix .. 'task:' .. etype, event)
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
  for _, child in ipairs(rcall('SMEMBERS', depkey)) do
    local ckey = prefix .. 'task:' .. child
    if rcall('HGET', ckey, 'status') == 'waiting'
        and rcall('HINCRBY', ckey, 'deps_left', -1) <= 0 then
      make_pending(prefix, child, 'waiting', now, 'released')
      released = released + 1
    end
  end
  rcall('DEL', depkey)
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

-- Publish a worker event on prefix .. 'worker:' .. etype.
local function emit_worker(prefix, etype, worker, now, tail)
  local event = cjson.encode({
    id = tostring(rcall('INCR', prefix .. 'evseq')), type = etype, worker_id = worker,
    timestamp = now,
  })
  if tail then event = string.sub(event, 1, -2) .. ',' .. tail .. '}' end
  rcall('PUBLISH', prefix .. 'worker:' .. etype, event)
end

-- A lease was lost without the worker reporting (stall, crash): back to pending with a stall
-- counted, or failed for good past max_stalled. Returns the new status.
local function requeue_stalled(prefix, id, now, why)
  local key = prefix .. 'task:' .. id
  local f = rcall('HMGET', key, 'status', 'type', 'max_stalled', 'worker_id', 'attempts')
  local stalls = rcall('HINCRBY', key, 'stalls', 1)
  rcall('HSET', key, 'lease', 0)
  if stalls > tonumber(f[3] or '0') then
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
  rcall('ZADD', prefix .. 'wake:' .. queue, 0, '1')
end

-- Tasks assigned to a worker that left go back to their type's queue for anyone to claim.
local function untarget(prefix, worker, now)
  for _, id in ipairs(rcall('ZRANGE', prefix .. 'ready:@' .. worker, 0, -1)) do
    retarget(prefix, id, '')
  end
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

-- Worker statistics kept by the scripts that finish a task (only for registered workers).
local function count_for_worker(prefix, worker, id, field, duration)
  if not worker then return end
  local wkey = prefix .. 'worker:' .. worker
  if rcall('EXISTS', wkey) == 1 then
    rcall('HINCRBY', wkey, field, 1)
    if duration then rcall('HINCRBY', wkey, 'total_duration', duration) end
    if rcall('HGET', wkey, 'current_task') == id then rcall('HDEL', wkey, 'current_task') end
  end
end

-- Renew the leases given as ARGV[first..] (task id, token pairs) until `deadline`; appends the
-- ids whose lease is gone (stale token, not active any more) to `lost` and returns it.
local function renew_leases(prefix, first, deadline, lost)
  for i = first, #ARGV, 2 do
    local id, token = ARGV[i], ARGV[i + 1]
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


-- Add an execution's reported cost (ARGV string, '' for none) to its run's total.
local function add_cost(prefix, run, cost)
  if cost and cost ~= '' and run and run ~= '' and tonumber(cost) then
    rcall('HINCRBYFLOAT', prefix .. 'run:' .. run, 'cost_usd', cost)
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

-- Whether pending task `id` (fields f = {type, assigned_to, priority, seq, attempts, agent,
-- run_id}) may be claimed now: 'ok'; 'moved' when it left the queue (its agent cools down
-- after a rate limit: to retrying until then, no attempt spent; its run's budget is spent:
-- cancelled); 'skip' when this worker refuses its agent (left for other workers).
local function claimable(prefix, id, f, refused, now)
  local agent = f[6]
  if not agent or agent == '' then return 'ok' end
  local cool = tonumber(rcall('HGET', prefix .. 'cooldowns', agent) or '0')
  if cool > now then
    leave(prefix, id, 'pending', queue_of(f[1], f[2]), f[1])
    enter(prefix, id, 'retrying', nil, f[1], cool)
    rcall('HSET', prefix .. 'task:' .. id, 'due_at', cool)
    emit(prefix, 'retrying', id, nil, 'retrying', tonumber(f[5]), now)
    return 'moved'
  end
  if f[7] and f[7] ~= '' then
    local b = rcall('HMGET', prefix .. 'run:' .. f[7], 'budget_usd', 'cost_usd')
    if b[1] and tonumber(b[2] or '0') >= tonumber(b[1]) then
      cancel_task(prefix, id, 'pending', f[1], queue_of(f[1], f[2]), nil, tonumber(f[5]), now,
                  'budget exhausted: run ' .. f[7] .. ' spent $' .. (b[2] or '0') .. ' of $' .. b[1])
      return 'moved'
    end
  end
  if refused[agent] then return 'skip' end
  return 'ok'
end

-- The first task of ready queue `rkey` this worker may claim now: id, score, type; and whether
-- tasks it refuses were passed over.
local function first_claimable(prefix, rkey, refused, now)
  local skipped = false
  local window = 1 -- the head alone in the common case; further only past unclaimable tasks
  while true do
    local items = rcall('ZRANGE', rkey, 0, window - 1, 'WITHSCORES')
    if #items == 0 then return nil, nil, nil, skipped end
    local moved = false
    for i = 1, #items, 2 do
      local id = items[i]
      local f = rcall('HMGET', prefix .. 'task:' .. id, 'type', 'assigned_to', 'priority', 'seq',
                      'attempts', 'agent', 'run_id')
      local verdict = claimable(prefix, id, f, refused, now)
      if verdict == 'ok' then return id, tonumber(items[i + 1]), f[1], skipped end
      if verdict == 'skip' then skipped = true else moved = true end
    end
    if not moved and (window == LOOKAHEAD or #items < window * 2) then
      return nil, nil, nil, skipped
    end
    window = LOOKAHEAD
  end
end

-- Claim up to `count` pending tasks from the `ready` queue keys, highest priority first, FIFO in
-- a band, after promoting due retries (claim-3 and complete_claim-4). Tasks of an agent that
-- cools down, or of a run whose budget is spent, leave the queue on the way (see claimable);
-- tasks of agents the worker refuses (its hash's `refused` field) are left for others.
-- Returns {ms until the next retry is due or -1, token1, {field, value, ...}, token2, ...}.
local function claim_tasks(prefix, delayed, paused, ready, worker, count, lease, status)
  local now = now_ms()
  for _, id in ipairs(rcall('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 1000)) do
    make_pending(prefix, id, 'retrying', now, 'released')
  end
  local wkey = prefix .. 'worker:' .. worker
  local has_worker, refused = false, {}
  if worker ~= '' then
    local w = rcall('HMGET', wkey, 'id', 'refused') -- a registered worker's hash has its id
    has_worker = w[1] ~= false
    if w[2] then refused = cjson.decode(w[2]) end
  end
  local skipped = {}
  local out = {-1}
  if rcall('EXISTS', paused) == 0 and count > 0 then
    for _ = 1, count do
      local best_key, best_id, best_score, best_type = nil, nil, nil, nil
      for _, rkey in ipairs(ready) do
        local id, score, ttype, passed = first_claimable(prefix, rkey, refused, now)
        if passed then skipped[rkey] = true end
        if id and (best_score == nil or score < best_score) then
          best_key, best_id, best_score, best_type = rkey, id, score, ttype
        end
      end
      if not best_id then break end
      local key = prefix .. 'task:' .. best_id
      rcall('ZREM', best_key, best_id)
      rcall('HINCRBY', prefix .. 'counts', 'pending:' .. best_type, -1)
      enter(prefix, best_id, status, nil, best_type, now + lease)
      local token = rcall('INCR', prefix .. 'fence')
      local attempt = rcall('HINCRBY', key, 'attempts', 1)
      rcall('HSET', key, 'lease', token, 'worker_id', worker, 'claimed_at', now,
            'lease_deadline', now + lease, 'progress', 0, 'progress_message', '')
      if status == 'running' then emit(prefix, 'started', best_id, worker, status, attempt, now) end
      if has_worker then
        rcall('HSET', wkey, 'current_task', best_id, 'last_activity_at', now)
      end
      table.insert(out, token)
      table.insert(out, rcall('HGETALL', key))
    end
    -- Keep each wake marker in step with its queue: set while work remains (so the next blocked
    -- claimer wakes), gone when the queue is empty (so no claimer wakes for nothing). A queue
    -- whose remaining tasks this worker refused keeps its marker as it is: re-setting it would
    -- wake this same worker again and again; the others find the tasks on their next claim.
    for _, rkey in ipairs(ready) do
      if not skipped[rkey] then
        local wake = prefix .. 'wake:' .. string.sub(rkey, #prefix + 7)
        if rcall('ZCARD', rkey) > 0 then rcall('ZADD', wake, 0, '1') else rcall('DEL', wake) end
      end
    end
  end
  local due = rcall('ZRANGE', delayed, 0, 0, 'WITHSCORES')
  if due[1] then out[1] = math.max(0, tonumber(due[2]) - now) end
  return out
end

-- Record a task's success and release the dependents waiting only on it (complete-2 and
-- complete_claim-4). Returns {1, released}, {0} when this lease already completed it, or an
-- error code (-1 not found, -2 stale lease, -3 wrong state with the status).
local function complete_task(prefix, id, token, result, cost)
  local key = prefix .. 'task:' .. id
  local f = rcall('HMGET', key, 'status', 'lease', 'worker_id', 'attempts', 'type', 'claimed_at',
                  'run_id')
  if not f[1] then return {-1} end
  if f[2] ~= token then return {-2} end
  if f[1] == 'complete' then return {0} end
  if f[1] ~= 'running' and f[1] ~= 'claimed' then return {-3, f[1]} end
  local now = now_ms()
  local took = now - tonumber(f[6])
  leave(prefix, id, f[1], nil, f[5])
  enter(prefix, id, 'complete', nil, f[5], now)
  rcall('HSET', key, 'result', result, 'completed_at', now, 'progress', 1, 'actual_duration', took)
  add_cost(prefix, f[7], cost)
  emit(prefix, 'completed', id, f[3], 'complete', tonumber(f[4]), now, '"completion":' .. result)
  count_for_worker(prefix, f[3], id, 'tasks_completed', took)
  rcall('HINCRBY', prefix .. 'history', f[5] .. ':n', 1)
  rcall('HINCRBY', prefix .. 'history', f[5] .. ':ms', took)
  return {1, release_dependents(prefix, id, now)}
end
