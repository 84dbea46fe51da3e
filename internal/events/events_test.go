package events_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nudge-dev/nudge/internal/events"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/redistest"
)

func TestStore(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	rdb := redistest.Start(t)
	s, err := events.New(events.Config{}, rdb)
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.NewID(ctx)
	if err != nil || id != "1" {
		t.Fatalf("NewID = %q, %v; want 1", id, err)
	}
	if ok, err := s.Create(ctx, id, []byte(`{"a":1}`)); err != nil || !ok {
		t.Fatalf("Create = %v, %v; want new", ok, err)
	}
	if ok, err := s.Create(ctx, id, []byte(`{"a":2}`)); err != nil || ok {
		t.Fatalf("Create again = %v, %v; want not new", ok, err)
	}
	if def, err := s.Definition(ctx, id); err != nil || string(def) != `{"a":1}` {
		t.Fatalf("Definition = %s, %v; want the first", def, err)
	}
	if ttl, err := rdb.PTTL(ctx, keys.Event(id)).Result(); err != nil || ttl < 7*24*time.Hour-time.Minute {
		t.Fatalf("TTL = %s, %v; want about 7 days", ttl, err)
	}

	// A checkpoint from a cursor that moved writes nothing.
	if ok, err := s.Checkpoint(ctx, id, 0, 8, events.Counts{Targeted: 3, Queued: 2, Skipped: 1}); err != nil || !ok {
		t.Fatalf("Checkpoint = %v, %v; want applied", ok, err)
	}
	if ok, err := s.Checkpoint(ctx, id, 0, 8, events.Counts{Targeted: 3}); err != nil || ok {
		t.Fatalf("Checkpoint from a stale cursor = %v, %v; want not applied", ok, err)
	}
	if err := s.Record(ctx, []string{id, id, "gone"}, events.OutcomeSent); err != nil {
		t.Fatal(err)
	}
	if err := s.Record(ctx, []string{id}, "lost"); err == nil {
		t.Fatal("Record of an unknown outcome: want an error")
	}
	fin := time.UnixMilli(time.Now().UnixMilli())
	if err := s.Finish(ctx, id, fin); err != nil {
		t.Fatal(err)
	}
	p, err := s.Progress(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Done || p.Cursor != 8 || p.Targeted != 3 || p.Queued != 2 || p.Skipped != 1 || p.Sent != 2 ||
		!p.FinishedAt.Equal(fin) || p.LastSentAt.IsZero() || p.State() != events.StateDone {
		t.Fatalf("Progress = %+v (state %s), want done at 8 with 3 targeted, 2 queued and sent, 1 skipped", p, p.State())
	}

	// Nothing recreates an expired event.
	if n, _ := rdb.Exists(ctx, keys.Event("gone")).Result(); n != 0 {
		t.Fatal("Record recreated an event that does not exist")
	}
	if _, err := s.Checkpoint(ctx, "gone", 0, 8, events.Counts{}); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("Checkpoint of a missing event: %v, want ErrNotFound", err)
	}
	if err := s.Finish(ctx, "gone", fin); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("Finish of a missing event: %v, want ErrNotFound", err)
	}
	if _, err := s.Progress(ctx, "gone"); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("Progress of a missing event: %v, want ErrNotFound", err)
	}
	if _, err := s.Definition(ctx, "gone"); !errors.Is(err, events.ErrNotFound) {
		t.Fatalf("Definition of a missing event: %v, want ErrNotFound", err)
	}
	if n, _ := rdb.Exists(ctx, keys.Event("gone")).Result(); n != 0 {
		t.Fatal("a write to a missing event recreated it")
	}
}
