package httpapi_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/receipts"
)

// TestReceiptResumesUnresponsiveDevice: a device made unresponsive by
// pushes without receipts shows in the console's count; its app's next
// receipt resumes it (count and un back to 0).
func TestReceiptResumesUnresponsiveDevice(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	ctx := t.Context()
	d := b.register(t, fcmReg(fcmToken(1), "world"), http.StatusCreated)
	u := devices.Unresponsive{After: 2}
	for i := range 2 {
		if _, err := b.pipe.Devices.CountSilent(ctx, u, time.Now(), []devices.Silent{{Device: d.ID, Collapse: fmt.Sprint("n1-", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	type overview struct {
		Unresponsive map[string]int64 `json:"unresponsive_devices"`
	}
	count := func() map[string]int64 {
		t.Helper()
		r := b.do(t, "GET", "/v1/console/overview", "/v1/console/overview", b.editKey, nil)
		if r.code != 200 {
			t.Fatalf("overview: got %d %s", r.code, r.body)
		}
		return decode[overview](t, r).Unresponsive
	}
	if got := count(); got["android"] != 1 || got["ios"] != 0 {
		t.Fatalf("unresponsive devices before the receipt: %v, want android 1, ios 0", got)
	}
	sent := time.Now().Add(-time.Second)
	pushID, err := receipts.NewSigner(b.rdb).Sign(ctx, d.ID, receipts.PushID("feed", sent, "n1-1"))
	if err != nil {
		t.Fatal(err)
	}
	body := map[string]any{"push_id": pushID, "received_at": time.Now().Format(time.RFC3339Nano), "outcome": "no_data"}
	if r := b.do(t, "POST", "/v1/devices/{id}/receipts", fmt.Sprintf("/v1/devices/%d/receipts", d.ID), d.Secret, body); r.code != http.StatusNoContent {
		t.Fatalf("receipt: got %d %s", r.code, r.body)
	}
	if got := count(); got["android"] != 0 {
		t.Fatalf("unresponsive devices after the receipt: %v, want android 0", got)
	}
	if n, err := b.pipe.Devices.Pushes(ctx, d.ID); err != nil || n != 0 {
		t.Fatalf("un after the receipt: %d (%v), want 0", n, err)
	}
}
