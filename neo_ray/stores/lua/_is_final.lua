-- A job whose record is written (complete, failed, skipped) is never queued again: a
-- requeue or dead-letter that comes after it (a worker that died between history and ack)
-- only clears it from `ingest_processing`.
local function is_final(job_key)
  local state = redis.call('HGET', job_key, 'state')
  return state == 'complete' or state == 'failed' or state == 'skipped'
end
