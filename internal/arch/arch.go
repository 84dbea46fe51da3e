// Package arch holds the checks of nudge's process boundaries, run by
// make test: the api and the dispatcher are siblings standing on the
// domain packages, so the api binary links neither the dispatcher's
// assembly nor the push stack it never uses (FCM's and APNs' SDKs, gRPC,
// delivery). The package has no code of its own; its test is the check.
package arch

// APIForbidden lists the import paths cmd/api must not link, directly or
// through any dependency: a path matches an entry equal to it or under it.
var APIForbidden = []string{
	"firebase.google.com",
	"github.com/sideshow/apns2",
	"google.golang.org/grpc",
	"github.com/nudge-dev/nudge/internal/dispatcher",
	"github.com/nudge-dev/nudge/internal/delivery",
	"github.com/nudge-dev/nudge/internal/push",
}

// Violations returns the packages of deps that match an entry of
// forbidden: equal to it, or below it (entry + "/").
func Violations(deps, forbidden []string) []string {
	var out []string
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || len(d) > len(f) && d[:len(f)] == f && d[len(f)] == '/' {
				out = append(out, d)
				break
			}
		}
	}
	return out
}
