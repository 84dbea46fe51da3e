-- movedue.lua moves due jobs (score <= Redis's now) from the retry set
-- into the stream (now.lua is prepended).
--
-- KEYS[1] retry set, KEYS[2] stream
-- ARGV[1] max jobs to move
--
-- Returns the number of jobs moved.
local ms = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
for _, m in ipairs(ms) do
  local a = string.find(m, '|', 1, true)
  local b = a and string.find(m, '|', a + 1, true)
  local c = b and string.find(m, '|', b + 1, true)
  if c then
    local n = string.sub(m, 1, a - 1)
    local f = string.sub(m, a + 1, b - 1)
    local payload = string.sub(m, c + 1)
    if n == '0' then
      redis.call('XADD', KEYS[2], '*', 'p', payload, 'f', f)
    else
      redis.call('XADD', KEYS[2], '*', 'p', payload, 'n', n, 'f', f)
    end
  end
  redis.call('ZREM', KEYS[1], m)
end
return #ms
