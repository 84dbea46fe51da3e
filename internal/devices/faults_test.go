package devices_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/redis/go-redis/v9"
)

var errInjected = errors.New("injected fault")

// faultHook is a go-redis hook that fails the at-th command seen after
// arm (pipelined commands count one by one). With after=false the command
// is not sent; with after=true it runs and its reply is lost. Every later
// command fails unsent until disarm, as if the process had died there.
// With at=0 it only counts.
type faultHook struct {
	mu    sync.Mutex
	armed bool
	at    int
	after bool
	n     int
}

func (h *faultHook) arm(at int, after bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed, h.at, h.after, h.n = true, at, after, 0
}

func (h *faultHook) uncount() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.armed {
		h.n--
	}
}

// disarm stops failing and returns how many commands were seen.
func (h *faultHook) disarm() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed = false
	return h.n
}

// counted tells whether a command counts: the catalogue lookups (cached
// for 2 s) and the id block reservations come and go between runs, so
// only the commands on the registry's own keys are numbered; the others
// still fail once the fault has struck.
func counted(cmd redis.Cmder) bool {
	args := cmd.Args()
	i := 1
	if name := strings.ToLower(cmd.Name()); name == "evalsha" || name == "eval" {
		i = 3
	}
	if len(args) <= i {
		return true
	}
	key, _ := args[i].(string)
	return key != keys.DeviceSeq() && key != keys.Feeds()
}

// step accounts for one command: whether it runs, and whether its reply
// is lost.
func (h *faultHook) step(cmd redis.Cmder) (run, lose bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.armed {
		return true, false
	}
	if !counted(cmd) {
		tripped := h.at > 0 && h.n >= h.at
		return !tripped, tripped
	}
	h.n++
	switch {
	case h.at == 0 || h.n < h.at:
		return true, false
	case h.n == h.at:
		return h.after, true
	}
	return false, true
}

func (h *faultHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *faultHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		run, lose := h.step(cmd)
		if run {
			err := next(ctx, cmd)
			if redis.HasErrorPrefix(err, "NOSCRIPT") && !lose {
				// A script not yet loaded on this node (each cluster node
				// loads its own): the EVAL that follows counts instead.
				h.uncount()
			}
			if err != nil || !lose {
				return err
			}
		}
		cmd.SetErr(errInjected)
		return errInjected
	}
}

func (h *faultHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		ran, lostFrom := 0, len(cmds)
		for i, cmd := range cmds {
			run, lose := h.step(cmd)
			if run && ran == i {
				ran = i + 1
			}
			if lose && lostFrom == len(cmds) {
				lostFrom = i
			}
		}
		var err error
		if ran > 0 {
			err = next(ctx, cmds[:ran])
		}
		if lostFrom == len(cmds) {
			return err
		}
		for _, c := range cmds[lostFrom:] {
			c.SetErr(errInjected)
		}
		return errInjected
	}
}

var catalogFeeds = []string{"world", "tech", "sport"}

// checkConverged checks every device hash on the server: a device that
// its token's index entry points at has exactly the bits of its "fd" and
// no pending bits marker; a hash nothing points at (left by a crash before
// the claim) has no bit at all. Unless staleOK, no bit may be set for an id
// without a hash (ids of deleted devices are never reused, so a delete
// that crashed half-way may leave such bits; see docs/architecture.md).
func checkConverged(t *testing.T, rdb redis.UniversalClient, staleOK bool) {
	t.Helper()
	ctx := t.Context()
	ids := map[uint64]bool{}
	for _, key := range allKeys(t, rdb, "dev:*") {
		id, err := strconv.ParseUint(key[strings.LastIndexByte(key, ':')+1:], 10, 64)
		if err != nil {
			t.Fatalf("device key %q: %v", key, err)
		}
		h, err := rdb.HGetAll(ctx, key).Result()
		if err != nil {
			t.Fatalf("hgetall %s: %v", key, err)
		}
		ids[id] = true
		sum := sha256.Sum256([]byte(h["tk"]))
		owner, err := rdb.HGet(ctx, keys.TokenShard(sum[:12]), string(sum[:12])).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatalf("token index: %v", err)
		}
		indexed := owner == strconv.FormatUint(id, 10)
		fd := strings.Split(h["fd"], ",")
		for _, f := range catalogFeeds {
			want := int64(0)
			if indexed && slices.Contains(fd, f) {
				want = 1
			}
			if got := bit(t, rdb, f, id); got != want {
				t.Fatalf("device %d (indexed %v, fd %q, bv %q, bp %q, xf %q): bit of %s is %d, want %d",
					id, indexed, h["fd"], h["bv"], h["bp"], h["xf"], f, got, want)
			}
		}
		if indexed && (h["bp"] != "" || h["xf"] != "") {
			t.Fatalf("device %d: bits still marked pending (bp %q, xf %q)", id, h["bp"], h["xf"])
		}
	}
	if staleOK {
		return
	}
	for _, f := range catalogFeeds {
		bm, err := rdb.Get(ctx, keys.SubChunk(f, 0)).Bytes()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatalf("get bitmap: %v", err)
		}
		for i, c := range bm {
			for j := range 8 {
				if id := uint64(i*8 + j); c&(0x80>>j) != 0 && !ids[id] {
					t.Fatalf("feed %s: bit of id %d set, but the id has no device hash", f, id)
				}
			}
		}
	}
}

