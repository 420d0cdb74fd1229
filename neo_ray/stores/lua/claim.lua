-- Hand out the oldest task that may run now, exactly once, stamped with its claim.
-- KEYS: queue, processing, claim key (carries the token).
-- ARGV: claim TTL seconds, job key prefix, now, cluster id ('' for none), scan chunk.
-- Returns the task JSON, or false when nothing may run now.
--
-- * The same token again (a retry after a lost response) returns the task it claimed
--   instead of a second one.
-- * One repository runs one job at a time: a task whose repository has a job handed out and
--   not ended (another ref, say) stays queued, in its place, until that job ends; tasks of
--   other repositories behind it go first. Two refs of a repository are one corpus (point ids
--   and rows are keyed by the repository), so they must not write it at once.
-- * A copy of a job that already ended (left in the queue by a requeue that raced the job's
--   finish) is dropped, never handed out: a job runs to one final record.
-- * The job's hash gets `claimed_at` (and `cluster_id`) in the same step, so a claim is aged
--   from when it was made, never from when the job was queued.
local claimed = redis.call('GET', KEYS[3])
if claimed then return claimed end
local prefix, now, cluster, chunk = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])

local function state_of(job_id)
  return redis.call('HGET', prefix .. job_id, 'state')
end
local function ended(state)
  return state == 'complete' or state == 'failed' or state == 'skipped'
end

-- Repositories with a job handed out that has not ended.
local busy = {}
for _, raw in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local ok, obj = pcall(cjson.decode, raw)
  if ok and type(obj) == 'table' and type(obj['repo_url']) == 'string'
      and not ended(state_of(tostring(obj['job_id']))) then
    busy[obj['repo_url']] = true
  end
end

-- From the consumer end (the right), a chunk at a time.
local stale, chosen = {}, false
local stop = -1
while not chosen do
  local batch = redis.call('LRANGE', KEYS[1], stop - chunk + 1, stop)
  if #batch == 0 then break end
  for i = #batch, 1, -1 do
    local raw = batch[i]
    local ok, obj = pcall(cjson.decode, raw)
    if not ok or type(obj) ~= 'table' or type(obj['job_id']) ~= 'string' then
      chosen = raw -- unreadable: handed out, for the broker to dead-letter
      break
    end
    if ended(state_of(obj['job_id'])) then
      stale[#stale + 1] = raw
    elseif not busy[obj['repo_url']] then
      chosen = raw
      break
    end
  end
  if #batch < chunk then break end
  stop = stop - chunk
end

for _, raw in ipairs(stale) do redis.call('LREM', KEYS[1], -1, raw) end
if not chosen then return false end
redis.call('LREM', KEYS[1], -1, chosen)
redis.call('LPUSH', KEYS[2], chosen)
redis.call('SET', KEYS[3], chosen, 'EX', tonumber(ARGV[1]))
local ok, obj = pcall(cjson.decode, chosen)
if ok and type(obj) == 'table' and type(obj['job_id']) == 'string' then
  local job = prefix .. obj['job_id']
  if redis.call('EXISTS', job) == 1 then
    redis.call('HSET', job, 'claimed_at', now, 'updated_at', now)
    if cluster ~= '' then redis.call('HSET', job, 'cluster_id', cluster) end
  end
end
return chosen
