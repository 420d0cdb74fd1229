-- Adds a record at the head of the history list, trimmed to `keep`; the same record twice
-- (a retried call) is kept once.
local function push_history(history, record, keep)
  redis.call('LREM', history, 0, record)
  redis.call('LPUSH', history, record)
  redis.call('LTRIM', history, 0, tonumber(keep) - 1)
end
