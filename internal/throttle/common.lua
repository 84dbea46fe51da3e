-- common.lua holds the helpers shared by the decide and move scripts
-- (decide.lua, move.lua). It is prepended to each script body, after the
-- fragments of jobs (jobs.LuaAdd: jobs_add) and devices
-- (devices.LuaPolicy: device_policy), so each script stays
-- self-contained.
--
-- Throttle state of one device (field <id> of thr:{pN}) is a packed string,
-- read with plain substring searches (memchr speed) rather than a JSON
-- decode or a pattern over the whole string, and written with one
-- concatenation. RS, GS and US are bytes 0x1e, 0x1d and 0x1f. Event ids,
-- feeds and the reason are stored as JSON string literals (quoted and
-- escaped by the Go side), which never contain a control byte, so the
-- separators cannot occur inside them, and which are prefix-free, so a
-- plain search for GS..<quoted id> finds exactly that id.
--
--   state = ne "," k "," n "," t "," lane RS S RS PF RS PC RS reason RS E RS PE
--   ne      number of entries in E
--   k       number of event ids in PE; 0 when no push is pending
--   n       event ids dropped from PE because of MaxEvents
--   t       since of the pending push (unix ms of its first update)
--   lane    "feed" | "breaking" of the pending push
--   S       send times of the last K pushes, unix ms, oldest first, "," separated
--   PF      feeds of the pending push, in arrival order: US (<quoted feed> US)*
--   PC      its min since cursor by feed: US (<quoted feed>:<cursor> US)*
--   reason  its reason, quoted
--   E       the last Remember applied events: (GS <quoted event id><outcome>)*
--           outcome q queued, d deferred, c coalesced
--   PE      its event ids, oldest first: (US <quoted id>)*
--
-- Without a pending push k and n are 0 and t, lane, PF, PC, reason and PE
-- are empty. The due time of a pending push is its score in due:{pN}.
--
-- The hash thr:{pN} is kept in Redis's hash-table encoding once it holds
-- more than 128 devices: a listpack (used up to hash-max-listpack-entries,
-- 512 by default, when values are short) finds a field by a linear scan,
-- which made every state read and write of a 512-device batch cost several
-- microseconds. Field "~" holds a 4 KiB filler whose length exceeds any
-- sane hash-max-listpack-value, so the hash stays a hash table, also after
-- a restart. It is not a device.
--
-- Field "~d" collects dropped event ids (DROPS below).
--
-- Policies arrive as ten ARGV numbers and the apps' overrides starting at
-- a script-specific index (policies.lua, prepended before this file).
local call, find, sub, match, gsub, byte = redis.call, string.find, string.sub, string.match, string.gsub, string.byte
local concat, tonumber = table.concat, tonumber
local RS, GS, US = '\30', '\29', '\31'
local HEAD = '^(%d+),(%d+),(%d+),(%d*),(%a*)()'
local NOSENDS = {}

-- effective min gap: the policy's, or the user's min_interval if stricter.
local function gap_of(pol, mi)
  local g = pol.gap
  local m = tonumber(mi or '0') or 0
  if m * 1000 > g then g = m * 1000 end
  return g
end

-- sends_of splits S into its send times (strings), oldest first.
local function sends_of(S)
  if S == '' then return NOSENDS end
  local s, n = {}, 0
  for t in string.gmatch(S, '%d+') do n = n + 1; s[n] = t end
  return s
end

-- allow_at is the earliest time at which a push keeps both limits.
local function allow_at(s, pol, gap, now)
  local a = now
  local n = #s
  if n == 0 then return a end
  if pol.k > 0 and n >= pol.k then
    local t = tonumber(s[n - pol.k + 1]) + pol.w
    if t > a then a = t end
  end
  local t = tonumber(s[n]) + gap
  if t > a then a = t end
  return a
end

-- server_now is the time of the call in unix ms, as a string: this
-- server's TIME, read here so that a decision and the stream id of the
-- push it writes share one instant (a TIME read by the caller would be a
-- round trip older).
local function server_now()
  local tm = redis.call('TIME')
  return string.format('%d', tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000))
