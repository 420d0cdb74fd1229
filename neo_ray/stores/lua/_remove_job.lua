-- Finds a task in a list by its job id (not by its exact JSON, so a task whose attempts
-- changed, or JSON written by another client, is still found) and removes it.
local function remove_job(list, job_id)
  for _, raw in ipairs(redis.call('LRANGE', list, 0, -1)) do
    local ok, obj = pcall(cjson.decode, raw)
    if ok and type(obj) == 'table' and obj['job_id'] == job_id then
      redis.call('LREM', list, 1, raw)
      return raw
    end
  end
  return false
end
