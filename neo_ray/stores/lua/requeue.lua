-- KEYS: processing, queue, job key. ARGV: job_id, new task JSON, attempts, now.
if not remove_job(KEYS[1], ARGV[1]) then return 0 end
if is_final(KEYS[3]) then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], 'state', 'queued', 'stage', 'queued', 'progress', '0',
  'attempts', ARGV[3], 'task', ARGV[2], 'updated_at', ARGV[4])
redis.call('HDEL', KEYS[3], 'worker_id', 'started_at', 'cluster_id', 'claimed_at')
return 1
