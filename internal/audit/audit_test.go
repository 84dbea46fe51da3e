package audit_test

import (
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/audit"
	"github.com/nudge-dev/nudge/internal/redistest"
)

func TestRecordRead(t *testing.T) {
	t.Parallel()
	l := audit.New(redistest.Start(t))
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	in := []audit.Entry{
		{Action: "sync.create", Target: "breaking:1", App: "sports", Key: "ed", Role: "editor", RequestID: "r0", At: at},
		{Action: "feed.delete", Target: "world", Key: "ed", Role: "editor", RequestID: "r1", At: at},
		{Action: "device.reregister", Target: "7", TokenHash: "abc", ClientIP: "10.0.0.1", RequestID: "r2", At: at.Add(time.Second)},
	}
	for _, e := range in {
		if err := l.Record(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	got, err := l.Read(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(in) {
		t.Fatalf("read %d entries, want %d", len(got), len(in))
	}
	for i := range in {
		g := got[i]
		if g.ID == "" {
			t.Errorf("entry %d has no stream id", i)
		}
		g.ID = ""
		if g != in[i] {
			t.Errorf("entry %d = %+v, want %+v", i, g, in[i])
		}
	}
	last, err := l.Read(t.Context(), 1)
	if err != nil || len(last) != 1 || last[0].Action != "device.reregister" {
		t.Fatalf("Read(1) = %+v, %v; want the latest entry", last, err)
	}
}
