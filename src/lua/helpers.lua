-- helpers.lua: the server side of the waiting protocol (the state machine
-- is written down at the top of wait.c). A script includes this file where
-- it says "-- @helpers", so only its slow path pays for defining these.
-- G is a key group: a table indexed by the roles LOCK, HOLDERS, ... (KEYS
-- itself for a one-lock script).
-- luacheck: push ignore 211

-- Keep key k alive at least ms more (never shorten its life).
local function keep(k, ms)
  if redis.call('PTTL', k) < ms then
    redis.call('PEXPIRE', k, ms)
  end
end

-- The groups of a many-lock script: KEYS cut into tables of `size` keys.
local function groups_of(size)
  local out = {}
  for b = 0, #KEYS - size, size do
    local G = {}
    for r = 1, size do
      G[r] = KEYS[b + r]
    end
    out[#out + 1] = G
  end
  return out
end

-- A waiter's entry: "<expiry ms>:<ttl>:<kind>:<owner>"; kind 'w' a writer,
-- 'r' a reader, 'm' one key of a multi-lock, digits: a semaphore waiter's
-- number of permits.
local function parse_entry(e)
  local exp, ttl, kind, owner = string.match(e or '', '^(%d+):(%d+):([^:]+):(.*)$')
  if exp then
    return tonumber(exp), tonumber(ttl), kind, owner
  end
end

-- The signal list of waiter tok: its QUEUE key's name and its token.
local function sig(G, tok)
  return G[QUEUE] .. tok
end

-- Forget tok as a waiter or a watcher of G: its entry and its signal.
local function leave(G, tok)
  redis.call('ZREM', G[QUEUE], tok)
  redis.call('HDEL', G[QINFO], tok)
  redis.call('ZREM', G[WATCH], tok)
  redis.call('DEL', sig(G, tok))
end

-- Take tok out of the queue (it was handed the lock; its signal stays).
local function dequeue(G, tok)
  redis.call('ZREM', G[QUEUE], tok)
  redis.call('HDEL', G[QINFO], tok)
end

-- Put tok in G's queue, keeping its place if it is there already (score:
-- its arrival, server microseconds), and give its entry a fresh life.
local function enqueue(G, tok, score, now_ms, ttl, kind, owner)
  if not redis.call('ZSCORE', G[QUEUE], tok) then
    redis.call('ZADD', G[QUEUE], fmt(score), tok)
  end
  redis.call('HSET', G[QINFO], tok,
    fmt(now_ms + ENTRY_TTL) .. ':' .. fmt(ttl) .. ':' .. kind .. ':' .. owner)
  redis.call('PEXPIRE', G[QUEUE], ENTRY_TTL * 2)
  redis.call('PEXPIRE', G[QINFO], ENTRY_TTL * 2)
end

-- Give tok's queue entry a fresh life. Returns false if it has none left
-- (it expired, or was dropped as dead).
local function refresh(G, tok, now_ms)
  local exp, ttl, kind, owner = parse_entry(redis.call('HGET', G[QINFO], tok))
  if not exp or exp <= now_ms or not redis.call('ZSCORE', G[QUEUE], tok) then
    return false
  end
  redis.call('HSET', G[QINFO], tok,
    fmt(now_ms + ENTRY_TTL) .. ':' .. fmt(ttl) .. ':' .. kind .. ':' .. owner)
  redis.call('PEXPIRE', G[QUEUE], ENTRY_TTL * 2)
  redis.call('PEXPIRE', G[QINFO], ENTRY_TTL * 2)
  return true
end

-- Register tok as a watcher of G (not queued: woken by messages on CHAN).
local function watch(G, tok, now_ms)
  redis.call('ZADD', G[WATCH], now_ms + ENTRY_TTL, tok)
  redis.call('PEXPIRE', G[WATCH], ENTRY_TTL * 2)
end

-- Publish msg to G's watchers, if any: "" the lock is free, otherwise the
-- token of its new holder.
local function notify(G, msg)
  if redis.call('EXISTS', G[WATCH]) == 1 then
    redis.call('PUBLISH', G[CHAN], msg)
  end
