// Package devices is the device registry: the push tokens that apps
// register, their settings, their feed subscriptions and the hashed secret
// that lets an app manage its own registration.
//
// Redis model (all keys from internal/keys):
//
//	dev:{pN}:<id>   HASH    the device; fields below
//	tok:{sN}        HASH    first 12 bytes of sha256(token) -> device id
//	                        (sha256(app NUL token) for an app other than "default")
//	sub:{<feed>:<k>} STRING subscription bitmap chunk; bit b of chunk k is device k<<16|b
//	sub:{<app>/<feed>:<k>}  the same for the devices of an app other than "default"
//	seq:device      STRING  INCR source of ids (handed out in blocks)
//
// Device hash fields: tk token · pv provider · pl platform · en environment ·
// fd feeds (comma-separated) · bg background sync "1"|"0" · mi min interval
// seconds · lo locale · tz timezone · av app version · sh sha256 of the
// secret (32 raw bytes) · ct/ut created/updated unix seconds · bv bits
// version · bp "1" while the bits of version bv are not known to be applied
// · xf feeds whose bits may still be set though fd no longer lists them ·
// ap the device's app, absent for the default app (apps.Default). A device
// with ap has en only for sandbox (absent: production).
//
// Apps: a device belongs to one app for life. Its token index entry and its
// subscription bits are the app's own (keys.AppSubChunk), so the same token
// in two apps is two devices, and a walk of one app's bitmaps never meets
// another app's devices. The default app keeps the keys and digests of the
// time before apps, so devices registered then need no migration.
//
// sync state written by every receipt (sync.go): sy unix ms of the last
// receipt · c:<feed> the last cursor of a feed the device synced · un silent
// pushes sent since the last receipt (deleted by every receipt).
//
// The device hash is this package's: other packages name it with Key and
// their Lua scripts read it only through the LuaPolicy fragment.
//
// The keys of one device live in different cluster slots, so no single
// script can update them together. Writes are ordered so that a crash at any
// point leaves nothing that misroutes a push, and the next write of a
// device repairs its subscription bits; see Registry for the order.
package devices

import (
	"cmp"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nudge-dev/nudge/internal/apps"
)

// Providers, platforms and environments.
const (
	ProviderFCM  = "fcm"
	ProviderAPNs = "apns"

	PlatformAndroid = "android"
	PlatformIOS     = "ios"

	EnvProduction = "production"
	EnvSandbox    = "sandbox"
)

// MaxMinInterval is the largest background_sync.min_interval accepted.
const MaxMinInterval = 7 * 24 * time.Hour

// Device is one registered device.
type Device struct {
	ID          uint64
	App         string // the app (apps.Default when registered without one)
	Token       string
	Provider    string // "fcm" or "apns"
	Platform    string // "android" or "ios"
	Environment string // "production" or "sandbox" (APNs)
	Feeds       []string
	Sync        BackgroundSync
	Locale      string
	Timezone    string
	AppVersion  string
	Created     time.Time
	Updated     time.Time

	secretHash []byte
}

// BackgroundSync is the user's background-sync setting. MinInterval can
// only make the push rate stricter than the platform policy; zero means none.
type BackgroundSync struct {
	Enabled     bool
	MinInterval time.Duration
}

// Registration is the input of Registry.Register.
type Registration struct {
	App         string // default apps.Default; must exist and offer each feed
	Provider    string
	Token       string
	Platform    string
	Environment string // default production
	Feeds       []string
	Sync        BackgroundSync
	Locale      string
	Timezone    string
	AppVersion  string
	// KeepEnabled and KeepMinInterval leave that part of a known device's
	// stored background-sync setting as it is (the request did not name
	// it), so a re-registration does not undo the user's opt-out. A new
	// device always takes Sync.
	KeepEnabled     bool
	KeepMinInterval bool
}

// Patch is the input of Registry.Update; nil fields are left as they are.
type Patch struct {
	Token       *string // token rotation
	Environment *string
	Feeds       *[]string
	SyncEnabled *bool
	MinInterval *time.Duration
	Locale      *string
	Timezone    *string
	AppVersion  *string
}

// Errors of the registry.
var (
	// ErrNotFound is a device that does not exist, or whose secret did not match.
	ErrNotFound = errors.New("device not found")
	// ErrConflict is a concurrent change that won; the caller may retry.
	ErrConflict = errors.New("device changed concurrently, retry")
)

// FieldError is bad input in one field, named as in the REST API
// ("token", "feeds", "background_sync.min_interval").
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

var (
	fcmTokenRE   = regexp.MustCompile(`^[A-Za-z0-9_:-]+$`) // length checked apart: RE2 repeats stop at 1000
	apnsTokenRE  = regexp.MustCompile(`^(?:[0-9a-fA-F]{2}){32,100}$`)
	localeRE     = regexp.MustCompile(`^[A-Za-z]{2,8}(?:[-_][A-Za-z0-9]{1,8}){0,4}$`)
	timezoneRE   = regexp.MustCompile(`^[A-Za-z0-9_+\-/]{1,64}$`)
	appVersionRE = regexp.MustCompile(`^[A-Za-z0-9._+\-]{1,32}$`)
)

