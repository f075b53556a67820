-- member_extend.lua: set a reader's or a permit's remaining time, if it is
-- ours and has not run out.
-- KEYS: the group (mutex for a reader, semaphore for a permit).
-- ARGV: token, ttl. Reply: 1 extended, 0 not ours.
local tok, ttl = ARGV[1], tonumber(ARGV[2])
local _, now_ms = clock()
local e = redis.call('ZSCORE', KEYS[HOLDERS], tok)
if not e or tonumber(e) <= now_ms then
  return 0
end
redis.call('ZADD', KEYS[HOLDERS], fmt(now_ms + ttl), tok)
local keys = {KEYS[HOLDERS], KEYS[HINFO]}
if #KEYS >= SGROUP then -- a permit: the semaphore's bookkeeping lives as long
  keys[3], keys[4] = KEYS[META], KEYS[FREE]
end
for _, k in ipairs(keys) do
  if redis.call('PTTL', k) < ttl + ENTRY_TTL then
    redis.call('PEXPIRE', k, ttl + ENTRY_TTL)
  end
end
return 1
