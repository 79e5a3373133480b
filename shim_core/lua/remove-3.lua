-- remove: delete finished tasks older than a grace period (clean), or every task that has not
-- started yet (drain: pending, waiting and delayed), at most `limit` per call.
-- KEYS[1] queues, KEYS[2] waiting, KEYS[3] delayed
-- ARGV[1] prefix, ARGV[2] mode 'clean' or 'drain', ARGV[3] limit,
-- ARGV[4] (clean) grace ms, ARGV[5..] (clean) statuses to clean
-- Builds: complete / failed / cancelled, ready:<queue>, task:<id>, dependents:<id>, ckpt:<id>,
--         log:<id>, dependents:<dep> of each dependency
-- Returns: the number of tasks removed (call again while it equals the limit)
local prefix, limit = ARGV[1], tonumber(ARGV[3])
local victims = {}
local function collect(ids, status)
  for _, id in ipairs(ids) do
    if #victims >= limit then return end
    table.insert(victims, {id, status})
  end
end
if ARGV[2] == 'clean' then
  local cutoff = now_ms() - tonumber(ARGV[4])
  for i = 5, #ARGV do
    collect(rcall('ZRANGEBYSCORE', prefix .. ARGV[i], '-inf', cutoff, 'LIMIT', 0, limit), ARGV[i])
  end
else
  for _, queue in ipairs(rcall('SMEMBERS', KEYS[1])) do
    collect(rcall('ZRANGE', prefix .. 'ready:' .. queue, 0, limit - 1), 'pending')
  end
  collect(rcall('ZRANGE', KEYS[3], 0, limit - 1), 'retrying')
  collect(rcall('SRANDMEMBER', KEYS[2], limit), 'waiting')
end
for _, v in ipairs(victims) do
  local id, status = v[1], v[2]
  local key = prefix .. 'task:' .. id
  local f = rcall('HMGET', key, 'type', 'assigned_to')
  leave(prefix, id, status, queue_of(f[1], f[2]), f[1])
  unlink(prefix, id)
  rcall('DEL', key, prefix .. 'dependents:' .. id, prefix .. 'ckpt:' .. id, prefix .. 'log:' .. id)
end
return #victims
