package feeds

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/redistest"
)

// BenchmarkParseCorpus parses and normalises every document of the corpus
// once per iteration and reports items/s and MB/s.
func BenchmarkParseCorpus(b *testing.B) {
	p, err := NewParser(ParserConfig{})
	if err != nil {
		b.Fatal(err)
	}
	files, _ := filepath.Glob("testdata/corpus/*.*")
	mal, _ := filepath.Glob("testdata/corpus/malformed/*")
	type doc struct {
		body []byte
		url  string
	}
	var docs []doc
	var size int64
	for _, f := range append(files, mal...) {
		if filepath.Ext(f) == ".md" {
			continue
		}
		rel, _ := filepath.Rel("testdata/corpus", f)
		body := readCorpus(b, rel)
		docs = append(docs, doc{body, "https://feeds.example.test/" + filepath.Base(f)})
		size += int64(len(body))
	}
	b.SetBytes(size)
	b.ReportAllocs()
	items := 0
	for b.Loop() {
		for _, d := range docs {
			out, _ := p.Parse(d.body, "", d.url)
			items += len(out.Items)
		}
	}
	b.ReportMetric(float64(items)/b.Elapsed().Seconds(), "items/s")
}

// BenchmarkStoreSave runs the store script on documents of 50 items where
// 5 are new each time (a typical news feed poll), and on a re-fetch with
// nothing new, and reports items/s through the script.
func BenchmarkStoreSave(b *testing.B) {
	for _, bc := range []struct {
		name  string
		fresh int // new items per poll
	}{{"5new_of_50", 5}, {"unchanged_50", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			rdb := redistest.Start(b)
			s, err := NewStore(StoreConfig{LogCap: 200}, rdb)
			if err != nil {
				b.Fatal(err)
			}
			ctx := b.Context()
			now := time.Unix(1_700_000_000, 0)
			top, items := 50, 0
			for b.Loop() {
				top += bc.fresh
				d := doc(top-49, top)
				for i := range d {
					d[i].Summary = fmt.Sprintf("summary of item %d, about two hundred characters of plain text as a feed would carry in its description element, trimmed and capped by the normaliser before it is stored.", top-i)
				}
				now = now.Add(time.Second)
				if _, err := s.Save(ctx, "bench", d, now); err != nil {
					b.Fatal(err)
				}
				items += len(d)
			}
			b.ReportMetric(float64(items)/b.Elapsed().Seconds(), "items/s")
		})
	}
}
