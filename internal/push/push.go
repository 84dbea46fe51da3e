// Package push delivers silent pushes to devices through Firebase Cloud
// Messaging (HTTP v1, firebase.google.com/go/v4) and the Apple Push
// Notification service (HTTP/2, github.com/sideshow/apns2), and tells the
// caller what to do with each outcome.
//
// A [Sender] takes a batch of [Message] values and returns one [Result] per
// message, in the same order. Each message goes out through the clients of
// its app (Message.App, from the app catalogue Config.Apps): one FCM client
// per service account, project and endpoint, sending with SendEach (at most
// 500 per call, Config.FCMConcurrency calls at once), and one long-lived
// APNs client per key or certificate and environment, with
// Config.APNSConcurrency pushes in flight. Apps naming the same credential
// share its clients; a changed credential file or catalogue entry is
// swapped in without a restart (routes.go). Each Result carries one
// [Action]: Delivered, PruneToken, Retry, BackoffDevice, PauseProvider or
// Permanent. [Sender.SendEach] also reports each result as its answer
// arrives, and [Sender.PauseScope] names what a PauseProvider answer pauses
// (an APNs environment and credential, an FCM project).
//
// The Firebase SDK's own retries (of 503s and network errors, sleeping
// inside the send deadline) are kept out by the FCM transport, so each
// attempt is one request and a Retry result carries the provider's own
// Retry-After. FCM's INVALID_ARGUMENT naming the registration token is
// PruneToken; any other INVALID_ARGUMENT is Permanent.
//
// # Payload contract
//
// Every push carries these string fields, the FCM data map or custom keys
// next to aps in the APNs payload:
//
//	type     "nudge.sync"
//	task     Config.SyncTask (NUDGE_SYNC_TASK), the app's callbackDispatcher task
//	feeds    changed feed ids, comma-separated: "headlines,recent"
//	event    event id
//	push_id  Message.ID
//	reason   "feed" | "breaking" | "stale"
//	since    one "feed:cursor" pair per feed, comma-separated:
//	         "headlines:120,recent:88"; the app calls
//	         GET /v1/feeds/{feed}/items?since={cursor} for each pair.
//	         A feed without a cursor is omitted (the app syncs from its own
//	         last cursor).
//	until    the ends of the closed ranges, as since: "headlines:125";
//	         the app reads GET /v1/feeds/{feed}/items?since={s}&until={u},
//	         a URL every device woken by one event shares (cacheable).
//	         Omitted when the push names no range end.
//	sent_at  send time, Unix milliseconds in decimal: "1767225600123"
//
// FCM: data-only, android.priority "normal", android.ttl, android.collapse_key;
// for iOS devices also apns-push-type "background", apns-priority "5",
// apns-expiration, apns-collapse-id and aps {"content-available": 1}.
//
// APNs: apns-push-type "background", apns-priority 5, apns-topic
// (the app's topic, apps.APNs.Topic), apns-expiration, apns-collapse-id (at most 64 bytes);
// aps holds only "content-available": 1.
//
// A Message with an Alert (the breaking lane) becomes visible: FCM adds a
// notification (title, body) at android.priority "high", and iOS gets
// apns-push-type "alert", apns-priority 10 and aps {alert, mutable-content: 1,
// content-available: 1}.
//
// Payloads are refused before sending when they exceed 4096 bytes: the FCM
// data map plus alert (keys and values), or the APNs JSON body (for iOS
// through FCM, both).
package push

import (
	"errors"
	"fmt"
	"time"
)

// Provider names a push service.
type Provider string

// The providers.
const (
	FCM  Provider = "fcm"
	APNs Provider = "apns"
)

// Platform is the device's operating system.
type Platform string

// The platforms.
const (
	Android Platform = "android"
	IOS     Platform = "ios"
)

// Environment is the APNs environment a token belongs to.
type Environment string

// The environments; "" means Production.
const (
	Production Environment = "production"
	Sandbox    Environment = "sandbox"
)

// Reason says why a push is sent; it reaches the app as data field reason.
type Reason string

// The reasons.
const (
	ReasonFeed     Reason = "feed"
	ReasonBreaking Reason = "breaking"
	ReasonStale    Reason = "stale"
)

// Cursor is the position the app should sync a feed from.
type Cursor struct {
	Feed string
	Seq  uint64
}

