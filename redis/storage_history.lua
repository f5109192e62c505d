-- History: a page of an owner's tasks, newest first. It only reads.
--
-- KEYS[1] the owner's history.
-- ARGV[1] the owner's key prefix, ARGV[2] the id of the task the page
-- starts after ('' for the newest), ARGV[3] the page size.
--
-- Returns {-1} when ARGV[2] is not a live task of the history, otherwise
-- up to ARGV[3] + 1 encoded tasks (one more than the page tells whether
-- older tasks remain). Ids whose task has expired are skipped.
local hist = KEYS[1]
local P, before, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])

local start = 0
if before ~= '' then
  local rank = redis.call('ZREVRANK', hist, before)
  if not rank or redis.call('EXISTS', P .. 't:' .. before) == 0 then
    return {-1}
  end
  start = rank + 1
end

local out, want = {}, limit + 1
local batch = math.min(want, 256)
while #out < want do
  local ids = redis.call('ZREVRANGE', hist, start, start + batch - 1)
  if #ids == 0 then
    break
  end
  local vals = redis.call('MGET', unpack(task_keys(P, ids)))
  for i = 1, #ids do
    if vals[i] then
      out[#out + 1] = vals[i]
      if #out == want then
        break
      end
    end
  end
  if #ids < batch then
    break
  end
  start = start + batch
end
return out
