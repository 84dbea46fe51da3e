package service_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudge-dev/nudge/internal/service"
)

func TestWithDefaultsFillsOnlyWhatIsMissing(t *testing.T) {
	t.Parallel()
	d := service.Archetype{}.WithDefaults()
	if d.Logger == nil || d.Clock == nil || d.Registerer == nil {
		t.Fatalf("defaults left a nil field: %+v", d)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	reg := prometheus.NewRegistry()
	a := service.Archetype{Clock: func() time.Time { return at }, Registerer: reg}.WithDefaults()
	if !a.Now().Equal(at) || a.Registerer != reg {
		t.Fatalf("WithDefaults replaced a given field: now %v, registerer %v", a.Now(), a.Registerer)
	}
	if now := (service.Archetype{}).Now(); now.IsZero() {
		t.Fatal("Now without a clock: got the zero time, want time.Now")
	}
}

func TestRegisterRefusesADuplicateRegisterSharedReusesIt(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a := service.Archetype{Registerer: reg}
	newCounter := func() prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "nudge_test_total", Help: "A test counter."})
	}
	first := newCounter()
	if err := a.Register(first); err != nil {
		t.Fatalf("first Register: %v", err)
	}
	if err := a.Register(newCounter()); err == nil {
		t.Fatal("Register of a second collector with the same description: got nil, want an error")
	}
	got, err := service.RegisterShared(a, newCounter())
	if err != nil {
		t.Fatalf("RegisterShared of a duplicate: %v", err)
	}
	if got != first {
		t.Fatal("RegisterShared of a duplicate: got a new collector, want the one already registered")
	}
	if err := (service.Archetype{}).Register(newCounter()); err != nil {
		t.Fatalf("Register without a registerer: %v", err)
	}
}
