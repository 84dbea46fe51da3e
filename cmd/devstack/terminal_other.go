//go:build !linux

package main

// takeTerminal does nothing here: only on Linux does the devstack take
// the terminal's foreground from make (see terminal_linux.go).
func takeTerminal(func(string) string) (restore func()) { return func() {} }
