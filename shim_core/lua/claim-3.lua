-- claim: lease up to `count` pending tasks, highest priority first, FIFO within a priority band.
-- KEYS[1] active     leased tasks by lease deadline
-- KEYS[2] delayed    tasks in retry backoff by due time (due ones are promoted first)
-- KEYS[3] paused     exists while the namespace is paused
-- KEYS[4...]         ready:<queue> of every queue the claimer takes (its types, '@<worker>')
-- ARGV[1] prefix, ARGV[2] worker id, ARGV[3] count, ARGV[4] lease ms, ARGV[5] '1' = start now
-- Builds: task:<id>, fence, wake:<queue>, counts, worker:<id> (current task, when registered)
-- Returns: {ms until the next delayed task is due or -1, token1, {field, value, ...}, token2, {...}, ...}
-- Events: task:released (promoted from backoff), task:started (when ARGV[5] is '1')
local prefix, worker = ARGV[1], ARGV[2]
local count, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local status = (ARGV[5] == '1') and 'running' or 'claimed'
local now = now_ms()

for _, id in ipairs(rcall('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)) do
  make_pending(prefix, id, 'retrying', now, 'released')
end

local wkey = prefix .. 'worker:' .. worker
local has_worker = worker ~= '' and rcall('EXISTS', wkey) == 1
local out = {-1}
if rcall('EXISTS', KEYS[3]) == 0 then
  for _ = 1, count do
    local best_key, best_id, best_score = nil, nil, nil
    for i = 4, #KEYS do
      local head = rcall('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
      if head[1] and (best_score == nil or tonumber(head[2]) < best_score) then
        best_key, best_id, best_score = KEYS[i], head[1], tonumber(head[2])
      end
    end
    if not best_id then break end
    local key = prefix .. 'task:' .. best_id
    local ttype = rcall('HGET', key, 'type')
    rcall('ZREM', best_key, best_id)
    rcall('HINCRBY', prefix .. 'counts', 'pending:' .. ttype, -1)
    enter(prefix, best_id, status, nil, ttype, now + lease)
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
  -- claimer wakes), gone when the queue is empty (so no claimer wakes for nothing).
  for i = 4, #KEYS do
    local wake = prefix .. 'wake:' .. string.sub(KEYS[i], #prefix + 7)
    if rcall('ZCARD', KEYS[i]) > 0 then rcall('ZADD', wake, 0, '1') else rcall('DEL', wake) end
  end
end
local due = rcall('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if due[1] then out[1] = math.max(0, tonumber(due[2]) - now) end
return out
