package receipts_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"sync"
	"testing"

	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/receipts"
	"github.com/nudge-dev/nudge/internal/redistest"
)

// TestSignIsHMACOfDeviceAndID checks every signature, made concurrently
// (the Signer reuses its HMAC state), against the HMAC-SHA256 over the
// device id, a zero byte and the push id computed here from the key in
// Redis, and that Verify takes it for its device only.
func TestSignIsHMACOfDeviceAndID(t *testing.T) {
	rdb := redistest.Start(t)
	s := receipts.NewSigner(rdb)
	ctx := t.Context()
	if _, err := s.Sign(ctx, 1, "warm"); err != nil {
		t.Fatal(err)
	}
	key, err := rdb.Get(ctx, keys.ReceiptKey()).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	want := func(device uint64, id string) string {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(strconv.FormatUint(device, 10) + "\x00" + id))
		return id + "." + base64.RawURLEncoding.EncodeToString(h.Sum(nil))[:22]
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				device := uint64(g*1000 + i)
				id := "b" + strconv.Itoa(i) + ".n" + strconv.FormatUint(device, 36) + "-ev"
				got, err := s.Sign(ctx, device, id)
				if err != nil {
					t.Error(err)
					return
				}
				if w := want(device, id); got != w {
					t.Errorf("Sign(%d, %q) = %q, want %q", device, id, got, w)
					return
				}
				if back, err := s.Verify(ctx, device, got); err != nil || back != id {
					t.Errorf("Verify(%d, %q) = %q, %v; want %q", device, got, back, err, id)
				}
				if _, err := s.Verify(ctx, device+1, got); !errors.Is(err, receipts.ErrForged) {
					t.Errorf("Verify for another device: got %v, want ErrForged", err)
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkSign signs one push id per op, as the push worker does for
// every push (the key is loaded before the loop).
func BenchmarkSign(b *testing.B) {
	s := receipts.NewSigner(redistest.Start(b))
	id := "b" + strconv.FormatInt(1765000000123, 36) + ".n2n9c-01JEXAMPLE7Q3M9ZP2K4W8XYV"
	if _, err := s.Sign(b.Context(), 123457, id); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sign(b.Context(), 123457, id); err != nil {
			b.Fatal(err)
		}
	}
}
