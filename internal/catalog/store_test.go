package catalog_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
)

func TestLoadFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file, content string
		wantIDs             string
		wantErr             string
	}{
		{"yaml", "f.yaml", "- id: world\n  title: World\n  url: https://e.com/w.xml\n  poll_interval: 2m\n- {id: tech, title: Tech, url: 'https://e.com/t'}\n", "world,tech", ""},
		{"json", "f.json", `[{"id":"world","title":"World","url":"https://e.com/w.xml","poll_interval":"90s"}]`, "world", ""},
		{"unknown field", "f.json", `[{"id":"world","title":"W","url":"https://e.com/w","colour":1}]`, "", "colour"},
		{"bad url", "f.yaml", "- {id: a, title: A, url: 'file:///etc/passwd'}\n", "", "entry 1"},
		{"bad interval", "f.yaml", "- {id: a, title: A, url: 'https://e.com', poll_interval: often}\n", "", "poll_interval"},
		{"duplicate", "f.yaml", "- {id: a, title: A, url: 'https://e.com'}\n- {id: a, title: B, url: 'https://e.com'}\n", "", "duplicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := filepath.Join(t.TempDir(), tt.file)
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			feeds, err := catalog.LoadFile(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("load: %v", err)
			}
			var ids []string
			for _, f := range feeds {
				ids = append(ids, f.ID)
				if f.PollInterval == 0 {
					t.Fatalf("feed %s: poll interval not defaulted", f.ID)
				}
			}
			if got := strings.Join(ids, ","); got != tt.wantIDs {
				t.Fatalf("ids: got %s, want %s", got, tt.wantIDs)
			}
		})
	}
	if feeds, err := catalog.LoadFile("../../examples/feeds.yaml"); err != nil || len(feeds) == 0 {
		t.Fatalf("examples/feeds.yaml: got %d feeds, %v", len(feeds), err)
	}
}

func TestStore(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	ctx := t.Context()
	now := time.Unix(1000, 0)
	s, err := catalog.NewStore(service.Archetype{Clock: func() time.Time { return now }}, rdb, catalog.Config{CacheTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	created, err := s.Put(ctx, catalog.Feed{ID: "world", Title: "World", URL: "https://e.com/w"})
	if err != nil || !created {
		t.Fatalf("put: created %v err %v", created, err)
	}
	if created, err := s.Put(ctx, catalog.Feed{ID: "world", Title: "World!", URL: "https://e.com/w", PollInterval: time.Minute}); err != nil || created {
		t.Fatalf("replace: created %v err %v", created, err)
	}
	f, err := s.Get(ctx, "world")
	if err != nil || f.Title != "World!" || f.PollInterval != time.Minute {
		t.Fatalf("get: %+v %v", f, err)
	}
	if missing, err := s.Missing(ctx, []string{"world", "tech"}); err != nil || strings.Join(missing, ",") != "tech" {
		t.Fatalf("missing: got %v %v, want [tech]", missing, err)
	}
	// A feed added behind the cache's back (another replica) is found at once.
	other, _ := catalog.NewStore(service.Archetype{}, rdb, catalog.Config{})
	if _, err := other.Put(ctx, catalog.Feed{ID: "tech", Title: "Tech", URL: "https://e.com/t"}); err != nil {
		t.Fatal(err)
	}
	if missing, err := s.Missing(ctx, []string{"world", "tech"}); err != nil || len(missing) != 0 {
		t.Fatalf("missing after another replica added tech: got %v %v, want none", missing, err)
	}
	if err := s.Delete(ctx, "world"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if err := s.Delete(ctx, "world"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("second delete: got %v, want not found", err)
	}
	feeds, err := s.List(ctx)
	if err != nil || len(feeds) != 1 || feeds[0].ID != "tech" {
		t.Fatalf("list: %+v %v", feeds, err)
	}
}
