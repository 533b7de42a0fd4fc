-- Leases the best token of the first tier that has one.
-- ARGV: prefix, ttl_ms, per-token cap, policy (quota | lru), tier count n, n tiers in
--       order, excluded ids...
-- Reply: {'leased', id, pool, tier, sealed, fence} or {'exhausted', retry_after_ms or -1}.
--
-- Policy 'quota': most quota wins, ties go to the least recently used. Policy 'lru': the
-- least recently used wins, ties go to the most quota. Then the smaller id, so the choice
-- is deterministic. The rank sets hold every leasable token in exactly that order (see
-- reindex in common.lua), so a lease reads tokens from the front until one is below the
-- per-token cap and not excluded: a few reads, not one per token of the tier.

local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local policy = ARGV[4]
if policy ~= 'lru' then policy = 'quota' end
local tier_count = tonumber(ARGV[5])
local excluded = {}
for i = 6 + tier_count, #ARGV do excluded[ARGV[i]] = true end

local now = now_ms()

-- Cooling tokens whose window has passed are leasable again.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', cooling_key(), '-inf', now)) do
  local h = load_rank(id)
  if not h or not recover_if_due(id, h, now) then reindex(id) end
end

local BATCH = 32
for t = 1, tier_count do
  local key = rank_key(policy, ARGV[5 + t])
  local best = nil
  local start = 0
  while best == nil do
    local members = redis.call('ZRANGE', key, start, start + BATCH - 1)
    if #members == 0 then break end
    for _, member in ipairs(members) do
      local id = string.sub(member, string.find(member, '|', 1, true) + 1)
      if not excluded[id] and live_leases(id, now) < cap then
        best = id
        break
      end
    end
    start = start + BATCH
  end
  if best then
    local chosen = load(best)
    drop_expired(best, now)
    local fence = redis.call('INCR', P .. ':fence')
    redis.call('ZADD', leases_key(best), now + ttl, fence)
    redis.call('HSET', tok_key(best), 'last_used_ms', now)
    reindex(best)
    return { 'leased', best, chosen.pool, chosen.tier, chosen.sealed, fence }
  end
end

-- Nothing leasable: how long until the first cooling token of a requested tier returns.
local wanted = {}
for t = 1, tier_count do wanted[ARGV[5 + t]] = true end
local cooling = redis.call('ZRANGE', cooling_key(), 0, -1, 'WITHSCORES')
for i = 1, #cooling, 2 do
  local id = cooling[i]
  if not excluded[id] and wanted[redis.call('HGET', tok_key(id), 'tier')] then
    return { 'exhausted', tonumber(cooling[i + 1]) - now }
  end
end
return { 'exhausted', -1 }
