-- rate.lua: a rate limiter, GCRA (the generic cell rate algorithm) (rate.c).
-- KEYS: RATE (hash tat/t/burst).
-- ARGV: op ('take' or 'back'), t (the emission interval, us), burst,
--   count and period (ms) as the caller gave them (kept for messages), then
--   for 'take' the max wait (us; -1: any), for 'back' the tat its 'take' set.
-- State is one number, TAT, the theoretical arrival time (server us): a
-- request at `now` conforms from TAT - (burst - 1) * t on, and moves TAT
-- on by t. 'take' reserves the next slot if it conforms within the max
-- wait: it answers {P_OK, wait us, tat}, and the caller starts after
-- waiting that long (a reservation, so waiters are served in order and
-- nobody retries). Otherwise {P_BUSY, us until the next slot}, and nothing
-- changes. {P_CONFLICT, count, period, burst}: the limiter is in use with
-- other parameters (its TAT is ahead of the clock).
-- 'back' gives a reserved slot back if no later one was taken (the caller
-- was cancelled before its start): {P_OK} or {P_BUSY}.
-- The hash lives until TAT: after that the bucket is full again anyway.
-- Lua numbers are doubles: TAT (about 2^51 us) and tau (below 2^50 us,
-- rate.c checks) stay exact integers.
local op, t, burst = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local R = KEYS[RATE]
local now_us = clock()
local tat = tonumber(redis.call('HGET', R, 'tat') or '0')

if op == 'back' then
  if tat == tonumber(ARGV[6]) then
    redis.call('HSET', R, 'tat', fmt(tat - t))
    return {P_OK}
  end
  return {P_BUSY}
end

if tat > now_us then
  local kt = tonumber(redis.call('HGET', R, 't') or '0')
  local kb = tonumber(redis.call('HGET', R, 'burst') or '0')
  if kt ~= t or kb ~= burst then
    return {P_CONFLICT, tonumber(redis.call('HGET', R, 'count') or '0'),
      tonumber(redis.call('HGET', R, 'period') or '0'), kb}
  end
else
  tat = now_us
end
local wait = math.max(tat - (burst - 1) * t - now_us, 0)
local max_wait = tonumber(ARGV[6])
if max_wait >= 0 and wait > max_wait then
  return {P_BUSY, wait}
end
tat = tat + t
redis.call('HSET', R, 'tat', fmt(tat), 't', fmt(t), 'burst', fmt(burst), 'count', ARGV[4],
  'period', ARGV[5])
redis.call('PEXPIRE', R, math.floor((tat - now_us) / 1000) + 1)
return {P_OK, wait, tat}
