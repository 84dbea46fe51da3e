// Package delivery is the push worker: it turns push jobs from the queue
// into provider sends and acts on each result.
//
// For a batch of jobs it decodes the throttle's push payloads, looks up each
// device's current token (so a token rotated after planning is honoured),
// composes the silent push, sends the batch through the push sender, and
// then, per result:
//
//	delivered       done record at once, then counted as sent
//	prune token     the device is deleted if it still has that token
//	retry           retried after the provider's Retry-After or the backoff
//	back off device retried after the device's backoff
//	pause provider  every worker stops sending to that provider for a while
//	permanent       dead-lettered and counted as failed
//
// A job whose device is gone is dropped and counted as pruned. A job that
// has used its delivery budget is dead-lettered and counted as failed, so
// every planned push ends in exactly one of sent, pruned or failed.
package delivery

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/fanout"
	"github.com/nudge-dev/nudge/internal/jobs"
	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/nudge-dev/nudge/internal/push"
	"github.com/nudge-dev/nudge/internal/redact"
	"github.com/nudge-dev/nudge/internal/stats"
	"github.com/nudge-dev/nudge/internal/throttle"
)

// Sender sends a batch of pushes; *push.Sender is one.
type Sender interface {
	Send(ctx context.Context, msgs []push.Message) []push.Result
}

// Pruner deletes a device whose token the provider reported dead, unless
// the device has rotated to another token since.
type Pruner interface {
	DeleteIfToken(ctx context.Context, id uint64, token string) (bool, error)
}

// Events reads events and counts push outcomes for them; *fanout.Planner is
// one.
type Events interface {
	Event(ctx context.Context, id string) (fanout.Event, error)
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
}

func (c Config) withDefaults() Config {
	c.MaxDeliveries = cmp.Or(c.MaxDeliveries, 5)
	return c
}

func (c Config) validate() error {
	if c.MaxDeliveries < 1 {
		return errors.New("delivery: MaxDeliveries must be at least 1")
	}
	return nil
}

// Handler is the jobs.Handler of the push queue.
type Handler struct {
	cfg    Config
	rdb    redis.UniversalClient
	sender Sender
	pruner Pruner
	events Events
	stats  *stats.Recorder
	log    *slog.Logger
	now    func() time.Time

	alertsMu sync.Mutex
	alerts   map[string]*push.Alert // event id -> alert (nil: none); events never change

	results *prometheus.CounterVec
	paused  *prometheus.CounterVec
}

// Deps are the collaborators of a Handler.
type Deps struct {
	Redis  redis.UniversalClient
	Sender Sender
	Pruner Pruner
	Events Events
	Stats  *stats.Recorder
	Logger *slog.Logger
	Clock  func() time.Time // default time.Now
	Reg    prometheus.Registerer
}

// New returns a Handler.
func New(cfg Config, d Deps) (*Handler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if d.Redis == nil || d.Sender == nil || d.Pruner == nil || d.Events == nil || d.Stats == nil || d.Logger == nil {
		return nil, errors.New("delivery: Redis, Sender, Pruner, Events, Stats and Logger are required")
	}
	h := &Handler{
		cfg: cfg, rdb: d.Redis, sender: d.Sender, pruner: d.Pruner, events: d.Events,
		stats: d.Stats, log: d.Logger, now: d.Clock, alerts: map[string]*push.Alert{},
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_delivery_results_total",
			Help: "Provider send results by provider, action (delivered, prune_token, retry, backoff_device, pause_provider, permanent) and reason.",
		}, []string{"provider", "action", "reason"}),
		paused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_delivery_provider_pauses_total",
			Help: "Times a provider was paused after a project-level error.",
		}, []string{"provider"}),
	}
	if h.now == nil {
		h.now = time.Now
	}
	if d.Reg != nil {
		d.Reg.MustRegister(h.results, h.paused)
	}
	return h, nil
}

