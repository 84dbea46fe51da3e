// Package delivery is the push worker: it turns push jobs from the queue
// into provider sends and acts on each result.
//
// For a batch of jobs it decodes the throttle's push payloads, asks the
// throttle's Admit, in one script call per partition, for each device at
// send time, the unresponsive back-off and the budget at the phone,
// composes the silent push, sends the batch through the push sender, and
// then, per result:
//
//	delivered       done record as the answer arrives, then counted as sent
//	prune token     the device is deleted if it still has that token and
//	                was not updated after the provider's timestamp; its
//	                throttle state goes with it
//	retry           retried after the provider's Retry-After or the backoff
//	back off device retried after the device's backoff
//	pause provider  every worker stops sending to that pause scope for a
//	                while: an APNs environment and credential, or an FCM
//	                project (push.Sender.PauseScope), of the device's app;
//	                other apps' credentials keep sending
//	permanent       dead-lettered and counted as failed
//
// # Send-time checks
//
// Opt-out and deletion win over the plan: a job whose device is gone or
// whose user turned background sync off is dropped and counted as
// superseded. A job carries no token: the token is read at send time, so
// a device that re-registered with a new token gets the push at its new
// token; if the provider calls the old one dead after the device moved
// on, the device is kept and the push counts as superseded.
//
// # Outcomes
//
// Every planned push ends in exactly one of sent, pruned, failed,
// superseded or unresponsive (fanout.Outcome), recorded in its events'
// progress. A silent push whose device is unresponsive
// (devices.Unresponsive) and not due for a probe is dropped and counted
// "unresponsive"; alert-lane pushes are visible, so they are neither
// counted nor held back. A job that has used its delivery budget is
// dead-lettered and counted as failed.
//
// # Crash window
//
// Done records are written as provider answers arrive (APNs per push, FCM
// per SendEach call), grouped only while a previous record is in flight,
// not once per batch. A crash therefore re-sends only the pushes whose
// answer was not yet recorded.
package delivery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/jobs"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/push"
	"github.com/nudge-dev/nudge/internal/receipts"
	"github.com/nudge-dev/nudge/internal/redact"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/nudge-dev/nudge/internal/stats"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// Sender sends a batch of pushes; *push.Sender is one.
type Sender interface {
	// SendEach sends msgs and calls each with every message's result as it
	// arrives (concurrently); it returns all results in order.
	SendEach(ctx context.Context, msgs []push.Message, each func(i int, r push.Result)) []push.Result
	// PauseScope names the pause a PauseProvider answer to m sets.
	PauseScope(m *push.Message) string
}

// Devices is the device registry as the push worker sees it;
// *devices.Registry is one. The devices are read at send time by the
// budget at the phone's Admit, in the same script call.
type Devices interface {
	// DeleteIfTokenBefore deletes a device whose token the provider
	// reported dead, unless the device has rotated to another token since
	// or, when at is not zero, was updated at or after at (the provider's
	// "unregistered at").
	DeleteIfTokenBefore(ctx context.Context, id uint64, token string, at time.Time) (bool, error)
}

// Budget is the device budget at the phone and the throttle state of
// pruned devices; *throttle.Throttle is one.
type Budget interface {
	// Admit reads each attempt's device at send time and says whether it
	// may be sent now (its send time reserved, a silent push counted at its
	// device), is held back (unresponsive device), is gone, or must wait.
	Admit(ctx context.Context, a []throttle.Attempt, opt throttle.AdmitOptions) ([]throttle.Admission, error)
	// Settle records what became of admitted attempts.
	Settle(ctx context.Context, a []throttle.Attempt, s []throttle.Settlement) error
	// Forget drops a device's throttle state.
	Forget(ctx context.Context, id uint64) error
}

// Events counts push outcomes for events; *fanout.Planner is one.
type Events interface {
	Record(ctx context.Context, eventIDs []string, o fanout.Outcome) error
}

// Config configures a Handler. Zero fields take the defaults.
//
// The push TTL, the device backoff and the provider pause are the push
// sender's settings: its results carry the durations to wait.
type Config struct {
	// MaxDeliveries must match the queue worker's delivery budget: a job on
	// its last delivery that fails again is dead-lettered here, so it is
	// counted as failed. Default 5.
	MaxDeliveries int
	// Unresponsive is the back-off of devices that stopped answering
	// (NUDGE_UNRESPONSIVE_*); zero fields take devices' defaults.
	Unresponsive devices.Unresponsive
}

