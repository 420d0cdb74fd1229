-- KEYS: job key, dedupe. ARGV: job_id, final state, record JSON, now, expire seconds.
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'record', ARGV[3], 'finished_at', ARGV[4],
  'updated_at', ARGV[4])
if ARGV[2] == 'complete' then redis.call('HSET', KEYS[1], 'stage', 'done', 'progress', '1') end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
local dk = redis.call('HGET', KEYS[1], 'dedupe_key')
if dk and redis.call('HGET', KEYS[2], dk) == ARGV[1] then redis.call('HDEL', KEYS[2], dk) end
return 1
