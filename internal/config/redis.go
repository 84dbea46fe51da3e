package config

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/nudge-dev/nudge/internal/service"
)

// RedisSettings are the settings every binary that talks to Redis declares.
func RedisSettings() []Setting {
	return []Setting{
		{Flag: "redis-url", Env: "NUDGE_REDIS_URL", Default: "",
			Help: "Redis URL: redis://[user:pass@]host:port[/db], rediss:// for TLS, or a cluster seed list redis://h1:6379,h2:6379 (empty: embedded in-memory Redis, state is lost on exit)"},
		{Flag: "embedded-redis-addr", Env: "NUDGE_EMBEDDED_REDIS_ADDR", Default: "127.0.0.1:0",
			Help: "listen address of the embedded Redis used when NUDGE_REDIS_URL is empty (port 0 picks a free port)"},
		{Flag: "redis-dial-timeout", Env: "NUDGE_REDIS_DIAL_TIMEOUT", Default: "2s",
			Help: "deadline of one Redis connection attempt (a dial_timeout in NUDGE_REDIS_URL wins)"},
		{Flag: "redis-read-timeout", Env: "NUDGE_REDIS_READ_TIMEOUT", Default: "3s",
			Help: "deadline of one Redis reply, beyond a blocking command's own block time (a read_timeout in NUDGE_REDIS_URL wins)"},
		{Flag: "redis-write-timeout", Env: "NUDGE_REDIS_WRITE_TIMEOUT", Default: "3s",
			Help: "deadline of one Redis request write (a write_timeout in NUDGE_REDIS_URL wins)"},
	}
}

// RedisTimeouts bound every Redis network operation, so that a stalled or
// dead Redis turns into an error within a known time instead of a hang.
// A request's context deadline, when earlier, wins: clients are opened with
// go-redis's ContextTimeoutEnabled.
type RedisTimeouts struct {
	Dial, Read, Write time.Duration
}

// DefaultRedisTimeouts are the defaults of the NUDGE_REDIS_*_TIMEOUT settings.
var DefaultRedisTimeouts = RedisTimeouts{Dial: 2 * time.Second, Read: 3 * time.Second, Write: 3 * time.Second}

// RedisTimeouts parses the NUDGE_REDIS_*_TIMEOUT settings.
func (v *Values) RedisTimeouts() (RedisTimeouts, error) {
	var t RedisTimeouts
	var errs []error
	for _, f := range []struct {
		flag string
		dst  *time.Duration
	}{{"redis-dial-timeout", &t.Dial}, {"redis-read-timeout", &t.Read}, {"redis-write-timeout", &t.Write}} {
		d, err := v.Duration(f.flag)
		if err == nil && d <= 0 {
			err = v.Invalid(f.flag, "want a positive duration such as 2s")
		}
		*f.dst = d
		errs = append(errs, err)
	}
	return t, errors.Join(errs...)
}

// LogSettings are the logging settings every binary declares.
func LogSettings() []Setting {
	return []Setting{
		{Flag: "log-level", Env: "NUDGE_LOG_LEVEL", Default: "info", Help: "log level: debug, info, warn or error"},
	}
}

// LogLevel parses the log-level setting.
func (v *Values) LogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(v.String("log-level"))); err != nil {
		return 0, v.Invalid("log-level", "want debug, info, warn or error")
	}
	return l, nil
}

// Redis is an open Redis connection: a single server or a cluster behind the
// same go-redis UniversalClient interface.
type Redis struct {
	Client   redis.UniversalClient
	Embedded *miniredis.Miniredis // non-nil when running on the embedded server
	Cluster  bool
}

// Close closes the client and stops the embedded server, if any.
func (r *Redis) Close() error {
	err := r.Client.Close()
	if r.Embedded != nil {
		r.Embedded.Close()
	}
	return err
}

