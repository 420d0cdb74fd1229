-- KEYS: history. ARGV: record JSON, keep.
push_history(KEYS[1], ARGV[1], ARGV[2])
return 1
