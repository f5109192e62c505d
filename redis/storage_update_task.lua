-- UpdateTask: applies a status transition when TaskStatus.CanMoveTo allows
-- it, as one atomic step, so that two concurrent finishers cannot both win.
--
-- KEYS[1] the task, KEYS[2] the owner's history.
-- ARGV[1] the owner's key prefix, ARGV[2] the TTL in ms, ARGV[3]
-- MaxHistory, ARGV[4] the owner, ARGV[5] the task id, ARGV[6] the new
-- status, ARGV[7] when (ms), and for a final status ARGV[8] the answer,
-- ARGV[9] the sources, ARGV[10] the error (encoded), ARGV[11] the usage
-- ("" for none).
--
-- Returns {-1} for an unknown task (or another owner's), {0, task} when the
-- transition is not allowed, {1, task} when it was applied; task is the
-- encoded task after the call.
local task, hist = KEYS[1], KEYS[2]
local P, ttl, max_history, owner = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local id, to, at = ARGV[5], ARGV[6], ARGV[7]

local raw = redis.call('GET', task)
if not raw then
  return {-1}
end
local t, rest = decode(raw, I_ERR)
if not t then
  return redis.error_reply('ERR socketio: corrupt task ' .. task)
end
if t[I_OWN] ~= owner then
  return {-1}
end
if not can_move(t[I_ST], to) then
  return {0, raw}
end

t[I_ST], t[I_UP] = to, at
local done = finished(to)
if done then
  t[I_FIN], t[I_ANS], t[I_SRC], t[I_ERR] = at, ARGV[8], ARGV[9], ARGV[10]
  -- The optional usage field ends the task: keep the fixed fields of the
  -- rest, then add the usage when there is one.
  local fixed = decode(rest, N - I_ERR)
  if not fixed then
    return redis.error_reply('ERR socketio: corrupt task ' .. task)
  end
  rest = encode(fixed, N - I_ERR)
  if ARGV[11] ~= '' then
    rest = rest .. #ARGV[11] .. ':' .. ARGV[11]
  end
end
local blob = encode(t, I_ERR) .. rest
redis.call('SET', task, blob, 'PX', ttl)
-- The history and the open set outlive every task they list.
redis.call('PEXPIRE', hist, ttl)
local open = P .. 'o:' .. t[I_SID]
if done then
  redis.call('SREM', open, id)
  trim(hist, P, max_history)
else
  redis.call('PEXPIRE', open, ttl)
end
return {1, blob}
