package dispatcher

import (
	"io"

	"github.com/nudge-dev/nudge/internal/config"
)

// Stores are the stores a Dispatcher runs on, for the tests to submit
// events and read their progress.
type Stores = parts

// Stores returns the stores d runs on.
func (d *Dispatcher) Stores() *Stores { return d.pipe }

// ConfigFromEnv maps environment variables to a Config exactly as Run does,
// defaults included, so tests and benchmarks run with the binary's settings.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	v, err := config.Parse("dispatcher", Settings(), nil, getenv, io.Discard)
	if err != nil {
		return Config{}, err
	}
	cfg, _, err := dispatcherConfig(v)
	return cfg, err
}
