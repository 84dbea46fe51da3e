-- sweepdone.lua removes done records of jobs that are no longer pending
-- (acknowledged by someone else before the record was written). A done
-- record matters only while its job is pending, so this never drops one
-- that a redelivery could need.
--
-- KEYS[1] stream, KEYS[2] done records
-- ARGV[1] group, ARGV[2] HSCAN cursor, ARGV[3] HSCAN COUNT
--
-- Returns {next cursor, removed}.
local r = redis.call('HSCAN', KEYS[2], ARGV[2], 'COUNT', ARGV[3])
local removed = 0
local kv = r[2]
for j = 1, #kv, 2 do
  local id = kv[j]
  local pe = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if not pe[1] then
    removed = removed + redis.call('HDEL', KEYS[2], id)
  end
end
return {r[1], removed}
