package jobs

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nudge-dev/nudge/internal/keys"
	"github.com/redis/go-redis/v9"
)

// Group is the consumer group every queue partition is read through.
const Group = "workers"

// Payload and bookkeeping fields of a stream entry.
const (
	fieldPayload    = "p" // job payload bytes (other packages add entries through LuaAdd)
	fieldDeliveries = "n" // deliveries before this entry, when it came back from retry
	fieldFirst      = "f" // unix ms of the first enqueue (Redis's clock), when it came back from retry
	fieldOrigID     = "o" // dead-letter: the job id in the stream
	fieldReason     = "r" // dead-letter: why the job died
	fieldTime       = "t" // dead-letter: unix ms when the job died
)

// ErrPartition reports a partition number outside [0, partitions).
var ErrPartition = errors.New("partition out of range")

// ErrNotFound reports a dead-letter entry that does not exist.
var ErrNotFound = errors.New("not found")

// Config configures a Queue.
type Config struct {
	// Name is the queue name used in its keys (keys.PushQueue, keys.EventQueue).
	Name string
	// Partitions is the number of partitions (streams). Default 1.
	Partitions int
	// UniqueTTL is how long EnqueueUnique remembers a unique id. Default 24h.
	UniqueTTL time.Duration
	// DeadMaxLen caps the queue's dead-letter streams together
	// (approximately): each partition keeps about DeadMaxLen/Partitions
	// (at least 100); the oldest dead jobs are trimmed first. Default
	// 100,000.
	DeadMaxLen int64
}

func (c Config) withDefaults() Config {
	c.Partitions = cmp.Or(c.Partitions, 1)
	c.UniqueTTL = cmp.Or(c.UniqueTTL, 24*time.Hour)
	c.DeadMaxLen = cmp.Or(c.DeadMaxLen, 100_000)
	return c
}

func (c Config) validate() error {
	switch {
	case c.Name == "":
		return errors.New("jobs: queue Name is empty: set it to the queue name, e.g. keys.PushQueue")
	case strings.ContainsAny(c.Name, "{}: "):
		return fmt.Errorf("jobs: queue Name %q contains one of '{', '}', ':' or a space: use a plain name", c.Name)
	case c.Partitions < 1 || c.Partitions > 16384:
		return fmt.Errorf("jobs: queue %s: Partitions is %d: set it between 1 and 16384", c.Name, c.Partitions)
	case c.UniqueTTL < time.Millisecond:
		return fmt.Errorf("jobs: queue %s: UniqueTTL is %v: set it to at least 1ms", c.Name, c.UniqueTTL)
	case c.DeadMaxLen < 1:
		return fmt.Errorf("jobs: queue %s: DeadMaxLen is %d: set it to at least 1", c.Name, c.DeadMaxLen)
	}
	return nil
}

// Queue is a durable, partitioned job queue on Redis Streams. Partition p
// is the stream Stream(name, p) read through the consumer group Group;
// its retry set, dead-letter stream, done records and idempotency markers
// share the partition's hash tag. A Queue is safe for concurrent use.
type Queue struct {
	rdb     redis.UniversalClient
	cfg     Config
	cluster bool
	parts   []partKeys
	byKey   map[string]int // stream key -> partition
	deadCap int64          // MAXLEN ~ of each partition's dead-letter stream
}

type partKeys struct {
	stream, retry, dead, done string
}

// New returns the queue described by cfg on rdb (a *redis.Client or a
// *redis.ClusterClient).
func New(rdb redis.UniversalClient, cfg Config) (*Queue, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	_, cluster := rdb.(*redis.ClusterClient)
	q := &Queue{rdb: rdb, cfg: cfg, cluster: cluster, byKey: make(map[string]int, cfg.Partitions),
		deadCap: max(cfg.DeadMaxLen/int64(cfg.Partitions), min(cfg.DeadMaxLen, 100))}
	for p := range cfg.Partitions {
		pk := partKeys{
			stream: Stream(cfg.Name, p),
			retry:  keys.Retry(cfg.Name, p),
			dead:   keys.DeadLetter(cfg.Name, p),
			done:   keys.Done(cfg.Name, p),
		}
		q.parts = append(q.parts, pk)
		q.byKey[pk.stream] = p
	}
	return q, nil
}

// Name returns the queue name.
func (q *Queue) Name() string { return q.cfg.Name }

// Partitions returns the number of partitions.
func (q *Queue) Partitions() int { return q.cfg.Partitions }

