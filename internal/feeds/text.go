package feeds

import (
	"html"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	xhtml "golang.org/x/net/html"
)

// plainText turns an HTML or text fragment into trimmed plain text with
// whitespace collapsed, cut to at most max runes (an ellipsis marks a cut).
// Entities are decoded, tags dropped, script and style bodies skipped.
func plainText(s string, max int) string {
	// Two passes undo markup that was escaped once more than it should be
	// ("&lt;br /&gt;" in an already escaped description).
	for range 2 {
		if !looksLikeMarkup(s) {
			break
		}
		s = stripMarkup(s, max)
	}
	return capRunes(collapseSpace(s), max)
}

// looksLikeMarkup reports an entity or something like a tag in s.
func looksLikeMarkup(s string) bool {
	if strings.Contains(s, "&") {
		return true
	}
	for i := strings.IndexByte(s, '<'); i >= 0 && i+1 < len(s); {
		c := s[i+1]
		if c == '/' || c == '!' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
			return true
		}
		j := strings.IndexByte(s[i+1:], '<')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return false
}

func stripMarkup(s string, max int) string {
	var b strings.Builder
	{
		z := xhtml.NewTokenizer(strings.NewReader(s))
		skip := 0
	loop:
		for b.Len() < max*4+64 {
			switch z.Next() {
			case xhtml.ErrorToken:
				break loop
			case xhtml.TextToken:
				if skip == 0 {
					b.Write(z.Text())
				}
			case xhtml.StartTagToken:
				name, _ := z.TagName()
				switch string(name) {
				case "script", "style":
					skip++
				case "br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote":
					b.WriteByte(' ')
				}
			case xhtml.EndTagToken:
				name, _ := z.TagName()
				switch string(name) {
				case "script", "style":
					if skip > 0 {
						skip--
					}
				case "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote":
					b.WriteByte(' ')
				}
			case xhtml.SelfClosingTagToken:
				b.WriteByte(' ')
			}
		}
		s = b.String()
		// A second pass catches entities that were escaped twice
		// ("&amp;#32;" in the source).
		if strings.Contains(s, "&") {
			s = html.UnescapeString(s)
		}
	}
	return s
}

func unescapeEntities(s string) string { return html.UnescapeString(s) }

// collapseSpace trims s and turns every run of white space (including NBSP)
// into one space.
func collapseSpace(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) || r == '\u00a0' || r == '\u200b' {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	return b.String()
}

// capRunes cuts s to max runes, at a word boundary when one is near, and
// marks the cut with an ellipsis.
func capRunes(s string, max int) string {
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	cut, n := 0, 0
	for i := range s {
		if n == max-1 {
			cut = i
			break
		}
		n++
	}
	out := s[:cut]
	if i := strings.LastIndexByte(out, ' '); i > len(out)/2 {
		out = out[:i]
	}
	return strings.TrimRight(out, " ,;:-") + "…"
}

// Dates that gofeed leaves unparsed, seen in real feeds.
var extraLayouts = []string{
	"Mon, 2 Jan 2006 15:04:05 -0700",
	"Mon, 2 Jan 2006 15:04:05 MST",
	"Mon, 2 Jan 2006 15:04:05",
	"Mon, 2 Jan 06 15:04:05 -0700",
	"2 Jan 2006 15:04:05 -0700",
	"Mon, Jan 2 2006 03:04:05 PM",
	"Mon, Jan 2 2006 03:04:05 PM -0700",
	"Jan 2 2006 03:04:05 PM",
	"Mon, Jan 2 2006 15:04:05",
	"2006/1/2 15:04:05",
	"2006/1/2 15:04",
	"2006/1/2",
	"2006-1-2 15:04:05",
	"2006-01-02 15:04:05 -0700",
	"2006-01-02T15:04:05",
	"2006-01-02 15:04",
	"02.01.2006 15:04:05",
	"02.01.2006",
}

// Day and month names of languages seen in real feeds, to English.
var dateWords = map[string]string{
	// Italian
	"lun": "Mon", "mar": "Tue", "mer": "Wed", "gio": "Thu", "ven": "Fri", "sab": "Sat", "dom": "Sun",
	"gen": "Jan", "mag": "May", "giu": "Jun", "lug": "Jul", "ago": "Aug", "set": "Sep", "ott": "Oct", "dic": "Dec",
	// French
	"lu": "Mon", "ma": "Tue", "me": "Wed", "je": "Thu", "ve": "Fri", "sa": "Sat", "di": "Sun",
	"janv": "Jan", "févr": "Feb", "mars": "Mar", "avr": "Apr", "mai": "May", "juin": "Jun", "juil": "Jul",
	"août": "Aug", "sept": "Sep", "oct": "Oct", "déc": "Dec",
	// German
	"mo": "Mon", "di.": "Tue", "mi": "Wed", "do": "Thu", "fr": "Fri", "so": "Sun",
	"jan": "Jan", "feb": "Feb", "mär": "Mar", "apr": "Apr", "jun": "Jun", "jul": "Jul", "aug": "Aug",
	"sep": "Sep", "okt": "Oct", "nov": "Nov", "dez": "Dec",
}

// parseDate is the fallback for dates gofeed could not parse: localized day
// and month names, "2020/1/10 14:03:00", US 12-hour dates. A date without a
// zone is taken as UTC.
func parseDate(raw string) (time.Time, bool) {
	s := collapseSpace(raw)
	if s == "" {
		return time.Time{}, false
	}
	s = translateDate(s)
	for _, l := range extraLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// translateDate maps a leading day name and any month name to English.
// "mar" is Tuesday as the first word and March elsewhere.
func translateDate(s string) string {
	f := strings.Fields(s)
	for i, w := range f {
		lw := strings.ToLower(w)
		suffix := ""
		if strings.HasSuffix(lw, ",") {
			lw, suffix = lw[:len(lw)-1], ","
		}
		lw = strings.TrimSuffix(lw, ".")
		if i == 0 {
			if en, ok := dateWords[lw]; ok && len(en) == 3 && isWeekday(en) {
				f[i] = en + suffix
				continue
			}
		}
		if lw == "mar" && i > 0 {
			f[i] = "Mar" + suffix
			continue
		}
		if en, ok := dateWords[lw]; ok && !isWeekday(en) {
			f[i] = en + suffix
		}
	}
	return strings.Join(f, " ")
}

func isWeekday(en string) bool {
	switch en {
	case "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun":
		return true
	}
	return false
}
