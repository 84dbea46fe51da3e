// Command devstack runs the whole of nudge locally, in one process: an
// embedded Redis (or NUDGE_REDIS_URL), the api and the dispatcher as in
// production, the FCM and APNs emulators, a sample news room and a
// simulated fleet of devices. `make run` starts it. It prints the console
// URL with a freshly minted admin key, then a live summary line of nudge's
// own push and wake figures. See README.md and internal/devstack.
//
// Usage:
//
//	devstack [flags]   (flags and NUDGE_DEVSTACK_* variables: devstack -help)
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/devstack"
)

func main() {
	restore := takeTerminal(os.Getenv)
	err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	restore()
	if err != nil && !errors.Is(err, config.ErrHelp) {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

// run is the program: the devstack with the process's arguments and
// environment.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return devstack.Run(ctx, args, getenv, stdout, stderr)
}