// Alert is the visible notification of a breaking-lane push.
type Alert struct {
	Title string
	Body  string
}

// Message is one push to one device.
type Message struct {
	ID          string      // push id; data push_id, and apns-id when it is a UUID
	App         string      // the device's app; "" = apps.Default
	Token       string      // raw provider token; never logged
	Provider    Provider    // FCM or APNs
	Platform    Platform    // Android or IOS
	Environment Environment // APNs environment; "" = Production
	Event       string      // event id
	Reason      Reason      // feed, breaking or stale
	Feeds       []string    // feed ids that changed
	Since       []Cursor    // cursors the app should sync from
	Until       []Cursor    // ends of the closed ranges (since, until] the push names; empty: open
	Alert       *Alert      // optional visible alert (breaking lane)
	CollapseID  string      // collapse key / apns-collapse-id (≤ 64 bytes)
	TTL         time.Duration
}

// Action is what the caller should do after a send.
type Action int

// The actions. Every Result carries exactly one.
const (
	// Delivered: the provider accepted the push. Acknowledge the job.
	Delivered Action = iota + 1
	// PruneToken: the token is dead (uninstalled, bad, wrong topic or
	// sender). Delete the device's token; do not retry.
	PruneToken
	// Retry: a transient failure. Retry after Result.RetryAfter if set
	// (the provider's Retry-After), else after the caller's jittered
	// exponential backoff.
	Retry
	// BackoffDevice: this device gets too many pushes. Defer pushes to it
	// for Result.RetryAfter.
	BackoffDevice
	// PauseProvider: a project-level problem (quota, credentials). Stop all
	// sends to this provider for Result.RetryAfter (at least a minute) and
	// requeue the job.
	PauseProvider
	// Permanent: the push can never succeed as is (invalid argument,
	// payload or topic). Do not retry; dead-letter it.
	Permanent
)

var actionNames = [...]string{"unknown", "delivered", "prune_token", "retry", "backoff_device", "pause_provider", "permanent"}

// String returns the action's snake_case name, as used in metrics labels.
func (a Action) String() string {
	if a < 0 || int(a) >= len(actionNames) {
		return "unknown"
	}
	return actionNames[a]
}

// Result is the outcome of one Message.
type Result struct {
	PushID     string
	Action     Action
	RetryAfter time.Duration // Retry: provider hint (0 = none); BackoffDevice, PauseProvider: how long
	Reason     string        // APNs reason, FCM error code, or a local reason such as "PayloadTooLarge"
	Status     int           // HTTP status from the provider, 0 if none
	// UnregisteredAt is the time APNs says the token stopped being valid
	// (410 Unregistered), zero otherwise.
	UnregisteredAt time.Time
	Err            error // nil when Delivered
}

// Errors set in Result.Err for messages refused before sending.
var (
	// ErrPayloadTooLarge: the payload exceeds 4096 bytes; see
	// PayloadTooLargeError.
	ErrPayloadTooLarge = errors.New("push payload too large")
	// ErrProviderNotConfigured: the message's provider has no credentials.
	ErrProviderNotConfigured = errors.New("push provider not configured")
	// ErrInvalidMessage: the message is malformed (empty token, unknown
	// provider or platform, collapse id over 64 bytes).
	ErrInvalidMessage = errors.New("invalid push message")
)

// MaxPayload is the provider payload limit in bytes, for FCM and APNs.
const MaxPayload = 4096

// PayloadTooLargeError reports a payload refused before sending.
type PayloadTooLargeError struct {
	Provider Provider
	Size     int
	Limit    int
}

// Error describes the oversized payload.
func (e *PayloadTooLargeError) Error() string {
	return fmt.Sprintf("%s payload is %d bytes, over the %d-byte limit: send fewer feeds or cursors", e.Provider, e.Size, e.Limit)
}

// Is makes errors.Is(err, ErrPayloadTooLarge) true.
func (e *PayloadTooLargeError) Is(target error) bool { return target == ErrPayloadTooLarge }

// RejectedError is a push the provider answered with an error status.
type RejectedError struct {
	Provider Provider
	Status   int
	Reason   string
}

// Error describes the rejection.
func (e *RejectedError) Error() string {
	return fmt.Sprintf("%s rejected push: %d %s", e.Provider, e.Status, e.Reason)
}
