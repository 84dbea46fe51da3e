package events

import "time"

// Progress is the state of one event's fan-out and of its pushes.
type Progress struct {
	ID         string
	Done       bool      // every subscriber was planned
	Cursor     uint64    // next device id to walk
	FinishedAt time.Time // when planning completed; zero until Done
	Targeted   int64     // subscribed devices found
	Queued     int64     // push queued at once
	Deferred   int64     // push deferred by the throttle
	Coalesced  int64     // merged into a pending push
	Skipped    int64     // background sync off
	Missing    int64     // subscribed id without a device
	Duplicate  int64     // re-planned after a crash (inside the counts above)
	// Held counts devices the alert guard held back: they got the sync
	// without the visible alert (inside the counts above).
	Held   int64
	Sent   int64 // pushes the provider accepted (Record)
	Pruned int64 // pushes whose token was pruned (Record)
	Failed int64 // pushes that failed for good (Record)
	// Superseded counts pushes dropped at send time because the device was
	// deleted, opted out or moved to another token after planning (Record).
	Superseded int64
	// Unresponsive counts pushes held back at send time because the
	// device is unresponsive and its next probe was not due
	// (devices.Unresponsive): budget saved (Record).
	Unresponsive int64
	// Dropped counts devices whose pending push the throttle's scheduler
	// dropped because they opted out or were deleted before it was due
	// (Record with OutcomeSkipped); they are inside Skipped too.
	Dropped int64
	// LastSentAt is when the latest push covering the event was sent;
	// zero before the first.
	LastSentAt time.Time
}

// Progress states, from planning to the last device accounted for.
const (
	StatePlanning = "planning" // subscribers are still being walked
	StateSending  = "sending"  // planned; pushes are on their way
	StateDone     = "done"     // every targeted device has its outcome
)

// InFlight is the number of targeted devices whose push has not ended yet.
// A device the throttle queued, deferred or merged into a pending push
// ends with the one push that carries the event (Record counts each such
// push once for every event it covers), so every targeted device is
// exactly one of skipped (including a pending push the throttle's
// scheduler dropped), missing, sent, pruned, failed, superseded,
// unresponsive or in
// flight. While planning, a push can end before its window's counts are
// checkpointed; InFlight is then 0 rather than negative, and Accounted
// counts the ended push.
func (p Progress) InFlight() int64 {
	return max(0, p.Queued+p.Deferred+p.Coalesced-p.Ended())
}

// Accounted is the number of targeted devices seen so far: skipped,
// missing, ended and in flight. It equals Targeted once every window's
// counts are in, and the sum of the parts at every read.
func (p Progress) Accounted() int64 {
	return p.Skipped + p.Missing + p.Ended() - p.Dropped + p.InFlight()
}

// State is StatePlanning, StateSending or StateDone.
func (p Progress) State() string {
	switch {
	case !p.Done:
		return StatePlanning
	case p.InFlight() > 0:
		return StateSending
	}
	return StateDone
}

// Planned is the number of pushes the planning step produced that have
// not ended yet: each queued or deferred push ends in exactly one of
// sent, pruned, failed or superseded (coalesced updates ride in a pending
// push and end with it).
func (p Progress) Planned() int64 { return p.Queued + p.Deferred }

// Ended is the number of pushes with a final outcome, counting a dropped
// pending push once per device.
func (p Progress) Ended() int64 {
	return p.Sent + p.Pruned + p.Failed + p.Superseded + p.Unresponsive + p.Dropped
}

// Outcome is what happened to a push, as recorded by the push worker.
type Outcome string

// Push outcomes.
const (
	OutcomeSent   Outcome = "sent"
	OutcomePruned Outcome = "pruned"
	OutcomeFailed Outcome = "failed"
	// OutcomeSuperseded: dropped at send time because the device was
	// deleted, opted out or re-tokened after the push was planned.
	OutcomeSuperseded Outcome = "superseded"
	// OutcomeUnresponsive: held back at send time because the device is
	// unresponsive and its next probe was not due.
	OutcomeUnresponsive Outcome = "unresponsive"
	// OutcomeSkipped: the device's pending push was dropped before it was
	// due because the device opted out or was deleted (the throttle's
	// scheduler); the device counts as skipped. Stored in field "dropped".
	OutcomeSkipped Outcome = "skipped"
)
