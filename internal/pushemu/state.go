package pushemu

import (
	"context"
	"crypto/rsa"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Delivery is one push the emulator accepted.
type Delivery struct {
	Seq         uint64    // 1-based order of acceptance across both providers
	Provider    Provider  // FCM or APNs
	Environment string    // APNs: Production or Sandbox; FCM: ""
	Token       string    // device token the push was addressed to
	ID          string    // apns-id, or the FCM message name
	At          time.Time // emulator clock at acceptance
	// APNs headers (for FCM: the apns headers of an iOS message).
	PushType   string
	Priority   string // APNs: apns-priority; FCM: android.priority
	CollapseID string // apns-collapse-id or android.collapse_key
	Expiration string // apns-expiration (unix seconds)
	Topic      string
	TTL        string // FCM android.ttl, e.g. "3600s"
	// Data holds the FCM data map, or the string-valued custom keys of an
	// APNs payload (keys outside aps).
	Data map[string]string
	// Aps is the decoded aps dictionary (APNs, or FCM apns.payload.aps).
	Aps map[string]any
	// Alert reports a visible notification (FCM notification or aps.alert).
	Alert bool
	// JWT is the APNs provider token used, "" with certificate auth or FCM.
	JWT string
	// Key is the fingerprint of the APNs key that signed JWT (APNsKey).
	Key string
	// Project is the FCM project the push was sent to.
	Project string
	// Body is the raw request body.
	Body []byte
}

// Stats are the emulator's counters.
type Stats struct {
	Delivered    int            `json:"delivered"`     // accepted pushes
	Rejected     int            `json:"rejected"`      // pushes answered with an error
	ByProvider   map[string]int `json:"by_provider"`   // accepted per provider
	DistinctJWTs int            `json:"distinct_jwts"` // distinct valid APNs provider JWTs seen
	Dropped      int            `json:"dropped"`       // deliveries a full subscriber channel missed
}

type waiter struct {
	ok func() bool
	ch chan struct{}
}

type recorder struct {
	mu       sync.Mutex
	keep     int
	seq      uint64
	rejected int
	byProv   map[Provider]int
	byToken  map[string][]Delivery
	counts   map[string]int
	subs     map[int]chan Delivery
	nextSub  int
	dropped  int
	waiters  []*waiter
	jwts     map[string]struct{}
	rejects  map[string][]Rejection
}

// Rejection is one push the emulator answered with an injected fault.
type Rejection struct {
	Provider    Provider
	Environment string // APNs environment; FCM: ""
	Token       string
	At          time.Time // emulator clock when the fault was applied
	Status      int
	Reason      string
	RetryAfter  time.Duration
}

func newRecorder(keep int) *recorder {
	return &recorder{
		keep:    keep,
		byProv:  make(map[Provider]int),
		byToken: make(map[string][]Delivery),
		counts:  make(map[string]int),
		subs:    make(map[int]chan Delivery),
		jwts:    make(map[string]struct{}),
		rejects: make(map[string][]Rejection),
	}
}

func (r *recorder) add(d Delivery) Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seq++
	d.Seq = r.seq
	r.byProv[d.Provider]++
	r.counts[d.Token]++
	if r.keep > 0 {
		l := r.byToken[d.Token]
		if len(l) >= r.keep {
			l = slices.Delete(l, 0, 1)
		}
		r.byToken[d.Token] = append(l, d)
	}
	for _, ch := range r.subs {
		select {
		case ch <- d:
		default:
			r.dropped++
		}
	}
	r.wake()
	return d
}

func (r *recorder) reject() {
	r.mu.Lock()
	r.rejected++
	r.mu.Unlock()
}

// rejected records a fault answer to a token, keeping the last r.keep
// per token.
func (r *recorder) faulted(x Rejection) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.keep > 0 {
		l := r.rejects[x.Token]
		if len(l) >= r.keep {
			l = slices.Delete(l, 0, 1)
		}
		r.rejects[x.Token] = append(l, x)
	}
	r.wake()
}

func (r *recorder) sawJWT(jwt string) {
	r.mu.Lock()
	r.jwts[jwt] = struct{}{}
	r.mu.Unlock()
}

// wake releases satisfied waiters; r.mu is held.
func (r *recorder) wake() {
	if len(r.waiters) == 0 {
		return
	}
	kept := r.waiters[:0]
	for _, w := range r.waiters {
		if w.ok() {
			close(w.ch)
		} else {
			kept = append(kept, w)
		}
	}
	clear(r.waiters[len(kept):])
	r.waiters = kept
}

// wait blocks until ok (evaluated under the recorder lock) holds.
func (r *recorder) wait(ctx context.Context, ok func() bool) error {
	r.mu.Lock()
	if ok() {
		r.mu.Unlock()
		return nil
	}
	w := &waiter{ok: ok, ch: make(chan struct{})}
	r.waiters = append(r.waiters, w)
	r.mu.Unlock()
	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		r.mu.Lock()
		r.waiters = slices.DeleteFunc(r.waiters, func(x *waiter) bool { return x == w })
		r.mu.Unlock()
		return fmt.Errorf("wait for deliveries: %w", ctx.Err())
	}
}

