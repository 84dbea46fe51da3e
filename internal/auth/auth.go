// Package auth holds nudge's credentials: API keys for editors and admins
// (named, with a role, stored only as SHA-256 hashes) and the per-device
// secrets that apps use to manage their own registration.
//
// A presented key is hashed and compared in constant time with every known
// hash; the raw key is never stored or logged. Logs and audit records name a
// key by its Name.
package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Role is what an API key may do. Admin implies editor.
type Role string

// The roles, from least to most powerful.
const (
	RoleEditor Role = "editor" // may trigger breaking-news syncs
	RoleAdmin  Role = "admin"  // may also edit the feed catalogue
)

// rank orders roles; 0 is unknown.
func (r Role) rank() int {
	switch r {
	case RoleEditor:
		return 1
	case RoleAdmin:
		return 2
	}
	return 0
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r.rank() > 0 }

// Allows reports whether a key with role r may act in role need.
func (r Role) Allows(need Role) bool { return r.rank() > 0 && r.rank() >= need.rank() }

// Key is one API key as known to the server: a name, a role, the apps it
// may act for and the SHA-256 of the key. The key itself is never kept.
type Key struct {
	Name string
	Role Role
	// Apps are the app ids the key may act for, sorted; nil means every
	// app (the keys file's optional fourth column, "news,sports").
	Apps []string
	hash [sha256.Size]byte
}

// AllApps reports whether the key may act for every app, including apps
// added after the key.
func (k Key) AllApps() bool { return k.Apps == nil }

// AllowsApp reports whether the key may act for app.
func (k Key) AllowsApp(app string) bool { return k.Apps == nil || slices.Contains(k.Apps, app) }

// Errors of API-key and device-secret checks.
var (
	// ErrUnauthenticated means no credential, or one that matches nothing.
	ErrUnauthenticated = errors.New("missing or unknown credential")
	// ErrForbidden means a valid key whose role is too low.
	ErrForbidden = errors.New("credential lacks the required role")
)

// Keys is the set of API keys the server accepts. A set loaded from a file
// can be re-read (Reload, Watch) while requests use it: a key removed from
// the file stops working as soon as the new set is in.
type Keys struct {
	path string
	set  atomic.Pointer[[]Key]

	mu  sync.Mutex        // serialises reloads
	sum [sha256.Size]byte // of the file content last loaded
}

func (ks *Keys) list() []Key {
	if p := ks.set.Load(); p != nil {
		return *p
	}
	return nil
}

// nameRE is what a key name may look like.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// LineError is a bad line of an API keys file.
type LineError struct {
	File   string
	Line   int
	Reason string
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason) }

// LoadKeys reads an API keys file (see ParseKeys). An empty path gives an
// empty set: every key-protected route then answers 401.
func LoadKeys(path string) (*Keys, error) {
	if path == "" {
		return &Keys{}, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("open api keys file (NUDGE_API_KEYS_FILE): %w", err)
	}
	ks, err := ParseKeys(bytes.NewReader(b), path)
	if err != nil {
		return nil, err
	}
	ks.path, ks.sum = path, sha256.Sum256(b)
	return ks, nil
}

// Reload re-reads the keys file if its content changed. A file that cannot
// be read or parsed leaves the current set in place and returns the error,
// so a half-written file never locks everyone out. changed reports whether
// a new set is now in use. Keys not loaded from a file never change.
func (ks *Keys) Reload() (changed bool, err error) {
	if ks.path == "" {
		return false, nil
	}
	ks.mu.Lock()
	defer ks.mu.Unlock()
	b, err := os.ReadFile(ks.path)
	if err != nil {
		return false, fmt.Errorf("reload api keys file %s (NUDGE_API_KEYS_FILE): %w", ks.path, err)
	}
	sum := sha256.Sum256(b)
	if sum == ks.sum {
		return false, nil
	}
	fresh, err := ParseKeys(bytes.NewReader(b), ks.path)
	if err != nil {
		return false, fmt.Errorf("reload api keys file: %w", err)
	}
	ks.set.Store(fresh.set.Load())
	ks.sum = sum
	return true, nil
}

// Watch calls Reload every interval until ctx ends, and at once whenever
// reload receives (the api sends on SIGHUP). Each outcome is logged: a
// changed set at info with the number of keys, a failed reload at error
// (the previous set stays in use). With interval at most 1s a key removed
// from the file stops working within about a second on every replica that
// reads the same file.
func (ks *Keys) Watch(ctx context.Context, interval time.Duration, reload <-chan os.Signal, log *slog.Logger) {
	if ks.path == "" {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		why := "changed"
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-reload:
			why = "signal"
		}
		changed, err := ks.Reload()
		switch {
		case err != nil:
			log.ErrorContext(ctx, "api keys file not reloaded; the previous keys stay in use", "trigger", why, "err", err)
		case changed:
			log.InfoContext(ctx, "api keys reloaded", "trigger", why, "keys", ks.Len(), "file", ks.path)
		case why == "signal":
			log.InfoContext(ctx, "api keys file unchanged", "trigger", why, "keys", ks.Len())
		}
	}
}

// appIDRE is what an app id may look like (as apps.ValidID; auth does not
// import the app catalogue).
var appIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

