// Package catalog keeps the feed catalogue: the news feeds that apps can
// subscribe to and that the dispatcher watches.
//
// The catalogue lives in the Redis hash keys.Feeds() (feed id -> JSON of a
// Feed). Store reads and edits it; LoadFile reads a seed file.
package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Feed is one entry of the catalogue.
type Feed struct {
	ID           string        `json:"id"`            // short stable id, [a-z0-9-]{1,64}
	Title        string        `json:"title"`         // shown to editors and apps
	URL          string        `json:"url"`           // RSS, Atom or JSON Feed document
	PollInterval time.Duration `json:"poll_interval"` // how often the watcher polls it
	// Credentials names a file in the dispatcher's NUDGE_FEED_CREDENTIALS_DIR
	// whose content is the Authorization header value for this feed's
	// origin (e.g. "Basic dXNlcjpwYXNz" or "Bearer …"). Only the name is
	// stored and shown; the secret stays in the file. Empty: none.
	Credentials string `json:"credentials,omitempty"`
}

// ErrNotFound is returned for a feed id that is not in the catalogue.
var ErrNotFound = errors.New("feed not found")

// Limits of a feed's fields. The floor suits a newsroom polling its own
// origin; for other publishers' feeds a minute or more is the courtesy, and
// POST /v1/feeds/{feed}/poll serves "right after publishing" better than
// any interval.
const (
	DefaultPollInterval = 5 * time.Minute
	MinPollInterval     = 10 * time.Second
	MaxPollInterval     = 24 * time.Hour
	maxTitle            = 200
	maxURL              = 2048
)

var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// credentialsRE is a credentials file name: no path separators and no
// leading dot, so a reference cannot leave the credentials directory.
var credentialsRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidID reports whether id is a well-formed feed id.
func ValidID(id string) bool { return idRE.MatchString(id) }

// FieldError is a Feed field with a bad value.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// Validate checks f and fills in the default poll interval. It returns a
// *FieldError naming the first bad field.
func (f *Feed) Validate() error {
	if !ValidID(f.ID) {
		return &FieldError{"id", "use 1-64 characters of a-z, 0-9 and '-', starting with a letter or digit"}
	}
	if f.Title == "" || len(f.Title) > maxTitle {
		return &FieldError{"title", fmt.Sprintf("must be 1-%d bytes", maxTitle)}
	}
	if !utf8.ValidString(f.Title) || strings.ContainsFunc(f.Title, unicode.IsControl) {
		return &FieldError{"title", "must be UTF-8 text without control characters"}
	}
	u, err := url.Parse(f.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(f.URL) > maxURL {
		return &FieldError{"url", "must be an absolute http or https URL"}
	}
	if u.User != nil {
		return &FieldError{"url", "must not carry user info (user:password@); the API would show it to editors"}
	}
	if f.Credentials != "" && !credentialsRE.MatchString(f.Credentials) {
		return &FieldError{"credentials", "must be a file name of 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter or digit"}
	}
	if f.PollInterval == 0 {
		f.PollInterval = DefaultPollInterval
	}
	if f.PollInterval < MinPollInterval || f.PollInterval > MaxPollInterval {
		return &FieldError{"poll_interval", fmt.Sprintf("must be between %s and %s", MinPollInterval, MaxPollInterval)}
	}
	return nil
}

// RedactURL returns raw without user info, for showing a URL saved before
// Validate refused user info. An unparsable URL is returned as "".
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	u.User = nil
	return u.String()
}

// feedWire is the JSON and YAML form of a Feed: the poll interval is a Go
// duration string such as "5m".
type feedWire struct {
	ID           string `json:"id" yaml:"id"`
	Title        string `json:"title" yaml:"title"`
	URL          string `json:"url" yaml:"url"`
	PollInterval string `json:"poll_interval,omitempty" yaml:"poll_interval"`
	Credentials  string `json:"credentials,omitempty" yaml:"credentials"`
}

func (w feedWire) feed() (Feed, error) {
	f := Feed{ID: w.ID, Title: w.Title, URL: w.URL, Credentials: w.Credentials}
	if w.PollInterval != "" {
		d, err := time.ParseDuration(w.PollInterval)
		if err != nil {
			return Feed{}, &FieldError{"poll_interval", "want a duration such as 90s or 5m"}
		}
		f.PollInterval = d
	}
	return f, nil
}

// MarshalJSON writes the poll interval as a duration string ("5m0s").
func (f Feed) MarshalJSON() ([]byte, error) {
	return json.Marshal(feedWire{ID: f.ID, Title: f.Title, URL: f.URL, PollInterval: f.PollInterval.String(), Credentials: f.Credentials})
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (f *Feed) UnmarshalJSON(b []byte) error {
	var w feedWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	g, err := w.feed()
	if err != nil {
		return err
	}
	*f = g
	return nil
}
