-- write.lua changes the fields of a device hash that a request names,
-- after checking the credential the request was authenticated with, and
-- records a change of feeds so that the subscription bits can be brought
-- in step (settle.lua).
--
-- KEYS[1] device hash (dev:{pN}:<id>)
-- ARGV[1] expected token "tk" ("" = do not check)
-- ARGV[2] expected secret hash "sh" ("" = do not check)
-- ARGV[3] "1" when the request names feeds, "0" when it leaves them alone
-- ARGV[4] the new feeds, comma-separated (ignored when ARGV[3] is "0")
-- ARGV[5..] field, value pairs to set (never "fd", "xf", "bv" or "bp");
--          a field "-<f>" deletes field <f> instead (its value is ignored)
--
-- Returns 0 when the hash is gone, 1 when it holds another token or
-- another secret hash (a concurrent change won), otherwise the whole hash
-- after the write (HGETALL).
--
-- Bits bookkeeping: "bv" counts changes of "fd" and "xf"; "xf" lists
-- feeds whose bits may still be set although "fd" no longer names them;
-- "bp" = "1" while the bits of version "bv" are not known to be applied.
-- A feeds change sets xf := (xf + old fd) - new fd, bumps bv and sets bp.
local h = KEYS[1]
local tk = redis.call('HGET', h, 'tk')
if not tk then return 0 end
if ARGV[1] ~= '' and tk ~= ARGV[1] then return 1 end
if ARGV[2] ~= '' and redis.call('HGET', h, 'sh') ~= ARGV[2] then return 1 end
if #ARGV > 4 then
  local set, del = {}, {}
  for i = 5, #ARGV, 2 do
    if string.byte(ARGV[i]) == 45 then -- '-'
      del[#del + 1] = string.sub(ARGV[i], 2)
    else
      set[#set + 1] = ARGV[i]
      set[#set + 1] = ARGV[i + 1]
    end
  end
  if #set > 0 then redis.call('HSET', h, unpack(set)) end
  if #del > 0 then redis.call('HDEL', h, unpack(del)) end
end
if ARGV[3] == '1' then
  local old = redis.call('HGET', h, 'fd') or ''
  if old ~= ARGV[4] then
    local want, seen, xf = {}, {}, {}
    for f in string.gmatch(ARGV[4], '[^,]+') do want[f] = true end
    for _, list in ipairs({redis.call('HGET', h, 'xf') or '', old}) do
      for f in string.gmatch(list, '[^,]+') do
        if not want[f] and not seen[f] then
          seen[f] = true
          xf[#xf + 1] = f
        end
      end
    end
    redis.call('HSET', h, 'fd', ARGV[4], 'bp', '1')
    redis.call('HINCRBY', h, 'bv', 1)
    if #xf > 0 then
      redis.call('HSET', h, 'xf', table.concat(xf, ','))
    else
      redis.call('HDEL', h, 'xf')
    end
  end
end
return redis.call('HGETALL', h)
