-- complete: record a task's result and release the tasks that were waiting only on it.
-- KEYS[1] task:<id>, KEYS[2] waiting
-- ARGV[1] prefix, ARGV[2] task id, ARGV[3] lease token, ARGV[4] result JSON (TaskResult)
-- Builds: dependents:<id>, task:<dependent>, ready:<queue>, wake:<queue>, active, complete, counts,
--         worker:<holder> (statistics), history (durations per type, for estimates)
-- Returns: {1, released count}; {0} when this same lease already completed it (a retried call);
--          -1 not found, -2 stale lease, -3 wrong state (with the status)
-- Events: task:completed, task:released for each dependent that became claimable
local prefix, id, token = ARGV[1], ARGV[2], ARGV[3]
local f = rcall('HMGET', KEYS[1], 'status', 'lease', 'worker_id', 'attempts', 'type', 'claimed_at')
if not f[1] then return {-1} end
if f[2] ~= token then return {-2} end
if f[1] == 'complete' then return {0} end
if f[1] ~= 'running' and f[1] ~= 'claimed' then return {-3, f[1]} end
local now = now_ms()
leave(prefix, id, f[1], nil, f[5])
enter(prefix, id, 'complete', nil, f[5], now)
rcall('HSET', KEYS[1], 'result', ARGV[4], 'completed_at', now, 'progress', 1,
      'actual_duration', now - tonumber(f[6]))
emit(prefix, 'completed', id, f[3], 'complete', tonumber(f[4]), now, '"completion":' .. ARGV[4])
count_for_worker(prefix, f[3], id, 'tasks_completed', now - tonumber(f[6]))
rcall('HINCRBY', prefix .. 'history', f[5] .. ':n', 1)
rcall('HINCRBY', prefix .. 'history', f[5] .. ':ms', now - tonumber(f[6]))
return {1, release_dependents(prefix, id, now)}
