-- Gives back an id claimed by redis/storage_claim_id.lua for a task that
-- was then not stored.
--
-- KEYS[1]  <prefix>id:<id>
-- ARGV[1]  the owner: the key is deleted only while it holds this owner
--
-- Returns 1 when it deleted the key, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