// ParseRedisURL turns a Redis URL into client options. A URL whose host part
// lists several comma-separated addresses is a Redis Cluster seed list:
//
//	redis://h1:6379                      single server, db 0
//	rediss://user:pass@h1:6380/2         single server over TLS, db 2
//	redis://h1:6379,h2:6379,h3:6379      cluster (seed list; any one reachable node suffices)
//	redis://h1:6379?cluster=true         cluster with a single seed
//
// go-redis query options such as pool_size=64 or dial_timeout=3s apply to both.
func ParseRedisURL(raw string) (single *redis.Options, cluster *redis.ClusterOptions, err error) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok || (scheme != "redis" && scheme != "rediss") {
		return nil, nil, errors.New("want a redis:// or rediss:// URL")
	}
	authority, tail, hadSlash := strings.Cut(rest, "/")
	query := ""
	if i := strings.IndexByte(authority, '?'); i >= 0 { // "h1:6379?x=y" without a path
		authority, query = authority[:i], authority[i:]
	}
	userinfo, hosts := "", authority
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		userinfo, hosts = authority[:i+1], authority[i+1:]
	}
	addrs := strings.Split(hosts, ",")
	for _, a := range addrs {
		if a == "" {
			return nil, nil, errors.New("empty address in the host list")
		}
	}
	path := ""
	if hadSlash {
		path = "/" + tail
	}
	u, perr := url.Parse(scheme + "://" + userinfo + addrs[0] + path + query)
	if perr != nil {
		return nil, nil, perr
	}
	q := u.Query()
	wantCluster := len(addrs) > 1 || q.Get("cluster") == "true"
	q.Del("cluster")
	if !wantCluster {
		u.RawQuery = q.Encode()
		o, err := redis.ParseURL(u.String())
		return o, nil, err
	}
	if u.Path != "" && u.Path != "/" && u.Path != "/0" {
		return nil, nil, errors.New("a cluster has only database 0: drop the /db path")
	}
	u.Path = ""
	for _, a := range addrs[1:] {
		q.Add("addr", a)
	}
	u.RawQuery = q.Encode()
	o, err := redis.ParseClusterURL(u.String())
	return nil, o, err
}

// OpenRedis opens the Redis that rawURL names and pings it. With an empty
// rawURL it starts an embedded, in-process Redis-protocol server
// (miniredis) on embeddedAddr and logs a warning that all state lives in
// memory only. Both binaries call it, so they agree on the URL forms. The
// warning goes to a's logger.
func OpenRedis(ctx context.Context, a service.Archetype, rawURL, embeddedAddr string) (*Redis, error) {
	return OpenRedisTimeouts(ctx, a, rawURL, embeddedAddr, DefaultRedisTimeouts)
}

// OpenRedisTimeouts is OpenRedis with the given network timeouts (zero
// fields take DefaultRedisTimeouts). Timeouts given in the URL's query
// (dial_timeout=, read_timeout=, write_timeout=) win over t.
func OpenRedisTimeouts(ctx context.Context, a service.Archetype, rawURL, embeddedAddr string, t RedisTimeouts) (*Redis, error) {
	log := a.WithDefaults().Logger
	t.Dial = cmp.Or(t.Dial, DefaultRedisTimeouts.Dial)
	t.Read = cmp.Or(t.Read, DefaultRedisTimeouts.Read)
	t.Write = cmp.Or(t.Write, DefaultRedisTimeouts.Write)
	if rawURL == "" {
		m, err := StartEmbedded(embeddedAddr)
		if err != nil {
			return nil, err
		}
		log.WarnContext(ctx, "NUDGE_REDIS_URL is empty: running on an embedded in-memory Redis; all state is lost when the process exits. Set NUDGE_REDIS_URL for anything but local development.",
			"embedded_redis_addr", m.Addr())
		o := &redis.Options{Addr: m.Addr()}
		t.apply(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.ContextTimeoutEnabled)
		r := &Redis{Client: redis.NewClient(o), Embedded: m}
		return r, nil
	}
	single, cluster, err := ParseRedisURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("NUDGE_REDIS_URL (-redis-url): %w", err)
	}
	r := &Redis{}
	if cluster != nil {
		t.apply(&cluster.DialTimeout, &cluster.ReadTimeout, &cluster.WriteTimeout, &cluster.ContextTimeoutEnabled)
		r.Client, r.Cluster = redis.NewClusterClient(cluster), true
	} else {
		t.apply(&single.DialTimeout, &single.ReadTimeout, &single.WriteTimeout, &single.ContextTimeoutEnabled)
		r.Client = redis.NewClient(single)
	}
	if err := r.Client.Ping(ctx).Err(); err != nil {
		_ = r.Client.Close()
		return nil, fmt.Errorf("ping redis %s: %w", redactURL(rawURL), err)
	}
	return r, nil
}

// StartEmbedded starts a miniredis server listening on addr ("127.0.0.1:0"
// for any free port). The caller closes it.
func StartEmbedded(addr string) (*miniredis.Miniredis, error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(addr); err != nil {
		return nil, fmt.Errorf("start embedded redis on %s (NUDGE_EMBEDDED_REDIS_ADDR): %w", addr, err)
	}
	return m, nil
}

// redactURL hides the password of a Redis URL.
func redactURL(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return "[unparsable url]"
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = "***@" + rest[i+1:]
	}
	return scheme + "://" + rest
}

// apply sets the timeouts that the URL left unset, and makes go-redis
// honour context deadlines on the network.
func (t RedisTimeouts) apply(dial, read, write *time.Duration, ctxTimeouts *bool) {
	*dial = cmp.Or(*dial, t.Dial)
	*read = cmp.Or(*read, t.Read)
	*write = cmp.Or(*write, t.Write)
	*ctxTimeouts = true
}
