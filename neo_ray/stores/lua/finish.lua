-- KEYS: job key, dedupe, history. ARGV: job_id, final state, record JSON, now, expire
-- seconds, keep history.
-- The final state, the freed dedupe key and the history entry are one step: no failure
-- between them leaves a job that ended without its history entry.
-- Returns 0 (writing nothing) when the job already ended with another record.
if not finish(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]) then return 0 end
push_history(KEYS[3], ARGV[3], ARGV[6])
return 1
