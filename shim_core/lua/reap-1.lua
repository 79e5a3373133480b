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
  table.insert(out, id)
  table.insert(out, requeue_stalled(prefix, id, now, 'lease expired'))
end
return out
