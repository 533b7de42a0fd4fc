-- Leases the best token of the first tier that has one.
-- ARGV: prefix, ttl_ms, per-token cap, policy (quota | lru), tier count n, n tiers in
--       order, excluded ids...
-- Reply: {'leased', id, pool, tier, sealed, fence} or {'exhausted', retry_after_ms or -1}.
--
-- Every token of a requested tier is looked at: a lease costs one HMGET of the ranking
-- fields per token, and a lease count only for a token that would beat the best so far.
-- Hundreds of tokens cost ~0.1-0.2 ms of Redis time per lease; larger pools would want a
-- quota-ordered index per tier.

local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local policy = ARGV[4]
local tier_count = tonumber(ARGV[5])
local excluded = {}
for i = 6 + tier_count, #ARGV do excluded[ARGV[i]] = true end

local now = now_ms()
local soonest = nil -- ms until the first cooling token of a requested tier returns

-- Policy 'quota': most quota wins, ties go to the least recently used. Policy 'lru': the
-- least recently used wins, ties go to the most quota. Then the smaller id, so the choice
-- is deterministic.
local function better(id, h, best, best_h)
  if best == nil then return true end
  if policy == 'lru' and h.last_used ~= best_h.last_used then
    return h.last_used < best_h.last_used
  end
  if h.quota ~= best_h.quota then return h.quota > best_h.quota end
  if h.last_used ~= best_h.last_used then return h.last_used < best_h.last_used end
  return id < best
end

for t = 1, tier_count do
  local best, best_h = nil, nil
  for _, id in ipairs(redis.call('SMEMBERS', tier_key(ARGV[5 + t]))) do
    local h = (not excluded[id]) and load_rank(id) or nil
    if h then
      recover_if_due(id, h, now)
      if h.status == 'cooling' then
        local wait = h.cooling_until - now
        if soonest == nil or wait < soonest then soonest = wait end
      -- The cheap comparison first: the lease count is read only for a possible winner.
      elseif h.status == 'active' and h.quota > 0 and better(id, h, best, best_h)
          and live_leases(id, now) < cap then
        best, best_h = id, h
      end
    end
  end
  if best then
    local chosen = load(best)
    drop_expired(best, now)
    local fence = redis.call('INCR', P .. ':fence')
    redis.call('ZADD', leases_key(best), now + ttl, fence)
    redis.call('HSET', tok_key(best), 'last_used_ms', now)
    return { 'leased', best, chosen.pool, chosen.tier, chosen.sealed, fence }
  end
end

return { 'exhausted', soonest or -1 }