func (q *Queue) checkPartition(p int) error {
	if p < 0 || p >= q.cfg.Partitions {
		return fmt.Errorf("queue %s: partition %d of %d: %w", q.cfg.Name, p, q.cfg.Partitions, ErrPartition)
	}
	return nil
}

// EnsureGroups creates the consumer group of every partition (and the
// stream, MKSTREAM) if it does not exist yet. The group starts at id 0, so
// jobs added before the group existed are delivered too.
func (q *Queue) EnsureGroups(ctx context.Context) error {
	pipe := q.rdb.Pipeline()
	cmds := make([]*redis.StatusCmd, len(q.parts))
	for p, pk := range q.parts {
		cmds[p] = pipe.XGroupCreateMkStream(ctx, pk.stream, Group, "0")
	}
	_, _ = pipe.Exec(ctx)
	for p, c := range cmds {
		if err := c.Err(); err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
			return fmt.Errorf("create group of %s partition %d: %w", q.cfg.Name, p, err)
		}
	}
	return nil
}

// loadScripts loads the queue's Lua scripts (on every master of a cluster).
func (q *Queue) loadScripts(ctx context.Context) error {
	for _, s := range allScripts {
		if err := s.Load(ctx, q.rdb).Err(); err != nil {
			return fmt.Errorf("load queue scripts: %w", err)
		}
	}
	return nil
}

// Message is one job to enqueue.
type Message struct {
	Partition int
	Payload   []byte
}

// Enqueue adds jobs in one pipeline: one round trip per node on a cluster.
// It returns the job ids in the order of msgs. On error some jobs may have
// been added.
func (q *Queue) Enqueue(ctx context.Context, msgs ...Message) ([]string, error) {
	for _, m := range msgs {
		if err := q.checkPartition(m.Partition); err != nil {
			return nil, fmt.Errorf("enqueue: %w", err)
		}
	}
	pipe := q.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(msgs))
	for i, m := range msgs {
		cmds[i] = pipe.XAdd(ctx, &redis.XAddArgs{
			Stream: q.parts[m.Partition].stream,
			Values: []any{fieldPayload, m.Payload},
		})
	}
	_, _ = pipe.Exec(ctx)
	ids := make([]string, len(msgs))
	for i, c := range cmds {
		id, err := c.Result()
		if err != nil {
			return nil, fmt.Errorf("enqueue to %s: %w", q.cfg.Name, err)
		}
		ids[i] = id
	}
	return ids, nil
}

