package httpapi_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/nudge-dev/nudge/internal/keys"
)

// TestTokenTakeoverIsAuditedAndLimited registers one token over and over
// (as a reinstalling app, or someone who learnt the token, would): every
// re-registration is audited without the token, the 11th registration
// within the hour is 429 with Retry-After, and another token is not
// affected. Moving a token onto a device by PATCH is audited too.
func TestTokenTakeoverIsAuditedAndLimited(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	tok := fcmToken(77)
	first := b.register(t, fcmReg(tok, "world"), http.StatusCreated)
	for range 9 {
		d := b.register(t, fcmReg(tok, "world"), http.StatusOK)
		if d.ID != first.ID {
			t.Fatalf("re-registration moved the token to device %d, want %d", d.ID, first.ID)
		}
	}
	r := b.do(t, "POST", "/v1/devices", "/v1/devices", "", fcmReg(tok, "world"))
	if r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || decode[errorJSON](t, r).Error.Field != "token" {
		t.Fatalf("11th registration of one token: %d Retry-After %q %s; want 429 with Retry-After on field token",
			r.code, r.header.Get("Retry-After"), r.body)
	}
	other := b.register(t, fcmReg(fcmToken(78), "world"), http.StatusCreated)

	// PATCHing another device's token onto one's own device is audited.
	mover := b.register(t, fcmReg(fcmToken(79), "world"), http.StatusCreated)
	pr := b.do(t, "PATCH", "/v1/devices/{id}", fmt.Sprintf("/v1/devices/%d", mover.ID), mover.Secret, map[string]any{"token": fcmToken(78)})
	if pr.code != http.StatusOK {
		t.Fatalf("patch token: %d %s", pr.code, pr.body)
	}

	entries, err := b.rdb.XRange(t.Context(), keys.Audit(), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for _, e := range entries {
		counts[fmt.Sprint(e.Values["action"])]++
		for k, v := range e.Values {
			if s := fmt.Sprint(v); strings.Contains(s, tok) || strings.Contains(s, fcmToken(78)) {
				t.Fatalf("audit field %s carries a raw token", k)
			}
		}
		if e.Values["action"] == "device.token_change" && e.Values["target"] != fmt.Sprint(mover.ID) {
			t.Errorf("token move audited for device %v, want %d", e.Values["target"], mover.ID)
		}
	}
	if counts["device.reregister"] != 9 || counts["device.token_change"] != 1 {
		t.Fatalf("audit actions %v, want 9 device.reregister and 1 device.token_change", counts)
	}
	if strings.Contains(b.logs.String(), tok) {
		t.Fatalf("a raw token reached the logs")
	}
	_ = other
}
