-- state.lua: everything about one key, for dlock status, metrics and top.
-- KEYS: the key's group; ARGV[1]: 'm' (mutex family) or 's' (semaphore).
-- Reply: {server ms, waiters, mutex value or false, its TTL, limit (0 if
-- none), then (ms left, info) pairs of the live holders (readers or
-- permits), at most 1000}.
local _, now_ms = clock()
local sem = ARGV[1] == 's'
local out = {now_ms, redis.call('ZCARD', KEYS[QUEUE])}
local v = (not sem) and redis.call('GET', KEYS[LOCK]) or false
out[3] = v
out[4] = v and redis.call('PTTL', KEYS[LOCK]) or 0
out[5] = sem and tonumber(redis.call('HGET', KEYS[META], 'limit') or '0') or 0
local m = redis.call('ZRANGEBYSCORE', KEYS[HOLDERS], fmt(now_ms + 1), '+inf',
  'WITHSCORES', 'LIMIT', 0, 1000)
for i = 1, #m, 2 do
  out[#out + 1] = tonumber(m[i + 1]) - now_ms
  out[#out + 1] = redis.call('HGET', KEYS[HINFO], m[i]) or ''
end
return out
