package devstack

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/redact"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/startstop"
)

// DeliverySource streams the pushes the provider emulators accepted.
// *pushemu.Emulator is one.
type DeliverySource interface {
	Subscribe(buf int) (<-chan pushemu.Delivery, func())
}

// FleetConfig configures a Fleet.
type FleetConfig struct {
	// Devices is the number of simulated devices; default 1,000.
	Devices int
	// Feeds are the feed ids devices subscribe to (each device a random,
	// non-empty subset); default the news room's feeds.
	Feeds []string
	// Seed makes the fleet (tokens, platforms, subscriptions, wake
	// behaviour) reproducible; default 1.
	Seed uint64
	// RegisterConcurrency bounds registrations in flight; default 16.
	RegisterConcurrency int
	// WakeConcurrency bounds woken apps talking to the api at once;
	// default 32.
	WakeConcurrency int
	// MissRate is the fraction of pushes that never wake the app (the OS
	// dropped it, the app was force-quit, the phone was off); default
	// 0.05. A negative value means every push wakes the app.
	MissRate float64
	// WakeDelayMin and WakeDelayMax bound the random time between a push's
	// delivery and the app waking; defaults 100ms and 2s.
	WakeDelayMin, WakeDelayMax time.Duration
	// OptOutRate is the fraction of devices with background sync disabled;
	// default 0.05. A negative value means none.
	OptOutRate float64
	// SilentRate is the fraction of devices whose app never wakes (the
	// user force-quit it): nudge marks them unresponsive. Default 0.1; a
	// negative value means none.
	SilentRate float64
	// BackgroundFetchEvery is the mean time between two background
	// fetches of one device with background sync on (WorkManager,
	// BGAppRefreshTask), each followed by a receipt of source
	// background_fetch; default 5m. Negative: none.
	BackgroundFetchEvery time.Duration
	// ForegroundEvery is the mean time between two foreground opens of
	// one device, each a refresh and a receipt of source foreground;
	// default 10m. Negative: none.
	ForegroundEvery time.Duration
	// Apps split the fleet between apps, each device registering with its
	// app's id and subscribing among its app's feeds; nil: every device
	// registers without an app (the api's default app).
	Apps []FleetApp
}

// FleetApp is one app of a fleet.
type FleetApp struct {
	ID string
	// Feeds are the app's feeds; nil: FleetConfig.Feeds.
	Feeds []string
	// Share is the app's fraction of the devices; the shares are weights.
	Share float64
}

func (c FleetConfig) withDefaults() FleetConfig {
	c.Devices = cmp.Or(c.Devices, 1000)
	if len(c.Feeds) == 0 {
		for _, f := range NewsroomFeeds {
			c.Feeds = append(c.Feeds, f.ID)
		}
	}
	c.Seed = cmp.Or(c.Seed, 1)
	c.RegisterConcurrency = cmp.Or(c.RegisterConcurrency, 16)
	c.WakeConcurrency = cmp.Or(c.WakeConcurrency, 32)
	c.MissRate = cmp.Or(c.MissRate, 0.05)
	c.MissRate = max(c.MissRate, 0)
	c.WakeDelayMin = cmp.Or(c.WakeDelayMin, 100*time.Millisecond)
	c.WakeDelayMax = cmp.Or(c.WakeDelayMax, 2*time.Second)
	c.OptOutRate = cmp.Or(c.OptOutRate, 0.05)
	c.OptOutRate = max(c.OptOutRate, 0)
	c.SilentRate = max(cmp.Or(c.SilentRate, 0.1), 0)
	c.BackgroundFetchEvery = cmp.Or(c.BackgroundFetchEvery, 5*time.Minute)
	c.ForegroundEvery = cmp.Or(c.ForegroundEvery, 10*time.Minute)
	return c
}

