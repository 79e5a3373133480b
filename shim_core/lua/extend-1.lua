-- extend: renew the leases of a worker's tasks (one call per heartbeat, however many tasks).
-- KEYS[1] active
-- ARGV[1] prefix, ARGV[2] lease ms, ARGV[3..] task id, token, task id, token, ...
-- Returns: the ids whose lease is lost (stale token, reaped, cancelled or finished)
local prefix = ARGV[1]
return renew_leases(prefix, ARGV, 3, now_ms() + tonumber(ARGV[2]), {})
