-- CreateTask: stores a new pending task at the head of its owner's history
-- unless its session already has ARGV[4] or more unfinished tasks.
--
-- KEYS[1] the task, KEYS[2] the owner's history (a sorted set of task ids
-- scored by creation order), KEYS[3] the ids of the unfinished tasks of the
-- task's session (a set).
-- ARGV[1] the owner's key prefix, ARGV[2] the TTL in ms, ARGV[3]
-- MaxHistory, ARGV[4] the open task limit (<= 0: none), ARGV[5] the task
-- id, ARGV[6] the encoded task. (That no other owner has the id was made
-- sure of before, by redis/storage_claim_id.lua: its key lives in another
-- slot.)
--
-- Returns 1 when stored (or already stored by this same call, retried after
-- a lost reply), 0 when the session has too many open tasks, -1 when the id
-- is taken. Every read and check comes before the first write, so a refused
-- or failed call writes nothing.
local task, hist, open = KEYS[1], KEYS[2], KEYS[3]
local P, ttl, max_history, max_open = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local id, blob = ARGV[5], ARGV[6]

if redis.call('EXISTS', task) > 0 then
  local old = redis.call('GET', task)
  if old then
    local a, b = decode(old, N), decode(blob, N)
    if a and b and a[I_OWN] == b[I_OWN] and a[I_SID] == b[I_SID] and a[I_Q] == b[I_Q] and a[I_AT] == b[I_AT] then
      return 1
    end
  end
  return -1
end

local top = redis.call('ZRANGE', hist, -1, -1, 'WITHSCORES')
local score = 1
if top[2] then
  score = tonumber(top[2]) + 1
end

-- Ids of tasks that expired while unfinished linger in the open set until
-- a write that counts finds them: they do not count, and are removed.
local stale = {}
if max_open > 0 then
  local ids = redis.call('SMEMBERS', open)
  if #ids > 0 then
    local keys = task_keys(P, ids)
    local n = 0
    for i = 1, #keys, 256 do
      n = n + redis.call('EXISTS', unpack(keys, i, math.min(i + 255, #keys)))
    end
    if n >= max_open then
      return 0
    end
    if n < #ids then
      for i, key in ipairs(keys) do
        if redis.call('EXISTS', key) == 0 then
          stale[#stale + 1] = ids[i]
        end
      end
    end
  end
else
  redis.call('SCARD', open) -- fails on a wrong type before anything is written
end

redis.call('SADD', open, id)
redis.call('PEXPIRE', open, ttl)
each('SREM', open, stale)
redis.call('ZADD', hist, score, id)
redis.call('PEXPIRE', hist, ttl)
redis.call('SET', task, blob, 'PX', ttl)
trim(hist, P, max_history)
return 1
