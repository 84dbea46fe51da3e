// Package apps is nudge's app catalogue: the apps one deployment serves,
// each with its push credentials, its throttle policy overrides and the
// feeds it offers.
//
// Secrets are referenced by file path, never held in an App: the API and
// Redis only ever see paths and public identifiers (topic, key id, team id,
// project id). Whoever needs a secret (the dispatcher's senders) reads the
// file itself.
//
// With no apps file, the single-app settings of earlier versions define one
// app, Default, so a deployment that never heard of apps works unchanged.
//
// Catalogue is the live catalogue each process runs: the apps file (or
// the single app) overlaid by admin edits kept in Redis, reloaded within
// seconds of a change to either; its Current Set is read lock-free.
package apps

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Default is the id of the app that single-app settings define, and the app
// of a registration or sync that names none.
const Default = "default"

// idRE is what an app id may look like. It is a metrics label and part of
// Redis keys, so it is short and plain.
var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// ValidID reports whether id may name an app.
func ValidID(id string) bool { return idRE.MatchString(id) }

// App is one app: an id, a display name, its providers and its overrides.
type App struct {
	ID   string `json:"id" yaml:"id"`
	Name string `json:"name" yaml:"name"`
	// APNs is nil when the app has no iOS build on APNs.
	APNs *APNs `json:"apns,omitempty" yaml:"apns,omitempty"`
	// FCM is nil when the app has no build on FCM.
	FCM *FCM `json:"fcm,omitempty" yaml:"fcm,omitempty"`
	// Policy overrides the deployment's throttle policy; zero fields keep
	// the deployment's values.
	Policy Policy `json:"policy,omitzero" yaml:"policy,omitempty"`
	// Feeds are the catalogue feeds the app offers; empty means all.
	Feeds []string `json:"feeds,omitempty" yaml:"feeds,omitempty"`
}

// APNs are an app's APNs settings: token auth (KeyFile, KeyID, TeamID) or
// certificate auth (CertFile, CertPasswordFile), never both.
type APNs struct {
	Topic            string `json:"topic" yaml:"topic"` // the bundle id
	KeyFile          string `json:"key_file,omitempty" yaml:"key_file,omitempty"`
	KeyID            string `json:"key_id,omitempty" yaml:"key_id,omitempty"`
	TeamID           string `json:"team_id,omitempty" yaml:"team_id,omitempty"`
	CertFile         string `json:"cert_file,omitempty" yaml:"cert_file,omitempty"`
	CertPasswordFile string `json:"cert_password_file,omitempty" yaml:"cert_password_file,omitempty"`
	// Host and SandboxHost override Apple's hosts (an emulator, a proxy).
	Host        string `json:"host,omitempty" yaml:"host,omitempty"`
	SandboxHost string `json:"sandbox_host,omitempty" yaml:"sandbox_host,omitempty"`
}

// FCM are an app's FCM settings.
type FCM struct {
	CredentialsFile string `json:"credentials_file" yaml:"credentials_file"`
	ProjectID       string `json:"project_id,omitempty" yaml:"project_id,omitempty"` // empty: the credentials' project_id
	Endpoint        string `json:"endpoint,omitempty" yaml:"endpoint,omitempty"`     // empty: Google's
}

// Policy holds an app's throttle overrides per platform.
type Policy struct {
	IOS     Limits `json:"ios,omitzero" yaml:"ios,omitempty"`
	Android Limits `json:"android,omitzero" yaml:"android,omitempty"`
}

// Limits are the throttle settings of one platform; zero keeps the
// deployment's value.
type Limits struct {
	Limit    int      `json:"limit,omitempty" yaml:"limit,omitempty"`
	Window   Duration `json:"window,omitzero" yaml:"window,omitempty"`
	MinGap   Duration `json:"min_gap,omitzero" yaml:"min_gap,omitempty"`
	Debounce Duration `json:"debounce,omitzero" yaml:"debounce,omitempty"`
	MaxWait  Duration `json:"max_wait,omitzero" yaml:"max_wait,omitempty"`
}

