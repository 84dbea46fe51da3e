// Command api serves nudge's HTTP API: the device registry, the feed
// catalogue, editor syncs, the app's sync read and wake receipts, the
// console, health and metrics. See README.md and docs/operations.md.
//
// Usage:
//
//	api [flags]                  serve (flags and NUDGE_* variables: api -help)
//	api mint-key <name> <role>   mint an API key (role editor or admin)
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/httpapi"
)

func main() {
	if err := httpapi.Run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, config.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}
