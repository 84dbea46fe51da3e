// Command dispatcher watches the news feeds and sends the silent pushes:
// feed watcher, fan-out planner, throttle scheduler and push workers. It
// serves /healthz, /readyz and /metrics. See docs/operations.md.
//
// Usage:
//
//	dispatcher [flags]   (flags and NUDGE_* variables: dispatcher -help)
package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/dispatcher"
)

func main() {
	if err := dispatcher.Run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, config.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		os.Exit(1)
	}
}
