-- cancel: stop a task that has not finished, and every task that depends on it.
-- KEYS[1] task:<id>
-- ARGV[1] prefix, ARGV[2] task id, ARGV[3] reason
-- Builds: the task's state set, counts, dependents' keys
-- Returns: {1, cancelled dependents}; {0} already cancelled; -1 not found, -3 finished (status)
-- Events: task:cancelled for the task and each dependent. A running task's lease is void from
-- now on: its worker learns it from extend / progress / complete being refused.
local prefix, id = ARGV[1], ARGV[2]
local f = rcall('HMGET', KEYS[1], 'status', 'type', 'assigned_to', 'attempts', 'worker_id')
if not f[1] then return {NOT_FOUND} end
if f[1] == 'cancelled' then return {0} end
if f[1] == 'complete' or f[1] == 'failed' then return {WRONG_STATE, f[1]} end
return {1, cancel_task(prefix, id, f[1], f[2], queue_of(f[2], f[3]), f[5], tonumber(f[4]),
                      now_ms(), ARGV[3])}