// ParseKeys parses an API keys file: one key per line as
// "<name> <role> <sha256 hex of the key> [app,app…]", blank lines and lines
// starting with '#' ignored. The optional fourth column limits the key to
// those apps; without it the key may act for every app. A bad line is a
// *LineError naming file:line.
func ParseKeys(r io.Reader, file string) (*Keys, error) {
	var list []Key
	names := map[string]int{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		bad := func(format string, a ...any) error {
			return &LineError{File: file, Line: n, Reason: fmt.Sprintf(format, a...)}
		}
		f := strings.Fields(line)
		if len(f) != 3 && len(f) != 4 {
			return nil, bad("want \"<name> <role> <sha256 hex> [app,app…]\", got %d fields", len(f))
		}
		if !nameRE.MatchString(f[0]) {
			return nil, bad("key name %q: use 1-64 of [A-Za-z0-9._@-]", f[0])
		}
		if prev, dup := names[f[0]]; dup {
			return nil, bad("key name %q already used on line %d", f[0], prev)
		}
		role := Role(f[1])
		if !role.Valid() {
			return nil, bad("role %q: want editor or admin", f[1])
		}
		h, err := hex.DecodeString(f[2])
		if err != nil || len(h) != sha256.Size {
			return nil, bad("hash: want 64 hex characters (sha256 of the key; `api mint-key` prints the line)")
		}
		k := Key{Name: f[0], Role: role}
		if len(f) == 4 {
			if k.Apps, err = parseApps(f[3]); err != nil {
				return nil, bad("%v", err)
			}
		}
		copy(k.hash[:], h)
		names[f[0]] = n
		list = append(list, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	ks := &Keys{}
	ks.set.Store(&list)
	return ks, nil
}

// parseApps parses the apps column: app ids separated by commas.
func parseApps(col string) ([]string, error) {
	var out []string
	for a := range strings.SplitSeq(col, ",") {
		if !appIDRE.MatchString(a) {
			return nil, fmt.Errorf("app %q: want app ids separated by commas, e.g. news,sports (1-32 of [a-z0-9-])", a)
		}
		out = append(out, a)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Len is the number of keys.
func (ks *Keys) Len() int { return len(ks.list()) }

// Lookup finds the key whose hash matches presented. It hashes presented
// once and compares it with every known hash in constant time, so timing
// does not tell which key (or how much of one) matched.
func (ks *Keys) Lookup(presented string) (Key, bool) {
	h := sha256.Sum256([]byte(presented))
	var found Key
	ok := 0
	for _, k := range ks.list() {
		if subtle.ConstantTimeCompare(h[:], k.hash[:]) == 1 {
			found, ok = k, 1
		}
	}
	return found, ok == 1 && presented != ""
}

// Check authenticates the request's "Authorization: Bearer <key>" header
// and checks that the key's role allows need. It returns ErrUnauthenticated
// or ErrForbidden on failure.
func (ks *Keys) Check(r *http.Request, need Role) (Key, error) {
	tok, ok := BearerToken(r)
	if !ok {
		return Key{}, ErrUnauthenticated
	}
	k, ok := ks.Lookup(tok)
	if !ok {
		return Key{}, ErrUnauthenticated
	}
	if !k.Role.Allows(need) {
		return k, ErrForbidden
	}
	return k, nil
}

// BearerToken returns the credential of an "Authorization: Bearer <x>" header.
func BearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

type keyCtx struct{}

// WithKey returns ctx carrying the authenticated key.
func WithKey(ctx context.Context, k Key) context.Context { return context.WithValue(ctx, keyCtx{}, k) }

// KeyFrom returns the authenticated key of a request context, if any.
func KeyFrom(ctx context.Context) (Key, bool) {
	k, ok := ctx.Value(keyCtx{}).(Key)
	return k, ok
}

// Minted is a newly minted API key.
type Minted struct {
	Key  string // the key itself; show it once, never store it
	Line string // the line to add to the API keys file
}

// Mint creates a new random API key for name and role, limited to apps
// (none: every app).
func Mint(name string, role Role, apps ...string) (Minted, error) {
	if !nameRE.MatchString(name) {
		return Minted{}, fmt.Errorf("key name %q: use 1-64 of [A-Za-z0-9._@-]", name)
	}
	if !role.Valid() {
		return Minted{}, fmt.Errorf("role %q: want editor or admin", role)
	}
	line := ""
	if len(apps) > 0 {
		if _, err := parseApps(strings.Join(apps, ",")); err != nil {
			return Minted{}, err
		}
		line = " " + strings.Join(apps, ",")
	}
	key := "nk_" + randomString()
	h := sha256.Sum256([]byte(key))
	return Minted{Key: key, Line: name + " " + string(role) + " " + hex.EncodeToString(h[:]) + line}, nil
}

// randomString returns 32 random bytes, base64url-encoded (43 characters).
func randomString() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// NewDeviceSecret returns a fresh device secret and its SHA-256. The secret
// is 32 random bytes, so a plain hash is enough: it cannot be brute-forced.
func NewDeviceSecret() (secret string, hash [sha256.Size]byte) {
	secret = randomString()
	return secret, sha256.Sum256([]byte(secret))
}

// DeviceSecretMatches reports, in constant time, whether presented hashes to
// stored.
func DeviceSecretMatches(presented string, stored []byte) bool {
	h := sha256.Sum256([]byte(presented))
	return len(stored) == sha256.Size && subtle.ConstantTimeCompare(h[:], stored) == 1 && presented != ""
}
