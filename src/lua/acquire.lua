-- acquire.lua: take a mutex (also a read-write lock's write side and a
-- leadership) for token ARGV[1].
-- KEYS: the key's mutex group (LOCK .. WATCH).
-- ARGV: token, owner, ttl (ms), mode (ONCE: one look, leaving the queue if
--       busy; WAIT: join or keep a place in the queue if busy; UNFAIR: take
--       a free lock whoever waits, watch if busy).
-- Reply: {GRANTED, fencing token} when the lock is ours now (also a retry
-- whose reply was lost, and a lease being confirmed: the TTL is then the
-- caller's own), or {BUSY, ms until it may change; 0 if unknown}.
local tok, owner, ttl, mode = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[LOCK], KEYS[HOLDERS], KEYS[QUEUE], KEYS[WATCH]) == 0 then
  -- the fast path: nobody holds, waits or watches (four calls in all)
  local f = next_fence(KEYS[FENCE])
  local _, now_ms = clock()
  redis.call('SET', KEYS[LOCK], tok .. ':' .. fmt(f) .. ':' .. fmt(now_ms) .. ':' .. owner,
    'PX', ttl)
  return {GRANTED, f}
end
local v = redis.call('GET', KEYS[LOCK])
if v and string.sub(v, 1, TOKEN_LEN) == tok then
  -- ours already: confirm it with our TTL, leave the queue
  redis.call('PEXPIRE', KEYS[LOCK], ttl)
  redis.call('ZREM', KEYS[QUEUE], tok)
  redis.call('HDEL', KEYS[QINFO], tok)
  redis.call('DEL', KEYS[QUEUE] .. tok)
  return {GRANTED, tonumber(string.match(v, '^%x+:(%d+):'))}
end
-- @helpers
local now_us, now_ms = clock()
if not v and live_readers(KEYS, now_ms) == 0 then
  local h = head(KEYS, now_ms)
  if not h or h == tok or mode == UNFAIR then
    local f = next_fence(KEYS[FENCE])
    redis.call('SET', KEYS[LOCK], lock_value(tok, f, now_ms, owner), 'PX', ttl)
    leave(KEYS, tok)
    notify(KEYS, tok)
    return {GRANTED, f}
  end
end
if mode == WAIT then
  enqueue(KEYS, tok, now_us, now_ms, ttl, 'w', owner)
  redis.call('DEL', sig(KEYS, tok)) -- anything in it is older than this answer
elseif mode == UNFAIR then
  watch(KEYS, tok, now_ms)
else
  leave(KEYS, tok)
end
handoff(KEYS, now_ms) -- a free lock goes to the head at once (e.g. a TTL ran out)
return {BUSY, hint(KEYS, now_ms)}