end

-- The first live waiter of G's queue: token, ttl, kind, owner and entry
-- expiry. Dead entries met on the way are dropped.
local function head(G, now_ms)
  while true do
    local h = redis.call('ZRANGE', G[QUEUE], 0, 0)[1]
    if not h then
      return nil
    end
    local exp, ttl, kind, owner = parse_entry(redis.call('HGET', G[QINFO], h))
    if exp and exp > now_ms then
      return h, ttl, kind, owner, exp
    end
    leave(G, h)
  end
end

-- A fresh lease's length: LEASE_TTL, or the waiter's own TTL or what is
-- left of its entry if less. A live waiter takes it within milliseconds
-- (and its keepalive renews it meanwhile); a dead one costs no more.
local function lease_ms(exp, ttl, now_ms)
  return math.max(math.min(exp - now_ms, LEASE_TTL, ttl), 1)
end

-- Add a holder (reader or permit) with its info, keeping the set alive.
local function add_member(G, tok, expiry, info, now_ms)
  redis.call('ZADD', G[HOLDERS], fmt(expiry), tok)
  redis.call('HSET', G[HINFO], tok, info)
  keep(G[HOLDERS], expiry - now_ms + ENTRY_TTL)
  keep(G[HINFO], expiry - now_ms + ENTRY_TTL)
end

-- Drop the readers whose time ran out; returns how many are left.
local function live_readers(G, now_ms)
  local dead = redis.call('ZRANGEBYSCORE', G[HOLDERS], '-inf', fmt(now_ms))
  for _, m in ipairs(dead) do
    redis.call('ZREM', G[HOLDERS], m)
    redis.call('HDEL', G[HINFO], m)
  end
  return redis.call('ZCARD', G[HOLDERS])
end

-- Tell waiter h it was handed the lock: "<fence>:<lease ms>:<slots>" in
-- its signal list (its BLPOP takes it; the list keeps it while h is not
-- blocked), and h's token to the watchers.
local function signal(G, h, f, px, slots)
  local s = sig(G, h)
  redis.call('DEL', s)
  redis.call('RPUSH', s, fmt(f) .. ':' .. fmt(px) .. ':' .. slots)
  redis.call('PEXPIRE', s, px + ENTRY_TTL)
  notify(G, h)
end

-- The value of G's mutex for holder tok.
local function lock_value(tok, f, now_ms, owner)
  return tok .. ':' .. fmt(f) .. ':' .. fmt(now_ms) .. ':' .. owner
end

-- G's mutex may have become free: hand it on. A writer or a multi-lock
-- part at the head of the queue, once no reader is left, gets a lease: the
-- lock in its name for LEASE_TTL, until it confirms (then its own TTL) or
-- dies (then the lease runs out unrenewed). A
-- run of readers at the head is admitted together, each with a lease.
-- Nobody queued and the lock free: the watchers hear "".
local function handoff(G, now_ms)
  if redis.call('EXISTS', G[LOCK]) == 1 then
    return
  end
  local readers = live_readers(G, now_ms)
  local h, ttl, kind, owner, exp = head(G, now_ms)
  if not h then
    if readers == 0 then
      notify(G, '')
    end
    return
  end
  if kind ~= 'r' then
    if readers > 0 then
      return
    end
    local f = next_fence(G[FENCE])
    local px = lease_ms(exp, ttl, now_ms)
    redis.call('SET', G[LOCK], lock_value(h, f, now_ms, owner), 'PX', px)
    dequeue(G, h)
    signal(G, h, f, px, '-1')
    return
  end
  while h and kind == 'r' do
    local f = next_fence(G[FENCE])
    local px = lease_ms(exp, ttl, now_ms)
    add_member(G, h, now_ms + px, fmt(f) .. ':' .. fmt(now_ms) .. ':' .. owner, now_ms)
    dequeue(G, h)
    signal(G, h, f, px, '-1')
    h, ttl, kind, owner, exp = head(G, now_ms)
  end
end

