-- scan: crash detection. Declares crashed (and requeues the tasks of) every worker whose
-- heartbeat deadline passed, and every worker whose liveness connection has been gone for
-- longer than the grace period. Idempotent; any process may run it at any time.
-- KEYS[1] workers (zset: heartbeat deadline), KEYS[2] active
-- ARGV[1] prefix, ARGV[2] grace ms, ARGV[3..] worker id, then '1' alive, '0' no liveness
--         subscriber, or 'X' declare crashed now (an operator's or a test's decision)
-- Builds: worker:<id>, task:<id> of their leases, ready:<queue>, wake:<queue>, failed, counts
-- Returns: {worker, reason, n, task1, outcome1, ..., worker, reason, n, ...}
-- Events: worker:crashed, task:stalled / task:failed for each requeued task
local prefix, grace = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local out = {}
local function crash(worker, reason)
  local tasks = crash_worker(prefix, worker, now, reason)
  table.insert(out, worker)
  table.insert(out, reason)
  table.insert(out, #tasks / 2)
  for _, v in ipairs(tasks) do table.insert(out, v) end
end
for _, worker in ipairs(rcall('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  crash(worker, 'missed its heartbeats')
end
for i = 3, #ARGV, 2 do
  local worker, alive = ARGV[i], ARGV[i + 1]
  local wkey = prefix .. 'worker:' .. worker
  if rcall('ZSCORE', KEYS[1], worker) then
    if alive == 'X' then
      crash(worker, 'declared crashed')
    elseif alive == '1' then
      rcall('HDEL', wkey, 'suspect_since')
    else
      local since = tonumber(rcall('HGET', wkey, 'suspect_since') or '')
      if not since then
        rcall('HSET', wkey, 'suspect_since', now)
      elseif now - since >= grace then
        crash(worker, 'lost its connection')
      end
    end
  end
end
return out
