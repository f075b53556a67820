-- read_release.lua: give back a read lock and hand the lock on if it was
-- the last reader. KEYS: the key's mutex group. ARGV: token.
-- Reply: 1 if the read lock was ours and still valid, else 0.
local tok = ARGV[1]
local _, now_ms = clock()
local exp = redis.call('ZSCORE', KEYS[HOLDERS], tok)
local mine = exp and tonumber(exp) > now_ms
if exp then
  redis.call('ZREM', KEYS[HOLDERS], tok)
  redis.call('HDEL', KEYS[HINFO], tok)
  if redis.call('EXISTS', KEYS[QUEUE], KEYS[WATCH]) == 0 then
    return mine and 1 or 0
  end
end
-- @helpers
leave(KEYS, tok)
handoff(KEYS, now_ms)
return mine and 1 or 0
