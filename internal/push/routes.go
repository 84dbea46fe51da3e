package push

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sideshow/apns2"

	"github.com/nudge-dev/nudge/internal/apps"
)

// The routing of messages to clients. A route is what one app sends
// through: per APNs environment and for FCM, a slot and the pause scope.
// A slot is one credential on one host (APNs) or one service account,
// project and endpoint (FCM), shared by every app that names the same; it
// holds the current generation of its client. A generation is replaced
// when the credential's files change (rotation); pushes in flight keep
// the generation they started on, which closes its connections once they
// have drained.
//
// Routes are built on an app's first message and rebuilt when the app
// catalogue changes the app's credentials. Both are immutable once built:
// the Sender swaps whole routes under its lock.

// route is how one app's messages are sent.
type route struct {
	app  apps.App
	apns [2]provRoute // production, sandbox
	fcm  provRoute
	// rejected is a newer version of the app whose credentials did not
	// load; the route keeps the older, working ones.
	rejected *apps.App
}

// provRoute is one provider (and APNs environment) of an app.
type provRoute struct {
	scope string // pause scope
	slot  *slot  // nil: not configured, or err
	err   error  // the credential did not load
}

func (r *route) prov(m *Message) *provRoute {
	switch {
	case m.Provider == FCM:
		return &r.fcm
	case m.Environment == Sandbox:
		return &r.apns[1]
	default:
		return &r.apns[0]
	}
}

func (r *route) broken() bool {
	return r.apns[0].err != nil || r.apns[1].err != nil || r.fcm.err != nil
}

// slotSpec is what identifies a slot: a credential's settings, without the
// app-specific ones (the APNs topic).
type slotSpec struct {
	provider Provider
	env      Environment // APNs
	host     string      // APNs
	apns     *apps.APNs
	fcm      *apps.FCM
	id       string // credential id: APNs key id or cert-<digest of the path>, FCM project
}

func (sp slotSpec) key() string {
	if sp.provider == FCM {
		return strings.Join([]string{"fcm", sp.fcm.CredentialsFile, sp.id, sp.fcm.Endpoint}, "\x00")
	}
	p := sp.apns
	return strings.Join([]string{"apns", string(sp.env), sp.host, p.KeyFile, p.KeyID, p.TeamID, p.CertFile, p.CertPasswordFile}, "\x00")
}

func (sp slotSpec) files() []string {
	if sp.provider == FCM {
		return []string{sp.fcm.CredentialsFile}
	}
	if sp.apns.KeyFile != "" {
		return []string{sp.apns.KeyFile}
	}
	if sp.apns.CertPasswordFile != "" {
		return []string{sp.apns.CertFile, sp.apns.CertPasswordFile}
	}
	return []string{sp.apns.CertFile}
}

func (sp slotSpec) scope() string {
	if sp.provider == FCM {
		return "fcm:" + sp.id
	}
	return "apns:" + string(sp.env) + ":" + sp.id
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:6])
}

func apnsSpec(p *apps.APNs, env Environment) slotSpec {
	sp := slotSpec{provider: APNs, env: env, apns: p, id: p.KeyID}
	if p.KeyFile == "" {
		sp.id = "cert-" + shortHash(p.CertFile)
	}
	if env == Sandbox {
		sp.host = cmp.Or(p.SandboxHost, p.Host, apns2.HostDevelopment)
	} else {
		sp.host = cmp.Or(p.Host, apns2.HostProduction)
	}
	return sp
}

// fcmSpec names the project: the app's, else the credentials' project_id.
func fcmSpec(p *apps.FCM) slotSpec {
	sp := slotSpec{provider: FCM, fcm: p, id: p.ProjectID}
	if sp.id == "" {
		var sa serviceAccount
		if raw, err := os.ReadFile(p.CredentialsFile); err == nil && json.Unmarshal(raw, &sa) == nil {
			sp.id = sa.ProjectID
		}
		sp.id = cmp.Or(sp.id, "file-"+shortHash(p.CredentialsFile))
	}
	return sp
}

// slot is one credential's client, shared by the apps that name it.
type slot struct {
	spec  slotSpec
	key   string
	cur   atomic.Pointer[gen]
	conns *connCounter
	// Under Sender.mu:
	hash  [32]byte // contents the current generation was built from
	bad   [32]byte // contents last rejected, so each is reported once
	users int      // routes using the slot
}

// gen is one generation of a slot's client.
type gen struct {
	apns    *apnsClient
	fcm     *fcmClient
	linger  time.Duration    // the send timeout: when every stream is over
	drain   prometheus.Gauge // clients retired and not yet drained
	refs    atomic.Int64
	retired atomic.Bool
	once    sync.Once
}

// acquire returns the current generation, held until release.
func (sl *slot) acquire() *gen {
	for {
		g := sl.cur.Load()
		g.refs.Add(1)
		if sl.cur.Load() == g {
			return g
		}
		g.release()
	}
}

