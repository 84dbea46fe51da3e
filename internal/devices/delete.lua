-- delete.lua deletes a device hash only if it holds a token and, when a
-- cutoff is given, was last updated before it.
--
-- KEYS[1] device hash (dev:{pN}:<id>)
-- KEYS[2] unr:{pN}: an unresponsive device ("ux") leaves its counter
-- ARGV[1] token
-- ARGV[2] cutoff, unix ms ("0" = none): delete only if the whole second
--         of "ut" (unix seconds) ends at or before it, so a token set
--         again after the provider's answer stays
--
-- Returns {fd, ap}: the deleted device's feeds and app ("" for the default
-- app), or nil when the hash is gone, holds another token or was updated
-- at or after the cutoff.
local v = redis.call('HMGET', KEYS[1], 'tk', 'fd', 'ut', 'ap', 'ux')
if v[1] ~= ARGV[1] then return false end
local cut = tonumber(ARGV[2])
if cut > 0 and ((tonumber(v[3]) or 0) + 1) * 1000 > cut then return false end
redis.call('DEL', KEYS[1])
if v[5] then redis.call('HINCRBY', KEYS[2], v[5], -1) end
return {v[2] or '', v[4] or ''}
