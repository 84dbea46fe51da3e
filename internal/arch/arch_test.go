package arch_test

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/nudge-dev/nudge/internal/arch"
)

// deps lists every package pkg links, as go list -deps reports them.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-deps", pkg).Output()
	if err != nil {
		if ee, ok := errors.AsType[*exec.ExitError](err); ok {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// TestAPILinksNoPushStack is the rule: the api binary links no push SDK,
// no gRPC, and neither the dispatcher's assembly nor delivery or push.
func TestAPILinksNoPushStack(t *testing.T) {
	t.Parallel()
	all := deps(t, "github.com/nudge-dev/nudge/cmd/api")
	if len(all) < 50 {
		t.Fatalf("go list -deps cmd/api listed %d packages; the check would prove nothing", len(all))
	}
	if bad := arch.Violations(all, arch.APIForbidden); len(bad) > 0 {
		t.Fatalf("cmd/api links %d packages it must not (see internal/arch):\n  %s", len(bad), strings.Join(bad, "\n  "))
	}
}

// TestCheckCatchesTheDispatcher proves the check can fail: the dispatcher
// binary links every forbidden family, and the check names each one.
func TestCheckCatchesTheDispatcher(t *testing.T) {
	t.Parallel()
	bad := arch.Violations(deps(t, "github.com/nudge-dev/nudge/cmd/dispatcher"), arch.APIForbidden)
	for _, f := range arch.APIForbidden {
		if !slices.ContainsFunc(bad, func(p string) bool { return p == f || strings.HasPrefix(p, f+"/") }) {
			t.Errorf("the check missed %s in cmd/dispatcher's dependencies (found: %v)", f, bad)
		}
	}
}

func TestViolationsMatchesWholePathElements(t *testing.T) {
	t.Parallel()
	got := arch.Violations([]string{
		"github.com/nudge-dev/nudge/internal/push",
		"github.com/nudge-dev/nudge/internal/pushemu", // a sibling, not below push
		"google.golang.org/grpc/codes",
		"google.golang.org/grpcx",
		"firebase.google.com/go/v4/messaging",
	}, arch.APIForbidden)
	want := []string{"github.com/nudge-dev/nudge/internal/push", "google.golang.org/grpc/codes", "firebase.google.com/go/v4/messaging"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
