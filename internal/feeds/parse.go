package feeds

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mmcdole/gofeed"
	ext "github.com/mmcdole/gofeed/extensions"
	"golang.org/x/net/html/charset"
)

// Item is one normalised feed item, as stored in a feed's item log and
// returned by the sync read.
type Item struct {
	// Cursor is the item's position in the feed's item log; it is set by the
	// Store and is 0 on items that were never stored.
	Cursor int64 `json:"cursor,omitempty"`
	// ID is the item's identity: its GUID, else its link, else "h:" and its
	// content hash; a GUID (or link) that several different items of one
	// document share gets "#" and the first 8 hex digits of each item's
	// content hash, whatever their order (see assignIDs). It is unique
	// within one parsed document. Once stored, an item keeps the ID it was
	// first announced under, even if the feed later drops or adds its GUID.
	ID string `json:"id"`
	// GUID is the item's GUID (RSS guid, Atom id, JSON Feed id) with white
	// space collapsed, or empty. The Store uses it with URL to recognise an
	// article whose GUID was removed or restored; it is not stored.
	GUID string `json:"-"`
	// Title is plain text. An untitled item gets the start of its summary.
	Title string `json:"title"`
	// Summary is plain text, whitespace collapsed, capped in length.
	Summary string `json:"summary,omitempty"`
	// URL is an absolute http(s) link to the article, or empty.
	URL string `json:"url,omitempty"`
	// Image is an absolute http(s) image URL (enclosure, media, iTunes or the
	// first <img> of the content), or empty.
	Image string `json:"image,omitempty"`
	// Published and Updated are in UTC; zero when absent or unparseable.
	Published time.Time `json:"published,omitzero"`
	Updated   time.Time `json:"updated,omitzero"`
	// Hash is the content hash over title, summary, URL and date (published,
	// else updated): a change of it under the same identity is an edit.
	Hash string `json:"hash"`
	// Replaces is set on an edited item: the cursor the item had before the
	// edit (that entry is gone from the log). 0 for an item announced once.
	Replaces int64 `json:"replaces,omitempty"`
}

// Document is a parsed and normalised feed document.
type Document struct {
	Title string
	Link  string // absolute home page of the feed, or empty
	Items []Item // in document order, ids unique
	// OldestFirst reports a document detected as listing its oldest items
	// first (most adjacent dated items ascend); otherwise it is taken as
	// newest first, as most feeds are.
	OldestFirst bool
	// Dropped is how many items past ParserConfig.MaxItems were left out:
	// the oldest by date, else the oldest by the detected order.
	Dropped int
}

// ParserConfig configures a Parser.
type ParserConfig struct {
	// SummaryMax caps an item's summary, in runes. Default 500.
	SummaryMax int
	// MaxItems caps the items taken from one document: beyond it the
	// newest are kept (by date when every item has one, else by the
	// detected document order) and Document.Dropped counts the rest.
	// Default 1000.
	MaxItems int
}

// DefaultMaxItems is ParserConfig.MaxItems when unset.
const DefaultMaxItems = 1000

func (c ParserConfig) withDefaults() ParserConfig {
	c.SummaryMax = cmp.Or(c.SummaryMax, 500)
	c.MaxItems = cmp.Or(c.MaxItems, DefaultMaxItems)
	return c
}

func (c ParserConfig) validate() error {
	if c.SummaryMax < 16 {
		return fmt.Errorf("feeds parser: SummaryMax is %d: set it to at least 16 runes", c.SummaryMax)
	}
	if c.MaxItems < 1 {
		return fmt.Errorf("feeds parser: MaxItems is %d: set NUDGE_FEED_MAX_ITEMS to at least 1 (default 1000)", c.MaxItems)
	}
	return nil
}

// Parser turns fetched feed bytes (RSS 0.90/1.0/2.0, Atom, JSON Feed) into a
// normalised Document. It is safe for concurrent use.
type Parser struct {
	cfg ParserConfig
}

// NewParser returns a Parser with cfg's zero fields set to defaults.
func NewParser(cfg ParserConfig) (*Parser, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Parser{cfg: cfg}, nil
}

// ErrMalformed is wrapped by every error that a broken document causes.
var ErrMalformed = errors.New("malformed feed")

// ParseError reports a document that could not be parsed.
type ParseError struct {
	Err error
}

// Error describes the parse failure.
func (e *ParseError) Error() string { return "malformed feed: " + e.Err.Error() }

// Unwrap returns the parser's error.
func (e *ParseError) Unwrap() error { return e.Err }

// Is reports ErrMalformed.
func (e *ParseError) Is(target error) bool { return target == ErrMalformed }

