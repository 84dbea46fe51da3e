package push

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/pushemu/pushemutest"
	"github.com/nudge-dev/nudge/internal/service"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type bundle struct {
	emu    *pushemu.Emulator
	creds  pushemu.Credentials
	clk    *clock
	sender *Sender
	reg    *prometheus.Registry
}

// emuConfig maps the emulator's credentials to a sender Config, as the
// dispatcher does from the NUDGE_* variables.
func emuConfig(c pushemu.Credentials) Config {
	return Config{
		FCMCredentialsFile: c.FCMCredentialsFile,
		FCMEndpoint:        c.FCMEndpoint,
		APNSKeyFile:        c.APNsKeyFile,
		APNSKeyID:          c.APNsKeyID,
		APNSTeamID:         c.APNsTeamID,
		APNSTopic:          c.APNsTopic,
		APNSHost:           c.APNsHost,
		APNSSandboxHost:    c.APNsSandboxHost,
		CAFile:             c.CAFile,
	}
}

func setup(t *testing.T, mod ...func(*Config)) *bundle {
	t.Helper()
	clk := &clock{t: time.Now()}
	emu, creds := pushemutest.Start(t, service.Archetype{Clock: clk.Now}, pushemu.Config{})
	cfg := emuConfig(creds)
	for _, m := range mod {
		m(&cfg)
	}
	reg := prometheus.NewRegistry()
	s, err := New(t.Context(), service.Archetype{Clock: clk.Now, Registerer: reg}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return &bundle{emu: emu, creds: creds, clk: clk, sender: s, reg: reg}
}

func apnsToken(n int) string { return fmt.Sprintf("%064x", n+1) }

func msg(id string, p Provider, pl Platform, tok string) Message {
	return Message{
		ID: id, Token: tok, Provider: p, Platform: pl, Event: "ev-1", Reason: ReasonFeed,
		Feeds: []string{"headlines", "recent"}, Since: []Cursor{{"headlines", 120}, {"recent", 88}},
		CollapseID: "feeds", TTL: 30 * time.Minute,
	}
}

func TestComposition(t *testing.T) {
	t.Parallel()
	b := setup(t)
	breaking := &Alert{Title: "Breaking", Body: "Something happened"}
	tests := []struct {
		name  string
		m     Message
		check func(t *testing.T, d pushemu.Delivery)
	}{
		{"fcm android silent", msg("p1", FCM, Android, "fcm-android-1"), func(t *testing.T, d pushemu.Delivery) {
			want(t, "android priority", d.Priority, "normal")
			want(t, "ttl", d.TTL, "1800s")
			want(t, "collapse key", d.CollapseID, "feeds")
			want(t, "alert", d.Alert, false)
			if d.Aps != nil {
				t.Fatalf("aps: got %v, want none for android", d.Aps)
			}
		}},
		{"fcm ios silent", msg("p2", FCM, IOS, "fcm-ios-1"), func(t *testing.T, d pushemu.Delivery) {
			want(t, "apns-push-type", d.PushType, "background")
			want(t, "apns-priority", d.Priority, "5")
			want(t, "content-available", d.Aps["content-available"], any(float64(1)))
			want(t, "apns-collapse-id", d.CollapseID, "feeds")
			want(t, "expiration", d.Expiration, fmt.Sprint(b.clk.Now().Add(30*time.Minute).Unix()))
			want(t, "alert", d.Alert, false)
		}},
		{"apns production silent", msg("p3", APNs, IOS, apnsToken(3)), func(t *testing.T, d pushemu.Delivery) {
			want(t, "environment", d.Environment, pushemu.Production)
			want(t, "apns-push-type", d.PushType, "background")
			want(t, "apns-priority", d.Priority, "5")
			want(t, "topic", d.Topic, b.creds.APNsTopic)
			want(t, "collapse id", d.CollapseID, "feeds")
			want(t, "expiration", d.Expiration, fmt.Sprint(b.clk.Now().Add(30*time.Minute).Unix()))
			want(t, "aps keys", len(d.Aps), 1)
			want(t, "content-available", d.Aps["content-available"], any(float64(1)))
		}},
		{"apns sandbox silent", func() Message {
			m := msg("p4", APNs, IOS, apnsToken(4))
			m.Environment = Sandbox
			return m
		}(), func(t *testing.T, d pushemu.Delivery) {
			want(t, "environment", d.Environment, pushemu.Sandbox)
		}},
		{"apns breaking alert", func() Message {
			m := msg("5f0c7d52-1b9e-4c39-9d8e-3f1b2a4c5d6e", APNs, IOS, apnsToken(5))
			m.Reason, m.Alert = ReasonBreaking, breaking
			return m
		}(), func(t *testing.T, d pushemu.Delivery) {
			want(t, "apns-push-type", d.PushType, "alert")
			want(t, "apns-priority", d.Priority, "10")
			want(t, "apns-id", d.ID, "5f0c7d52-1b9e-4c39-9d8e-3f1b2a4c5d6e")
			want(t, "mutable-content", d.Aps["mutable-content"], any(float64(1)))
			want(t, "alert", d.Alert, true)
			want(t, "reason", d.Data["reason"], "breaking")
		}},
		{"fcm android breaking alert", func() Message {
			m := msg("p6", FCM, Android, "fcm-android-6")
			m.Reason, m.Alert = ReasonBreaking, breaking
			return m
		}(), func(t *testing.T, d pushemu.Delivery) {
			want(t, "android priority", d.Priority, "high")
			want(t, "alert", d.Alert, true)
		}},
		{"fcm ios breaking alert", func() Message {
			m := msg("p7", FCM, IOS, "fcm-ios-7")
			m.Reason, m.Alert = ReasonBreaking, breaking
			return m
		}(), func(t *testing.T, d pushemu.Delivery) {
			want(t, "apns-push-type", d.PushType, "alert")
			want(t, "apns-priority", d.Priority, "10")
			want(t, "mutable-content", d.Aps["mutable-content"], any(float64(1)))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := b.sender.Send(t.Context(), []Message{tt.m})
			if res[0].Action != Delivered {
				t.Fatalf("action: got %v (%s, %v), want delivered", res[0].Action, res[0].Reason, res[0].Err)
			}
			ds := b.emu.Deliveries(tt.m.Token)
			if len(ds) != 1 {
				t.Fatalf("deliveries: got %d, want 1", len(ds))
			}
			d := ds[0]
			want(t, "type", d.Data["type"], "nudge.sync")
			want(t, "task", d.Data["task"], "nudge.sync")
			want(t, "feeds", d.Data["feeds"], "headlines,recent")
			want(t, "since", d.Data["since"], "headlines:120,recent:88")
			want(t, "event", d.Data["event"], "ev-1")
			want(t, "push_id", d.Data["push_id"], tt.m.ID)
			want(t, "sent_at", d.Data["sent_at"], fmt.Sprint(b.clk.Now().UnixMilli()))
			tt.check(t, d)
		})
	}
}

func want[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func TestClassificationAPNs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		reason     string
		retryAfter time.Duration
		action     Action
		wantAfter  time.Duration
	}{
		{"Unregistered", 0, PruneToken, 0},
		{"ExpiredToken", 0, PruneToken, 0},
		{"BadDeviceToken", 0, PruneToken, 0},
		{"DeviceTokenNotForTopic", 0, PruneToken, 0},
		{"TooManyRequests", 0, BackoffDevice, time.Minute},
		{"TooManyRequests", 5 * time.Minute, BackoffDevice, 5 * time.Minute},
		{"IdleTimeout", 0, Retry, 0},
		{"ExpiredProviderToken", 0, Retry, 0},
		{"TooManyProviderTokenUpdates", 0, Retry, 0},
		{"InternalServerError", 0, Retry, 0},
		{"ServiceUnavailable", 7 * time.Second, Retry, 7 * time.Second},
		{"Shutdown", 0, Retry, 0},
		{"InvalidProviderToken", 0, PauseProvider, time.Minute},
		{"MissingProviderToken", 0, PauseProvider, time.Minute},
		{"BadCertificate", 0, PauseProvider, time.Minute},
		{"BadCertificateEnvironment", 0, PauseProvider, time.Minute},
		{"Forbidden", 0, PauseProvider, time.Minute},
		{"BadCollapseId", 0, Permanent, 0},
		{"BadExpirationDate", 0, Permanent, 0},
		{"BadMessageId", 0, Permanent, 0},
		{"BadPriority", 0, Permanent, 0},
		{"BadTopic", 0, Permanent, 0},
		{"DuplicateHeaders", 0, Permanent, 0},
		{"InvalidPushType", 0, Permanent, 0},
		{"MissingDeviceToken", 0, Permanent, 0},
		{"MissingTopic", 0, Permanent, 0},
		{"PayloadEmpty", 0, Permanent, 0},
		{"TopicDisallowed", 0, Permanent, 0},
		{"BadPath", 0, Permanent, 0},
		{"MethodNotAllowed", 0, Permanent, 0},
		{"PayloadTooLarge", 0, Permanent, 0},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.reason, tt.retryAfter), func(t *testing.T) {
			tok := apnsToken(1000 + i)
			b.emu.AddFault(pushemu.Fault{Provider: pushemu.APNs, Token: tok, Reason: tt.reason, RetryAfter: tt.retryAfter})
			r := b.sender.Send(t.Context(), []Message{msg("c", APNs, IOS, tok)})[0]
			want(t, "action", r.Action, tt.action)
			want(t, "reason", r.Reason, tt.reason)
			want(t, "retry after", r.RetryAfter, tt.wantAfter)
			var rej *RejectedError
			if !errors.As(r.Err, &rej) || rej.Reason != tt.reason {
				t.Fatalf("error: got %v, want RejectedError %s", r.Err, tt.reason)
			}
		})
	}
	t.Run("registry unregistered carries timestamp", func(t *testing.T) {
		tok := apnsToken(2000)
		at := time.Unix(1767225600, 0)
		b.emu.Unregister(pushemu.APNs, tok, at)
		r := b.sender.Send(t.Context(), []Message{msg("u", APNs, IOS, tok)})[0]
		want(t, "action", r.Action, PruneToken)
		if !r.UnregisteredAt.Equal(at) {
			t.Fatalf("unregistered at: got %v, want %v", r.UnregisteredAt, at)
		}
	})
}

