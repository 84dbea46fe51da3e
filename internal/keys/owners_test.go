package keys_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// keysPath is the import path of this package.
const keysPath = "github.com/nudge-dev/nudge/internal/keys"

// family is one Redis key family: the functions of this package that name
// its keys, the one package that reads and writes it, and the packages
// that use the owner's Go API (documentation: docs/architecture.md, "Who
// owns which Redis data", shows the same table).
type family struct {
	name    string   // as in the architecture table
	funcs   []string // the key functions of the family
	owner   string   // module-relative package directory; its sub-packages count as the owner
	callers []string // packages that call the owner's API instead of the keys
}

// owners is the ownership table. A package other than a family's owner (or
// one of the owner's sub-packages, such as devices/devicestest) that refers
// to one of the family's key functions fails TestKeyOwnership.
var owners = []family{
	{"device hash, token index, id sequence, subscription bitmaps, token registration counters, unresponsive counters",
		[]string{"Device", "DeviceSeq", "TokenShard", "SubChunk", "AppSubChunk", "SubChunkOf", "TokenRegistrations", "Unresponsive"},
		"internal/devices", []string{"internal/fanout", "internal/delivery", "internal/httpapi", "internal/dispatcher"}},
	{"feed catalogue", []string{"Feeds"}, "internal/catalog",
		[]string{"internal/devices", "internal/feeds", "internal/httpapi", "internal/dispatcher"}},
	{"feed state: item log, memory, cursor, health, lease",
		[]string{"FeedItems", "FeedSeen", "FeedCursor", "FeedHealth", "FeedLease"}, "internal/feeds",
		[]string{"internal/httpapi", "internal/dispatcher"}},
	{"throttle state and due sets", []string{"Throttle", "Due"}, "internal/throttle",
		[]string{"internal/fanout", "internal/delivery", "internal/dispatcher"}},
	{"job queues: streams, retry sets, dead letters, done records, unique markers, heartbeats",
		[]string{"Stream", "Retry", "DeadLetter", "Done", "Unique", "Heartbeat"}, "internal/jobs",
		[]string{"internal/throttle", "internal/fanout", "internal/dispatcher", "internal/httpapi"}},
	{"fan-out events and the event id counter", []string{"Event", "EventSeq"}, "internal/events",
		[]string{"internal/fanout", "internal/delivery", "internal/httpapi"}},
	{"wake pacing", []string{"Pace"}, "internal/fanout", nil},
	{"audit stream", []string{"Audit"}, "internal/audit", []string{"internal/httpapi"}},
	{"scheduled syncs", []string{"ScheduleDue", "ScheduleSyncs", "ScheduleClaims"}, "internal/schedule",
		[]string{"internal/httpapi", "internal/dispatcher"}},
	{"fleet and per-app stats", []string{"Stats", "AppStats"}, "internal/stats",
		[]string{"internal/fanout", "internal/delivery", "internal/httpapi", "internal/dispatcher"}},
	{"provider pauses", []string{"ProviderPause"}, "internal/delivery", []string{"internal/dispatcher"}},
	{"receipt key and replay marks", []string{"ReceiptKey", "ReceiptSeen"}, "internal/receipts",
		[]string{"internal/delivery", "internal/httpapi"}},
	{"app catalogue edits and their change channel", []string{"Apps", "AppsChanged"}, "internal/apps",
		[]string{"internal/httpapi", "internal/dispatcher"}},
	{"stale-device sweep", []string{"StaleSweep"}, "internal/stale", []string{"internal/dispatcher"}},
	{"time-to-fresh of new items", []string{"FreshItems", "FreshState"}, "internal/freshness",
		[]string{"internal/httpapi", "internal/dispatcher"}},
}

// shared are the functions of this package that name no key family: every
// package may use them.
var shared = []string{"Partition", "Tag"}

// violation is one reference to a key function from outside its owner.
type violation struct {
	pos  token.Position
	pkg  string
	fn   string
	want string // the owner, or "" for a function that is in no family
}

func (v violation) String() string {
	if v.want == "" {
		return v.pos.String() + ": keys." + v.fn + " is in no family of the ownership table (owners_test.go)"
	}
	return v.pos.String() + ": " + v.pkg + " uses keys." + v.fn + ", owned by " + v.want + ": call the owner's API"
}

// ownerOf maps a key function to its owner.
func ownerOf() map[string]string {
	m := map[string]string{}
	for _, f := range owners {
		for _, fn := range f.funcs {
			m[fn] = f.owner
		}
	}
	return m
}

