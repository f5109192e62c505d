-- Shared prelude of the storage scripts: storage_redis.go prepends it to each.
--
-- A task (and a session) is a string of netstring-like fields, each
-- <length>:<bytes>, in a fixed order that storage_redis.go knows too. The
-- fields a script reads or rewrites come first, so that it splits off only
-- those and keeps the rest of the string as it is.
--
-- A task: version, owner, session, status, updated, answered, answer,
-- sources, error | id, question, context, room, stream, asked, and then,
-- only when the task has one, its usage ("prompt,completion,total"): N
-- counts the fields every task has.
local N = 15
local I_OWN, I_SID, I_ST, I_UP, I_FIN, I_ANS, I_SRC, I_ERR = 2, 3, 4, 5, 6, 7, 8, 9
local I_ID, I_Q, I_AT = 10, 11, 15

-- decode splits the first n fields off s and returns them and the rest of
-- s, or nil when s is malformed.
local function decode(s, n)
  local t, pos = {}, 1
  for i = 1, n do
    local colon = string.find(s, ':', pos, true)
    if not colon then
      return nil
    end
    local len = tonumber(string.sub(s, pos, colon - 1))
    if not len or colon + len > #s then
      return nil
    end
    t[i] = string.sub(s, colon + 1, colon + len)
    pos = colon + len + 1
  end
  return t, string.sub(s, pos)
end

-- encode joins the first n fields of t.
local function encode(t, n)
  local parts = {}
  for i = 1, n do
    parts[i] = #t[i] .. ':' .. t[i]
  end
  return table.concat(parts)
end

-- finished is TaskStatus.Finished.
local function finished(st)
  return st == 'completed' or st == 'failed' or st == 'cancelled'
end

-- can_move is TaskStatus.CanMoveTo.
local function can_move(from, to)
  if from == 'pending' then
    return to == 'processing' or finished(to)
  end
  if from == 'processing' then
    return finished(to)
  end
  return false
end

-- each calls cmd with args, a bounded number of them per command (a Lua
-- call takes a few thousand arguments at most).
local function each(cmd, key, args)
  for i = 1, #args, 256 do
    if key then
      redis.call(cmd, key, unpack(args, i, math.min(i + 255, #args)))
    else
      redis.call(cmd, unpack(args, i, math.min(i + 255, #args)))
    end
  end
end

-- task_keys returns the keys of the tasks with the given ids.
local function task_keys(P, ids)
  local keys = {}
  for i, id in ipairs(ids) do
    keys[i] = P .. 't:' .. id
  end
  return keys
end

-- trim walks the history hist from its oldest id while it holds more than
-- max ids, and drops each id whose task has expired, deleting the task
-- when it has finished. Unfinished tasks are never dropped. It looks at no
-- more than 1024 ids, so that an owner with many old unfinished tasks costs
-- bounded work per write; the next writes then continue the trimming.
local function trim(hist, P, max)
  local excess = redis.call('ZCARD', hist) - max
  local start, seen = 0, 0
  while excess > 0 and seen < 1024 do
    local ids = redis.call('ZRANGE', hist, start, start + math.min(excess, 64) - 1)
    if #ids == 0 then
      break
    end
    seen = seen + #ids
    local keys = task_keys(P, ids)
    local vals = redis.call('MGET', unpack(keys))
    local drop, del = {}, {}
    for i, id in ipairs(ids) do
      local t = vals[i] and decode(vals[i], I_ST)
      if not vals[i] or (t and finished(t[I_ST])) then
        if vals[i] then
          del[#del + 1] = keys[i]
        end
        drop[#drop + 1] = id
        excess = excess - 1
        if excess == 0 then
          break
        end
      end
    end
    if #del > 0 then
      redis.call('DEL', unpack(del))
    end
    if #drop > 0 then
      redis.call('ZREM', hist, unpack(drop))
    end
    start = start + #ids - #drop
  end
end

