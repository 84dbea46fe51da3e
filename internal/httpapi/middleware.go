package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/http"
	"regexp"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudge-dev/nudge/internal/service"
)

type (
	loggerCtx    struct{}
	requestIDCtx struct{}
)

// RequestID returns the id of the request whose context ctx is, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDCtx{}).(string)
	return id
}

// logFrom returns the request's logger, which carries its request_id.
func logFrom(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerCtx{}).(*slog.Logger); ok {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// LoggerFrom returns the logger of a request context (it logs request_id
// with every line), or fallback outside a request.
func LoggerFrom(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(loggerCtx{}).(*slog.Logger); ok {
		return l
	}
	return fallback
}

var requestIDRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// statusWriter records the status and size of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// metrics are the HTTP metrics of one Server.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(a service.Archetype) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nudge_http_requests_total",
			Help: "HTTP requests by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nudge_http_request_duration_seconds",
			Help:    "HTTP request latency by route pattern and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route", "method"}),
	}
	if err := a.Register(m.requests, m.latency); err != nil {
		return nil, err
	}
	return m, nil
}

// slowRequest is the duration from which a request's access log line is
// logged at INFO rather than DEBUG.
const slowRequest = time.Second

// accessLevel is the level of a request's access log line: DEBUG for a
// client that hung up (499), WARN for a server error (5xx), INFO for a slow
// request (slowRequest or longer), DEBUG for the rest, so that at the default level (info) the log holds
// what needs a look, not one line per request (NUDGE_LOG_LEVEL=debug shows
// them all).
func accessLevel(status int, d time.Duration) slog.Level {
	switch {
	case status == statusClientClosed:
		return slog.LevelDebug
	case status >= 500:
		return slog.LevelWarn
	case d >= slowRequest:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}

// now is the server's clock: the Archetype's, else time.Now.
func (s *Server) now() time.Time {
	if s.clock != nil {
		return s.clock()
	}
	return time.Now()
}

// observe is the outermost middleware: it gives the request an id and a
// logger carrying it, recovers panics, writes the access log line (see
// accessLevel) and records metrics by route pattern.
func (s *Server) observe(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := s.now()
		id := r.Header.Get("X-Request-Id")
		if !requestIDRE.MatchString(id) {
			var b [8]byte
			_, _ = rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		w.Header().Set("X-Request-Id", id)
		log := s.log.With("request_id", id)
		ctx := context.WithValue(context.WithValue(r.Context(), loggerCtx{}, log), requestIDCtx{}, id)
		r = r.WithContext(ctx)
		sw := &statusWriter{ResponseWriter: w}

		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.ErrorContext(r.Context(), "panic in handler", "panic", p, "stack", string(debug.Stack()))
				if sw.status == 0 {
					writeError(sw, r, &HTTPError{Code: http.StatusInternalServerError, Kind: "internal", Msg: "internal error"})
				}
			}
			route := "unmatched"
			if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
				route = rc.RoutePattern()
			}
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			d := s.now().Sub(start)
			s.metrics.requests.WithLabelValues(route, r.Method, strconv.Itoa(status)).Inc()
			s.metrics.latency.WithLabelValues(route, r.Method).Observe(d.Seconds())
			if route != "/healthz" && route != "/metrics" {
				log.Log(r.Context(), accessLevel(status, d), "http request", "method", r.Method, "route", route, "path", r.URL.Path,
					"status", status, "bytes", sw.bytes, "duration_ms", float64(d.Microseconds())/1000)
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

// limitBody caps request bodies; reading past the cap fails with
// *http.MaxBytesError, which maps to 413.
func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s.cfg.MaxBodyBytes {
			writeError(w, r, &http.MaxBytesError{Limit: s.cfg.MaxBodyBytes})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		next.ServeHTTP(w, r)
	})
}

// deadline makes the request answer within d. Every Redis call takes the
// request's context and the Redis client honours its deadline on the
// network, so a stalled or dead Redis makes the handler return
// context.DeadlineExceeded or a network error, which answer 503 with
// Retry-After (toHTTPError). The handler's context ends a tenth of d
// (at most 100ms) before d: that reserve is for writing the 503, so the
// answer, not just the handler's failure, comes within d.
func deadline(d time.Duration) func(http.Handler) http.Handler {
	handlerBudget := d - min(d/10, 100*time.Millisecond)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), handlerBudget)
			defer cancel()
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}
