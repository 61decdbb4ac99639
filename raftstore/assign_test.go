package raftstore

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
)

func asWriter(c *Config) { c.Writer = true }

// TestProposeForwards: a non-voter's Propose reaches the leader, and the
// leader's refusals come back as the same errors.
func TestProposeForwards(t *testing.T) {
	noLeak := checkGoroutines(t)
	n1 := startNode(t, "f1", t.TempDir(), "", true, "")
	waitLeader(t, n1)
	n2 := startNode(t, "f2", t.TempDir(), "", false, n1.srv.Listener.Addr().String(), asWriter)
	defer func() { n2.stop(t); n1.stop(t); noLeak() }()
	ctx := withTimeout(t, 20*time.Second)
	eventually(t, 5*time.Second, "f2 to see its registration", func() bool {
		n, ok := n2.State().Node("f2")
		return ok && n.Writer
	})

	tp := TopicPartition{"t", 3}
	res, err := n2.Propose(ctx, ClaimWriter{TopicPartition: tp, Node: "f2"})
	if err != nil || res.Epoch != 1 {
		t.Fatalf("forwarded claim: %+v %v", res, err)
	}
	seg := offsetsync.Segment{Virtual: 0, Source: 0, Target: 0, Length: 10}
	app := AppendSegments{Node: "f2", Partitions: []PartitionAppend{{TopicPartition: tp, Epoch: 1, Segments: []offsetsync.Segment{seg}}}}
	if res, err = n2.Propose(ctx, app); err != nil {
		t.Fatal(err)
	}
	if err := n2.WaitApplied(ctx, res.Index); err != nil {
		t.Fatal(err)
	}
	if got := n2.State().OffsetMap(tp); !slices.Equal(got, offsetsync.OffsetMap{seg}) {
		t.Fatalf("map on f2 = %v", got)
	}
	// Repeating the append is harmless (what a retried forward does).
	if _, err := n2.Propose(ctx, app); err != nil {
		t.Fatalf("repeated append: %v", err)
	}
	// The leader moves the partition: f2's next append is refused as stale.
	if _, err := AssignWriter(ctx, n1, tp, "f1"); err != nil {
		t.Fatal(err)
	}
	app.Partitions[0].Segments = []offsetsync.Segment{{Virtual: 10, Source: 10, Target: 10, Length: 1}}
	_, err = n2.Propose(ctx, app)
	if !errors.Is(err, ErrStaleWriter) || !IsRefusal(err) {
		t.Fatalf("stale forwarded append: %v", err)
	}
	_, err = n2.Forwarding().Apply(ctx, SetGroupPhase{Group: "g", Phase: GroupTarget})
	if !errors.Is(err, ErrInvalidTransition) {
		t.Fatalf("forwarded invalid transition: %v", err)
	}
}

// TestAssignerMovesWritersOfDeadNodes: the leader assigns every listed
// partition to the live writers, declares a silent node dead and moves its
// partitions to the others; a node that comes back is live again.
func TestAssignerMovesWritersOfDeadNodes(t *testing.T) {
	fastReports := func(c *Config) { c.ReportRefresh = 100 * time.Millisecond }
	n1 := startNode(t, "a1", t.TempDir(), "", true, "", asWriter, fastReports)
	waitLeader(t, n1)
	join := n1.srv.Listener.Addr().String()
	n2 := startNode(t, "a2", t.TempDir(), "", true, join, asWriter, fastReports)
	n3 := startNode(t, "a3", t.TempDir(), "", false, join, asWriter, fastReports)
	n4 := startNode(t, "a4", t.TempDir(), "", false, join, fastReports) // a sidecar: no mirror
	nodes := []*testNode{n1, n2, n3, n4}
	defer func() {
		for _, n := range nodes {
			n.stop(t)
		}
	}()
	var parts []TopicPartition
	for p := range int32(9) {
		parts = append(parts, TopicPartition{"orders", p})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, n := range nodes {
		go n.RunAssigner(ctx, AssignerConfig{
			Partitions: func(context.Context) ([]TopicPartition, error) { return parts, nil },
			Tick:       50 * time.Millisecond, DeadAfter: time.Second,
		})
	}
	owners := func() map[string]int {
		load := map[string]int{}
		for _, tp := range parts {
			w, _ := n1.State().Writer(tp)
			load[w.Node]++
		}
		return load
	}
	eventually(t, 10*time.Second, "every partition assigned", func() bool { return owners()[""] == 0 })
	// All three writers may have joined after the first assignments, which
	// are never moved off a live node; but no sidecar ever gets one.
	if load := owners(); load["a4"] != 0 {
		t.Fatalf("a sidecar got partitions: %v", load)
	}

	// Kill the non-voter writer a3 after giving it partitions.
	for _, tp := range parts[:3] {
		if w, _ := n1.State().Writer(tp); w.Node != "a3" {
			if _, err := n1.Apply(ctx, ClaimWriter{TopicPartition: tp, Node: "a3", IfEpoch: w.Epoch}); err != nil {
				t.Fatal(err)
			}
		}
	}
	killed := time.Now()
	n3.stop(t)
	nodes = []*testNode{n1, n2, n4}
	eventually(t, 10*time.Second, "a3's partitions to move", func() bool {
		load := owners()
		return load["a3"] == 0 && load[""] == 0
	})
	t.Logf("partitions of a stopped writer moved after %v", time.Since(killed).Round(time.Millisecond))
	if n, _ := n1.State().Node("a3"); !n.Dead {
		t.Fatalf("a3 not declared dead: %+v", n)
	}
	if n, _ := n1.State().Node("a4"); n.Dead {
		t.Fatalf("live sidecar a4 declared dead: %+v", n)
	}
	// A dead node may not be given partitions; it is live again when it
	// reports.
	if _, err := n1.Apply(ctx, ClaimWriter{TopicPartition: parts[0], Node: "a3", IfEpoch: 99}); !errors.Is(err, ErrNodeDead) {
		t.Fatalf("claim for a dead node: %v", err)
	}
	n3 = n3.restart(t)
	nodes = append(nodes, n3)
	eventually(t, 10*time.Second, "a3 live again", func() bool {
		n, _ := n1.State().Node("a3")
		return !n.Dead
	})

	// The admin API shows nodes and change progress.
	var nodesAns struct {
		Leader string       `json:"leader"`
		Nodes  []NodeStatus `json:"nodes"`
	}
	getJSON(t, "http://"+n2.srv.Listener.Addr().String()+"/v1/nodes", &nodesAns)
	if nodesAns.Leader != "a1" || len(nodesAns.Nodes) != 4 {
		t.Fatalf("/v1/nodes = %+v", nodesAns)
	}
	res, err := n1.Apply(ctx, SetGroupPhase{Group: "g", Phase: GroupDraining})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the change to complete", func() bool {
		var cs ChangeStatus
		getJSON(t, "http://"+n4.srv.Listener.Addr().String()+"/v1/changes/"+itoa(res.Index), &cs)
		return cs.Complete && len(cs.AppliedBy) == 4
	})
	var changes []RouteChange
	getJSON(t, "http://"+n1.srv.Listener.Addr().String()+"/v1/changes", &changes)
	if len(changes) != 1 || changes[0].Name != "g" || changes[0].Index != res.Index {
		t.Fatalf("/v1/changes = %+v", changes)
	}
}

func itoa(i uint64) string { b, _ := json.Marshal(i); return string(b) }

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}
