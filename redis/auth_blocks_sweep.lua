-- Drops the blocklist entries that have expired.
--
-- KEYS[1]  hash <prefix>blocks (see auth_blocks_fetch.lua)
-- ARGV[1]  now (Unix ms): an entry with 0 < expires_ms <= now has expired
--
-- Bumps the version when it drops anything, so that caches notice. Values
-- that do not decode are left alone. Returns how many entries it dropped.
local now = tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local dropped = 0
for i = 1, #all, 2 do
  if all[i] ~= 'version' then
    local ok, e = pcall(cjson.decode, all[i + 1])
    if ok and type(e) == 'table' then
      local exp = tonumber(e['expires_ms']) or 0
      if exp > 0 and exp <= now then
        redis.call('HDEL', KEYS[1], all[i])
        dropped = dropped + 1
      end
    end
  end
end
if dropped > 0 then
  redis.call('HINCRBY', KEYS[1], 'version', 1)
end
return dropped
