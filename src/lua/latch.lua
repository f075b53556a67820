-- latch.lua: a countdown latch (latch.c).
-- KEYS: the latch group (LATCH: hash count/gen/opened; LCHAN: its channel).
-- ARGV[1]: the operation:
--   'init' ARGV[2] count (>= 1), ARGV[3] ttl (ms): arm the latch.
--     Reply {P_OK, gen}, or {P_BUSY, count left}: a live latch is not re-armed.
--   'down': count one down.
--     Reply {P_OK, count left}, {P_ZERO} (already at zero: refused) or
--     {P_MISSING} (never armed, or expired).
--   'look': {1, count, gen, opened, ttl ms} or {0, 0, 0, 0, 0} if missing.
-- A generation is the server time (us) of the init that armed it, so
-- generations increase also across an expiry; `opened` is the last
-- generation that reached zero and survives a re-arm, so a waiter that
-- saw generation g knows g opened once opened >= g. Counting down to zero
-- publishes the generation on LCHAN, and arming publishes "init" (waiters
-- of a latch that did not exist yet look again). The TTL is set by init
-- only: it bounds the life of the whole latch.
local op = ARGV[1]
local L = KEYS[LATCH]
local function num(field)
  return tonumber(redis.call('HGET', L, field) or '0')
end

if op == 'look' then
  if redis.call('EXISTS', L) == 0 then
    return {0, 0, 0, 0, 0}
  end
  return {1, num('count'), num('gen'), num('opened'), redis.call('PTTL', L)}
end

local exists = redis.call('EXISTS', L) == 1
if op == 'init' then
  if exists and num('count') > 0 then
    return {P_BUSY, num('count')}
  end
  local now_us = clock()
  local gen = math.max(now_us, num('gen') + 1)
  redis.call('HSET', L, 'count', ARGV[2], 'gen', fmt(gen))
  redis.call('PEXPIRE', L, ARGV[3])
  redis.call('PUBLISH', KEYS[LCHAN], 'init')
  return {P_OK, gen}
end

-- 'down'
if not exists then
  return {P_MISSING}
end
if num('count') <= 0 then
  return {P_ZERO}
end
local left = redis.call('HINCRBY', L, 'count', -1)
if left == 0 then
  local gen = num('gen')
  redis.call('HSET', L, 'opened', fmt(gen))
  redis.call('PUBLISH', KEYS[LCHAN], fmt(gen))
end
return {P_OK, left}
