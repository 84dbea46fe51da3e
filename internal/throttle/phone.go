package throttle

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
)

// The budget at the phone.
//
// Decide and Step space pushes by the time they are queued. A push can
// still reach the phone later than queued: a retry after a 503, a
// redelivery after a crash, or a worker that picked it up late. Without a
// second check such a push could land right before or after the device's
// next one. So the push worker asks Admit just before it sends: a push
// goes out only if, at the Redis clock, it is at least the device's gap
// after every other push that may have reached the phone, and the
// device's last K such pushes span at least W; otherwise Admit says how
// long to wait. Admit reserves the send time. Settle then records the
// outcome: a delivered push's time moves to the provider's answer (no
// earlier than its arrival at the phone), a push the provider refused is
// released, and a push whose fate is unknown (a timeout) keeps its
// reservation, which errs on the strict side.
//
// The log lives in field "p<id>" of thr:{pN}: at most K entries
// tag RS ms, joined by US, where tag is an 8-hex-digit digest of the push's
// collapse id. A re-attempt of the same push replaces its own entry rather
// than waiting for it. Entries older than max(W, gap) are dropped on every
// write, and Forget (and the scripts' cleanup of deleted devices) removes
// the field.

// Attempt is one push the worker is about to send.
type Attempt struct {
	Device   uint64
	Collapse string // the push's collapse id (Push.CollapseID)
	// Alert marks an alert-lane push: it is admitted at once (visible
	// pushes are not under the silent budget) and its time is logged, so
	// silent pushes keep their gap after it.
	Alert bool
}

// tag is the FNV-1a digest of the collapse id in 8 hex digits.
func (a Attempt) tag() string {
	const hexDigits = "0123456789abcdef"
	h := uint32(2166136261)
	for i := 0; i < len(a.Collapse); i++ {
		h ^= uint32(a.Collapse[i])
		h *= 16777619
	}
	var b [8]byte
	for i := 7; i >= 0; i-- {
		b[i] = hexDigits[h&0xf]
		h >>= 4
	}
	return string(b[:])
}

// Settlement is what Settle records for an admitted attempt.
type Settlement int

// The settlements.
const (
	// Delivered: the provider accepted the push; its time becomes now.
	Delivered Settlement = iota + 1
	// Refused: the provider answered with an error; the push did not reach
	// the phone, and its reservation is released.
	Refused
	// Unknown: no answer (timeout, transport); the reservation stays.
	Unknown
)

// luaPhone holds the phone log helpers of admitScript and settleScript.
// A script reads every log it needs with one HMGET (load), works on them
// in memory (get, put) and writes the changed ones back with one HSET and
// one HDEL (save): a batch costs a few commands, not two per push.
const luaPhone = `
local RS, US = '\30', '\31'
local tm = redis.call('TIME')
local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
local logs, dirty = {}, {}

-- load reads the logs of fields into memory.
local function load(key, fields)
  if #fields == 0 then return end
  local raws = redis.call('HMGET', key, unpack(fields))
  for i, f in ipairs(fields) do logs[f] = raws[i] or false end
end

local function get(field) return logs[field] or nil end

local function put(field, raw)
  logs[field] = raw or false
  dirty[#dirty + 1] = field
end

-- save writes the changed logs back (deleting empty ones), in chunks
-- that stay under Lua's argument limit.
local function save(key)
  local set, del, done = {}, {}, {}
  for _, f in ipairs(dirty) do
    if not done[f] then
      done[f] = true
      if logs[f] then set[#set + 1] = f; set[#set + 1] = logs[f] else del[#del + 1] = f end
    end
  end
  for i = 1, #set, 1000 do redis.call('HSET', key, unpack(set, i, math.min(i + 999, #set))) end
  for i = 1, #del, 1000 do redis.call('HDEL', key, unpack(del, i, math.min(i + 999, #del))) end
end

-- entries parses a log into {tag, ms} pairs.
local function entries(raw)
  local out = {}
  if not raw then return out end
  for tag, ms in string.gmatch(raw, '([^\30\31]+)\30(%d+)') do
    out[#out + 1] = {tag, tonumber(ms)}
  end
  return out
end

-- encode returns the log es (newest k kept, none older than keep ms), or
-- nil when nothing is left.
local function encode(es, k, keep)
  table.sort(es, function(a, b) return a[2] > b[2] end)
  local parts = {}
  for i = 1, #es do
    if #parts >= k then break end
    if es[i][2] > now - keep then parts[#parts + 1] = es[i][1] .. RS .. es[i][2] end
  end
  if #parts == 0 then return nil end
  return table.concat(parts, US)
end
`