func (c Config) withDefaults() Config {
	c.MaxDeliveries = cmp.Or(c.MaxDeliveries, 5)
	c.Unresponsive = c.Unresponsive.WithDefaults()
	return c
}

func (c Config) validate() error {
	if c.MaxDeliveries < 1 {
		return errors.New("delivery: MaxDeliveries must be at least 1")
	}
	return c.Unresponsive.Validate()
}

// Handler is the jobs.Handler of the push queue.
type Handler struct {
	cfg     Config
	rdb     redis.UniversalClient
	sender  Sender
	devices Devices
	budget  Budget
	events  Events
	stats   *stats.Recorder
	log     *slog.Logger
	now     func() time.Time
	// receipts signs push ids so that the api can verify receipts.
	receipts *receipts.Signer

	scopesMu sync.Mutex
	scopes   []string // pause scopes seen so far: read with the devices

	results *prometheus.CounterVec
	paused  *prometheus.CounterVec
	held    prometheus.Counter
}

// Deps are the collaborators of a Handler.
type Deps struct {
	Redis   redis.UniversalClient
	Sender  Sender
	Devices Devices
	Events  Events
	// Throttle holds the budget at the phone and forgets the throttle
	// state of pruned devices.
	Throttle Budget
	Stats    *stats.Recorder
}

// New returns a Handler that reads a's clock, logs to a's logger and
// registers its metrics on a's registerer.
func New(a service.Archetype, cfg Config, d Deps) (*Handler, error) {
	a = a.WithDefaults()
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if d.Redis == nil || d.Sender == nil || d.Devices == nil || d.Events == nil || d.Throttle == nil || d.Stats == nil {
		return nil, errors.New("delivery: Redis, Sender, Devices, Events, Throttle and Stats are required")
	}
	h := &Handler{
		cfg: cfg, rdb: d.Redis, sender: d.Sender, devices: d.Devices, budget: d.Throttle, events: d.Events,
		stats: d.Stats, log: a.Logger, now: a.Clock, receipts: receipts.NewSigner(d.Redis),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_delivery_results_total",
			Help: "Provider send results by provider, action (delivered, prune_token, retry, backoff_device, pause_provider, permanent) and reason.",
		}, []string{"provider", "action", "reason"}),
		paused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_delivery_provider_pauses_total",
			Help: "Times a provider pause scope (APNs environment and credential, FCM project) was paused after a project-level error.",
		}, []string{"provider"}),
	}
	h.held = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nudge_delivery_phone_budget_held_total",
		Help: "Pushes sent back to the retry set because they would have reached the phone inside the device's gap or over its K per W.",
	})
	if err := a.Register(h.results, h.paused, h.held); err != nil {
		return nil, fmt.Errorf("delivery: %w", err)
	}
	return h, nil
}

// item is one job on its way through a batch.
type item struct {
	job    *jobs.Job
	push   throttle.Push
	msg    push.Message
	scope  string        // pause scope of msg
	wait   time.Duration // budget at the phone: wait before sending
	events []string
	// admitted is when Admit was called for the attempt being sent: its
	// reservation lies at least reserveAhead past it.
	admitted time.Time
}

// Handle sends one batch of push jobs. It implements jobs.Handler.
func (h *Handler) Handle(ctx context.Context, o *jobs.Outcomes, batch []*jobs.Job) error {
	items := make([]*item, 0, len(batch))
	for _, j := range batch {
		p, err := throttle.DecodePush(j.Payload)
		if err != nil {
			h.log.ErrorContext(ctx, "dead-letter undecodable push job", "job", j.ID, "err", err)
			o.Dead(j, "undecodable payload: "+err.Error())
			continue
		}
		items = append(items, &item{job: j, push: p, events: p.Events})
	}
	// The budget at the phone: a push that would land inside the device's
	// gap or over K per W of pushes that may already have reached it waits,
	// briefly in here (the usual few milliseconds of worker jitter), else
	// in the retry set.
	now, soon, err := h.admit(ctx, o, items, maxInlineWait)
	if err != nil {
		return err
	}
	h.deliver(ctx, o, now)
	if len(soon) == 0 {
		return nil
	}
	var wait time.Duration
	for _, it := range soon {
		wait = max(wait, it.wait)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		for _, it := range soon {
			o.Retry(it.job, it.wait)
		}
		return nil
	case <-t.C:
	}
	later, _, err := h.admit(ctx, o, soon, 0)
	if err != nil {
		return err
	}
	h.deliver(ctx, o, later)
	return nil
}

