package push

//lint:file-ignore SA1019 the bare apns2 loop configures apns2's x/net/http2.Transport.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/messaging"
	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"
	"google.golang.org/api/option"
	htransport "google.golang.org/api/transport/http"

	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/pushemu/pushemutest"
	"github.com/nudge-dev/nudge/internal/service"
)

// benchPushes is the number of pushes per side per benchmark op;
// NUDGE_BENCH_PUSHES overrides the default 100000.
func benchPushes() int {
	if n, err := strconv.Atoi(os.Getenv("NUDGE_BENCH_PUSHES")); err == nil && n > 0 {
		return n
	}
	return 100_000
}

type usage struct {
	wall   time.Duration
	cpu    time.Duration
	allocs uint64
}

// measure runs f and returns its wall time, process CPU time and heap
// allocations. The emulator runs in this process, so CPU and allocations
// include its share; the sender and the baseline pay the same emulator.
func measure(f func()) usage {
	var ms0, ms1 runtime.MemStats
	var ru0, ru1 syscall.Rusage
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	start := time.Now()
	f()
	wall := time.Since(start)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	runtime.ReadMemStats(&ms1)
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	return usage{wall: wall, cpu: cpu, allocs: ms1.Mallocs - ms0.Mallocs}
}

func (u *usage) add(v usage) { u.wall += v.wall; u.cpu += v.cpu; u.allocs += v.allocs }

// interleave runs the sender and the baseline over n pushes in rounds of
// at most 10,000, alternating which goes first, so both see the same
// machine load (the 2 cores are shared).
func interleave(n int, sender, baseline func(lo, hi int)) (su, bu usage) {
	const round = 10_000
	for k, lo := 0, 0; lo < n; k, lo = k+1, lo+round {
		hi := min(lo+round, n)
		if k%2 == 0 {
			bu.add(measure(func() { baseline(lo, hi) }))
			su.add(measure(func() { sender(lo, hi) }))
		} else {
			su.add(measure(func() { sender(lo, hi) }))
			bu.add(measure(func() { baseline(lo, hi) }))
		}
	}
	return su, bu
}

func report(b *testing.B, n int, sender, base usage) {
	sp := float64(n) / sender.wall.Seconds()
	bp := float64(n) / base.wall.Seconds()
	b.ReportMetric(sp, "pushes/s")
	b.ReportMetric(bp, "baseline_pushes/s")
	b.ReportMetric(sp/bp, "ratio")
	b.ReportMetric(float64(sender.cpu.Microseconds())/float64(n), "cpu_µs/push")
	b.ReportMetric(float64(base.cpu.Microseconds())/float64(n), "baseline_cpu_µs/push")
	b.ReportMetric(float64(sender.allocs)/float64(n), "allocs/push")
	b.ReportMetric(float64(base.allocs)/float64(n), "baseline_allocs/push")
}

func benchEmulator(b *testing.B) (*pushemu.Emulator, pushemu.Credentials) {
	emu, creds := pushemutest.Start(b, service.Archetype{}, pushemu.Config{KeepPerToken: 1})
	return emu, creds
}

func caPool(b *testing.B, emu *pushemu.Emulator) *x509.CertPool {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(emu.CAPEM()) {
		b.Fatal("emulator CA")
	}
	return p
}

