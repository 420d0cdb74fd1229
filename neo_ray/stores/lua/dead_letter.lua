-- KEYS: processing, dead, job key, dedupe, history.
-- ARGV: job_id, dead entry JSON, keep dead, failed record JSON ('' for none), now,
--       expire seconds, keep history.
-- With a record, the dead letter, the job's final state, the freed dedupe key and the
-- history entry are one step: no failure between them leaves a job that looks queued forever.
if not remove_job(KEYS[1], ARGV[1]) then return 0 end
if is_final(KEYS[3]) then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
if ARGV[4] ~= '' then
  finish(KEYS[3], KEYS[4], ARGV[1], 'failed', ARGV[4], ARGV[5], ARGV[6])
  push_history(KEYS[5], ARGV[4], ARGV[7])
end
return 1
