package httpapi

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nudge-dev/nudge/internal/auth"
)

// TestRequireAllApps checks the rule of the admin app routes: only a key
// without an app list may create or delete apps.
func TestRequireAllApps(t *testing.T) {
	t.Parallel()
	all, err := auth.Mint("all", auth.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	one, err := auth.Mint("one", auth.RoleAdmin, "news")
	if err != nil {
		t.Fatal(err)
	}
	ks, err := auth.ParseKeys(strings.NewReader(all.Line+"\n"+one.Line+"\n"), "k")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		key  string
		want int
	}{{all.Key, 0}, {one.Key, http.StatusForbidden}} {
		k, _ := ks.Lookup(tt.key)
		r := httptest.NewRequest("PUT", "/v1/admin/apps/sports", nil)
		r = r.WithContext(auth.WithKey(r.Context(), k))
		err := requireAllApps(r)
		he, _ := errors.AsType[*HTTPError](err)
		if (tt.want == 0 && err != nil) || (tt.want != 0 && (he == nil || he.Code != tt.want)) {
			t.Fatalf("key %s: got %v, want status %d", k.Name, err, tt.want)
		}
		if !seesApp(r, "news") || seesApp(r, "sports") != k.AllApps() {
			t.Fatalf("key %s: seesApp news/sports wrong", k.Name)
		}
	}
}
