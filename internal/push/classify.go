package push

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
)

// outcome is a classification before the caller's durations are applied.
type outcome struct {
	action     Action
	reason     string
	status     int
	retryAfter time.Duration
}

// apnsActions maps every APNs reason to its action.
var apnsActions = map[string]Action{
	// The token is dead or belongs elsewhere.
	"Unregistered":           PruneToken,
	"ExpiredToken":           PruneToken,
	"BadDeviceToken":         PruneToken,
	"DeviceTokenNotForTopic": PruneToken,
	// Too many pushes to this device.
	"TooManyRequests": BackoffDevice,
	// Transient: the server, the connection or our provider token.
	"IdleTimeout":                 Retry,
	"ExpiredProviderToken":        Retry,
	"TooManyProviderTokenUpdates": Retry,
	"InternalServerError":         Retry,
	"ServiceUnavailable":          Retry,
	"Shutdown":                    Retry,
	// Credentials are wrong for every push: stop and alert.
	"InvalidProviderToken":       PauseProvider,
	"MissingProviderToken":       PauseProvider,
	"BadCertificate":             PauseProvider,
	"BadCertificateEnvironment":  PauseProvider,
	"Forbidden":                  PauseProvider,
	"UnrelatedKeyIdInToken":      PauseProvider,
	"BadEnvironmentKeyIdInToken": PauseProvider,
	// The request itself is wrong: never retry.
	"BadCollapseId":      Permanent,
	"BadExpirationDate":  Permanent,
	"BadMessageId":       Permanent,
	"BadPriority":        Permanent,
	"BadTopic":           Permanent,
	"DuplicateHeaders":   Permanent,
	"InvalidPushType":    Permanent,
	"MissingDeviceToken": Permanent,
	"MissingTopic":       Permanent,
	"PayloadEmpty":       Permanent,
	"TopicDisallowed":    Permanent,
	"BadPath":            Permanent,
	"MethodNotAllowed":   Permanent,
	"PayloadTooLarge":    Permanent,
}

// classifyAPNs maps an APNs answer to an action; unknown reasons fall back
// on the status code.
func classifyAPNs(status int, reason string, retryAfter time.Duration) outcome {
	o := outcome{reason: reason, status: status, retryAfter: retryAfter}
	if status == http.StatusOK {
		o.action = Delivered
		return o
	}
	if a, ok := apnsActions[reason]; ok {
		o.action = a
		return o
	}
	switch {
	case status == http.StatusGone:
		o.action = PruneToken
	case status == http.StatusTooManyRequests:
		o.action = BackoffDevice
	case status >= 500:
		o.action = Retry
	case status == http.StatusForbidden:
		o.action = PauseProvider
	default:
		o.action = Permanent
	}
	return o
}

// classifyTransport maps a failure without a provider answer (network,
// deadline) to Retry.
func classifyTransport(err error) outcome {
	reason := "transport"
	if errors.Is(err, context.DeadlineExceeded) {
		reason = "timeout"
	} else if errors.Is(err, context.Canceled) {
		reason = "canceled"
	}
	return outcome{action: Retry, reason: reason}
}

