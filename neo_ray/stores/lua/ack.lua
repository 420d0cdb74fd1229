-- KEYS: processing. ARGV: job_id.
if remove_job(KEYS[1], ARGV[1]) then return 1 end
return 0
