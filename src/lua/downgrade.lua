-- downgrade.lua: turn the write lock held by ARGV[1] into a read lock, in
-- one step: no writer can come in between. It keeps its fencing token and
-- grant time; the readers queued at the head (up to the first queued
-- writer) are admitted now.
-- KEYS: the key's mutex group. ARGV: token, ttl (ms).
-- Reply: 1 downgraded, 0 the write lock was not ours.
local tok, ttl = ARGV[1], tonumber(ARGV[2])
local v = redis.call('GET', KEYS[LOCK])
if not v or string.sub(v, 1, TOKEN_LEN) ~= tok then
  return 0
end
-- @helpers
local _, now_ms = clock()
local rest = string.match(v, '^%x+:(%d+:%d+:.*)$')
redis.call('DEL', KEYS[LOCK])
add_member(KEYS, tok, now_ms + ttl, rest, now_ms)
handoff(KEYS, now_ms)
return 1
