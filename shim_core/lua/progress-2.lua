-- progress: record a running task's progress, extend its lease and publish it.
-- KEYS[1] task:<id>, KEYS[2] active
-- ARGV[1] prefix, ARGV[2] task id, ARGV[3] lease token, ARGV[4] fraction 0..1,
-- ARGV[5] message, ARGV[6] lease ms
-- Returns: 1, or -1 not found, -2 stale lease, -3 wrong state (with the status)
-- Events: task:progress
local prefix, id, token = ARGV[1], ARGV[2], ARGV[3]
local f = rcall('HMGET', KEYS[1], 'status', 'lease', 'worker_id', 'attempts')
if not f[1] then return {NOT_FOUND} end
if f[2] ~= token then return {STALE_LEASE} end
if f[1] ~= 'running' and f[1] ~= 'claimed' then return {WRONG_STATE, f[1]} end
local now = now_ms()
local fraction = tonumber(ARGV[4])
local deadline = now + tonumber(ARGV[6])
rcall('HSET', KEYS[1], 'progress', ARGV[4], 'progress_message', ARGV[5],
      'lease_deadline', deadline)
rcall('ZADD', KEYS[2], 'XX', deadline, id)
local info = cjson.encode({current = math.floor(fraction * 100 + 0.5), total = 100,
                           percentage = fraction, message = ARGV[5]})
emit(prefix, 'progress', id, f[3], f[1], tonumber(f[4]), now, '"progress":' .. info)
return {1}
