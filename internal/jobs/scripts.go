package jobs

import "github.com/redis/go-redis/v9"

// Every script below touches only the keys it declares in KEYS, and all
// KEYS of one call belong to one partition of one queue, so they share the
// partition's hash tag ({pN}) and the script runs unchanged on Redis Cluster.
//
// Every time a script decides on (retry due times, staleness, dead-letter
// times) is Redis's own clock (TIME), never a replica's: replicas whose
// clocks disagree still agree on when a retry is due.
//
// Stream entry fields: p = payload, n = deliveries before this entry (set
// when a job comes back from the retry set; absent means 0), f = unix ms of
// the job's first enqueue on Redis's clock (absent means the time part of
// the entry id, which Redis also set).
// Dead-letter entry fields: p = payload, o = original job id, r = reason,
// n = deliveries, t = unix ms when it died.
// Retry set member: "<n>|<f>|<uniq>|<payload>", scored by due unix ms; uniq
// keeps equal payloads apart (the original job id, or "d"+random for
// delayed jobs).

// redisNowMs is the Lua prelude every script that needs the time starts
// with: Redis's clock in unix ms, rounded down (now, to compare with) and
// up (nowUp, to add a delay to, so a job is never due before its delay
// has fully passed).
const redisNowMs = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nowUp = tonumber(t[1]) * 1000 + math.ceil(tonumber(t[2]) / 1000)
`

// enqueueUniqueScript adds a job unless its idempotency marker exists.
//
//	KEYS[1] idempotency marker (keys.Unique)
//	KEYS[2] stream (keys.Stream)
//	ARGV[1] marker TTL in ms
//	ARGV[2] payload
//
// Returns {1, new job id} when the job was added, {0, first job id} when the
// marker already existed.
var enqueueUniqueScript = redis.NewScript(`
local old = redis.call('GET', KEYS[1])
if old then return {0, old} end
local id = redis.call('XADD', KEYS[2], '*', 'p', ARGV[2])
redis.call('SET', KEYS[1], id, 'PX', ARGV[1])
return {1, id}
`)

// enqueueDelayedScript adds a job to the retry set, due after a delay on
// Redis's clock.
//
//	KEYS[1] retry set
//	ARGV[1] delay ms, ARGV[2] uniq, ARGV[3] payload
//
// Returns the due time in unix ms.
var enqueueDelayedScript = redis.NewScript(redisNowMs + `
local due = nowUp + tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], due, '0|' .. now .. '|' .. ARGV[2] .. '|' .. ARGV[3])
return due
`)

// settleScript finishes the jobs of one handler call in one partition. Each
// job is acknowledged (XACK), deleted from the stream (XDEL) and its done
// record removed (HDEL), after an optional move to the retry set or the
// dead-letter stream.
//
//	KEYS[1] stream, KEYS[2] done records (keys.Done), KEYS[3] retry set,
//	KEYS[4] dead-letter stream
//	ARGV[1] group, ARGV[2] dead-letter MAXLEN (~), ARGV[3] max age ms
//	(0: no age limit)
//	ARGV[4..] operations, back to back:
//	  'a', id                            acknowledge
//	  'r', id, delay ms, n, f, payload   schedule a retry due now + delay,
//	                                     carrying n deliveries and first
//	                                     enqueue f; if that is later than
//	                                     f + max age, dead-letter instead
//	  'd', id, payload, reason, n        dead-letter, acknowledge
//
// Returns {acked, {ids of 'r' jobs dead-lettered as stale}}.
var settleScript = redis.NewScript(redisNowMs + `
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
`)

// claimScript takes over listed pending jobs of one consumer (a dead
// consumer, or this worker's own jobs that no handler holds any more) and
// sorts them: a job with a done record is acknowledged without running
// again; a job delivered more than the budget allows, or older than the
// max age, is dead-lettered; the rest are returned to the caller, which
// now owns them. A job is taken only while it is still pending with the
// named owner, so two reclaimers never both take it, and a job that
// another live consumer holds is never taken.
//
//	KEYS[1] stream, KEYS[2] done records, KEYS[3] dead-letter stream
//	ARGV[1] group, ARGV[2] this consumer, ARGV[3] owner to take from,
//	ARGV[4] max deliveries, ARGV[5] max age ms (0: none; then the budget
//	counts retries too), ARGV[6] dead-letter MAXLEN (~), ARGV[7..] job ids
//
// Returns {{id, payload, deliveries, first enqueue ms, ...}, skipped,
// {dead payload, id, reason, deliveries, ...}} where deliveries = carried n
// + this entry's delivery count, and skipped counts jobs acknowledged
// because of their done record.
var claimScript = redis.NewScript(redisNowMs + `
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
`)

// renewScript renews the lease of jobs this consumer still owns: XCLAIM
// ... JUSTID to itself, which resets the idle time without counting a
// delivery. A job another consumer took (after this one's heartbeat
// lapsed) or that was acknowledged is left alone.
//
//	KEYS[1] stream
//	ARGV[1] group, ARGV[2] this consumer, ARGV[3..] job ids
//
// Returns the ids renewed.
var renewScript = redis.NewScript(`
local out = {}
for i = 3, #ARGV do
  local pe = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if pe[1] and pe[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    out[#out+1] = ARGV[i]
  end
end
return out
`)

// delConsumerScript removes a consumer from the group if it has no pending
// jobs (checked in the same step, so no pending job is ever dropped).
//
//	KEYS[1] stream
//	ARGV[1] group, ARGV[2] consumer
//
// Returns 1 when the consumer was removed, 0 when it still has jobs.
var delConsumerScript = redis.NewScript(`
local pe = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if pe[1] then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
`)

// sweepDoneScript removes done records of jobs that are no longer pending
// (acknowledged by someone else before the record was written). A done
// record matters only while its job is pending, so this never drops one
// that a redelivery could need.
//
//	KEYS[1] stream, KEYS[2] done records
//	ARGV[1] group, ARGV[2] HSCAN cursor, ARGV[3] HSCAN COUNT
//
// Returns {next cursor, removed}.
var sweepDoneScript = redis.NewScript(`
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
`)

// moveDueScript moves due jobs (score ≤ Redis's now) from the retry set
// into the stream.
//
//	KEYS[1] retry set, KEYS[2] stream
//	ARGV[1] max jobs to move
//
// Returns the number of jobs moved.
var moveDueScript = redis.NewScript(redisNowMs + `
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
`)

// requeueDeadScript moves dead jobs back into the stream with a fresh
// delivery budget and a fresh age.
//
//	KEYS[1] dead-letter stream, KEYS[2] stream
//	ARGV[1] dead-letter entry id, or "" for the oldest ARGV[2] entries
//	ARGV[2] max entries to move
//
// Returns the number of jobs moved (0 when the id does not exist).
var requeueDeadScript = redis.NewScript(`
local es
if ARGV[1] ~= '' then
  es = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
else
  es = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[2])
end
for _, e in ipairs(es) do
  local f, payload = e[2], ''
  for j = 1, #f, 2 do if f[j] == 'p' then payload = f[j+1] end end
  redis.call('XADD', KEYS[2], '*', 'p', payload)
  redis.call('XDEL', KEYS[1], e[1])
end
return #es
`)

// allScripts are loaded on every node when a worker starts.
var allScripts = []*redis.Script{enqueueUniqueScript, enqueueDelayedScript, settleScript, claimScript,
	renewScript, delConsumerScript, sweepDoneScript, moveDueScript, requeueDeadScript}
