-- renew.lua renews the lease of jobs this consumer still owns: XCLAIM
-- ... JUSTID to itself, which resets the idle time without counting a
-- delivery. A job another consumer took (after this one's heartbeat
-- lapsed) or that was acknowledged is left alone.
--
-- KEYS[1] stream
-- ARGV[1] group, ARGV[2] this consumer, ARGV[3..] job ids
--
-- Returns the ids renewed.
local out = {}
for i = 3, #ARGV do
  local pe = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if pe[1] and pe[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    out[#out+1] = ARGV[i]
  end
end
return out
