package pushemu

//lint:file-ignore SA1019 the apns2 client under test is built on x/net/http2.Transport.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/messaging"
	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"

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
	emu   *Emulator
	creds Credentials
	clk   *clock
	apns  *apns2.Client
	fcm   *messaging.Client
}

func setup(t *testing.T) *bundle {
	t.Helper()
	clk := &clock{t: time.Now()}
	emu, err := New(service.Archetype{Clock: clk.Now}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Stop)
	creds, err := emu.WriteCredentials(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(emu.CAPEM())

	key, err := token.AuthKeyFromFile(creds.APNsKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	ac := apns2.NewTokenClient(&token.Token{AuthKey: key, KeyID: creds.APNsKeyID, TeamID: creds.APNsTeamID})
	ac.Host = creds.APNsHost
	ac.HTTPClient.Transport.(*http2.Transport).TLSClientConfig = &tls.Config{RootCAs: pool}
	t.Cleanup(ac.CloseIdleConnections)

	base := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
	rt, err := htransport.NewTransport(t.Context(), base,
		option.WithAuthCredentialsFile(option.ServiceAccount, creds.FCMCredentialsFile),
		option.WithScopes("https://www.googleapis.com/auth/firebase.messaging"),
		option.WithTelemetryDisabled())
	if err != nil {
		t.Fatal(err)
	}
	app, err := firebase.NewApp(t.Context(), &firebase.Config{ProjectID: creds.FCMProjectID},
		option.WithHTTPClient(&http.Client{Transport: rt}), option.WithEndpoint(creds.FCMEndpoint))
	if err != nil {
		t.Fatal(err)
	}
	fc, err := app.Messaging(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(base.CloseIdleConnections)
	return &bundle{emu: emu, creds: creds, clk: clk, apns: ac, fcm: fc}
}

const iosToken = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"

func TestAPNsRejects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	silent := []byte(`{"aps":{"content-available":1},"type":"nudge.sync"}`)
	tests := []struct {
		name       string
		n          apns2.Notification
		wantStatus int
		wantReason string
	}{
		{"valid background push", apns2.Notification{Topic: b.creds.APNsTopic, PushType: apns2.PushTypeBackground, Priority: 5, Payload: silent}, 200, ""},
		{"background at priority 10", apns2.Notification{Topic: b.creds.APNsTopic, PushType: apns2.PushTypeBackground, Priority: 10, Payload: silent}, 400, "BadPriority"},
		{"alert in background push", apns2.Notification{Topic: b.creds.APNsTopic, PushType: apns2.PushTypeBackground, Priority: 5, Payload: []byte(`{"aps":{"content-available":1,"alert":"hi"}}`)}, 400, "InvalidPushType"},
		{"badge in background push", apns2.Notification{Topic: b.creds.APNsTopic, PushType: apns2.PushTypeBackground, Priority: 5, Payload: []byte(`{"aps":{"content-available":1,"badge":1}}`)}, 400, "InvalidPushType"},
		{"background without content-available", apns2.Notification{Topic: b.creds.APNsTopic, PushType: apns2.PushTypeBackground, Priority: 5, Payload: []byte(`{"aps":{}}`)}, 400, "InvalidPushType"},
		{"missing topic", apns2.Notification{PushType: apns2.PushTypeBackground, Priority: 5, Payload: silent}, 400, "MissingTopic"},
		{"foreign topic", apns2.Notification{Topic: "com.other.app", PushType: apns2.PushTypeBackground, Priority: 5, Payload: silent}, 400, "TopicDisallowed"},
		{"collapse id over 64 bytes", apns2.Notification{Topic: b.creds.APNsTopic, PushType: apns2.PushTypeBackground, Priority: 5, CollapseID: strings.Repeat("c", 65), Payload: silent}, 400, "BadCollapseId"},
		{"payload over 4096 bytes", apns2.Notification{Topic: b.creds.APNsTopic, PushType: apns2.PushTypeBackground, Priority: 5, Payload: []byte(`{"aps":{"content-available":1},"x":"` + strings.Repeat("x", 4100) + `"}`)}, 413, "PayloadTooLarge"},
		{"bad apns-id", apns2.Notification{ApnsID: "not-a-uuid", Topic: b.creds.APNsTopic, PushType: apns2.PushTypeBackground, Priority: 5, Payload: silent}, 400, "BadMessageId"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := tt.n
			n.DeviceToken = iosToken
			resp, err := b.apns.PushWithContext(t.Context(), &n)
			if err != nil {
				t.Fatalf("push: %v", err)
			}
			if resp.StatusCode != tt.wantStatus || resp.Reason != tt.wantReason {
				t.Fatalf("response: got %d %q, want %d %q", resp.StatusCode, resp.Reason, tt.wantStatus, tt.wantReason)
			}
		})
	}
}

func TestAPNsProviderTokenAge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	n := &apns2.Notification{DeviceToken: iosToken, Topic: b.creds.APNsTopic, PushType: apns2.PushTypeBackground, Priority: 5, Payload: []byte(`{"aps":{"content-available":1}}`)}
	push := func() *apns2.Response {
		t.Helper()
		resp, err := b.apns.PushWithContext(t.Context(), n)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if got := push(); got.StatusCode != 200 {
		t.Fatalf("first push: got %d %s, want 200", got.StatusCode, got.Reason)
	}
	// A new JWT on the same connection within 20 minutes is throttled.
	b.apns.Token.IssuedAt = 0
	if got := push(); got.Reason != apns2.ReasonTooManyProviderTokenUpdates {
		t.Fatalf("token changed after 1s: got %d %q, want 429 TooManyProviderTokenUpdates", got.StatusCode, got.Reason)
	}
	b.clk.Advance(21 * time.Minute)
	if got := push(); got.StatusCode != 200 {
		t.Fatalf("token changed after 21m: got %d %q, want 200", got.StatusCode, got.Reason)
	}
	if got := b.emu.DistinctJWTs(); got != 2 {
		t.Fatalf("distinct JWTs: got %d, want 2", got)
	}
	// The same JWT 61 minutes after its iat has expired.
	b.clk.Advance(61 * time.Minute)
	if got := push(); got.Reason != apns2.ReasonExpiredProviderToken {
		t.Fatalf("old token: got %d %q, want 403 ExpiredProviderToken", got.StatusCode, got.Reason)
	}
}

func TestAPNsRegistry(t *testing.T) {
	t.Parallel()
	b := setup(t)
	gone := strings.Repeat("ab", 32)
	sandboxOnly := strings.Repeat("cd", 32)
	at := time.Unix(1767225600, 0)
	b.emu.Unregister(APNs, gone, at)
	b.emu.AddToken(APNs, sandboxOnly, Sandbox)
	payload := []byte(`{"aps":{"content-available":1}}`)
	for _, tc := range []struct {
		tok    string
		status int
		reason string
	}{{gone, 410, "Unregistered"}, {sandboxOnly, 400, "BadDeviceToken"}, {"xyz", 400, "BadDeviceToken"}} {
		resp, err := b.apns.PushWithContext(t.Context(), &apns2.Notification{DeviceToken: tc.tok, Topic: b.creds.APNsTopic, PushType: apns2.PushTypeBackground, Priority: 5, Payload: payload})
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.status || resp.Reason != tc.reason {
			t.Fatalf("token %s: got %d %q, want %d %q", tc.tok, resp.StatusCode, resp.Reason, tc.status, tc.reason)
		}
		if tc.status == 410 && !resp.Timestamp.Equal(at) {
			t.Fatalf("unregistered timestamp: got %v, want %v", resp.Timestamp.Time, at)
		}
	}
}

func TestFCMRejects(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ttl := time.Hour
	long := 29 * 24 * time.Hour
	tests := []struct {
		name    string
		msg     messaging.Message
		wantErr bool
	}{
		{"valid android data message", messaging.Message{Data: map[string]string{"type": "nudge.sync"}, Android: &messaging.AndroidConfig{Priority: "normal", TTL: &ttl}}, false},
		{"valid ios background", messaging.Message{Data: map[string]string{"type": "nudge.sync"}, APNS: &messaging.APNSConfig{Headers: map[string]string{"apns-push-type": "background", "apns-priority": "5"}, Payload: &messaging.APNSPayload{Aps: &messaging.Aps{ContentAvailable: true}}}}, false},
		{"ios data message at priority 10", messaging.Message{Data: map[string]string{"type": "nudge.sync"}, APNS: &messaging.APNSConfig{Headers: map[string]string{"apns-priority": "10"}, Payload: &messaging.APNSPayload{Aps: &messaging.Aps{ContentAvailable: true}}}}, true},
		{"ios background at priority 10", messaging.Message{APNS: &messaging.APNSConfig{Headers: map[string]string{"apns-push-type": "background", "apns-priority": "10"}, Payload: &messaging.APNSPayload{Aps: &messaging.Aps{ContentAvailable: true}}}}, true},
		{"alert in ios background", messaging.Message{APNS: &messaging.APNSConfig{Headers: map[string]string{"apns-push-type": "background", "apns-priority": "5"}, Payload: &messaging.APNSPayload{Aps: &messaging.Aps{ContentAvailable: true, AlertString: "hi"}}}}, true},
		{"data over 4096 bytes", messaging.Message{Data: map[string]string{"big": strings.Repeat("x", 4100)}}, true},
		{"ttl over 28 days", messaging.Message{Data: map[string]string{"a": "b"}, Android: &messaging.AndroidConfig{TTL: &long}}, true},
		{"reserved data key", messaging.Message{Data: map[string]string{"google.x": "b"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := tt.msg
			m.Token = "fcm-token-" + strings.ReplaceAll(tt.name, " ", "-")
			_, err := b.fcm.Send(t.Context(), &m)
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("error: got %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr && !messaging.IsInvalidArgument(err) {
				t.Fatalf("error kind: got %v, want INVALID_ARGUMENT", err)
			}
			if want := map[bool]int{true: 0, false: 1}[tt.wantErr]; b.emu.CountToken(m.Token) != want {
				t.Fatalf("deliveries: got %d, want %d", b.emu.CountToken(m.Token), want)
			}
		})
	}
}

func TestFCMErrorShape(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tests := []struct {
		fault Fault
		is    func(error) bool
	}{
		{Fault{Reason: "UNREGISTERED"}, messaging.IsUnregistered},
		{Fault{Reason: "SENDER_ID_MISMATCH"}, messaging.IsSenderIDMismatch},
		{Fault{Reason: "QUOTA_EXCEEDED"}, messaging.IsQuotaExceeded},
		{Fault{Reason: "INTERNAL"}, messaging.IsInternal},
		{Fault{Reason: "THIRD_PARTY_AUTH_ERROR"}, messaging.IsThirdPartyAuthError},
		{Fault{Reason: "INVALID_ARGUMENT"}, messaging.IsInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.fault.Reason, func(t *testing.T) {
			tok := "tok-" + tt.fault.Reason
			f := tt.fault
			f.Token = tok
			b.emu.AddFault(f)
			_, err := b.fcm.Send(t.Context(), &messaging.Message{Token: tok, Data: map[string]string{"a": "b"}})
			if !tt.is(err) {
				t.Fatalf("error: got %v, want %s", err, tt.fault.Reason)
			}
		})
	}
}

func TestWaitAndSubscribe(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ch, cancel := b.emu.Subscribe(4)
	defer cancel()
	ctx, stop := context.WithTimeout(t.Context(), 10*time.Second)
	defer stop()
	go b.fcm.Send(ctx, &messaging.Message{Token: "waited", Data: map[string]string{"a": "b"}})
	ds, err := b.emu.WaitToken(ctx, "waited", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Data["a"] != "b" {
		t.Fatalf("deliveries: got %+v, want one with a=b", ds)
	}
	select {
	case d := <-ch:
		if d.Token != "waited" {
			t.Fatalf("subscribed delivery token: got %q, want %q", d.Token, "waited")
		}
	case <-ctx.Done():
		t.Fatal("no delivery on the subscription")
	}
	ctx2, stop2 := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer stop2()
	if err := b.emu.WaitCount(ctx2, 99); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait for more than was sent: got %v, want deadline exceeded", err)
	}
}
