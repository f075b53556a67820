-- fence_floor.lua: Redlock's write-back (see grant.c). Raise the key's last
-- fencing token to at least ARGV[1], and make the holder's stored token
-- that one too if the lock (or a read lock) is held by ARGV[2], so every
-- master reports the token the holder was given.
-- KEYS: the key's mutex group. ARGV: token number, holder token.
-- Reply: 1.
local want, tok = tonumber(ARGV[1]), ARGV[2]
local cur = tonumber(redis.call('GET', KEYS[FENCE]) or '0') or 0
if want > cur then
  redis.call('SET', KEYS[FENCE], ARGV[1], 'PX', FENCE_TTL)
end
local v = redis.call('GET', KEYS[LOCK])
if v and string.sub(v, 1, TOKEN_LEN) == tok then
  local rest = string.match(v, '^%x+:%d+:(.*)$')
  if rest then
    redis.call('SET', KEYS[LOCK], tok .. ':' .. ARGV[1] .. ':' .. rest, 'KEEPTTL')
  end
end
local info = redis.call('HGET', KEYS[HINFO], tok)
if info then
  local rest = string.match(info, '^%d+:(.*)$')
  if rest then
    redis.call('HSET', KEYS[HINFO], tok, ARGV[1] .. ':' .. rest)
  end
end
return 1
