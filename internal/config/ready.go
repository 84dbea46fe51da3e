package config

import (
	"bytes"
	"encoding/json"
	"io"
	"sync"
)

// The ready messages: each binary's Run logs one JSON line with this msg
// and the "addr" it listens on, once it serves.
const (
	ReadyAPI        = "api listening"
	ReadyDispatcher = "dispatcher running"
)

// ReadyWriter passes a process's JSON log through to w, whole lines at a
// time, and reports the address of the first line whose msg is ready. It
// lets whoever runs a Run in-process (the devstack, tests) learn the
// address it chose.
type ReadyWriter struct {
	w     io.Writer
	ready string
	addr  chan string

	mu      sync.Mutex
	partial []byte
	seen    bool
}

// NewReadyWriter returns a ReadyWriter for msg ready that writes to w.
func NewReadyWriter(w io.Writer, ready string) *ReadyWriter {
	return &ReadyWriter{w: w, ready: ready, addr: make(chan string, 1)}
}

// Ready delivers the address once the ready line was written.
func (r *ReadyWriter) Ready() <-chan string { return r.addr }

// Write implements io.Writer. A partial line is kept until its newline.
func (r *ReadyWriter) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.partial = append(r.partial, p...)
	for {
		i := bytes.IndexByte(r.partial, '\n')
		if i < 0 {
			break
		}
		line := r.partial[:i+1]
		r.partial = r.partial[i+1:]
		if !r.seen && bytes.Contains(line, []byte(r.ready)) {
			var rec struct{ Msg, Addr string }
			if json.Unmarshal(line, &rec) == nil && rec.Msg == r.ready && rec.Addr != "" {
				r.seen = true
				r.addr <- rec.Addr
			}
		}
		if _, err := r.w.Write(line); err != nil {
			return len(p), err
		}
	}
	if len(r.partial) == 0 {
		r.partial = nil
	}
	return len(p), nil
}