// admitScript checks and reserves the send time of a batch of attempts of
// one partition, on the Redis clock.
//
// KEYS[1]   thr:{pN}
// KEYS[1+i] dev:{pN}:<id> of attempt i
// ARGV[1..3] iOS limit, window ms, min gap ms; ARGV[4..6] Android's
// ARGV[5+2i], ARGV[6+2i] device id and tag of attempt i; a tag that
// starts with "!" is an alert: admitted at once, logged without the "!"
//
// Returns one number per attempt: 0 when admitted (the time is reserved),
// else the milliseconds to wait. Attempts are decided in order, so a later
// attempt for the same device sees an earlier one's reservation.
var admitScript = redis.NewScript(luaPhone + `
local pols = {
  ios = {k = tonumber(ARGV[1]), w = tonumber(ARGV[2]), gap = tonumber(ARGV[3])},
  android = {k = tonumber(ARGV[4]), w = tonumber(ARGV[5]), gap = tonumber(ARGV[6])},
}
local fields = {}
for i = 1, #KEYS - 1 do fields[i] = 'p' .. ARGV[5 + 2 * i] end
load(KEYS[1], fields)
local out = {}
for i = 1, #KEYS - 1 do
  local tag, field = ARGV[6 + 2 * i], fields[i]
  local alert = string.sub(tag, 1, 1) == '!'
  if alert then tag = string.sub(tag, 2) end
  local raw = get(field)
  if not raw then
    -- Nothing may have reached the phone within the window: no policy
    -- to read.
    put(field, tag .. RS .. now)
    out[i] = 0
  else
    local dev = redis.call('HMGET', KEYS[1 + i], 'pl', 'mi')
    local pol = pols.android
    if dev[1] == 'ios' then pol = pols.ios end
    local gap = math.max(pol.gap, (tonumber(dev[2]) or 0) * 1000)
    local es = entries(raw)
    local others = {}
    for _, e in ipairs(es) do
      if e[1] ~= tag then others[#others + 1] = e end
    end
    table.sort(others, function(a, b) return a[2] > b[2] end)
    local at = now
    if others[1] then at = math.max(at, others[1][2] + gap) end
    if others[pol.k] then at = math.max(at, others[pol.k][2] + pol.w) end
    if at > now and not alert then
      out[i] = at - now
    else
      others[#others + 1] = {tag, now}
      put(field, encode(others, pol.k, math.max(pol.w, gap)))
      out[i] = 0
    end
  end
end
save(KEYS[1])
return out
`)

// settleScript records the outcome of admitted attempts of one partition.
//
// KEYS[1] thr:{pN}
// ARGV[3i-2], ARGV[3i-1], ARGV[3i] device id, tag and "d" (delivered: the
// time becomes now) or "r" (refused: the entry is removed) of attempt i
//
// Returns the number of entries changed.
var settleScript = redis.NewScript(luaPhone + `
local fields = {}
for i = 1, #ARGV, 3 do fields[#fields + 1] = 'p' .. ARGV[i] end
load(KEYS[1], fields)
local n = 0
for i = 1, #ARGV, 3 do
  local field, tag, what = 'p' .. ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local raw = get(field)
  if raw then
    -- Tags are 8 hex digits, so the pattern needs no escaping; the entry
    -- keeps its place (admit re-sorts when it trims).
    local pat = tag .. RS .. '%d+'
    local new, m
    if what == 'd' then
      new, m = string.gsub(raw, pat, tag .. RS .. now, 1)
    else
      new, m = string.gsub(raw, pat, '', 1)
      new = string.gsub(string.gsub(new, US .. US, US), '^' .. US, '')
      new = string.gsub(new, US .. '$', '')
    end
    if m > 0 then
      n = n + 1
      if new == '' then put(field, nil) else put(field, new) end
    end
  end
end
save(KEYS[1])
return n
`)

// Admit checks, just before sending, that each attempt respects its
// device's budget at the phone, and reserves the send time of those that
// do. It returns, per attempt, 0 (send now) or how long to wait.
func (t *Throttle) Admit(ctx context.Context, attempts []Attempt) ([]time.Duration, error) {
	byPart := map[int][]int{}
	for i, a := range attempts {
		p := keys.Partition(a.Device)
		byPart[p] = append(byPart[p], i)
	}
	pol := []any{
		t.cfg.IOS.Limit, t.cfg.IOS.Window.Milliseconds(), t.cfg.IOS.MinGap.Milliseconds(),
		t.cfg.Android.Limit, t.cfg.Android.Window.Milliseconds(), t.cfg.Android.MinGap.Milliseconds(),
	}
	var calls []*call
	var order [][]int
	for p, idx := range byPart {
		c := &call{keys: []string{keys.Throttle(p)}, args: append([]any(nil), pol...)}
		for _, i := range idx {
			a := attempts[i]
			c.keys = append(c.keys, keys.Device(a.Device))
			tag := a.tag()
			if a.Alert {
				tag = "!" + tag
			}
			c.args = append(c.args, strconv.FormatUint(a.Device, 10), tag)
		}
		calls = append(calls, c)
		order = append(order, idx)
	}
	if err := t.run(ctx, admitScript, calls); err != nil {
		return nil, fmt.Errorf("admit pushes at the phone: %w", err)
	}
	waits := make([]time.Duration, len(attempts))
	for k, c := range calls {
		v, err := c.cmd.Int64Slice()
		if err != nil || len(v) != len(order[k]) {
			return nil, fmt.Errorf("admit pushes at the phone: script reply %v: %w", c.cmd.Val(), err)
		}
		for j, i := range order[k] {
			waits[i] = time.Duration(v[j]) * time.Millisecond
		}
	}
	return waits, nil
}

// Settle records what became of admitted attempts; s[i] belongs to
// attempts[i]. Unknown outcomes keep their reservation and cost nothing.
func (t *Throttle) Settle(ctx context.Context, attempts []Attempt, s []Settlement) error {
	byPart := map[int]*call{}
	var calls []*call
	for i, a := range attempts {
		what := ""
		switch s[i] {
		case Delivered:
			what = "d"
		case Refused:
			what = "r"
		default:
			continue
		}
		p := keys.Partition(a.Device)
		c, ok := byPart[p]
		if !ok {
			c = &call{keys: []string{keys.Throttle(p)}}
			byPart[p] = c
			calls = append(calls, c)
		}
		c.args = append(c.args, strconv.FormatUint(a.Device, 10), a.tag(), what)
	}
	if err := t.run(ctx, settleScript, calls); err != nil {
		return fmt.Errorf("settle pushes at the phone: %w", err)
	}
	return nil
}
