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
