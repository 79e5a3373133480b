-- heartbeat: a worker is alive; renew its deadline and the leases of the tasks it runs.
-- KEYS[1] worker:<id>, KEYS[2] workers
-- ARGV[1] prefix, ARGV[2] worker id, ARGV[3] lease ms, ARGV[4] status ('' = unchanged),
-- ARGV[5..] task id, token, task id, token, ...
-- Builds: active, task:<id> for each lease
-- Returns: {1, lost ids...}; {-1, all ids} unknown worker; {-6, all ids} declared crashed
--          (the worker must stop its tasks: their leases are void, and register again)
-- Events: worker:heartbeat
local prefix, id = ARGV[1], ARGV[2]
local f = rcall('HMGET', KEYS[1], 'status', 'interval_ms', 'misses')
local code = 1
if not f[1] then code = NOT_FOUND elseif f[1] == 'crashed' or f[1] == 'offline' then code = WORKER_GONE end
local out = {code}
if code ~= 1 then
  for i = 5, #ARGV, 2 do table.insert(out, ARGV[i]) end
  return out
end
local now = now_ms()
rcall('HSET', KEYS[1], 'last_seen', now)
rcall('HDEL', KEYS[1], 'suspect_since')
if ARGV[4] ~= '' then rcall('HSET', KEYS[1], 'status', ARGV[4]) end
rcall('ZADD', KEYS[2], now + num(f[2], 10000) * num(f[3], 3), id) -- the seed's defaults
renew_leases(prefix, ARGV, 5, now + tonumber(ARGV[3]), out)
emit_worker(prefix, 'heartbeat', id, now, nil)
return out
