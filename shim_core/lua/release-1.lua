-- release: a worker hands a task back unfinished (graceful shutdown): pending again at once,
-- no stall counted.
-- KEYS[1] task:<id>
-- ARGV[1] prefix, ARGV[2] task id, ARGV[3] lease token
-- Returns: {1}; -1 not found, -2 stale lease, -3 not active (with the status)
-- Events: task:released
local prefix, id = ARGV[1], ARGV[2]
local f = rcall('HMGET', KEYS[1], 'status', 'lease')
if not f[1] then return {NOT_FOUND} end
if f[2] ~= ARGV[3] then return {STALE_LEASE} end
if f[1] ~= 'running' and f[1] ~= 'claimed' then return {WRONG_STATE, f[1]} end
rcall('HSET', KEYS[1], 'lease', 0)
if num(rcall('HGET', KEYS[1], 'attempts'), 0) > 0 then
  rcall('HINCRBY', KEYS[1], 'attempts', -1)  -- the attempt never ran to an end
end
make_pending(prefix, id, f[1], now_ms(), 'released')
return {1}
