package httpapi_test

import (
	"strings"
	"testing"
)

// TestFeedListHidesURLsFromThePublic: without a key GET /v1/feeds shows
// no origin URL; an editor key shows each URL; a credential that is no
// API key (an app's device secret) gets the public view.
func TestFeedListHidesURLsFromThePublic(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	type feed struct {
		ID, Title, URL string
	}
	for _, c := range []struct {
		name, bearer string
		wantURL      bool
	}{{"public", "", false}, {"device secret", "not-an-api-key", false}, {"editor", b.editKey, true}, {"admin", b.adminKey, true}} {
		r := b.do(t, "GET", "/v1/feeds", "/v1/feeds", c.bearer, nil)
		if r.code != 200 {
			t.Fatalf("%s: %d %s", c.name, r.code, r.body)
		}
		list := decode[struct{ Feeds []feed }](t, r)
		if len(list.Feeds) != 2 {
			t.Fatalf("%s: %d feeds, want 2", c.name, len(list.Feeds))
		}
		for _, f := range list.Feeds {
			if (f.URL != "") != c.wantURL || strings.Contains(string(r.body), "example.com") != c.wantURL {
				t.Errorf("%s: feed %s shows url %q (body %s); want url shown = %v", c.name, f.ID, f.URL, r.body, c.wantURL)
			}
		}
	}
}
