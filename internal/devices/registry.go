package devices

import (
	"cmp"
	"context"
	"crypto/sha256"
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/redis/go-redis/v9"
)

// Catalog tells which feed ids do not exist. *catalog.Store implements it.
type Catalog interface {
	Missing(ctx context.Context, ids []string) ([]string, error)
}

// Config configures a Registry.
type Config struct {
	// MaxFeeds caps the feeds one device may subscribe to. Default 64.
	MaxFeeds int
	// IDBlock is how many device ids a replica reserves with one INCRBY.
	// Ids stay dense: a restart loses at most IDBlock-1 ids. Default 32.
	IDBlock int
	// Apps are the apps devices may register with (and the feeds each
	// offers); nil knows only apps.Default, offering every feed.
	Apps apps.Source
}

func (c *Config) validate() error {
	if c.MaxFeeds < 1 || c.MaxFeeds > 1024 {
		return fmt.Errorf("devices: MaxFeeds %d: want 1-1024", c.MaxFeeds)
	}
	if c.IDBlock < 1 || c.IDBlock > 1<<16 {
		return fmt.Errorf("devices: IDBlock %d: want 1-65536", c.IDBlock)
	}
	return nil
}

// Registry stores devices in Redis.
//
// Write order (each step is one atomic command or single-slot script on a
// cluster; a crash between steps leaves only what the next line says):
//
//	Register: 1 HSET a new hash under a fresh id, bits pending (bp)
//	  2 claim the token index entry (script: set if unset or if it holds a
//	  stale id we saw)  3 settle the subscription bits. On a single server
//	  1 goes in one pipeline with 2+3, which are one script (claimsub.lua).
//	  crash after 1: a hash no index entry or bit points at; it gets no
//	  pushes (a memory leak of one hash, never a duplicate push). The client
//	  saw an error and retries.
//	  crash after 2: a device with bp set; the retry finds it by token and
//	  settles its bits.
//	  If the claim answers with another id, the token is known: that device
//	  is rewritten (write.lua, only if it still holds the token), the new
//	  hash is deleted and its id reused by this replica (nothing ever
//	  pointed at it), and the bits are settled if pending. So
//	  re-registering a known token costs no id, and ids stay dense.
//	Update: 1 write.lua writes the named fields only if the secret hash
//	  (and, rotating, the token) is the one that authenticated the call
//	  2 settle the bits if pending.
//	Token rotation: 1 claim the new token's index entry  2 write.lua
//	  3 remove the old entry only if it still points here  4 settle.
//	Delete: 1 DEL the hash only if its token matches (script)  2 clear
//	  subscription bits  3 remove the index entry only if it points here.
//	  crash after 1: stale bits and a stale index entry. Ids of deleted
//	  devices are never reused, fan-out skips ids that have no hash, and
//	  every index hit is verified against the hash's "tk", so neither
//	  misroutes a push.
//
// Bits converge: a change of fd records the feeds left in xf, bumps bv and
// sets bp (write.lua); settling sets the bits of fd, clears those of xf and
// clears bp only if bv is unchanged (settle.lua), else starts over. Every
// step is idempotent and every later write of the device settles a
// pending bp, so a retry or a re-registration repairs what a failed call
// left.
//
// Two concurrent registrations of one token both write a hash, but only one
// claims the index; the other finds the winner (whose hash was written before
// its claim), updates it and drops its own hash, so the token maps to
// exactly one device.
type Registry struct {
	rdb   redis.UniversalClient
	feeds Catalog
	cfg   Config
	now   func() time.Time

	mu      sync.Mutex
	nextID  uint64
	limitID uint64   // exclusive end of the reserved block
	free    []uint64 // ids handed out but never indexed, to reuse
}

// New returns a Registry on a's clock. It logs nothing (it returns errors,
// and the caller logs with its request-scoped logger) and has no metrics.
func New(a service.Archetype, rdb redis.UniversalClient, feeds Catalog, cfg Config) (*Registry, error) {
	a = a.WithDefaults()
	cfg.MaxFeeds = cmp.Or(cfg.MaxFeeds, 64)
	cfg.IDBlock = cmp.Or(cfg.IDBlock, 32)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Registry{rdb: rdb, feeds: feeds, cfg: cfg, now: a.Clock}, nil
}

// claimScript points a token index entry at a device id; see claim.lua.
//
//go:embed claim.lua
var claimLua string

