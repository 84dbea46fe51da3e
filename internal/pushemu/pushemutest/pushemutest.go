// Package pushemutest starts the FCM and APNs emulators for a test.
package pushemutest

import (
	"testing"

	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/service"
)

// Start starts an emulator with a and cfg, stopped at the end of the test,
// and writes its ready-made sender credentials into a temp dir.
func Start(tb testing.TB, a service.Archetype, cfg pushemu.Config) (*pushemu.Emulator, pushemu.Credentials) {
	tb.Helper()
	emu, err := pushemu.New(a, cfg)
	if err != nil {
		tb.Fatalf("new push emulator: %v", err)
	}
	if err := emu.Start(tb.Context()); err != nil {
		tb.Fatalf("start push emulator: %v", err)
	}
	tb.Cleanup(emu.Stop)
	creds, err := emu.WriteCredentials(tb.TempDir())
	if err != nil {
		tb.Fatalf("write push emulator credentials: %v", err)
	}
	return emu, creds
}
