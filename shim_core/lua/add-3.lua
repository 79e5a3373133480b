-- add: insert a batch of tasks atomically (validate everything, then write).
-- KEYS[1] seq        FIFO sequence counter
-- KEYS[2] queues     set of queue names
-- KEYS[3] waiting    set of tasks with incomplete dependencies
-- ARGV[1] prefix     'shim:{ns}:'
-- ARGV[2] run id     the run these tasks belong to ('': none): its record is written with them
-- ARGV[3] run        JSON object of the run record's fields (created_at is added), or ''
-- ARGV[4...]         the tasks, dependencies first, each as: n, id, type, priority, assigned
--                    worker ('': none), dependencies (JSON array, '': none), then the n field /
--                    value pairs of its hash. Flat arguments, not JSON: the pairs go to HSET as
--                    they came, and nothing is decoded but dependencies.
-- Builds: task:<id>, dependents:<dep>, ready:<queue>, wake:<queue>, counts, run:<id>, runs
-- Returns: {n tasks added, server ms}, or {code, task_id, detail}: DUPLICATE, MISSING_DEPENDENCY
-- Events: none (a task is announced when it starts; the counts show it queued)
local HEAD = 6 -- n, id, type, priority, assigned, dependencies
local prefix = ARGV[1]
local starts = {} -- the ARGV index of each task's n
local i = 4
while i <= #ARGV do
  table.insert(starts, i)
  i = i + HEAD + 2 * tonumber(ARGV[i])
end
local count = #starts

-- The first task whose id repeats one before it or names an existing task.
local in_batch, keys, repeated = {}, {}, nil
for n, at in ipairs(starts) do
  local id = ARGV[at + 1]
  if in_batch[id] and not repeated then repeated = n end
  in_batch[id] = true
  keys[n] = prefix .. 'task:' .. id
end
if rcall('EXISTS', unpack(keys)) > 0 then -- one call for the batch; the culprit only if any
  for n = 1, repeated or count do
    if rcall('EXISTS', keys[n]) == 1 then repeated = n break end
  end
end
if repeated then return {DUPLICATE, ARGV[starts[repeated] + 1], ''} end

local deps_of = {} -- task index -> its dependencies (decoded once; most tasks have none)
for n, at in ipairs(starts) do
  if ARGV[at + 5] ~= '' then
    deps_of[n] = cjson.decode(ARGV[at + 5])
    for _, dep in ipairs(deps_of[n]) do
      if not in_batch[dep] and rcall('EXISTS', prefix .. 'task:' .. dep) == 0 then
        return {MISSING_DEPENDENCY, ARGV[at + 1], dep}
      end
    end
  end
end

local now = now_text()
local top = rcall('INCRBY', KEYS[1], count) -- the FIFO sequence numbers of the whole batch
local known = {}
for n, at in ipairs(starts) do
  local id, ttype, assigned = ARGV[at + 1], ARGV[at + 2], ARGV[at + 4]
  local left, doomed = 0, nil
  for _, dep in ipairs(deps_of[n] or {}) do
    local st = rcall('HGET', prefix .. 'task:' .. dep, 'status')
    if st == 'failed' or st == 'cancelled' then doomed = dep end
    if st ~= 'complete' then
      left = left + 1
      rcall('SADD', prefix .. 'dependents:' .. dep, id)
    end
  end
  local seq = top - count + n
  local seq_s = istr(seq)
  local left_s = left == 0 and '0' or istr(left)
  local first, last = at + HEAD, at + HEAD - 1 + 2 * tonumber(ARGV[at])
  local key = keys[n]
  local status, score = 'pending', nil
  if doomed then
    status, score = 'cancelled', now
    local result = cjson.encode({success = false, error = 'dependency ' .. doomed .. ' failed'})
    rcall('HSET', key, 'status', 'cancelled', 'seq', seq_s, 'created_at', now, 'deps_left', left_s,
          'result', result, 'completed_at', now, unpack(ARGV, first, last))
  elseif left > 0 then
    status, score = 'waiting', 0
    rcall('HSET', key, 'status', 'waiting', 'seq', seq_s, 'created_at', now, 'deps_left', left_s,
          unpack(ARGV, first, last))
  else
    score = istr(ready_score(ARGV[at + 3], seq))
    rcall('HSET', key, 'status', 'pending', 'seq', seq_s, 'created_at', now, 'deps_left', left_s,
          'ready_at', now, unpack(ARGV, first, last))
  end
  -- After the hash is written: a task for a worker that has left loses its target here.
  local queue = home_queue(prefix, id, ttype, assigned)
  if not known[queue] then
    known[queue] = true
    rcall('SADD', KEYS[2], queue)
  end
  enter_set(prefix, id, status, queue, ttype, score, true)
end
local run = ARGV[2]
if run ~= '' then
  local fields = {'created_at', now}
  for k, v in pairs(cjson.decode(ARGV[3])) do
    table.insert(fields, k)
    table.insert(fields, v)
  end
  rcall('HSET', prefix .. 'run:' .. run, unpack(fields))
  rcall('ZADD', prefix .. 'runs', now, run)
end
return {count, now_ms()}