-- How long (ms) until the first of G's holders (readers, or a semaphore's
-- permits) runs out (0: none held).
local function holders_hint(G, now_ms)
  local s = redis.call('ZRANGE', G[HOLDERS], 0, 0, 'WITHSCORES')[2]
  if s then
    return math.max(tonumber(s) - now_ms, 1)
  end
  return 0
end

-- How long (ms) until something may change for a waiter of G's mutex: the
-- lock's (or lease's) TTL, else the first reader's expiry; 0: unknown.
local function hint(G, now_ms)
  local p = redis.call('PTTL', G[LOCK])
  if p > 0 then
    return p
  end
  return holders_hint(G, now_ms)
end

-- ----------------------------------------------------------- semaphores
-- META holds limit (while there are holders or waiters), used (permits
-- held) and next (the first slot never handed out); FREE the slots given
-- back. Slots are allocated smallest first, in O(log N).

local function sem_num(G, field)
  return tonumber(redis.call('HGET', G[META], field) or '0')
end

-- Keep the semaphore's bookkeeping alive at least ms more.
local function sem_keep(G, ms)
  keep(G[META], ms + ENTRY_TTL)
  keep(G[FREE], ms + ENTRY_TTL)
end

-- Drop permit tok: its slots go back to FREE.
local function sem_drop(G, tok)
  local e = redis.call('HGET', G[HINFO], tok)
  redis.call('ZREM', G[HOLDERS], tok)
  redis.call('HDEL', G[HINFO], tok)
  local slots = e and string.match(e, '^([%d,]+):')
  if slots then
    local n = 0
    for s in string.gmatch(slots, '%d+') do
      redis.call('ZADD', G[FREE], s, s)
      n = n + 1
    end
    redis.call('HINCRBY', G[META], 'used', -n)
  end
end

-- Drop the permits whose time ran out.
local function sem_expire(G, now_ms)
  local dead = redis.call('ZRANGEBYSCORE', G[HOLDERS], '-inf', fmt(now_ms))
  for _, t in ipairs(dead) do
    sem_drop(G, t)
  end
end

-- Nobody holds and nobody waits: forget the limit and the slots.
local function sem_reset_if_idle(G, now_ms)
  if redis.call('ZCARD', G[HOLDERS]) == 0 and not head(G, now_ms) then
    redis.call('DEL', G[META], G[FREE])
  end
end

-- Give tok `want` permits until `expiry`: the smallest free slots, a
-- fencing token. Returns the token and the slots ("3" or "3,4,7").
local function sem_grant(G, tok, want, now_ms, expiry, owner)
  local slots = {}
  local got = redis.call('ZPOPMIN', G[FREE], want)
  for i = 1, #got, 2 do
    slots[#slots + 1] = got[i]
  end
  while #slots < want do
    slots[#slots + 1] = fmt(redis.call('HINCRBY', G[META], 'next', 1) - 1)
  end
  redis.call('HINCRBY', G[META], 'used', want)
  local f = next_fence(G[FENCE])
  local s = table.concat(slots, ',')
  add_member(G, tok, expiry, s .. ':' .. fmt(f) .. ':' .. fmt(now_ms) .. ':' .. owner, now_ms)
  sem_keep(G, expiry - now_ms)
  return f, s
end

-- Admit queued waiters, first come first served, while their permits fit
-- (a large request at the head is not overtaken by smaller ones behind it).
-- Each gets a lease, as in handoff(). Free permits and nobody queued: the
-- watchers hear "".
local function sem_admit(G, now_ms)
  local limit, used = sem_num(G, 'limit'), sem_num(G, 'used')
  while true do
    local h, ttl, kind, owner, exp = head(G, now_ms)
    if not h then
      if used < limit then
        notify(G, '')
      end
      return
    end
    local want = tonumber(kind)
    if not want or used + want > limit then
      return
    end
    local px = lease_ms(exp, ttl, now_ms)
    local f, slots = sem_grant(G, h, want, now_ms, now_ms + px, owner)
    dequeue(G, h)
    signal(G, h, f, px, slots)
    used = used + want
  end
end

-- luacheck: pop
