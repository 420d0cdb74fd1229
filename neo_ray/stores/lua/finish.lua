-- KEYS: job key, dedupe. ARGV: job_id, final state, record JSON, now, expire seconds.
-- Returns 0 when the job already ended with another record.
if finish(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]) then return 1 end
return 0
