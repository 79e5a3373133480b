-- register: add (or re-add) a worker to the registry, idle, with a fresh heartbeat deadline.
-- KEYS[1] worker:<id>, KEYS[2] workers (zset: heartbeat deadline), KEYS[3] worker-ids (set)
-- ARGV[1] prefix, ARGV[2] worker id, ARGV[3] heartbeat interval ms, ARGV[4] missed beats allowed,
-- ARGV[5] JSON object of descriptive fields (string -> string)
-- Returns: the deadline (ms) by which the next heartbeat must arrive
-- Events: worker:registered
local prefix, id = ARGV[1], ARGV[2]
local interval, misses = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local fields = {}
for k, v in pairs(cjson.decode(ARGV[5])) do
  table.insert(fields, k)
  table.insert(fields, v)
end
rcall('DEL', KEYS[1])
if #fields > 0 then rcall('HSET', KEYS[1], unpack(fields)) end
rcall('HSET', KEYS[1], 'id', id, 'status', 'idle', 'interval_ms', interval, 'misses', misses,
      'registered_at', now, 'last_seen', now, 'last_activity_at', now,
      'tasks_completed', 0, 'tasks_failed', 0, 'total_duration', 0)
local deadline = now + interval * misses
rcall('ZADD', KEYS[2], deadline, id)
rcall('SADD', KEYS[3], id)
emit_worker(prefix, 'registered', id, now, nil)
return deadline
