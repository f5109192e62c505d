-- Reads the blocklist for a node's cache, shipping it only when it changed.
--
-- KEYS[1]  hash <prefix>blocks: field = address or CIDR, value = JSON
--          {"reason": …, "expires_ms": …}; the reserved field "version" is
--          incremented by every change
-- ARGV[1]  the version the caller holds ("" for none)
--
-- Returns {version} when the caller is up to date, else
-- {version, {field, value, …}} (the whole hash, "version" included).
local v = redis.call('HGET', KEYS[1], 'version') or '0'
if v == ARGV[1] then
  return {v}
end
return {v, redis.call('HGETALL', KEYS[1])}
