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
--   <p>:rank:quota:<tier>, <p>:rank:lru:<tier>
--                     the leasable tokens (active, quota left) of a tier in lease order,
--                     one sorted set per policy; every score is 0, so the order is the
--                     members' byte order: zero-padded sort keys, then '|', then the id
--   <p>:cooling       sorted set of cooling tokens, score = when their window ends (ms)
-- A token's hash also remembers its current index members (rank_tier, rank_q, rank_l).
-- Every script that changes a token's status, quota, tier or last use calls reindex, so a
-- lease reads tokens in order instead of scanning the tier.

local P = ARGV[1]

local function tok_key(id) return P .. ':tok:' .. id end
local function leases_key(id) return P .. ':leases:' .. id end
local function tier_key(tier) return P .. ':tier:' .. tier end
local function all_key() return P .. ':toks' end
local function rank_key(policy, tier) return P .. ':rank:' .. policy .. ':' .. tier end
local function cooling_key() return P .. ':cooling' end

-- Quotas above this sort as equal; no account has that many calls.
local MAX_QUOTA = 1000000000000000

local function pad(n, width) return string.format('%0' .. width .. 'd', n) end

-- Takes a token out of every index (before it changes, or is deleted).
local function unindex(id)
  local old = redis.call('HMGET', tok_key(id), 'rank_tier', 'rank_q', 'rank_l')
  if old[1] then
    redis.call('ZREM', rank_key('quota', old[1]), old[2])
    redis.call('ZREM', rank_key('lru', old[1]), old[3])
    redis.call('HDEL', tok_key(id), 'rank_tier', 'rank_q', 'rank_l')
  end
  redis.call('ZREM', cooling_key(), id)
end

-- Puts a token where its current state says: the rank sets of its tier if it can be
-- leased, the cooling set if it is cooling, nowhere otherwise. The members encode the
-- order of lease.lua's policies exactly: quota = most quota, then least recently used,
-- then smaller id; lru = least recently used, then most quota, then smaller id.
local function reindex(id)
  unindex(id)
  local v = redis.call('HMGET', tok_key(id), 'tier', 'status', 'quota', 'last_used_ms',
    'cooling_until_ms')
  if not v[1] then return end
  local quota = tonumber(v[3]) or 0
  if v[2] == 'active' and quota > 0 then
    local more = pad(MAX_QUOTA - math.min(quota, MAX_QUOTA), 16)
    local used = pad(tonumber(v[4]) or 0, 15)
    local q, l = more .. used .. '|' .. id, used .. more .. '|' .. id
    redis.call('ZADD', rank_key('quota', v[1]), 0, q)
    redis.call('ZADD', rank_key('lru', v[1]), 0, l)
    redis.call('HSET', tok_key(id), 'rank_tier', v[1], 'rank_q', q, 'rank_l', l)
  elseif v[2] == 'cooling' then
    redis.call('ZADD', cooling_key(), tonumber(v[5]) or 0, id)
  end
end

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
    reindex(id)
    return true
  end
  return false
end

-- Reply layout of one TokenState, read back in redis.rs.
local function state_reply(id, h, now)
  return { id, h.pool, h.tier, h.status, h.quota, live_leases(id, now), h.cooling_until,
    h.fail_count, h.use_count, h.last_used, h.last_refresh }
end
