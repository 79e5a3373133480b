-- complete: record a task's result and release the tasks that were waiting only on it.
-- KEYS[1] task:<id>, KEYS[2] waiting
-- ARGV[1] prefix, ARGV[2] task id, ARGV[3] lease token, ARGV[4] result JSON (TaskResult),
-- ARGV[5] cost in USD of the execution ('' for none), added to the run's total
-- Builds: dependents:<id>, task:<dependent>, ready:<queue>, wake:<queue>, active, complete, counts,
--         worker:<holder> (statistics), history (durations per type, for estimates), run:<run>
-- Returns: {1, released count}; {0} when this same lease already completed it (a retried call);
--          -1 not found, -2 stale lease, -3 wrong state (with the status)
-- Events: task:completed, task:released for each dependent that became claimable
return complete_task(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
