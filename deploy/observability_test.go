package deploy_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// ruleFile is the part of a Prometheus rule file the tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile("observability/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("observability/alerts.yml: %v", err)
	}
	return rf
}

// dashboardExprs returns every PromQL expression of the Grafana dashboard.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("observability/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if d.Title == "" || d.UID == "" {
		t.Fatalf("grafana-dashboard.json: title %q uid %q, want both set", d.Title, d.UID)
	}
	var exprs []string
	for _, p := range d.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("dashboard panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("dashboard panel %q has an empty query", p.Title)
			}
			exprs = append(exprs, tg.Expr)
		}
	}
	return exprs
}

// observabilityExprs is every PromQL expression of the kit, by where it is.
func observabilityExprs(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			out["alerts.yml "+r.Alert+r.Record] = r.Expr
		}
	}
	for i, e := range dashboardExprs(t) {
		out[fmt.Sprintf("dashboard query %d", i)] = e
	}
	return out
}

var (
	metricRefRE = regexp.MustCompile(`\b((?:nudge|go|process)_[a-z0-9_]+)\b(\{[^}]*\})?`)
	recordRE    = regexp.MustCompile(`\bnudge:[a-z0-9_:]+`)
	srcNameRE   = regexp.MustCompile(`Name:\s*"(nudge_[a-z0-9_]+)"`)
	srcNSRE     = regexp.MustCompile(`Namespace:\s*"([a-z_]+)",\s*Subsystem:\s*"([a-z_]+)",\s*Name:\s*"([a-z0-9_]+)"`)
	// The queue monitor declares its gauges in a table: {&m.depth, "depth", …}
	// under Namespace "nudge", Subsystem "queue".
	srcMonitorRE = regexp.MustCompile(`\{&m\.[a-z]+, "([a-z_]+)", "`)
	srcLabelsRE  = regexp.MustCompile(`(?s)Name:\s*"(nudge_[a-z0-9_]+)".{0,400}?\},\s*\[\]string\{([^}]*)\}`)
)

// metricRef is one metric used by a query, with the label names its
// selector matches on.
type metricRef struct {
	Name   string
	Labels []string
}

// metricRefs returns the metrics a PromQL expression reads. Histogram
// series (_bucket, _sum, _count) are returned as the family name when the
// family is known.
func metricRefs(expr string, known map[string]bool) []metricRef {
	var refs []metricRef
	for _, m := range metricRefRE.FindAllStringSubmatch(expr, -1) {
		name := m[1]
		if !known[name] {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(name, suf); ok && known[base] {
					name = base
				}
			}
		}
		var labels []string
		for _, l := range labelMatchRE.FindAllStringSubmatch(m[2], -1) {
			labels = append(labels, l[1])
		}
		refs = append(refs, metricRef{Name: name, Labels: labels})
	}
	return refs
}

var labelMatchRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)