// NormalizeToken checks that token is possible for provider and returns its
// canonical form (APNs tokens are hex and compared lower-case).
//
// APNs: hex, even length, 64-200 characters (32 bytes today; Apple reserves
// longer). FCM: 140-4096 characters of [A-Za-z0-9_:-] (today about 152-163,
// "<instance id>:<APA91b...>").
func NormalizeToken(provider, token string) (string, error) {
	switch provider {
	case ProviderAPNs:
		if !apnsTokenRE.MatchString(token) {
			return "", &FieldError{"token", "an APNs device token is 64-200 hex characters (even length)"}
		}
		return strings.ToLower(token), nil
	case ProviderFCM:
		if len(token) < 140 || len(token) > 4096 || !fcmTokenRE.MatchString(token) {
			return "", &FieldError{"token", "an FCM registration token is 140-4096 characters of A-Z, a-z, 0-9, '_', ':' and '-'"}
		}
		return token, nil
	}
	return "", &FieldError{"provider", `want "fcm" or "apns"`}
}

// ParseMinInterval parses background_sync.min_interval: a Go duration string
// ("30m", "1h30m", "0s") of whole seconds between 0 and 7 days.
func ParseMinInterval(s string) (time.Duration, error) {
	const field = "background_sync.min_interval"
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, &FieldError{field, `want a duration such as "30m" or "2h"`}
	}
	if d < 0 || d > MaxMinInterval {
		return 0, &FieldError{field, "must be between 0s and 168h"}
	}
	if d%time.Second != 0 {
		return 0, &FieldError{field, "must be whole seconds"}
	}
	return d, nil
}

func checkPlatform(provider, platform string) error {
	switch {
	case platform != PlatformAndroid && platform != PlatformIOS:
		return &FieldError{"platform", `want "android" or "ios"`}
	case provider == ProviderAPNs && platform != PlatformIOS:
		return &FieldError{"platform", `APNs tokens are for platform "ios" only`}
	}
	return nil
}

func checkEnvironment(provider, env string) (string, error) {
	if env == "" {
		return EnvProduction, nil
	}
	switch {
	case env != EnvProduction && env != EnvSandbox:
		return "", &FieldError{"environment", `want "production" or "sandbox"`}
	case provider == ProviderFCM && env != EnvProduction:
		return "", &FieldError{"environment", `FCM has no sandbox: omit it or use "production"`}
	}
	return env, nil
}

func checkOptional(field, v string, re *regexp.Regexp) error {
	if v != "" && !re.MatchString(v) {
		return &FieldError{field, "has an unexpected format: " + hint[field]}
	}
	return nil
}

var hint = map[string]string{
	"locale":      "a BCP 47 tag such as en-US",
	"timezone":    "an IANA name such as Europe/Berlin",
	"app_version": "1-32 characters of A-Z, a-z, 0-9, '.', '_', '+' and '-'",
}

func checkMinInterval(d time.Duration) error {
	if d < 0 || d > MaxMinInterval || d%time.Second != 0 {
		return &FieldError{"background_sync.min_interval", "must be whole seconds between 0s and 168h"}
	}
	return nil
}

// fields returns the device hash fields of d that a registration writes,
// without fd (feeds, which the callers handle with the bits bookkeeping)
// and ct.
func (d *Device) fields() []any {
	ef, ev := envField(d.App, d.Environment)
	return []any{
		"tk", d.Token, "pv", d.Provider, "pl", d.Platform, ef, ev,
		"bg", boolField(d.Sync.Enabled),
		"mi", strconv.FormatInt(int64(d.Sync.MinInterval/time.Second), 10),
		"lo", d.Locale, "tz", d.Timezone, "av", d.AppVersion,
		"sh", string(d.secretHash), "ut", strconv.FormatInt(d.Updated.Unix(), 10),
	}
}

// registerFields returns the fields a re-registration writes on the known
// device of its token: fields without the parts of the sync setting that
// reg leaves alone.
func (d *Device) registerFields(reg Registration) []any {
	all := d.fields()
	out := make([]any, 0, len(all))
	for i := 0; i < len(all); i += 2 {
		if (all[i] == "bg" && reg.KeepEnabled) || (all[i] == "mi" && reg.KeepMinInterval) {
			continue
		}
		out = append(out, all[i], all[i+1])
	}
	return out
}

// envField returns the field and value that store env for a device of
// app. A device of an app other than the default one stores "en" only for
// sandbox ("-en" deletes the field, see write.lua): the bytes of "ap" then
// keep its hash in the allocator size class of a default-app device
// (BENCHMARKS, Registry). Default-app devices always store it, as before
// apps.
func envField(app, env string) (string, string) {
	if app != apps.Default && env == EnvProduction {
		return "-en", ""
	}
	return "en", env
}

func boolField(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// parseDevice reads a device hash as HGETALL returns it.
func parseDevice(id uint64, m map[string]string) (Device, error) {
	if m["tk"] == "" {
		return Device{}, ErrNotFound
	}
	d := Device{
		ID: id, App: cmp.Or(m["ap"], apps.Default), Token: m["tk"], Provider: m["pv"], Platform: m["pl"], Environment: cmp.Or(m["en"], EnvProduction),
		Feeds: splitFeeds(m["fd"]), Locale: m["lo"], Timezone: m["tz"], AppVersion: m["av"],
		secretHash: []byte(m["sh"]),
	}
	d.Sync.Enabled = m["bg"] == "1"
	mi, err := strconv.ParseInt(cmp.Or(m["mi"], "0"), 10, 64)
	if err != nil {
		return Device{}, fmt.Errorf("device %d: bad mi %q: %w", id, m["mi"], err)
	}
	d.Sync.MinInterval = time.Duration(mi) * time.Second
	ct, _ := strconv.ParseInt(m["ct"], 10, 64)
	ut, _ := strconv.ParseInt(m["ut"], 10, 64)
	d.Created, d.Updated = time.Unix(ct, 0).UTC(), time.Unix(ut, 0).UTC()
	return d, nil
}

func splitFeeds(fd string) []string {
	if fd == "" {
		return []string{}
	}
	return strings.Split(fd, ",")
}
