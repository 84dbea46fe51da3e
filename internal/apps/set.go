package apps

import (
	"fmt"
	"slices"
	"strings"
)

// Set is an immutable, validated set of apps: what every process reads its
// apps from. A live catalogue hands out a new Set on each change; a Set
// itself never changes, so a caller may keep one for the length of a task
// (a batch, a request) and see one consistent view.
type Set struct {
	byID map[string]App
	ids  []string // sorted
}

// Source hands out the current Set. A live catalogue is one; so is a Set
// itself, which is always its own current view (for tests and fixed
// deployments).
type Source interface {
	Current() *Set
}

// Current returns s: a Set is a Source that never changes.
func (s *Set) Current() *Set { return s }

// NewSet checks each app and that no id repeats.
func NewSet(list ...App) (*Set, error) {
	s := &Set{byID: make(map[string]App, len(list))}
	for _, a := range list {
		if err := a.Validate(); err != nil {
			return nil, err
		}
		if _, dup := s.byID[a.ID]; dup {
			return nil, fmt.Errorf("app %q is defined twice", a.ID)
		}
		s.byID[a.ID] = a
		s.ids = append(s.ids, a.ID)
	}
	slices.Sort(s.ids)
	return s, nil
}

// MustSet is NewSet for apps known to be valid (tests, built-in defaults);
// it panics on an invalid one.
func MustSet(list ...App) *Set {
	s, err := NewSet(list...)
	if err != nil {
		panic(err)
	}
	return s
}

// Get returns the app with id.
func (s *Set) Get(id string) (App, bool) {
	a, ok := s.byID[id]
	return a, ok
}

// IDs returns the app ids in order.
func (s *Set) IDs() []string { return slices.Clone(s.ids) }

// All returns the apps ordered by id.
func (s *Set) All() []App {
	out := make([]App, len(s.ids))
	for i, id := range s.ids {
		out[i] = s.byID[id]
	}
	return out
}

// Len is the number of apps.
func (s *Set) Len() int { return len(s.ids) }

// String lists the ids, for logs.
func (s *Set) String() string { return strings.Join(s.ids, ",") }

// setOf makes a Set of apps already checked, keyed by id.
func setOf(byID map[string]App) *Set {
	s := &Set{byID: byID, ids: make([]string, 0, len(byID))}
	for id := range byID {
		s.ids = append(s.ids, id)
	}
	slices.Sort(s.ids)
	return s
}