// allKeys lists the keys matching pattern on every master.
func allKeys(t *testing.T, rdb redis.UniversalClient, pattern string) []string {
	t.Helper()
	var mu sync.Mutex
	var out []string
	scan := func(ctx context.Context, c *redis.Client) error {
		ks, err := c.Keys(ctx, pattern).Result()
		mu.Lock()
		out = append(out, ks...)
		mu.Unlock()
		return err
	}
	var err error
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(t.Context(), scan)
	case *redis.Client:
		err = scan(t.Context(), c)
	}
	if err != nil {
		t.Fatalf("keys %s: %v", pattern, err)
	}
	return out
}

// faultCase is one registry call under test. prepare builds its starting
// state (with tokens unique to i) on a healthy client; call is the call
// that fails at the injected command; retry is what the app does after
// the error.
type faultCase struct {
	name    string
	staleOK bool // the call deletes another device (bits of its id may stay)
	prepare func(t *testing.T, reg *devices.Registry, i int) *faultState
	call    func(ctx context.Context, reg *devices.Registry, s *faultState) error
	retry   func(ctx context.Context, reg *devices.Registry, s *faultState) error
}

type faultState struct {
	dev    devices.Device // the device the call changes
	secret string
	tok    string // a second token of the case
}

func mustRegister(t *testing.T, reg *devices.Registry, r devices.Registration) (devices.Device, string) {
	t.Helper()
	d, secret, _, err := reg.Register(t.Context(), r)
	if err != nil {
		t.Fatalf("prepare: register: %v", err)
	}
	return d, secret
}

// patchAgain is the app retrying a PATCH: authenticate, then the same patch.
func patchAgain(p devices.Patch) func(ctx context.Context, reg *devices.Registry, s *faultState) error {
	return func(ctx context.Context, reg *devices.Registry, s *faultState) error {
		d, err := reg.Authenticate(ctx, s.dev.ID, s.secret)
		if err != nil {
			return err
		}
		_, err = reg.Update(ctx, d, p)
		return err
	}
}

func feedsPatch(feeds ...string) devices.Patch { return devices.Patch{Feeds: &feeds} }

func faultCases() []faultCase {
	registerCall := func(feeds ...string) func(ctx context.Context, reg *devices.Registry, s *faultState) error {
		return func(ctx context.Context, r *devices.Registry, s *faultState) error {
			_, _, _, err := r.Register(ctx, reg(s.dev.Token, feeds...))
			return err
		}
	}
	fresh := func(t *testing.T, r *devices.Registry, i int) *faultState {
		return &faultState{dev: devices.Device{Token: fcmToken(10_000 + i)}}
	}
	registered := func(feeds ...string) func(t *testing.T, r *devices.Registry, i int) *faultState {
		return func(t *testing.T, r *devices.Registry, i int) *faultState {
			d, secret := mustRegister(t, r, reg(fcmToken(10_000+i), feeds...))
			return &faultState{dev: d, secret: secret, tok: fcmToken(20_000 + i)}
		}
	}
	patchCall := func(p func(s *faultState) devices.Patch) func(ctx context.Context, reg *devices.Registry, s *faultState) error {
		return func(ctx context.Context, r *devices.Registry, s *faultState) error {
			_, err := r.Update(ctx, s.dev, p(s))
			return err
		}
	}
	rotate := func(s *faultState) devices.Patch {
		f := []string{"tech", "sport"}
		return devices.Patch{Token: &s.tok, Feeds: &f}
	}
	return []faultCase{
		{name: "register new device", prepare: fresh,
			call: registerCall("world", "tech"), retry: registerCall("world", "tech")},
		{name: "re-register with other feeds", prepare: registered("world", "tech"),
			call: registerCall("tech", "sport"), retry: registerCall("tech", "sport")},
		{name: "re-register, then retry with the old feeds", prepare: registered("world", "tech"),
			call: registerCall("sport"), retry: registerCall("world", "tech")},
		{name: "patch feeds", prepare: registered("world", "tech"),
			call:  patchCall(func(*faultState) devices.Patch { return feedsPatch("sport") }),
			retry: patchAgain(feedsPatch("sport"))},
		{name: "patch feeds, repaired by a re-registration", prepare: registered("world", "tech"),
			call:  patchCall(func(*faultState) devices.Patch { return feedsPatch("sport") }),
			retry: registerCall("sport")},
		{name: "patch feeds, repaired by a settings patch", prepare: registered("world"),
			call: patchCall(func(*faultState) devices.Patch { return feedsPatch("tech", "sport") }),
			retry: func(ctx context.Context, r *devices.Registry, s *faultState) error {
				loc := "de-DE"
				return patchAgain(devices.Patch{Locale: &loc})(ctx, r, s)
			}},
		{name: "token rotation with feeds", prepare: registered("world"),
			call: patchCall(rotate),
			retry: func(ctx context.Context, r *devices.Registry, s *faultState) error {
				return patchAgain(rotate(s))(ctx, r, s)
			}},
		{name: "rotation onto the token of another device", staleOK: true,
			prepare: func(t *testing.T, r *devices.Registry, i int) *faultState {
				s := registered("world")(t, r, i)
				mustRegister(t, r, reg(s.tok, "tech")) // the older record holding the new token
				return s
			},
			call: patchCall(rotate),
			retry: func(ctx context.Context, r *devices.Registry, s *faultState) error {
				return patchAgain(rotate(s))(ctx, r, s)
			}},
	}
}