func TestClassificationFCM(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		name      string
		fault     pushemu.Fault
		action    Action
		reason    string
		wantAfter time.Duration
	}{
		{"unregistered", pushemu.Fault{Reason: "UNREGISTERED"}, PruneToken, "UNREGISTERED", 0},
		{"sender id mismatch", pushemu.Fault{Reason: "SENDER_ID_MISMATCH"}, PruneToken, "SENDER_ID_MISMATCH", 0},
		{"invalid argument", pushemu.Fault{Reason: "INVALID_ARGUMENT"}, Permanent, "INVALID_ARGUMENT", 0},
		// FCM's real answer to a bad token: INVALID_ARGUMENT naming it.
		{"invalid token", pushemu.Fault{Reason: "INVALID_ARGUMENT", Message: "The registration token is not a valid FCM registration token"}, PruneToken, "INVALID_TOKEN", 0},
		{"device quota", pushemu.Fault{Reason: "QUOTA_EXCEEDED", RetryAfter: 90 * time.Second}, BackoffDevice, "QUOTA_EXCEEDED", 90 * time.Second},
		{"project quota", pushemu.Fault{ProjectQuota: true, RetryAfter: 120 * time.Second}, PauseProvider, "RESOURCE_EXHAUSTED", 120 * time.Second},
		{"project quota without retry-after", pushemu.Fault{ProjectQuota: true}, PauseProvider, "RESOURCE_EXHAUSTED", time.Minute},
		{"internal with retry-after", pushemu.Fault{Reason: "INTERNAL", RetryAfter: 5 * time.Second}, Retry, "INTERNAL", 5 * time.Second},
		// The SDK would retry a 503 itself, sleeping inside the send
		// deadline; fcmTransport stops it, so the provider's wait reaches
		// the caller (and the emulator sees one attempt, checked below).
		{"unavailable with long retry-after", pushemu.Fault{Reason: "UNAVAILABLE", RetryAfter: 300 * time.Second}, Retry, "UNAVAILABLE", 300 * time.Second},
		{"unavailable with retry-after", pushemu.Fault{Reason: "UNAVAILABLE", RetryAfter: 30 * time.Second}, Retry, "UNAVAILABLE", 30 * time.Second},
		{"unavailable without retry-after", pushemu.Fault{Reason: "UNAVAILABLE"}, Retry, "UNAVAILABLE", 0},
		{"third party auth", pushemu.Fault{Reason: "THIRD_PARTY_AUTH_ERROR"}, Permanent, "THIRD_PARTY_AUTH_ERROR", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := "fcm-" + strings.ReplaceAll(tt.name, " ", "-")
			f := tt.fault
			f.Provider, f.Token = pushemu.FCM, tok
			b.emu.AddFault(f)
			r := b.sender.Send(t.Context(), []Message{msg("c", FCM, Android, tok)})[0]
			want(t, "action", r.Action, tt.action)
			want(t, "reason", r.Reason, tt.reason)
			want(t, "retry after", r.RetryAfter, tt.wantAfter)
			if r.Err == nil {
				t.Fatal("error: got nil, want the provider error")
			}
			want(t, "attempts seen by the emulator", len(b.emu.Rejections(tok)), 1)
			want(t, "deliveries", b.emu.CountToken(tok), 0)
		})
	}
	t.Run("registry unregistered", func(t *testing.T) {
		b.emu.Unregister(pushemu.FCM, "fcm-gone", b.clk.Now())
		r := b.sender.Send(t.Context(), []Message{msg("g", FCM, Android, "fcm-gone")})[0]
		want(t, "action", r.Action, PruneToken)
	})
}

