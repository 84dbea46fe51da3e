-- edit: put or delete one app in the admin edits of the app catalogue, then
-- announce the change. The effective catalogue is the base apps (the apps
-- file, or the single-app settings) overlaid by the edits: an app record
-- adds or replaces an app, a tombstone hides a base app.
--
-- KEYS[1]   apps          HASH  app id -> record (JSON: an app, or the tombstone)
-- ARGV[1]   the change channel (apps:changed); the app id is published on it
-- ARGV[2]   the app id
-- ARGV[3]   the app's record to store, or "" to delete the app
-- ARGV[4]   the tombstone record, exactly as stored
-- ARGV[5..] the ids of the base apps
--
-- Returns, for a put: 1 when the app is new, 0 when it replaced one.
-- For a delete: 1 deleted, 0 no such app, -1 refused (it is the last app).
local hash, id, rec, tomb = KEYS[1], ARGV[2], ARGV[3], ARGV[4]
local base = {}
for i = 5, #ARGV do base[ARGV[i]] = true end
-- live[x]: true for an app record, false for a tombstone, nil without edit.
local live = {}
local edits = redis.call('HGETALL', hash)
for i = 1, #edits, 2 do live[edits[i]] = edits[i + 1] ~= tomb end
local function exists(x)
  if live[x] ~= nil then return live[x] end
  return base[x] == true
end
local had = exists(id)
if rec ~= '' then
  redis.call('HSET', hash, id, rec)
  redis.call('PUBLISH', ARGV[1], id)
  if had then return 0 end
  return 1
end
if not had then return 0 end
local count = 0
for x in pairs(base) do
  if exists(x) then count = count + 1 end
end
for x, l in pairs(live) do
  if l and not base[x] then count = count + 1 end
end
if count <= 1 then return -1 end
if base[id] then
  redis.call('HSET', hash, id, tomb)
else
  redis.call('HDEL', hash, id)
end
redis.call('PUBLISH', ARGV[1], id)
return 1
