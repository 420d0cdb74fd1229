-- Move the oldest task into processing under a claim token, exactly once: the same token
-- again (a retry after a lost response) returns the task it claimed instead of a second one.
-- KEYS: queue, processing, claim key (carries the token). ARGV: claim TTL seconds.
-- Returns the task JSON, or false when the queue is empty.
local claimed = redis.call('GET', KEYS[3])
if claimed then return claimed end
local raw = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
if raw then redis.call('SET', KEYS[3], raw, 'EX', tonumber(ARGV[1])) end
return raw
