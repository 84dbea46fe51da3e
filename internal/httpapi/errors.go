package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nudge-dev/nudge/internal/apps"
	"github.com/nudge-dev/nudge/internal/auth"
	"github.com/nudge-dev/nudge/internal/catalog"
	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/redis/go-redis/v9"
)

// HTTPError is an error with the response the client should see. The
// client sees Code, Kind, Msg and Field; the log also gets Err.
type HTTPError struct {
	Code  int    // HTTP status
	Kind  string // machine-readable error code, e.g. "invalid_field"
	Msg   string // human-readable message for the client
	Field string // offending request field, if any
	Err   error  // underlying error, logged, never shown
	// RetryAfter, when set, is sent as the Retry-After header (whole seconds).
	RetryAfter time.Duration
}

func (e *HTTPError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%d %s: %s: %v", e.Code, e.Kind, e.Msg, e.Err)
	}
	return fmt.Sprintf("%d %s: %s", e.Code, e.Kind, e.Msg)
}

func (e *HTTPError) Unwrap() error { return e.Err }

// errorBody is the JSON of every error response.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// toHTTPError maps any error a handler returns to the response. It is the
// one place that decides statuses for errors.
func toHTTPError(err error) *HTTPError {
	if he, ok := errors.AsType[*HTTPError](err); ok {
		return he
	}
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return &HTTPError{Code: http.StatusRequestEntityTooLarge, Kind: "too_large", Msg: "request body too large", Err: err}
	}
	if fe, ok := errors.AsType[*devices.FieldError](err); ok {
		return &HTTPError{Code: http.StatusBadRequest, Kind: "invalid_field", Msg: fe.Error(), Field: fe.Field, Err: err}
	}
	if fe, ok := errors.AsType[*catalog.FieldError](err); ok {
		return &HTTPError{Code: http.StatusBadRequest, Kind: "invalid_field", Msg: fe.Error(), Field: fe.Field, Err: err}
	}
	if fe, ok := errors.AsType[*apps.FieldError](err); ok {
		return &HTTPError{Code: http.StatusBadRequest, Kind: "invalid_field", Msg: err.Error(), Field: fe.Field, Err: err}
	}
	switch {
	case errors.Is(err, apps.ErrNotFound):
		return &HTTPError{Code: http.StatusNotFound, Kind: "not_found", Msg: "app not found", Err: err}
	case errors.Is(err, apps.ErrLastApp):
		return &HTTPError{Code: http.StatusConflict, Kind: "conflict", Msg: "the last app cannot be deleted: add another app first", Err: err}
	case errors.Is(err, devices.ErrNotFound):
		return &HTTPError{Code: http.StatusNotFound, Kind: "not_found", Msg: "device not found", Err: err}
	case errors.Is(err, catalog.ErrNotFound):
		return &HTTPError{Code: http.StatusNotFound, Kind: "not_found", Msg: "feed not found", Err: err}
	case errors.Is(err, auth.ErrUnauthenticated):
		return &HTTPError{Code: http.StatusUnauthorized, Kind: "unauthorized", Msg: "missing or invalid Authorization: Bearer credential", Err: err}
	case errors.Is(err, auth.ErrForbidden):
		return &HTTPError{Code: http.StatusForbidden, Kind: "forbidden", Msg: "this API key's role may not do that", Err: err}
	case errors.Is(err, devices.ErrConflict):
		return &HTTPError{Code: http.StatusConflict, Kind: "conflict", Msg: "the device changed concurrently; retry", Err: err}
	case errors.Is(err, context.Canceled):
		return &HTTPError{Code: statusClientClosed, Kind: "cancelled", Msg: "the client closed the request", Err: err}
	case errors.Is(err, context.DeadlineExceeded), redisUnavailable(err):
		return &HTTPError{Code: http.StatusServiceUnavailable, Kind: "unavailable",
			Msg: "storage is unavailable or slow; retry after the Retry-After seconds", Err: err}
	}
	return &HTTPError{Code: http.StatusInternalServerError, Kind: "internal", Msg: "internal error", Err: err}
}

// statusClientClosed is nginx's 499: the client hung up before the answer.
const statusClientClosed = 499

// retryAfterSeconds is the Retry-After of a 503: Redis stalls and
// failovers are short, and the per-request deadline keeps retries cheap.
const retryAfterSeconds = "1"

// redisUnavailable reports whether err says Redis cannot answer now: a
// network error (refused, reset, timed out), a closed or exhausted
// connection pool, or a server that is loading, failing over or lost its
// cluster quorum. These are 503s, not 500s: nothing is wrong with the
// request or the code.
func redisUnavailable(err error) bool {
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	switch {
	case errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrClosed),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	}
	if re, ok := errors.AsType[redis.Error](err); ok {
		for _, p := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "BUSY "} {
			if strings.HasPrefix(re.Error(), p) {
				return true
			}
		}
	}
	return false
}

// clientGone reports whether the client of r hung up: the request's
// context was cancelled by the server noticing the closed connection, not
// ended by our own deadline (which ends it with DeadlineExceeded). The
// error a handler returns then is often not context.Canceled (a Redis read
// that runs into its deadline is a network timeout), but nobody reads the
// answer.
func clientGone(r *http.Request) bool {
	return errors.Is(r.Context().Err(), context.Canceled)
}

// writeError logs err where it is handled and writes the JSON response. A
// request whose client has gone is a 499 logged at DEBUG, whatever err is.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	he := toHTTPError(err)
	if he.Code != statusClientClosed && clientGone(r) {
		he = &HTTPError{Code: statusClientClosed, Kind: "cancelled", Msg: "the client closed the request", Err: err}
	}
	log := logFrom(r.Context())
	if he.Code == statusClientClosed {
		log.DebugContext(r.Context(), "client closed the request", "err", err)
		w.WriteHeader(he.Code) // nobody reads the body
		return
	}
	if he.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((he.RetryAfter+time.Second-1)/time.Second)))
	} else if he.Code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfterSeconds)
	}
	if he.Code >= 500 {
		log.ErrorContext(r.Context(), "request failed", "status", he.Code, "err", err)
	} else {
		log.DebugContext(r.Context(), "request rejected", "status", he.Code, "err", err)
	}
	if he.Code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer`)
	}
	writeJSON(w, he.Code, errorBody{Error: errorDetail{Code: he.Kind, Message: he.Msg, Field: he.Field}})
}

// writeJSON writes v as the JSON response body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// badRequest is a 400 about one field.
func badRequest(field, msg string) *HTTPError {
	return &HTTPError{Code: http.StatusBadRequest, Kind: "invalid_field", Msg: msg, Field: field}
}

// decodeJSON reads the request body as exactly one JSON object into dst
// (see decodeStrict). A body over the cap is *http.MaxBytesError (413).
func decodeJSON(r *http.Request, dst any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return err
		}
		return &HTTPError{Code: http.StatusBadRequest, Kind: "malformed", Msg: "could not read the request body", Err: err}
	}
	return decodeStrict(b, dst)
}