// runFaults runs every case with the fault injected at each of its
// commands, once before the command is sent and once after it ran with
// the reply lost; after the retry the registry must have converged.
func runFaults(t *testing.T, b *bundle, hook *faultHook) {
	ctx := t.Context()
	i := 0
	next := func() int { i++; return i }
	for _, fc := range faultCases() {
		t.Run(fc.name, func(t *testing.T) {
			// A first clean run loads the scripts, a second counts the
			// commands.
			if err := fc.call(ctx, b.reg, fc.prepare(t, b.reg, next())); err != nil {
				t.Fatalf("clean call: %v", err)
			}
			s := fc.prepare(t, b.reg, next())
			hook.arm(0, false)
			err := fc.call(ctx, b.reg, s)
			n := hook.disarm()
			if err != nil {
				t.Fatalf("clean call: %v", err)
			}
			checkConverged(t, b.rdb, fc.staleOK)
			if n < 2 {
				t.Fatalf("clean call sent %d commands: the hook does not see them", n)
			}
			for at := 1; at <= n; at++ {
				for _, after := range []bool{false, true} {
					s := fc.prepare(t, b.reg, next())
					hook.arm(at, after)
					err := fc.call(ctx, b.reg, s)
					hook.disarm()
					if err == nil {
						t.Fatalf("fault at command %d/%d (after %v): the call reported success", at, n, after)
					}
					if err := fc.retry(ctx, b.reg, s); err != nil {
						t.Fatalf("fault at command %d/%d (after %v): retry: %v", at, n, after, err)
					}
					checkConverged(t, b.rdb, fc.staleOK)
				}
			}
		})
	}
}

// TestSubscriptionsConvergeAfterFaults fails each command of register,
// re-registration, PATCH and token rotation in turn (a go-redis hook), lets
// the app retry, and checks that every device's bits equal its feeds.
func TestSubscriptionsConvergeAfterFaults(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	hook := &faultHook{}
	b.rdb.AddHook(hook)
	runFaults(t, b, hook)
}

func TestSubscriptionsConvergeAfterFaultsOnCluster(t *testing.T) {
	t.Parallel()
	b := setup(t, true)
	hook := &faultHook{}
	b.rdb.AddHook(hook)
	runFaults(t, b, hook)
}

// cancelHook cancels a context right after the first script on one key
// has run: a client hanging up between a call's hash write and its bits.
type cancelHook struct {
	mu     sync.Mutex
	key    string
	cancel context.CancelFunc
}

func (h *cancelHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *cancelHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.mu.Lock()
		defer h.mu.Unlock()
		if args := cmd.Args(); err == nil && h.cancel != nil && len(args) > 3 && args[3] == h.key {
			h.cancel()
			h.cancel = nil
		}
		return err
	}
}

func (h *cancelHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestHungUpClientStillSettlesBits cancels the caller's context right after
// a PATCH wrote the new feeds: the bits are still brought in step, without
// any retry.
func TestHungUpClientStillSettlesBits(t *testing.T) {
	t.Parallel()
	b := setup(t, false)
	hook := &cancelHook{}
	b.rdb.AddHook(hook)
	d, _, _, err := b.reg.Register(t.Context(), reg(fcmToken(7), "world"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	hook.mu.Lock()
	hook.key, hook.cancel = keys.Device(d.ID), cancel
	hook.mu.Unlock()
	if _, err := b.reg.Update(ctx, d, feedsPatch("tech", "sport")); err != nil {
		t.Fatalf("patch: %v", err)
	}
	if ctx.Err() == nil {
		t.Fatalf("the hook did not cancel the call's context")
	}
	checkConverged(t, b.rdb, false)
	if bit(t, b.rdb, "sport", d.ID) != 1 || bit(t, b.rdb, "world", d.ID) != 0 {
		t.Fatalf("bits of the patched feeds not applied")
	}
}
