-- responsive.lua counts the silent pushes about to be sent to devices of
-- one partition and holds back those of unresponsive devices until their
-- next probe (devices/responsive.go); send.lua is prepended. The push
-- worker does the same inside the budget at the phone's admit script.
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
local n, base, cap, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 2, #KEYS do
  local key, tag = KEYS[i], ARGV[i + 3]
  local d = device_target(key)
  local res = 1
  if d[D_TK] and d[D_BG] ~= '0' then
    if device_held(d, tag, now, n, base, cap) then
      res = 0
    else
      device_count(key, KEYS[1], d, tag, now, n)
    end
  end
  out[#out + 1] = res
end
return out