// item is one job on its way through a batch.
type item struct {
	job    *jobs.Job
	push   throttle.Push
	msg    push.Message
	events []string
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
	if err := h.lookup(ctx, o, &items); err != nil {
		return err // every job without an outcome is retried
	}
	pauses, err := h.pauses(ctx)
	if err != nil {
		return err
	}
	var send []*item
	for _, it := range items {
		if until, ok := pauses[it.msg.Provider]; ok {
			o.Release(it.job, until) // not tried: costs no delivery
			continue
		}
		send = append(send, it)
	}
	if len(send) == 0 {
		return nil
	}
	msgs := make([]push.Message, len(send))
	for i, it := range send {
		msgs[i] = it.msg
	}
	results := h.sender.Send(ctx, msgs)

	// The pushes went out: what follows records that, and must happen even
	// when the send used up the handler's deadline.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	// Done records first: from here on a crash must not send these again.
	var done []*jobs.Job
	for i, r := range results {
		if r.Action == push.Delivered {
			done = append(done, send[i].job)
		}
	}
	if err := o.MarkDone(ctx, done...); err != nil {
		h.log.ErrorContext(ctx, "record delivered pushes", "count", len(done), "err", err)
	}
	tally := newTally()
	for i, r := range results {
		h.act(ctx, o, send[i], r, tally)
	}
	h.flush(ctx, tally)
	return nil
}

// recordTimeout bounds the bookkeeping after a send: done records, prunes,
// pauses, progress and stats. Done records and progress are retried with
// backoff within it, so a Redis stall shorter than this loses no count.
const recordTimeout = time.Minute

// lookup loads the devices of the items in one pipeline and composes their
// messages. Items whose device is gone are dropped from the slice.
func (h *Handler) lookup(ctx context.Context, o *jobs.Outcomes, items *[]*item) error {
	pipe := h.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(*items))
	for i, it := range *items {
		cmds[i] = pipe.HMGet(ctx, keys.Device(it.push.Device), "tk", "pv", "pl", "en")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("load devices of push jobs: %w", err)
	}
	tally := newTally()
	kept := (*items)[:0]
	for i, it := range *items {
		v := cmds[i].Val()
		tok, _ := v[0].(string)
		if tok == "" {
			o.Drop(it.job) // unregistered or pruned since planning
			tally.add(it, "", fanout.OutcomePruned)
			continue
		}
		pv, _ := v[1].(string)
		pl, _ := v[2].(string)
		en, _ := v[3].(string)
		alert, err := h.alert(ctx, it.push)
		if err != nil {
			return err
		}
		it.msg = push.Message{
			ID:          PushID(it.push.Lane, h.now(), it.push.CollapseID()),
			Token:       tok,
			Provider:    push.Provider(pv),
			Platform:    push.Platform(pl),
			Environment: push.Environment(en),
			Event:       it.push.Events[len(it.push.Events)-1],
			Reason:      push.Reason(it.push.Reason),
			Feeds:       it.push.Feeds,
			Since:       cursors(it.push.Since),
			Alert:       alert,
			CollapseID:  it.push.CollapseID(),
		}
		kept = append(kept, it)
	}
	*items = kept
	h.flush(ctx, tally)
	return nil
}

// alert returns the visible alert of a breaking push: the alert of the
// newest event it covers that has one.
func (h *Handler) alert(ctx context.Context, p throttle.Push) (*push.Alert, error) {
	if p.Lane != throttle.LaneBreaking {
		return nil, nil
	}
	for _, id := range slices.Backward(p.Events) {
		a, ok := h.cachedAlert(id)
		if !ok {
			ev, err := h.events.Event(ctx, id)
			switch {
			case errors.Is(err, fanout.ErrNotFound):
			case err != nil:
				return nil, fmt.Errorf("load event %s: %w", id, err)
			case ev.Alert != nil && (ev.Alert.Title != "" || ev.Alert.Body != ""):
				a = &push.Alert{Title: ev.Alert.Title, Body: ev.Alert.Body}
			}
			h.cacheAlert(id, a)
		}
		if a != nil {
			return a, nil
		}
	}
	return nil, nil
}

// maxCachedAlerts bounds the alert cache; breaking events are few, and a
// miss costs one HGET.
const maxCachedAlerts = 1024

func (h *Handler) cachedAlert(id string) (*push.Alert, bool) {
	h.alertsMu.Lock()
	defer h.alertsMu.Unlock()
	a, ok := h.alerts[id]
	return a, ok
}

