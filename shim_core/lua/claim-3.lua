-- claim: lease up to `count` pending tasks, highest priority first, FIFO within a priority band.
-- KEYS[1] active     leased tasks by lease deadline
-- KEYS[2] delayed    tasks in retry backoff by due time (due ones are promoted first)
-- KEYS[3] paused     exists while the namespace is paused
-- KEYS[4...]         ready:<queue> of every queue the claimer takes (its types, '@<worker>')
-- ARGV[1] prefix, ARGV[2] worker id, ARGV[3] count, ARGV[4] lease ms, ARGV[5] '1' = start now
-- Builds: task:<id>, fence, wake:<queue>, counts, worker:<id> (current task, when registered)
-- Returns: {ms until the next delayed task is due or -1, token1, {field, value, ...}, token2, {...}, ...}
-- Events: task:released (promoted from backoff), task:started (when ARGV[5] is '1')
local ready = {}
for i = 4, #KEYS do table.insert(ready, KEYS[i]) end
return claim_tasks(ARGV[1], KEYS[2], KEYS[3], ready, ARGV[2], tonumber(ARGV[3]),
                   tonumber(ARGV[4]), (ARGV[5] == '1') and 'running' or 'claimed')