end

-- record returns S with the send time now_s appended, keeping the last k.
local function record(s, pol, now_s)
  local keep = pol.k
  if keep < 1 then keep = 1 end
  local n = #s
  local from = n + 2 - keep
  if from > n then return now_s end
  if from < 1 then from = 1 end
  return concat(s, ',', from, n) .. ',' .. now_s
end

-- state_of splits a state into its fields (numbers for ne, k and n).
local function state_of(raw)
  local ne, k, n, t, lane, p = match(raw, HEAD)
  local p1 = find(raw, RS, p + 1, true)
  local p2 = find(raw, RS, p1 + 1, true)
  local p3 = find(raw, RS, p2 + 1, true)
  local p4 = find(raw, RS, p3 + 1, true)
  local p5 = find(raw, RS, p4 + 1, true)
  return tonumber(ne), tonumber(k), tonumber(n), t, lane, sub(raw, p + 1, p1 - 1), sub(raw, p1 + 1, p2 - 1),
    sub(raw, p2 + 1, p3 - 1), sub(raw, p3 + 1, p4 - 1), sub(raw, p4 + 1, p5 - 1), sub(raw, p5 + 1)
end

local function state(ne, k, n, t, lane, S, PF, PC, reason, E, PE)
  return ne .. ',' .. k .. ',' .. n .. ',' .. t .. ',' .. lane .. RS .. S .. RS .. PF .. RS .. PC .. RS ..
    reason .. RS .. E .. RS .. PE
end

-- list_json turns a US list into the body of a JSON array or object.
local function list_json(l)
  if byte(l, -1) == 31 then l = sub(l, 1, -2) end
  return (gsub(sub(l, 2), US, ','))
end

-- JOB_HEAD starts a push job payload; tail returns the rest after the
-- device id, so one tail serves every device with the same pending push.
local JOB_HEAD = '{"device":"'

local function tail(PE, n, PF, PC, lane, reason, now_s, alert)
  return '","events":[' .. list_json(PE) .. '],"dropped":' .. n ..
    ',"feeds":[' .. list_json(PF) .. '],"since":{' .. list_json(PC) .. '},"lane":"' .. lane ..
    '","reason":' .. reason .. (alert or '') .. ',"queued_at":' .. now_s .. '}'
end

-- ids_of returns the event ids of PE as a list of their quoted forms.
local function ids_of(PE)
  local out = {}
  for q in string.gmatch(PE, '[^\31]+') do out[#out + 1] = q end
  return out
end

-- DROPS is the field of thr:{pN} that collects the event ids of pending
-- pushes dropped outside the scheduler's moves (beyond MaxEvents, the
-- push of a device found gone by decide, Forget) until the next
-- scheduler step reports them (due.lua): (US <quoted id>)*, one entry per
-- device and event. Like "~" it is not a device.
local DROPS = '~d'

-- stash_drops appends the quoted event ids of list to DROPS of thr.
local function stash_drops(thr, list)
  if #list == 0 then return end
  local old = call('HGET', thr, DROPS) or ''
  call('HSET', thr, DROPS, old .. US .. concat(list, US))
end

-- bulk runs cmd key list... in slices of at most 1000 arguments (whole
-- groups of size per), keeping unpack within Lua's stack limit.
local function bulk(cmd, key, list, per)
  local step = 1000 - 1000 % per
  for i = 1, #list, step do
    call(cmd, key, unpack(list, i, math.min(i + step - 1, #list)))
  end
end

-- keep_hashtable converts a grown throttle hash to a hash table (see above).
-- A server without OBJECT ENCODING (the embedded dev Redis) is left as is.
local function keep_hashtable(thr)
  local ok, enc = pcall(call, 'OBJECT', 'ENCODING', thr)
  if ok and enc == 'listpack' and call('HLEN', thr) > 128 then
    call('HSET', thr, '~', string.rep('~', 4096))
  end
end
