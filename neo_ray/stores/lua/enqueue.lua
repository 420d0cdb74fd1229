-- The dedupe check, the cap check and the push, in one atomic step.
-- KEYS: queue, dedupe, new job key.
-- ARGV: dedupe_key, cap, task_json, job_prefix, job_id, repo_url, ref, submitted_at,
--       attempts, now.
-- Returns {created (1) | existing (0) | full (-1), task_json, position, size}.
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then
  local jkey = ARGV[4] .. existing
  local state = redis.call('HGET', jkey, 'state')
  local task = redis.call('HGET', jkey, 'task')
  if (state == 'queued' or state == 'running') and task then
    local size = redis.call('LLEN', KEYS[1])
    local pos = 0
    if state == 'queued' then
      local idx = redis.call('LPOS', KEYS[1], task)
      if idx then pos = size - idx end
    end
    return {0, task, pos, size}
  end
end
local size = redis.call('LLEN', KEYS[1])
if size >= tonumber(ARGV[2]) then
  return {-1, '', 0, size}
end
local n = redis.call('LPUSH', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'state', 'queued', 'repo_url', ARGV[6], 'submitted_at', ARGV[8],
  'stage', 'queued', 'progress', '0', 'attempts', ARGV[9], 'updated_at', ARGV[10],
  'task', ARGV[3], 'dedupe_key', ARGV[1])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[3], 'ref', ARGV[7]) end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
return {1, ARGV[3], n, n}
