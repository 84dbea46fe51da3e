package httpapi

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/nudge-dev/nudge/internal/devices"
	"github.com/nudge-dev/nudge/internal/receipts"
	"github.com/nudge-dev/nudge/internal/service"
	"github.com/prometheus/client_golang/prometheus"
)

// SyncState records what a receipt tells of a device: its cursors and
// the time it synced; *devices.Registry is one.
type SyncState interface {
	RecordSync(ctx context.Context, id uint64, cursors map[string]int64) (devices.Synced, error)
}

// Receipt sources: what made the app sync.
const (
	sourcePush            = "push"
	sourceBackgroundFetch = "background_fetch"
	sourceForeground      = "foreground"
)

type receiptRequest struct {
	// Source is push (the default), background_fetch or foreground.
	Source     string    `json:"source"`
	PushID     string    `json:"push_id"`
	ReceivedAt time.Time `json:"received_at"`
	Outcome    string    `json:"outcome"`
	Items      *int      `json:"items"`
	// Cursors are the cursors the app now has, per feed.
	Cursors map[string]int64 `json:"cursors"`
}

// maxReceiptAge bounds how late a receipt may arrive and still count.
const maxReceiptAge = 7 * 24 * time.Hour

// maxReceiptCursors bounds the feeds of one receipt.
const maxReceiptCursors = 64

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

// postReceipt is POST /v1/devices/{id}/receipts: the app reports a sync,
// after a push woke it (source push, with the push's signed id), after a
// background fetch, or after a foreground refresh, with the cursor it now
// has per feed. Push receipts give the wake rate and wake latency per
// platform and lane; every receipt records the device's cursors and sync
// time (devices) and counts towards time-to-fresh (freshness). Every
// check comes before anything is written: a 400 records nothing.
func (s *Server) postReceipt(w http.ResponseWriter, r *http.Request) error {
	d, err := s.device(r)
	if err != nil {
		return err
	}
	var req receiptRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	ctx := r.Context()
	source := cmp.Or(req.Source, sourcePush)
	switch source {
	case sourcePush, sourceBackgroundFetch, sourceForeground:
	default:
		return badRequest("source", `source: want "push", "background_fetch" or "foreground"`)
	}
	switch req.Outcome {
	case "synced", "no_data", "failed":
	case "":
		if source == sourcePush {
			return badRequest("outcome", `outcome: want "synced", "no_data" or "failed"`)
		}
	default:
		return badRequest("outcome", `outcome: want "synced", "no_data" or "failed"`)
	}
	if req.Items != nil && *req.Items < 0 {
		return badRequest("items", "items: want the number of items synced (≥ 0)")
	}
	cursors, err := s.receiptCursors(ctx, d, req.Cursors)
	if err != nil {
		return err
	}
	if source != sourcePush {
		if req.PushID != "" {
			return badRequest("push_id", "push_id: only a receipt of source push carries one")
		}
		return s.recordSync(w, r, d, source, cursors)
	}
	id, err := s.verifyReceipt(ctx, d.ID, req.PushID)
	if err != nil {
		return err
	}
	lane, sent, err := receipts.ParsePushID(id)
	if err != nil {
		return badRequest("push_id", "push_id: send the push_id of the push that woke the app")
	}
	if req.ReceivedAt.IsZero() {
		return badRequest("received_at", "received_at: want the RFC 3339 time the app woke")
	}
	now := s.now()
	if req.ReceivedAt.After(now.Add(time.Hour)) || req.ReceivedAt.Before(sent.Add(-time.Hour)) || now.Sub(sent) > maxReceiptAge {
		return badRequest("received_at", "received_at is too far from the push's send time; check the device clock")
	}
	if err := s.claimReceipt(ctx, d.ID, req.PushID, sent.Add(maxReceiptAge).Sub(now)); err != nil {
		return err
	}
	if err := s.deps.Stats.Receipt(ctx, deviceApp(d), d.Platform, lane, req.Outcome, req.ReceivedAt.Sub(sent)); err != nil {
		return err
	}
	return s.recordSync(w, r, d, source, cursors)
}

// receiptCursors checks a receipt's cursors: whole numbers ≥ 0, at most
// maxReceiptCursors feeds, none beyond its feed's head (the app cannot
// have read past it). It returns those of feeds the device follows; the
// others are ignored (the app may have changed its feeds meanwhile).
func (s *Server) receiptCursors(ctx context.Context, d devices.Device, in map[string]int64) (map[string]int64, error) {
	if len(in) > maxReceiptCursors {
		return nil, badRequest("cursors", "cursors: at most "+strconv.Itoa(maxReceiptCursors)+" feeds")
	}
	var followed []string
	for f, c := range in {
		if c < 0 {
			return nil, badRequest("cursors."+f, "cursors."+f+": want the feed's cursor the app now has (a whole number ≥ 0)")
		}
		if slices.Contains(d.Feeds, f) {
			followed = append(followed, f)
		}
	}
	out := make(map[string]int64, len(followed))
	if len(followed) == 0 {
		return out, nil
	}
	heads, err := s.deps.Items.Heads(ctx, followed...)
	if err != nil {
		return nil, err
	}
	for i, f := range followed {
		if c, head := in[f], heads[i]; c > head {
			return nil, badRequest("cursors."+f, "cursors."+f+": beyond the feed's newest cursor "+strconv.FormatInt(head, 10)+
				"; send the next or an item's cursor from the sync read")
		}
		out[f] = in[f]
	}
	return out, nil
}

// recordSync writes the receipt's sync state, counts it towards
// time-to-fresh and answers 204. The sync state is the receipt's record:
// a failure to count it for time-to-fresh is logged, not the app's error
// (a retried push receipt would be refused as replayed).
func (s *Server) recordSync(w http.ResponseWriter, r *http.Request, d devices.Device, source string, cursors map[string]int64) error {
	ctx := r.Context()
	synced, err := s.deps.SyncState.RecordSync(ctx, d.ID, cursors)
	if err != nil {
		return err
	}
	s.received.WithLabelValues(source).Inc()
	reached, err := s.deps.Freshness.Synced(ctx, synced)
	if err != nil {
		logFrom(ctx).ErrorContext(ctx, "count receipt for time-to-fresh", "device_id", d.ID, "err", err)
	}
	for _, x := range reached {
		s.fresh.WithLabelValues(x.Feed, x.Platform, strconv.Itoa(x.Share)).Observe(x.Latency.Seconds())
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
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
