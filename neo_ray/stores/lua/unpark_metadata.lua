-- KEYS: metadata_pending. ARGV: repo_url, job_id.
-- Drop the repository's parked metadata only if it is still that job's (compares the prefix
-- `{job_id} `, so the metadata itself never travels back).
local entry = redis.call('HGET', KEYS[1], ARGV[1])
local head = ARGV[2] .. ' '
if entry and string.sub(entry, 1, #head) == head then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
