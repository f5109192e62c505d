-- Takes a connection slot for one socket at one address, atomically.
--
-- KEYS[1]  zset <prefix>conn:{<addr>}: member "<node>|<socket>", scored by
--          the lease expiry in Unix milliseconds
-- ARGV[1]  now (ms): a lease scored at or before now has lapsed
-- ARGV[2]  lease expiry for this member (ms)
-- ARGV[3]  member
-- ARGV[4]  the most slots the address may hold
-- ARGV[5]  key TTL (ms); only ever extended, so that nodes with a longer
--          lease keep theirs
--
-- Returns 0 when a slot was taken, 1 when the member already held a live
-- slot (its lease is renewed, no second slot is taken), -1 when the address
-- is full (nothing is written but the removal of lapsed leases).
local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
local held = redis.call('ZSCORE', key, ARGV[3])
if not held and redis.call('ZCARD', key) >= tonumber(ARGV[4]) then
  return -1
end
redis.call('ZADD', key, ARGV[2], ARGV[3])
local ttl = tonumber(ARGV[5])
if redis.call('PTTL', key) < ttl then
  redis.call('PEXPIRE', key, ttl)
end
if held then
  return 1
end
return 0
