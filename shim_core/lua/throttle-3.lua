-- throttle: an execution hit its agent's rate limit. The agent cools down fleet-wide until the
-- limit resets (claims move that agent's tasks to retrying until then), and the task waits for
-- the same moment without spending an attempt.
-- KEYS[1] task:<id>, KEYS[2] delayed, KEYS[3] cooldowns (hash: agent -> cooldown end, ms)
-- ARGV[1] prefix, ARGV[2] task id, ARGV[3] lease token, ARGV[4] agent,
-- ARGV[5] reset time the agent reported (epoch ms, '' if none), ARGV[6] cooldown ms without one,
-- ARGV[7] longest cooldown ms (a reported reset further away is capped), ARGV[8] result JSON,
-- ARGV[9] cost in USD ('' for none)
-- Builds: active, counts, run:<run>, worker:<holder> (its current task)
-- Returns: {1, cooldown end ms}; {0, status} already recorded for this lease; -1 not found,
--          -2 stale lease, -3 wrong state (with the status)
-- Events: task:retrying
local prefix, id, token, agent = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local f = rcall('HMGET', KEYS[1], 'status', 'lease', 'worker_id', 'attempts', 'type', 'run_id')
if not f[1] then return {NOT_FOUND} end
if f[2] ~= token then return {STALE_LEASE} end
if f[1] == 'retrying' then return {0, f[1]} end
if f[1] ~= 'running' and f[1] ~= 'claimed' then return {WRONG_STATE, f[1]} end
local now = now_ms()
local reset = tonumber(ARGV[5])
if not reset or reset <= now then reset = now + tonumber(ARGV[6]) end
reset = math.min(reset, now + tonumber(ARGV[7]))
local cool = math.max(reset, num(rcall('HGET', KEYS[3], agent), 0))
rcall('HSET', KEYS[3], agent, cool)
add_cost(prefix, f[6], ARGV[9])
local attempts = math.max(num(f[4], 1) - 1, 0)  -- the rate limit spends no attempt
leave(prefix, id, f[1], nil, f[5])
enter(prefix, id, 'retrying', nil, f[5], cool)
-- The lease token stays: a repeated call (a reply lost on the way) is recognised above.
rcall('HSET', KEYS[1], 'result', ARGV[8], 'due_at', cool, 'attempts', attempts)
local wkey = prefix .. 'worker:' .. (f[3] or '')
if f[3] and rcall('HGET', wkey, 'current_task') == id then rcall('HDEL', wkey, 'current_task') end
emit(prefix, 'retrying', id, f[3], 'retrying', attempts, now, '"completion":' .. ARGV[8])
return {1, cool}