// sourceMetrics returns the nudge_* metric names declared in the code
// (internal/ and cmd/, tests excluded) with their label names where the
// declaration shows them. It finds vectors that a fresh process does not
// export yet because no child was created.
func sourceMetrics(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, dir := range []string{"internal", "cmd"} {
		err := filepath.WalkDir(filepath.Join(repoRoot, dir), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			src := string(b)
			declare := func(name string) { // keep labels found elsewhere
				if _, ok := out[name]; !ok {
					out[name] = nil
				}
			}
			for _, m := range srcNameRE.FindAllStringSubmatch(src, -1) {
				declare(m[1])
			}
			for _, m := range srcNSRE.FindAllStringSubmatch(src, -1) {
				declare(m[1] + "_" + m[2] + "_" + m[3])
			}
			if strings.Contains(src, `Subsystem: "queue", Name: name`) {
				for _, m := range srcMonitorRE.FindAllStringSubmatch(src, -1) {
					out["nudge_queue_"+m[1]] = []string{"queue"}
				}
			}
			for _, m := range srcLabelsRE.FindAllStringSubmatch(src, -1) {
				for _, l := range strings.Split(m[2], ",") {
					if l = strings.Trim(strings.TrimSpace(l), `"`); l != "" {
						out[m[1]] = append(out[m[1]], l)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(out) < 20 {
		t.Fatalf("found only %d nudge_* metrics in the code: the source scan is broken", len(out))
	}
	return out
}

// checkMetricNames fails for every metric the alert rules or the dashboard
// read that is neither exported by a running binary (scraped) nor declared
// in the code, and for every label matcher on a scraped family that has no
// such label. It returns the names found only in the code.
func checkMetricNames(t *testing.T, scraped map[string]map[string]bool) []string {
	t.Helper()
	src := sourceMetrics(t)
	known := map[string]bool{}
	for n := range src {
		known[n] = true
	}
	for n := range scraped {
		known[n] = true
	}
	records := map[string]bool{}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				records[r.Record] = true
			}
		}
	}
	var onlySource []string
	for where, expr := range observabilityExprs(t) {
		for _, rec := range recordRE.FindAllString(expr, -1) {
			if !records[rec] {
				t.Errorf("%s: recording rule %s is not defined in alerts.yml", where, rec)
			}
		}
		for _, ref := range metricRefs(expr, known) {
			if scraped == nil && !strings.HasPrefix(ref.Name, "nudge_") {
				continue // go_* and process_*: checked against a live scrape only
			}
			if !known[ref.Name] {
				t.Errorf("%s: metric %s is not exported by the binaries nor declared in the code", where, ref.Name)
				continue
			}
			labels, wasScraped := scraped[ref.Name]
			if !wasScraped {
				if !strings.HasPrefix(ref.Name, "nudge_") && scraped != nil {
					t.Errorf("%s: metric %s was not in the scrape", where, ref.Name)
				}
				if !slices.Contains(onlySource, ref.Name) {
					onlySource = append(onlySource, ref.Name)
				}
				for _, l := range ref.Labels {
					if decl := src[ref.Name]; len(decl) > 0 && !slices.Contains(decl, l) && l != "job" && l != "instance" {
						t.Errorf("%s: %s has no label %q (declared: %v)", where, ref.Name, l, decl)
					}
				}
				continue
			}
			for _, l := range ref.Labels {
				if !labels[l] && l != "job" && l != "instance" {
					t.Errorf("%s: %s has no label %q (scraped: %v)", where, ref.Name, l, labels)
				}
			}
		}
	}
	slices.Sort(onlySource)
	return onlySource
}

// TestObservabilityKit checks the rule file's structure, that every alert
// has a runbook section in docs/operations.md, and the metric names against
// the code (the compose stack test checks them against a live scrape too).
func TestObservabilityKit(t *testing.T) {
	t.Parallel()
	rf := readRules(t)
	ops, err := os.ReadFile(filepath.Join(repoRoot, "docs/operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for line := range strings.Lines(string(ops)) {
		if h, ok := strings.CutPrefix(line, "### "); ok {
			anchors[strings.ToLower(strings.TrimSpace(h))] = true
		}
	}
	alerts := 0
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Expr == "" {
				t.Errorf("group %s: rule %s%s has no expr", g.Name, r.Alert, r.Record)
			}
			if r.Alert == "" {
				continue
			}
			alerts++
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("alert %s: want a severity label and a summary", r.Alert)
			}
			want := "docs/operations.md#" + strings.ToLower(r.Alert)
			if r.Annotations["runbook"] != want {
				t.Errorf("alert %s: runbook %q, want %q", r.Alert, r.Annotations["runbook"], want)
			}
			if !anchors[strings.ToLower(r.Alert)] {
				t.Errorf("alert %s: docs/operations.md has no runbook heading \"### %s\"", r.Alert, r.Alert)
			}
		}
	}
	if alerts < 6 {
		t.Fatalf("alerts.yml: %d alerts, want the queue, DLQ, provider, wake and feed alerts", alerts)
	}
	onlySource := checkMetricNames(t, nil)
	t.Logf("metrics checked against the code only here (the stack test scrapes them): %d", len(onlySource))
}
