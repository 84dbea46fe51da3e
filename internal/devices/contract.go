package devices

import (
	_ "embed"

	"github.com/nudge-dev/nudge/internal/keys"
)

// Key returns the key of device id's hash. Another package's script that
// reads the hash through LuaPolicy takes this key in KEYS; it shares the
// hash tag of the device's partition (keys.Partition).
func Key(id uint64) string { return keys.Device(id) }

// LuaPolicy is the Lua fragment that defines device_policy(key), which
// returns what the push budget needs of a device hash: its platform, its
// background sync flag, its min interval and its app (see policy.lua for the
// contract). Another package's script prepends it rather than reading the
// device hash's fields itself.
//
//go:embed policy.lua
var LuaPolicy string