func TestBatchMixedResults(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var msgs []Message
	for i := range 1200 {
		if i%2 == 0 {
			msgs = append(msgs, msg(fmt.Sprint(i), FCM, Android, fmt.Sprintf("fcm-%d", i)))
		} else {
			msgs = append(msgs, msg(fmt.Sprint(i), APNs, IOS, apnsToken(i)))
		}
	}
	b.emu.Unregister(pushemu.FCM, "fcm-600", b.clk.Now())
	b.emu.Unregister(pushemu.APNs, apnsToken(601), b.clk.Now())
	res := b.sender.Send(t.Context(), msgs)
	for i, r := range res {
		wantAction := Delivered
		if i == 600 || i == 601 {
			wantAction = PruneToken
		}
		if r.Action != wantAction || r.PushID != fmt.Sprint(i) {
			t.Fatalf("result %d: got %v %q (%v), want %v %q", i, r.Action, r.PushID, r.Err, wantAction, fmt.Sprint(i))
		}
	}
	want(t, "emulator deliveries", b.emu.Count(), 1198)
	want(t, "delivered metric", testutil.ToFloat64(b.sender.m.results.WithLabelValues("default", "fcm", "delivered")), float64(599))
}

func TestRefusedBeforeSending(t *testing.T) {
	t.Parallel()
	b := setup(t)
	feeds := make([]string, 300)
	for i := range feeds {
		feeds[i] = fmt.Sprintf("feed-with-a-long-name-%03d", i)
	}
	big := func(p Provider, pl Platform, tok string) Message {
		m := msg("big", p, pl, tok)
		m.Feeds = feeds
		return m
	}
	tests := []struct {
		name string
		m    Message
		err  error
	}{
		{"fcm android over 4096 bytes", big(FCM, Android, "fcm-big"), ErrPayloadTooLarge},
		{"fcm ios over 4096 bytes", big(FCM, IOS, "fcm-big-ios"), ErrPayloadTooLarge},
		{"apns over 4096 bytes", big(APNs, IOS, apnsToken(77)), ErrPayloadTooLarge},
		{"empty token", msg("e", FCM, Android, ""), ErrInvalidMessage},
		{"unknown provider", msg("e", "webpush", Android, "x"), ErrInvalidMessage},
		{"collapse id over 64 bytes", func() Message {
			m := msg("e", APNs, IOS, apnsToken(78))
			m.CollapseID = strings.Repeat("c", 65)
			return m
		}(), ErrInvalidMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := b.sender.Send(t.Context(), []Message{tt.m})[0]
			want(t, "action", r.Action, Permanent)
			if !errors.Is(r.Err, tt.err) {
				t.Fatalf("error: got %v, want %v", r.Err, tt.err)
			}
			want(t, "deliveries", b.emu.CountToken(tt.m.Token), 0)
		})
	}
	r := b.sender.Send(t.Context(), []Message{big(APNs, IOS, apnsToken(79))})[0]
	var pe *PayloadTooLargeError
	if !errors.As(r.Err, &pe) || pe.Size <= MaxPayload || pe.Limit != MaxPayload {
		t.Fatalf("payload error: got %v, want PayloadTooLargeError over %d", r.Err, MaxPayload)
	}
	want(t, "reason", r.Reason, "PayloadTooLarge")
}

