-- retry: run a failed or cancelled task again (attempts and stalls start over). It waits if some
-- dependency is not complete; it is refused while a dependency is failed or cancelled.
-- KEYS[1] task:<id>
-- ARGV[1] prefix, ARGV[2] task id
-- Builds: failed / cancelled, waiting, ready:<queue>, dependents:<dep>, counts
-- Returns: {1, new status}; -1 not found, -3 not failed or cancelled, or blocked (with why)
-- Events: task:released when it is claimable at once
local prefix, id = ARGV[1], ARGV[2]
local f = rcall('HMGET', KEYS[1], 'status', 'type', 'assigned_to', 'dependencies')
if not f[1] then return {NOT_FOUND} end
if f[1] ~= 'failed' and f[1] ~= 'cancelled' then return {WRONG_STATE, f[1]} end
local deps = cjson.decode(f[4] or '[]')
local open_deps = {}
for _, dep in ipairs(deps) do
  local d = rcall('HMGET', prefix .. 'task:' .. dep, 'status', 'on_failure')
  if not d[1] then return {WRONG_STATE, 'blocked: dependency ' .. dep .. ' no longer exists'} end
  local done = d[1] == 'complete' or (d[1] == 'failed' and d[2] == 'continue')
  if d[1] == 'cancelled' or (d[1] == 'failed' and not done) then
    return {WRONG_STATE, 'blocked: dependency ' .. dep .. ' is ' .. d[1] .. ' (retry it first)'}
  end
  if not done then table.insert(open_deps, dep) end
end
local now = now_ms()
local left = #open_deps
for _, dep in ipairs(open_deps) do rcall('SADD', prefix .. 'dependents:' .. dep, id) end
rcall('HSET', KEYS[1], 'attempts', 0, 'stalls', 0, 'lease', 0, 'deps_left', left, 'progress', 0)
rcall('HDEL', KEYS[1], 'result', 'completed_at', 'due_at')
local queue = queue_of(f[2], f[3])
if left > 0 then
  leave(prefix, id, f[1], queue, f[2])
  enter(prefix, id, 'waiting', queue, f[2], 0)
  return {1, 'waiting'}
end
make_pending(prefix, id, f[1], now, 'released')
return {1, 'pending'}
