-- TouchSession: records activity on an existing session.
--
-- KEYS[1] the session, whose first fields are the version and last seen.
-- ARGV[1] the TTL in ms, ARGV[2] last seen (ms).
--
-- Returns 1, or 0 for an unknown session (which it does not create).
local raw = redis.call('GET', KEYS[1])
if not raw then
  return 0
end
local s, rest = decode(raw, 2)
if not s then
  return redis.error_reply('ERR socketio: corrupt session ' .. KEYS[1])
end
s[2] = ARGV[2]
redis.call('SET', KEYS[1], encode(s, 2) .. rest, 'PX', ARGV[1])
return 1
