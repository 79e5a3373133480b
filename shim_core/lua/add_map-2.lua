-- add_map: insert a batch of tasks made from one template (TaskQueue.add_map): the template's
-- fields come once, and each task adds only its id and params. The template has no dependencies
-- and no target worker (the queue sends such templates through add-3), so every task is pending.
-- KEYS[1] seq        FIFO sequence counter
-- KEYS[2] queues     set of queue names
-- ARGV[1] prefix     'shim:{ns}:'
-- ARGV[2] type, ARGV[3] priority of the template
-- ARGV[4] n          the template's field / value pairs that follow (id and params not among them)
-- ARGV[5 .. 4+2n]    those pairs, then per task: id, params (JSON; '': at their default, not
--                    stored)
-- Builds: task:<id>, ready:<type>, wake:<type>, counts
-- Returns: {n tasks added, server ms}, or {DUPLICATE, task_id, ''}
-- Events: none (as add-3)
local prefix, ttype, priority = ARGV[1], ARGV[2], ARGV[3]
local first = 5 + 2 * tonumber(ARGV[4]) -- the ARGV index of the first task's id
local count = (#ARGV - first + 1) / 2
if count < 1 then return {0, now_ms()} end

local keys = {}
for n = 1, count do keys[n] = prefix .. 'task:' .. ARGV[first + 2 * n - 2] end
if rcall('EXISTS', unpack(keys)) > 0 then -- one call for the batch; the culprit only if any
  for n = 1, count do
    if rcall('EXISTS', keys[n]) == 1 then return {DUPLICATE, ARGV[first + 2 * n - 2], ''} end
  end
end

local now = now_text()
local top = rcall('INCRBY', KEYS[1], count)
-- One argument list for every HSET, the per-task values written into it each time: the seq at
-- 4, the id at 12, the params last (left off when empty).
local fields = {'status', 'pending', 'seq', '', 'created_at', now, 'deps_left', '0',
                'ready_at', now, 'id', ''}
for i = 5, first - 1 do table.insert(fields, ARGV[i]) end
table.insert(fields, 'params')
table.insert(fields, '')
local last = #fields
local ready = {} -- score, id, ... for one ZADD
local band = ready_score(priority, 0)
for n = 1, count do
  local at = first + 2 * n - 2
  local seq = top - count + n
  fields[4] = istr(seq)
  fields[12] = ARGV[at]
  if ARGV[at + 1] == '' then
    rcall('HSET', keys[n], unpack(fields, 1, last - 2))
  else
    fields[last] = ARGV[at + 1]
    rcall('HSET', keys[n], unpack(fields))
  end
  ready[2 * n - 1] = istr(band + seq)
  ready[2 * n] = ARGV[at]
end
chunked('ZADD', prefix .. 'ready:' .. ttype, ready, 1000)
rcall('SADD', KEYS[2], ttype)
bump(prefix, 'pending:' .. ttype, count)
wake_for(prefix .. 'wake:' .. ttype, count)
return {count, now_ms()}
