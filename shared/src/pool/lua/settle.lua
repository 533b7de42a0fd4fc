-- Ends one lease and applies its outcome.
-- ARGV: prefix, token id, fence, outcome (success | rate_limited | unauthorized | blocked |
--       released), amount (cost for success; cooldown ms for rate_limited, -1 = default),
--       fail threshold, default cooldown ms.
-- Reply: the token's state, or nil when the lease is unknown, already settled or expired.

local id, fence, outcome = ARGV[2], ARGV[3], ARGV[4]
local amount = tonumber(ARGV[5])
local threshold = tonumber(ARGV[6])
local default_cooldown = tonumber(ARGV[7])

local now = now_ms()
local expiry = redis.call('ZSCORE', leases_key(id), fence)
drop_expired(id, now)
if not expiry or tonumber(expiry) <= now then return nil end
redis.call('ZREM', leases_key(id), fence)

local h = load(id)
if not h then return nil end
recover_if_due(id, h, now)

-- Outcomes move only tokens the pool manages itself; an operator's "disabled" and an
-- "invalid" verdict stay until a sync changes them.
local managed = h.status == 'active' or h.status == 'cooling'

local function cool(until_ms, resume_quota)
  if h.status == 'active' then h.resume_quota = resume_quota end
  h.status = 'cooling'
  h.cooling_until = math.max(h.cooling_until, until_ms)
end

if outcome == 'success' then
  h.quota = math.max(h.quota - amount, 0)
  h.use_count = h.use_count + 1
  h.fail_count = 0
  if h.quota == 0 and h.status == 'active' then cool(now + default_cooldown, 0) end
elseif outcome == 'rate_limited' then
  if amount < 0 then amount = default_cooldown end
  if managed then
    cool(now + amount, h.quota)
    h.quota = 0
  end
elseif outcome == 'unauthorized' then
  h.fail_count = h.fail_count + 1
  if managed and h.fail_count >= threshold then h.status, h.cooling_until = 'invalid', 0 end
elseif outcome == 'blocked' then
  if managed then h.status, h.cooling_until = 'invalid', 0 end
end
-- 'released' only frees the slot.

redis.call('HSET', tok_key(id), 'status', h.status, 'quota', h.quota,
  'resume_quota', h.resume_quota, 'cooling_until_ms', h.cooling_until,
  'fail_count', h.fail_count, 'use_count', h.use_count)
reindex(id)
return state_reply(id, h, now)
