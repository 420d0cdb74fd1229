-- Everything the status route reads, in one round trip (one command over Upstash REST):
-- the live workers' heartbeats, the queue's length, how many tasks are handed out and how
-- many were dead-lettered.
-- KEYS: queue, processing, dead. ARGV: the heartbeat keys' SCAN pattern.
-- neo-ray's keyspace is small (queue lists, job hashes that expire, a few workers), so the
-- SCAN inside the script stays short.
local beats = {}
local cursor = '0'
repeat
  local reply = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = reply[1]
  for _, key in ipairs(reply[2]) do
    local beat = redis.call('GET', key)
    if beat then beats[#beats + 1] = beat end
  end
until cursor == '0'
return {redis.call('LLEN', KEYS[1]), redis.call('LLEN', KEYS[2]), beats, redis.call('LLEN', KEYS[3])}
