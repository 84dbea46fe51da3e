// Package keys builds every Redis key nudge uses. It is the one place that
// shows the whole Redis model; no other package formats a key by hand.
//
// Keys that a Lua script or a MULTI touches together share a cluster hash tag
// (the part in braces), so every script stays inside one slot and runs
// unchanged on Redis Cluster.
//
// The model:
//
//	seq:device              STRING  INCR source of dense device ids
//	dev:{pN}:<id>           HASH    one device (token, platform, settings, secret hash)
//	tok:{sN}                HASH    token digest -> device id, sharded
//	sub:{<feed>:<k>}        STRING  subscription bitmap of ids [k*65536, (k+1)*65536), default app
//	sub:{<app>/<feed>:<k>}  STRING  the same for the devices of another app
//	unr:{pN}                HASH    platform -> unresponsive devices of partition N
//	feeds                   HASH    feed id -> catalogue entry (JSON)
//	feed:{<feed>}:*         feed state: item log, seen set, health, lease, cursor
//	thr:{pN}                HASH    throttle state per device in partition N
//	due:{pN}                ZSET    deferred pushes in partition N, scored by due time
//	q:<queue>:{pN}          STREAM  jobs of a queue's partition N (consumer group "workers")
//	q:<queue>:{pN}:retry    ZSET    jobs waiting for a retry, scored by due time
//	q:<queue>:{pN}:dlq      STREAM  dead jobs
//	q:<queue>:{pN}:sent     HASH    job id -> done record, checked on redelivery
//	q:<queue>:{pN}:u:<id>   STRING  idempotency marker of a unique job (TTL), value = job id
//	q:<queue>:hb:<consumer> STRING  heartbeat of a live worker (short TTL)
//	ev:{<id>}               HASH    one fan-out event: definition, cursor, progress
//	pace:{<feed>}           STRING  the feed's next free wake slot (unix µs, Redis clock; NUDGE_WAKE_RATE)
//	audit                   STREAM  editor and admin actions
//	stats:<minute>          HASH    fleet-wide push and wake counters of one minute
//	stats:<app>:<minute>    HASH    one app's push and wake counters of one minute
//	pause:<scope>           STRING  set while sends to a pause scope are paused (expires)
//	sched:{sched}:due       ZSET    scheduled syncs by due time (send_at, or a claim's lease end)
//	sched:{sched}:syncs     HASH    scheduled sync id -> its request (JSON)
//	sched:{sched}:claims    HASH    scheduled sync id -> token of the runner that took it
//	apps                    HASH    app id -> admin edit of the app catalogue (JSON: the app, or a tombstone)
//	apps:changed            PUBSUB  channel announcing an edit of the app catalogue (not a key)
//	stale:{sweep}           HASH    the stale-device sweep: number, phase, cursor, lease
//	fresh:{<feed>}:items    ZSET    the feed's tracked new items, cursor scored by cursor (freshness)
//	fresh:{<feed>}:state    HASH    cursor -> the item's time-to-fresh state (JSON; freshness)
//
// Each key family has one owning package, the only one that calls its
// key functions; the others use the owner's API. owners_test.go holds the
// table (docs/architecture.md shows it) and fails on any other use.
//
// The push queue has Partitions partitions; the events queue has one.
// A device lives in partition id % Partitions, so its registry hash, its
// throttle state and its push jobs share one slot.
package keys

import (
	"hash/fnv"
	"strconv"
)

// Partitions is the number of queue and throttle partitions. It is fixed:
// changing it would move devices between partitions.
const Partitions = 64

// TokenShards is the number of shards of the token index.
const TokenShards = 4096

// SubChunkBits is log2 of the number of device ids in one subscription
// bitmap chunk (65,536 ids, 8 KiB).
const SubChunkBits = 16

// Partition returns the partition that owns a device.
func Partition(deviceID uint64) int { return int(deviceID % Partitions) }

// Tag returns the hash tag of partition p, "{pN}".
func Tag(p int) string { return "{p" + strconv.Itoa(p) + "}" }

// DeviceSeq is the counter that hands out device ids.
func DeviceSeq() string { return "seq:device" }

// Device is the registry hash of one device.
func Device(id uint64) string {
	return "dev:" + Tag(Partition(id)) + ":" + strconv.FormatUint(id, 10)
}

// TokenShard is the shard of the token index that holds digest.
func TokenShard(digest []byte) string {
	h := fnv.New32a()
	h.Write(digest)
	return "tok:{s" + strconv.Itoa(int(h.Sum32()%TokenShards)) + "}"
}

// SubChunk is the subscription bitmap chunk k of feed.
func SubChunk(feed string, k int) string {
	return "sub:{" + feed + ":" + strconv.Itoa(k) + "}"
}

// AppSubChunk is the subscription bitmap chunk k of feed for the devices of
// app: SubChunk for the default app ("default", whose keys predate apps),
// "sub:{<app>/<feed>:<k>}" for any other (feed and app ids hold no '/').
func AppSubChunk(app, feed string, k int) string {
	if app == "" || app == "default" {
		return SubChunk(feed, k)
	}
	return "sub:{" + app + "/" + feed + ":" + strconv.Itoa(k) + "}"
}

// SubChunkOf returns the chunk index and the bit offset of a device id.
func SubChunkOf(deviceID uint64) (chunk int, bit int64) {
	return int(deviceID >> SubChunkBits), int64(deviceID & (1<<SubChunkBits - 1))
}

// Feeds is the feed catalogue.
func Feeds() string { return "feeds" }

// FeedItems is the capped item log of a feed.
func FeedItems(feed string) string { return "feed:{" + feed + "}:items" }

// FeedSeen maps an item identity to its content hash, for change detection.
func FeedSeen(feed string) string { return "feed:{" + feed + "}:seen" }

