-- Claims a task id for an owner, so that ids stay unique across owners
-- although each owner's tasks live in a slot of their own.
--
-- KEYS[1]  <prefix>id:<id>, a string holding the owner
-- ARGV[1]  the owner
-- ARGV[2]  TTL (ms): the task's (UpdateTask restarts both)
--
-- Returns 1 when the id was free and is now the owner's, 2 when the owner
-- held it already (a retried CreateTask, or an id it reuses; the TTL is
-- restarted), 0 when another owner holds it (nothing is written).
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 2
end
return 0