// Duration is a time.Duration written as "10m" in YAML and JSON.
type Duration time.Duration

// MarshalText writes d as time.Duration's String.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads "10m", "1h30m" and the like.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as 10m or 1h: %w", err)
	}
	*d = Duration(v)
	return nil
}

// FieldError is one thing wrong with an app: which app, which field, why.
// Validate returns them joined; errors.AsType finds the first.
type FieldError struct {
	App    string // the app's id as given
	Field  string // e.g. "apns.topic", "policy.ios"
	Reason string
}

func (e *FieldError) Error() string { return fmt.Sprintf("app %q: %s: %s", e.App, e.Field, e.Reason) }

// Validate checks an app on its own: not that its files exist or hold good
// credentials (the senders check those), nor that its feeds are in the
// catalogue. Each problem is a *FieldError.
func (a App) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{App: a.ID, Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	if !ValidID(a.ID) {
		bad("id", "want 1-32 characters of a-z, 0-9 and '-', starting with a letter or digit")
	}
	if strings.TrimSpace(a.Name) == "" || len(a.Name) > 100 {
		bad("name", "want a display name of 1-100 characters")
	}
	if a.APNs == nil && a.FCM == nil {
		bad("apns/fcm", "set at least one provider")
	}
	if p := a.APNs; p != nil {
		if p.Topic == "" {
			bad("apns.topic", "set the app's bundle id")
		}
		key, cert := p.KeyFile != "", p.CertFile != ""
		switch {
		case key == cert:
			bad("apns", "set either key_file (with key_id and team_id) or cert_file, not both or neither")
		case key && (len(p.KeyID) != 10 || len(p.TeamID) != 10):
			bad("apns", "key_file needs key_id and team_id, 10 characters each")
		case cert && (p.KeyID != "" || p.TeamID != ""):
			bad("apns", "key_id and team_id go with key_file, not cert_file")
		}
	}
	if p := a.FCM; p != nil && p.CredentialsFile == "" {
		bad("fcm.credentials_file", "set the service-account JSON file")
	}
	for name, l := range map[string]Limits{"policy.ios": a.Policy.IOS, "policy.android": a.Policy.Android} {
		if l.Limit < 0 || l.Window < 0 || l.MinGap < 0 || l.Debounce < 0 || l.MaxWait < 0 {
			bad(name, "values must not be negative")
		}
	}
	seen := map[string]bool{}
	for _, f := range a.Feeds {
		if seen[f] {
			bad("feeds", "%q is listed twice", f)
		}
		seen[f] = true
	}
	return errors.Join(errs...)
}

// Offers reports whether the app offers feed.
func (a App) Offers(feed string) bool { return len(a.Feeds) == 0 || slices.Contains(a.Feeds, feed) }

// Single is the app that the single-app settings (NUDGE_APNS_*,
// NUDGE_FCM_*) define when there is no apps file; either provider may be
// nil. Its policy is the deployment's and it offers every feed.
func Single(apns *APNs, fcm *FCM) App {
	return App{ID: Default, Name: "Default app", APNs: apns, FCM: fcm}
}

// File is the layout of an apps file (NUDGE_APPS_FILE).
type File struct {
	Apps []App `yaml:"apps"`
}

// Parse reads an apps file: unknown fields, duplicate ids and invalid apps
// are errors naming the app and field. name labels the errors.
func Parse(r io.Reader, name string) ([]App, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read apps file %s: %w", name, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f File
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("apps file %s is empty: list the apps under \"apps:\"", name)
		}
		return nil, fmt.Errorf("apps file %s: %w", name, err)
	}
	if len(f.Apps) == 0 {
		return nil, fmt.Errorf("apps file %s lists no apps: list them under \"apps:\"", name)
	}
	var errs []error
	ids := map[string]bool{}
	for _, a := range f.Apps {
		if ids[a.ID] {
			errs = append(errs, fmt.Errorf("app %q is defined twice", a.ID))
		}
		ids[a.ID] = true
		errs = append(errs, a.Validate())
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("apps file %s: %w", name, err)
	}
	return f.Apps, nil
}
