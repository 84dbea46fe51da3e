package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// TestSyncIDPercentEncoded reads the progress of a sync whose id has
// colons (the dispatcher's feed:<feed>:<cursor> ids) both as written and
// percent-encoded, as HTTP clients send it; both must find it.
func TestSyncIDPercentEncoded(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	ev := fanout.Event{ID: "feed:headlines:5", Feeds: []string{"headlines"}, Lane: throttle.LaneFeed, Reason: "feed"}
	if _, err := b.pipe.Planner.Publish(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v1/syncs/feed:headlines:5", "/v1/syncs/feed%3Aheadlines%3A5", "/v1/syncs/feed%3aheadlines%3a5"} {
		r := b.do(t, "GET", "/v1/syncs/{id}", path, b.editKey, nil)
		if r.code != http.StatusOK {
			t.Fatalf("GET %s: got %d %s", path, r.code, r.body)
		}
		if p := decode[progressJSON](t, r); p.ID != ev.ID || p.State != "planning" {
			t.Fatalf("GET %s: got %+v", path, p)
		}
	}
	if r := b.do(t, "GET", "/v1/syncs/{id}", "/v1/syncs/feed%3Aheadlines%3A6", b.editKey, nil); r.code != http.StatusNotFound {
		t.Fatalf("unknown encoded id: got %d", r.code)
	}
}
