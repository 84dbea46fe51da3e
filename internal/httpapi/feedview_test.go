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

// TestFeedCredentialsAreAReference: a feed's credentials are a file name
// on the dispatchers; editors see the name, the public nothing, and a name
// that could leave the directory is refused.
func TestFeedCredentialsAreAReference(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{})
	put := func(creds string) response {
		return b.do(t, "PUT", "/v1/admin/feeds/{feed}", "/v1/admin/feeds/private", b.adminKey,
			map[string]any{"title": "Private", "url": "https://origin.example.com/private.xml", "credentials": creds})
	}
	for _, bad := range []string{"../secrets", "a/b", ".env"} {
		if r := put(bad); r.code != 400 || !strings.Contains(string(r.body), "credentials") {
			t.Errorf("credentials %q: %d %s, want 400 naming the field", bad, r.code, r.body)
		}
	}
	if r := put("private-origin"); r.code != 201 {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	editor := b.do(t, "GET", "/v1/feeds", "/v1/feeds", b.editKey, nil)
	if !strings.Contains(string(editor.body), `"credentials":"private-origin"`) {
		t.Errorf("editor view lacks the credentials name: %s", editor.body)
	}
	public := b.do(t, "GET", "/v1/feeds", "/v1/feeds", "", nil)
	if strings.Contains(string(public.body), "private-origin") {
		t.Errorf("public view shows the credentials name: %s", public.body)
	}
}
