-- Applies what a quota refresh learned about one token.
-- ARGV: prefix, token id, outcome (quota | unauthorized | blocked), remaining, total,
--       tier ('' = unknown), window reset ms (-1 = default cooldown), fail threshold,
--       default cooldown ms.
-- Reply: the token's state, or nil when the pool does not hold the token.
--
-- A refresh is the upstream's own word, so unlike a settlement it may bring an invalid
-- token back (that is how invalid tokens are re-checked). An operator's "disabled" stays.

local id, outcome = ARGV[2], ARGV[3]
local remaining, total = tonumber(ARGV[4]), tonumber(ARGV[5])
local new_tier, reset_ms = ARGV[6], tonumber(ARGV[7])
local threshold, default_cooldown = tonumber(ARGV[8]), tonumber(ARGV[9])

local now = now_ms()
local h = load(id)
if not h then return nil end
drop_expired(id, now)
recover_if_due(id, h, now)

if outcome == 'quota' then
  h.last_refresh = now
  h.fail_count = 0
  if new_tier ~= '' and new_tier ~= h.tier then
    redis.call('SREM', tier_key(h.tier), id)
    redis.call('SADD', tier_key(new_tier), id)
    h.tier = new_tier
  end
  if new_tier ~= '' then redis.call('HSET', tok_key(id), 'tier_inferred', '1') end
  if h.status ~= 'disabled' then
    h.quota = math.max(remaining, 0)
    if h.quota > 0 then
      h.status, h.cooling_until = 'active', 0
    else
      if reset_ms < 0 then reset_ms = default_cooldown end
      h.status, h.cooling_until = 'cooling', now + reset_ms
      h.resume_quota = math.max(total, 0)
    end
  end
elseif outcome == 'unauthorized' then
  h.fail_count = h.fail_count + 1
  if h.status ~= 'disabled' and h.fail_count >= threshold then
    h.status, h.cooling_until = 'invalid', 0
  end
elseif outcome == 'blocked' then
  if h.status ~= 'disabled' then h.status, h.cooling_until = 'invalid', 0 end
end

redis.call('HSET', tok_key(id), 'tier', h.tier, 'status', h.status, 'quota', h.quota,
  'resume_quota', h.resume_quota, 'cooling_until_ms', h.cooling_until,
  'fail_count', h.fail_count, 'last_refresh_ms', h.last_refresh)
reindex(id)
return state_reply(id, h, now)
