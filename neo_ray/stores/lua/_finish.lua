-- Writes a job's final state and record, expires its hash later and frees its dedupe key
-- (so that the same repository can be submitted again). False, writing nothing, when the
-- job already holds another final record: a job that ran twice (its worker presumed dead,
-- the task requeued) completes once; the same record again (a retried call) is accepted.
local function finish(job_key, dedupe, job_id, state, record, now, expire)
  if is_final(job_key) and redis.call('HGET', job_key, 'record') ~= record then
    return false
  end
  redis.call('HSET', job_key, 'state', state, 'record', record, 'finished_at', now,
    'updated_at', now)
  if state == 'complete' then redis.call('HSET', job_key, 'stage', 'done', 'progress', '1') end
  redis.call('EXPIRE', job_key, tonumber(expire))
  local dk = redis.call('HGET', job_key, 'dedupe_key')
  if dk and redis.call('HGET', dedupe, dk) == job_id then redis.call('HDEL', dedupe, dk) end
  return true
end
