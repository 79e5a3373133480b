-- resume: lift a pause and wake the claimers of every queue that has work.
-- KEYS[1] paused, KEYS[2] queues
-- ARGV[1] prefix
-- Builds: ready:<queue>, wake:<queue>
-- Returns: the number of queues woken
local prefix = ARGV[1]
rcall('DEL', KEYS[1])
local woken = 0
for _, queue in ipairs(rcall('SMEMBERS', KEYS[2])) do
  if rcall('ZCARD', prefix .. 'ready:' .. queue) > 0 then
    rcall('ZADD', prefix .. 'wake:' .. queue, 0, '1')
    woken = woken + 1
  end
end
return woken
