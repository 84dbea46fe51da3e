-- requeuedead.lua moves dead jobs back into the stream with a fresh
-- delivery budget and a fresh age.
--
-- KEYS[1] dead-letter stream, KEYS[2] stream
-- ARGV[1] dead-letter entry id, or "" for the oldest ARGV[2] entries
-- ARGV[2] max entries to move
--
-- Returns the number of jobs moved (0 when the id does not exist).
local es
if ARGV[1] ~= '' then
  es = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
else
  es = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[2])
end
for _, e in ipairs(es) do
  local f, payload = e[2], ''
  for j = 1, #f, 2 do if f[j] == 'p' then payload = f[j+1] end end
  jobs_add(KEYS[2], payload)
  redis.call('XDEL', KEYS[1], e[1])
end
return #es
