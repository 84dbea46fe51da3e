// Package pushemutest starts the FCM and APNs emulators for a test.
package pushemutest

import (
	"testing"

	"github.com/nudge-dev/nudge/internal/apps"
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

// App is the app id with the credentials of creds: token-auth APNs on the
// emulator's hosts and FCM on its endpoint.
func App(id string, creds pushemu.Credentials) apps.App {
	return apps.App{ID: id, Name: "App " + id,
		APNs: &apps.APNs{Topic: creds.APNsTopic, KeyFile: creds.APNsKeyFile, KeyID: creds.APNsKeyID, TeamID: creds.APNsTeamID,
			Host: creds.APNsHost, SandboxHost: creds.APNsSandboxHost},
		FCM: &apps.FCM{CredentialsFile: creds.FCMCredentialsFile, ProjectID: creds.FCMProjectID, Endpoint: creds.FCMEndpoint},
	}
}

// AppCredentials writes credentials of their own for app (new APNs key,
// topic, service account and project) on emu.
func AppCredentials(tb testing.TB, emu *pushemu.Emulator, app string) pushemu.Credentials {
	tb.Helper()
	creds, err := emu.WriteAppCredentials(tb.TempDir(), app)
	if err != nil {
		tb.Fatalf("write push emulator credentials of app %s: %v", app, err)
	}
	return creds
}
