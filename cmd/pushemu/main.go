// Command pushemu runs the FCM and APNs emulators of internal/pushemu as a
// standalone server, writes ready-made sender credentials into a directory
// and prints the NUDGE_* variables that point nudge at it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nudge-dev/nudge/internal/pushemu"
	"github.com/nudge-dev/nudge/internal/service"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "pushemu:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		fcmAddr   = fs.String("fcm-addr", cmpEnv(getenv, "PUSHEMU_FCM_ADDR", "127.0.0.1:8443"), "FCM HTTP/2 TLS listen address")
		apnsAddr  = fs.String("apns-addr", cmpEnv(getenv, "PUSHEMU_APNS_ADDR", "127.0.0.1:8444"), "APNs production HTTP/2 TLS listen address")
		sandAddr  = fs.String("apns-sandbox-addr", cmpEnv(getenv, "PUSHEMU_APNS_SANDBOX_ADDR", "127.0.0.1:8445"), "APNs sandbox HTTP/2 TLS listen address")
		ctrlAddr  = fs.String("control-addr", cmpEnv(getenv, "PUSHEMU_CONTROL_ADDR", "127.0.0.1:8446"), "plain HTTP address: OAuth token endpoint and /admin/ inspection API")
		dir       = fs.String("dir", cmpEnv(getenv, "PUSHEMU_DIR", ""), "directory for the generated credentials (default: a new temp dir)")
		hosts     = fs.String("hosts", getenv("PUSHEMU_HOSTS"), "extra comma-separated host names or IPs for the TLS certificate")
		topic     = fs.String("topic", cmpEnv(getenv, "PUSHEMU_TOPIC", "dev.nudge.app"), "APNs topic (bundle id) to accept")
		project   = fs.String("project", cmpEnv(getenv, "PUSHEMU_PROJECT", "nudge-emu"), "Firebase project id")
		strict    = fs.Bool("strict-tokens", false, "reject tokens not registered through /admin/tokens")
		latency   = fs.Duration("latency", 0, "latency added to every provider response")
		streams   = fs.Uint("max-streams", 1000, "HTTP/2 MAX_CONCURRENT_STREAMS advertised")
		keep      = fs.Int("keep", 64, "deliveries kept per token for inspection")
		verbosity = fs.Bool("v", false, "log debug output")
	)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `pushemu runs nudge's FCM and APNs emulators as a standalone server, writes sender credentials for them and prints the NUDGE_* variables that point the dispatcher at them.

Usage:
  pushemu [flags]

Flags (-fcm-addr … -project also read PUSHEMU_<FLAG>, e.g. PUSHEMU_FCM_ADDR; a flag wins):
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbosity {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if *dir == "" {
		d, err := os.MkdirTemp("", "pushemu-")
		if err != nil {
			return fmt.Errorf("credentials dir: %w", err)
		}
		*dir = d
	}
	var extra []string
	if *hosts != "" {
		extra = strings.Split(*hosts, ",")
	}
	emu, err := pushemu.New(service.Archetype{Logger: logger}, pushemu.Config{
		FCMAddr: *fcmAddr, APNsAddr: *apnsAddr, APNsSandboxAddr: *sandAddr, ControlAddr: *ctrlAddr,
		Hosts: extra, Topic: *topic, ProjectID: *project, StrictTokens: *strict, Latency: *latency,
		MaxConcurrentStreams: uint32(*streams), KeepPerToken: *keep,
	})
	if err != nil {
		return err
	}
	if err := emu.Start(ctx); err != nil {
		return err
	}
	defer emu.Stop()
	creds, err := emu.WriteCredentials(*dir)
	if err != nil {
		return err
	}
	for _, kv := range creds.Env() {
		fmt.Fprintln(stdout, kv)
	}
	logger.InfoContext(ctx, "pushemu ready", "fcm", creds.FCMEndpoint, "apns", creds.APNsHost,
		"apns_sandbox", creds.APNsSandboxHost, "control", emu.ControlURL(), "dir", *dir)
	<-ctx.Done()
	logger.InfoContext(ctx, "pushemu stopping")
	if err := ctx.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func cmpEnv(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}
