// Package jobs is nudge's durable job queue on Redis Streams.
//
// A Queue has a name and a number of partitions. Partition p of queue q is
// the stream keys.Stream(q, p), read through the consumer group "workers";
// its retry set (keys.Retry), dead-letter stream (keys.DeadLetter), done
// records (keys.Done) and idempotency markers (keys.Unique) carry the same
// hash tag {pN}, so every Lua script stays in one slot and runs unchanged
// on Redis Cluster. A stream entry carries its payload in field "p" (other
// packages' scripts add push jobs with XADD key * p <payload>) and, when it
// came back from the retry set, its earlier deliveries in field "n".
//
// Producers call Enqueue (pipelined), EnqueueAt (delayed) or EnqueueUnique
// (once per unique id within a TTL). A Worker reads batches with
// XREADGROUP, calls a Handler with at most BatchSize jobs and at most
// Concurrency calls at once, and settles each job by its outcome in one
// script per partition: acknowledged (XACK + XDEL + HDEL of its done
// record), put in the retry set (honouring the handler's delay, e.g. a
// Retry-After), or moved to the dead-letter stream. A job is dead-lettered
// once it has used MaxDeliveries deliveries. The worker's reclaimer takes
// over jobs left unacknowledged longer than ReclaimMinIdle (XAUTOCLAIM),
// for instance by a killed process; its retry mover brings due retries and
// delayed jobs back into the streams.
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
// under its consumer name and are reclaimed after ReclaimMinIdle. Because
// the reclaimer also takes jobs from slow consumers, HandlerTimeout must be
// shorter than ReclaimMinIdle.
package jobs