func (r *recorder) closeSubscribers() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, ch := range r.subs {
		close(ch)
		delete(r.subs, id)
	}
}

// Deliveries returns the recorded deliveries to token, oldest first (at
// most Config.KeepPerToken of them).
func (e *Emulator) Deliveries(token string) []Delivery {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	return slices.Clone(e.rec.byToken[token])
}

// Rejections returns the injected fault answers to token, oldest first (at
// most Config.KeepPerToken of them). With Deliveries it is the per-device
// log a referee reads: when each attempt was turned away, and when one was
// accepted.
func (e *Emulator) Rejections(token string) []Rejection {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	return slices.Clone(e.rec.rejects[token])
}

// Count returns how many pushes the emulator accepted in total.
func (e *Emulator) Count() int {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	return int(e.rec.seq)
}

// CountToken returns how many pushes to token the emulator accepted.
func (e *Emulator) CountToken(token string) int {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	return e.rec.counts[token]
}

// Stats returns a snapshot of the emulator's counters.
func (e *Emulator) Stats() Stats {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	s := Stats{
		Delivered:    int(e.rec.seq),
		Rejected:     e.rec.rejected,
		ByProvider:   make(map[string]int, len(e.rec.byProv)),
		DistinctJWTs: len(e.rec.jwts),
		Dropped:      e.rec.dropped,
	}
	for p, n := range e.rec.byProv {
		s.ByProvider[string(p)] = n
	}
	return s
}

// DistinctJWTs returns how many distinct valid APNs provider tokens the
// emulator has seen.
func (e *Emulator) DistinctJWTs() int {
	e.rec.mu.Lock()
	defer e.rec.mu.Unlock()
	return len(e.rec.jwts)
}

// WaitCount blocks until the emulator has accepted at least n pushes in
// total, or ctx ends.
func (e *Emulator) WaitCount(ctx context.Context, n int) error {
	return e.rec.wait(ctx, func() bool { return int(e.rec.seq) >= n })
}

// WaitToken blocks until at least n pushes to token were accepted, then
// returns the recorded deliveries to it.
func (e *Emulator) WaitToken(ctx context.Context, token string, n int) ([]Delivery, error) {
	if err := e.rec.wait(ctx, func() bool { return e.rec.counts[token] >= n }); err != nil {
		return nil, err
	}
	return e.Deliveries(token), nil
}

// Subscribe streams every delivery accepted from now on into a channel with
// buffer buf. A subscriber that falls behind misses deliveries (counted in
// Stats.Dropped) rather than stalling the emulator. The returned cancel
// func unsubscribes and closes the channel; Stop closes it too.
func (e *Emulator) Subscribe(buf int) (<-chan Delivery, func()) {
	ch := make(chan Delivery, buf)
	e.rec.mu.Lock()
	id := e.rec.nextSub
	e.rec.nextSub++
	e.rec.subs[id] = ch
	e.rec.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			e.rec.mu.Lock()
			defer e.rec.mu.Unlock()
			if c, ok := e.rec.subs[id]; ok {
				close(c)
				delete(e.rec.subs, id)
			}
		})
	}
}

// Fault is an error, a delay or a GOAWAY injected into provider responses.
// A fault applies to the requests it matches (Provider, Token), selected by
// schedule (After, Every, Count) and rate (Rate). The first applicable
// fault wins.
type Fault struct {
	Provider Provider `json:"provider,omitempty"` // "" matches both
	Token    string   `json:"token,omitempty"`    // "" matches any token
	// Environment limits an APNs fault to one environment (Production or
	// Sandbox); "" matches both. FCM requests have no environment.
	Environment string `json:"environment,omitempty"`
	// After skips the first After matching requests.
	After int `json:"after,omitempty"`
	// Every applies the fault to every Every-th matching request after
	// After (0 or 1: each).
	Every int `json:"every,omitempty"`
	// Count stops the fault after it applied Count times (0: no limit).
	Count int `json:"count,omitempty"`
	// Rate is the probability that a selected request gets the fault
	// (0: always).
	Rate float64 `json:"rate,omitempty"`
	// Latency delays the response.
	Latency time.Duration `json:"latency,omitempty"`
	// Reason is the APNs reason (e.g. "Unregistered", "TooManyRequests") or
	// the FCM error code (e.g. "UNREGISTERED", "QUOTA_EXCEEDED"). "" means
	// no error: only Latency, RetryAfter and GoAway apply.
	Reason string `json:"reason,omitempty"`
	// Status overrides the HTTP status implied by Reason.
	Status int `json:"status,omitempty"`
	// RetryAfter sets the Retry-After header (whole seconds).
	RetryAfter time.Duration `json:"retry_after,omitempty"`
	// Message overrides the error message of an FCM fault, e.g. "The
	// registration token is not a valid FCM registration token", FCM's
	// INVALID_ARGUMENT for a bad token.
	Message string `json:"message,omitempty"`
	// ProjectQuota makes an FCM 429 the project-level quota error
	// (RESOURCE_EXHAUSTED with google.rpc.ErrorInfo RATE_LIMIT_EXCEEDED)
	// instead of the per-device QUOTA_EXCEEDED.
	ProjectQuota bool `json:"project_quota,omitempty"`
	// GoAway closes the connection with GOAWAY after this response (APNs).
	GoAway bool `json:"goaway,omitempty"`
}

