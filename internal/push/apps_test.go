package push

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/await"
	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/pushemu/pushemutest"
	"github.com/nudge-dev/nudge/internal/service"
)

// source is an app catalogue the tests change.
type source struct{ p atomic.Pointer[apps.Set] }

func (s *source) Current() *apps.Set { return s.p.Load() }

func (s *source) set(t *testing.T, list ...apps.App) {
	t.Helper()
	set, err := apps.NewSet(list...)
	if err != nil {
		t.Fatal(err)
	}
	s.p.Store(set)
}

// appsSender builds a Sender on a changeable catalogue of list; it never
// polls on its own (the tests call Refresh).
func appsSender(t *testing.T, caFile string, list ...apps.App) (*Sender, *source) {
	t.Helper()
	src := &source{}
	src.set(t, list...)
	s, err := New(t.Context(), service.Archetype{Registerer: prometheus.NewRegistry()}, Config{Apps: src, CredentialPoll: time.Hour, CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s, src
}

// startEmu starts an emulator whose default credentials are copied into a
// directory the test may rewrite.
func startEmu(t *testing.T) (*pushemu.Emulator, pushemu.Credentials) {
	t.Helper()
	emu, creds := pushemutest.Start(t, service.Archetype{}, pushemu.Config{})
	dir := t.TempDir()
	for _, p := range []*string{&creds.APNsKeyFile, &creds.FCMCredentialsFile} {
		b, err := os.ReadFile(*p)
		if err != nil {
			t.Fatal(err)
		}
		*p = filepath.Join(dir, filepath.Base(*p))
		writeFile(t, *p, b)
	}
	return emu, creds
}

// writeFile replaces path atomically, as a secret mount does.
func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func appMsg(id, app string, p Provider, env Environment, tok string) Message {
	pl := IOS
	if p == FCM {
		pl = Android
	}
	m := msg(id, p, pl, tok)
	m.App, m.Environment = app, env
	return m
}

// TestAppsSendWithTheirOwnCredentials sends for two apps with separate
// emulator credentials: every push goes out with its app's topic and key
// (APNs) or project (FCM), and each app's pause scopes are its own.
// Messages of an unknown app, or for a provider the app does not have,
// are Permanent with a clear error.
func TestAppsSendWithTheirOwnCredentials(t *testing.T) {
	t.Parallel()
	emu, news := startEmu(t)
	sports := pushemutest.AppCredentials(t, emu, "sports")
	iosOnly := pushemutest.App("ios-only", news)
	iosOnly.FCM = nil
	s, _ := appsSender(t, news.CAFile, pushemutest.App(apps.Default, news), pushemutest.App("sports", sports), iosOnly)

	creds := map[string]pushemu.Credentials{"": news, "sports": sports}
	var msgs []Message
	for i, app := range []string{"", "sports"} {
		msgs = append(msgs,
			appMsg("p", app, APNs, Production, apnsToken(10*i)),
			appMsg("s", app, APNs, Sandbox, apnsToken(10*i+1)),
			appMsg("f", app, FCM, "", "fcm-"+app))
	}
	msgs = append(msgs, appMsg("u", "nope", APNs, Production, apnsToken(50)), appMsg("n", "ios-only", FCM, "", "fcm-x"))
	res := s.Send(t.Context(), msgs)
	for i, r := range res[:6] {
		if r.Action != Delivered {
			t.Fatalf("push %d (app %q): got %v %s %v, want delivered", i, msgs[i].App, r.Action, r.Reason, r.Err)
		}
	}
	if r := res[6]; r.Action != Permanent || !errors.Is(r.Err, ErrUnknownApp) {
		t.Fatalf("unknown app: got %v %v, want Permanent ErrUnknownApp", r.Action, r.Err)
	}
	if r := res[7]; r.Action != Permanent || !errors.Is(r.Err, ErrProviderNotConfigured) {
		t.Fatalf("app without FCM: got %v %v, want Permanent ErrProviderNotConfigured", r.Action, r.Err)
	}
	for _, m := range msgs[:6] {
		c := creds[m.App]
		d := emu.Deliveries(m.Token)
		if len(d) != 1 {
			t.Fatalf("app %q %s: got %d deliveries, want 1", m.App, m.Provider, len(d))
		}
		if m.Provider == FCM {
			want(t, "project of app "+m.App, d[0].Project, c.FCMProjectID)
			continue
		}
		want(t, "topic of app "+m.App, d[0].Topic, c.APNsTopic)
		want(t, "signing key of app "+m.App, d[0].Key, c.APNsKeyFingerprint)
	}
	scopes := map[string]bool{}
	for _, m := range msgs[:6] {
		scopes[s.PauseScope(&m)] = true
	}
	for _, sc := range []string{"apns:production:" + news.APNsKeyID, "apns:sandbox:" + news.APNsKeyID, "fcm:" + news.FCMProjectID,
		"apns:production:" + sports.APNsKeyID, "apns:sandbox:" + sports.APNsKeyID, "fcm:" + sports.FCMProjectID} {
		if !scopes[sc] {
			t.Fatalf("pause scopes %v: missing %s", scopes, sc)
		}
	}
	want(t, "sports apns sends", testutil.ToFloat64(s.m.results.WithLabelValues("sports", "apns", "delivered")), float64(2))
	want(t, "unknown app refusals", testutil.ToFloat64(s.m.results.WithLabelValues("unknown", "apns", "permanent")), float64(1))
	want(t, "sports OAuth token fetches", testutil.ToFloat64(s.m.tokenFetches.WithLabelValues(sports.FCMProjectID)), float64(1))
	want(t, "sports JWTs", testutil.ToFloat64(s.m.jwts.WithLabelValues(sports.APNsKeyID)), float64(1))
}

// TestAppsShareOneClientPerCredential: two apps on one key and one service
// account (a store build and a beta build with its own bundle id) share
// the clients: one APNs connection and one FCM connection carry both apps'
// pushes, each APNs push with its own app's topic.
func TestAppsShareOneClientPerCredential(t *testing.T) {
	t.Parallel()
	emu, creds := startEmu(t)
	beta := pushemutest.App("news-beta", creds)
	beta.APNs.Topic = creds.APNsTopic + ".beta"
	emu.AddTopic(beta.APNs.Topic)
	s, _ := appsSender(t, creds.CAFile, pushemutest.App("news", creds), beta)
	// One push at a time, so that a connection dialed for the second app
	// would show (a cold burst may dial two).
	for i := range 4 {
		app := []string{"news", "news-beta"}[i%2]
		for _, m := range []Message{appMsg("a", app, APNs, Production, apnsToken(i)), appMsg("f", app, FCM, "", fcmTok(i))} {
			if r := s.Send(t.Context(), []Message{m})[0]; r.Action != Delivered {
				t.Fatalf("push %d of %s: got %v %s, want delivered", i, app, r.Action, r.Reason)
			}
		}
	}
	for i := range 2 {
		wantTopic := []string{creds.APNsTopic, beta.APNs.Topic}[i]
		want(t, "topic", emu.Deliveries(apnsToken(i))[0].Topic, wantTopic)
	}
	// production, sandbox and FCM: three clients for the two apps.
	want(t, "clients", s.clientCount(), 3)
	want(t, "apns connections", testutil.ToFloat64(s.m.connsOpened.WithLabelValues("apns", creds.APNsKeyID)), float64(1))
	want(t, "fcm connections", testutil.ToFloat64(s.m.connsOpened.WithLabelValues("fcm", creds.FCMProjectID)), float64(1))
	want(t, "OAuth token fetches", testutil.ToFloat64(s.m.tokenFetches.WithLabelValues(creds.FCMProjectID)), float64(1))
	want(t, "JWTs", testutil.ToFloat64(s.m.jwts.WithLabelValues(creds.APNsKeyID)), float64(1))
}

func fcmTok(i int) string { return "fcm-token-" + apnsToken(i)[:20] }

// TestRotatedKeyFileSwapsClient replaces the .p8 file under a running
// sender while a push is in flight: the push in flight finishes on the old
// key, every later push is signed with the new one (also after the old key
// is revoked), and the old client's connection is closed once drained.
func TestRotatedKeyFileSwapsClient(t *testing.T) {
	t.Parallel()
	emu, creds := startEmu(t)
	s, _ := appsSender(t, creds.CAFile, pushemutest.App(apps.Default, creds))
	send := func(tok string) Result {
		t.Helper()
		return s.Send(t.Context(), []Message{appMsg("r", "", APNs, Production, tok)})[0]
	}
	want(t, "before", send(apnsToken(1)).Action, Delivered)
	slow := apnsToken(2)
	emu.AddFault(pushemu.Fault{Provider: pushemu.APNs, Token: slow, Latency: time.Second})
	inFlight := make(chan Result)
	go func() { inFlight <- send(slow) }()
	await.Until(t, "the slow push to be in flight", func() bool { return emu.APNsInFlight() == 1 })

	key, err := emu.NewAPNsKey(creds.APNsKeyID, creds.APNsTeamID)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, creds.APNsKeyFile, key.PEM)
	s.Refresh()
	// The production and the sandbox client of the key.
	want(t, "reloads applied", testutil.ToFloat64(s.m.reloads.WithLabelValues("apns", "applied")), float64(2))
	want(t, "after", send(apnsToken(3)).Action, Delivered)
	want(t, "in flight", (<-inFlight).Action, Delivered)
	want(t, "in-flight push's key", emu.Deliveries(slow)[0].Key, creds.APNsKeyFingerprint)
	emu.RevokeAPNsKey(creds.APNsKeyFingerprint)
	want(t, "after revocation", send(apnsToken(4)).Action, Delivered)
	for _, tok := range []string{apnsToken(3), apnsToken(4)} {
		want(t, "rotated push's key", emu.Deliveries(tok)[0].Key, key.Fingerprint)
	}
	await.Until(t, "the old client's connection to close", func() bool {
		return testutil.ToFloat64(s.m.connsOpen.WithLabelValues("apns", creds.APNsKeyID)) == 1
	})
	want(t, "apns connections dialed", testutil.ToFloat64(s.m.connsOpened.WithLabelValues("apns", creds.APNsKeyID)), float64(2))
}

// TestBrokenCredentialRejected: a rotated key file that does not parse,
// and a catalogue change to a broken key, are rejected (counted once each)
// and the app keeps sending with its old key; a good catalogue change is
// then applied.
func TestBrokenCredentialRejected(t *testing.T) {
	t.Parallel()
	emu, creds := startEmu(t)
	app := pushemutest.App(apps.Default, creds)
	s, src := appsSender(t, creds.CAFile, app)
	rejected := func() float64 { return testutil.ToFloat64(s.m.reloads.WithLabelValues("apns", "rejected")) }
	sendOK := func(tok, key string) {
		t.Helper()
		r := s.Send(t.Context(), []Message{appMsg("b", "", APNs, Production, tok)})[0]
		want(t, "action", r.Action, Delivered)
		want(t, "signing key", emu.Deliveries(tok)[0].Key, key)
	}
	sendOK(apnsToken(1), creds.APNsKeyFingerprint)

	good, err := os.ReadFile(creds.APNsKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, creds.APNsKeyFile, []byte("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"))
	s.Refresh()
	s.Refresh()
	// The production and the sandbox client of the key, once each.
	want(t, "rejected after a broken file", rejected(), float64(2))
	sendOK(apnsToken(2), creds.APNsKeyFingerprint)
	writeFile(t, creds.APNsKeyFile, good)
	s.Refresh()

	broken := app
	brokenAPNs := *app.APNs
	brokenAPNs.KeyFile, brokenAPNs.KeyID = filepath.Join(t.TempDir(), "AuthKey_MISSING001.p8"), "MISSING001"
	broken.APNs = &brokenAPNs
	src.set(t, broken)
	s.Refresh()
	s.Refresh()
	want(t, "rejected after a broken catalogue change", rejected(), float64(4))
	sendOK(apnsToken(3), creds.APNsKeyFingerprint)

	key, err := emu.NewAPNsKey("NEWKEY0001", creds.APNsTeamID)
	if err != nil {
		t.Fatal(err)
	}
	fixed := app
	fixedAPNs := *app.APNs
	fixedAPNs.KeyFile, fixedAPNs.KeyID = filepath.Join(t.TempDir(), "AuthKey_NEWKEY0001.p8"), key.KeyID
	writeFile(t, fixedAPNs.KeyFile, key.PEM)
	fixed.APNs = &fixedAPNs
	src.set(t, fixed)
	s.Refresh()
	sendOK(apnsToken(4), key.Fingerprint)
	want(t, "scope", s.PauseScope(&Message{Provider: APNs}), "apns:production:NEWKEY0001")
	want(t, "clients", s.clientCount(), 3)

	// The emulator refuses a revoked key, also a JWT it verified before:
	// what the rotation tests rely on to catch a push on a removed key.
	emu.RevokeAPNsKey(key.Fingerprint)
	r := s.Send(t.Context(), []Message{appMsg("x", "", APNs, Production, apnsToken(5))})[0]
	if r.Action != PauseProvider || r.Reason != "InvalidProviderToken" {
		t.Fatalf("push signed with a revoked key: got %v %s, want pause_provider InvalidProviderToken", r.Action, r.Reason)
	}
}

// TestStartWithOneAppsCredentialBroken: an app whose key file is missing
// at start (an admin edit naming a bad path) does not stop the others:
// New succeeds, the other app's pushes are delivered and the broken app's
// pause its scope. With no app able to send, New fails naming the app.
func TestStartWithOneAppsCredentialBroken(t *testing.T) {
	t.Parallel()
	emu, news := startEmu(t)
	broken := pushemutest.App("radio", pushemutest.AppCredentials(t, emu, "radio"))
	badAPNs := *broken.APNs
	badAPNs.KeyFile = filepath.Join(t.TempDir(), "AuthKey_MISSING.p8")
	broken.APNs = &badAPNs
	s, _ := appsSender(t, news.CAFile, pushemutest.App(apps.Default, news), broken)
	want(t, "credentials rejected at start (production and sandbox client)",
		testutil.ToFloat64(s.m.reloads.WithLabelValues("apns", "rejected")), float64(2))
	res := s.Send(t.Context(), []Message{
		appMsg("a", "", APNs, Production, apnsToken(1)),
		appMsg("b", "radio", APNs, Production, apnsToken(2)),
	})
	want(t, "the working app's push", res[0].Action, Delivered)
	if res[1].Action != PauseProvider {
		t.Fatalf("the broken app's push: got %v %s %v, want PauseProvider", res[1].Action, res[1].Reason, res[1].Err)
	}
	if n := emu.CountToken(apnsToken(2)); n != 0 {
		t.Fatalf("the broken app's push reached the emulator %d times", n)
	}

	only := &source{}
	only.set(t, broken)
	_, err := New(t.Context(), service.Archetype{Registerer: prometheus.NewRegistry()}, Config{Apps: only, CredentialPoll: time.Hour, CAFile: news.CAFile})
	if err == nil || !strings.Contains(err.Error(), "app radio") {
		t.Fatalf("New with every app broken: err = %v, want one naming app radio", err)
	}
}
