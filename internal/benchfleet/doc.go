// Package benchfleet holds the fleet benchmark (BenchmarkFleet, run by
// `make bench-1m`): nudge's api, dispatcher and push emulator run as their
// own OS processes, as in production, on a private redis-server; a fleet of
// NUDGE_BENCH_DEVICES devices is written straight into the registry's
// layout; one breaking sync is triggered through POST /v1/syncs, and the
// benchmark follows it until the emulator has every push. It samples the
// dispatcher's memory and CPU from /proc while it runs, Redis's CPU and
// memory from INFO, and compares the rate with a bare SDK loop sending the
// same pushes to the same emulator process in the same run.
//
// The package has no code outside its test: everything it drives is a
// public surface (the binaries, their settings, HTTP APIs and Redis).
package benchfleet
