-- ClearHistory: deletes an owner's finished tasks; unfinished ones stay.
--
-- KEYS[1] the owner's history.
-- ARGV[1] the owner's key prefix, ARGV[2] the owner.
--
-- Returns how many finished tasks it deleted. Ids whose task has expired
-- are dropped too, without counting.
local hist = KEYS[1]
local P, owner = ARGV[1], ARGV[2]

local ids = redis.call('ZRANGE', hist, 0, -1)
local deleted, drop, del = 0, {}, {}
for i = 1, #ids, 256 do
  local chunk = {unpack(ids, i, math.min(i + 255, #ids))}
  local keys = task_keys(P, chunk)
  local vals = redis.call('MGET', unpack(keys))
  for j, id in ipairs(chunk) do
    local t = vals[j] and decode(vals[j], I_ST)
    if not vals[j] then
      drop[#drop + 1] = id
    elseif t and t[I_OWN] == owner and finished(t[I_ST]) then
      del[#del + 1] = keys[j]
      drop[#drop + 1] = id
      deleted = deleted + 1
    end
  end
end
each('DEL', nil, del)
each('ZREM', hist, drop)
return deleted
