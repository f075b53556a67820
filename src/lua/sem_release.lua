-- sem_release.lua: give back a semaphore's permits (slots return to the
-- pool) and admit waiters that fit now. KEYS: the key's semaphore group.
-- ARGV: token. Reply: 1 if the permits were ours and still valid, else 0
-- (so releasing twice is harmless).
local tok = ARGV[1]
-- @helpers
local _, now_ms = clock()
local exp = redis.call('ZSCORE', KEYS[HOLDERS], tok)
local mine = exp and tonumber(exp) > now_ms
if exp then
  sem_drop(KEYS, tok)
end
leave(KEYS, tok)
sem_expire(KEYS, now_ms)
sem_admit(KEYS, now_ms)
sem_reset_if_idle(KEYS, now_ms)
return mine and 1 or 0
