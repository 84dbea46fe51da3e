-- settle.lua records the outcome of admitted attempts of one partition
-- (phone.lua is prepended).
--
-- KEYS[1] thr:{pN}
-- ARGV[3i-2], ARGV[3i-1], ARGV[3i] device id, tag and "d" (delivered: the
-- time becomes now) or "r" (refused: the entry is removed) of attempt i
--
-- Returns the number of entries changed.
local fields = {}
for i = 1, #ARGV, 3 do fields[#fields + 1] = 'p' .. ARGV[i] end
load(KEYS[1], fields)
local n = 0
for i = 1, #ARGV, 3 do
  local field, tag, what = 'p' .. ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local raw = get(field)
  if raw then
    -- Tags are 8 hex digits, so the pattern needs no escaping; the entry
    -- keeps its place (admit re-sorts when it trims).
    local pat = tag .. RS .. '%d+'
    local new, m
    if what == 'd' then
      new, m = string.gsub(raw, pat, tag .. RS .. now, 1)
    else
      new, m = string.gsub(raw, pat, '', 1)
      new = string.gsub(string.gsub(new, US .. US, US), '^' .. US, '')
      new = string.gsub(new, US .. '$', '')
    end
    if m > 0 then
      n = n + 1
      if new == '' then put(field, nil) else put(field, new) end
    end
  end
end
save(KEYS[1])
return n