func (c FleetConfig) validate() error {
	switch {
	case c.Devices < 1 || c.Devices > 1_000_000:
		return fmt.Errorf("fleet: %d devices: set NUDGE_DEVSTACK_DEVICES (-devices) between 1 and 1000000", c.Devices)
	case c.RegisterConcurrency < 1 || c.WakeConcurrency < 1:
		return errors.New("fleet: RegisterConcurrency and WakeConcurrency must be at least 1")
	case c.MissRate >= 1:
		return fmt.Errorf("fleet: miss rate %g leaves no push that wakes an app: set NUDGE_DEVSTACK_MISS_RATE (-miss-rate) below 1", c.MissRate)
	case c.OptOutRate >= 1:
		return fmt.Errorf("fleet: opt-out rate %g must be below 1", c.OptOutRate)
	case c.SilentRate >= 1:
		return fmt.Errorf("fleet: silent rate %g must be below 1", c.SilentRate)
	case c.WakeDelayMin < 0 || c.WakeDelayMax < c.WakeDelayMin:
		return fmt.Errorf("fleet: wake delay range [%s, %s] is empty", c.WakeDelayMin, c.WakeDelayMax)
	}
	return nil
}

// simDevice is one simulated phone with the app installed.
type simDevice struct {
	reg registration
	// silent: the app was force-quit and never wakes.
	silent bool

	mu      sync.Mutex
	id      uint64
	secret  string
	cursors map[string]int64 // feed -> last cursor the app synced to
}

func (d *simDevice) creds() (uint64, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.id, d.secret
}

// FleetStats counts what the simulated apps did. The devstack's summary
// line shows nudge's own figures instead; these are for tests and logs.
type FleetStats struct {
	Devices        int   // simulated devices
	Registered     int64 // registrations the api accepted
	RegisterFailed int64 // registrations that failed after retries
	Deliveries     int64 // pushes the emulators delivered to fleet tokens
	Breaking       int64 // of which breaking-news syncs (reason "breaking")
	Unknown        int64 // deliveries to a token the fleet does not know (yet)
	Missed         int64 // deliveries that did not wake the app, by design (silent phones included)
	Wakes          int64 // app wakes (each fetches, then posts a receipt)
	Receipts       int64 // push receipts the api accepted
	// Refreshes are receipts of background fetches and foreground opens
	// the api accepted.
	Refreshes int64
	// Posting is how many receipts were sent whose answer has not come
	// back yet: the api may already count them.
	Posting int64
	Failed  int64 // wakes whose fetch or receipt failed
}

// Fleet is a simulated fleet of phones running a news app: they register
// through the api, are woken by the emulators' deliveries, read the new
// items of each feed in the push and post a wake receipt, as the real app
// does. Start it once; Stop ends it.
type Fleet struct {
	cfg    FleetConfig
	log    *slog.Logger
	now    func() time.Time
	api    *client
	source DeliverySource

	devices []*simDevice
	byToken map[string]*simDevice // read-only after NewFleet
	rng     *rand.Rand            // used by the consumer goroutine only
	wakeSem chan struct{}

	registered, regFailed, deliveries, breaking, unknown, missed, wakes, receipts, refreshes, posting, failed atomic.Int64

	regDone chan struct{}

	life startstop.Base
}

// NewFleet generates the fleet's devices. apiURL is the api's base URL
// (http://host:port); source streams the emulators' deliveries. now may
// be nil for time.Now.
func NewFleet(a service.Archetype, cfg FleetConfig, apiURL string, source DeliverySource) (*Fleet, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	a = a.WithDefaults()
	f := &Fleet{
		cfg: cfg, log: a.Logger, now: a.Clock,
		api:     newClient(apiURL, cfg.RegisterConcurrency+cfg.WakeConcurrency),
		source:  source,
		byToken: make(map[string]*simDevice, cfg.Devices),
		rng:     rand.New(rand.NewPCG(cfg.Seed, 0x666c656574)),
		wakeSem: make(chan struct{}, cfg.WakeConcurrency),
		regDone: make(chan struct{}),
	}
	for range cfg.Devices {
		d := f.newDevice()
		for f.byToken[d.reg.Token] != nil { // astronomically unlikely
			d = f.newDevice()
		}
		f.devices = append(f.devices, d)
		f.byToken[d.reg.Token] = d
	}
	// Drawn apart, so the rest of the fleet is the same for a seed.
	silent := rand.New(rand.NewPCG(cfg.Seed, 0x73696c656e74))
	for _, d := range f.devices {
		d.silent = silent.Float64() < cfg.SilentRate
	}
	return f, nil
}

