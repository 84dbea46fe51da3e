package fanout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nudge-dev/nudge/internal/devices"
)

// Audience narrows an event to some of its feeds' subscribers. Empty
// fields do not narrow.
type Audience struct {
	// Platforms lists the platforms to reach ("ios", "android").
	Platforms []string `json:"platforms,omitempty"`
	// Locales lists locales to reach: "en" matches en, en-GB and en_US;
	// "en-GB" only that one (case and - or _ do not matter).
	Locales []string `json:"locales,omitempty"`
	// MinAppVersion and MaxAppVersion bound the app version, inclusive,
	// compared number by number (1.10 is after 1.9). A device that did not
	// report its version is left out when either is set.
	MinAppVersion string `json:"min_app_version,omitempty"`
	MaxAppVersion string `json:"max_app_version,omitempty"`
}

// Profiles reads what an audience looks at of each device;
// *devices.Registry is one.
type Profiles interface {
	Profiles(ctx context.Context, ids []uint64) ([]devices.Profile, error)
}

// ErrNoProfiles is returned for an event with an audience by a planner
// that was given no Profiles.
var ErrNoProfiles = errors.New("an audience needs the device profiles")

// Empty reports whether a narrows nothing.
func (a *Audience) Empty() bool {
	return a == nil || len(a.Platforms) == 0 && len(a.Locales) == 0 && a.MinAppVersion == "" && a.MaxAppVersion == ""
}

// Match reports whether a device with profile d is in the audience.
func (a *Audience) Match(d devices.Profile) bool {
	if !d.Exists {
		return false
	}
	if a.Empty() {
		return true
	}
	if len(a.Platforms) > 0 && !slices.Contains(a.Platforms, d.Platform) {
		return false
	}
	if len(a.Locales) > 0 {
		lo := normLocale(d.Locale)
		if !slices.ContainsFunc(a.Locales, func(l string) bool {
			l = normLocale(l)
			return lo == l || strings.HasPrefix(lo, l+"-")
		}) {
			return false
		}
	}
	if a.MinAppVersion != "" || a.MaxAppVersion != "" {
		if d.AppVersion == "" {
			return false
		}
		if a.MinAppVersion != "" && CompareVersions(d.AppVersion, a.MinAppVersion) < 0 {
			return false
		}
		if a.MaxAppVersion != "" && CompareVersions(d.AppVersion, a.MaxAppVersion) > 0 {
			return false
		}
	}
	return true
}

func normLocale(l string) string { return strings.ToLower(strings.ReplaceAll(l, "_", "-")) }

// CompareVersions compares two dotted versions part by part: numerically
// where both parts are numbers, else as strings; a missing part is 0
// (1.2 equals 1.2.0). Text after "-" or "+" is ignored.
func CompareVersions(a, b string) int {
	cut := func(s string) []string {
		if i := strings.IndexAny(s, "-+"); i >= 0 {
			s = s[:i]
		}
		return strings.Split(s, ".")
	}
	pa, pb := cut(a), cut(b)
	for i := range max(len(pa), len(pb)) {
		x, y := "0", "0"
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		nx, ex := strconv.ParseUint(x, 10, 64)
		ny, ey := strconv.ParseUint(y, 10, 64)
		switch {
		case ex == nil && ey == nil:
			if c := compareUint(nx, ny); c != 0 {
				return c
			}
		default:
			if c := strings.Compare(x, y); c != 0 {
				return c
			}
		}
	}
	return 0
}

func compareUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// UseProfiles gives the planner the device profiles that events with an
// audience are filtered by. Call it before the planner is used.
func (p *Planner) UseProfiles(pr Profiles) { p.profiles = pr }

// narrow keeps the subscribers of a window that are in ev's audience.
func (p *Planner) narrow(ctx context.Context, ev Event, subs []devices.Subscriber) ([]devices.Subscriber, error) {
	if ev.Audience.Empty() || len(subs) == 0 {
		return subs, nil
	}
	if p.profiles == nil {
		return nil, fmt.Errorf("event %s: %w", ev.ID, ErrNoProfiles)
	}
	ids := make([]uint64, len(subs))
	for i, s := range subs {
		ids[i] = s.ID
	}
	prof, err := p.profiles.Profiles(ctx, ids)
	if err != nil {
		return nil, err
	}
	kept := subs[:0]
	for i, s := range subs {
		if ev.Audience.Match(prof[i]) {
			kept = append(kept, s)
		}
	}
	return kept, nil
}

// Count returns how many devices an event would target now: subscribers
// of any of its feeds, in its audience. It is the dry run of a sync; it
// publishes nothing.
func (p *Planner) Count(ctx context.Context, ev Event) (int64, error) {
	if len(ev.Feeds) == 0 || len(ev.Feeds) > MaxFeeds {
		return 0, fmt.Errorf("count: %d feeds: want 1 to %d: %w", len(ev.Feeds), MaxFeeds, ErrInvalidEvent)
	}
	seq, err := p.subs.MaxID(ctx)
	if err != nil {
		return 0, fmt.Errorf("count: %w", err)
	}
	var n int64
	for cur := uint64(0); cur <= seq; cur += uint64(p.cfg.Window) {
		subs, err := p.subs.Subscribers(ctx, ev.App, ev.Feeds, cur, p.cfg.Window)
		if err != nil {
			return 0, fmt.Errorf("count at %d: %w", cur, err)
		}
		if subs, err = p.narrow(ctx, ev, subs); err != nil {
			return 0, fmt.Errorf("count at %d: %w", cur, err)
		}
		n += int64(len(subs))
	}
	return n, nil
}
