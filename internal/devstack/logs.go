package devstack

import (
	"io"
	"sync"
)

// syncWriter serialises writes to w, so that lines of the api, the
// dispatcher and the devstack never interleave.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