// EnqueueAfter adds a job to partition that becomes visible to workers
// after d (or shortly after), measured on Redis's clock. It waits in the
// partition's retry set until a worker's retry mover moves it into the
// stream.
func (q *Queue) EnqueueAfter(ctx context.Context, partition int, d time.Duration, payload []byte) error {
	if err := q.checkPartition(partition); err != nil {
		return fmt.Errorf("enqueue delayed: %w", err)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	err := enqueueDelayedScript.Run(ctx, q.rdb, []string{q.parts[partition].retry},
		max(d, 0).Milliseconds(), "d"+hex.EncodeToString(b[:]), payload).Err()
	if err != nil {
		return fmt.Errorf("enqueue delayed to %s partition %d: %w", q.cfg.Name, partition, err)
	}
	return nil
}

// EnqueueUnique adds a job to partition unless a job with the same
// uniqueID was added there within the queue's UniqueTTL. It returns the id
// of the job (the first one, when it was a duplicate) and whether this call
// added it.
func (q *Queue) EnqueueUnique(ctx context.Context, partition int, uniqueID string, payload []byte) (id string, added bool, err error) {
	if err := q.checkPartition(partition); err != nil {
		return "", false, fmt.Errorf("enqueue unique: %w", err)
	}
	if uniqueID == "" {
		return "", false, errors.New("enqueue unique: empty unique id")
	}
	pk := q.parts[partition]
	res, err := enqueueUniqueScript.Run(ctx, q.rdb,
		[]string{keys.Unique(q.cfg.Name, partition, uniqueID), pk.stream},
		q.cfg.UniqueTTL.Milliseconds(), payload).Slice()
	if err != nil {
		return "", false, fmt.Errorf("enqueue unique %s to %s: %w", uniqueID, q.cfg.Name, err)
	}
	if len(res) != 2 {
		return "", false, fmt.Errorf("enqueue unique %s to %s: unexpected reply %v", uniqueID, q.cfg.Name, res)
	}
	n, _ := res[0].(int64)
	id, _ = res[1].(string)
	return id, n == 1, nil
}

// MoveDue moves up to limit due jobs per partition (due on Redis's clock)
// from the retry sets of partitions into their streams, one script call
// per partition in one pipeline. It returns the number moved per
// partition.
func (q *Queue) MoveDue(ctx context.Context, partitions []int, limit int) ([]int, error) {
	calls := make([]scriptCall, len(partitions))
	for i, p := range partitions {
		if err := q.checkPartition(p); err != nil {
			return nil, fmt.Errorf("move due jobs: %w", err)
		}
		calls[i] = scriptCall{
			keys: []string{q.parts[p].retry, q.parts[p].stream},
			args: []any{limit},
		}
	}
	cmds := runPipelined(ctx, q.rdb, moveDueScript, calls)
	moved := make([]int, len(partitions))
	for i, c := range cmds {
		n, err := c.Int()
		if err != nil {
			return moved, fmt.Errorf("move due jobs of %s partition %d: %w", q.cfg.Name, partitions[i], err)
		}
		moved[i] = n
	}
	return moved, nil
}

// DeadJob is one entry of a dead-letter stream.
type DeadJob struct {
	ID         string // id in the dead-letter stream, for RequeueDead (not set for OnDead)
	Partition  int
	OriginalID string // the job id it had in the stream
	Payload    []byte
	Reason     string
	Deliveries int
	DiedAt     time.Time // not set for OnDead
	// Cause says who dead-lettered the job (set for OnDead only):
	// CauseHandler, CauseMaxAge or CauseMaxDeliveries.
	Cause string
}

// Causes of a dead job, as passed to WorkerConfig.OnDead.
const (
	CauseHandler       = "handler"        // the handler reported Dead
	CauseMaxAge        = "max_age"        // a retry would have been due after MaxAge
	CauseMaxDeliveries = "max_deliveries" // the delivery budget was used up
)

// Dead lists dead jobs across all partitions, ordered by partition and
// then by age, skipping the first offset and returning at most count.
func (q *Queue) Dead(ctx context.Context, offset, count int) ([]DeadJob, error) {
	if offset < 0 || count < 0 {
		return nil, fmt.Errorf("list dead jobs of %s: offset %d and count %d must not be negative", q.cfg.Name, offset, count)
	}
	pipe := q.rdb.Pipeline()
	lens := make([]*redis.IntCmd, len(q.parts))
	for p, pk := range q.parts {
		lens[p] = pipe.XLen(ctx, pk.dead)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("list dead jobs of %s: %w", q.cfg.Name, err)
	}
	var out []DeadJob
	for p, l := range lens {
		if count <= 0 {
			break
		}
		n := int(l.Val())
		if offset >= n {
			offset -= n
			continue
		}
		msgs, err := q.rdb.XRangeN(ctx, q.parts[p].dead, "-", "+", int64(offset+count)).Result()
		if err != nil {
			return nil, fmt.Errorf("list dead jobs of %s partition %d: %w", q.cfg.Name, p, err)
		}
		msgs = msgs[min(offset, len(msgs)):]
		offset = 0
		for _, m := range msgs {
			if count <= 0 {
				break
			}
			out = append(out, deadJob(p, m))
			count--
		}
	}
	return out, nil
}

func deadJob(p int, m redis.XMessage) DeadJob {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	n, _ := strconv.Atoi(str(fieldDeliveries))
	ms, _ := strconv.ParseInt(str(fieldTime), 10, 64)
	return DeadJob{
		ID:         m.ID,
		Partition:  p,
		OriginalID: str(fieldOrigID),
		Payload:    []byte(str(fieldPayload)),
		Reason:     str(fieldReason),
		Deliveries: n,
		DiedAt:     time.UnixMilli(ms),
	}
}

// RequeueDead moves one dead job back into its partition's stream with a
// fresh delivery budget. It returns an error wrapping ErrNotFound if the
// dead-letter entry does not exist.
func (q *Queue) RequeueDead(ctx context.Context, partition int, id string) error {
	if err := q.checkPartition(partition); err != nil {
		return fmt.Errorf("requeue dead job: %w", err)
	}
	if id == "" {
		return fmt.Errorf("requeue dead job of %s partition %d: empty id: %w", q.cfg.Name, partition, ErrNotFound)
	}
	pk := q.parts[partition]
	n, err := requeueDeadScript.Run(ctx, q.rdb, []string{pk.dead, pk.stream}, id, 1).Int()
	if err != nil {
		return fmt.Errorf("requeue dead job %s of %s partition %d: %w", id, q.cfg.Name, partition, err)
	}
	if n == 0 {
		return fmt.Errorf("requeue dead job %s of %s partition %d: %w", id, q.cfg.Name, partition, ErrNotFound)
	}
	return nil
}

// RequeueAllDead moves every dead job of every partition back into its
// stream with a fresh delivery budget, and returns how many it moved.
func (q *Queue) RequeueAllDead(ctx context.Context) (int, error) {
	const batch = 500
	total := 0
	for p, pk := range q.parts {
		for {
			n, err := requeueDeadScript.Run(ctx, q.rdb, []string{pk.dead, pk.stream}, "", batch).Int()
			if err != nil {
				return total, fmt.Errorf("requeue dead jobs of %s partition %d: %w", q.cfg.Name, p, err)
			}
			total += n
			if n < batch {
				break
			}
		}
	}
	return total, nil
}

// Stats is a snapshot of a queue, summed over its partitions.
type Stats struct {
	Depth   int64 // entries in the streams: waiting plus being worked on
	Pending int64 // delivered to a consumer, not yet acknowledged
	Lag     int64 // waiting, not yet delivered (Depth - Pending)
	Retry   int64 // jobs in the retry sets (retries and delayed jobs)
	Dead    int64 // entries in the dead-letter streams
	// Oldest is the enqueue time of the oldest entry still in a stream,
	// zero when the streams are empty.
	Oldest time.Time
}

// Stats reads the queue's sizes in one pipeline.
func (q *Queue) Stats(ctx context.Context) (Stats, error) {
	pipe := q.rdb.Pipeline()
	type partCmds struct {
		xlen, zcard, dead *redis.IntCmd
		pending           *redis.XPendingCmd
		first             *redis.XMessageSliceCmd
	}
	cmds := make([]partCmds, len(q.parts))
	for p, pk := range q.parts {
		cmds[p] = partCmds{
			xlen:    pipe.XLen(ctx, pk.stream),
			pending: pipe.XPending(ctx, pk.stream, Group),
			first:   pipe.XRangeN(ctx, pk.stream, "-", "+", 1),
			zcard:   pipe.ZCard(ctx, pk.retry),
			dead:    pipe.XLen(ctx, pk.dead),
		}
	}
	_, _ = pipe.Exec(ctx)
	var s Stats
	for p, c := range cmds {
		for _, e := range []error{c.xlen.Err(), c.zcard.Err(), c.dead.Err(), c.first.Err()} {
			if e != nil {
				return Stats{}, fmt.Errorf("stats of %s partition %d: %w", q.cfg.Name, p, e)
			}
		}
		var pending int64
		if pe, err := c.pending.Result(); err == nil {
			pending = pe.Count
		} else if !isNoGroup(err) {
			return Stats{}, fmt.Errorf("stats of %s partition %d: %w", q.cfg.Name, p, err)
		}
		s.Depth += c.xlen.Val()
		s.Pending += pending
		s.Retry += c.zcard.Val()
		s.Dead += c.dead.Val()
		if f := c.first.Val(); len(f) > 0 {
			if t, ok := idTime(f[0].ID); ok && (s.Oldest.IsZero() || t.Before(s.Oldest)) {
				s.Oldest = t
			}
		}
	}
	s.Lag = max(s.Depth-s.Pending, 0)
	return s, nil
}

// idTime returns the time part of a stream entry id.
func idTime(id string) (time.Time, bool) {
	ms, _, ok := strings.Cut(id, "-")
	if !ok {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.UnixMilli(n), true
}

func isNoGroup(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOGROUP")
}

// scriptCall is one invocation of a script in a pipeline.
type scriptCall struct {
	keys []string
	args []any
}

// runPipelined runs one script many times in one pipeline (EVALSHA), and
// repeats any call that failed with NOSCRIPT (a restarted or new node)
// with EVAL. The returned commands carry each call's result or error.
func runPipelined(ctx context.Context, rdb redis.UniversalClient, s *redis.Script, calls []scriptCall) []*redis.Cmd {
	pipe := rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(calls))
	for i, c := range calls {
		cmds[i] = s.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	if len(calls) > 0 {
		_, _ = pipe.Exec(ctx)
	}
	for i, c := range cmds {
		if err := c.Err(); err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
			cmds[i] = s.Run(ctx, rdb, calls[i].keys, calls[i].args...)
		}
	}
	return cmds
}
