package config_test

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/nudge-dev/nudge/internal/config"
	"github.com/nudge-dev/nudge/internal/redistest"
	"github.com/nudge-dev/nudge/internal/service"
)

var settings = []config.Setting{
	{Flag: "http-addr", Env: "NUDGE_HTTP_ADDR", Default: ":8080", Help: "listen"},
	{Flag: "timeout", Env: "NUDGE_TIMEOUT", Default: "15s", Help: "timeout"},
	{Flag: "limit", Env: "NUDGE_LIMIT", Default: "600", Help: "limit"},
}

func TestParsePrecedence(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"default", nil, nil, ":8080"},
		{"env", nil, map[string]string{"NUDGE_HTTP_ADDR": ":9000"}, ":9000"},
		{"flag beats env", []string{"-http-addr", ":7000"}, map[string]string{"NUDGE_HTTP_ADDR": ":9000"}, ":7000"},
		{"explicit empty flag beats env", []string{"-http-addr="}, map[string]string{"NUDGE_HTTP_ADDR": ":9000"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := config.Parse("api", settings, tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if got := v.String("http-addr"); got != tt.want {
				t.Fatalf("http-addr: got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestBadValuesNameTheSetting(t *testing.T) {
	t.Parallel()
	env := map[string]string{"NUDGE_TIMEOUT": "soon", "NUDGE_LIMIT": "many"}
	v, err := config.Parse("api", settings, nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if _, err := v.Duration("timeout"); err == nil || !strings.Contains(err.Error(), "NUDGE_TIMEOUT (-timeout)") {
		t.Fatalf("duration error: got %v, want it to name NUDGE_TIMEOUT (-timeout)", err)
	}
	if _, err := v.Int("limit"); err == nil || !strings.Contains(err.Error(), "NUDGE_LIMIT") {
		t.Fatalf("int error: got %v, want it to name NUDGE_LIMIT", err)
	}
	if _, err := config.Parse("api", settings, []string{"-nope"}, func(string) string { return "" }, io.Discard); err == nil {
		t.Fatalf("unknown flag: got nil error")
	}
}

func TestParseRedisURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url       string
		cluster   bool
		wantAddrs string
		wantDB    int
		wantTLS   bool
		wantPool  int
		wantErr   bool
	}{
		{url: "redis://h1:6379", wantAddrs: "h1:6379"},
		{url: "redis://h1:6379/3", wantAddrs: "h1:6379", wantDB: 3},
		{url: "rediss://user:pw@h1:6380/2?pool_size=64", wantAddrs: "h1:6380", wantDB: 2, wantTLS: true, wantPool: 64},
		{url: "redis://h1:6379,h2:6379,h3:6379", cluster: true, wantAddrs: "h1:6379,h2:6379,h3:6379"},
		{url: "redis://:pw@h1:6379,h2:6379/?pool_size=8", cluster: true, wantAddrs: "h1:6379,h2:6379", wantPool: 8},
		{url: "redis://h1:6379?cluster=true", cluster: true, wantAddrs: "h1:6379"},
		{url: "rediss://h1:6379,h2:6379", cluster: true, wantAddrs: "h1:6379,h2:6379", wantTLS: true},
		{url: "redis://h1:6379,h2:6379/4", wantErr: true},
		{url: "http://h1:6379", wantErr: true},
		{url: "h1:6379", wantErr: true},
		{url: "redis://h1:6379,,h2:6379", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			t.Parallel()
			single, cluster, err := config.ParseRedisURL(tt.url)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got nil error, want one")
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if (cluster != nil) != tt.cluster {
				t.Fatalf("cluster: got %v, want %v", cluster != nil, tt.cluster)
			}
			var addrs string
			var tls bool
			var pool int
			if cluster != nil {
				addrs, tls, pool = strings.Join(cluster.Addrs, ","), cluster.TLSConfig != nil, cluster.PoolSize
			} else {
				addrs, tls, pool = single.Addr, single.TLSConfig != nil, single.PoolSize
				if single.DB != tt.wantDB {
					t.Fatalf("db: got %d, want %d", single.DB, tt.wantDB)
				}
			}
			if addrs != tt.wantAddrs || tls != tt.wantTLS || pool != tt.wantPool {
				t.Fatalf("got addrs %s tls %v pool %d, want %s %v %d", addrs, tls, pool, tt.wantAddrs, tt.wantTLS, tt.wantPool)
			}
		})
	}
}

func TestOpenRedis(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		var logs strings.Builder
		r, err := config.OpenRedis(t.Context(), service.Archetype{Logger: slog.New(slog.NewJSONHandler(&logs, nil))}, "", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer r.Close()
		if r.Embedded == nil {
			t.Fatalf("embedded: got nil server")
		}
		if err := r.Client.Set(t.Context(), "k", "v", 0).Err(); err != nil {
			t.Fatalf("set: %v", err)
		}
		if !strings.Contains(logs.String(), `"level":"WARN"`) || !strings.Contains(logs.String(), "in-memory") {
			t.Fatalf("embedded mode must warn loudly, logs: %s", logs.String())
		}
	})
	t.Run("single", func(t *testing.T) {
		t.Parallel()
		srv := redistest.StartServer(t)
		r, err := config.OpenRedis(t.Context(), service.Archetype{Logger: log}, srv.URL(), "")
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer r.Close()
		if r.Cluster || r.Embedded != nil {
			t.Fatalf("got cluster %v embedded %v, want a plain client", r.Cluster, r.Embedded != nil)
		}
	})
	t.Run("cluster seed list", func(t *testing.T) {
		t.Parallel()
		c := redistest.StartCluster(t)
		r, err := config.OpenRedis(t.Context(), service.Archetype{Logger: log}, "redis://"+c.Seeds(), "")
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer r.Close()
		if !r.Cluster {
			t.Fatalf("got a plain client, want a cluster client")
		}
		for _, k := range []string{"a", "b", "c", "d"} { // keys on different slots
			if err := r.Client.Set(t.Context(), k, "v", 0).Err(); err != nil {
				t.Fatalf("set %s: %v", k, err)
			}
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		_, err := config.OpenRedis(t.Context(), service.Archetype{Logger: log}, "redis://:secretpw@127.0.0.1:1", "")
		if err == nil {
			t.Fatalf("got nil error for an unreachable redis")
		}
		if strings.Contains(err.Error(), "secretpw") {
			t.Fatalf("error shows the password: %v", err)
		}
	})
}
