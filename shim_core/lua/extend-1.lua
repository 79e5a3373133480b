-- extend: renew the leases of a worker's tasks (one call per heartbeat, however many tasks).
-- KEYS[1] active
-- ARGV[1] prefix, ARGV[2] lease ms, ARGV[3..] task id, token, task id, token, ...
-- Returns: the ids whose lease is lost (stale token, reaped, cancelled or finished)
local prefix = ARGV[1]
local deadline = now_ms() + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local key = prefix .. 'task:' .. id
  local f = rcall('HMGET', key, 'status', 'lease')
  if f[2] == token and (f[1] == 'running' or f[1] == 'claimed') then
    rcall('ZADD', KEYS[1], 'XX', deadline, id)
    rcall('HSET', key, 'lease_deadline', deadline)
  else
    table.insert(lost, id)
  end
end
return lost
