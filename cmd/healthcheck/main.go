// Command healthcheck GETs one URL and exits 0 when it answers 2xx, 1
// otherwise. The nudge container image is distroless (no shell, no curl),
// so its HEALTHCHECK and the compose healthchecks run this binary.
//
// Usage:
//
//	healthcheck [url]
//
// Without a url it checks http://127.0.0.1<port>/healthz, where the port is
// taken from NUDGE_HTTP_ADDR (default :8080, the api's).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"time"
)

// usage is the -help text.
const usage = `healthcheck GETs one URL and exits 0 when it answers 2xx, 1 otherwise (the distroless image's HEALTHCHECK).

Usage:
  healthcheck [url]

Without a url it checks http://127.0.0.1:<port>/healthz, the port taken from NUDGE_HTTP_ADDR (default :8080).
`

// timeout bounds the whole check, connection and body included.
const timeout = 3 * time.Second

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
}

// run checks the URL in args (or the default one) and returns nil when it
// answered 2xx.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 1 && slices.Contains([]string{"-h", "-help", "--help"}, args[0]) {
		fmt.Fprint(stdout, usage)
		return nil
	}
	url, err := target(args, getenv)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("bad url %q: %w", url, err)
	}
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("get %s: status %d: %s", url, resp.StatusCode, body)
	}
	fmt.Fprintf(stdout, "%s: %d\n", url, resp.StatusCode)
	return nil
}

// target returns the URL to check: the single argument, or the /healthz of
// the port in NUDGE_HTTP_ADDR on the loopback address.
func target(args []string, getenv func(string) string) (string, error) {
	switch len(args) {
	case 1:
		return args[0], nil
	case 0:
	default:
		return "", errors.New("usage: healthcheck [url]")
	}
	addr := getenv("NUDGE_HTTP_ADDR")
	if addr == "" {
		addr = ":8080"
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return "", fmt.Errorf("NUDGE_HTTP_ADDR %q has no port: pass the url to check as the argument", addr)
	}
	return "http://127.0.0.1:" + port + "/healthz", nil
}
