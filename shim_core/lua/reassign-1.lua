-- reassign: give a task to another worker (or to anyone): a pending task moves queue; an active
-- task's lease is voided (its worker's result will be refused) and it is pending again at once.
-- KEYS[1] task:<id>
-- ARGV[1] prefix, ARGV[2] task id, ARGV[3] target worker id ('' = any worker)
-- Builds: ready:<queue>, wake:<queue>, queues, active, counts
-- Returns: {1}; -1 not found, -3 not pending or active (with the status)
-- Events: task:released (for an active task)
local prefix, id, target = ARGV[1], ARGV[2], ARGV[3]
local f = rcall('HMGET', KEYS[1], 'status', 'type')
if not f[1] then return {NOT_FOUND} end
if f[1] == 'pending' then
  retarget(prefix, id, target)
  return {1}
end
if f[1] ~= 'running' and f[1] ~= 'claimed' then return {WRONG_STATE, f[1]} end
rcall('HSET', KEYS[1], 'lease', 0)
if num(rcall('HGET', KEYS[1], 'attempts'), 0) > 0 then
  rcall('HINCRBY', KEYS[1], 'attempts', -1)  -- taken away, not failed: the attempt is given back
end
if target == '' then rcall('HDEL', KEYS[1], 'assigned_to') else rcall('HSET', KEYS[1], 'assigned_to', target) end
rcall('SADD', prefix .. 'queues', queue_of(f[2], target))
make_pending(prefix, id, f[1], now_ms(), 'released')
return {1}
