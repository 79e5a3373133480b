-- update: change descriptive fields of a task that has not finished; re-scores a pending task
-- whose priority changed.
-- KEYS[1] task:<id>
-- ARGV[1] prefix, ARGV[2] task id, ARGV[3] JSON object of fields (string -> string)
-- Returns: {1}; -1 not found, -3 finished (with the status)
local prefix, id = ARGV[1], ARGV[2]
local f = rcall('HMGET', KEYS[1], 'status', 'type', 'assigned_to', 'seq')
if not f[1] then return {NOT_FOUND} end
if f[1] == 'complete' or f[1] == 'failed' or f[1] == 'cancelled' then return {WRONG_STATE, f[1]} end
local fields = {}
for k, v in pairs(cjson.decode(ARGV[3])) do
  table.insert(fields, k)
  table.insert(fields, v)
end
if #fields > 0 then rcall('HSET', KEYS[1], unpack(fields)) end
if f[1] == 'pending' then
  local priority = rcall('HGET', KEYS[1], 'priority')
  rcall('ZADD', prefix .. 'ready:' .. queue_of(f[2], f[3]), 'XX',
        ready_score(priority, f[4]), id)
end
return {1}
