// Package metrictest reads Prometheus metrics back in tests and
// benchmarks.
package metrictest

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Sum adds up the series of the metric family name in g whose labels
// include every pair of match (nil: every series): a counter's or gauge's
// value, or a histogram's sum, with count the histograms' sample count.
// A family that was never counted sums to 0.
func Sum(tb testing.TB, g prometheus.Gatherer, name string, match map[string]string) (sum float64, count uint64) {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatalf("gather metrics: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for k, v := range match {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == k && l.GetValue() == v }) {
					continue next
				}
			}
			switch {
			case m.GetHistogram() != nil:
				sum += m.GetHistogram().GetSampleSum()
				count += m.GetHistogram().GetSampleCount()
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum, count
}
