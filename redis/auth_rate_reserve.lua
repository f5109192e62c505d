-- Checks one sliding-window log and, when it has room, records one question.
--
-- KEYS[1]  zset <prefix>rq:s:{<session>} or <prefix>rq:a:{<addr>}: member a
--          unique record id, scored by the acceptance time in Unix
--          microseconds
-- ARGV[1]  now (µs)
-- ARGV[2]  cutoff = now - window (µs): a record scored at or before it has
--          left the window
-- ARGV[3]  limit
-- ARGV[4]  record id
-- ARGV[5]  key TTL (ms)
--
-- Returns {1} when the record was added, or {0, score} when the window is
-- full, score being the time of the record whose leaving makes room (the
-- caller computes the wait). Times are passed as strings and returned as
-- Redis formats them, never through Lua numbers, which would lose digits.
local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[2])
local n = redis.call('ZCARD', key)
local limit = tonumber(ARGV[3])
if n >= limit then
  local rec = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
  return {0, rec[2]}
end
redis.call('ZADD', key, ARGV[1], ARGV[4])
redis.call('PEXPIRE', key, ARGV[5])
return {1}