var claimScript = redis.NewScript(claimLua)

// releaseScript removes a token index entry only if it points at a
// device; see release.lua.
//
//go:embed release.lua
var releaseLua string

var releaseScript = redis.NewScript(releaseLua)

// writeScript changes the named fields of a device after checking the
// credential; see write.lua for its contract.
//
//go:embed write.lua
var writeLua string

var writeScript = redis.NewScript(writeLua)

// settleScript marks a device's subscription bits as applied (and, on a
// single server, applies them); see settle.lua for its contract.
//
//go:embed settle.lua
var settleLua string

var settleScript = redis.NewScript(settleLua)

// claimSubscribeScript claims a token for a new device and sets its bits
// in one step (single server); see claimsub.lua for its contract.
//
//go:embed claimsub.lua
var claimSubLua string

var claimSubscribeScript = redis.NewScript(claimSubLua)

// deleteScript deletes a device hash only if it holds a token and was
// not updated since a cutoff; see delete.lua.
//
//go:embed delete.lua
var deleteLua string

var deleteScript = redis.NewScript(deleteLua)

// tokenIndex returns the shard key and field of a token's index entry in
// app: the first 12 bytes of sha256(token) for the default app (as before
// apps), of sha256(app NUL token) for any other, so the same token in two
// apps is two entries.
func tokenIndex(app, token string) (shard, field string) {
	var sum [32]byte
	if app == apps.Default || app == "" {
		sum = sha256.Sum256([]byte(token))
	} else {
		sum = sha256.Sum256([]byte(app + "\x00" + token))
	}
	return keys.TokenShard(sum[:12]), string(sum[:12])
}

// App returns app id ("" is apps.Default) as devices may register with
// it, or a *FieldError naming "app" when there is no such app.
func (r *Registry) App(id string) (apps.App, error) {
	id = cmp.Or(id, apps.Default)
	a, ok := apps.App{ID: apps.Default}, id == apps.Default
	if r.cfg.Apps != nil {
		a, ok = r.cfg.Apps.Current().Get(id)
	}
	if !ok {
		return apps.App{}, &FieldError{"app", fmt.Sprintf("unknown app %q", id)}
	}
	return a, nil
}

// newID hands out the next id of this replica's reserved block.
func (r *Registry) newID(ctx context.Context) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.free); n > 0 {
		id := r.free[n-1]
		r.free = r.free[:n-1]
		return id, nil
	}
	if r.nextID < r.limitID {
		id := r.nextID
		r.nextID++
		return id, nil
	}
	end, err := r.rdb.IncrBy(ctx, keys.DeviceSeq(), int64(r.cfg.IDBlock)).Uint64()
	if err != nil {
		return 0, fmt.Errorf("reserve device ids: %w", err)
	}
	// The block is (end-IDBlock, end]; ids start at 1.
	r.nextID, r.limitID = end-uint64(r.cfg.IDBlock)+2, end+1
	return end - uint64(r.cfg.IDBlock) + 1, nil
}

// recycle returns an id that no index entry, bit or hash refers to.
func (r *Registry) recycle(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.free) < 1024 {
		r.free = append(r.free, id)
	}
}

// checkFeeds validates, de-duplicates and looks up feed ids, each of
// which app must offer.
func (r *Registry) checkFeeds(ctx context.Context, app string, feeds []string) ([]string, error) {
	a, err := r.App(app)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(feeds))
	for _, f := range feeds {
		if !catalog.ValidID(f) {
			return nil, &FieldError{"feeds", fmt.Sprintf("%q is not a feed id", f)}
		}
		if !a.Offers(f) {
			return nil, &FieldError{"feeds", fmt.Sprintf("feed %s is not offered by app %s", f, a.ID)}
		}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	if len(out) > r.cfg.MaxFeeds {
		return nil, &FieldError{"feeds", fmt.Sprintf("at most %d feeds per device", r.cfg.MaxFeeds)}
	}
	missing, err := r.feeds.Missing(ctx, out)
	if err != nil {
		return nil, fmt.Errorf("check feeds: %w", err)
	}
	if len(missing) > 0 {
		return nil, &FieldError{"feeds", "unknown feed ids: " + strings.Join(missing, ", ") + " (see GET /v1/feeds)"}
	}
	return out, nil
}