// maxInlineWait is the longest a push held back by the budget at the phone
// waits inside the handler rather than in the retry set.
const maxInlineWait = 2 * time.Second

// reserveAhead is how far past the Redis clock's now Admit reserves a
// push's time at the phone. A push answered within it needs no settling
// as delivered (a round trip per partition saved on nearly every batch);
// the next push to the device may wait up to this much longer than the
// device's gap requires.
const reserveAhead = 2 * time.Second

// admit checks items just before sending (throttle.Admit, one script call
// per partition): the device at send time, the unresponsive back-off and
// the budget at the phone, while the pauses of the scopes seen so far are
// read. An item whose device is gone or opted out since planning is
// dropped as superseded (the user's latest word wins over the plan); a
// silent push to an unresponsive device not due for a probe is dropped
// and counted "unresponsive" (alerts are visible: never held); a push that
// must wait up to inline is returned in soon with its wait, a longer wait
// goes to the retry set. Admitted items are composed, and those not
// paused (unpaused) are returned in now.
func (h *Handler) admit(ctx context.Context, o *jobs.Outcomes, items []*item, inline time.Duration) (now, soon []*item, err error) {
	if len(items) == 0 {
		return nil, nil, nil
	}
	known := h.knownScopes()
	var pauses map[string]time.Duration
	var perr error
	read := make(chan struct{})
	go func() {
		defer close(read)
		pauses, perr = h.pauses(ctx, known)
	}()
	attempts := make([]throttle.Attempt, len(items))
	for i, it := range items {
		attempts[i] = throttle.Attempt{Device: it.push.Device, Collapse: it.push.CollapseID(), Alert: it.push.Lane == throttle.LaneAlert}
	}
	start := time.Now()
	adm, err := h.budget.Admit(ctx, attempts, throttle.AdmitOptions{Now: h.now(), Unresponsive: h.cfg.Unresponsive, Ahead: reserveAhead})
	<-read
	if err != nil {
		return nil, nil, err // every job without an outcome is retried
	}
	if perr != nil {
		return nil, nil, perr
	}
	tally := newTally()
	defer h.flush(ctx, tally)
	var admitted []*item
	for i, it := range items {
		switch a := adm[i]; {
		case a.Gone:
			o.Drop(it.job)
			tally.add(it, "", fanout.OutcomeSuperseded)
		case a.Held:
			it.msg = push.Message{App: a.Target.App, Platform: push.Platform(a.Target.Platform)} // for its stats
			o.Drop(it.job)
			tally.add(it, stats.Unresponsive, fanout.OutcomeUnresponsive)
		case a.Wait > inline:
			h.held.Inc()
			o.Retry(it.job, a.Wait)
		case a.Wait > 0:
			it.wait = a.Wait
			soon = append(soon, it)
		default:
			id, err := h.receipts.Sign(ctx, it.push.Device, PushID(it.push.Lane, h.now(), it.push.CollapseID()))
			if err != nil {
				return nil, nil, err
			}
			it.msg = compose(it, a.Target, id)
			it.scope = h.sender.PauseScope(&it.msg)
			it.admitted = start
			admitted = append(admitted, it)
		}
	}
	now, err = h.unpaused(ctx, o, known, pauses, admitted)
	return now, soon, err
}

