package feeds

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/redistest"
)

// corpusFiles lists every document of testdata/corpus (malformed/ too),
// relative to it.
func corpusFiles(t testing.TB) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join("testdata", "corpus"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "SOURCES.md" {
			return err
		}
		rel, _ := filepath.Rel(filepath.Join("testdata", "corpus"), path)
		out = append(out, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 40 {
		t.Fatalf("corpus files: got %d, want 40", len(out))
	}
	return out
}

// TestCorpusMatchesShared checks that testdata/corpus is a byte-for-byte
// copy of the shared corpus, when the shared one is beside the clone
// (../../../shared/feeds from this package). Only that comparison is
// skipped when it is absent.
func TestCorpusMatchesShared(t *testing.T) {
	t.Parallel()
	shared := filepath.Join("..", "..", "..", "shared", "feeds")
	if _, err := os.Stat(shared); err != nil {
		t.Skipf("no shared corpus at %s: nothing to compare", shared)
	}
	var theirs []string
	err := filepath.WalkDir(shared, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(shared, path)
		theirs = append(theirs, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ours := append(corpusFiles(t), "SOURCES.md")
	sort.Strings(theirs)
	sort.Strings(ours)
	if !slices.Equal(ours, theirs) {
		t.Fatalf("corpus files differ from %s:\nours   %v\ntheirs %v", shared, ours, theirs)
	}
	for _, f := range ours {
		a, err := os.ReadFile(filepath.Join("testdata", "corpus", f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(shared, f))
		if err != nil {
			t.Fatal(err)
		}
		if string(a) != string(b) {
			t.Errorf("testdata/corpus/%s differs from %s", f, filepath.Join(shared, f))
		}
	}
}

// newestFirst returns a document's items newest first, as the watcher
// hands them to Save.
func newestFirst(d Document) []Item {
	items := slices.Clone(d.Items)
	if d.OldestFirst {
		slices.Reverse(items)
	}
	return items
}

// reID re-runs the identity rule on items (as the parser would on a
// document holding them), so a transformation of GUIDs or links goes
// through the real identity function.
func reID(items []Item) []Item {
	out := slices.Clone(items)
	for i := range out {
		out[i].ID = ""
		out[i].Hash = itemHash(out[i])
	}
	return assignIDs(out)
}

// fresh returns n new items in the style of the document (GUID or not,
// dated or not) dated after (or, with older, before) all of its items.
func fresh(items []Item, n int, tag string, older bool) []Item {
	var lo, hi time.Time
	for _, it := range items {
		t := itemTimeKey(it)
		if t.IsZero() {
			continue
		}
		if lo.IsZero() || t.Before(lo) {
			lo = t
		}
		if t.After(hi) {
			hi = t
		}
	}
	tpl := items[0]
	var out []Item
	for i := range n {
		it := Item{
			Title:   fmt.Sprintf("%s item %d", tag, i),
			Summary: "a new article",
			URL:     fmt.Sprintf("https://fresh.example.test/%s/%d", tag, i),
		}
		if tpl.GUID != "" {
			it.GUID = fmt.Sprintf("fresh-%s-%d", tag, i)
		}
		if !itemTimeKey(tpl).IsZero() {
			if older {
				it.Published = lo.Add(-time.Duration(n-i) * time.Hour)
			} else {
				it.Published = hi.Add(time.Duration(n-i) * time.Hour) // newest first
			}
		}
		out = append(out, it)
	}
	return reID(out)
}

// idsOf is the sorted ids of items.
func idsOf(items []Item) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.ID
	}
	sort.Strings(out)
	return out
}

// transformCase is one transformation of a corpus document: steps saved
// in turn; want is what the last step must announce.
type transformCase struct {
	name string
	// run saves its steps through save and returns the ids that the last
	// save must announce and how many of them are edits.
	run func(t *testing.T, save func([]Item, time.Time) SaveResult, base []Item, raw []byte) (want []string, edits int)
}

// TestCorpusTransformations applies each transformation to every corpus
// document and saves the result through the real store script on a real
// Redis, asserting the exact set of items announced (and nothing — no new
// cursor, so no event — when nothing is new).
func TestCorpusTransformations(t *testing.T) {
	t.Parallel()
	rdb := redistest.Start(t)
	const limit = 1000
	parser, err := NewParser(ParserConfig{MaxItems: limit})
	if err != nil {
		t.Fatal(err)
	}
	store, err := NewStore(StoreConfig{LogCap: 5000}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	parse := func(t *testing.T, raw []byte) []Item {
		t.Helper()
		d, err := parser.Parse(raw, "", "https://feeds.example.test/doc")
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		return newestFirst(d)
	}
	none := func() ([]string, int) { return nil, 0 }
	day := 24 * time.Hour

	cases := []transformCase{
		{"unchanged bytes", func(t *testing.T, save func([]Item, time.Time) SaveResult, base []Item, raw []byte) ([]string, int) {
			save(base, time.Time{})
			return none()
		}},
		{"new ETag only", func(t *testing.T, save func([]Item, time.Time) SaveResult, base []Item, raw []byte) ([]string, int) {
			save(parse(t, raw), time.Time{}) // fetched and parsed again
			return none()
		}},
		{"reorder", func(t *testing.T, save func([]Item, time.Time) SaveResult, base []Item, raw []byte) ([]string, int) {
			r := rand.New(rand.NewPCG(1, 2))
			for range 3 {
				d := slices.Clone(base)
				r.Shuffle(len(d), func(i, j int) { d[i], d[j] = d[j], d[i] })
				if res := save(reID(d), time.Time{}); res.New+res.Changed != 0 {
					t.Fatalf("shuffle: got %+v, want nothing new", res)
				}
			}
			return none()
		}},
		{"append at top", func(t *testing.T, save func([]Item, time.Time) SaveResult, base []Item, raw []byte) ([]string, int) {
			add := fresh(base, 3, "top", false)
			save(append(slices.Clone(add), base...), time.Time{})
			return idsOf(add), 0
		}},
		{"append at bottom", func(t *testing.T, save func([]Item, time.Time) SaveResult, base []Item, raw []byte) ([]string, int) {
			add := fresh(base, 3, "bottom", true)
			save(append(slices.Clone(base), add...), time.Time{})
			return idsOf(add), 0
		}},
		{"edit title", func(t *testing.T, save func([]Item, time.Time) SaveResult, base []Item, raw []byte) ([]string, int) {
			d := slices.Clone(base)
			d[len(d)/2].Title += " (updated)"
			d[len(d)/2].Hash = itemHash(d[len(d)/2])
			save(d, time.Time{})
			return []string{d[len(d)/2].ID}, 1
		}},
		{"edit date", func(t *testing.T, save func([]Item, time.Time) SaveResult, base []Item, raw []byte) ([]string, int) {
			d := slices.Clone(base)
			it := &d[0]
			if it.Published.IsZero() {
				it.Published = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC) // a date appears
			} else {
				it.Published = it.Published.Add(time.Minute)
			}
			it.Hash = itemHash(*it)
			save(d, time.Time{})
			return []string{it.ID}, 1
		}},
		{"GUID removal and restoration", func(t *testing.T, save func([]Item, time.Time) SaveResult, base []Item, raw []byte) ([]string, int) {
			d := slices.Clone(base)
			for i := range d {
				d[i].GUID = ""
			}
			if res := save(reID(d), time.Time{}); res.New+res.Changed != 0 {
				t.Fatalf("GUIDs removed: got %+v, want nothing new", res)
			}
			save(base, time.Time{})
			return none()
		}},
		{"GUID added to link-only items", func(t *testing.T, save func([]Item, time.Time) SaveResult, base []Item, raw []byte) ([]string, int) {
			d := slices.Clone(base)
			for i := range d {
				if d[i].GUID == "" {
					d[i].GUID = "tag:added," + d[i].URL
				}
			}
			save(reID(d), time.Time{})
			return none()
		}},
		{"leave and return after many polls", func(t *testing.T, save func([]Item, time.Time) SaveResult, base []Item, raw []byte) ([]string, int) {
			half := base[:(len(base)+1)/2]
			// 58 polls over 29 days without the first half, new items
			// rolling in meanwhile; then the whole document again.
			at := time.Time{}
			for i := range 58 {
				at = at.Add(12 * time.Hour)
				roll := fresh(base, 2, fmt.Sprintf("roll%d", i), false)
				save(append(roll, base[len(half):]...), at)
			}
			if res := save(base, at.Add(time.Hour)); res.New+res.Changed != 0 {
				t.Fatalf("returned after 29 days: got %+v, want nothing new", res)
			}
			// Gone for longer than the memory (30 days): new again.
			save(base[len(half):], at.Add(time.Hour+30*day))
			save(base, at.Add(2*time.Hour+31*day))
			return idsOf(half), 0
		}},
		{"duplicate GUIDs reordered", func(t *testing.T, save func([]Item, time.Time) SaveResult, base []Item, raw []byte) ([]string, int) {
			if len(base) < 2 {
				save(base, time.Time{}) // one item: nothing to duplicate
				return none()
			}
			d := slices.Clone(base)
			g := cmpOrString(d[0].GUID, "dup-guid")
			d[0].GUID, d[1].GUID = g, g
			d = reID(d)
			save(d, time.Time{}) // two items now share a GUID
			r := slices.Clone(d)
			slices.Reverse(r)
			if res := save(reID(r), time.Time{}); res.New+res.Changed != 0 {
				t.Fatalf("reversed: got %+v, want nothing new", res)
			}
			r[0], r[len(r)-1] = r[len(r)-1], r[0]
			save(reID(r), time.Time{})
			return none()
		}},
		{"growth past the item limit", func(t *testing.T, save func([]Item, time.Time) SaveResult, base []Item, raw []byte) ([]string, int) {
			// The limit is scaled to the document's own size plus 2; 5
			// new items push the 3 oldest out.
			n := len(base) + 2
			add := fresh(base, 5, "grow", false)
			doc := append(slices.Clone(add), base...)
			kept, dropped := newest(doc, n, oldestFirst(doc))
			if dropped != 3 {
				t.Fatalf("newest first: dropped %d, want 3", dropped)
			}
			save(kept, time.Time{})
			return idsOf(add[:min(5, n)]), 0 // a tiny document keeps only its limit
		}},
		{"growth past the item limit, oldest first", func(t *testing.T, save func([]Item, time.Time) SaveResult, base []Item, raw []byte) ([]string, int) {
			dated := true
			for _, it := range base {
				dated = dated && !itemTimeKey(it).IsZero()
			}
			if !dated || len(base) < 2 {
				// Undated: the order cannot be detected and is taken as
				// newest first (documented); a one-item document has none.
				save(base, time.Time{})
				return none()
			}
			n := len(base) + 2
			add := fresh(base, 5, "growold", false)
			doc := slices.Clone(base)
			slices.Reverse(doc) // oldest first …
			slices.Reverse(add)
			doc = append(doc, add...) // … new ones at the bottom
			of := oldestFirst(doc)
			kept, dropped := newest(doc, n, of)
			if !of || dropped != 3 {
				t.Fatalf("oldest first: detected %v dropped %d, want true 3", of, dropped)
			}
			if of {
				kept = slices.Clone(kept)
				slices.Reverse(kept)
			}
			save(kept, time.Time{})
			return idsOf(add[len(add)-min(5, n):]), 0
		}},
	}

	for _, file := range corpusFiles(t) {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			raw := readCorpus(t, file)
			if _, err := parser.Parse(raw, "", "https://feeds.example.test/doc"); err != nil {
				// The one broken document: nothing to store, nothing announced.
				if file != "malformed/rss2-reuters-truncated-server-error.xml" {
					t.Fatalf("parse: %v", err)
				}
				return
			}
			base := parse(t, raw)
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					feed := file + "|" + tc.name
					epoch := time.Unix(1_700_000_000, 0)
					var last SaveResult
					save := func(items []Item, at time.Time) SaveResult {
						t.Helper()
						now := epoch
						if !at.IsZero() {
							now = epoch.Add(at.Sub(time.Time{}))
						}
						res, err := store.Save(t.Context(), feed, items, now)
						if err != nil {
							t.Fatalf("save: %v", err)
						}
						last = res
						return res
					}
					first := save(base, time.Time{})
					if first.New != len(base) || first.Changed != 0 || first.Head != int64(len(base)) {
						t.Fatalf("first save: got %+v, want %d new", first, len(base))
					}
					want, edits := tc.run(t, save, base, raw)
					p, err := store.Page(t.Context(), feed, last.Since, 10000)
					if err != nil {
						t.Fatal(err)
					}
					got := idsOf(p.Items)
					if len(want) == 0 && last.Head != last.Since {
						t.Fatalf("nothing new: got cursor %d → %d (%v), want no new cursor", last.Since, last.Head, got)
					}
					if strings.Join(got, "\n") != strings.Join(want, "\n") {
						t.Fatalf("announced: got %d %q, want %d %q", len(got), got, len(want), want)
					}
					if last.New != len(want)-edits || last.Changed != edits {
						t.Fatalf("counts: got %+v, want %d new %d changed", last, len(want)-edits, edits)
					}
					for _, it := range p.Items {
						if (it.Replaces != 0) != (edits > 0) {
							t.Fatalf("item %s: replaces %d, want an earlier cursor only on edits", it.ID, it.Replaces)
						}
					}
				})
			}
		})
	}
}

func cmpOrString(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
