-- Move an unreadable task from processing to the dead list, once (a retry finds it gone).
-- KEYS: processing, dead. ARGV: raw task, dead entry JSON, keep.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return 1