type faultRule struct {
	id      int
	f       Fault
	seen    int
	applied int
}

type faultSet struct {
	mu     sync.Mutex
	next   int
	rules  []*faultRule
	random *rng
}

func newFaultSet(seed uint64) *faultSet {
	return &faultSet{random: &rng{r: mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}}
}

// match returns the fault for one request, if any.
func (s *faultSet) match(p Provider, env, token string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.rules {
		f := r.f
		if (f.Provider != "" && f.Provider != p) || (f.Token != "" && f.Token != token) || (f.Environment != "" && f.Environment != env) {
			continue
		}
		if f.Count > 0 && r.applied >= f.Count {
			continue
		}
		r.seen++
		if r.seen <= f.After {
			continue
		}
		if f.Every > 1 && (r.seen-f.After)%f.Every != 0 {
			continue
		}
		if f.Rate > 0 && s.random.float() >= f.Rate {
			continue
		}
		r.applied++
		return f, true
	}
	return Fault{}, false
}

// AddFault installs a fault rule and returns its id for RemoveFault.
func (e *Emulator) AddFault(f Fault) int {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	e.faults.next++
	e.faults.rules = append(e.faults.rules, &faultRule{id: e.faults.next, f: f})
	return e.faults.next
}

// RemoveFault uninstalls one fault rule.
func (e *Emulator) RemoveFault(id int) {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	e.faults.rules = slices.DeleteFunc(e.faults.rules, func(r *faultRule) bool { return r.id == id })
}

// ClearFaults uninstalls every fault rule.
func (e *Emulator) ClearFaults() {
	e.faults.mu.Lock()
	defer e.faults.mu.Unlock()
	e.faults.rules = nil
}

type tokenInfo struct {
	env            string // APNs environment the token belongs to; "" = any
	unregistered   bool
	unregisteredAt time.Time
}

type registry struct {
	mu     sync.RWMutex
	tokens map[Provider]map[string]tokenInfo
}

func newRegistry() *registry {
	return &registry{tokens: map[Provider]map[string]tokenInfo{FCM: {}, APNs: {}}}
}

func (r *registry) get(p Provider, token string) (tokenInfo, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	ti, ok := r.tokens[p][token]
	return ti, ok
}

// AddToken registers a known token. For APNs, env (Production or Sandbox)
// binds the token to that environment: sending it to the other one gets
// 400 BadDeviceToken, as with real APNs. env "" accepts both.
func (e *Emulator) AddToken(p Provider, token, env string) {
	e.tokens.mu.Lock()
	defer e.tokens.mu.Unlock()
	e.tokens.tokens[p][token] = tokenInfo{env: env}
}

// Unregister marks a token as uninstalled at the given time: APNs answers
// 410 Unregistered with that timestamp, FCM 404 UNREGISTERED.
func (e *Emulator) Unregister(p Provider, token string, at time.Time) {
	e.tokens.mu.Lock()
	defer e.tokens.mu.Unlock()
	ti := e.tokens.tokens[p][token]
	ti.unregistered, ti.unregisteredAt = true, at
	e.tokens.tokens[p][token] = ti
}

// connInfo is what the APNs emulator remembers per client connection.
type connInfo struct {
	jwt      string
	jwtSince time.Time
	goAway   uint64
}

// authState tracks per-connection provider tokens (APNs limits JWT
// updates per connection) and caches verified JWTs.
type authState struct {
	mu       sync.Mutex
	conns    map[string]*connInfo
	verified map[string]verifiedJWT // APNs jwt -> iat and key
	access   map[string]struct{}    // FCM bearer tokens issued or verified
	goAway   uint64
	// What the emulator accepts: APNs keys and topics, FCM service-account
	// keys and projects (apps.go).
	apnsKeys []APNsKey
	topics   map[string]bool
	saKeys   []*rsa.PublicKey
	projects map[string]bool
}

func newAuthState() *authState {
	return &authState{conns: make(map[string]*connInfo), verified: make(map[string]verifiedJWT), access: make(map[string]struct{}),
		topics: map[string]bool{}, projects: map[string]bool{}}
}

func (a *authState) connState(c net.Conn, st http.ConnState) {
	if st != http.StateClosed && st != http.StateHijacked {
		return
	}
	a.mu.Lock()
	delete(a.conns, c.RemoteAddr().String())
	a.mu.Unlock()
}

func (a *authState) conn(addr string) *connInfo {
	ci, ok := a.conns[addr]
	if !ok {
		ci = &connInfo{goAway: a.goAway}
		a.conns[addr] = ci
	}
	return ci
}

func contextWithTimeout(r *http.Request, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), d)
}
