-- release.lua: give back a mutex (or write side, or leadership, or one key
-- of a multi-lock), and hand it on.
-- KEYS: the key's mutex group. ARGV: token, force ("1": whoever holds it,
-- for `dlock unlock --force`).
-- A waiter giving up calls it too: its entry, watch and signal go, and a
-- lease it was handed is given back. Reply: 1 if the lock was ours (and is
-- free or handed on now), 0 if not (another holder's lock is untouched).
local tok, force = ARGV[1], ARGV[2] == '1'
local v = redis.call('GET', KEYS[LOCK])
local mine = v and (force or string.sub(v, 1, TOKEN_LEN) == tok)
if mine then
  redis.call('DEL', KEYS[LOCK])
  if redis.call('EXISTS', KEYS[QUEUE], KEYS[WATCH]) == 0 then
    return 1 -- the fast path: nobody to hand it to or tell
  end
end
-- @helpers
local _, now_ms = clock()
if tok ~= '' then
  leave(KEYS, tok)
end
handoff(KEYS, now_ms)
return mine and 1 or 0
