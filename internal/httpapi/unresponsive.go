package httpapi

import "context"

// Responsiveness resumes a device whose app posted a receipt and counts
// the unresponsive devices for the console (devices.Unresponsive);
// *devices.Registry is one.
type Responsiveness interface {
	// UnresponsiveCounts returns the unresponsive devices per platform.
	UnresponsiveCounts(ctx context.Context) (map[string]int64, error)
}
