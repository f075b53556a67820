-- sem_acquire.lua: take ARGV[6] of ARGV[5] permits of a semaphore for
-- token ARGV[1].
-- KEYS: the key's semaphore group (META .. FREE).
-- ARGV: token, owner, ttl, mode (as acquire.lua), limit, permits.
-- Reply: {GRANTED, fencing token, slots ("3" or "3,4")}, {BUSY, ms until
-- the first permit runs out}, or {CONFLICT, limit}: the semaphore is in
-- use with another limit.
local tok, owner, ttl, mode = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local limit, want = tonumber(ARGV[5]), tonumber(ARGV[6])
-- @helpers
local now_us, now_ms = clock()
sem_expire(KEYS, now_ms)
if redis.call('ZSCORE', KEYS[HOLDERS], tok) then
  -- ours already (sem_expire dropped it if its time ran out): confirm it
  redis.call('ZADD', KEYS[HOLDERS], fmt(now_ms + ttl), tok)
  keep(KEYS[HOLDERS], ttl + ENTRY_TTL)
  keep(KEYS[HINFO], ttl + ENTRY_TTL)
  sem_keep(KEYS, ttl)
  leave(KEYS, tok)
  local slots, f = string.match(redis.call('HGET', KEYS[HINFO], tok) or '', '^([%d,]+):(%d+):')
  return {GRANTED, tonumber(f), slots}
end
local known = sem_num(KEYS, 'limit')
if known ~= limit then
  if known > 0 and (sem_num(KEYS, 'used') > 0 or head(KEYS, now_ms)) then
    if mode ~= WAIT then
      leave(KEYS, tok)
    end
    return {CONFLICT, known}
  end
  redis.call('DEL', KEYS[META], KEYS[FREE]) -- idle: start afresh with this limit
  redis.call('HSET', KEYS[META], 'limit', limit)
  sem_keep(KEYS, ttl)
end
if sem_num(KEYS, 'used') + want <= limit then
  local h = head(KEYS, now_ms)
  if not h or h == tok or mode == UNFAIR then
    local f, slots = sem_grant(KEYS, tok, want, now_ms, now_ms + ttl, owner)
    leave(KEYS, tok)
    notify(KEYS, tok)
    sem_admit(KEYS, now_ms) -- permits may be left for those behind us
    return {GRANTED, f, slots}
  end
end
if mode == WAIT then
  enqueue(KEYS, tok, now_us, now_ms, ttl, fmt(want), owner)
  redis.call('DEL', sig(KEYS, tok))
  sem_keep(KEYS, ENTRY_TTL)
elseif mode == UNFAIR then
  watch(KEYS, tok, now_ms)
  sem_keep(KEYS, ENTRY_TTL)
else
  leave(KEYS, tok)
end
sem_admit(KEYS, now_ms)
return {BUSY, holders_hint(KEYS, now_ms)}
