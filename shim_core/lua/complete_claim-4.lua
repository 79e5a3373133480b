-- complete_claim: complete a task and claim the next ones in the same call, so a busy worker
-- spends one round trip per task instead of two.
-- KEYS[1] active, KEYS[2] delayed, KEYS[3] paused, KEYS[4] task:<id> (the task completed)
-- KEYS[5...] ready:<queue> of every queue the claimer takes (its types, '@<worker>')
-- ARGV[1] prefix, ARGV[2] worker id, ARGV[3] count, ARGV[4] lease ms, ARGV[5] '1' = start now,
-- ARGV[6] task id, ARGV[7] lease token, ARGV[8] result JSON (TaskResult), ARGV[9] cost ('' none)
-- Builds: as complete-2 and claim-3
-- Returns: {1 or 0, released, next_due, token1, {fields}, ...} as complete-2 then claim-3; on a
--          refused completion {code, detail} and nothing is claimed
-- Events: as complete-2 and claim-3
local done = complete_task(ARGV[1], ARGV[6], ARGV[7], ARGV[8], ARGV[9])
if done[1] < 0 then return {done[1], done[2] or ''} end
local ready = {}
for i = 5, #KEYS do table.insert(ready, KEYS[i]) end
local claimed = claim_tasks(ARGV[1], KEYS[2], KEYS[3], ready, ARGV[2], tonumber(ARGV[3]),
                            tonumber(ARGV[4]), (ARGV[5] == '1') and 'running' or 'claimed')
local out = {done[1], done[2] or 0}
for _, v in ipairs(claimed) do table.insert(out, v) end
return out
