-- reap: return tasks whose lease expired (their worker stalled or died) to pending; a task that
-- stalls more than its max_stalled times fails for good. Idempotent; safe to run anywhere.
-- KEYS[1] active
-- ARGV[1] prefix, ARGV[2] max tasks per call
-- Builds: task:<id>, ready:<queue>, wake:<queue>, failed, counts, dependents' keys
-- Returns: {id1, outcome1, id2, outcome2, ...} with outcome 'pending' or 'failed'
-- Events: task:stalled (requeued), or task:failed
local prefix = ARGV[1]
local now = now_ms()
local out = {}
for _, id in ipairs(rcall('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))) do
  local key = prefix .. 'task:' .. id
  local f = rcall('HMGET', key, 'status', 'type', 'max_stalled', 'worker_id', 'attempts')
  local stalls = rcall('HINCRBY', key, 'stalls', 1)
  rcall('HSET', key, 'lease', 0)
  if stalls > tonumber(f[3] or '0') then
    local result = cjson.encode({success = false,
                                 error = 'stalled ' .. stalls .. ' times (worker lost)'})
    fail_final(prefix, id, f[1], nil, f[2], now, result, f[4], tonumber(f[5]))
    table.insert(out, id)
    table.insert(out, 'failed')
  else
    make_pending(prefix, id, f[1], now, 'stalled')
    table.insert(out, id)
    table.insert(out, 'pending')
  end
end
return out