// validate checks a registration and returns the device it describes.
func (r *Registry) validate(ctx context.Context, reg Registration) (Device, error) {
	a, err := r.App(reg.App)
	if err != nil {
		return Device{}, err
	}
	if reg.Provider != ProviderFCM && reg.Provider != ProviderAPNs {
		return Device{}, &FieldError{"provider", `want "fcm" or "apns"`}
	}
	tok, err := NormalizeToken(reg.Provider, reg.Token)
	if err != nil {
		return Device{}, err
	}
	if err := checkPlatform(reg.Provider, reg.Platform); err != nil {
		return Device{}, err
	}
	env, err := checkEnvironment(reg.Provider, reg.Environment)
	if err != nil {
		return Device{}, err
	}
	if err := checkMinInterval(reg.Sync.MinInterval); err != nil {
		return Device{}, err
	}
	for _, c := range []struct{ field, v string }{{"locale", reg.Locale}, {"timezone", reg.Timezone}, {"app_version", reg.AppVersion}} {
		if err := checkOptional(c.field, c.v, map[string]*regexp.Regexp{"locale": localeRE, "timezone": timezoneRE, "app_version": appVersionRE}[c.field]); err != nil {
			return Device{}, err
		}
	}
	feeds, err := r.checkFeeds(ctx, a.ID, reg.Feeds)
	if err != nil {
		return Device{}, err
	}
	return Device{
		App: a.ID, Token: tok, Provider: reg.Provider, Platform: reg.Platform, Environment: env,
		Feeds: feeds, Sync: reg.Sync, Locale: reg.Locale, Timezone: reg.Timezone, AppVersion: reg.AppVersion,
	}, nil
}

// Register creates a device, or updates the device that already holds the
// token (same id). Either way it returns a fresh secret, shown to the app
// once; only its hash is stored. created tells whether the device is new.
//
// A known device keeps its stored background-sync setting where reg says
// so (KeepEnabled, KeepMinInterval). Its subscription bits are brought in
// step with the feeds even when an earlier call failed half-way.
func (r *Registry) Register(ctx context.Context, reg Registration) (d Device, secret string, created bool, err error) {
	d, err = r.validate(ctx, reg)
	if err != nil {
		return Device{}, "", false, err
	}
	secret, sh := auth.NewDeviceSecret()
	d.secretHash = sh[:]
	d.Updated = r.now().UTC().Truncate(time.Second)
	shard, field := tokenIndex(d.App, d.Token)

	id, err := r.newID(ctx)
	if err != nil {
		return Device{}, "", false, fmt.Errorf("register: %w", err)
	}
	d.ID, d.Created = id, d.Updated
	// Write the device under a fresh id and claim the token for it. If the
	// token is already known, the claim answers with its device, which we
	// update instead; our hash is dropped and its id reused (no index entry
	// and no bit ever pointed at it).
	stale := ""
	for attempt := range 8 {
		var res any
		settled := false
		if attempt == 0 {
			res, settled, err = r.writeAndClaim(ctx, &d, shard, field, stale)
		} else {
			res, err = claimScript.Run(ctx, r.rdb, []string{shard}, field, strconv.FormatUint(id, 10), stale).Result()
		}
		if err != nil {
			return Device{}, "", false, fmt.Errorf("register: %w", err)
		}
		if n, ok := res.(int64); ok && n == 0 {
			if len(d.Feeds) > 0 && !settled {
				if err := r.settle(ctx, id, bitsState{app: d.App, version: "1", set: d.Feeds, pending: true}); err != nil {
					return Device{}, "", false, fmt.Errorf("register: %w", err)
				}
			}
			return d, secret, true, nil
		}
		cur, _ := res.(string)
		curID, perr := strconv.ParseUint(cur, 10, 64)
		if perr != nil {
			return Device{}, "", false, fmt.Errorf("register: token index holds %q: %w", cur, perr)
		}
		m, err := r.write(ctx, curID, d.Token, nil, d.Feeds, d.registerFields(reg))
		if errors.Is(err, errGone) || errors.Is(err, errChanged) {
			stale = cur // the entry points at a deleted or re-tokened device
			continue
		}
		if err != nil {
			return Device{}, "", false, fmt.Errorf("register: %w", err)
		}
		if err := r.rdb.Del(ctx, keys.Device(id)).Err(); err != nil {
			return Device{}, "", false, fmt.Errorf("register: drop unused device %d: %w", id, err)
		}
		r.recycle(id)
		known, err := parseDevice(curID, m)
		if err != nil {
			return Device{}, "", false, fmt.Errorf("register: %w", err)
		}
		if err := r.settle(ctx, curID, bitsOf(m)); err != nil {
			return Device{}, "", false, fmt.Errorf("register: %w", err)
		}
		return known, secret, false, nil
	}
	return Device{}, "", false, fmt.Errorf("register: %w", ErrConflict)
}

