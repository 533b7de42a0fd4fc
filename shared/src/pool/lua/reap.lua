-- Removes expired lease entries of every token. Leases already stop counting when they
-- expire; this only keeps the sorted sets from holding dead entries of tokens nobody
-- leases any more.
-- ARGV: prefix. Reply: the number of entries removed.

local now = now_ms()
local removed = 0
for _, id in ipairs(redis.call('SMEMBERS', all_key())) do
  removed = removed + redis.call('ZREMRANGEBYSCORE', leases_key(id), '-inf', now)
end
return removed
