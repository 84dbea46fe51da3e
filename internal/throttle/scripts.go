package throttle

import (
	_ "embed"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/jobs"
)

// Each script lives in its own .lua file, which opens with its KEYS, ARGV
// and return contract. The decide, move and due scripts share common.lua
// (the packed state format and its helpers); the decide, move and admit
// scripts share policies.lua (each app's policy per platform); the decide
// and move scripts
// also include the fragments of the packages that own the data they touch:
// jobs.LuaAdd adds a push job to the stream, devices.LuaPolicy reads a
// device's platform, background flag and min interval.

//go:embed common.lua
var luaCommon string

//go:embed policies.lua
var luaPolicies string

//go:embed decide.lua
var decideLua string

//go:embed move.lua
var moveLua string

//go:embed due.lua
var dueLua string

//go:embed forget.lua
var forgetLua string

//go:embed phone.lua
var luaPhone string

//go:embed admit.lua
var admitLua string

//go:embed settle.lua
var settleLua string

// luaPrelude is prepended to the decide and move scripts: the fragments
// of jobs and devices, then the throttle's own helpers.
var luaPrelude = jobs.LuaAdd + devices.LuaPolicy + luaPolicies + luaCommon

// decideScript applies one update to a batch of devices of one partition.
var decideScript = redis.NewScript(luaPrelude + decideLua)

// moveScript moves due pending pushes of one partition into its stream.
var moveScript = redis.NewScript(luaPrelude + moveLua)

// dueScript lists the devices of one partition whose pending push is due.
var dueScript = redis.NewScript(luaCommon + dueLua)

// forgetScript drops the throttle state and pending push of one device.
var forgetScript = redis.NewScript(luaCommon + forgetLua)