// writeAndClaim writes the new device hash, then claims the token index
// entry for it, and returns the claim script's answer and whether the
// subscription bits were set with the claim.
//
// On a single server both commands go in one pipeline: one connection
// delivers them in order and the server runs them in order, so the hash is
// written before the claim, and a crash can only cut the sequence after a
// prefix, which is the same guarantee as two round trips. The claim sets
// the bits in the same script (claimsub.lua), so a new device costs one
// round trip. On a cluster the keys live on different nodes and a pipeline
// would run them in parallel, so the claim waits for the hash, and the
// bits come after (settle).
func (r *Registry) writeAndClaim(ctx context.Context, d *Device, shard, field, stale string) (res any, settled bool, err error) {
	fields := append(setOnly(d.fields()), "fd", strings.Join(d.Feeds, ","), "ct", strconv.FormatInt(d.Created.Unix(), 10))
	if d.App != apps.Default {
		fields = append(fields, "ap", d.App) // absent for the default app: no byte more than before apps
	}
	if len(d.Feeds) > 0 {
		fields = append(fields, "bv", "1", "bp", "1") // bits of version 1 pending
	}
	idStr := strconv.FormatUint(d.ID, 10)
	if r.cluster() {
		if err := r.rdb.HSet(ctx, keys.Device(d.ID), fields...).Err(); err != nil {
			return nil, false, fmt.Errorf("write device %d: %w", d.ID, err)
		}
		res, err := claimScript.Run(ctx, r.rdb, []string{shard}, field, idStr, stale).Result()
		if err != nil {
			return nil, false, fmt.Errorf("claim token index: %w", err)
		}
		return res, false, nil
	}
	k, bit := keys.SubChunkOf(d.ID)
	ks := make([]string, 0, 2+len(d.Feeds))
	ks = append(ks, shard, keys.Device(d.ID))
	for _, f := range d.Feeds {
		ks = append(ks, keys.AppSubChunk(d.App, f, k))
	}
	pipe := r.rdb.Pipeline()
	hset := pipe.HSet(ctx, keys.Device(d.ID), fields...)
	claim := claimSubscribeScript.EvalSha(ctx, pipe, ks, field, idStr, stale, bit)
	_, _ = pipe.Exec(ctx)
	if err := hset.Err(); err != nil {
		return nil, false, fmt.Errorf("write device %d: %w", d.ID, err)
	}
	res, err = claim.Result()
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Not loaded yet on this server (first call, or after a restart):
		// Run sends the body once; the hash is written already.
		res, err = claimSubscribeScript.Run(ctx, r.rdb, ks, field, idStr, stale, bit).Result()
	}
	if err != nil {
		return nil, false, fmt.Errorf("claim token index: %w", err)
	}
	if n, ok := res.(int64); ok && n < 0 {
		return nil, false, fmt.Errorf("claim token index: device %d not written", d.ID)
	}
	return res, true, nil
}

// setOnly returns fields without its deletions (pairs "-<field>", see
// write.lua): a hash written new has nothing to delete.
func setOnly(fields []any) []any {
	out := make([]any, 0, len(fields))
	for i := 0; i+1 < len(fields); i += 2 {
		if f, _ := fields[i].(string); !strings.HasPrefix(f, "-") {
			out = append(out, fields[i], fields[i+1])
		}
	}
	return out
}

// cluster tells whether the registry runs on a Redis Cluster, where the
// keys of one device live in different slots.
func (r *Registry) cluster() bool {
	_, ok := r.rdb.(*redis.ClusterClient)
	return ok
}

// Internal answers of write.
var (
	errGone    = errors.New("device hash gone")
	errChanged = errors.New("device holds another token or secret")
)

