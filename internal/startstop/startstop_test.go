package startstop_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nudge-dev/nudge/internal/startstop"
)

// service is a loop that records when it runs and when it has exited.
type service struct {
	base    startstop.Base
	running chan struct{} // closed when the loop has begun
	exited  atomic.Bool
	release chan struct{} // the loop returns only after this is closed
}

func newService() *service {
	return &service{running: make(chan struct{}), release: make(chan struct{})}
}

func (s *service) Start(ctx context.Context) error {
	return s.base.Start(ctx, startstop.Loop(func(ctx context.Context) {
		close(s.running)
		<-ctx.Done()
		<-s.release
		s.exited.Store(true)
	}))
}

func TestStopWaitsForTheLoop(t *testing.T) {
	t.Parallel()
	s := newService()
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-s.running
	returned := make(chan struct{})
	go func() { s.base.Stop(); close(returned) }()
	// Stop has cancelled the loop's context, but the loop is held: Stop
	// and Stopped must wait for it.
	select {
	case <-returned:
		t.Fatal("Stop returned while the loop was still running")
	case <-s.base.Stopped():
		t.Fatal("Stopped closed while the loop was still running")
	default:
	}
	close(s.release)
	<-returned
	if !s.exited.Load() {
		t.Fatal("Stop returned before the loop exited")
	}
	select {
	case <-s.base.Stopped():
	default:
		t.Fatal("Stopped not closed after Stop returned")
	}
}

func TestDoubleAndConcurrentStop(t *testing.T) {
	t.Parallel()
	s := newService()
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	close(s.release)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s.base.Stop()
			// Every Stop returns only once the loop has exited.
			if !s.exited.Load() {
				t.Error("a Stop returned before the loop exited")
			}
		})
	}
	wg.Wait()
	s.base.Stop() // once more, after all of them
}

func TestStopBeforeStart(t *testing.T) {
	t.Parallel()
	s := newService()
	s.base.Stop()
	<-s.base.Stopped()
	if err := s.Start(t.Context()); !errors.Is(err, startstop.ErrStarted) {
		t.Fatalf("Start after Stop: got %v, want ErrStarted", err)
	}
	select {
	case <-s.running:
		t.Fatal("the loop ran after Stop")
	default:
	}
}

func TestSecondStartIsAnError(t *testing.T) {
	t.Parallel()
	s := newService()
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); !errors.Is(err, startstop.ErrStarted) {
		t.Fatalf("second Start: got %v, want ErrStarted", err)
	}
	close(s.release)
	s.base.Stop()
	if err := s.Start(t.Context()); !errors.Is(err, startstop.ErrStarted) {
		t.Fatalf("Start after Stop: got %v, want ErrStarted", err)
	}
}

func TestFailedStartCanBeRetried(t *testing.T) {
	t.Parallel()
	var b startstop.Base
	boom := errors.New("boom")
	calls := 0
	start := func(context.Context) (func(), error) {
		calls++
		if calls == 1 {
			return nil, boom
		}
		return func() {}, nil
	}
	if err := b.Start(t.Context(), start); !errors.Is(err, boom) {
		t.Fatalf("first Start: got %v, want boom", err)
	}
	if err := b.Start(t.Context(), start); err != nil {
		t.Fatalf("Start after a failed Start: %v", err)
	}
	b.Stop()
}

func TestLoopEndsWithStartsContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	ended := make(chan struct{})
	var b startstop.Base
	if err := b.Start(ctx, startstop.Loop(func(ctx context.Context) { <-ctx.Done(); close(ended) })); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-ended // the loop saw the caller's context end
	b.Stop()
}

// TestSleep: Sleep reports a full wait, and returns false at once when
// its context ends first (or had ended, whatever d).
func TestSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		start := time.Now()
		if !startstop.Sleep(ctx, time.Minute) || time.Since(start) != time.Minute {
			t.Fatalf("Sleep(1m): want true after a minute, took %v", time.Since(start))
		}
		if !startstop.Sleep(ctx, 0) {
			t.Fatal("Sleep(0) on a live context: want true")
		}
		go func() {
			time.Sleep(time.Second)
			cancel()
		}()
		start = time.Now()
		if startstop.Sleep(ctx, time.Hour) || time.Since(start) != time.Second {
			t.Fatalf("Sleep(1h) cancelled after 1s: want false after 1s, took %v", time.Since(start))
		}
		if startstop.Sleep(ctx, 0) || startstop.Sleep(ctx, time.Hour) {
			t.Fatal("Sleep on an ended context: want false")
		}
	})
}
