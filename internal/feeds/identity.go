package feeds

import (
	"cmp"
	"slices"
)

// baseID is an item's identity before duplicates are told apart: its GUID,
// else its link, else "h:" and its content hash.
func baseID(it Item) string {
	return cmp.Or(it.GUID, it.URL, "h:"+it.Hash)
}

// assignIDs sets the ID of every item of one document and drops exact
// duplicates, keeping document order.
//
// The rule: an item is known by its GUID, else its link, else its content
// hash. When several items of the document share that base identity,
// copies with the same content hash are one item (the first is kept), and
// each remaining copy gets the id "<base>#<first 8 hex digits of its
// hash>" — so the ids depend only on the set of items, never on their
// order. A base identity that occurs once keeps the bare base id.
func assignIDs(items []Item) []Item {
	type group struct {
		hashes map[string]bool
	}
	groups := make(map[string]*group, len(items))
	out := items[:0:0]
	for _, it := range items {
		b := baseID(it)
		g := groups[b]
		if g == nil {
			g = &group{hashes: map[string]bool{}}
			groups[b] = g
		}
		if g.hashes[it.Hash] {
			continue // the same item twice
		}
		g.hashes[it.Hash] = true
		out = append(out, it)
	}
	// A suffixed id could in theory collide with another item's bare id or
	// with a suffix of a different hash sharing 8 digits; the item whose
	// hash sorts first keeps it and the other is dropped, so the outcome
	// still does not depend on order.
	owner := make(map[string]string, len(out))
	for i := range out {
		b := baseID(out[i])
		id := b
		if len(groups[b].hashes) > 1 {
			id = b + "#" + hashPrefix(out[i].Hash)
		}
		out[i].ID = id
		if h, ok := owner[id]; !ok || out[i].Hash < h {
			owner[id] = out[i].Hash
		}
	}
	return slices.DeleteFunc(out, func(it Item) bool { return owner[it.ID] != it.Hash })
}

// oldestFirst reports whether a document lists its items oldest first: of
// the adjacent pairs of dated items (undated items are skipped), more go
// forward in time than backward.
func oldestFirst(items []Item) bool {
	up, down := 0, 0
	var prev Item
	havePrev := false
	for _, it := range items {
		t := itemTimeKey(it)
		if t.IsZero() {
			continue
		}
		if havePrev {
			switch t.Compare(itemTimeKey(prev)) {
			case 1:
				up++
			case -1:
				down++
			}
		}
		prev, havePrev = it, true
	}
	return up > down
}

// newest returns at most limit items of a document: all of them when they
// fit; else the newest by date when every item has one, else the newest
// by document order (the last ones when the document is oldest first). The
// kept items stay in document order. It also returns how many it dropped.
func newest(items []Item, limit int, oldestFirstDoc bool) ([]Item, int) {
	if len(items) <= limit {
		return items, 0
	}
	dropped := len(items) - limit
	dated := true
	for _, it := range items {
		if itemTimeKey(it).IsZero() {
			dated = false
			break
		}
	}
	if !dated {
		if oldestFirstDoc {
			return items[dropped:], dropped
		}
		return items[:limit], dropped
	}
	idx := make([]int, len(items))
	for i := range idx {
		idx[i] = i
	}
	// Newest first; among equal dates, the one nearer the newest end of the
	// document first.
	slices.SortStableFunc(idx, func(a, b int) int {
		if c := itemTimeKey(items[b]).Compare(itemTimeKey(items[a])); c != 0 {
			return c
		}
		if oldestFirstDoc {
			return cmp.Compare(b, a)
		}
		return cmp.Compare(a, b)
	})
	keep := make([]bool, len(items))
	for _, i := range idx[:limit] {
		keep[i] = true
	}
	out := make([]Item, 0, limit)
	for i, it := range items {
		if keep[i] {
			out = append(out, it)
		}
	}
	return out, dropped
}

// hashPrefix is the first 8 characters of a content hash, the suffix that
// tells apart items sharing a GUID or link.
func hashPrefix(h string) string { return h[:min(8, len(h))] }
