-- due.lua lists the devices of one partition whose pending push is due at
-- the server's TIME, for the scheduler to hand to move.lua, and takes the
-- event ids stashed in DROPS (common.lua, which is prepended), for the
-- scheduler to report.
--
-- KEYS[1] due:{pN}  deferred pushes, score = due unix ms
-- KEYS[2] thr:{pN}  throttle state hash
-- ARGV[1] the most devices to list
--
-- Returns {device ids, earliest due first; dropped event ids (JSON string
-- literals), one entry per device and event}.
local ids = call('ZRANGEBYSCORE', KEYS[1], '-inf', server_now(), 'LIMIT', 0, ARGV[1])
local stash = call('HGET', KEYS[2], DROPS)
local dropped = {}
if stash then
  call('HDEL', KEYS[2], DROPS)
  dropped = ids_of(stash)
end
return {ids, dropped}