// FeedCursor is the monotonic cursor of a feed's item log.
func FeedCursor(feed string) string { return "feed:{" + feed + "}:cursor" }

// FeedHealth holds a feed's poll state: validators, last success and error.
func FeedHealth(feed string) string { return "feed:{" + feed + "}:health" }

// FeedLease is held by the dispatcher replica that polls the feed.
func FeedLease(feed string) string { return "feed:{" + feed + "}:lease" }

// Throttle is the throttle state of partition p.
func Throttle(p int) string { return "thr:" + Tag(p) }

// Due is the deferred-push set of partition p.
func Due(p int) string { return "due:" + Tag(p) }

// Queue names.
const (
	PushQueue  = "push"   // one job per silent push, Partitions partitions
	EventQueue = "events" // one job per fan-out event, one partition
)

// Stream is the job stream of partition p of a queue.
func Stream(queue string, p int) string { return "q:" + queue + ":" + Tag(p) }

// Retry is the retry set of partition p of a queue.
func Retry(queue string, p int) string { return Stream(queue, p) + ":retry" }

// DeadLetter is the dead-letter stream of partition p of a queue.
func DeadLetter(queue string, p int) string { return Stream(queue, p) + ":dlq" }

// Done records the jobs of partition p of a queue whose work succeeded, by
// job id, so a redelivered job is not done twice.
func Done(queue string, p int) string { return Stream(queue, p) + ":sent" }

// Unique is the idempotency marker of the job with unique id uid in
// partition p of a queue. It lives in the partition's slot so that the
// marker and the stream entry are written by one script.
func Unique(queue string, p int, uid string) string { return Stream(queue, p) + ":u:" + uid }

// Event is the hash of one fan-out event: definition, cursor and progress.
func Event(id string) string { return "ev:{" + id + "}" }

// EventSeq hands out event ids.
func EventSeq() string { return "seq:event" }

// Pace is the wake pacing state of a feed: the time of its next free push
// slot at NUDGE_WAKE_RATE, shared by every planner replica.
func Pace(feed string) string { return "pace:{" + feed + "}" }

// Audit is the stream of editor and admin actions.
func Audit() string { return "audit" }

// Stats is the hash of fleet-wide push and receipt counters for one minute
// (unix time / 60).
func Stats(minute int64) string { return "stats:" + strconv.FormatInt(minute, 10) }

// AppStats is the hash of one app's push and receipt counters for one
// minute; Stats holds the sum over all apps.
func AppStats(app string, minute int64) string {
	return "stats:" + app + ":" + strconv.FormatInt(minute, 10)
}

// ProviderPause is set while all sends to a pause scope are paused after a
// project-level error; it expires when the pause ends. A scope is what the
// provider's answer concerns (push.Sender.PauseScope): "fcm:<project>" or
// "apns:<environment>:<credential>".
func ProviderPause(scope string) string { return "pause:" + scope }

// ReceiptKey holds the HMAC key that signs push ids (internal/receipts).
// It is created once, by whichever process needs it first.
func ReceiptKey() string { return "receipt:key" }

// ReceiptSeen marks a push id whose receipt was counted, so a replay is
// refused; it expires when the receipt could no longer count anyway.
// It lives in the device's slot.
func ReceiptSeen(device uint64, pushID string) string {
	return "receipt:{" + strconv.FormatUint(device, 10) + "}:" + pushID
}

// Unresponsive counts, per platform, the devices of partition p that are
// unresponsive (devices/responsive.go): it shares the slot of the
// partition's device hashes, so the script that marks a device updates it.
func Unresponsive(p int) string { return "unr:" + Tag(p) }

// TokenRegistrations counts the registrations of one push token in the
// current window (httpapi's per-token limit); tokenHash is a hash of
// provider and token, never the token.
func TokenRegistrations(tokenHash string) string { return "regtok:{" + tokenHash + "}" }

// Heartbeat is set (with a short TTL) by the worker of a queue whose
// consumer name is consumer while it is alive; a consumer without one is
// dead, and its pending jobs are claimed at once.
func Heartbeat(queue, consumer string) string { return "q:" + queue + ":hb:" + consumer }

// ScheduleDue is the sorted set of scheduled syncs, by due time (unix ms):
// a sync's send_at, or the end of its claim's lease once a runner took it.
// The three schedule keys share the tag {sched}, so its scripts run in one slot.
func ScheduleDue() string { return "sched:{sched}:due" }

// ScheduleSyncs is the hash of scheduled syncs: sync id -> the request (JSON).
func ScheduleSyncs() string { return "sched:{sched}:syncs" }

// ScheduleClaims is the hash of scheduled syncs a runner has taken: sync
// id -> the claim's token.
func ScheduleClaims() string { return "sched:{sched}:claims" }

// Apps is the hash of the admin edits of the app catalogue: app id -> the
// app as an admin PUT it, or a tombstone that hides an app of the apps
// file. It holds file paths and public ids, never secrets.
func Apps() string { return "apps" }

// AppsChanged is the Pub/Sub channel on which an edit of Apps is
// announced, so every replica reloads at once. It names a channel, not a
// key.
func AppsChanged() string { return "apps:changed" }

// StaleSweep is the state of the stale-device sweep (internal/stale): the
// sweep's number, phase, cursor and counts, and the lease of the replica
// running it.
func StaleSweep() string { return "stale:{sweep}" }

// FreshItems is the ZSET of the new items of feed whose time-to-fresh is
// tracked (member and score: the item's cursor).
func FreshItems(feed string) string { return "fresh:{" + feed + "}:items" }

// FreshState is the HASH of the tracked items' time-to-fresh state, by
// cursor.
func FreshState(feed string) string { return "fresh:{" + feed + "}:state" }
