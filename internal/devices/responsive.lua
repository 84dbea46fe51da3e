-- responsive.lua counts the silent pushes about to be sent to devices of
-- one partition and holds back those of unresponsive devices until their
-- next probe (devices/responsive.go).
--
-- KEYS[1]   unr:{pN}, the partition's unresponsive counters by platform
-- KEYS[2..] device hashes (dev:{pN}:<id>), one per push
-- ARGV[1] N: a device with this many pushes since its last receipt is
--         unresponsive
-- ARGV[2] probe base, ms: the k-th probe past N waits base*2^k ...
-- ARGV[3] probe cap, ms: ... at most this long, after the last push counted
-- ARGV[4] now, unix ms
-- ARGV[5..] the push's tag (8 hex digits of its collapse id), per device
--
-- Returns, per push, 1 (send; counted now or already counted under the
-- same tag: a retry or a redelivery of the push) or 0 (held back: the
-- device is unresponsive and its next probe is not due). A gone or
-- opted-out device's push is 1 and counts nothing: the caller drops it.
--
-- Device fields: un pushes since the last receipt · uk "<ms>:<tag>" of the
-- last push counted · ux the platform under which the device is counted in
-- unr:{pN} (set while it is unresponsive).
local n, base, cap, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 2, #KEYS do
  local h, tag = KEYS[i], ARGV[i + 3]
  local v = redis.call('HMGET', h, 'tk', 'bg', 'pl', 'un', 'uk', 'ux')
  local res = 1
  if v[1] and v[2] ~= '0' then
    local un = tonumber(v[4]) or 0
    local at, last = string.match(v[5] or '', '^(%d+):(%x+)$')
    at = tonumber(at) or 0
    if last ~= tag then
      if un >= n and now < at + math.min(base * 2 ^ math.min(un - n, 40), cap) then
        res = 0
      else
        redis.call('HSET', h, 'un', un + 1, 'uk', now .. ':' .. tag)
        if un + 1 >= n and not v[6] then
          local pl = v[3] or 'other'
          redis.call('HSET', h, 'ux', pl)
          redis.call('HINCRBY', KEYS[1], pl, 1)
        end
      end
    end
  end
  out[#out + 1] = res
end
return out
