package devicestest

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// RaceHook is a go-redis hook that runs a function once, right before the
// first script (EVAL or EVALSHA) whose first key is the armed key: a
// concurrent writer landing between a caller's read and its write, every
// time. Add it with AddHook, then arm it with Before.
type RaceHook struct {
	mu  sync.Mutex
	key string
	fn  func()
}

// Before arms the hook: fn runs before the next script on key.
func (h *RaceHook) Before(key string, fn func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.key, h.fn = key, fn
}

// take returns the armed function if cmd is a script on the armed key, and
// disarms the hook.
func (h *RaceHook) take(cmd redis.Cmder) func() {
	h.mu.Lock()
	defer h.mu.Unlock()
	args := cmd.Args()
	if h.fn == nil || len(args) < 4 || (cmd.Name() != "evalsha" && cmd.Name() != "eval") || args[3] != h.key {
		return nil
	}
	fn := h.fn
	h.fn = nil
	return fn
}

// DialHook passes dials through.
func (h *RaceHook) DialHook(next redis.DialHook) redis.DialHook { return next }

// ProcessHook runs the armed function before its script.
func (h *RaceHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if fn := h.take(cmd); fn != nil {
			fn()
		}
		return next(ctx, cmd)
	}
}

// ProcessPipelineHook passes pipelines through.
func (h *RaceHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
