package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestMetricsOnTheirOwnListener runs the api with NUDGE_METRICS_ADDR: the
// public port answers 404 on /metrics, the metrics port serves them.
func TestMetricsOnTheirOwnListener(t *testing.T) {
	t.Parallel()
	base, out, _ := start(t, map[string]string{"NUDGE_METRICS_ADDR": "127.0.0.1:0"})
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/metrics on the public port: %d, want 404", resp.StatusCode)
	}
	var addr string
	for _, line := range strings.Split(out.String(), "\n") {
		var l struct {
			Msg  string `json:"msg"`
			Addr string `json:"metrics_addr"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Addr != "" {
			addr = l.Addr
		}
	}
	if addr == "" {
		t.Fatalf("no metrics_addr in the log:\n%s", out.String())
	}
	resp, err = http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "nudge_http_requests_total") {
		t.Fatalf("/metrics on NUDGE_METRICS_ADDR: %d %.200s", resp.StatusCode, b)
	}
}
