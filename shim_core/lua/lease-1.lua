-- lease: check that a token is the current lease of an active task (read-only).
-- KEYS[1] task:<id>
-- ARGV[1] lease token
-- Returns: {1}; -1 not found, -2 stale lease, -3 not active (with the status)
local f = redis.call('HMGET', KEYS[1], 'status', 'lease')
if not f[1] then return {NOT_FOUND} end
if f[2] ~= ARGV[1] then return {STALE_LEASE} end
if f[1] ~= 'running' and f[1] ~= 'claimed' then return {WRONG_STATE, f[1]} end
return {1}
