-- Prelude of every script that records events (prepended to append.lua and, with tasklib.lua,
-- to the task scripts): who the events are recorded as.
--
-- The last of KEYS is the actor key of the call's hash tag, '<prefix>:{<tag>}:@<user>' (see
-- keys.py): the call records <user> as the actor of its events (field 'a' of each log entry,
-- which readers take over the actor an event says). Only <user>'s ACL (and an admin's) lets a
-- connection write that key, so with ACLs on, an event names the user the server authenticated,
-- whatever the client put in it. The key is never stored: SETRANGE of an empty string creates no
-- key, changes nothing and is not replicated, but the ACL checks it as a write, and the server
-- refuses it when out of memory as it would refuse the call's first real write (after a write,
-- even a DEL of nothing, a script is let past the out-of-memory check). ``authenticate`` runs
-- first, so a refused call has written nothing (a script's writes are not rolled back when it
-- fails).
local recorded_actor = nil

local function authenticate(log)
  local actor_key = KEYS[#KEYS]
  local base = string.match(log, '^[^{]*{[^}]*}:')
  if base == nil or string.sub(actor_key, 1, #base + 1) ~= base .. '@' then
    return error('ERR the last key ' .. actor_key .. ' is not an actor key of ' .. log)
  end
  local actor = string.sub(actor_key, #base + 2)
  if actor == '' or string.find(actor, '}', 1, true) then
    return error('ERR no actor in the actor key ' .. actor_key)
  end
  redis.call('SETRANGE', actor_key, 0, '')
  recorded_actor = actor
  return actor
end
