-- phone.lua holds the phone log helpers of admit.lua and settle.lua; it is
-- prepended to each. A script reads every log it needs with one HMGET
-- (load), works on them in memory (get, put) and writes the changed ones
-- back with one HSET and one HDEL (save): a batch costs a few commands,
-- not two per push. now is the server's TIME in unix ms.
--
-- The log of a device lives in field "p<id>" of thr:{pN}: at most K
-- entries tag RS ms, joined by US, where tag is an 8-hex-digit digest of
-- the push's collapse id.
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
