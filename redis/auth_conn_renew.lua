-- Renews the leases one node holds at one address, re-creating those that
-- are gone.
--
-- KEYS[1]  zset <prefix>conn:{<addr>} (see auth_conn_acquire.lua)
-- ARGV[1]  new lease expiry (ms)
-- ARGV[2]  key TTL (ms), only ever extended
-- ARGV[3…] members
--
-- The node calls this only for the sockets it still has open, so each
-- member is written whether or not it is there: a member that is gone
-- was lost with Redis's data (a restart without persistence, an eviction)
-- or dropped after its lease lapsed while this node could not reach Redis,
-- and its connection still counts. That may put the address over its
-- limit (when others took the slots meanwhile); acquires then refuse until
-- enough connections close. Returns how many members were missing.
local key = KEYS[1]
local missing = 0
for i = 3, #ARGV do
  if redis.call('ZADD', key, ARGV[1], ARGV[i]) == 1 then
    missing = missing + 1
  end
end
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', key) < ttl then
  redis.call('PEXPIRE', key, ttl)
end
return missing
