package main

import (
	"os"
	"os/signal"
	"syscall"
	"unsafe"
)

// takeTerminal makes the devstack the terminal's foreground process group
// when make started it (MAKELEVEL is set) from a terminal, and returns the
// function that gives the terminal back. Ctrl-C then reaches only the
// devstack, which stops cleanly and exits 0, instead of also killing make,
// which would report "Interrupt" and exit 2 (`make run` would "fail" on
// every normal stop). Ctrl-Z is ignored meanwhile: a stopped devstack
// would hold the terminal that the shell is waiting on make for.
func takeTerminal(getenv func(string) string) (restore func()) {
	noop := func() {}
	if getenv("MAKELEVEL") == "" {
		return noop
	}
	fd := os.Stdin.Fd()
	orig, err := tcgetpgrp(fd)
	if err != nil || orig != syscall.Getpgrp() {
		return noop // not a terminal, or not in its foreground
	}
	// A background group that sets the foreground group gets SIGTTOU.
	signal.Ignore(syscall.SIGTTOU, syscall.SIGTSTP)
	if err := syscall.Setpgid(0, 0); err != nil {
		return noop
	}
	if err := tcsetpgrp(fd, syscall.Getpid()); err != nil {
		_ = syscall.Setpgid(0, orig)
		return noop
	}
	return func() { _ = tcsetpgrp(fd, orig) }
}

func tcgetpgrp(fd uintptr) (int, error) {
	var pgid int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pgid))); errno != 0 {
		return 0, errno
	}
	return int(pgid), nil
}

func tcsetpgrp(fd uintptr, pgid int) error {
	p := int32(pgid)
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCSPGRP, uintptr(unsafe.Pointer(&p))); errno != 0 {
		return errno
	}
	return nil
}
