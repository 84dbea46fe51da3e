package devstack

import (
	"bytes"
	"encoding/json"
	"io"
	"sync"
)

// logSink receives one process's JSON log lines: it passes them on to the
// devstack's log writer, and reports the address of the line whose msg is
// ready (the api's "api listening", the dispatcher's "dispatcher running").
type logSink struct {
	out     io.Writer
	name    string
	readyOn string
	ready   chan string // gets the address once

	mu      sync.Mutex
	partial []byte
	seen    bool
}

func newLogSink(out io.Writer, name, readyOn string) *logSink {
	return &logSink{out: out, name: name, readyOn: readyOn, ready: make(chan string, 1)}
}

// Write implements io.Writer. slog writes one whole line per call; partial
// lines are kept until their newline arrives.
func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := l.partial[:i+1]
		l.line(line)
		l.partial = l.partial[i+1:]
	}
	if len(l.partial) == 0 {
		l.partial = nil
	}
	return len(p), nil
}

func (l *logSink) line(line []byte) {
	if !l.seen && bytes.Contains(line, []byte(l.readyOn)) {
		var rec struct {
			Msg  string `json:"msg"`
			Addr string `json:"addr"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Msg == l.readyOn && rec.Addr != "" {
			l.seen = true
			l.ready <- rec.Addr
		}
	}
	_, _ = l.out.Write(line)
}

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