func TestProviderNotConfigured(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) { c.APNSKeyFile = "" })
	r := b.sender.Send(t.Context(), []Message{msg("n", APNs, IOS, apnsToken(1))})[0]
	want(t, "action", r.Action, Permanent)
	if !errors.Is(r.Err, ErrProviderNotConfigured) {
		t.Fatalf("error: got %v, want ErrProviderNotConfigured", r.Err)
	}
}

func TestJWTReuseAndRotation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	send := func(n, off int, env Environment) {
		t.Helper()
		msgs := make([]Message, n)
		for i := range msgs {
			msgs[i] = msg(fmt.Sprint(i), APNs, IOS, apnsToken(off+i))
			msgs[i].Environment = env
		}
		for i, r := range b.sender.Send(t.Context(), msgs) {
			if r.Action != Delivered {
				t.Fatalf("push %d: got %v %s, want delivered", i, r.Action, r.Reason)
			}
		}
	}
	send(300, 0, Production)
	send(100, 300, Sandbox)
	want(t, "distinct JWTs after 400 sends", b.emu.DistinctJWTs(), 1)
	b.clk.Advance(39 * time.Minute)
	send(100, 400, Production)
	want(t, "distinct JWTs at 39m", b.emu.DistinctJWTs(), 1)
	b.clk.Advance(2 * time.Minute)
	send(100, 500, Production)
	send(100, 600, Sandbox)
	want(t, "distinct JWTs after the 40m refresh", b.emu.DistinctJWTs(), 2)
	want(t, "rotations metric", testutil.ToFloat64(b.sender.m.jwts.WithLabelValues(b.creds.APNsKeyID)), float64(2))
}

