package auth_test

import (
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/nudge-dev/nudge/internal/auth"
)

func TestParseKeysErrorsNameFileAndLine(t *testing.T) {
	t.Parallel()
	good := strings.Repeat("ab", 32)
	tests := []struct {
		name, file string
		wantLine   string
	}{
		{"two fields", "# keys\nalice admin\n", "keys.txt:2:"},
		{"bad role", "alice root " + good + "\n", "keys.txt:1:"},
		{"short hash", "\n\nalice admin abcd\n", "keys.txt:3:"},
		{"not hex", "alice admin " + strings.Repeat("zz", 32) + "\n", "keys.txt:1:"},
		{"bad name", "al/ice admin " + good + "\n", "keys.txt:1:"},
		{"duplicate name", "alice admin " + good + "\nalice editor " + good + "\n", "keys.txt:2:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := auth.ParseKeys(strings.NewReader(tt.file), "keys.txt")
			le, ok := errors.AsType[*auth.LineError](err)
			if !ok || !strings.HasPrefix(err.Error(), tt.wantLine) {
				t.Fatalf("got %v (LineError %v), want an error starting %q", err, ok, tt.wantLine)
			}
			if le.File != "keys.txt" {
				t.Fatalf("file: got %q, want keys.txt", le.File)
			}
		})
	}
}

func TestMintLookupAndRoles(t *testing.T) {
	t.Parallel()
	admin, err := auth.Mint("ops", auth.RoleAdmin)
	if err != nil {
		t.Fatalf("mint: %v", err)
	}
	editor, err := auth.Mint("desk", auth.RoleEditor)
	if err != nil {
		t.Fatalf("mint: %v", err)
	}
	if strings.Contains(admin.Line, admin.Key) {
		t.Fatalf("the file line contains the key itself")
	}
	ks, err := auth.ParseKeys(strings.NewReader("# comment\n"+admin.Line+"\n\n"+editor.Line+"\n"), "k")
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	tests := []struct {
		name, bearer string
		need         auth.Role
		wantKey      string
		wantErr      error
	}{
		{"admin as admin", admin.Key, auth.RoleAdmin, "ops", nil},
		{"admin as editor", admin.Key, auth.RoleEditor, "ops", nil},
		{"editor as editor", editor.Key, auth.RoleEditor, "desk", nil},
		{"editor as admin", editor.Key, auth.RoleAdmin, "desk", auth.ErrForbidden},
		{"unknown key", "nk_nope", auth.RoleEditor, "", auth.ErrUnauthenticated},
		{"no header", "", auth.RoleEditor, "", auth.ErrUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest("GET", "/", nil)
			if tt.bearer != "" {
				r.Header.Set("Authorization", "Bearer "+tt.bearer)
			}
			k, err := ks.Check(r, tt.need)
			if !errors.Is(err, tt.wantErr) || k.Name != tt.wantKey {
				t.Fatalf("got %q %v, want %q %v", k.Name, err, tt.wantKey, tt.wantErr)
			}
		})
	}
	if _, err := auth.Mint("x", "root"); err == nil {
		t.Fatalf("mint with a bad role: got nil error")
	}
}

func TestDeviceSecret(t *testing.T) {
	t.Parallel()
	s1, h1 := auth.NewDeviceSecret()
	s2, _ := auth.NewDeviceSecret()
	if s1 == s2 || len(s1) < 40 {
		t.Fatalf("secrets: got %q and %q, want two distinct long secrets", s1, s2)
	}
	if !auth.DeviceSecretMatches(s1, h1[:]) {
		t.Fatalf("secret does not match its own hash")
	}
	if auth.DeviceSecretMatches(s2, h1[:]) || auth.DeviceSecretMatches("", h1[:]) || auth.DeviceSecretMatches(s1, nil) {
		t.Fatalf("a wrong secret matched")
	}
}

func TestKeysLimitedToApps(t *testing.T) {
	t.Parallel()
	all, err := auth.Mint("all", auth.RoleEditor)
	if err != nil {
		t.Fatalf("mint: %v", err)
	}
	desk, err := auth.Mint("desk", auth.RoleEditor, "sports", "news", "news")
	if err != nil {
		t.Fatalf("mint: %v", err)
	}
	if !strings.HasSuffix(desk.Line, " sports,news,news") || strings.Count(all.Line, " ") != 2 {
		t.Fatalf("minted lines %q, %q: want the apps column on the limited key only", all.Line, desk.Line)
	}
	ks, err := auth.ParseKeys(strings.NewReader(all.Line+"\n"+desk.Line+"\n"), "k")
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	for _, tt := range []struct {
		key     string
		want    []string
		news, x bool
	}{
		{all.Key, nil, true, true},
		{desk.Key, []string{"news", "sports"}, true, false},
	} {
		k, ok := ks.Lookup(tt.key)
		if !ok || !slices.Equal(k.Apps, tt.want) || k.AllApps() != (tt.want == nil) ||
			k.AllowsApp("news") != tt.news || k.AllowsApp("weather") != tt.x {
			t.Fatalf("key %s (found %v): apps %v, want %v", k.Name, ok, k.Apps, tt.want)
		}
	}
	h := strings.Repeat("ab", 32)
	for _, tt := range []struct {
		name, file string
	}{
		{"bad app id", "x editor " + h + " News\n"},
		{"empty app", "x editor " + h + " news,,sports\n"},
		{"five fields", "x editor " + h + " news sports\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.ParseKeys(strings.NewReader(tt.file), "k")
			if _, ok := errors.AsType[*auth.LineError](err); !ok {
				t.Fatalf("got %v, want a LineError", err)
			}
		})
	}
	if _, err := auth.Mint("x", auth.RoleEditor, "Bad"); err == nil {
		t.Fatalf("mint with a bad app id: want an error")
	}
}
