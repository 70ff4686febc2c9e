-- Publish an uploaded artifact under its digest, unless one is already stored.
-- KEYS[1] final chunk list, KEYS[2] upload chunk list
-- Returns 1 when committed, 0 when the digest was already stored (the upload is discarded).
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('RENAME', KEYS[2], KEYS[1])
redis.call('PERSIST', KEYS[1])
return 1