// unpaused returns the admitted items whose pause scope is not paused;
// pauses holds those of the known scopes, and a scope met for the first
// time is read now (one round trip, once). The others are released, not
// tried (costing no delivery), and so are their reservations at the
// phone.
func (h *Handler) unpaused(ctx context.Context, o *jobs.Outcomes, known []string, pauses map[string]time.Duration, admitted []*item) ([]*item, error) {
	var fresh []string
	for _, it := range admitted {
		if !slices.Contains(known, it.scope) && !slices.Contains(fresh, it.scope) {
			fresh = append(fresh, it.scope)
		}
	}
	if len(fresh) > 0 {
		more, err := h.pauses(ctx, fresh)
		if err != nil {
			return nil, err
		}
		maps.Copy(pauses, more)
		h.learnScopes(fresh)
	}
	var send []*item
	var released []throttle.Attempt
	var refused []throttle.Settlement
	for _, it := range admitted {
		if until, ok := pauses[it.scope]; ok {
			o.Release(it.job, until)
			released = append(released, throttle.Attempt{Device: it.push.Device, Collapse: it.msg.CollapseID})
			refused = append(refused, throttle.Refused)
			continue
		}
		send = append(send, it)
	}
	if len(released) > 0 {
		if err := h.budget.Settle(ctx, released, refused); err != nil {
			h.log.WarnContext(ctx, "release pushes to paused providers at the phone", "count", len(released), "err", err)
		}
	}
	return send, nil
}

// compose builds the message of an item to its device's target.
func compose(it *item, tg devices.Target, id string) push.Message {
	return push.Message{
		ID:          id,
		App:         tg.App,
		Token:       tg.Token,
		Provider:    push.Provider(tg.Provider),
		Platform:    push.Platform(tg.Platform),
		Environment: push.Environment(tg.Environment),
		Event:       it.push.Events[len(it.push.Events)-1],
		Reason:      push.Reason(it.push.Reason),
		Feeds:       it.push.Feeds,
		Since:       cursors(it.push.Since),
		Until:       cursors(it.push.Until),
		Alert:       alertOf(it.push),
		CollapseID:  it.push.CollapseID(),
	}
}

// deliver sends admitted items, records each answer as it arrives, settles
// their reservations at the phone and acts on each result.
func (h *Handler) deliver(ctx context.Context, o *jobs.Outcomes, send []*item) {
	if len(send) == 0 {
		return
	}
	msgs := make([]push.Message, len(send))
	for i, it := range send {
		msgs[i] = it.msg
	}
	results := h.sendRecording(ctx, o, send, msgs)

	// The pushes went out: what follows records that, and must happen even
	// when the send used up the handler's deadline.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	var attempts []throttle.Attempt
	var settle []throttle.Settlement
	for i, r := range results {
		var s throttle.Settlement
		switch {
		case r.Action == push.Delivered:
			if time.Since(send[i].admitted) <= reserveAhead {
				continue // answered before its reservation: nothing to move
			}
			s = throttle.Delivered
		case r.Status != 0 || r.Action == push.Permanent:
			s = throttle.Refused // answered or refused before sending: not at the phone
		default:
			continue // no answer: it may have arrived, the reservation stays
		}
		attempts = append(attempts, throttle.Attempt{Device: send[i].push.Device, Collapse: send[i].msg.CollapseID})
		settle = append(settle, s)
	}
	// The settlement goes out alongside the rest of the bookkeeping rather
	// than ahead of it: it touches only the phone log, which a prune's
	// Forget deletes whichever runs first. Handle returns after both.
	var settled sync.WaitGroup
	if len(attempts) > 0 {
		settled.Go(func() {
			if err := h.budget.Settle(ctx, attempts, settle); err != nil {
				h.log.WarnContext(ctx, "settle pushes at the phone", "count", len(attempts), "err", err)
			}
		})
	}
	tally := newTally()
	for i, r := range results {
		h.act(ctx, o, send[i], r, tally)
	}
	h.flush(ctx, tally)
	settled.Wait()
}