// write runs write.lua on device id: it checks the token (if token is not
// "") and the secret hash (if sh is not nil), sets fields, and replaces the
// feeds if feeds is not nil. It returns the hash after the write, errGone
// or errChanged.
func (r *Registry) write(ctx context.Context, id uint64, token string, sh []byte, feeds []string, fields []any) (map[string]string, error) {
	named, fd := "0", ""
	if feeds != nil {
		named, fd = "1", strings.Join(feeds, ",")
	}
	args := append([]any{token, string(sh), named, fd}, fields...)
	res, err := writeScript.Run(ctx, r.rdb, []string{keys.Device(id)}, args...).Result()
	if err != nil {
		return nil, fmt.Errorf("write device %d: %w", id, err)
	}
	switch v := res.(type) {
	case int64:
		if v == 0 {
			return nil, fmt.Errorf("write device %d: %w", id, errGone)
		}
		return nil, fmt.Errorf("write device %d: %w", id, errChanged)
	case []any:
		return hashOf(v), nil
	}
	return nil, fmt.Errorf("write device %d: unexpected script answer %v", id, res)
}

// hashOf turns an HGETALL answer of a script into a map.
func hashOf(flat []any) map[string]string {
	m := make(map[string]string, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		k, _ := flat[i].(string)
		v, _ := flat[i+1].(string)
		m[k] = v
	}
	return m
}

// bitsState is what a device hash says about its subscription bits.
type bitsState struct {
	app     string   // "ap": the app whose bitmaps hold the bits
	version string   // "bv"
	set     []string // feeds whose bits must be set ("fd")
	clear   []string // feeds whose bits must be cleared ("xf")
	pending bool     // "bp": the bits of version are not known to be applied
}

func bitsOf(m map[string]string) bitsState {
	return bitsState{app: cmp.Or(m["ap"], apps.Default), version: cmp.Or(m["bv"], "0"), set: splitFeeds(m["fd"]), clear: splitFeeds(m["xf"]), pending: m["bp"] != ""}
}

func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// settleTimeout bounds the bits step, which runs to its end even if the
// caller's context is cancelled (a client that hung up): the hash already
// says what the bits must be, and stopping half-way only leaves work for
// the next call.
const settleTimeout = 5 * time.Second

// settle brings the subscription bits of device id in step with its hash,
// as long as st says they are pending: it sets the bits of the feeds and
// clears those of the feeds left, then marks the version applied. If the
// feeds changed meanwhile it starts over from the newer hash. Every step
// is idempotent, so a call that fails half-way leaves "bp" set and the
// next write of the device (a retry, a re-registration, a PATCH) finishes
// the job.
func (r *Registry) settle(ctx context.Context, id uint64, st bitsState) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	k, bit := keys.SubChunkOf(id)
	dev := keys.Device(id)
	for range 8 {
		if !st.pending {
			return nil
		}
		var res any
		var err error
		if r.cluster() {
			// The chunks live in other slots: bits first, then the check.
			pipe := r.rdb.Pipeline()
			for _, f := range st.set {
				pipe.SetBit(ctx, keys.AppSubChunk(st.app, f, k), bit, 1)
			}
			for _, f := range st.clear {
				pipe.SetBit(ctx, keys.AppSubChunk(st.app, f, k), bit, 0)
			}
			if pipe.Len() > 0 {
				if _, err := pipe.Exec(ctx); err != nil {
					return fmt.Errorf("update subscriptions of device %d: %w", id, err)
				}
			}
			args := append([]any{st.version, bit, 0, "1"}, anys(st.set)...)
			res, err = settleScript.Run(ctx, r.rdb, []string{dev}, args...).Result()
		} else {
			ks := make([]string, 0, 1+len(st.set)+len(st.clear))
			ks = append(ks, dev)
			for _, f := range st.set {
				ks = append(ks, keys.AppSubChunk(st.app, f, k))
			}
			for _, f := range st.clear {
				ks = append(ks, keys.AppSubChunk(st.app, f, k))
			}
			res, err = settleScript.Run(ctx, r.rdb, ks, st.version, bit, len(st.set), "0").Result()
		}
		if err != nil {
			return fmt.Errorf("update subscriptions of device %d: %w", id, err)
		}
		switch v := res.(type) {
		case int64:
			return nil // settled, or the device is gone
		case []any:
			st = bitsOf(hashOf(v)) // the feeds changed meanwhile
		default:
			return fmt.Errorf("update subscriptions of device %d: unexpected script answer %v", id, res)
		}
	}
	return fmt.Errorf("update subscriptions of device %d: %w", id, ErrConflict)
}

