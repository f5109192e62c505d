-- Checks a session's and an address's sliding-window logs together and,
-- when both have room, records one question in each: one atomic step, for
-- servers where both keys can be touched by one script (not a Redis
-- Cluster, where they live in different slots; see auth_rate_reserve.lua).
--
-- KEYS[1] the session's log, KEYS[2] the address's log (zsets: member a
-- unique record id, scored by the acceptance time in Unix microseconds)
-- ARGV[1] now (µs), ARGV[2] cutoff = now - window (µs), ARGV[3] the
-- session limit, ARGV[4] the address limit, ARGV[5] record id, ARGV[6] key
-- TTL (ms)
--
-- Returns {1} when recorded in both, otherwise {0, s, a} where s and a are
-- the scores of the records whose leaving makes room in the session's and
-- the address's log ('' for a log that has room). Nothing is recorded then.
local function full(key, limit)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[2])
  local n = redis.call('ZCARD', key)
  if n >= limit then
    return redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')[2]
  end
  return ''
end
local s = full(KEYS[1], tonumber(ARGV[3]))
local a = full(KEYS[2], tonumber(ARGV[4]))
if s ~= '' or a ~= '' then
  return {0, s, a}
end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], ARGV[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[i], ARGV[6])
end
return {1}