// classifyFCM maps an error from the FCM SDK to an action. It must see
// the SDK's error unwrapped: messaging.Is* use type assertions.
func classifyFCM(err error, now time.Time) outcome {
	if err == nil {
		return outcome{action: Delivered}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return classifyTransport(err)
	}
	var o outcome
	resp := errorutils.HTTPResponse(err)
	if resp != nil {
		if _, ok := resp.Header[headerTransportError]; ok {
			return classifyTransport(err) // see fcmTransport
		}
		o.status = resp.StatusCode
		ra := resp.Header.Get("Retry-After")
		if v, ok := resp.Header[http.CanonicalHeaderKey(headerRetryAfter)]; ok {
			ra = ""
			if len(v) > 0 {
				ra = v[0]
			}
		}
		o.retryAfter = parseRetryAfter(ra, now)
	}
	switch {
	case messaging.IsUnregistered(err):
		o.action, o.reason = PruneToken, "UNREGISTERED"
	case messaging.IsSenderIDMismatch(err):
		o.action, o.reason = PruneToken, "SENDER_ID_MISMATCH"
	case messaging.IsInvalidArgument(err) && invalidToken(err):
		// FCM's answer to a token that is not (or no longer) a valid
		// registration token: Firebase's guidance treats it as UNREGISTERED.
		o.action, o.reason = PruneToken, "INVALID_TOKEN"
	case messaging.IsInvalidArgument(err):
		o.action, o.reason = Permanent, "INVALID_ARGUMENT"
	case messaging.IsQuotaExceeded(err):
		o.reason = "QUOTA_EXCEEDED"
		o.action = PauseProvider
		if deviceQuota(err, resp) {
			o.action = BackoffDevice
		}
	case messaging.IsUnavailable(err):
		o.action, o.reason = Retry, "UNAVAILABLE"
	case messaging.IsInternal(err):
		o.action, o.reason = Retry, "INTERNAL"
	case messaging.IsThirdPartyAuthError(err):
		// The APNs key or certificate in the Firebase console is wrong:
		// iOS pushes through FCM cannot succeed until an operator fixes
		// it, Android ones still can, so this is not a provider pause.
		o.action, o.reason = Permanent, "THIRD_PARTY_AUTH_ERROR"
	case errorutils.IsResourceExhausted(err):
		// Project quota (RATE_LIMIT_EXCEEDED without an FcmError).
		o.action, o.reason = PauseProvider, "RESOURCE_EXHAUSTED"
	case errorutils.IsUnauthenticated(err):
		o.action, o.reason = PauseProvider, "UNAUTHENTICATED"
	case errorutils.IsPermissionDenied(err):
		o.action, o.reason = PauseProvider, "PERMISSION_DENIED"
	case errorutils.IsNotFound(err):
		// NOT_FOUND without UNREGISTERED: the project does not exist.
		o.action, o.reason = PauseProvider, "NOT_FOUND"
	case errorutils.IsInvalidArgument(err), errorutils.IsFailedPrecondition(err), errorutils.IsOutOfRange(err):
		o.action, o.reason = Permanent, "INVALID_ARGUMENT"
	case errorutils.IsUnavailable(err), errorutils.IsInternal(err), errorutils.IsDeadlineExceeded(err),
		errorutils.IsAborted(err), errorutils.IsCancelled(err), errorutils.IsDataLoss(err):
		o.action, o.reason = Retry, "UNAVAILABLE"
	case errorutils.IsUnknown(err):
		// Transport failures and unmapped statuses.
		o.action, o.reason = Retry, "UNKNOWN"
		if o.status != 0 && o.status < 500 {
			o.action = Permanent
		}
	case resp == nil:
		// Not an FCM answer: the SDK refused the message locally.
		o.action, o.reason = Permanent, "INVALID_ARGUMENT"
	default:
		o.action, o.reason = Retry, "UNKNOWN"
		if o.status < 500 {
			o.action = Permanent
		}
	}
	return o
}

// invalidToken reports whether an INVALID_ARGUMENT names the registration
// token. FCM answers a malformed or foreign token with status
// INVALID_ARGUMENT, an FcmError detail INVALID_ARGUMENT and the message
// "The registration token is not a valid FCM registration token"; some
// answers carry a google.rpc.BadRequest field violation on message.token
// instead. Any other INVALID_ARGUMENT is about the message, not the token.
func invalidToken(err error) bool {
	if strings.Contains(strings.ToLower(err.Error()), "registration token") {
		return true
	}
	for _, d := range errorDetails(errorutils.HTTPResponse(err)) {
		for _, v := range d.FieldViolations {
			if d.Type == "type.googleapis.com/google.rpc.BadRequest" && v.Field == "message.token" {
				return true
			}
		}
	}
	return false
}

// deviceQuota tells a per-device QUOTA_EXCEEDED from a project-level one:
// FCM names the device in its google.rpc.QuotaFailure violations or in the
// message ("Device message rate exceeded.").
func deviceQuota(err error, resp *http.Response) bool {
	if strings.Contains(strings.ToLower(err.Error()), "device") {
		return true
	}
	for _, d := range errorDetails(resp) {
		if d.Type != "type.googleapis.com/google.rpc.QuotaFailure" {
			continue
		}
		for _, v := range d.Violations {
			if strings.Contains(strings.ToLower(v.Subject+" "+v.Description), "device") {
				return true
			}
		}
	}
	return false
}

// errorDetail is one entry of the "details" of an FCM error body
// (google.rpc.Status): the fields of BadRequest and QuotaFailure that the
// classification reads.
type errorDetail struct {
	Type            string `json:"@type"`
	FieldViolations []struct {
		Field string `json:"field"`
	} `json:"fieldViolations"`
	Violations []struct {
		Subject     string `json:"subject"`
		Description string `json:"description"`
	} `json:"violations"`
}

// errorDetails reads the details of an FCM error response; nil when there
// is no body or it is not a google.rpc.Status.
func errorDetails(resp *http.Response) []errorDetail {
	if resp == nil || resp.Body == nil {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil
	}
	var st struct {
		Error struct {
			Details []errorDetail `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &st) != nil {
		return nil
	}
	return st.Error.Details
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		if s < 0 {
			return 0
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}