func (h *Handler) cacheAlert(id string, a *push.Alert) {
	h.alertsMu.Lock()
	defer h.alertsMu.Unlock()
	if len(h.alerts) >= maxCachedAlerts {
		clear(h.alerts)
	}
	h.alerts[id] = a
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
		if _, err := h.pruner.DeleteIfToken(ctx, it.push.Device, it.msg.Token); err != nil {
			h.log.ErrorContext(ctx, "prune device", "device_id", it.push.Device, "err", err)
			o.Retry(it.job, 0)
			return
		}
		h.log.InfoContext(ctx, "pruned device", "device_id", it.push.Device, "token", redact.Token(it.msg.Token), "reason", r.Reason)
		o.Drop(it.job)
		t.add(it, stats.Pruned, fanout.OutcomePruned)
	case push.Retry, push.BackoffDevice, push.PauseProvider:
		// The queue retries until the push would be stale (its MaxAge), then
		// dead-letters it and hands it back to the throttle (OnDead).
		if r.Action == push.PauseProvider {
			h.pause(ctx, it.msg.Provider, r.RetryAfter, r.Reason)
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

// pause stops all workers sending to provider for d. The first pause wins
// until it expires, so a burst of quota errors does not keep extending it.
func (h *Handler) pause(ctx context.Context, p push.Provider, d time.Duration, reason string) {
	d = max(d, time.Minute) // a pause key must expire
	ok, err := h.rdb.SetNX(ctx, keys.ProviderPause(string(p)), reason, d).Result()
	if err != nil {
		h.log.ErrorContext(ctx, "pause provider", "provider", p, "err", err)
		return
	}
	if ok {
		h.paused.WithLabelValues(string(p)).Inc()
		h.log.WarnContext(ctx, "provider paused", "provider", p, "for", d, "reason", reason)
	}
}

// pauses returns the remaining pause of each paused provider.
func (h *Handler) pauses(ctx context.Context) (map[push.Provider]time.Duration, error) {
	providers := []push.Provider{push.FCM, push.APNs}
	pipe := h.rdb.Pipeline()
	cmds := make([]*redis.DurationCmd, len(providers))
	for i, p := range providers {
		cmds[i] = pipe.PTTL(ctx, keys.ProviderPause(string(p)))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read provider pauses: %w", err)
	}
	out := map[push.Provider]time.Duration{}
	for i, c := range cmds {
		if d := c.Val(); d > 0 {
			out[providers[i]] = d
		}
	}
	return out, nil
}

// tally groups outcome counts of one batch, so stats and progress are
// written in a few pipelined calls rather than one per push.
type tally struct {
	stats  map[[3]string]int // platform, lane, outcome -> n
	events map[fanout.Outcome][]string
}

func newTally() *tally {
	return &tally{stats: map[[3]string]int{}, events: map[fanout.Outcome][]string{}}
}

func (t *tally) add(it *item, statOutcome string, o fanout.Outcome) {
	if statOutcome != "" {
		t.stats[[3]string{string(it.msg.Platform), it.push.Lane, statOutcome}]++
	}
	t.events[o] = append(t.events[o], it.events...)
}

func (h *Handler) flush(ctx context.Context, t *tally) {
	counts := make([]stats.Count, 0, len(t.stats))
	for k, n := range t.stats {
		counts = append(counts, stats.Count{Platform: k[0], Lane: k[1], Outcome: k[2], N: n})
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

// PushID composes the id of a push as the app sees it in data push_id and
// echoes in its receipt: lane initial, send time in unix ms (base 36), and
// the collapse id. It lets a receipt be attributed to a lane and timed
// without storing anything per push.
func PushID(lane string, sent time.Time, collapse string) string {
	l := "f"
	if lane == throttle.LaneBreaking {
		l = "b"
	}
	return l + strconv.FormatInt(sent.UnixMilli(), 36) + "." + collapse
}

// ParsePushID returns the lane and the send time of a push id.
func ParsePushID(id string) (lane string, sent time.Time, err error) {
	head, _, ok := strings.Cut(id, ".")
	if !ok || len(head) < 2 || len(id) > 128 {
		return "", time.Time{}, fmt.Errorf("push id %q is not one nudge sent", id)
	}
	switch head[0] {
	case 'f':
		lane = throttle.LaneFeed
	case 'b':
		lane = throttle.LaneBreaking
	default:
		return "", time.Time{}, fmt.Errorf("push id %q has an unknown lane", id)
	}
	ms, err := strconv.ParseInt(head[1:], 36, 64)
	if err != nil || ms <= 0 {
		return "", time.Time{}, fmt.Errorf("push id %q has no send time", id)
	}
	return lane, time.UnixMilli(ms), nil
}
