-- Prelude of every script that records events (prepended to append.lua and, before tasklib.lua,
-- to the task scripts): who the events are recorded as.
--
-- Such a script gets, last of KEYS, the actor key of its log's hash tag (KEYS[1]),
-- '<prefix>:{<tag>}:@<user>' (keys.actor_key): set apart here, so that each script's KEYS stay as
-- its header describes them. The call records <user> as the actor of its events: field 'a' of
-- each log entry, which readers take over the actor an event says, and which the entry's hash
-- covers (domain/chain.py). Only <user>'s ACL (and an admin's) lets a connection write that
-- key, so with ACLs on, an event names the user the server authenticated, whatever the client
-- put in it. The key is never stored: SETRANGE of an empty string creates no key, changes
-- nothing and is not replicated, but the ACL checks it as a write, and the server refuses it when
-- out of memory as it would refuse the call's first real write (after a write, even a DEL of
-- nothing, a script is let past the out-of-memory check). ``authenticate`` runs first, so a
-- refused call has written nothing (a script's writes are not rolled back when it fails).
local recorded_actor = nil
local actor_key = nil

local function tag_base(key)
  return string.match(key, '^[^{]*{[^}]*}:')
end

if #KEYS > 1 then
  local base = tag_base(KEYS[1])
  local last = KEYS[#KEYS]
  if base ~= nil and string.sub(last, 1, #base + 1) == base .. '@' then
    actor_key = table.remove(KEYS)
  end
end

local function authenticate(log)
  if actor_key == nil or tag_base(log) ~= tag_base(actor_key) then
    return error('ERR no actor key of ' .. log .. ' last in KEYS')
  end
  local actor = string.sub(actor_key, #tag_base(actor_key) + 2)
  if actor == '' or string.find(actor, '}', 1, true) then
    return error('ERR no actor in the actor key ' .. actor_key)
  end
  redis.call('SETRANGE', actor_key, 0, '')
  recorded_actor = actor
  return actor
end
