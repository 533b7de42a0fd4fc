-- Helpers prepended to every pool script. ARGV[1] is always the key prefix.
--
-- Keys are built here from the prefix instead of being passed in KEYS, because a lease
-- decision reads tokens it cannot name in advance. That needs a single Redis node, or a
-- prefix carrying a hash tag (for example "{grok2api}") so every key lands in one slot.
-- Writing after TIME and SMEMBERS needs effect replication of scripts (Redis 5 or later).
--
-- Layout:
--   <p>:toks          set of all token ids
--   <p>:tier:<tier>   set of token ids of one tier (a lease scans only the tiers it asks for)
--   <p>:tok:<id>      hash: pool tier sealed status quota resume_quota cooling_until_ms
--                           fail_count use_count last_used_ms last_refresh_ms
--                           tier_inferred (1 once a quota refresh named the tier)
--   <p>:leases:<id>   sorted set of live leases: member = fence, score = expiry (unix ms)
--   <p>:fence         counter shared by all tokens, so a token removed and added again
--                     never hands out a fence number an old lease still carries

local P = ARGV[1]

local function tok_key(id) return P .. ':tok:' .. id end
local function leases_key(id) return P .. ':leases:' .. id end
local function tier_key(tier) return P .. ':tier:' .. tier end
local function all_key() return P .. ':toks' end

-- The server's clock, so every worker agrees on when leases and cooldowns end.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Leases past their expiry hold no slot: this is how a crashed worker's lease comes back.
local function drop_expired(id, now)
  redis.call('ZREMRANGEBYSCORE', leases_key(id), '-inf', now)
end

-- Counting without removing keeps the lease scan read-only for the tokens it passes over.
local function live_leases(id, now)
  return redis.call('ZCOUNT', leases_key(id), '(' .. now, '+inf')
end

local function load(id)
  local v = redis.call('HMGET', tok_key(id), 'pool', 'tier', 'sealed', 'status', 'quota',
    'resume_quota', 'cooling_until_ms', 'fail_count', 'use_count', 'last_used_ms',
    'last_refresh_ms', 'tier_inferred')
  if not v[1] then return nil end
  return {
    pool = v[1], tier = v[2], sealed = v[3], status = v[4],
    quota = tonumber(v[5]) or 0, resume_quota = tonumber(v[6]) or 0,
    cooling_until = tonumber(v[7]) or 0, fail_count = tonumber(v[8]) or 0,
    use_count = tonumber(v[9]) or 0, last_used = tonumber(v[10]) or 0,
    last_refresh = tonumber(v[11]) or 0, tier_inferred = v[12] == '1',
  }
end

-- Just what ranking a token for a lease needs (see lease.lua).
local function load_rank(id)
  local v = redis.call('HMGET', tok_key(id), 'status', 'quota', 'cooling_until_ms',
    'last_used_ms', 'resume_quota')
  if not v[1] then return nil end
  return {
    status = v[1], quota = tonumber(v[2]) or 0, cooling_until = tonumber(v[3]) or 0,
    last_used = tonumber(v[4]) or 0, resume_quota = tonumber(v[5]) or 0,
  }
end

-- A cooling token whose window has passed is active again. Its real quota is unknown
-- until the next quota refresh, so it gets back what it had when it started cooling, or 1
-- so that it is selectable at all.
local function recover_if_due(id, h, now)
  if h.status == 'cooling' and h.cooling_until <= now then
    local quota = 1
    if h.resume_quota > 0 then quota = h.resume_quota end
    redis.call('HSET', tok_key(id), 'status', 'active', 'quota', quota, 'cooling_until_ms', 0)
    h.status, h.quota, h.cooling_until = 'active', quota, 0
  end
end

-- Reply layout of one TokenState, read back in redis.rs.
local function state_reply(id, h, now)
  return { id, h.pool, h.tier, h.status, h.quota, live_leases(id, now), h.cooling_until,
    h.fail_count, h.use_count, h.last_used, h.last_refresh }
end