func (g *gen) release() {
	if g.refs.Add(-1) == 0 && g.retired.Load() {
		g.close()
	}
}

// retire closes the generation's connections once its pushes in flight
// are done.
func (g *gen) retire() {
	if g.retired.Swap(true) {
		return
	}
	g.drain.Inc()
	if g.refs.Load() == 0 {
		g.close()
	}
}

// close closes the idle connections now, and again once any stream still
// winding down on them (a push that just returned) must be over.
func (g *gen) close() {
	g.once.Do(func() {
		if g.retired.Load() {
			g.drain.Dec()
		}
		g.closeIdle()
		if g.linger > 0 {
			time.AfterFunc(g.linger, g.closeIdle)
		}
	})
}

func (g *gen) closeIdle() {
	if g.apns != nil {
		g.apns.close()
	}
	if g.fcm != nil {
		g.fcm.close()
	}
}

// readFiles reads a credential's files and hashes their contents.
func readFiles(sp slotSpec) ([][]byte, [32]byte, error) {
	h := sha256.New()
	var out [][]byte
	for _, f := range sp.files() {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, [32]byte{}, fmt.Errorf("read %s credential file: %w", sp.provider, err)
		}
		out = append(out, b)
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return out, sum, nil
}

// build makes a generation from a credential's file contents, validating
// them: a key, certificate or service account that does not parse is an
// error.
func (s *Sender) build(sp slotSpec, conns *connCounter, files [][]byte, sum [32]byte) (*gen, error) {
	if sp.provider == FCM {
		c, err := newFCMClient(s.ctx, s.cfg, sp.fcm, files[0], s.tls, conns, s.m.tokenFetches.WithLabelValues(sp.id))
		if err != nil {
			return nil, err
		}
		return &gen{fcm: c, linger: s.cfg.SendTimeout, drain: s.m.draining.WithLabelValues(string(FCM))}, nil
	}
	cred, err := loadAPNsCred(sp.apns, files, s.now())
	if err != nil {
		return nil, err
	}
	var signer *jwtSigner
	if cred.key != nil {
		k := sp.apns.KeyID + "\x00" + sp.apns.TeamID + "\x00" + hex.EncodeToString(sum[:])
		s.signersMu.Lock()
		if signer = s.signers[k]; signer == nil {
			signer = &jwtSigner{key: cred.key, keyID: cred.keyID, teamID: cred.teamID, refresh: s.cfg.APNSTokenRefresh, now: s.now,
				rotations: s.m.jwts.WithLabelValues(sp.id)}
			s.signers[k] = signer
		}
		s.signersMu.Unlock()
	}
	return &gen{apns: newAPNsClient(cred, sp.host, s.tls, conns, signer), linger: s.cfg.SendTimeout,
		drain: s.m.draining.WithLabelValues(string(APNs))}, nil
}

// slotLocked returns the slot of sp, building it on first use.
func (s *Sender) slotLocked(sp slotSpec) (*slot, error) {
	key := sp.key()
	if sl, ok := s.slots[key]; ok {
		sl.users++
		return sl, nil
	}
	files, sum, err := readFiles(sp)
	if err != nil {
		return nil, err
	}
	sl := &slot{spec: sp, key: key, hash: sum, users: 1, conns: s.m.conns(sp.provider, sp.id)}
	g, err := s.build(sp, sl.conns, files, sum)
	if err != nil {
		return nil, err
	}
	sl.cur.Store(g)
	s.slots[key] = sl
	return sl, nil
}

// buildRouteLocked builds an app's route; a provider whose credential
// does not load carries the error.
func (s *Sender) buildRouteLocked(a apps.App) *route {
	rt := &route{app: a}
	add := func(pr *provRoute, sp slotSpec) {
		pr.scope = sp.scope()
		pr.slot, pr.err = s.slotLocked(sp)
		if pr.err != nil {
			pr.err = fmt.Errorf("app %s: %w", a.ID, pr.err)
		}
	}
	if a.APNs != nil {
		add(&rt.apns[0], apnsSpec(a.APNs, Production))
		add(&rt.apns[1], apnsSpec(a.APNs, Sandbox))
	}
	if a.FCM != nil {
		add(&rt.fcm, fcmSpec(a.FCM))
	}
	return rt
}

// dropRouteLocked lets go of a route's slots; a slot no route uses is
// closed once its pushes in flight are done.
func (s *Sender) dropRouteLocked(rt *route) {
	for _, pr := range []provRoute{rt.apns[0], rt.apns[1], rt.fcm} {
		if pr.slot == nil {
			continue
		}
		if pr.slot.users--; pr.slot.users == 0 {
			delete(s.slots, pr.slot.key)
			pr.slot.cur.Load().retire()
		}
	}
}

