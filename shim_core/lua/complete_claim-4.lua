-- complete_claim: record a batch of completions and claim the next tasks in the same call, so a
-- busy worker spends one round trip for everything that finished since its last call.
-- KEYS[1] active, KEYS[2] delayed, KEYS[3] paused, KEYS[4] task:<id> of the first completion
-- (any task key when there is none; the others are built from their ids)
-- KEYS[5...] ready:<queue> of every queue the claimer takes (its types, '@<worker>')
-- ARGV[1] prefix, ARGV[2] worker id, ARGV[3] count to claim (0: none), ARGV[4] lease ms,
-- ARGV[5] '1' = start now, ARGV[6] '0' = claim nothing when a completion is refused,
-- ARGV[7] n completions, then n times: task id, lease token, result JSON (TaskResult),
-- cost in USD ('' for none)
-- Builds: as complete-2 and claim-3
-- Returns: {n, code1, detail1, ..., codeN, detailN, next_due, token1, {fields}, ...}: per
--          completion the reply of complete-2 (1 and the dependents released, 0 already done,
--          -1 not found, -2 stale lease, -3 wrong state and the status), then as claim-3. A
--          refused completion does not stop the others (nor the claim, unless ARGV[6] is '0').
-- Events: as complete-2 and claim-3
local prefix = ARGV[1]
local n = tonumber(ARGV[7])
local out = {n}
local count = tonumber(ARGV[3])
for i = 0, n - 1 do
  local a = 8 + i * 4
  local done = complete_task(prefix, ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
  if done[1] < 0 and ARGV[6] == '0' then count = 0 end
  table.insert(out, done[1])
  table.insert(out, done[2] or '')
end
local ready = {}
for i = 5, #KEYS do table.insert(ready, KEYS[i]) end
local claimed = claim_tasks(prefix, KEYS[2], KEYS[3], ready, ARGV[2], count,
                            tonumber(ARGV[4]), (ARGV[5] == '1') and 'running' or 'claimed')
for _, v in ipairs(claimed) do table.insert(out, v) end
return out
