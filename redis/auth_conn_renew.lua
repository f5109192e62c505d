-- Renews the leases one node holds at one address.
--
-- KEYS[1]  zset <prefix>conn:{<addr>} (see auth_conn_acquire.lua)
-- ARGV[1]  new lease expiry (ms)
-- ARGV[2]  key TTL (ms), only ever extended
-- ARGV[3…] members
--
-- A member that is gone (released, or removed by an acquire after its lease
-- lapsed) stays gone: its slot may have been given to someone else, so
-- bringing it back could exceed the limit. Returns how many were renewed.
local key = KEYS[1]
local renewed = 0
for i = 3, #ARGV do
  if redis.call('ZSCORE', key, ARGV[i]) then
    redis.call('ZADD', key, ARGV[1], ARGV[i])
    renewed = renewed + 1
  end
end
if renewed > 0 then
  local ttl = tonumber(ARGV[2])
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return renewed
