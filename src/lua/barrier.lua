-- barrier.lua: a reusable barrier of `parties` processes (barrier.c).
-- KEYS: the barrier group (BAR: hash gen/parties; BARR: zset of live
-- arrivals, token -> expiry ms; BDONE: hash token -> generation passed;
-- BCHAN: channel).
-- ARGV: op ('arrive' or 'leave'), token, parties, life (ms), known
-- generation ('0': none yet).
-- 'arrive' counts the token in the generation waiting now (again: its
-- arrival gets a fresh life; this is also the waiting party's refresh).
-- When `parties` live arrivals are in, the generation trips: each of them
-- is recorded in BDONE, the next generation starts empty, and the tripped
-- generation is published on BCHAN.
-- 'leave' takes the token's arrival back (a party that gives up).
-- Reply: {P_OK, gen}: the token passed generation gen (in this call or
-- before: BDONE remembers); {P_BUSY, gen, arrivals}: counted in gen,
-- waiting; {P_CONFLICT, parties}: the generation waiting now has arrivals
-- that expect another number of parties. 'leave' answers {P_OK, gen} if
-- the token had passed, else {P_BUSY, gen, arrivals}.
-- A generation number is the server time (us) when the barrier was first
-- used (or used again after expiring), then one more per trip, so it does
-- not repeat across an expiry. Arrivals expire `life` ms after their last
-- refresh: a killed party stops counting then.
local op, tok, parties, life = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local known = tonumber(ARGV[5])
local B, A, D = KEYS[BAR], KEYS[BARR], KEYS[BDONE]
local now_us, now_ms = clock()

local passed = tonumber(redis.call('HGET', D, tok) or '0')
if known > 0 and passed == known then
  return {P_OK, known}
end
local gen = tonumber(redis.call('HGET', B, 'gen') or '0')
if gen == 0 then
  gen = now_us
  redis.call('HSET', B, 'gen', fmt(gen))
end
redis.call('PEXPIRE', B, BARRIER_DONE)
-- arrivals whose party stopped refreshing them no longer count
local dead = redis.call('ZRANGEBYSCORE', A, '-inf', fmt(now_ms))
for _, t in ipairs(dead) do
  redis.call('ZREM', A, t)
end

if op == 'leave' then
  redis.call('ZREM', A, tok)
  return {P_BUSY, gen, redis.call('ZCARD', A)}
end

local n = redis.call('ZCARD', A)
local want = tonumber(redis.call('HGET', B, 'parties') or '0')
if n > 0 and want ~= parties and not redis.call('ZSCORE', A, tok) then
  return {P_CONFLICT, want}
end
redis.call('HSET', B, 'parties', parties)
redis.call('ZADD', A, fmt(now_ms + life), tok)
redis.call('PEXPIRE', A, life * 2)
n = redis.call('ZCARD', A)
if n < parties then
  return {P_BUSY, gen, n}
end
local all = redis.call('ZRANGE', A, 0, -1)
for _, t in ipairs(all) do
  redis.call('HSET', D, t, fmt(gen))
end
redis.call('PEXPIRE', D, BARRIER_DONE)
redis.call('DEL', A)
redis.call('HSET', B, 'gen', fmt(gen + 1))
redis.call('PUBLISH', KEYS[BCHAN], fmt(gen))
return {P_OK, gen}
