-- fail: an execution failed; retry after backoff while attempts are left, else fail for good.
-- KEYS[1] task:<id>, KEYS[2] delayed
-- ARGV[1] prefix, ARGV[2] task id, ARGV[3] lease token, ARGV[4] result JSON,
-- ARGV[5] jitter: the backoff is stretched by this fraction (0 = none), ARGV[6] '1' = permanent (no retry),
-- ARGV[7] cost in USD of the execution ('' for none), added to the run's total
-- Builds: active, failed, counts, run:<run>, and for a final failure every transitive dependent's keys
-- Returns: {1, due_ms} retrying, {2, cancelled dependents} failed, {0, status} already recorded
--          for this lease (a repeated call); -1 not found, -2 stale lease, -3 wrong state (with the status)
-- Events: task:retrying, or task:failed and task:cancelled for each dependent
local prefix, id, token = ARGV[1], ARGV[2], ARGV[3]
local f = rcall('HMGET', KEYS[1], 'status', 'lease', 'worker_id', 'attempts', 'type',
                'max_attempts', 'backoff_ms', 'run_id')
if not f[1] then return {NOT_FOUND} end
if f[2] ~= token then return {STALE_LEASE} end
if f[1] == 'failed' or f[1] == 'retrying' then return {0, f[1]} end
if f[1] ~= 'running' and f[1] ~= 'claimed' then return {WRONG_STATE, f[1]} end
local now = now_ms()
local attempts = num(f[4], 1)
add_cost(prefix, f[8], ARGV[7])
count_for_worker(prefix, f[3], id, 'tasks_failed', nil)
if ARGV[6] ~= '1' and attempts < num(f[6], 1) then
  local due = now + math.floor(num(f[7], 0) * 2 ^ (attempts - 1) * (1 + tonumber(ARGV[5])))
  leave(prefix, id, f[1], nil, f[5])
  enter(prefix, id, 'retrying', nil, f[5], due)
  rcall('HSET', KEYS[1], 'result', ARGV[4], 'due_at', due)
  emit(prefix, 'retrying', id, f[3], 'retrying', attempts, now, '"completion":' .. ARGV[4])
  return {1, due}
end
return {2, fail_final(prefix, id, f[1], nil, f[5], now, ARGV[4], f[3], attempts)}
