-- add: insert a batch of tasks atomically (validate everything, then write).
-- KEYS[1] seq        FIFO sequence counter
-- KEYS[2] queues     set of queue names
-- KEYS[3] waiting    set of tasks with incomplete dependencies
-- ARGV[1] prefix     'shim:{ns}:'
-- ARGV[2] tasks      JSON array of task hashes (string -> string), dependencies first
-- ARGV[3] run id     (optional) the run these tasks belong to: its record is written with them
-- ARGV[4] run        (optional) JSON object of the run record's fields (created_at is added)
-- Builds: task:<id>, dependents:<dep>, ready:<queue>, wake:<queue>, counts, run:<id>, runs
-- Returns: {n tasks added, server ms}, or {code, task_id, detail}: DUPLICATE, MISSING_DEPENDENCY
-- Events: none (a task is announced when it starts; the counts show it queued)
local prefix = ARGV[1]
local tasks = cjson.decode(ARGV[2])

local in_batch = {}
for _, t in ipairs(tasks) do
  if in_batch[t.id] or rcall('EXISTS', prefix .. 'task:' .. t.id) == 1 then
    return {DUPLICATE, t.id, ''}
  end
  in_batch[t.id] = true
end
local deps_of = {} -- task index -> its dependencies (decoded once; most tasks have none)
for n, t in ipairs(tasks) do
  if t.dependencies then
    deps_of[n] = cjson.decode(t.dependencies)
    for _, dep in ipairs(deps_of[n]) do
      if not in_batch[dep] and rcall('EXISTS', prefix .. 'task:' .. dep) == 0 then
        return {MISSING_DEPENDENCY, t.id, dep}
      end
    end
  end
end

local now = now_ms()
local top = rcall('INCRBY', KEYS[1], #tasks) -- the FIFO sequence numbers of the whole batch
local known = {}
for n, t in ipairs(tasks) do
  local key = prefix .. 'task:' .. t.id
  local left, doomed = 0, nil
  for _, dep in ipairs(deps_of[n] or {}) do
    local st = rcall('HGET', prefix .. 'task:' .. dep, 'status')
    if st == 'failed' or st == 'cancelled' then doomed = dep end
    if st ~= 'complete' then
      left = left + 1
      rcall('SADD', prefix .. 'dependents:' .. dep, t.id)
    end
  end
  local seq = top - #tasks + n
  local fields = {'seq', seq, 'created_at', now, 'deps_left', left}
  for k, v in pairs(t) do
    table.insert(fields, k)
    table.insert(fields, v)
  end
  local queue = home_queue(prefix, t.id, t.type, t.assigned_to)
  if not known[queue] then
    known[queue] = true
    rcall('SADD', KEYS[2], queue)
  end
  if doomed then
    local result = cjson.encode({success = false, error = 'dependency ' .. doomed .. ' failed'})
    table.insert(fields, 'result')
    table.insert(fields, result)
    table.insert(fields, 'completed_at')
    table.insert(fields, now)
    enter(prefix, t.id, 'cancelled', nil, t.type, now, fields)
  elseif left > 0 then
    enter(prefix, t.id, 'waiting', queue, t.type, 0, fields)
  else
    enter(prefix, t.id, 'pending', queue, t.type, ready_score(t.priority, seq), fields)
  end
end
local run = ARGV[3]
if run and run ~= '' then
  local fields = {'created_at', now}
  for k, v in pairs(cjson.decode(ARGV[4])) do
    table.insert(fields, k)
    table.insert(fields, v)
  end
  rcall('HSET', prefix .. 'run:' .. run, unpack(fields))
  rcall('ZADD', prefix .. 'runs', now, run)
end
return {#tasks, now}
