-- The state of every token, sorted by id. Drops expired leases and recovers cooling
-- tokens whose window has passed, so what it reports is what a lease would see.
-- ARGV: prefix.

local now = now_ms()
local ids = redis.call('SMEMBERS', all_key())
table.sort(ids)
local out = {}
for _, id in ipairs(ids) do
  local h = load(id)
  if h then
    drop_expired(id, now)
    recover_if_due(id, h, now)
    out[#out + 1] = state_reply(id, h, now)
  end
end
return out