// BenchmarkAPNs sends benchPushes silent pushes per op through the Sender
// and, in the same op, through a bare loop of apns2 PushWithContext calls
// with the same concurrency on a prebuilt notification.
func BenchmarkAPNs(b *testing.B) {
	emu, creds := benchEmulator(b)
	n := benchPushes()
	s, err := New(b.Context(), service.Archetype{}, emuConfig(creds))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i] = msg(strconv.Itoa(i), APNs, IOS, apnsToken(i%1000))
	}

	key, err := token.AuthKeyFromFile(creds.APNsKeyFile)
	if err != nil {
		b.Fatal(err)
	}
	bare := apns2.NewTokenClient(&token.Token{AuthKey: key, KeyID: creds.APNsKeyID, TeamID: creds.APNsTeamID})
	bare.Host = creds.APNsHost
	bare.HTTPClient.Transport.(*http2.Transport).TLSClientConfig = &tls.Config{RootCAs: caPool(b, emu)}
	b.Cleanup(bare.CloseIdleConnections)
	payload, _ := apnsPayload(&fields{typ: "nudge.sync", task: "nudge.sync", feeds: "headlines,recent", event: "ev-1", pushID: "1", reason: "feed", since: "headlines:120,recent:88", sentAt: "1767225600000"}, nil)
	baseline := func(ctx context.Context, lo, hi int) {
		var next atomic.Int64
		next.Store(int64(lo))
		var wg sync.WaitGroup
		for range s.cfg.APNSConcurrency {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= hi {
						return
					}
					nt := &apns2.Notification{DeviceToken: apnsToken(i % 1000), Topic: creds.APNsTopic, PushType: apns2.PushTypeBackground, Priority: 5, CollapseID: "feeds", Expiration: time.Now().Add(time.Hour), Payload: payload}
					pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					resp, err := bare.PushWithContext(pctx, nt)
					cancel()
					if err != nil || resp.StatusCode != 200 {
						b.Errorf("baseline push: %v %v", err, resp)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	// Warm both paths: connections and JWTs.
	s.Send(b.Context(), msgs[:256])
	baseline(b.Context(), 0, 256)

	b.ResetTimer()
	for b.Loop() {
		su, bu := interleave(n, func(lo, hi int) { sendAll(b, s, msgs[lo:hi]) }, func(lo, hi int) { baseline(b.Context(), lo, hi) })
		report(b, n, su, bu)
	}
}

// BenchmarkFCM sends benchPushes silent Android pushes per op through the
// Sender and, in the same op, through bare SendEach calls of 500 prebuilt
// messages with the same number of concurrent calls.
func BenchmarkFCM(b *testing.B) {
	emu, creds := benchEmulator(b)
	n := benchPushes()
	s, err := New(b.Context(), service.Archetype{}, emuConfig(creds))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Close)
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i] = msg(strconv.Itoa(i), FCM, Android, fmt.Sprintf("fcm-bench-token-%d", i%1000))
	}

	base := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool(b, emu)}, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 256}
	rt, err := htransport.NewTransport(b.Context(), base,
		option.WithAuthCredentialsFile(option.ServiceAccount, creds.FCMCredentialsFile),
		option.WithScopes(fcmScope), option.WithTelemetryDisabled())
	if err != nil {
		b.Fatal(err)
	}
	app, err := firebase.NewApp(b.Context(), &firebase.Config{ProjectID: creds.FCMProjectID},
		option.WithHTTPClient(&http.Client{Transport: rt}), option.WithEndpoint(creds.FCMEndpoint), option.WithTelemetryDisabled())
	if err != nil {
		b.Fatal(err)
	}
	bare, err := app.Messaging(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(base.CloseIdleConnections)
	ttl := time.Hour
	pre := make([]*messaging.Message, n)
	for i := range pre {
		pre[i] = &messaging.Message{Token: msgs[i].Token, Data: map[string]string{
			"type": "nudge.sync", "task": "nudge.sync", "feeds": "headlines,recent", "event": "ev-1",
			"push_id": msgs[i].ID, "reason": "feed", "since": "headlines:120,recent:88", "sent_at": "1767225600000"},
			Android: &messaging.AndroidConfig{Priority: "normal", TTL: &ttl, CollapseKey: "feeds"}}
	}
	baseline := func(ctx context.Context, pre []*messaging.Message) {
		sem := make(chan struct{}, s.cfg.FCMConcurrency)
		var wg sync.WaitGroup
		for lo := 0; lo < len(pre); lo += fcmBatch {
			batch := pre[lo:min(lo+fcmBatch, len(pre))]
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				br, err := bare.SendEach(bctx, batch)
				if err != nil || br.FailureCount > 0 {
					b.Errorf("baseline send each: %v", err)
				}
			})
		}
		wg.Wait()
	}
	s.Send(b.Context(), msgs[:1000])
	baseline(b.Context(), pre[:1000])

	b.ResetTimer()
	for b.Loop() {
		su, bu := interleave(n, func(lo, hi int) { sendAll(b, s, msgs[lo:hi]) }, func(lo, hi int) { baseline(b.Context(), pre[lo:hi]) })
		report(b, n, su, bu)
	}
}

func sendAll(b *testing.B, s *Sender, msgs []Message) {
	for i, r := range s.Send(b.Context(), msgs) {
		if r.Action != Delivered {
			b.Fatalf("push %d: %v %s %v", i, r.Action, r.Reason, r.Err)
		}
	}
}
