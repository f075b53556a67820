-- fence_floor.lua: raise a key's last fencing token to at least ARGV[1]
-- (Redlock's write-back: see grant.c). KEYS: FENCE only. Reply: 1.
local cur = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local want = tonumber(ARGV[1])
if want > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', FENCE_TTL)
end
return 1
