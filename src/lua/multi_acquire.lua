-- multi_acquire.lua: take the mutexes of several keys, all or none, for
-- token ARGV[1].
-- KEYS: one mutex group per key (GROUP keys each). ARGV and reply as
-- acquire.lua; a grant answers {GRANTED, token of key 1, token of key 2, ..}.
--
-- A waiting multi-lock queues on every key with ONE arrival time, so all
-- queues order any two multi-locks the same way, and a lock is handed (a
-- lease) only to the head of its queue. A waiter therefore only ever waits
-- for holders and for waiters that arrived before it: no cycle, no
-- deadlock, and no starvation. Keys leased to a waiting multi-lock stay
-- leased while it waits for the others (kept alive by its keepalive); it is
-- granted all of them at once. If one of its entries is lost (it stalled
-- past an entry's life), it gives back its leases and queues anew.
local tok, owner, ttl, mode = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
-- @helpers
local now_us, now_ms = clock()
local groups = groups_of(GROUP)
local ok, mine = true, {}
for i, G in ipairs(groups) do
  local v = redis.call('GET', G[LOCK])
  if v then
    if string.sub(v, 1, TOKEN_LEN) == tok then
      mine[i] = v
    else
      ok = false
    end
  elseif live_readers(G, now_ms) > 0 then
    ok = false
  else
    local h = head(G, now_ms)
    if h and h ~= tok and mode ~= UNFAIR then
      ok = false
    end
  end
end
if ok then
  local out = {GRANTED}
  for i, G in ipairs(groups) do
    if mine[i] then
      redis.call('PEXPIRE', G[LOCK], ttl)
      out[i + 1] = tonumber(string.match(mine[i], '^%x+:(%d+):'))
    else
      local f = next_fence(G[FENCE])
      redis.call('SET', G[LOCK], lock_value(tok, f, now_ms, owner), 'PX', ttl)
      out[i + 1] = f
      notify(G, tok)
    end
    leave(G, tok)
  end
  return out
end
if mode == WAIT then
  local whole = true
  for i, G in ipairs(groups) do
    if not mine[i] then
      local exp = parse_entry(redis.call('HGET', G[QINFO], tok))
      if not exp or exp <= now_ms then
        whole = false
      end
    end
  end
  if not whole then -- (re)join every queue with one arrival time
    for i, G in ipairs(groups) do
      if mine[i] then
        redis.call('DEL', G[LOCK])
        mine[i] = nil
      end
      leave(G, tok)
    end
  end
  for i, G in ipairs(groups) do
    if not mine[i] then
      enqueue(G, tok, now_us, now_ms, ttl, 'm', owner)
    end
    redis.call('DEL', sig(G, tok))
  end
elseif mode == UNFAIR then
  for _, G in ipairs(groups) do
    watch(G, tok, now_ms)
  end
else
  for i, G in ipairs(groups) do
    if mine[i] then
      redis.call('DEL', G[LOCK])
    end
    leave(G, tok)
  end
end
local wait_ms = 0
for _, G in ipairs(groups) do
  handoff(G, now_ms)
  local v = redis.call('GET', G[LOCK])
  if not (v and string.sub(v, 1, TOKEN_LEN) == tok) then
    local h = hint(G, now_ms)
    if h > 0 and (wait_ms == 0 or h < wait_ms) then
      wait_ms = h
    end
  end
end
return {BUSY, wait_ms}
