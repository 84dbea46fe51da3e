package feeds

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"

	"github.com/nudge-dev/nudge/internal/catalog"
)

// ErrCredentials is a feed whose credentials file cannot be used. Its
// message names the file and the setting, never the file's content.
var ErrCredentials = errors.New("feed credentials unusable")

// maxCredentials bounds a credentials file: an Authorization value is a
// line, not a document.
const maxCredentials = 8 << 10

// readCredentials returns the Authorization header value for f: "" when it
// names no credentials, else the trimmed content of its file in dir. The
// file is read at every fetch, so an operator rotates a secret by replacing
// the file. Errors name the file and NUDGE_FEED_CREDENTIALS_DIR, never the
// content.
func readCredentials(dir string, f catalog.Feed) (string, error) {
	if f.Credentials == "" {
		return "", nil
	}
	if dir == "" {
		return "", fmt.Errorf("feed %s names credentials %q: set NUDGE_FEED_CREDENTIALS_DIR to the directory that holds them: %w", f.ID, f.Credentials, ErrCredentials)
	}
	// catalog.Feed.Validate allows no path separators or leading dots, and
	// Base keeps a value stored some other way inside dir all the same.
	path := filepath.Join(dir, filepath.Base(f.Credentials))
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("feed %s: credentials file %s (NUDGE_FEED_CREDENTIALS_DIR): %w", f.ID, path, errors.Join(ErrCredentials, errors.Unwrap(err)))
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxCredentials {
		return "", fmt.Errorf("feed %s: credentials file %s must be a regular file of at most %d bytes: %w", f.ID, path, maxCredentials, ErrCredentials)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("feed %s: read credentials file %s: %w", f.ID, path, errors.Join(ErrCredentials, errors.Unwrap(err)))
	}
	v := strings.TrimSpace(string(b))
	if v == "" || strings.ContainsFunc(v, unicode.IsControl) {
		return "", fmt.Errorf("feed %s: credentials file %s must hold one line, the Authorization header value (e.g. \"Basic dXNlcjpwYXNz\"): %w", f.ID, path, ErrCredentials)
	}
	return v, nil
}
