-- inspect.lua: who holds a mutex. KEYS: the key's mutex group.
-- Reply: {value or false, its TTL (ms), waiters queued}.
local v = redis.call('GET', KEYS[LOCK])
return {v, v and redis.call('PTTL', KEYS[LOCK]) or 0, redis.call('ZCARD', KEYS[QUEUE])}
