// Package jobs is nudge's durable job queue on Redis Streams.
//
// A Queue has a name and a number of partitions. Partition p of queue q is
// the stream Stream(q, p), read through the consumer group "workers";
// its retry set (keys.Retry), dead-letter stream (keys.DeadLetter), done
// records (keys.Done) and idempotency markers (keys.Unique) carry the same
// hash tag {pN}, so every Lua script stays in one slot and runs unchanged
// on Redis Cluster. A stream entry carries its payload in field "p" (other
// packages' scripts add push jobs through the Lua fragment LuaAdd, never
// writing an entry themselves) and, when it
// came back from the retry set, its earlier deliveries in field "n".
//
// Producers call Enqueue (pipelined), EnqueueAfter (delayed) or
// EnqueueUnique (once per unique id within a TTL). A Worker reads batches
// with XREADGROUP, calls a Handler with at most BatchSize jobs and at most
// Concurrency calls at once, and settles each job by its outcome in one
// script per partition: acknowledged (XACK + XDEL + HDEL of its done
// record), put in the retry set (honouring the handler's delay, e.g. a
// Retry-After; Release does so without using a delivery), or moved to the
// dead-letter stream. Without a MaxAge a job is dead-lettered once it has
// used MaxDeliveries deliveries; with one, retries go on until a retry
// would be due more than MaxAge after the job's first enqueue (field "f"),
// and MaxDeliveries counts only redeliveries after crashes. OnDead
// receives every job a worker dead-letters.
//
// # Clock
//
// Every time the queue decides on is Redis's: the scripts call TIME for
// retry due times, delayed jobs, the moves of due jobs, staleness and
// dead-letter times, and idle times are measured by Redis. The injected
// clock of a Worker plays no part in them, so replicas whose clocks are
// off still agree.
//
// # Liveness and reclaim
//
// Each worker keeps a heartbeat key (keys.Heartbeat) with a TTL of
// HeartbeatTTL, renewed every HeartbeatTTL/4 by its own goroutine, which
// outlives the handlers and deletes the key after the drain. The reclaimer
// lists the consumers of each partition's group every ReclaimInterval; a
// consumer whose heartbeat is gone at two scans at least 3/4 of HeartbeatTTL
// apart is dead: its pending jobs are claimed at once (a script takes a
// job only while it is still pending with that consumer, so two
// reclaimers never both take it) and, once it has none, it is removed from
// the group. A live worker's jobs are never taken, however long they wait
// for a handler slot. A reclaim scan takes only what the free handler
// slots can run. The worker's own pending jobs that no handler holds (a
// settle that failed) are run again once idle for ReclaimMinIdle; the
// lease renewer keeps held jobs' idle time low on its own ticker.
//
// # Delivery guarantee and the duplicate window
//
// Delivery is at least once. To keep duplicates of side effects (pushes) to
// a minimum, a handler calls Outcomes.MarkDone right after a job's side
// effect happened: that writes the job's done record (HSET on keys.Done)
// before the handler goes on. A job redelivered by the reclaimer whose done
// record exists is acknowledged inside the reclaim script and never reaches
// a handler again. The only window in which a side effect can happen twice
// is therefore between the side effect and the return of MarkDone: a
// process that dies there leaves no record, and the job runs again. The
// number of duplicates per crash is at most the number of side effects
// that were in that window at the moment of the crash (for a handler that
// marks each batch of g side effects, Concurrency × g). Jobs finished
// without MarkDone (Drop, or no outcome and a nil error) have a wider
// window: from their side effect to the acknowledgement.
//
// Jobs that are read but not yet handled when a process dies stay pending
// under its consumer name and are claimed by another worker once its
// heartbeat has expired. HandlerTimeout must be shorter than
// ReclaimMinIdle, so a worker does not run its own running jobs again.
package jobs