// syncBits sets the subscription bits of feeds in now that are not in old,
// and clears those of old that are not in now, in one pipeline.
func (r *Registry) syncBits(ctx context.Context, id uint64, app string, old, now []string) error {
	k, bit := keys.SubChunkOf(id)
	pipe := r.rdb.Pipeline()
	n := 0
	for _, f := range now {
		if !slices.Contains(old, f) {
			pipe.SetBit(ctx, keys.AppSubChunk(app, f, k), bit, 1)
			n++
		}
	}
	for _, f := range old {
		if !slices.Contains(now, f) {
			pipe.SetBit(ctx, keys.AppSubChunk(app, f, k), bit, 0)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("update subscriptions of device %d: %w", id, err)
	}
	return nil
}

// Get returns a device, or ErrNotFound.
func (r *Registry) Get(ctx context.Context, id uint64) (Device, error) {
	m, err := r.rdb.HGetAll(ctx, keys.Device(id)).Result()
	if err != nil {
		return Device{}, fmt.Errorf("get device %d: %w", id, err)
	}
	d, err := parseDevice(id, m)
	if err != nil {
		return Device{}, fmt.Errorf("get device %d: %w", id, err)
	}
	return d, nil
}

// Authenticate returns the device if secret is its secret. A wrong secret
// and an unknown device both give ErrNotFound, so a caller cannot tell them
// apart. The comparison runs in constant time.
func (r *Registry) Authenticate(ctx context.Context, id uint64, secret string) (Device, error) {
	d, err := r.Get(ctx, id)
	if err != nil {
		return Device{}, err
	}
	if !auth.DeviceSecretMatches(secret, d.secretHash) {
		return Device{}, fmt.Errorf("authenticate device %d: %w", id, ErrNotFound)
	}
	return d, nil
}

// Update applies a patch to device cur, as Authenticate returned it: token
// rotation, environment, feeds and settings. It writes only the fields p
// names (never the secret hash), and only if the device still holds the
// secret hash that authenticated the request (and, for a rotation, the
// token cur holds): otherwise a concurrent change won and it returns
// ErrConflict; a device deleted meanwhile gives ErrNotFound. A new token
// that another device holds moves to this device and the other device is
// deleted (it was an older registration of the same app install).
func (r *Registry) Update(ctx context.Context, cur Device, p Patch) (Device, error) {
	id := cur.ID
	var fields []any
	token := cur.Token
	if p.Token != nil {
		t, err := NormalizeToken(cur.Provider, *p.Token)
		if err != nil {
			return Device{}, err
		}
		if t != cur.Token {
			token = t
			fields = append(fields, "tk", t)
		}
	}
	if p.Environment != nil {
		env, err := checkEnvironment(cur.Provider, *p.Environment)
		if err != nil {
			return Device{}, err
		}
		ef, ev := envField(cur.App, env)
		fields = append(fields, ef, ev)
	}
	var feeds []string
	if p.Feeds != nil {
		var err error
		if feeds, err = r.checkFeeds(ctx, cur.App, *p.Feeds); err != nil {
			return Device{}, err
		}
	}
	if p.SyncEnabled != nil {
		fields = append(fields, "bg", boolField(*p.SyncEnabled))
	}
	if p.MinInterval != nil {
		if err := checkMinInterval(*p.MinInterval); err != nil {
			return Device{}, err
		}
		fields = append(fields, "mi", strconv.FormatInt(int64(*p.MinInterval/time.Second), 10))
	}
	for _, c := range []struct {
		field, key string
		v          *string
		re         *regexp.Regexp
	}{{"locale", "lo", p.Locale, localeRE}, {"timezone", "tz", p.Timezone, timezoneRE}, {"app_version", "av", p.AppVersion, appVersionRE}} {
		if c.v != nil {
			if err := checkOptional(c.field, *c.v, c.re); err != nil {
				return Device{}, err
			}
			fields = append(fields, c.key, *c.v)
		}
	}
	fields = append(fields, "ut", strconv.FormatInt(r.now().Unix(), 10))

	rotated := token != cur.Token
	expectTk := ""
	if rotated {
		if err := r.claimFor(ctx, id, cur.App, token); err != nil {
			return Device{}, fmt.Errorf("update device %d: %w", id, err)
		}
		expectTk = cur.Token
	}
	m, err := r.write(ctx, id, expectTk, cur.secretHash, feeds, fields)
	switch {
	case errors.Is(err, errGone):
		return Device{}, fmt.Errorf("update device %d: %w", id, ErrNotFound)
	case errors.Is(err, errChanged):
		// Re-registered (new secret) or rotated since the request was
		// authenticated. A claimed new index entry stays behind but is
		// harmless: every index hit is verified against "tk".
		return Device{}, fmt.Errorf("update device %d: %w", id, ErrConflict)
	case err != nil:
		return Device{}, err
	}
	if rotated {
		shard, field := tokenIndex(cur.App, cur.Token)
		if err := releaseScript.Run(ctx, r.rdb, []string{shard}, field, strconv.FormatUint(id, 10)).Err(); err != nil {
			return Device{}, fmt.Errorf("update device %d: release old token: %w", id, err)
		}
	}
	d, err := parseDevice(id, m)
	if err != nil {
		return Device{}, fmt.Errorf("update device %d: %w", id, err)
	}
	if err := r.settle(ctx, id, bitsOf(m)); err != nil {
		return Device{}, err
	}
	return d, nil
}

// claimFor points token's index entry in app at id, deleting another
// device of app that still holds the token.
func (r *Registry) claimFor(ctx context.Context, id uint64, app, token string) error {
	shard, field := tokenIndex(app, token)
	idStr := strconv.FormatUint(id, 10)
	stale := ""
	for range 8 {
		res, err := claimScript.Run(ctx, r.rdb, []string{shard}, field, idStr, stale).Result()
		if err != nil {
			return fmt.Errorf("claim token index: %w", err)
		}
		if n, ok := res.(int64); ok && n == 0 {
			return nil
		}
		other, _ := res.(string)
		otherID, err := strconv.ParseUint(other, 10, 64)
		if err != nil {
			return fmt.Errorf("token index holds %q: %w", other, err)
		}
		if _, err := r.DeleteIfToken(ctx, otherID, token); err != nil {
			return err
		}
		stale = other
	}
	return ErrConflict
}

// Delete unregisters a device: its hash, its token index entry and its
// subscription bits. It returns ErrNotFound for an unknown device.
func (r *Registry) Delete(ctx context.Context, id uint64) error {
	for range 3 {
		tk, err := r.rdb.HGet(ctx, keys.Device(id), "tk").Result()
		if errors.Is(err, redis.Nil) {
			return fmt.Errorf("delete device %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("delete device %d: %w", id, err)
		}
		ok, err := r.DeleteIfToken(ctx, id, tk)
		if err != nil || ok {
			return err
		}
	}
	return fmt.Errorf("delete device %d: %w", id, ErrConflict)
}

// DeleteIfToken prunes a device only if it still holds token: it deletes
// the hash, clears the subscription bits and removes the token index entry
// (if it points at the device). A device that rotated to another token
// survives a prune of its old one. It reports whether it deleted.
func (r *Registry) DeleteIfToken(ctx context.Context, id uint64, token string) (bool, error) {
	return r.DeleteIfTokenBefore(ctx, id, token, time.Time{})
}

// DeleteIfTokenBefore is DeleteIfToken for a provider's answer that says
// when the token stopped being valid (APNs 410 "timestamp"): the device is
// deleted only if it was last updated (its "ut", when its token was last
// set) before at, so an app that registered the same token again after
// that moment keeps its device. The check and the delete are one script.
// A zero at checks the token alone.
func (r *Registry) DeleteIfTokenBefore(ctx context.Context, id uint64, token string, at time.Time) (bool, error) {
	cut := int64(0)
	if !at.IsZero() {
		cut = max(at.UnixMilli(), 1)
	}
	res, err := deleteScript.Run(ctx, r.rdb, []string{keys.Device(id), UnresponsiveKey(id)}, token, cut).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("delete device %d: %w", id, err)
	}
	v, _ := res.([]any)
	if len(v) != 2 {
		return false, fmt.Errorf("delete device %d: unexpected script answer %v", id, res)
	}
	fd, _ := v[0].(string)
	app, _ := v[1].(string)
	app = cmp.Or(app, apps.Default)
	if err := r.syncBits(ctx, id, app, splitFeeds(fd), nil); err != nil {
		return true, fmt.Errorf("delete device %d: %w", id, err)
	}
	shard, field := tokenIndex(app, token)
	if err := releaseScript.Run(ctx, r.rdb, []string{shard}, field, strconv.FormatUint(id, 10)).Err(); err != nil {
		return true, fmt.Errorf("delete device %d: release token: %w", id, err)
	}
	return true, nil
}
