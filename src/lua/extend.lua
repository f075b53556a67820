-- extend.lua: set a held mutex's TTL (renewal, dlock_extend) if it is ours.
-- KEYS: LOCK only. ARGV: token, ttl. Reply: 1 extended, 0 not ours.
local v = redis.call('GET', KEYS[LOCK])
if v and string.sub(v, 1, TOKEN_LEN) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[LOCK], ARGV[2])
  return 1
end
return 0