func TestCertificateAuth(t *testing.T) {
	t.Parallel()
	b := setup(t, func(c *Config) {})
	cfg := emuConfig(b.creds)
	cfg.APNSKeyFile, cfg.APNSCertFile = "", b.creds.APNsCertFile
	s, err := New(t.Context(), service.Archetype{Clock: b.clk.Now}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	r := s.Send(t.Context(), []Message{msg("cert", APNs, IOS, apnsToken(9))})[0]
	want(t, "action", r.Action, Delivered)
	if d := b.emu.Deliveries(apnsToken(9)); len(d) != 1 || d[0].JWT != "" {
		t.Fatalf("deliveries: got %+v, want one without JWT", d)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	ok := Config{FCMCredentialsFile: "sa.json"}
	tests := []struct {
		name    string
		mod     func(*Config)
		wantErr string
	}{
		{"fcm only", func(*Config) {}, ""},
		{"nothing configured", func(c *Config) { c.FCMCredentialsFile = "" }, "NUDGE_FCM_CREDENTIALS_FILE"},
		{"endpoint without /v1", func(c *Config) { c.FCMEndpoint = "https://x" }, "NUDGE_FCM_ENDPOINT"},
		{"apns key without ids", func(c *Config) { c.APNSKeyFile, c.APNSTopic = "k.p8", "a.b" }, "NUDGE_APNS_KEY_ID"},
		{"apns without topic", func(c *Config) { c.APNSKeyFile, c.APNSKeyID, c.APNSTeamID = "k.p8", "K", "T" }, "NUDGE_APNS_TOPIC"},
		{"apns key and cert", func(c *Config) {
			c.APNSKeyFile, c.APNSKeyID, c.APNSTeamID, c.APNSTopic, c.APNSCertFile = "k.p8", "K", "T", "a.b", "c.p12"
		}, "not both"},
		{"token refresh too short", func(c *Config) { c.APNSTokenRefresh = 10 * time.Minute }, "NUDGE_APNS_TOKEN_REFRESH"},
		{"token refresh too long", func(c *Config) { c.APNSTokenRefresh = time.Hour }, "NUDGE_APNS_TOKEN_REFRESH"},
		{"pause under a minute", func(c *Config) { c.ProviderPause = time.Second }, "NUDGE_PUSH_PROVIDER_PAUSE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := ok
			tt.mod(&c)
			err := c.withDefaults().validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("validate: got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("validate: got %v, want an error naming %s", err, tt.wantErr)
			}
		})
	}
}

// TestFCMTransportErrorNotRetriedBySDK points FCM at a listener that drops
// every connection: the SDK would retry a transport error four times with
// its own backoff inside the send deadline; the sender must try once and
// hand the retry to the queue.
func TestFCMTransportErrorNotRetriedBySDK(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepts atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepts.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	b := setup(t, func(c *Config) { c.FCMEndpoint = "https://" + ln.Addr().String() + "/v1" })
	r := b.sender.Send(t.Context(), []Message{msg("t", FCM, Android, "fcm-dropped")})[0]
	want(t, "action", r.Action, Retry)
	want(t, "reason", r.Reason, "transport")
	want(t, "retry after", r.RetryAfter, time.Duration(0))
	want(t, "connections", accepts.Load(), int64(1))
}

// TestSendEachReportsAnswersAsTheyArrive holds one APNs push in the
// emulator (fault latency) and checks that the answer to another push of
// the same call is reported while the slow one is still unanswered: the
// caller can record each answer before the whole batch ends.
func TestSendEachReportsAnswersAsTheyArrive(t *testing.T) {
	t.Parallel()
	b := setup(t)
	slow, fast := apnsToken(900), apnsToken(901)
	b.emu.AddFault(pushemu.Fault{Provider: pushemu.APNs, Token: slow, Latency: 2 * time.Second})
	var mu sync.Mutex
	var order []string
	res := b.sender.SendEach(t.Context(), []Message{msg("s", APNs, IOS, slow), msg("f", APNs, IOS, fast)}, func(i int, r Result) {
		mu.Lock()
		defer mu.Unlock()
		order = append(order, r.PushID)
		if r.PushID == "f" && b.emu.CountToken(slow) != 0 {
			t.Error("the fast push was reported only after the slow one was answered")
		}
	})
	want(t, "slow", res[0].Action, Delivered)
	want(t, "fast", res[1].Action, Delivered)
	want(t, "reports", strings.Join(order, ","), "f,s")
}
