-- KEYS: processing, dead, job key. ARGV: job_id, dead entry JSON, keep.
if not remove_job(KEYS[1], ARGV[1]) then return 0 end
if is_final(KEYS[3]) then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
return 1
