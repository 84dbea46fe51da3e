package catalog

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/redis/go-redis/v9"
	"gopkg.in/yaml.v3"
)

// Config configures a Store.
type Config struct {
	// CacheTTL is how long a replica trusts its in-process copy of the
	// catalogue when it checks that feed ids exist (registration does this
	// on every request). Edits on this replica invalidate it at once; edits
	// on other replicas are seen within CacheTTL. Default 2s.
	CacheTTL time.Duration
}

func (c *Config) validate() error {
	if c.CacheTTL < 0 {
		return errors.New("catalog cache TTL must not be negative")
	}
	return nil
}

// Store is the Redis-backed feed catalogue.
type Store struct {
	rdb redis.UniversalClient
	cfg Config
	now func() time.Time

	mu       sync.Mutex
	cached   map[string]Feed
	cachedAt time.Time
}

// NewStore returns a Store on rdb. Its cache reads a's clock; it logs
// nothing and has no metrics.
func NewStore(a service.Archetype, rdb redis.UniversalClient, cfg Config) (*Store, error) {
	a = a.WithDefaults()
	cfg.CacheTTL = cmp.Or(cfg.CacheTTL, 2*time.Second)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Store{rdb: rdb, cfg: cfg, now: a.Clock}, nil
}

// List returns every feed, sorted by id.
func (s *Store) List(ctx context.Context) ([]Feed, error) {
	m, err := s.rdb.HGetAll(ctx, keys.Feeds()).Result()
	if err != nil {
		return nil, fmt.Errorf("list feeds: %w", err)
	}
	out := make([]Feed, 0, len(m))
	for id, raw := range m {
		var f Feed
		if err := json.Unmarshal([]byte(raw), &f); err != nil {
			return nil, fmt.Errorf("decode feed %s: %w", id, err)
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b Feed) int { return strings.Compare(a.ID, b.ID) })
	s.remember(out)
	return out, nil
}

// Get returns one feed, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (Feed, error) {
	raw, err := s.rdb.HGet(ctx, keys.Feeds(), id).Result()
	if errors.Is(err, redis.Nil) {
		return Feed{}, fmt.Errorf("get feed %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Feed{}, fmt.Errorf("get feed %s: %w", id, err)
	}
	var f Feed
	if err := json.Unmarshal([]byte(raw), &f); err != nil {
		return Feed{}, fmt.Errorf("decode feed %s: %w", id, err)
	}
	return f, nil
}

// Put validates f and creates or replaces it. created tells which.
func (s *Store) Put(ctx context.Context, f Feed) (created bool, err error) {
	if err := f.Validate(); err != nil {
		return false, err
	}
	b, err := json.Marshal(f)
	if err != nil {
		return false, fmt.Errorf("encode feed %s: %w", f.ID, err)
	}
	n, err := s.rdb.HSet(ctx, keys.Feeds(), f.ID, b).Result()
	if err != nil {
		return false, fmt.Errorf("put feed %s: %w", f.ID, err)
	}
	s.invalidate()
	return n == 1, nil
}

// Delete removes a feed from the catalogue. It returns ErrNotFound for a
// feed that is not there. The feed's subscription bitmaps belong to the
// device registry: the caller clears them next (devices.Registry.DropFeed),
// also after ErrNotFound, so repeating a DELETE that crashed half-way
// finishes the cleanup.
func (s *Store) Delete(ctx context.Context, id string) error {
	if !ValidID(id) {
		return fmt.Errorf("delete feed %q: %w", id, ErrNotFound)
	}
	n, err := s.rdb.HDel(ctx, keys.Feeds(), id).Result()
	if err != nil {
		return fmt.Errorf("delete feed %s: %w", id, err)
	}
	s.invalidate()
	if n == 0 {
		return fmt.Errorf("delete feed %s: %w", id, ErrNotFound)
	}
	return nil
}

// Missing returns the ids among ids that are not in the catalogue. It
// answers from the in-process cache when it is fresh and knows every id,
// and asks Redis otherwise, so a feed added on another replica is found at once.
func (s *Store) Missing(ctx context.Context, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	s.mu.Lock()
	fresh := s.cached != nil && s.now().Sub(s.cachedAt) < s.cfg.CacheTTL
	allKnown := fresh
	if fresh {
		for _, id := range ids {
			if _, ok := s.cached[id]; !ok {
				allKnown = false
				break
			}
		}
	}
	s.mu.Unlock()
	if allKnown {
		return nil, nil
	}
	feeds, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	have := make(map[string]bool, len(feeds))
	for _, f := range feeds {
		have[f.ID] = true
	}
	var missing []string
	for _, id := range ids {
		if !have[id] {
			missing = append(missing, id)
		}
	}
	return missing, nil
}

func (s *Store) remember(feeds []Feed) {
	m := make(map[string]Feed, len(feeds))
	for _, f := range feeds {
		m[f.ID] = f
	}
	s.mu.Lock()
	s.cached, s.cachedAt = m, s.now()
	s.mu.Unlock()
}

func (s *Store) invalidate() {
	s.mu.Lock()
	s.cached = nil
	s.mu.Unlock()
}

// Seed upserts feeds into the catalogue: the seed file is the source of
// truth for the ids it lists; other feeds are left alone.
func (s *Store) Seed(ctx context.Context, feeds []Feed) error {
	for _, f := range feeds {
		if _, err := s.Put(ctx, f); err != nil {
			return fmt.Errorf("seed feed %s: %w", f.ID, err)
		}
	}
	return nil
}

// LoadFile reads a seed file: a JSON or YAML list of feeds (by extension;
// .json is JSON, anything else YAML, which also reads JSON), each with id,
// title, url and an optional poll_interval duration ("5m"). Every feed is
// validated; errors name the file and the entry.
func LoadFile(path string) ([]Feed, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read feeds file (NUDGE_FEEDS_FILE): %w", err)
	}
	var wire []feedWire
	if strings.EqualFold(filepath.Ext(path), ".json") {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		err = dec.Decode(&wire)
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		err = dec.Decode(&wire)
	}
	if err != nil {
		return nil, fmt.Errorf("parse feeds file %s: %w", path, err)
	}
	seen := map[string]bool{}
	out := make([]Feed, 0, len(wire))
	for i, w := range wire {
		f, err := w.feed()
		if err == nil {
			err = f.Validate()
		}
		if err != nil {
			return nil, fmt.Errorf("feeds file %s: entry %d (%q): %w", path, i+1, w.ID, err)
		}
		if seen[f.ID] {
			return nil, fmt.Errorf("feeds file %s: entry %d: duplicate id %q", path, i+1, f.ID)
		}
		seen[f.ID] = true
		out = append(out, f)
	}
	return out, nil
}