// sendRecording sends msgs and writes the done record of each delivered
// push as its answer arrives. One goroutine writes the records; answers
// that arrive while a write is in flight go into the next write, so a
// record waits at most one round trip and a busy batch costs few.
func (h *Handler) sendRecording(ctx context.Context, o *jobs.Outcomes, send []*item, msgs []push.Message) []push.Result {
	delivered := make(chan *jobs.Job, len(send))
	var wg sync.WaitGroup
	wg.Go(func() {
		for j := range delivered {
			group := []*jobs.Job{j}
		more:
			for {
				select {
				case j, ok := <-delivered:
					if !ok {
						break more
					}
					group = append(group, j)
				default:
					break more
				}
			}
			// A record must be written even when the send used up the
			// handler's deadline: the push went out.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
			if err := o.MarkDone(rctx, group...); err != nil {
				h.log.ErrorContext(rctx, "record delivered pushes", "count", len(group), "err", err)
			}
			cancel()
		}
	})
	results := h.sender.SendEach(ctx, msgs, func(i int, r push.Result) {
		if r.Action == push.Delivered {
			delivered <- send[i].job // buffered for every message: never blocks
		}
	})
	close(delivered)
	wg.Wait()
	return results
}

// recordTimeout bounds the bookkeeping after a send: done records, prunes,
// pauses, progress and stats. Done records and progress are retried with
// backoff within it, so a Redis stall shorter than this loses no count.
const recordTimeout = time.Minute

// maxKnownScopes bounds the pause scopes read with every batch; a process
// sends to a few per app (an FCM project, an APNs environment and
// credential), which apps sharing credentials share.
const maxKnownScopes = 256

func (h *Handler) knownScopes() []string {
	h.scopesMu.Lock()
	defer h.scopesMu.Unlock()
	return h.scopes // appended to only under the lock, never modified in place
}

func (h *Handler) learnScopes(scopes []string) {
	h.scopesMu.Lock()
	defer h.scopesMu.Unlock()
	if len(h.scopes)+len(scopes) > maxKnownScopes {
		h.scopes = nil
	}
	for _, s := range scopes {
		if !slices.Contains(h.scopes, s) {
			h.scopes = append(slices.Clip(h.scopes), s)
		}
	}
}

// alertOf returns the visible alert of an alert-lane push, which the
// push job carries. Only the alert lane is visible: a device the
// throttle's alert guard held back gets the same event on the breaking
// lane, silent.
func alertOf(p throttle.Push) *push.Alert {
	if p.Lane != throttle.LaneAlert || p.Alert == nil || (p.Alert.Title == "" && p.Alert.Body == "") {
		return nil
	}
	return &push.Alert{Title: p.Alert.Title, Body: p.Alert.Body}
}

func cursors(since map[string]int64) []push.Cursor {
	out := make([]push.Cursor, 0, len(since))
	for f, c := range since {
		out = append(out, push.Cursor{Feed: f, Seq: uint64(max(c, 0))})
	}
	slices.SortFunc(out, func(a, b push.Cursor) int { return strings.Compare(a.Feed, b.Feed) })
	return out
}

// act applies one send result to its job.
func (h *Handler) act(ctx context.Context, o *jobs.Outcomes, it *item, r push.Result, t *tally) {
	h.results.WithLabelValues(string(it.msg.Provider), r.Action.String(), reasonLabel(r.Reason)).Inc()
	switch r.Action {
	case push.Delivered:
		t.add(it, stats.Sent, fanout.OutcomeSent)
	case push.PruneToken:
		deleted, err := h.devices.DeleteIfTokenBefore(ctx, it.push.Device, it.msg.Token, r.UnregisteredAt)
		if err != nil {
			h.log.ErrorContext(ctx, "prune device", "device_id", it.push.Device, "err", err)
			o.Retry(it.job, 0)
			return
		}
		o.Drop(it.job)
		if !deleted {
			// The device moved to another token, or set this one again
			// after the provider's timestamp: it stays, and this push is
			// superseded by the device's newer registration.
			h.log.InfoContext(ctx, "kept device re-registered after its token was reported dead", "device_id", it.push.Device,
				"token", redact.Token(it.msg.Token), "reason", r.Reason, "unregistered_at", r.UnregisteredAt)
			t.add(it, "", fanout.OutcomeSuperseded)
			return
		}
		if err := h.budget.Forget(ctx, it.push.Device); err != nil {
			// The throttle scripts also drop the state of a device without
			// a hash when they next meet it.
			h.log.WarnContext(ctx, "forget throttle state of pruned device", "device_id", it.push.Device, "err", err)
		}
		h.log.InfoContext(ctx, "pruned device", "device_id", it.push.Device, "token", redact.Token(it.msg.Token), "reason", r.Reason)
		t.add(it, stats.Pruned, fanout.OutcomePruned)
	case push.Retry, push.BackoffDevice, push.PauseProvider:
		// The queue retries until the push would be stale (its MaxAge), then
		// dead-letters it and hands it back to the throttle (OnDead).
		if r.Action == push.PauseProvider {
			h.pause(ctx, it.msg.Provider, it.scope, r.RetryAfter, r.Reason)
		}
		o.Retry(it.job, r.RetryAfter) // 0: the worker's jittered backoff
	default: // Permanent, and anything unknown
		h.log.WarnContext(ctx, "push failed for good", "device_id", it.push.Device, "provider", it.msg.Provider, "reason", r.Reason, "err", r.Err)
		o.Dead(it.job, cmp.Or(r.Reason, "permanent failure"))
		t.add(it, stats.Failed, fanout.OutcomeFailed)
	}
}

