-- Makes the pool hold exactly the given tokens.
-- ARGV: prefix, default cooldown ms, then six values per token:
--       id, pool, tier, sealed, status, quota.
-- Tokens that stay keep their runtime state (leases, cooling, counters), except that a
-- record saying disabled or invalid is applied, and a record saying active re-enables a
-- token the pool holds as invalid or disabled (an operator turned it back on).

local cooldown = tonumber(ARGV[2])
local now = now_ms()

local wanted = {}
for i = 3, #ARGV, 6 do wanted[ARGV[i]] = i end

for _, id in ipairs(redis.call('SMEMBERS', all_key())) do
  if not wanted[id] then
    local tier = redis.call('HGET', tok_key(id), 'tier')
    if tier then redis.call('SREM', tier_key(tier), id) end
    unindex(id)
    redis.call('DEL', tok_key(id), leases_key(id))
    redis.call('SREM', all_key(), id)
  end
end

for id, i in pairs(wanted) do
  local pool, tier, sealed, status, quota =
    ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], tonumber(ARGV[i + 5])
  local key = tok_key(id)
  local current = redis.call('HMGET', key, 'tier', 'status', 'tier_inferred')
  if current[1] then
    -- A tier the upstream reported (quota refresh) beats the one the pool name implies.
    if current[3] == '1' then tier = current[1] end
    if current[1] ~= tier then redis.call('SREM', tier_key(current[1]), id) end
    redis.call('HSET', key, 'pool', pool, 'tier', tier, 'sealed', sealed)
    if status == 'disabled' or status == 'invalid' then
      redis.call('HSET', key, 'status', status, 'cooling_until_ms', 0)
    elseif status == 'active' and (current[2] == 'invalid' or current[2] == 'disabled') then
      redis.call('HSET', key, 'status', 'active', 'quota', quota, 'fail_count', 0,
        'cooling_until_ms', 0)
    end
  else
    -- The record does not say when a cooling token's window ends: assume a full cooldown
    -- rather than hand a rate-limited account straight back out.
    local cooling_until = 0
    if status == 'cooling' then cooling_until = now + cooldown end
    redis.call('HSET', key, 'pool', pool, 'tier', tier, 'sealed', sealed, 'status', status,
      'quota', quota, 'resume_quota', quota, 'cooling_until_ms', cooling_until,
      'fail_count', 0, 'use_count', 0, 'last_used_ms', 0)
    redis.call('SADD', all_key(), id)
  end
  redis.call('SADD', tier_key(tier), id)
  -- Also builds the index of a pool written before the index existed.
  reindex(id)
end

return redis.status_reply('OK')
