package feeds

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary bytes to the parser: it must not panic, and a
// document it accepts must give the same items and ids every time, with
// ids unique and non-empty. The seed corpus is every corpus document, so
// `go test` runs them as normal tests.
func FuzzParse(f *testing.F) {
	for _, file := range corpusFiles(f) {
		f.Add(readCorpus(f, file), "")
	}
	f.Add([]byte(`<rss><channel><item><guid>x</guid><title>a</title></item><item><guid>x</guid><title>b</title></item></channel></rss>`), "text/xml; charset=iso-8859-1")
	f.Add([]byte(`{"version":"https://jsonfeed.org/version/1.1","items":[{"id":"1","title":"t","tags":"x"}]}`), "application/feed+json")
	p, err := NewParser(ParserConfig{MaxItems: 50})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		d1, err1 := p.Parse(bytes.Clone(body), contentType, "https://feeds.example.test/f")
		d2, err2 := p.Parse(bytes.Clone(body), contentType, "https://feeds.example.test/f")
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("parse not deterministic: %v vs %v", err1, err2)
		}
		if err1 != nil {
			return
		}
		if len(d1.Items) > 50 {
			t.Fatalf("items: got %d, want ≤ MaxItems 50", len(d1.Items))
		}
		ids := map[string]bool{}
		for i, it := range d1.Items {
			if it.ID == "" || ids[it.ID] {
				t.Fatalf("item %d: id %q empty or duplicate", i, it.ID)
			}
			ids[it.ID] = true
			if it.ID != d2.Items[i].ID || it.Hash != d2.Items[i].Hash {
				t.Fatalf("item %d: id/hash %q/%q then %q/%q", i, it.ID, it.Hash, d2.Items[i].ID, d2.Items[i].Hash)
			}
		}
	})
}

// FuzzIdentity builds a document of items from the input (GUIDs and links
// drawn from small sets, so duplicates are frequent) and checks the
// identity rule: no panic, ids unique, every distinct item kept once, and
// the id of each item the same in any order of the document.
func FuzzIdentity(f *testing.F) {
	f.Add([]byte{0, 0, 1, 1, 0, 2, 2, 3, 1, 0}, uint64(1))
	f.Add([]byte{5, 5, 5, 5, 5, 5}, uint64(7))
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, uint64(42))
	f.Fuzz(func(t *testing.T, spec []byte, seed uint64) {
		if len(spec) > 3*64 {
			spec = spec[:3*64]
		}
		var items []Item
		for i := 0; i+2 < len(spec); i += 3 {
			it := Item{Title: fmt.Sprintf("t%d", spec[i+2]%4)}
			if g := spec[i] % 5; g > 0 {
				it.GUID = fmt.Sprintf("g%d", g)
			}
			if l := spec[i+1] % 5; l > 0 {
				it.URL = fmt.Sprintf("https://example.test/%d", l)
			}
			it.Published = time.Unix(int64(binary.LittleEndian.Uint16([]byte{spec[i+2], spec[i]}))*60, 0).UTC()
			it.Hash = itemHash(it)
			items = append(items, it)
		}
		a := assignIDs(slices.Clone(items))
		want := map[string]string{} // hash+guid+link -> id
		key := func(it Item) string { return it.GUID + "\x00" + it.URL + "\x00" + it.Hash }
		distinct := map[string]bool{}
		for _, it := range items {
			distinct[key(it)] = true
		}
		seen := map[string]bool{}
		for _, it := range a {
			if it.ID == "" || seen[it.ID] {
				t.Fatalf("id %q empty or duplicate in %v", it.ID, a)
			}
			seen[it.ID] = true
			want[key(it)] = it.ID
		}
		if len(a) > len(distinct) {
			t.Fatalf("kept %d items of %d distinct", len(a), len(distinct))
		}
		r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		shuffled := slices.Clone(items)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		b := assignIDs(shuffled)
		if len(b) != len(a) {
			t.Fatalf("kept %d items, %d after a shuffle", len(a), len(b))
		}
		for _, it := range b {
			if got, ok := want[key(it)]; !ok || got != it.ID {
				t.Fatalf("item %q/%q: id %q after a shuffle, %q before", it.GUID, it.URL, it.ID, got)
			}
		}
	})
}