// routeLocked returns the route of app id, building it on first use; nil
// when the catalogue has no such app.
func (s *Sender) routeLocked(id string) *route {
	if rt, ok := s.routes[id]; ok {
		return rt
	}
	a, ok := s.src.Current().Get(id)
	if !ok {
		return nil
	}
	rt := s.buildRouteLocked(a)
	for _, pr := range []provRoute{rt.apns[0], rt.apns[1], rt.fcm} {
		if pr.err != nil {
			s.logger.Error("push credential unusable: its pushes pause until it is fixed", "app", id, "scope", pr.scope, "err", pr.err)
			s.m.reloads.WithLabelValues(string(providerOfScope(pr.scope)), "rejected").Inc()
		}
	}
	s.routes[id] = rt
	return rt
}

func providerOfScope(scope string) Provider {
	p, _, _ := strings.Cut(scope, ":")
	return Provider(p)
}

// routes returns the routes of the apps of msgs (nil for unknown apps).
func (s *Sender) routesOf(msgs []Message) map[string]*route {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*route, 1)
	for i := range msgs {
		id := appOf(&msgs[i])
		if _, ok := out[id]; !ok {
			out[id] = s.routeLocked(id)
		}
	}
	return out
}

func appOf(m *Message) string { return cmp.Or(m.App, apps.Default) }

// sameCredentials reports whether two versions of an app send alike.
func sameCredentials(a, b apps.App) bool {
	return reflect.DeepEqual(a.APNs, b.APNs) && reflect.DeepEqual(a.FCM, b.FCM)
}

// watch applies catalogue changes and rotated credential files every
// CredentialPoll until Close.
func (s *Sender) watch() {
	defer s.watching.Done()
	t := time.NewTicker(s.cfg.CredentialPoll)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.Refresh()
		}
	}
}

// Refresh applies a changed app catalogue and rotated credential files at
// once, rather than at the next poll. A new credential that does not load
// is rejected (logged, counted in nudge_push_credential_reloads_total
// {result="rejected"}) and the old one keeps sending.
func (s *Sender) Refresh() {
	s.refreshApps()
	s.mu.Lock()
	slots := make([]*slot, 0, len(s.slots))
	for _, sl := range s.slots {
		slots = append(slots, sl)
	}
	s.mu.Unlock()
	for _, sl := range slots {
		s.refreshSlot(sl)
	}
}

func (s *Sender) refreshApps() {
	set := s.src.Current()
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := set != s.set
	s.set = set
	for id, old := range s.routes {
		a, ok := set.Get(id)
		switch {
		case !ok:
			s.dropRouteLocked(old)
			delete(s.routes, id)
			s.logger.Info("app removed: its push clients close once idle", "app", id)
			continue
		case !changed && !old.broken():
			continue
		case sameCredentials(a, old.app) && !old.broken():
			nr := *old
			nr.app, nr.rejected = a, nil
			s.routes[id] = &nr
			continue
		case old.rejected != nil && reflect.DeepEqual(*old.rejected, a):
			continue // rejected already; wait for another change
		}
		nr := s.buildRouteLocked(a)
		if nr.broken() && !old.broken() {
			s.dropRouteLocked(nr)
			kept := *old
			kept.rejected = &a
			s.routes[id] = &kept
			for _, pr := range []provRoute{nr.apns[0], nr.apns[1], nr.fcm} {
				if pr.err != nil {
					s.logger.Error("new push credential rejected: the app keeps sending with its old one", "app", id, "scope", pr.scope, "err", pr.err)
					s.m.reloads.WithLabelValues(string(providerOfScope(pr.scope)), "rejected").Inc()
				}
			}
			continue
		}
		s.routes[id] = nr
		s.dropRouteLocked(old)
		if !nr.broken() {
			s.logger.Info("app credentials applied", "app", id)
		}
	}
}

// refreshSlot rebuilds a slot's client when its files changed.
func (s *Sender) refreshSlot(sl *slot) {
	files, sum, err := readFiles(sl.spec)
	s.mu.Lock()
	same := err == nil && (sum == sl.hash || sum == sl.bad)
	s.mu.Unlock()
	if same {
		return
	}
	var g *gen
	if err == nil {
		g, err = s.build(sl.spec, sl.conns, files, sum)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		bad := sha256.Sum256([]byte(err.Error()))
		if files != nil {
			bad = sum
		}
		if bad != sl.bad {
			sl.bad = bad
			s.logger.Error("rotated push credential rejected: the old one keeps sending", "scope", sl.spec.scope(), "err", err)
			s.m.reloads.WithLabelValues(string(sl.spec.provider), "rejected").Inc()
		}
		return
	}
	if s.slots[sl.key] != sl { // dropped meanwhile
		g.close()
		return
	}
	old := sl.cur.Swap(g)
	sl.hash, sl.bad = sum, [32]byte{}
	old.retire()
	s.m.reloads.WithLabelValues(string(sl.spec.provider), "applied").Inc()
	s.logger.Info("rotated push credential applied", "scope", sl.spec.scope())
}

// ErrUnknownApp is the error of a message whose app the catalogue does
// not have.
var ErrUnknownApp = errors.New("unknown app")

// clientCount is the number of clients (slots) open, for tests.
func (s *Sender) clientCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.slots)
}
