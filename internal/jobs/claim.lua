-- claim.lua takes over listed pending jobs of one consumer (a dead
-- consumer, or this worker's own jobs that no handler holds any more) and
-- sorts them: a job with a done record is acknowledged without running
-- again; a job delivered more than the budget allows, or older than the
-- max age, is dead-lettered; the rest are returned to the caller, which
-- now owns them. A job is taken only while it is still pending with the
-- named owner, so two reclaimers never both take it, and a job that
-- another live consumer holds is never taken (now.lua is prepended).
--
-- KEYS[1] stream, KEYS[2] done records, KEYS[3] dead-letter stream
-- ARGV[1] group, ARGV[2] this consumer, ARGV[3] owner to take from,
-- ARGV[4] max deliveries, ARGV[5] max age ms (0: none; then the budget
-- counts retries too), ARGV[6] dead-letter MAXLEN (~), ARGV[7..] job ids
--
-- Returns {{id, payload, deliveries, first enqueue ms, ...}, skipped,
-- {dead payload, id, reason, deliveries, ...}} where deliveries = carried n
-- + this entry's delivery count, and skipped counts jobs acknowledged
-- because of their done record.
local max, maxAge = tonumber(ARGV[4]), tonumber(ARGV[5])
local out, skipped, dead = {}, 0, {}
for i = 7, #ARGV do
  local id = ARGV[i]
  local pe = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if pe[1] and pe[1][2] == ARGV[3] then
    local count = tonumber(pe[1][4]) + 1
    local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
    local f = c[1] and c[1][2]
    local gone = false
    if not f then
      redis.call('XACK', KEYS[1], ARGV[1], id) -- deleted from the stream
    elseif redis.call('HEXISTS', KEYS[2], id) == 1 then
      skipped = skipped + 1
      gone = true
    else
      local payload, n, first = '', 0, nil
      for j = 1, #f, 2 do
        if f[j] == 'p' then payload = f[j+1]
        elseif f[j] == 'n' then n = tonumber(f[j+1]) or 0
        elseif f[j] == 'f' then first = tonumber(f[j+1]) end
      end
      if not first then first = tonumber(string.match(id, '^(%d+)')) end
      local d = n + count
      local reason
      if maxAge > 0 then
        if count > max then
          reason = 'delivered ' .. count .. ' times without finishing'
        elseif now > first + maxAge then
          reason = 'stale: older than ' .. maxAge .. ' ms'
        end
      elseif d > max then
        reason = 'delivered ' .. d .. ' times without finishing'
      end
      if reason then
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*',
          'p', payload, 'o', id, 'r', reason, 'n', d, 't', now)
        dead[#dead+1] = payload
        dead[#dead+1] = id
        dead[#dead+1] = reason
        dead[#dead+1] = d
        gone = true
      else
        out[#out+1] = id
        out[#out+1] = payload
        out[#out+1] = d
        out[#out+1] = first
      end
    end
    if gone then
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
      redis.call('HDEL', KEYS[2], id)
    end
  end
end
return {out, skipped, dead}
