package dispatcher_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/dispatcher"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/pushemu/pushemutest"
)

// TestKeyRotationDuringFanout replaces app A's .p8 key file while a
// breaking event fans out to 20,000 devices through the whole dispatcher.
// Once the dispatcher applied the new key and the old clients' pushes in
// flight are done (the rotation window: nudge_push_clients_draining back
// at 0), the emulator revokes the old key. Every device gets its push (0
// lost), and no push after the window is signed with the removed key (the
// emulator would have rejected it; it rejected none).
func TestKeyRotationDuringFanout(t *testing.T) {
	t.Parallel()
	const n, feed = 20_000, "headlines"
	var keyFile string
	var creds pushemu.Credentials
	// Latency spreads the fan-out over a few seconds, so the rotation
	// lands in the middle of it.
	bu := setupBenchWith(t, pushemu.Config{KeepPerToken: 1, Latency: 30 * time.Millisecond},
		func(_ *pushemu.Emulator, c pushemu.Credentials, cfg *dispatcher.Config, d *dispatcher.Deps) {
			creds = c
			keyFile = filepath.Join(t.TempDir(), filepath.Base(c.APNsKeyFile))
			copyFile(t, c.APNsKeyFile, keyFile)
			app := pushemutest.App(apps.Default, c)
			app.APNs.KeyFile = keyFile
			d.Apps = apps.MustSet(app)
			cfg.Push.CredentialPoll = 100 * time.Millisecond
		})
	devicestest.Write(t, bu.rdb, 1, n, func(uint64) string { return feed })
	event, err := bu.pipe.Submitter.Submit(t.Context(), breaking(feed, nil))
	if err != nil {
		t.Fatal(err)
	}
	await.Until(t, "the fan-out under way", func() bool { return bu.emu.Count() >= 1000 })

	key, err := bu.emu.NewAPNsKey(creds.APNsKeyID, creds.APNsTeamID)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, keyFile, key.PEM)
	// The production and the sandbox client both take the new key.
	await.Until(t, "the dispatcher to apply the new key", func() bool {
		v, _ := bu.metric(t, "nudge_push_credential_reloads_total", map[string]string{"provider": "apns", "result": "applied"})
		return v >= 2
	})
	rotated := time.Now()
	await.Until(t, "the old clients' pushes in flight to finish", func() bool {
		v, _ := bu.metric(t, "nudge_push_clients_draining", map[string]string{"provider": "apns"})
		return v == 0
	})
	t.Logf("rotation window: %v", time.Since(rotated))
	bu.emu.RevokeAPNsKey(creds.APNsKeyFingerprint)
	revoked := time.Now()

	pr := bu.waitSettled(t, event, n)
	if pr.Sent != n || pr.Failed != 0 || pr.Pruned != 0 {
		t.Fatalf("progress: got %+v, want all %d sent", pr, n)
	}
	var oldKey, newKey, afterWindow, twice int
	for id := uint64(1); id <= n; id++ {
		tok := devicestest.Token(id)
		switch c := bu.emu.CountToken(tok); {
		case c == 0:
			t.Fatalf("device %d: no push", id)
		case c > 1:
			twice++ // a send that timed out on this busy machine, retried
		}
		if pv, _ := devicestest.Kind(id); pv != "apns" {
			continue
		}
		d := bu.emu.Deliveries(tok)[0]
		switch d.Key {
		case creds.APNsKeyFingerprint:
			oldKey++
			if d.At.After(revoked) {
				t.Fatalf("device %d: push at %v signed with the key revoked at %v", id, d.At, revoked)
			}
		case key.Fingerprint:
			newKey++
			if d.At.After(revoked) {
				afterWindow++
			}
		default:
			t.Fatalf("device %d: push signed with key %q, neither the old nor the new", id, d.Key)
		}
	}
	t.Logf("apns pushes: %d with the old key, %d with the new (%d after the window); %d devices got a retried push twice", oldKey, newKey, afterWindow, twice)
	if oldKey == 0 || newKey == 0 {
		t.Fatalf("the rotation did not land during the fan-out: %d pushes with the old key, %d with the new", oldKey, newKey)
	}
	if st := bu.emu.Stats(); st.Rejected != 0 {
		t.Fatalf("emulator rejected %d pushes, want 0", st.Rejected)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, to, b)
}

// writeFile replaces path atomically, as a secret mount does.
func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}
