-- policy.lua is the fragment through which other packages' scripts read
-- what the push budget needs of a device hash (devices.LuaPolicy). The
-- devices package owns the hash and its fields: a script that includes
-- this fragment reads them only through it. Name the hash with
-- devices.Key and pass it in KEYS.
--
-- device_policy(key)
--   key      the device hash (devices.Key(id))
--   returns  platform, background, min_interval, app:
--            platform      "ios", "android", ... (nil: no such field)
--            background    "1" background sync on, "0" off (nil: unset)
--            min_interval  the user's minimum seconds between syncs, as a
--                          string (nil: none)
--            app           the device's app id (nil: the default app)
--            A device hash that is gone (deleted, pruned) returns nil for
--            platform and background.
local function device_policy(key)
  local v = redis.call('HMGET', key, 'pl', 'bg', 'mi', 'ap')
  return v[1], v[2], v[3], v[4]
end
