// Package catalog keeps the feed catalogue: the news feeds that apps can
// subscribe to and that the dispatcher watches.
package catalog

import (
	"errors"
	"time"
)

// Feed is one entry of the catalogue.
type Feed struct {
	ID           string        `json:"id"`            // short stable id, [a-z0-9-]{1,64}
	Title        string        `json:"title"`         // shown to editors and apps
	URL          string        `json:"url"`           // RSS, Atom or JSON Feed document
	PollInterval time.Duration `json:"poll_interval"` // how often the watcher polls it
}

// ErrNotFound is returned for a feed id that is not in the catalogue.
var ErrNotFound = errors.New("feed not found")
