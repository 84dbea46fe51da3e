package jobs

import "github.com/redis/go-redis/v9"

// Every script below touches only the keys it declares in KEYS, and all
// KEYS of one call belong to one partition of one queue, so they share the
// partition's hash tag ({pN}) and the script runs unchanged on Redis Cluster.
//
// Stream entry fields: p = payload, n = deliveries before this entry (set
// when a job comes back from the retry set; absent means 0).
// Dead-letter entry fields: p = payload, o = original job id, r = reason,
// n = deliveries, t = unix ms when it died.
// Retry set member: "<n>|<uniq>|<payload>", scored by due unix ms; uniq
// keeps equal payloads apart (the original job id, or "d"+random for
// delayed jobs).

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

// settleScript finishes the jobs of one handler call in one partition. Each
// job is acknowledged (XACK), deleted from the stream (XDEL) and its done
// record removed (HDEL), after an optional move to the retry set or the
// dead-letter stream.
//
//	KEYS[1] stream, KEYS[2] done records (keys.Done), KEYS[3] retry set,
//	KEYS[4] dead-letter stream
//	ARGV[1] group, ARGV[2] now unix ms, ARGV[3] dead-letter MAXLEN (~)
//	ARGV[4..] operations, back to back:
//	  'a', id                          acknowledge
//	  'r', id, due ms, member          schedule a retry, acknowledge
//	  'd', id, payload, reason, n      dead-letter, acknowledge
//
// Returns the number of entries XACK acknowledged.
var settleScript = redis.NewScript(`
local ids = {}
local i = 4
while i <= #ARGV do
  local op, id = ARGV[i], ARGV[i+1]
  ids[#ids+1] = id
  if op == 'a' then
    i = i + 2
  elseif op == 'r' then
    redis.call('ZADD', KEYS[3], ARGV[i+2], ARGV[i+3])
    i = i + 4
  elseif op == 'd' then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*',
      'p', ARGV[i+2], 'o', id, 'r', ARGV[i+3], 'n', ARGV[i+4], 't', ARGV[2])
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
return acked
`)

// reclaimScript takes over jobs whose consumer went quiet (XAUTOCLAIM) and
// sorts them: a job with a done record is acknowledged without running
// again; a job past its delivery budget is dead-lettered; the rest are
// returned to the caller, which now owns them.
//
//	KEYS[1] stream, KEYS[2] done records, KEYS[3] dead-letter stream
//	ARGV[1] group, ARGV[2] consumer, ARGV[3] min idle ms, ARGV[4] start id,
//	ARGV[5] count, ARGV[6] max deliveries, ARGV[7] now unix ms,
//	ARGV[8] dead-letter MAXLEN (~)
//
// Returns {next start id, {id, payload, deliveries, ...}, skipped, dead}
// where deliveries = carried n + the entry's XPENDING delivery count, and
// skipped counts jobs acknowledged because of their done record. A next
// start id of "0-0" means the scan is complete.
var reclaimScript = redis.NewScript(`
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out, skipped, dead = {}, 0, 0
local max = tonumber(ARGV[6])
for _, e in ipairs(r[2]) do
  local id, f = e[1], e[2]
  if f then
    local gone = false
    if redis.call('HEXISTS', KEYS[2], id) == 1 then
      skipped = skipped + 1
      gone = true
    else
      local payload, n = '', 0
      for j = 1, #f, 2 do
        if f[j] == 'p' then payload = f[j+1] elseif f[j] == 'n' then n = tonumber(f[j+1]) or 0 end
      end
      local pe = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
      local d = n + ((pe[1] and pe[1][4]) or 1)
      if d > max then
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*',
          'p', payload, 'o', id, 'r', 'delivered ' .. d .. ' times without finishing', 'n', d, 't', ARGV[7])
        dead = dead + 1
        gone = true
      else
        out[#out+1] = id
        out[#out+1] = payload
        out[#out+1] = d
      end
    end
    if gone then
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
      redis.call('HDEL', KEYS[2], id)
    end
  else
    redis.call('XACK', KEYS[1], ARGV[1], id)
  end
end
return {r[1], out, skipped, dead}
`)

// moveDueScript moves due jobs from the retry set into the stream.
//
//	KEYS[1] retry set, KEYS[2] stream
//	ARGV[1] now unix ms, ARGV[2] max jobs to move
//
// Returns the number of jobs moved.
var moveDueScript = redis.NewScript(`
local ms = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(ms) do
  local a = string.find(m, '|', 1, true)
  local b = a and string.find(m, '|', a + 1, true)
  if b then
    local n = string.sub(m, 1, a - 1)
    local payload = string.sub(m, b + 1)
    if n == '0' then
      redis.call('XADD', KEYS[2], '*', 'p', payload)
    else
      redis.call('XADD', KEYS[2], '*', 'p', payload, 'n', n)
    end
  end
  redis.call('ZREM', KEYS[1], m)
end
return #ms
`)

// requeueDeadScript moves dead jobs back into the stream with a fresh
// delivery budget.
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
var allScripts = []*redis.Script{enqueueUniqueScript, settleScript, reclaimScript, moveDueScript, requeueDeadScript}
