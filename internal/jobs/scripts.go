package jobs

import (
	_ "embed"

	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/keys"
)

// Every script lives in its own .lua file, which opens with its KEYS, ARGV
// and return contract. Every script below touches only the keys it declares in KEYS, and all
// KEYS of one call belong to one partition of one queue, so they share the
// partition's hash tag ({pN}) and the script runs unchanged on Redis Cluster.
//
// Every time a script decides on (retry due times, staleness, dead-letter
// times) is Redis's own clock (TIME), never a replica's: replicas whose
// clocks disagree still agree on when a retry is due.
//
// Stream entry fields: p = payload, n = deliveries before this entry (set
// when a job comes back from the retry set; absent means 0), f = unix ms of
// the job's first enqueue on Redis's clock (absent means the time part of
// the entry id, which Redis also set).
// Dead-letter entry fields: p = payload, o = original job id, r = reason,
// n = deliveries, t = unix ms when it died.
// Retry set member: "<n>|<f>|<uniq>|<payload>", scored by due unix ms; uniq
// keeps equal payloads apart (the original job id, or "d"+random for
// delayed jobs).

// Stream names the stream of partition p of queue: the key that a script
// adding jobs through LuaAdd takes in KEYS.
func Stream(queue string, p int) string { return keys.Stream(queue, p) }

// LuaAdd is the Lua fragment that defines jobs_add(stream, payload), which
// adds one job to a stream in the entry format this package reads. Another
// package's script prepends it rather than writing stream entries itself.
//
//go:embed add.lua
var LuaAdd string

// redisNowMs is the prelude of every script that needs the time.
//
//go:embed now.lua
var redisNowMs string

//go:embed enqueue_unique.lua
var enqueueUniqueLua string

//go:embed enqueue_delayed.lua
var enqueueDelayedLua string

//go:embed settle.lua
var settleLua string

//go:embed claim.lua
var claimLua string

//go:embed renew.lua
var renewLua string

//go:embed delconsumer.lua
var delConsumerLua string

//go:embed sweepdone.lua
var sweepDoneLua string

//go:embed movedue.lua
var moveDueLua string

//go:embed requeuedead.lua
var requeueDeadLua string

// enqueueUniqueScript adds a job unless its idempotency marker exists.
var enqueueUniqueScript = redis.NewScript(LuaAdd + enqueueUniqueLua)

// enqueueDelayedScript adds a job to the retry set, due after a delay.
var enqueueDelayedScript = redis.NewScript(redisNowMs + enqueueDelayedLua)

// settleScript acknowledges, retries or dead-letters the jobs of one call.
var settleScript = redis.NewScript(redisNowMs + settleLua)

// claimScript takes over a consumer's pending jobs and sorts them.
var claimScript = redis.NewScript(redisNowMs + claimLua)

// renewScript renews the lease of jobs this consumer still owns.
var renewScript = redis.NewScript(renewLua)

// delConsumerScript removes a consumer that has no pending jobs.
var delConsumerScript = redis.NewScript(delConsumerLua)

// sweepDoneScript removes done records of jobs no longer pending.
var sweepDoneScript = redis.NewScript(sweepDoneLua)

// moveDueScript moves due jobs from the retry set into the stream.
var moveDueScript = redis.NewScript(redisNowMs + moveDueLua)

// requeueDeadScript moves dead jobs back into the stream.
var requeueDeadScript = redis.NewScript(LuaAdd + requeueDeadLua)

// allScripts are loaded on every node when a worker starts.
var allScripts = []*redis.Script{enqueueUniqueScript, enqueueDelayedScript, settleScript, claimScript,
	renewScript, delConsumerScript, sweepDoneScript, moveDueScript, requeueDeadScript}
