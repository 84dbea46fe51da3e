-- policies.lua reads the push budgets a script applies; it is prepended to
-- the decide, move and admit scripts. A device gets its app's policy for
-- its platform: the deployment's, or the app's own where the app
-- overrides it.
--
-- ARGV[base..base+9]  the deployment's policies (the default app's
--                     overrides applied): iOS limit, window, min gap,
--                     debounce, max wait (ms), then Android's
-- ARGV[base+10]       the apps whose policies differ from those:
--                     RS (app US ten numbers "," separated, same order RS)*,
--                     or "" for none
--
-- policies(base) returns policy_of(app, platform): the policy table
-- {k, w, gap, deb, maxw} of a device of app (nil: the default app) on
-- platform ("ios" gets the iOS policy, any other the Android one); and the
-- deployment's iOS and Android tables, which a script picks itself for a
-- device without an app (most devices: no call). policy_of returns the
-- same table for the same app and platform, so callers may key memos on
-- it.
local function policies(base)
  local function one(v, i)
    return {k = tonumber(v[i]), w = tonumber(v[i + 1]), gap = tonumber(v[i + 2]),
            deb = tonumber(v[i + 3]), maxw = tonumber(v[i + 4])}
  end
  local function pair(v) return {ios = one(v, 1), android = one(v, 6)} end
  local def = pair({unpack(ARGV, base, base + 9)})
  local over = ARGV[base + 10]
  local byApp = {}
  local function policy_of(app, platform)
    local p = def
    if app and over ~= '' then
      p = byApp[app]
      if not p then
        p = def
        local x = string.find(over, '\30' .. app .. '\31', 1, true)
        if x then
          local y = string.find(over, '\30', x + 1, true)
          local v = {}
          for n in string.gmatch(string.sub(over, x + #app + 2, y - 1), '%d+') do v[#v + 1] = n end
          p = pair(v)
        end
        byApp[app] = p
      end
    end
    if platform == 'ios' then return p.ios end
    return p.android
  end
  return policy_of, def.ios, def.android
end
