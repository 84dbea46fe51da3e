-- settle.lua finishes the jobs of one handler call in one partition. Each
-- job is acknowledged (XACK), deleted from the stream (XDEL) and its done
-- record removed (HDEL), after an optional move to the retry set or the
-- dead-letter stream (now.lua is prepended).
--
-- KEYS[1] stream, KEYS[2] done records (keys.Done), KEYS[3] retry set,
-- KEYS[4] dead-letter stream
-- ARGV[1] group, ARGV[2] dead-letter MAXLEN (~), ARGV[3] max age ms
-- (0: no age limit)
-- ARGV[4..] operations, back to back:
--   'a', id                            acknowledge
--   'r', id, delay ms, n, f, payload   schedule a retry due now + delay,
--                                      carrying n deliveries and first
--                                      enqueue f; if that is later than
--                                      f + max age, dead-letter instead
--   'd', id, payload, reason, n        dead-letter, acknowledge
--
-- Returns {acked, {ids of 'r' jobs dead-lettered as stale}}.
local maxAge = tonumber(ARGV[3])
local ids, stale = {}, {}
local i = 4
while i <= #ARGV do
  local op, id = ARGV[i], ARGV[i+1]
  ids[#ids+1] = id
  if op == 'a' then
    i = i + 2
  elseif op == 'r' then
    local due, n, f, payload = nowUp + tonumber(ARGV[i+2]), ARGV[i+3], ARGV[i+4], ARGV[i+5]
    if maxAge > 0 and due > tonumber(f) + maxAge then
      redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*',
        'p', payload, 'o', id, 'r', 'stale: a retry would be due after the job is ' .. maxAge .. ' ms old', 'n', n, 't', now)
      stale[#stale+1] = id
    else
      redis.call('ZADD', KEYS[3], due, n .. '|' .. f .. '|' .. id .. '|' .. payload)
    end
    i = i + 6
  elseif op == 'd' then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*',
      'p', ARGV[i+2], 'o', id, 'r', ARGV[i+3], 'n', ARGV[i+4], 't', now)
    i = i + 5
  else
    return redis.error_reply('settle: unknown op ' .. tostring(op))
  end
end
local acked = 0
for s = 1, #ids, 500 do
  local chunk = {}
  for j = s, math.min(s + 499, #ids) do chunk[#chunk+1] = ids[j] end
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(chunk))
  redis.call('XDEL', KEYS[1], unpack(chunk))
  redis.call('HDEL', KEYS[2], unpack(chunk))
end
return {acked, stale}