// check returns the references of file, in package directory pkg, to key
// functions that pkg does not own. It resolves the keys import by path, so
// a renamed import counts and another identifier named keys does not.
func check(fset *token.FileSet, pkg string, file *ast.File, funcs map[string]bool) []violation {
	local := ""
	for _, imp := range file.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == keysPath {
			local = "keys"
			if imp.Name != nil {
				local = imp.Name.Name
			}
		}
	}
	if local == "" || local == "_" {
		return nil
	}
	owner := ownerOf()
	var out []violation
	ast.Inspect(file, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		id, ok := sel.X.(*ast.Ident)
		// A local declaration of the same name shadows the import; the
		// parser resolves those (Obj is set), imports stay unresolved.
		if !ok || id.Name != local || id.Obj != nil {
			return true
		}
		fn := sel.Sel.Name
		if !funcs[fn] || slices.Contains(shared, fn) {
			return true // a constant, or a helper every package may use
		}
		want, known := owner[fn]
		switch {
		case !known:
		case pkg == want || strings.HasPrefix(pkg, want+"/"):
			return true
		}
		out = append(out, violation{pos: fset.Position(sel.Pos()), pkg: pkg, fn: fn, want: want})
		return true
	})
	return out
}

// keyFuncs returns the exported functions of this package.
func keyFuncs(t *testing.T) map[string]bool {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "keys.go", nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Recv == nil && fd.Name.IsExported() {
			out[fd.Name.Name] = true
		}
	}
	return out
}

// moduleRoot is the directory of go.mod above the test's directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		up := filepath.Dir(dir)
		if up == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = up
	}
}

// TestKeyOwnership parses every non-test Go file of the module and fails
// for each reference to a key function from a package that does not own
// its family.
func TestKeyOwnership(t *testing.T) {
	t.Parallel()
	funcs := keyFuncs(t)
	root := moduleRoot(t)
	fset := token.NewFileSet()
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		files++
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		for _, v := range check(fset, filepath.ToSlash(rel), f, funcs) {
			t.Error(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 50 {
		t.Fatalf("parsed %d files under %s: the walk missed the module", files, root)
	}
}

// TestOwnershipTableIsComplete: every key function is in exactly one
// family or shared, and every owner and caller is a package of the module.
func TestOwnershipTableIsComplete(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	seen := map[string]int{}
	for _, f := range owners {
		for _, fn := range f.funcs {
			seen[fn]++
		}
		for _, p := range append([]string{f.owner}, f.callers...) {
			if st, err := os.Stat(filepath.Join(root, p)); err != nil || !st.IsDir() {
				t.Errorf("family %q names package %s, which does not exist", f.name, p)
			}
		}
	}
	for _, fn := range shared {
		seen[fn]++
	}
	for fn := range keyFuncs(t) {
		if seen[fn] != 1 {
			t.Errorf("keys.%s is in %d families (with shared): want exactly 1", fn, seen[fn])
		}
	}
	for fn, n := range seen {
		if !keyFuncs(t)[fn] {
			t.Errorf("the table names keys.%s (%d times), which does not exist", fn, n)
		}
	}
}

// TestOwnershipCheckFindsViolations feeds the check synthetic files: it
// must report a family used outside its owner, including through a renamed
// import, and accept the owner, its sub-packages, shared helpers,
// constants and a local identifier that shadows the import.
func TestOwnershipCheckFindsViolations(t *testing.T) {
	t.Parallel()
	funcs := keyFuncs(t)
	tests := []struct {
		name, pkg, src string
		want           []string // functions reported
	}{
		{"api writes the audit stream", "internal/httpapi", `package httpapi
import "github.com/nudge-dev/nudge/internal/keys"
func f() string { return keys.Audit() }`, []string{"Audit"}},
		{"renamed import", "internal/fanout", `package fanout
import k "github.com/nudge-dev/nudge/internal/keys"
func f() (string, string) { return k.DeviceSeq(), k.SubChunk("a", 0) }`, []string{"DeviceSeq", "SubChunk"}},
		{"throttle names the device hash and the push stream", "internal/throttle", `package throttle
import "github.com/nudge-dev/nudge/internal/keys"
func f() []string { return []string{keys.Device(1), keys.Stream("push", 0), keys.Event("e")} }`, []string{"Device", "Stream", "Event"}},
		{"function in no family", "internal/stats", `package stats
import "github.com/nudge-dev/nudge/internal/keys"
func f() string { return keys.NotInTheTable() }`, []string{"NotInTheTable"}},
		{"owner", "internal/audit", `package audit
import "github.com/nudge-dev/nudge/internal/keys"
func f() string { return keys.Audit() }`, nil},
		{"owner's sub-package", "internal/devices/devicestest", `package devicestest
import "github.com/nudge-dev/nudge/internal/keys"
func f() string { return keys.Device(1) }`, nil},
		{"shared helpers and constants", "internal/dispatcher", `package dispatcher
import "github.com/nudge-dev/nudge/internal/keys"
func f() (string, int, string) { return keys.Tag(keys.Partition(3)), keys.Partitions, keys.PushQueue }`, nil},
		{"local identifier named keys", "internal/httpapi", `package httpapi
import "github.com/nudge-dev/nudge/internal/keys"
const n = keys.Partitions
type store struct{}
func (store) Audit() string { return "" }
func f() string { keys := store{}; return keys.Audit() }`, nil},
	}
	// A function missing from the table is reported too: pretend one exists.
	funcs = maps.Clone(funcs)
	funcs["NotInTheTable"] = true
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, "x.go", tc.src, 0)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range check(fset, tc.pkg, f, funcs) {
				got = append(got, v.fn)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("reported %v, want %v", got, tc.want)
			}
		})
	}
}
