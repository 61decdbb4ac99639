package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/proxy"
	"github.com/kmigrate/kmigrate/replicate"
	"github.com/prometheus/client_golang/prometheus"
)

// metricRecorder is a prometheus.Registerer that notes the series names
// of what registers with it, the way serveProxy's registry would hold them.
type metricRecorder struct{ names map[string]bool }

func (r metricRecorder) Register(c prometheus.Collector) error {
	_, histogramVec := c.(*prometheus.HistogramVec)
	_, single := c.(prometheus.Histogram)
	histogram := histogramVec || single
	ch := make(chan *prometheus.Desc, 16)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		name := regexp.MustCompile(`fqName: "([^"]+)"`).FindStringSubmatch(d.String())[1]
		r.names[name] = true
		if histogram {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				r.names[name+suffix] = true
			}
		}
	}
	return nil
}

func (r metricRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r metricRecorder) Unregister(prometheus.Collector) bool { return true }

// kmigrateMetricNames are the series a node exports: the proxy's, the
// mirror's and the control plane's (Describe needs no running instance).
func kmigrateMetricNames() map[string]bool {
	r := metricRecorder{names: map[string]bool{}}
	proxy.NewMetrics(r)
	r.MustRegister(&replicate.Mirror{}, controlPlaneMetrics{})
	return r.names
}

// TestDashboardMetrics: every kmigrate_ series the Grafana dashboard
// queries exists in the code, and the dashboard covers every series.
func TestDashboardMetrics(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dashboard struct {
		Title  string `json:"title"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dashboard); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	known := kmigrateMetricNames()
	used := map[string]bool{}
	for _, p := range dashboard.Panels {
		for _, target := range p.Targets {
			for _, name := range regexp.MustCompile(`kmigrate_[a-z_]+`).FindAllString(target.Expr, -1) {
				used[name] = true
				if !known[name] {
					t.Errorf("panel %q queries %s, which no kmigrate code registers", p.Title, name)
				}
			}
		}
	}
	// Anything named kmigrate_ outside the queries (legends, links) is checked too.
	for _, name := range regexp.MustCompile(`kmigrate_[a-z_]+`).FindAllString(string(data), -1) {
		if !known[name] {
			t.Errorf("the dashboard names %s, which no kmigrate code registers", name)
		}
	}
	var missing []string
	for name := range known {
		base := regexp.MustCompile(`_(bucket|sum|count)$`).ReplaceAllString(name, "")
		if !used[name] && !used[base] && !used[base+"_bucket"] {
			missing = append(missing, name)
		}
	}
	sort.Strings(missing)
	missing = slices.Compact(missing)
	if len(missing) > 0 {
		t.Errorf("series no panel shows: %v", missing)
	}
}

// TestControlPlaneMetrics scrapes the control plane's series from a
// single-node cluster.
func TestControlPlaneMetrics(t *testing.T) {
	cp, err := openControlPlane(controlPlaneFlags{raftAddr: "127.0.0.1:0"}, t.TempDir(), "", false,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer cp.store.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(controlPlaneMetrics{cp.store})
	value := func(name string, labels map[string]string) (float64, bool) {
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() != name {
				continue
			}
		metrics:
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
						continue metrics
					}
				}
				return m.GetGauge().GetValue(), true
			}
		}
		return 0, false
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		// A new leader applies its first entry a moment after it wins.
		leader, _ := value("kmigrate_raft_role", map[string]string{"role": "leader"})
		applied, _ := value("kmigrate_raft_applied_index", nil)
		if leader == 1 && applied >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s on a single-node cluster: kmigrate_raft_role{role=leader} = %v, kmigrate_raft_applied_index = %v", leader, applied)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v, ok := value("kmigrate_raft_applied_index", nil); !ok || v < 1 {
		t.Errorf("kmigrate_raft_applied_index = %v (present %v), want ≥ 1 after the bootstrap", v, ok)
	}
	if v, ok := value("kmigrate_raft_role", map[string]string{"role": "nonvoter"}); !ok || v != 0 {
		t.Errorf("kmigrate_raft_role{role=nonvoter} = %v (present %v), want 0", v, ok)
	}
}
