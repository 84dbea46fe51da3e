//go:build race

package stacktest

const raceEnabled = true
