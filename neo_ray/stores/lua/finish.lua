-- KEYS: job key, dedupe. ARGV: job_id, final state, record JSON, now, expire seconds.
finish(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return 1
