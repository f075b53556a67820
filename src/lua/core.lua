-- core.lua: what even the fast paths need. Every script starts with the
-- constants prelude generated from keys.h (LOCK, QUEUE, ENTRY_TTL, ...),
-- then this file, then its own text.

-- Integers as decimal text (Lua's tostring would print 1.7e+15).
local function fmt(n)
  return string.format('%d', n)
end

-- The server clock: microseconds and milliseconds.
local function clock()
  local t = redis.call('TIME')
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  return us, math.floor(us / 1000)
end

-- The next fencing token of a key: one more than the last one. When the
-- fence key is missing (never used, its day of life over, or lost with the
-- server's data) the sequence goes on from the server clock in
-- microseconds, which is above every earlier token as long as that clock
-- never goes back and the key was granted fewer than once per microsecond
-- since the clock was last read here (the key lives a day from then).
-- Counting (rather than reading the clock each time) lets the nodes of a
-- Redlock agree on tokens, so acquisitions need no second round.
local function next_fence(fk)
  local f = redis.call('INCR', fk)
  if f == 1 then
    f = clock()
    redis.call('SET', fk, fmt(f), 'PX', FENCE_TTL)
  end
  return f
end
