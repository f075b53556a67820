-- read_acquire.lua: take a read-write lock's read side for token ARGV[1].
-- KEYS, ARGV and reply as acquire.lua. Readers share the lock with each
-- other, never with a writer, and do not overtake anyone queued.
local tok, owner, ttl, mode = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
-- @helpers
local now_us, now_ms = clock()
local exp = redis.call('ZSCORE', KEYS[HOLDERS], tok)
if exp and tonumber(exp) > now_ms then
  -- ours already: confirm it with our TTL, leave the queue
  redis.call('ZADD', KEYS[HOLDERS], fmt(now_ms + ttl), tok)
  keep(KEYS[HOLDERS], ttl + ENTRY_TTL)
  keep(KEYS[HINFO], ttl + ENTRY_TTL)
  leave(KEYS, tok)
  return {GRANTED, tonumber(string.match(redis.call('HGET', KEYS[HINFO], tok) or '', '^(%d+):'))}
end
if exp then -- its time ran out: not ours any more
  redis.call('ZREM', KEYS[HOLDERS], tok)
  redis.call('HDEL', KEYS[HINFO], tok)
end
if redis.call('EXISTS', KEYS[LOCK]) == 0 then
  live_readers(KEYS, now_ms)
  local h = head(KEYS, now_ms)
  if not h or h == tok or mode == UNFAIR then
    local f = next_fence(KEYS[FENCE])
    add_member(KEYS, tok, now_ms + ttl, fmt(f) .. ':' .. fmt(now_ms) .. ':' .. owner, now_ms)
    leave(KEYS, tok)
    notify(KEYS, tok)
    handoff(KEYS, now_ms) -- readers queued right behind us come in too
    return {GRANTED, f}
  end
end
if mode == WAIT then
  enqueue(KEYS, tok, now_us, now_ms, ttl, 'r', owner)
  redis.call('DEL', sig(KEYS, tok))
elseif mode == UNFAIR then
  watch(KEYS, tok, now_ms)
else
  leave(KEYS, tok)
end
handoff(KEYS, now_ms)
local p = redis.call('PTTL', KEYS[LOCK])
return {BUSY, p > 0 and p or 0}