var (
	locales   = []string{"en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "it-IT", "nl-NL", "pt-BR"}
	timezones = []string{"America/New_York", "Europe/London", "Europe/Berlin", "Europe/Paris", "Europe/Madrid",
		"Europe/Rome", "Europe/Amsterdam", "America/Sao_Paulo"}
	appVersions = []string{"4.2.0", "4.2.1", "4.3.0"}
)

// newDevice draws one device: half Android on FCM, 30 % iOS on APNs
// production, 5 % iOS on the APNs sandbox (debug builds), 15 % iOS on FCM.
func (f *Fleet) newDevice() *simDevice {
	r := f.rng
	reg := registration{
		Locale:     locales[r.IntN(len(locales))],
		Timezone:   timezones[r.IntN(len(timezones))],
		AppVersion: appVersions[r.IntN(len(appVersions))],
	}
	switch p := r.Float64(); {
	case p < 0.50:
		reg.Provider, reg.Platform, reg.Token = "fcm", "android", fcmToken(r)
	case p < 0.80:
		reg.Provider, reg.Platform, reg.Environment, reg.Token = "apns", "ios", "production", apnsToken(r)
	case p < 0.85:
		reg.Provider, reg.Platform, reg.Environment, reg.Token = "apns", "ios", "sandbox", apnsToken(r)
	default:
		reg.Provider, reg.Platform, reg.Token = "fcm", "ios", fcmToken(r)
	}
	feeds := f.cfg.Feeds
	if app := f.drawApp(); app != nil {
		reg.App = app.ID
		if len(app.Feeds) > 0 {
			feeds = app.Feeds
		}
	}
	for _, feed := range feeds {
		if r.Float64() < 0.6 {
			reg.Feeds = append(reg.Feeds, feed)
		}
	}
	if len(reg.Feeds) == 0 {
		reg.Feeds = []string{feeds[r.IntN(len(feeds))]}
	}
	reg.BackgroundSync = backgroundSync{Enabled: r.Float64() >= f.cfg.OptOutRate}
	// A user's min_interval can only make the throttle stricter; on the
	// demo time scale a few users ask for 30 s or a minute between syncs.
	switch p := r.Float64(); {
	case p < 0.1:
		reg.BackgroundSync.MinInterval = "1m"
	case p < 0.3:
		reg.BackgroundSync.MinInterval = "30s"
	}
	return &simDevice{reg: reg, cursors: map[string]int64{}}
}

// drawApp picks a device's app by the apps' shares; nil without apps.
func (f *Fleet) drawApp() *FleetApp {
	if len(f.cfg.Apps) == 0 {
		return nil
	}
	var total float64
	for _, a := range f.cfg.Apps {
		total += a.Share
	}
	p := f.rng.Float64() * total
	for i := range f.cfg.Apps {
		if p -= f.cfg.Apps[i].Share; p < 0 {
			return &f.cfg.Apps[i]
		}
	}
	return &f.cfg.Apps[len(f.cfg.Apps)-1]
}

func apnsToken(r *rand.Rand) string {
	b := make([]byte, 32)
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return hex.EncodeToString(b)
}

const fcmAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// fcmToken draws a token of the shape FCM hands out: an instance id, a
// colon and a long opaque part, 163 characters in all.
func fcmToken(r *rand.Rand) string {
	var b strings.Builder
	for range 22 {
		b.WriteByte(fcmAlphabet[r.IntN(len(fcmAlphabet))])
	}
	b.WriteString(":APA91b")
	for range 134 {
		b.WriteByte(fcmAlphabet[r.IntN(len(fcmAlphabet))])
	}
	return b.String()
}

// Start subscribes to the emulators' deliveries and registers every device
// in the background (RegisterConcurrency at a time). ctx bounds the
// fleet's life as well as Stop does. It follows startstop: a second Start,
// or a Start after Stop, returns startstop.ErrStarted.
func (f *Fleet) Start(ctx context.Context) error {
	return f.life.Start(ctx, func(ctx context.Context) (func(), error) {
		ctx, cancel := context.WithCancel(ctx)
		// Subscribe before the first registration, so no push is missed.
		ch, unsub := f.source.Subscribe(max(4096, 4*f.cfg.Devices))
		var wg sync.WaitGroup
		wg.Go(func() { f.consume(ctx, ch) })
		wg.Go(func() { f.refreshAll(ctx) })
		wg.Go(func() {
			defer close(f.regDone)
			f.registerAll(ctx)
		})
		return func() { cancel(); unsub(); wg.Wait() }, nil
	})
}

// Stop ends registration and every simulated app, and waits for them. It
// is safe to call twice or before Start.
func (f *Fleet) Stop() { f.life.Stop() }

// Stopped is closed once Stop has finished.
func (f *Fleet) Stopped() <-chan struct{} { return f.life.Stopped() }

// Registered is closed once every device's registration has finished,
// accepted or failed.
func (f *Fleet) Registered() <-chan struct{} { return f.regDone }

// Stats returns the fleet's counters.
func (f *Fleet) Stats() FleetStats {
	// posting is read before receipts, and a post moves to receipts before
	// it leaves posting, so Receipts+Posting never misses a receipt the api
	// counted before this call.
	posting := f.posting.Load()
	return FleetStats{Posting: posting,
		Devices: len(f.devices), Registered: f.registered.Load(), RegisterFailed: f.regFailed.Load(),
		Deliveries: f.deliveries.Load(), Breaking: f.breaking.Load(), Unknown: f.unknown.Load(), Missed: f.missed.Load(),
		Wakes: f.wakes.Load(), Receipts: f.receipts.Load(), Refreshes: f.refreshes.Load(), Failed: f.failed.Load(),
	}
}

// Subscribers returns how many registered fleet devices of app (""
// every app) subscribe to feed, and how many of them have background sync
// enabled.
func (f *Fleet) Subscribers(app, feed string) (all, syncing int) {
	for _, d := range f.devices {
		if id, _ := d.creds(); id == 0 || (app != "" && d.reg.App != app) {
			continue
		}
		for _, x := range d.reg.Feeds {
			if x == feed {
				all++
				if d.reg.BackgroundSync.Enabled {
					syncing++
				}
			}
		}
	}
	return all, syncing
}

func (f *Fleet) registerAll(ctx context.Context) {
	sem := make(chan struct{}, f.cfg.RegisterConcurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, d := range f.devices {
		select {
		case <-ctx.Done():
			return
		case sem <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			f.register(ctx, d)
		}()
	}
}

// register registers one device, retrying transient failures a few times.
func (f *Fleet) register(ctx context.Context, d *simDevice) {
	var err error
	for attempt := range 4 {
		if attempt > 0 {
			if !startstop.Sleep(ctx, time.Duration(attempt)*250*time.Millisecond) {
				return
			}
		}
		var out registered
		out, err = f.api.register(ctx, d.reg)
		if err == nil {
			d.mu.Lock()
			d.id, d.secret = out.ID, out.Secret
			d.mu.Unlock()
			f.registered.Add(1)
			return
		}
		if ae, ok := errors.AsType[*APIError](err); ok && ae.Status < 500 && ae.Status != 429 {
			break // the api refused this device; retrying will not help
		}
		if ctx.Err() != nil {
			return
		}
	}
	if n := f.regFailed.Add(1); n <= 5 {
		f.log.WarnContext(ctx, "fleet: device registration failed", "token", redact.Token(d.reg.Token),
			"platform", d.reg.Platform, "provider", d.reg.Provider, "err", err)
	}
}

// consume turns each delivery into an app wake, after a random delay, or
// into nothing for the pushes that do not wake the app.
func (f *Fleet) consume(ctx context.Context, ch <-chan pushemu.Delivery) {
	var wakers sync.WaitGroup
	defer wakers.Wait()
	for {
		var dl pushemu.Delivery
		var ok bool
		select {
		case <-ctx.Done():
			return
		case dl, ok = <-ch:
			if !ok {
				return
			}
		}
		d := f.byToken[dl.Token]
		if d == nil {
			f.unknown.Add(1)
			continue
		}
		f.deliveries.Add(1)
		data := payloadOf(dl)
		if data["type"] != "nudge.sync" {
			continue // not ours (a visible-only push, say): the app has nothing to sync
		}
		if data["reason"] == "breaking" {
			f.breaking.Add(1)
		}
		if f.rng.Float64() < f.cfg.MissRate || d.silent {
			f.missed.Add(1)
			continue
		}
		delay := f.cfg.WakeDelayMin
		if span := f.cfg.WakeDelayMax - f.cfg.WakeDelayMin; span > 0 {
			delay += time.Duration(f.rng.Int64N(int64(span)))
		}
		wakers.Add(1)
		go func() {
			defer wakers.Done()
			if !startstop.Sleep(ctx, delay) {
				return
			}
			select {
			case <-ctx.Done():
				return
			case f.wakeSem <- struct{}{}:
			}
			defer func() { <-f.wakeSem }()
			f.wake(ctx, d, data)
		}()
	}
}

// wake is the app's background handler: read each feed of the push since
// its cursor, then post the receipt.
func (f *Fleet) wake(ctx context.Context, d *simDevice, data map[string]string) {
	f.wakes.Add(1)
	wokeAt := f.now()
	id, secret := d.creds()
	if id == 0 {
		f.failed.Add(1) // pushed before the registration answer arrived
		return
	}
	since := parseSince(data["since"])
	if len(since) == 0 {
		d.mu.Lock()
		for _, feed := range strings.Split(data["feeds"], ",") {
			if feed != "" {
				since[feed] = d.cursors[feed]
			}
		}
		d.mu.Unlock()
	}
	items, cursors, fetchErr := f.read(ctx, d, since)
	f.post(ctx, id, secret, receipt{PushID: data["push_id"], ReceivedAt: wokeAt.UTC().Format(time.RFC3339Nano),
		Outcome: outcomeOf(items, fetchErr), Items: items, Cursors: cursors}, fetchErr)
}

// read is the app's sync read: the items of each feed after its cursor,
// at most a few pages. It returns the items read and the cursor the app
// now has per feed it read.
func (f *Fleet) read(ctx context.Context, d *simDevice, since map[string]int64) (int, map[string]int64, error) {
	const limit, maxPages = 50, 4
	items := 0
	cursors := map[string]int64{}
	var fetchErr error
	for feed, cursor := range since {
		for range maxPages {
			page, err := f.api.items(ctx, feed, cursor, limit)
			if err != nil {
				fetchErr = err
				break
			}
			items += len(page.Items)
			if page.Next > cursor {
				cursor = page.Next
			}
			if len(page.Items) < limit {
				break
			}
		}
		d.mu.Lock()
		d.cursors[feed] = max(d.cursors[feed], cursor)
		cursors[feed] = d.cursors[feed]
		d.mu.Unlock()
	}
	return items, cursors, fetchErr
}

func outcomeOf(items int, fetchErr error) string {
	switch {
	case fetchErr != nil:
		return "failed"
	case items > 0:
		return "synced"
	}
	return "no_data"
}

// post posts a receipt and counts it (a push receipt as a wake receipt).
func (f *Fleet) post(ctx context.Context, id uint64, secret string, r receipt, fetchErr error) {
	f.posting.Add(1)
	err := f.api.postReceipt(ctx, id, secret, r)
	if err == nil {
		if r.Source == "" {
			f.receipts.Add(1)
		} else {
			f.refreshes.Add(1)
		}
	}
	f.posting.Add(-1)
	if err != nil {
		if ctx.Err() == nil {
			if n := f.failed.Add(1); n <= 5 {
				f.log.WarnContext(ctx, "fleet: posting a receipt failed", "device_id", id, "source", r.Source, "err", err)
			}
		}
		return
	}
	if fetchErr != nil && f.failed.Add(1) <= 5 {
		f.log.WarnContext(ctx, "fleet: reading feed items failed", "device_id", id, "err", fetchErr)
	}
}

// refreshAll runs the apps' syncs that no push asked for: every second,
// as many background fetches and foreground opens as the fleet's mean
// intervals give, each on a random registered device.
func (f *Fleet) refreshAll(ctx context.Context) {
	rng := rand.New(rand.NewPCG(f.cfg.Seed, 0x72656672657368))
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	due := map[string]float64{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for source, every := range map[string]time.Duration{"background_fetch": f.cfg.BackgroundFetchEvery, "foreground": f.cfg.ForegroundEvery} {
			if every <= 0 {
				continue
			}
			due[source] += float64(len(f.devices)) * float64(time.Second) / float64(every)
			for ; due[source] >= 1; due[source]-- {
				d := f.devices[rng.IntN(len(f.devices))]
				if source == "background_fetch" && !d.reg.BackgroundSync.Enabled {
					continue // the OS runs no background task for it
				}
				select {
				case <-ctx.Done():
					return
				case f.wakeSem <- struct{}{}:
				}
				wg.Go(func() {
					defer func() { <-f.wakeSem }()
					f.refresh(ctx, d, source)
				})
			}
		}
	}
}

// refresh is a sync the app does on its own (source background_fetch or
// foreground): read every followed feed after its cursor, then post a
// receipt with the cursors.
func (f *Fleet) refresh(ctx context.Context, d *simDevice, source string) {
	id, secret := d.creds()
	if id == 0 {
		return // not registered yet
	}
	since := map[string]int64{}
	d.mu.Lock()
	for _, feed := range d.reg.Feeds {
		since[feed] = d.cursors[feed]
	}
	d.mu.Unlock()
	items, cursors, fetchErr := f.read(ctx, d, since)
	f.post(ctx, id, secret, receipt{Source: source, Outcome: outcomeOf(items, fetchErr), Items: items, Cursors: cursors}, fetchErr)
}

// payloadOf returns the push's custom data: the FCM data map, or the keys
// beside aps in an APNs body (all strings by contract).
func payloadOf(d pushemu.Delivery) map[string]string {
	if d.Provider == pushemu.FCM {
		return d.Data
	}
	var body map[string]any
	if err := json.Unmarshal(d.Body, &body); err != nil {
		return nil
	}
	out := make(map[string]string, len(body))
	for k, v := range body {
		if s, ok := v.(string); ok && k != "aps" {
			out[k] = s
		}
	}
	return out
}

// parseSince parses "headlines:120,recent:88" into feed -> cursor.
func parseSince(s string) map[string]int64 {
	out := map[string]int64{}
	for part := range strings.SplitSeq(s, ",") {
		feed, c, ok := strings.Cut(part, ":")
		if !ok || feed == "" {
			continue
		}
		n, err := strconv.ParseInt(c, 10, 64)
		if err != nil {
			continue
		}
		out[feed] = n
	}
	return out
}
