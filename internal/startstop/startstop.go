// Package startstop is the one lifecycle of nudge's background loops (the
// queue workers and monitor, the feed watcher, the throttle's scheduler,
// the dispatcher and the devstack's parts), so that they all start and
// stop the same way:
//
//   - Start runs once. A second Start, or a Start after Stop, returns
//     ErrStarted. A Start whose setup fails leaves the service as it was,
//     and may be called again.
//   - Stop stops what Start started and waits for it. It is idempotent:
//     a second Stop (also a concurrent one) waits for the first and
//     returns. Stop before Start is safe and final: nothing runs, and a
//     later Start returns ErrStarted.
//   - Stopped returns a channel that is closed once Stop has finished.
//
// A service holds a Base and passes its own start function to Base.Start;
// Loop builds that function for the common case of one goroutine that runs
// until its context ends.
package startstop

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrStarted is returned by Start when Start succeeded before or Stop was
// called: a service runs at most once.
var ErrStarted = errors.New("already started or stopped")

// StartFunc launches a service's goroutines on ctx and returns the
// function that stops them and waits until they have exited. It must not
// call the Base's Start or Stop.
type StartFunc func(ctx context.Context) (stop func(), err error)

type state int

const (
	idle state = iota
	running
	stopped
)

// Base is the lifecycle state of one service. The zero value is ready to
// use; a Base must not be copied after first use.
type Base struct {
	mu    sync.Mutex
	state state
	stop  func()
	done  chan struct{} // closed when Stop has finished
}

// Start calls start once, with ctx. It holds the Base's lock while start
// runs, so a concurrent Stop waits for start to return and then stops what
// it started. It returns ErrStarted if the service was started or stopped
// before, and start's error (the service stays idle) if start fails.
func (b *Base) Start(ctx context.Context, start StartFunc) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != idle {
		return ErrStarted
	}
	stop, err := start(ctx)
	if err != nil {
		return err
	}
	b.state, b.stop = running, stop
	return nil
}

// Stop calls the stop function that Start's start returned, once, and
// then closes Stopped. Other calls wait until that has finished.
func (b *Base) Stop() {
	b.mu.Lock()
	done := b.doneLocked()
	if b.state == stopped {
		b.mu.Unlock()
		<-done
		return
	}
	stop := b.stop
	b.state, b.stop = stopped, nil
	b.mu.Unlock()
	if stop != nil {
		stop()
	}
	close(done)
}

// Stopped returns a channel that is closed once Stop has finished: every
// goroutine the service started has exited.
func (b *Base) Stopped() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.doneLocked()
}

func (b *Base) doneLocked() chan struct{} {
	if b.done == nil {
		b.done = make(chan struct{})
	}
	return b.done
}

// Loop returns the StartFunc of a service that is one goroutine: it runs
// loop with a context that ends when Start's ctx ends or Stop is called,
// and its stop function cancels that context and waits for loop to return.
func Loop(loop func(ctx context.Context)) StartFunc {
	return func(ctx context.Context) (func(), error) {
		ctx, cancel := context.WithCancel(ctx)
		exited := make(chan struct{})
		go func() {
			defer close(exited)
			loop(ctx)
		}()
		return func() { cancel(); <-exited }, nil
	}
}

// Sleep waits d or until ctx ends, the pause of a loop between its rounds;
// it reports whether d passed (false once ctx has ended, also for d <= 0).
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
