package httpapi

import "context"

// Responsiveness resumes a device whose app posted a receipt and counts
// the unresponsive devices for the console (devices.Unresponsive);
// *devices.Registry is one.
type Responsiveness interface {
	// Resume makes a device responsive again: its next silent push is
	// sent at once.
	Resume(ctx context.Context, id uint64) (bool, error)
	// UnresponsiveCounts returns the unresponsive devices per platform.
	UnresponsiveCounts(ctx context.Context) (map[string]int64, error)
}
