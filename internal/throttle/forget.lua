-- forget.lua drops the throttle state, the phone log, the alert log and
-- the pending push of one device (common.lua is prepended). The event ids
-- of the pending push are stashed in DROPS for the scheduler to report.
--
-- KEYS[1] thr:{pN}
-- KEYS[2] due:{pN}
-- ARGV[1] device id
--
-- Returns the number of fields removed (0: there was no state).
-- A state that does not parse is dropped all the same, reporting nothing.
local raw = call('HGET', KEYS[1], ARGV[1])
if raw then
  local ok, _, k, _, _, _, _, _, _, _, _, PE = pcall(state_of, raw)
  if ok and k and k > 0 then stash_drops(KEYS[1], ids_of(PE)) end
end
call('ZREM', KEYS[2], ARGV[1])
return call('HDEL', KEYS[1], ARGV[1], 'p' .. ARGV[1], 'a' .. ARGV[1])