// reasonLabel bounds the reason label to short provider codes.
func reasonLabel(r string) string {
	if len(r) > 40 {
		return "other"
	}
	return r
}

// pause stops all workers sending to a pause scope for d. The first pause
// wins until it expires, so a burst of quota errors does not keep
// extending it.
func (h *Handler) pause(ctx context.Context, p push.Provider, scope string, d time.Duration, reason string) {
	d = max(d, time.Minute) // a pause key must expire
	ok, err := h.rdb.SetNX(ctx, keys.ProviderPause(scope), reason, d).Result()
	if err != nil {
		h.log.ErrorContext(ctx, "pause provider", "provider", p, "scope", scope, "err", err)
		return
	}
	if ok {
		h.paused.WithLabelValues(string(p)).Inc()
		h.log.WarnContext(ctx, "provider paused", "provider", p, "scope", scope, "for", d, "reason", reason)
	}
}

// pauses returns the remaining pause of each paused scope among scopes.
func (h *Handler) pauses(ctx context.Context, scopes []string) (map[string]time.Duration, error) {
	if len(scopes) == 0 {
		return map[string]time.Duration{}, nil
	}
	pipe := h.rdb.Pipeline()
	cmds := make([]*redis.DurationCmd, len(scopes))
	for i, s := range scopes {
		cmds[i] = pipe.PTTL(ctx, keys.ProviderPause(s))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read provider pauses: %w", err)
	}
	out := map[string]time.Duration{}
	for i, c := range cmds {
		if d := c.Val(); d > 0 {
			out[scopes[i]] = d
		}
	}
	return out, nil
}

// tally groups outcome counts of one batch, so stats and progress are
// written in a few pipelined calls rather than one per push.
type tally struct {
	stats  map[[4]string]int // app, platform, lane, outcome -> n
	events map[fanout.Outcome][]string
}

func newTally() *tally {
	return &tally{stats: map[[4]string]int{}, events: map[fanout.Outcome][]string{}}
}

func (t *tally) add(it *item, statOutcome string, o fanout.Outcome) {
	if statOutcome != "" {
		t.stats[[4]string{it.msg.App, string(it.msg.Platform), it.push.Lane, statOutcome}]++
	}
	t.events[o] = append(t.events[o], it.events...)
}

func (h *Handler) flush(ctx context.Context, t *tally) {
	counts := make([]stats.Count, 0, len(t.stats))
	for k, n := range t.stats {
		counts = append(counts, stats.Count{App: k[0], Platform: k[1], Lane: k[2], Outcome: k[3], N: n})
	}
	if err := h.stats.Pushes(ctx, counts...); err != nil {
		h.log.WarnContext(ctx, "record push stats", "err", err)
	}
	for o, ids := range t.events {
		if err := jobs.Persist(ctx, func() error { return h.events.Record(ctx, ids, o) }); err != nil {
			h.log.WarnContext(ctx, "record event progress", "outcome", o, "err", err)
		}
	}
}

// PushID composes the id of a push as the app sees it in data push_id;
// the format belongs to receipts (receipts.PushID), which verifies it.
func PushID(lane string, sent time.Time, collapse string) string {
	return receipts.PushID(lane, sent, collapse)
}

// ParsePushID returns the lane and the send time of a push id
// (receipts.ParsePushID).
func ParsePushID(id string) (lane string, sent time.Time, err error) {
	return receipts.ParsePushID(id)
}
