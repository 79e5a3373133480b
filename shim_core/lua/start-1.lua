-- start: a claimed task begins running.
-- KEYS[1] task:<id>   (counts and the event channel: same slot; the active set is unchanged)
-- ARGV[1] prefix, ARGV[2] task id, ARGV[3] lease token
-- Returns: 1, or -1 not found, -2 stale lease, -3 wrong state (with the status)
-- Events: task:started
local prefix, id, token = ARGV[1], ARGV[2], ARGV[3]
local f = rcall('HMGET', KEYS[1], 'status', 'lease', 'worker_id', 'attempts')
if not f[1] then return {NOT_FOUND} end
if f[2] ~= token then return {STALE_LEASE} end
if f[1] == 'running' then return {1} end
if f[1] ~= 'claimed' then return {WRONG_STATE, f[1]} end
rcall('HSET', KEYS[1], 'status', 'running')
local ttype = rcall('HGET', KEYS[1], 'type')
rcall('HINCRBY', prefix .. 'counts', 'claimed:' .. ttype, -1)
rcall('HINCRBY', prefix .. 'counts', 'running:' .. ttype, 1)
emit(prefix, 'started', id, f[3], 'running', tonumber(f[4]), now_ms())
return {1}