// Parse parses body, fetched from docURL with the given Content-Type header
// (may be empty), and normalises its items.
//
// Recovery of broken documents: a byte order mark, whitespace or junk before
// the XML declaration is dropped; a document without an encoding declaration
// is decoded with the Content-Type charset, or as windows-1252 when it is not
// valid UTF-8; undeclared HTML entities such as &nbsp; are tolerated; a JSON
// Feed with a mistyped tags/author/attachments field is repaired; an item
// with no title, text, link or image is skipped. A truncated
// document is an error: a partial document is not a feed.
func (p *Parser) Parse(body []byte, contentType, docURL string) (Document, error) {
	body, isJSON, err := prepare(body, contentType)
	if err != nil {
		return Document{}, &ParseError{Err: err}
	}
	gf, err := newGofeed().Parse(bytes.NewReader(body))
	if err != nil && isJSON {
		if fixed, ok := repairJSON(body); ok {
			gf, err = newGofeed().Parse(bytes.NewReader(fixed))
		}
	}
	if err != nil {
		return Document{}, &ParseError{Err: err}
	}
	base, _ := url.Parse(docURL)
	if base != nil && !base.IsAbs() {
		base = nil
	}
	doc := Document{Title: plainText(gf.Title, 200)}
	feedBase := base
	if l := resolve(base, gf.Link); l != nil {
		doc.Link = l.String()
		feedBase = l
	}
	doc.Items = make([]Item, 0, len(gf.Items))
	for _, gi := range gf.Items {
		if gi == nil {
			continue
		}
		it := p.normalise(gi, feedBase)
		if it.Title == "" && it.URL == "" && it.Image == "" {
			continue // an empty <item/>: nothing to show
		}
		doc.Items = append(doc.Items, it)
	}
	doc.Items = assignIDs(doc.Items)
	doc.OldestFirst = oldestFirst(doc.Items)
	doc.Items, doc.Dropped = newest(doc.Items, p.cfg.MaxItems, doc.OldestFirst)
	return doc, nil
}

// newGofeed returns a gofeed parser without its HTML-parsing image scan:
// itemImage finds the first <img> itself, at a fraction of the cost.
func newGofeed() *gofeed.Parser {
	gp := gofeed.NewParser()
	gp.RSSTranslator = &gofeed.DefaultRSSTranslator{DisableContentImageScan: true}
	return gp
}

func (p *Parser) normalise(gi *gofeed.Item, feedBase *url.URL) Item {
	var it Item
	link := gi.Link
	if link == "" && len(gi.Links) > 0 {
		link = gi.Links[0]
	}
	guid := strings.TrimSpace(gi.GUID)
	if link == "" && (strings.HasPrefix(guid, "http://") || strings.HasPrefix(guid, "https://")) {
		link = guid
	}
	if u := resolve(feedBase, link); u != nil {
		it.URL = u.String()
	}
	itemBase := feedBase
	if it.URL != "" {
		itemBase, _ = url.Parse(it.URL)
	}

	it.Summary = plainText(cmp.Or(gi.Description, gi.Content), p.cfg.SummaryMax)
	it.Title = plainText(gi.Title, 300)
	if it.Title == "" {
		it.Title = plainText(it.Summary, 80)
	}
	it.Image = itemImage(gi, itemBase)
	it.Published = itemTime(gi.PublishedParsed, gi.Published)
	it.Updated = itemTime(gi.UpdatedParsed, gi.Updated)
	it.Hash = itemHash(it)
	it.GUID = cleanGUID(guid)
	return it
}

// cleanGUID collapses white space in a GUID and drops control characters
// (the Store separates record fields with one).
func cleanGUID(s string) string {
	return collapseSpace(strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s))
}

// itemHash is the change-detection hash of a normalised item.
func itemHash(it Item) string {
	d := ""
	if t := itemTimeKey(it); !t.IsZero() {
		d = t.UTC().Format(time.RFC3339)
	}
	return contentHash(it.Title, it.Summary, it.URL, d)
}

// contentHash is the change-detection hash of an item: 128 bits of SHA-256
// over title, summary, URL and date, hex.
func contentHash(title, summary, link, date string) string {
	h := sha256.New()
	io.WriteString(h, title)
	h.Write([]byte{0})
	io.WriteString(h, summary)
	h.Write([]byte{0})
	io.WriteString(h, link)
	h.Write([]byte{0})
	io.WriteString(h, date)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func itemTime(parsed *time.Time, raw string) time.Time {
	if parsed != nil && !parsed.IsZero() {
		return parsed.UTC()
	}
	if t, ok := parseDate(raw); ok {
		return t.UTC()
	}
	return time.Time{}
}

// resolve returns ref resolved against base when it is (or becomes) an
// absolute http(s) URL, else nil.
func resolve(base *url.URL, ref string) *url.URL {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return nil
	}
	u, err := url.Parse(ref)
	if err != nil {
		return nil
	}
	if !u.IsAbs() {
		if base == nil {
			return nil
		}
		u = base.ResolveReference(u)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil
	}
	return u
}

var imgSrc = regexp.MustCompile(`(?is)<img\b[^>]*?\bsrc\s*=\s*["']?([^"'\s>]+)`)

