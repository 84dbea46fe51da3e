//lint:file-ignore SA1019 the bare apns2 loop configures apns2's x/net/http2.Transport.

package pushemutest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/messaging"
	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"

	"github.com/nudge-dev/nudge/internal/devices/devicestest"
	"github.com/nudge-dev/nudge/internal/pushemu"
)

// Bare is the benchmarks' ceiling: the provider SDKs called directly, with
// the dispatcher's provider concurrency, on prebuilt pushes to an emulator.
type Bare struct {
	apns     *apns2.Client
	fcm      *messaging.Client
	apnsConc int
	fcmConc  int
	topic    string
}

// BarePushes are prebuilt pushes, split by provider.
type BarePushes struct {
	apns []*apns2.Notification
	fcm  []*messaging.Message
}

// Len is the number of pushes.
func (bp BarePushes) Len() int { return len(bp.apns) + len(bp.fcm) }

// NewBare builds APNs and FCM clients for the emulator of creds, as an
// operator would configure any client of the providers, sending with
// apnsConc pushes and fcmConc SendEach calls in flight.
func NewBare(tb testing.TB, creds pushemu.Credentials, apnsConc, fcmConc int) *Bare {
	tb.Helper()
	ca, err := os.ReadFile(creds.CAFile)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		tb.Fatal("emulator CA is not PEM")
	}
	key, err := token.AuthKeyFromFile(creds.APNsKeyFile)
	if err != nil {
		tb.Fatal(err)
	}
	ac := apns2.NewTokenClient(&token.Token{AuthKey: key, KeyID: creds.APNsKeyID, TeamID: creds.APNsTeamID})
	ac.Host = creds.APNsHost
	ac.HTTPClient.Transport.(*http2.Transport).TLSClientConfig = &tls.Config{RootCAs: pool}
	tb.Cleanup(ac.CloseIdleConnections)

	base := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true, MaxIdleConns: 256, MaxIdleConnsPerHost: 256}
	tb.Cleanup(base.CloseIdleConnections)
	rt, err := htransport.NewTransport(tb.Context(), base,
		option.WithAuthCredentialsFile(option.ServiceAccount, creds.FCMCredentialsFile),
		option.WithScopes("https://www.googleapis.com/auth/firebase.messaging"), option.WithTelemetryDisabled())
	if err != nil {
		tb.Fatal(err)
	}
	app, err := firebase.NewApp(tb.Context(), &firebase.Config{ProjectID: creds.FCMProjectID},
		option.WithHTTPClient(&http.Client{Transport: rt}), option.WithEndpoint(creds.FCMEndpoint), option.WithTelemetryDisabled())
	if err != nil {
		tb.Fatal(err)
	}
	fc, err := app.Messaging(tb.Context())
	if err != nil {
		tb.Fatal(err)
	}
	return &Bare{apns: ac, fcm: fc, topic: creds.APNsTopic, apnsConc: apnsConc, fcmConc: fcmConc}
}

// Build prebuilds the silent breaking push of each devicestest device
// from..to for event, naming the range (since, until] of feed: the
// payload fields and headers the dispatcher sends.
func (s *Bare) Build(from, to uint64, feed string, since, until int64, event string) (BarePushes, error) {
	var bp BarePushes
	now := time.Now()
	ttl := time.Hour
	for id := from; id <= to; id++ {
		collapse := "n" + strconv.FormatUint(id, 36) + "-" + event
		data := map[string]string{
			"type": "nudge.sync", "task": "nudge.sync", "feeds": feed, "event": event,
			"push_id": "b" + strconv.FormatInt(now.UnixMilli(), 36) + "." + collapse,
			"reason":  "breaking", "since": feed + ":" + strconv.FormatInt(since, 10),
			"until": feed + ":" + strconv.FormatInt(until, 10), "sent_at": strconv.FormatInt(now.UnixMilli(), 10),
		}
		pv, pl := devicestest.Kind(id)
		if pv == "apns" {
			body := map[string]any{"aps": map[string]any{"content-available": 1}}
			for k, v := range data {
				body[k] = v
			}
			payload, err := json.Marshal(body)
			if err != nil {
				return bp, fmt.Errorf("encode payload: %w", err)
			}
			bp.apns = append(bp.apns, &apns2.Notification{
				DeviceToken: devicestest.Token(id), Topic: s.topic, PushType: apns2.PushTypeBackground,
				Priority: apns2.PriorityLow, CollapseID: collapse, Expiration: now.Add(ttl), Payload: payload,
			})
			continue
		}
		m := &messaging.Message{Token: devicestest.Token(id), Data: data,
			Android: &messaging.AndroidConfig{Priority: "normal", TTL: &ttl, CollapseKey: collapse}}
		if pl == "ios" {
			m.APNS = &messaging.APNSConfig{
				Headers: map[string]string{"apns-push-type": "background", "apns-priority": "5",
					"apns-expiration": strconv.FormatInt(now.Add(ttl).Unix(), 10), "apns-collapse-id": collapse},
				Payload: &messaging.APNSPayload{Aps: &messaging.Aps{ContentAvailable: true}},
			}
		}
		bp.fcm = append(bp.fcm, m)
	}
	return bp, nil
}

// Send sends bp: APNs with apnsConc pushes in flight and FCM in SendEach
// calls of 500 with fcmConc calls in flight, both providers at once, as
// the push sender does for a mixed batch.
func (s *Bare) Send(ctx context.Context, bp BarePushes) error {
	var failed, next atomic.Int64
	var wg sync.WaitGroup
	for range min(s.apnsConc, len(bp.apns)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(bp.apns) {
					return
				}
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				resp, err := s.apns.PushWithContext(pctx, bp.apns[i])
				cancel()
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		})
	}
	sem := make(chan struct{}, s.fcmConc)
	for lo := 0; lo < len(bp.fcm); lo += 500 {
		batch := bp.fcm[lo:min(lo+500, len(bp.fcm))]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			br, err := s.fcm.SendEach(bctx, batch)
			if err != nil {
				failed.Add(int64(len(batch)))
				return
			}
			failed.Add(int64(br.FailureCount))
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("bare loop: %d of %d pushes failed", n, bp.Len())
	}
	return nil
}
