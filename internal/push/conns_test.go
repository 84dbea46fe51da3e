package push

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestBurstsReuseConnections sends 10 bursts, each of 2,000 FCM messages
// (4 SendEach calls of 500 at once, 50 requests in flight per call) and
// 500 APNs pushes (128 in flight), and reads the sender's own dial counts
// (nudge_push_connections_opened_total): the first burst dials at most
// one connection per endpoint, the nine after it dial nothing. An idle
// pool smaller than the concurrency re-dials in every burst, and
// net/http's cold-start race (a dial per request before it learns the
// endpoint speaks HTTP/2: 300 dials for the first burst) fails this.
func TestBurstsReuseConnections(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cred := map[Provider]string{APNs: b.creds.APNsKeyID, FCM: b.creds.FCMProjectID}
	opened := func(p Provider) float64 {
		return testutil.ToFloat64(b.sender.m.connsOpened.WithLabelValues(string(p), cred[p]))
	}
	open := func(p Provider) float64 {
		return testutil.ToFloat64(b.sender.m.connsOpen.WithLabelValues(string(p), cred[p]))
	}
	var first map[Provider]float64
	for burst := range 10 {
		var msgs []Message
		for i := range 2500 {
			id := fmt.Sprintf("%d-%d", burst, i)
			if i < 2000 {
				msgs = append(msgs, msg(id, FCM, Android, fmt.Sprintf("fcm-%d", i)))
			} else {
				msgs = append(msgs, msg(id, APNs, IOS, apnsToken(i)))
			}
		}
		for i, r := range b.sender.Send(t.Context(), msgs) {
			if r.Action != Delivered {
				t.Fatalf("burst %d, message %d: got %v (%v), want delivered", burst, i, r.Action, r.Err)
			}
		}
		now := map[Provider]float64{FCM: opened(FCM), APNs: opened(APNs)}
		t.Logf("after burst %d: connections opened fcm %v apns %v; open fcm %v apns %v", burst+1, now[FCM], now[APNs], open(FCM), open(APNs))
		if burst == 0 {
			first = now
			for p, n := range now {
				if n < 1 {
					t.Fatalf("%s: no connection counted after the first burst", p)
				}
			}
			continue
		}
		for p, n := range now {
			if n != first[p] {
				t.Fatalf("%s: burst %d dialed again: %v connections opened, %v after the first burst", p, burst+1, n, first[p])
			}
			if o := open(p); o < 1 {
				t.Fatalf("%s: no connection open after burst %d", p, burst+1)
			}
		}
	}
	// FCM: one connection to the OAuth token endpoint and one multiplexed
	// HTTP/2 connection to FCM, not one per request of the cold burst.
	if first[FCM] > 2 {
		t.Fatalf("fcm: %v connections dialed by the first burst, want at most 2 (token endpoint, FCM)", first[FCM])
	}
	// APNs: x/net/http2 dials one connection per host; a second when 128
	// pushes start before the server's SETTINGS lift the client's initial
	// limit of 100 streams.
	if first[APNs] > 2 {
		t.Fatalf("apns: %v connections dialed by the first burst, want at most 2", first[APNs])
	}
}
