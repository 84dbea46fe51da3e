package metrictest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestSum reads counters, gauges and histograms back, by label and summed
// over series.
func TestSum(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "c"}, []string{"a", "b"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "g"})
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "h", Help: "h"}, []string{"a"})
	reg.MustRegister(c, g, h)
	c.WithLabelValues("x", "1").Add(2)
	c.WithLabelValues("x", "2").Add(3)
	c.WithLabelValues("y", "1").Add(5)
	g.Set(7)
	h.WithLabelValues("x").Observe(0.5)
	h.WithLabelValues("x").Observe(1.5)
	h.WithLabelValues("y").Observe(4)
	for _, tc := range []struct {
		name  string
		match map[string]string
		sum   float64
		count uint64
	}{
		{"c_total", nil, 10, 0},
		{"c_total", map[string]string{"a": "x"}, 5, 0},
		{"c_total", map[string]string{"a": "x", "b": "2"}, 3, 0},
		{"c_total", map[string]string{"a": "z"}, 0, 0},
		{"g", nil, 7, 0},
		{"h", map[string]string{"a": "x"}, 2, 2},
		{"never", nil, 0, 0},
	} {
		if sum, count := Sum(t, reg, tc.name, tc.match); sum != tc.sum || count != tc.count {
			t.Errorf("Sum(%s, %v) = %v, %d; want %v, %d", tc.name, tc.match, sum, count, tc.sum, tc.count)
		}
	}
}
