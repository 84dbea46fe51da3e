package feeds

import (
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// corpusCase describes one real-world document of testdata/corpus (see
// testdata/corpus/SOURCES.md for each file's quirks).
type corpusCase struct {
	file        string
	fetchURL    string // where it was "fetched" from; relative links resolve against it
	contentType string
	minItems    int
	noLinks     bool     // the feed has items without any link
	titles      []string // exact titles that must appear (decoded charset, entities)
	check       func(t *testing.T, doc Document)
}

func date(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// itemByURL finds the item whose URL has the given suffix.
func itemByURL(t *testing.T, doc Document, suffix string) Item {
	t.Helper()
	for _, it := range doc.Items {
		if strings.HasSuffix(it.URL, suffix) {
			return it
		}
	}
	t.Fatalf("no item with url suffix %q", suffix)
	return Item{}
}

func wantTime(t *testing.T, what string, got, want time.Time) {
	t.Helper()
	if !got.Equal(want) {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

var corpus = []corpusCase{
	{file: "atom-blogger.xml", minItems: 25, titles: []string{"4FSOD Documentary: Bloopers and Stuff"},
		check: func(t *testing.T, d Document) {
			wantTime(t, "published", d.Items[0].Published, date("2007-12-15T07:15:00Z"))
		}},
	{file: "atom-daringfireball-content-xml-base.xml", minItems: 48, titles: []string{"The Talk Show: ‘I Do Like Throwing a Baby’"}},
	{file: "atom-github-commits.xml", minItems: 20, titles: []string{"Parse podcast categories"}},
	{file: "atom-intertwingly-xhtml-relative-uris.xml", fetchURL: "http://intertwingly.net/blog/index.atom", minItems: 20,
		check: func(t *testing.T, d Document) {
			if got, want := d.Items[0].URL, "http://intertwingly.net/blog/2012/07/16/Inhibiting-Suspend"; got != want {
				t.Fatalf("relative link: got %q, want %q", got, want)
			}
		}},
	{file: "atom-reddit-nonuri-ids.xml", minItems: 25, check: func(t *testing.T, d Document) {
		if got, want := d.Items[0].ID, "t3_157kyrd"; got != want {
			t.Fatalf("id: got %q, want %q", got, want)
		}
	}},
	{file: "atom-talkingpointsmemo-relative-links.xml", minItems: 20, check: func(t *testing.T, d Document) {
		if got, want := d.Items[1].URL, "http://talkingpointsmemo.com/edblog/were-hiring-senior-editor"; got != want {
			t.Fatalf("root-relative link: got %q, want %q", got, want)
		}
		wantTime(t, "published -05:00", d.Items[1].Published, date("2017-11-08T23:02:40Z"))
	}},
	{file: "atom-youtube-channel.xml", minItems: 1, check: func(t *testing.T, d Document) {
		if got, want := d.Items[0].Image, "https://i1.ytimg.com/vi/0A1ouV7iD8o/hqdefault.jpg"; got != want {
			t.Fatalf("media:group thumbnail: got %q, want %q", got, want)
		}
		wantTime(t, "updated", d.Items[0].Updated, date("2020-12-25T23:12:12Z"))
	}},
	{file: "jsonfeed-10-daringfireball-content-html.json", minItems: 48},
	{file: "jsonfeed-10-pxlnv-http-version-uri.json", minItems: 20, titles: []string{"Uber Lost $4.5 Billion in 2017"}},
	{file: "jsonfeed-10-rosemaryorchard-entities.json", minItems: 84, titles: []string{"Workflow: Add Task & Sub Tasks To OmniFocus"}},
	{file: "jsonfeed-11-3960-journal.json", minItems: 20, titles: []string{"„Sabine“ am Flughafen Amsterdam", "SSH-Schlüssel unter Windows – das komplette Programm"}},
	{file: "rss090-heise-newsticker.rdf", minItems: 60, titles: []string{"Mega-Deal: IBM übernimmt Red Hat"}},
	{file: "rss1-biorxiv-no-prolog-crlf.rdf", minItems: 30, check: func(t *testing.T, d Document) {
		wantTime(t, "date-only dc:date", d.Items[0].Published, date("2019-08-27T00:00:00Z"))
	}},
	{file: "rss1-craigslist-enclosures.rdf", minItems: 25},
	{file: "rss1-golem-iso-8859-1.rdf", minItems: 1, titles: []string{"Digitalministerium: Neue Glasfaserförderung mit Schnellkasse"}},
	{file: "rss2-aktuality-sk-nested-item-image.xml", minItems: 30, titles: []string{"Analytici Goldman Sachs zvýšili odhad rastu ekonomiky USA"},
		check: func(t *testing.T, d Document) {
			if !strings.HasPrefix(d.Items[0].Image, "https://t.aimg.sk/magaziny/") {
				t.Fatalf("image: got %q, want https://t.aimg.sk/magaziny/...", d.Items[0].Image)
			}
		}},
	{file: "rss2-bbc-news-urdu.xml", minItems: 26},
	{file: "rss2-bbc-radio4-podcast-itunes.xml", minItems: 1, titles: []string{"Marcus Aurelius"}},
	{file: "rss2-donthitsave-bom-mixed-eol.xml", minItems: 10, titles: []string{"Skipping Around"}},
	{file: "rss2-golem-iso-8859-1.xml", minItems: 40, titles: []string{"Machine Learning: Von KI erstelltes Porträt für 432.500 US.Dollar versteigert"}},
	{file: "rss2-google-news-opaque-guid.xml", minItems: 38, check: func(t *testing.T, d Document) {
		if got, want := d.Items[0].ID, "52780451907398"; got != want {
			t.Fatalf("opaque guid: got %q, want %q", got, want)
		}
	}},
	{file: "rss2-guardian-us.xml", minItems: 55},
	{file: "rss2-hackernews-no-guid.xml", minItems: 30, check: func(t *testing.T, d Document) {
		if got, want := d.Items[0].ID, "https://public-sans.digital.gov/"; got != want {
			t.Fatalf("no guid → link id: got %q, want %q", got, want)
		}
	}},
	{file: "rss2-huffpost-canada-missing-guid.xml", minItems: 2},
	{file: "rss2-ibash-windows-1251.xml", minItems: 50, titles: []string{"Цитата #17703"}},
	{file: "rss2-ilmessaggero-italian-date-no-prolog.xml", minItems: 1, check: func(t *testing.T, d Document) {
		// "mer, 16 nov 2022 00:38:15 +0100"
		wantTime(t, "Italian date", d.Items[0].Published, date("2022-11-15T23:38:15Z"))
	}},
	{file: "rss2-insanity-industries-item-xml-base.xml", minItems: 2},
	{file: "rss2-kc0011-gb2312-odd-dates.xml", minItems: 20, titles: []string{"建国35周年纪念，华表，和平鸽", "出南京泰山5盒，原盒看图"},
		check: func(t *testing.T, d Document) {
			// "2020/1/10 14:33:00", no zone: taken as UTC.
			wantTime(t, "slash date", d.Items[0].Published, date("2020-01-10T14:33:00Z"))
			if got, want := d.Items[0].Image, "http://www.kc0011.net/skins/default/filetype/jpg.gif"; got != want {
				t.Fatalf("relative img: got %q, want %q", got, want)
			}
		}},
	{file: "rss2-lemonde-une.xml", minItems: 18},
	{file: "rss2-livemint-cdata-link-pubdate.xml", minItems: 25, check: func(t *testing.T, d Document) {
		wantTime(t, "CDATA pubDate", d.Items[0].Published, date("2019-05-29T10:16:00Z"))
	}},
	{file: "rss2-nbcnewyork-ampm-date.xml", minItems: 1, check: func(t *testing.T, d Document) {
		// "Sat, Dec 16 2023 02:02:33 PM"
		wantTime(t, "12-hour date", d.Items[0].Published, date("2023-12-16T14:02:33Z"))
	}},
	{file: "rss2-neverwinter-relative-urls-2digit-year.xml", fetchURL: "https://www.arcgames.com/en/games/neverwinter/news/rss", minItems: 2,
		titles: []string{"Neverwinter & Jingle Jam Humble Bundle!"},
		check: func(t *testing.T, d Document) {
			it := itemByURL(t, d, "10743874-neverwinter-%26-jingle-jam-humble-bundle%21")
			if !strings.HasPrefix(it.URL, "https://www.arcgames.com/en/games/neverwinter/news/detail/") {
				t.Fatalf("relative link vs fetch url: got %q", it.URL)
			}
			// "Thu, 07 Dec 17 10:00:29 -0800": two-digit year.
			wantTime(t, "two-digit year", it.Published, date("2017-12-07T18:00:29Z"))
		}},
	{file: "rss2-scriptingnews-dup-guids-untitled-items.xml", minItems: 50, check: func(t *testing.T, d Document) {
		// Untitled items take the start of their summary; the duplicate
		// guids are disambiguated with a hash suffix.
		dup := 0
		for _, it := range d.Items {
			if strings.HasPrefix(it.ID, "http://scripting.com/2017/06/24.html#a100632") {
				dup++
			}
		}
		if dup != 2 {
			t.Fatalf("items under duplicate guid: got %d, want 2 (both kept)", dup)
		}
		if got, want := d.Items[0].Title, "Good morning students and teachers! 🍏"; got != want {
			t.Fatalf("untitled item: got %q, want %q", got, want)
		}
	}},
	{file: "rss2-washingtonpost-wellness.xml", minItems: 29, check: func(t *testing.T, d Document) {
		// "Tue, 21 Aug 2012 10:33:00 EST"
		wantTime(t, "EST date", d.Items[0].Published, date("2012-08-21T15:33:00Z"))
	}},
	{file: "rss2-wordpress-dcrainmaker-long-items.xml", minItems: 8, check: func(t *testing.T, d Document) {
		for _, it := range d.Items {
			if n := utf8.RuneCountInString(it.Summary); n > 500 {
				t.Fatalf("summary of %s: %d runes, want ≤ 500", it.ID, n)
			}
		}
	}},
	// malformed/: recovered
	{file: "malformed/jsonfeed-11-influxdata-missing-ids.json", minItems: 3, check: func(t *testing.T, d Document) {
		wantTime(t, "RFC 822 date in JSON", d.Items[0].Published, date("2019-05-31T19:17:58Z"))
	}},
	{file: "malformed/rss2-dbengines-html-nbsp-entity.xml", minItems: 1, check: func(t *testing.T, d Document) {
		if got := d.Items[0].Summary; !strings.Contains(got, "in our DB-Engines Ranking within") {
			t.Fatalf("&nbsp; summary: got %q", got)
		}
	}},
	{file: "malformed/rss2-latin1-bytes-no-prolog.xml", minItems: 9, // 10 minus one empty <item>
		titles: []string{"La criminalité liée surtout à... l'ennui ?"}},
	{file: "malformed/rss2-latin1-bytes-no-prolog.xml", contentType: "application/rss+xml; charset=ISO-8859-1", minItems: 9,
		titles: []string{"La criminalité liée surtout à... l'ennui ?"}},
	{file: "malformed/rss2-wordpress-junk-before-prolog.xml", minItems: 1, titles: []string{"EDITORIAL – Ransomwares : « la bourse ou la vie ! »"}},
}

func readCorpus(t testing.TB, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "corpus", file))
	if err != nil {
		t.Fatalf("read corpus: %v", err)
	}
	return b
}

func TestParseCorpus(t *testing.T) {
	t.Parallel()
	p, err := NewParser(ParserConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// Every file of the corpus has a case.
	files, _ := filepath.Glob("testdata/corpus/*.*")
	mal, _ := filepath.Glob("testdata/corpus/malformed/*")
	covered := map[string]bool{"malformed/rss2-reuters-truncated-server-error.xml": true}
	for _, c := range corpus {
		covered[c.file] = true
	}
	n := 0
	for _, f := range append(files, mal...) {
		rel, _ := filepath.Rel("testdata/corpus", f)
		if rel == "SOURCES.md" {
			continue
		}
		n++
		if !covered[rel] {
			t.Errorf("corpus file %s has no test case", rel)
		}
	}
	if n != 40 {
		t.Fatalf("corpus files: got %d, want 40", n)
	}

	for _, c := range corpus {
		t.Run(c.file+c.contentType, func(t *testing.T) {
			t.Parallel()
			fetch := c.fetchURL
			if fetch == "" {
				fetch = "https://feeds.example.test/" + filepath.Base(c.file)
			}
			doc, err := p.Parse(readCorpus(t, c.file), c.contentType, fetch)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if len(doc.Items) < c.minItems {
				t.Fatalf("items: got %d, want ≥ %d", len(doc.Items), c.minItems)
			}
			ids := map[string]bool{}
			titles := map[string]bool{}
			for _, it := range doc.Items {
				if it.ID == "" {
					t.Fatalf("item with empty id: %+v", it)
				}
				if ids[it.ID] {
					t.Fatalf("duplicate id %q", it.ID)
				}
				ids[it.ID] = true
				if it.Title == "" {
					t.Fatalf("item %s: empty title", it.ID)
				}
				if !utf8.ValidString(it.Title) || strings.ContainsRune(it.Title, utf8.RuneError) {
					t.Fatalf("item %s: title not decoded: %q", it.ID, it.Title)
				}
				titles[it.Title] = true
				for what, u := range map[string]string{"url": it.URL, "image": it.Image} {
					if u == "" {
						continue
					}
					pu, err := url.Parse(u)
					if err != nil || !pu.IsAbs() || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
						t.Fatalf("item %s: %s %q is not an absolute http(s) url", it.ID, what, u)
					}
				}
				if it.URL == "" && !c.noLinks {
					t.Fatalf("item %s: no url", it.ID)
				}
				if strings.Contains(it.Summary, "&nbsp;") || strings.Contains(it.Summary, "&amp;") || strings.Contains(it.Summary, "<p>") {
					t.Fatalf("item %s: summary not plain text: %q", it.ID, it.Summary)
				}
				if it.Summary != strings.TrimSpace(it.Summary) {
					t.Fatalf("item %s: summary not trimmed: %q", it.ID, it.Summary)
				}
				if len(it.Hash) != 32 {
					t.Fatalf("item %s: hash %q, want 32 hex chars", it.ID, it.Hash)
				}
				if !it.Published.IsZero() && it.Published.Location() != time.UTC {
					t.Fatalf("item %s: published not UTC: %v", it.ID, it.Published)
				}
			}
			for _, want := range c.titles {
				if !titles[want] {
					t.Fatalf("title %q not found in %d items", want, len(doc.Items))
				}
			}
			if c.check != nil {
				c.check(t, doc)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	p, err := NewParser(ParserConfig{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		body []byte
	}{
		{"truncated reuters", readCorpus(t, "malformed/rss2-reuters-truncated-server-error.xml")},
		{"empty", nil},
		{"html page", []byte("<!doctype html><html><body>not a feed</body></html>")},
		{"garbage", []byte("\x00\x01\x02 nothing")},
		{"broken json", []byte(`{"version": "https://jsonfeed.org/version/1", "items": [`)},
		{"unknown charset", []byte(`<?xml version="1.0"?><rss><channel><title>x</title></channel></rss>`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ct := ""
			if tc.name == "unknown charset" {
				ct = "text/xml; charset=x-no-such-charset"
			}
			_, err := p.Parse(tc.body, ct, "https://example.test/feed")
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("err: got %v, want ErrMalformed", err)
			}
		})
	}
}

func TestParseDate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string
	}{
		{"mer, 16 nov 2022 00:38:15 +0100", "2022-11-15T23:38:15Z"},
		{"mar, 01 mar 2022 10:00:00 +0000", "2022-03-01T10:00:00Z"},
		{"2020/1/10 14:03:00", "2020-01-10T14:03:00Z"},
		{"Sat, Dec 16 2023 02:02:33 PM", "2023-12-16T14:02:33Z"},
		{"Sat, Dec 16 2023 02:02:33 AM", "2023-12-16T02:02:33Z"},
		{"Di, 05 Okt 2021 08:00:00 +0200", "2021-10-05T06:00:00Z"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, ok := parseDate(tc.in)
			if !ok {
				t.Fatalf("parseDate(%q): not parsed", tc.in)
			}
			wantTime(t, tc.in, got.UTC(), date(tc.want))
		})
	}
	if _, ok := parseDate("yesterday-ish"); ok {
		t.Fatalf("parseDate(junk): got ok, want not parsed")
	}
}

func TestPlainText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"  <p>Hello&nbsp;<b>world</b></p><p>again</p> ", 100, "Hello world again"},
		{"a &amp;#32; b", 100, "a b"},
		{"<script>x()</script>text", 100, "text"},
		{"one two three four five six", 12, "one two…"},
		{"&lt;br /&gt;&lt;p&gt;escaped twice&lt;/p&gt;", 100, "escaped twice"},
		{"plain", 100, "plain"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			if got := plainText(tc.in, tc.max); got != tc.want {
				t.Fatalf("plainText(%q): got %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
