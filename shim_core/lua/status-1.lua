-- status: set a live worker's status (idle or busy). A crashed or offline worker is not brought
-- back this way: it must register again (its leases were voided when it was declared crashed).
-- KEYS[1] worker:<id>
-- ARGV[1] status
-- Returns: 1, or 0 when the worker is unknown, crashed or offline
local st = rcall('HGET', KEYS[1], 'status')
if not st or st == 'crashed' or st == 'offline' then return 0 end
rcall('HSET', KEYS[1], 'status', ARGV[1])
return 1
