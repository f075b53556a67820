-- keepalive.lua: the watchdog's round for one waiting handle (wait.c).
-- KEYS: its groups (one, or one per key of a multi-lock; SGROUP keys for a
-- semaphore). ARGV: token, kind ('w' writer, 'r' reader, 'm' multi-lock,
-- 's' semaphore), watching ("1": an unqueued watcher, "0": queued).
--
-- A queued waiter's entries (and any lease it was handed but has not
-- confirmed yet) get a fresh life of ENTRY_TTL; a lock found free is
-- handed on first, so the keepalive is also what moves a lock on when a
-- holder's TTL, a dead waiter's lease or a dead head entry ran out. A
-- watcher's registration is renewed and it hears whether the lock is free.
-- Reply: {state, ms until something may change (0: unknown)}; state
-- KA_QUEUED (still in line), KA_LEASED (everything it waits for is handed
-- to it: confirm), KA_LOST (no entry or lease left: queue again), KA_FREE
-- (watcher: the lock may be taken now).
local tok, kind, watching = ARGV[1], ARGV[2], ARGV[3] == '1'
-- @helpers
local _, now_ms = clock()
local sem = kind == 's'
local state, wait_ms, leased, free = KA_QUEUED, 0, true, true
local function sooner(ms)
  if ms > 0 and (wait_ms == 0 or ms < wait_ms) then
    wait_ms = ms
  end
end
for _, G in ipairs(groups_of(sem and SGROUP or GROUP)) do
  if sem then
    sem_expire(G, now_ms)
  end
  if watching then
    watch(G, tok, now_ms)
    if sem then
      free = free and sem_num(G, 'used') < sem_num(G, 'limit')
      sooner(holders_hint(G, now_ms))
    else
      free = free and redis.call('EXISTS', G[LOCK]) == 0 and
        (kind == 'r' or live_readers(G, now_ms) == 0)
      sooner(hint(G, now_ms))
    end
  else
    if sem then
      sem_admit(G, now_ms)
    else
      handoff(G, now_ms)
    end
    local mine
    if sem or kind == 'r' then
      local e = redis.call('ZSCORE', G[HOLDERS], tok)
      mine = e and tonumber(e) > now_ms
      if mine and tonumber(e) < now_ms + ENTRY_TTL then
        redis.call('ZADD', G[HOLDERS], fmt(now_ms + ENTRY_TTL), tok)
      end
    else
      local v = redis.call('GET', G[LOCK])
      mine = v and string.sub(v, 1, TOKEN_LEN) == tok
      if mine and redis.call('PTTL', G[LOCK]) < ENTRY_TTL then
        redis.call('PEXPIRE', G[LOCK], ENTRY_TTL)
      end
    end
    if not mine then
      leased = false
      if refresh(G, tok, now_ms) then
        sooner(sem and holders_hint(G, now_ms) or hint(G, now_ms))
      else
        state = KA_LOST
      end
    end
    if sem then
      sem_keep(G, ENTRY_TTL)
    end
  end
end
if watching then
  state = free and KA_FREE or KA_QUEUED
elseif state ~= KA_LOST and leased then
  state = KA_LEASED
end
return {state, wait_ms}
