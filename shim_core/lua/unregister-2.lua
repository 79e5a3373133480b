-- unregister: a worker leaves the fleet cleanly (status offline, kept for the record).
-- KEYS[1] worker:<id>, KEYS[2] workers
-- ARGV[1] prefix, ARGV[2] worker id
-- Builds: ready:@<id> and wake:@<id> (removed), and the ready queues of its targeted tasks (they
--         go back to their type)
-- Returns: 1, or 0 when the worker is unknown
-- Events: worker:offline
local prefix, id = ARGV[1], ARGV[2]
if rcall('EXISTS', KEYS[1]) == 0 then return 0 end
local now = now_ms()
rcall('HSET', KEYS[1], 'status', 'offline', 'offline_at', now, 'last_activity_at', now)
rcall('HDEL', KEYS[1], 'current_task', 'suspect_since')
rcall('ZREM', KEYS[2], id)
untarget(prefix, id, now)
emit_worker(prefix, 'offline', id, now, nil)
return 1