func itemImage(gi *gofeed.Item, base *url.URL) string {
	var cands []string
	if gi.Image != nil {
		cands = append(cands, gi.Image.URL)
	}
	for _, e := range gi.Enclosures {
		if e != nil && (strings.HasPrefix(e.Type, "image/") || e.Type == "" && looksLikeImage(e.URL)) {
			cands = append(cands, e.URL)
		}
	}
	if media, ok := gi.Extensions["media"]; ok {
		for _, name := range []string{"thumbnail", "content", "group"} {
			for _, e := range media[name] {
				cands = append(cands, mediaImages(e)...)
			}
		}
	}
	for _, s := range []string{gi.Content, gi.Description} {
		if m := imgSrc.FindStringSubmatch(s); m != nil {
			cands = append(cands, unescapeEntities(m[1]))
		}
	}
	for _, c := range cands {
		if u := resolve(base, c); u != nil {
			return u.String()
		}
	}
	return ""
}

// mediaImages returns image URLs of a Media RSS element and its children.
func mediaImages(e ext.Extension) []string {
	var out []string
	u := e.Attrs["url"]
	switch {
	case u == "":
	case e.Name == "thumbnail",
		strings.HasPrefix(e.Attrs["type"], "image/"),
		e.Attrs["medium"] == "image",
		e.Attrs["type"] == "" && e.Attrs["medium"] == "" && looksLikeImage(u):
		out = append(out, u)
	}
	for _, name := range []string{"thumbnail", "content"} {
		for _, c := range e.Children[name] {
			out = append(out, mediaImages(c)...)
		}
	}
	return out
}

func looksLikeImage(u string) bool {
	u = strings.ToLower(u)
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	for _, s := range []string{".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif"} {
		if strings.HasSuffix(u, s) {
			return true
		}
	}
	return false
}

// prepare fixes what gofeed cannot: BOM, junk before the XML declaration and
// undeclared or mislabelled charsets. It reports whether the body is JSON.
func prepare(body []byte, contentType string) ([]byte, bool, error) {
	body = bytes.TrimPrefix(body, []byte("\xEF\xBB\xBF"))
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 {
		return nil, false, errors.New("empty document")
	}
	if trimmed[0] == '{' {
		return trimmed, true, nil
	}
	body = trimmed
	if !bytes.HasPrefix(body, []byte("<?xml")) {
		if i := bytes.Index(body, []byte("<?xml")); i > 0 {
			body = body[i:]
		}
	}
	declared := declaredEncoding(body)
	httpCharset := ""
	if _, params, err := mime.ParseMediaType(contentType); err == nil {
		httpCharset = strings.ToLower(strings.TrimSpace(params["charset"]))
	}
	switch {
	case declared != "" && !isUTF8Label(declared):
		return body, false, nil // gofeed decodes the declared charset
	case declared == "" && httpCharset != "" && !isUTF8Label(httpCharset):
		out, err := decode(body, httpCharset)
		return out, false, err
	case !utf8.Valid(body):
		// Declared (or defaulted) UTF-8 but it is not: the usual culprit is
		// Latin-1 served without a declaration.
		out, err := decode(body, "windows-1252")
		return out, false, err
	}
	return body, false, nil
}

var (
	prologRe   = regexp.MustCompile(`^<\?xml[^>]*\?>`)
	encodingRe = regexp.MustCompile(`encoding\s*=\s*["']([^"']+)["']`)
)

func declaredEncoding(body []byte) string {
	prolog := prologRe.Find(body)
	if prolog == nil {
		return ""
	}
	if m := encodingRe.FindSubmatch(prolog); m != nil {
		return strings.ToLower(strings.TrimSpace(string(m[1])))
	}
	return ""
}

func isUTF8Label(l string) bool { return l == "utf-8" || l == "utf8" || l == "us-ascii" }

// decode converts body from label to UTF-8 and drops its XML declaration,
// whose encoding would no longer be true.
func decode(body []byte, label string) ([]byte, error) {
	r, err := charset.NewReaderLabel(label, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("charset %q: %w", label, err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("decode charset %q: %w", label, err)
	}
	if loc := prologRe.FindIndex(out); loc != nil {
		out = out[loc[1]:]
	}
	return out, nil
}

// repairJSON fixes JSON Feed items whose tags, author, authors or
// attachments have the wrong JSON type (a string for a list, say), which
// makes gofeed reject the whole document.
func repairJSON(body []byte) ([]byte, bool) {
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, false
	}
	items, _ := doc["items"].([]any)
	for _, raw := range items {
		it, ok := raw.(map[string]any)
		if !ok {
			continue
		}
		switch v := it["tags"].(type) {
		case nil, []any:
		case string:
			it["tags"] = []any{v}
		default:
			delete(it, "tags")
		}
		if _, ok := it["author"].(map[string]any); !ok {
			delete(it, "author")
		}
		for _, k := range []string{"authors", "attachments"} {
			if _, ok := it[k].([]any); !ok {
				delete(it, k)
			}
		}
	}
	out, err := json.Marshal(doc)
	return out, err == nil
}
