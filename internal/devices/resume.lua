-- resume.lua is the fragment through which a receipt makes a device
-- responsive again (devices.LuaResume); a script that includes it names
-- the device hash with devices.Key and the partition's counters with
-- devices.UnresponsiveKey, both in KEYS (one slot).
--
-- device_resume(key, counters)
--   key       the device hash (devices.Key(id))
--   counters  unr:{pN} of the device's partition
--   Deletes "un" (pushes since the last receipt), "uk" and "ux"; a device
--   counted as unresponsive leaves its platform's counter.
--   returns   1 when the device was unresponsive, else 0
local function device_resume(key, counters)
  local ux = redis.call('HGET', key, 'ux')
  redis.call('HDEL', key, 'un', 'uk', 'ux')
  if not ux then return 0 end
  redis.call('HINCRBY', counters, ux, -1)
  return 1
end
