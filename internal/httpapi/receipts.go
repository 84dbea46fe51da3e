package httpapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/nudge-dev/nudge/internal/receipts"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/prometheus/client_golang/prometheus"
)

// newRejectedReceipts is the counter of receipts refused as forged or
// replayed.
func newRejectedReceipts(a service.Archetype) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nudge_receipts_rejected_total",
		Help: "Wake receipts refused: reason forged (push id not signed for this device) or replayed (already counted).",
	}, []string{"reason"})
	for _, r := range []string{"forged", "replayed"} {
		c.WithLabelValues(r)
	}
	return c, a.Register(c)
}

// verifyReceipt checks that pushID was signed by nudge for device and
// returns it without the signature. A forged push id is a 400 on push_id
// and counted.
func (s *Server) verifyReceipt(ctx context.Context, device uint64, pushID string) (string, error) {
	id, err := s.receipts.Verify(ctx, device, pushID)
	if errors.Is(err, receipts.ErrForged) {
		s.rejected.WithLabelValues("forged").Inc()
		logFrom(ctx).InfoContext(ctx, "receipt refused", "device_id", device, "reason", "forged")
		return "", &HTTPError{Code: http.StatusBadRequest, Kind: "invalid_field", Field: "push_id",
			Msg: "push_id: send the push_id of the push that woke the app, unchanged", Err: err}
	}
	return id, err
}

// claimReceipt refuses a second receipt for the same push (400, counted).
func (s *Server) claimReceipt(ctx context.Context, device uint64, pushID string, ttl time.Duration) error {
	err := s.receipts.Claim(ctx, device, pushID, max(ttl, time.Minute))
	if errors.Is(err, receipts.ErrReplayed) {
		s.rejected.WithLabelValues("replayed").Inc()
		logFrom(ctx).InfoContext(ctx, "receipt refused", "device_id", device, "reason", "replayed")
		return &HTTPError{Code: http.StatusBadRequest, Kind: "invalid_field", Field: "push_id",
			Msg: "push_id: a receipt for this push was already received", Err: err}
	}
	return err
}
