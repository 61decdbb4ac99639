package raftstore

import (
	"context"
	"errors"
	"fmt"
	"github.com/kmigrate/kmigrate/offsetsync"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// fastRaft halves raft's timeouts so that elections take about a second on
// loopback. Shorter ones make leadership flap on a loaded 2-core machine
// (the race detector, Kafka tests running alongside).
func fastRaft(c *raft.Config) {
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 500 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
}

func testLogger() *slog.Logger {
	if os.Getenv("RAFTSTORE_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testNode is a Store with its admin HTTP server, as the kmigrate binary
// would run it.
type testNode struct {
	*Store
	id, dir, raftAddr string
	voter             bool
	srv               *httptest.Server
	handler           atomic.Pointer[http.Handler]
}

// startNode opens a node; raftAddr "" picks a port, join "" bootstraps (on
// an empty dir).
func startNode(t testing.TB, id, dir, raftAddr string, voter bool, join string, opts ...func(*Config)) *testNode {
	t.Helper()
	n := &testNode{id: id, dir: dir, voter: voter}
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := n.handler.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "starting", http.StatusServiceUnavailable)
	}))
	if raftAddr == "" {
		raftAddr = "127.0.0.1:0"
	}
	cfg := Config{
		NodeID: id, DataDir: dir, RaftAddr: raftAddr, AdminAddr: n.srv.Listener.Addr().String(),
		Voter: voter, Join: join, Logger: testLogger(), Tune: fastRaft,
		ReportInterval: 20 * time.Millisecond, JoinTimeout: 10 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		n.srv.Close()
		t.Fatalf("open %s: %v", id, err)
	}
	n.Store, n.raftAddr = s, s.RaftAddr()
	h := s.Handler()
	n.handler.Store(&h)
	return n
}

func (n *testNode) stop(t *testing.T) {
	t.Helper()
	if err := n.Close(); err != nil {
		t.Errorf("close %s: %v", n.id, err)
	}
	n.srv.Close()
}

func (n *testNode) restart(t *testing.T) *testNode {
	t.Helper()
	return startNode(t, n.id, n.dir, n.raftAddr, n.voter, "")
}

func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func waitLeader(t testing.TB, nodes ...*testNode) *testNode {
	t.Helper()
	var leader *testNode
	eventually(t, 10*time.Second, "a leader", func() bool {
		for _, n := range nodes {
			if n.IsLeader() {
				leader = n
				return true
			}
		}
		return false
	})
	// Wait for its post-election barrier, so that it is fully usable.
	eventually(t, 5*time.Second, "the leader's barrier", func() bool { return leader.ready.Load() })
	return leader
}

func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// checkGoroutines fails the test if goroutines it started (directly or
// through goroutines it started) are still running a while after everything
// was closed. Goroutines descending from ones that existed before the test
// are not its own: another test's raft still winding down starts and stops
// replication goroutines, which a plain count would blame on this test.
func checkGoroutines(t *testing.T) func() {
	before := goroutineIDs()
	return func() {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			leaked := leakedSince(before)
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d goroutines started by the test still run after close:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

var (
	goroutineHeader = regexp.MustCompile(`^goroutine (\d+) \[`)
	createdBy       = regexp.MustCompile(`created by .* in goroutine (\d+)`)
)

// goroutineStacks returns every goroutine's stack by id, and its creator.
func goroutineStacks() (stacks map[string]string, creator map[string]string) {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	stacks, creator = map[string]string{}, map[string]string{}
	for _, block := range strings.Split(string(buf), "\n\n") {
		m := goroutineHeader.FindStringSubmatch(block)
		if m == nil {
			continue
		}
		stacks[m[1]] = block
		if c := createdBy.FindStringSubmatch(block); c != nil {
			creator[m[1]] = c[1]
		}
	}
	return stacks, creator
}

func goroutineIDs() map[string]bool {
	stacks, _ := goroutineStacks()
	ids := make(map[string]bool, len(stacks))
	for id := range stacks {
		ids[id] = true
	}
	return ids
}

// leakedSince lists goroutines that did not exist in before and do not
// descend from one that did.
func leakedSince(before map[string]bool) []string {
	stacks, creator := goroutineStacks()
	var out []string
	for id, stack := range stacks {
		if before[id] || strings.Contains(stack, "checkGoroutines") {
			continue
		}
		ancestor, inherited := id, false
		for depth := 0; depth < 64; depth++ {
			parent, ok := creator[ancestor]
			if !ok {
				break
			}
			if before[parent] {
				// The test's own goroutine existed before too; only
				// goroutines it created directly are its own.
				inherited = !strings.Contains(stacks[parent], "testing.tRunner") && !strings.Contains(stacks[parent], "Test")
				break
			}
			ancestor = parent
		}
		if !inherited {
			out = append(out, stack)
		}
	}
	return out
}

func TestSingleNodeBootstrapAndRestart(t *testing.T) {
	noLeak := checkGoroutines(t)
	dir := t.TempDir()
	n := startNode(t, "solo", dir, "", false, "")
	waitLeader(t, n)
	ctx := withTimeout(t, 10*time.Second)

	// The bootstrap node registers itself, as a voter (whatever Voter says).
	eventually(t, 5*time.Second, "self registration", func() bool {
		m, ok := n.State().Node("solo")
		return ok && m.Voter && m.AdminAddr != ""
	})
	for _, p := range []GroupPhase{GroupDraining, GroupFenced} {
		if _, err := n.Apply(ctx, SetGroupPhase{Group: "g", Phase: p}); err != nil {
			t.Fatal(err)
		}
	}
	// Snapshot, then more entries after it: a restart needs both.
	if err := n.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Command{SetGroupPhase{Group: "g", Phase: GroupTarget}, ClaimWriter{TopicPartition: TopicPartition{"t", 0}, Node: "solo"}} {
		if _, err := n.Apply(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	checkHandler(t, n)
	want := n.Dump()
	n.stop(t)
	if _, err := n.Apply(ctx, SetGroupPhase{Group: "g", Phase: GroupRollbackDraining}); !errors.Is(err, ErrClosed) {
		t.Fatalf("apply after close: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}

	n = n.restart(t)
	waitLeader(t, n)
	if err := n.WaitApplied(ctx, want.Applied); err != nil {
		t.Fatal(err)
	}
	got := n.Dump()
	if len(got.Groups) != 1 || got.Groups[0] != want.Groups[0] {
		t.Fatalf("group after restart = %+v, want %+v", got.Groups, want.Groups)
	}
	if len(got.Writers) != 1 || got.Writers[0] != want.Writers[0] {
		t.Fatalf("writers after restart = %+v, want %+v", got.Writers, want.Writers)
	}
	n.stop(t)
	noLeak()
}

// checkHandler exercises the admin endpoints' refusals on a leader.
func checkHandler(t *testing.T, n *testNode) {
	t.Helper()
	url := "http://" + n.srv.Listener.Addr().String()
	for _, c := range []struct {
		path, body string
		code       int
	}{
		{pathJoin, `{"id":"x"}`, http.StatusBadRequest}, // no raft address
		{pathJoin, `{"id":"x","raft_addr":"127.0.0.1:1","bogus":1}`, http.StatusBadRequest},
		{pathReport, `not json`, http.StatusBadRequest},
		{pathReport, `{"id":"nobody","applied":3}`, http.StatusBadRequest},
		{pathReport, `{"id":"solo","applied":3}`, http.StatusOK},
	} {
		resp, err := http.Post(url+c.path, "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("POST %s %s: %s, want %d", c.path, c.body, resp.Status, c.code)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestClusterJoinReplicateReport(t *testing.T) {
	noLeak := checkGoroutines(t)
	n1 := startNode(t, "n1", t.TempDir(), "", true, "")
	waitLeader(t, n1)
	n2 := startNode(t, "n2", t.TempDir(), "", true, n1.srv.Listener.Addr().String())
	// n3 joins through a follower, which sends it on to the leader.
	n3 := startNode(t, "n3", t.TempDir(), "", false, n2.srv.Listener.Addr().String())
	nodes := []*testNode{n1, n2, n3}
	defer func() {
		for _, n := range nodes {
			n.stop(t)
		}
		noLeak()
	}()
	ctx := withTimeout(t, 20*time.Second)

	cf := n1.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		t.Fatal(err)
	}
	suffrage := map[string]raft.ServerSuffrage{}
	for _, s := range cf.Configuration().Servers {
		suffrage[string(s.ID)] = s.Suffrage
	}
	if suffrage["n1"] != raft.Voter || suffrage["n2"] != raft.Voter || suffrage["n3"] != raft.Nonvoter || len(suffrage) != 3 {
		t.Fatalf("raft configuration = %+v", cf.Configuration().Servers)
	}

	res, err := n1.Apply(ctx, SetGroupPhase{Group: "orders", Phase: GroupDraining})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := n.WaitApplied(ctx, res.Index); err != nil {
			t.Fatalf("%s: %v", n.id, err)
		}
		if g, _ := n.State().Group("orders"); g.Phase != GroupDraining || g.Epoch != 1 || g.ChangedIndex != res.Index {
			t.Fatalf("%s sees %+v", n.id, g)
		}
		if m, ok := n.State().Node(n.id); !ok || m.Voter != n.voter || m.AdminAddr != n.srv.Listener.Addr().String() {
			t.Fatalf("%s membership = %+v %v", n.id, m, ok)
		}
	}

	// Followers refuse writes and verified reads, naming the leader.
	_, err = n3.Apply(ctx, SetGroupPhase{Group: "orders", Phase: GroupFenced})
	var nl *NotLeaderError
	if !errors.As(err, &nl) || !errors.Is(err, ErrNotLeader) || nl.LeaderID != "n1" || nl.LeaderAdminAddr != n1.srv.Listener.Addr().String() {
		t.Fatalf("apply on a non-voter: %v", err)
	}
	if _, err := n2.VerifiedRead(ctx); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("verified read on a follower: %v", err)
	}
	if r, err := n1.VerifiedRead(ctx); err != nil || r.AppliedIndex() < res.Index {
		t.Fatalf("verified read on the leader: %v", err)
	}
	if err := n2.AddNode(ctx, Member{ID: "x", RaftAddr: "127.0.0.1:1"}); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("AddNode on a follower: %v", err)
	}
	st := n3.Staleness()
	if st.Leader || !st.Within(2*time.Second) || st.Within(0) || st.AppliedIndex < res.Index {
		t.Fatalf("non-voter staleness = %+v", st)
	}
	if id, addr := n3.Leader(); id != "n1" || addr != n1.raftAddr {
		t.Fatalf("n3 sees leader %s at %s", id, addr)
	}

	// Every node reports having applied the change, so it is complete.
	eventually(t, 5*time.Second, "every node to report the change", func() bool {
		return len(NodesBehind(n1.State(), res.Index)) == 0
	})
	// A node that does not report (stopped here) holds the next change up
	// until it is declared dead.
	n3.stop(t)
	nodes = nodes[:2]
	res2, err := n1.Apply(ctx, SetGroupPhase{Group: "orders", Phase: GroupFenced})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "n1 and n2 to report", func() bool {
		behind := NodesBehind(n1.State(), res2.Index)
		return len(behind) == 1 && behind[0].ID == "n3"
	})
	if _, err := n1.Apply(ctx, SetNodeDead{ID: "n3", Dead: true}); err != nil {
		t.Fatal(err)
	}
	if behind := NodesBehind(n1.State(), res2.Index); len(behind) != 0 {
		t.Fatalf("behind after declaring n3 dead: %+v", behind)
	}
}

func TestLeaderFailover(t *testing.T) {
	noLeak := checkGoroutines(t)
	n1 := startNode(t, "v1", t.TempDir(), "", true, "")
	waitLeader(t, n1)
	n2 := startNode(t, "v2", t.TempDir(), "", true, n1.srv.Listener.Addr().String())
	n3 := startNode(t, "v3", t.TempDir(), "", true, n1.srv.Listener.Addr().String())
	nodes := []*testNode{n1, n2, n3}
	defer func() {
		for _, n := range nodes {
			n.stop(t)
		}
		noLeak()
	}()
	ctx := withTimeout(t, 30*time.Second)

	tp := TopicPartition{Topic: "t", Partition: 0}
	w, err := AssignWriter(ctx, n1, tp, "v2")
	if err != nil {
		t.Fatal(err)
	}
	res, err := n1.Apply(ctx, AppendSegments{Node: "v2", Partitions: []PartitionAppend{{TopicPartition: tp, Epoch: w.Epoch,
		Segments: []offsetsync.Segment{{Virtual: 0, Source: 0, Target: 0, Length: 100}}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := n.WaitApplied(ctx, res.Index); err != nil {
			t.Fatal(err)
		}
	}

	// Kill the leader: a new one is elected among the two voters left, with
	// every committed entry.
	killed := time.Now()
	n1.stop(t)
	rest := []*testNode{n2, n3}
	leader := waitLeader(t, rest...)
	t.Logf("new leader %s after %v", leader.id, time.Since(killed).Round(time.Millisecond))
	if got := leader.State().OffsetMap(tp); !slices.Equal(got, offsetsync.OffsetMap{seg(0, 0, 0, 100)}) {
		t.Fatalf("map on the new leader = %+v", got)
	}
	// The new leader reassigns the partition; the old writer is fenced.
	w2, err := AssignWriter(ctx, leader, tp, "v3")
	if err != nil || w2.Epoch != w.Epoch+1 {
		t.Fatalf("reassign: %+v %v", w2, err)
	}
	_, err = leader.Apply(ctx, AppendSegments{Node: "v2", Partitions: []PartitionAppend{{TopicPartition: tp, Epoch: w.Epoch,
		Segments: []offsetsync.Segment{{Virtual: 100, Source: 100, Target: 100, Length: 1}}}}})
	if !errors.Is(err, ErrStaleWriter) {
		t.Fatalf("stale writer append: %v", err)
	}
	res, err = leader.Apply(ctx, SetGroupPhase{Group: "g", Phase: GroupDraining})
	if err != nil {
		t.Fatal(err)
	}

	// The old leader comes back from its data dir and catches up.
	n1 = n1.restart(t)
	nodes = []*testNode{n1, n2, n3}
	if err := n1.WaitApplied(ctx, res.Index); err != nil {
		t.Fatal(err)
	}
	if wo, _ := n1.State().Writer(tp); wo.Node != "v3" || wo.Epoch != w2.Epoch {
		t.Fatalf("restarted node sees writer %+v", wo)
	}
	if g, _ := n1.State().Group("g"); g.Phase != GroupDraining {
		t.Fatalf("restarted node sees group %+v", g)
	}
}

// BenchmarkApplyLatency measures the commit latency of sequential Applies on
// loopback with 1 and 3 voters (fsync'd bolt log on every node), with raft's
// default timing, and reports p50/p99:
//
//	go test -run '^$' -bench ApplyLatency -benchtime 300x ./raftstore
func BenchmarkApplyLatency(b *testing.B) {
	for _, voters := range []int{1, 3} {
		b.Run(fmt.Sprintf("voters=%d", voters), func(b *testing.B) {
			defaults := func(c *Config) { c.Tune = nil }
			n1 := startNode(b, "l1", b.TempDir(), "", true, "", defaults)
			waitLeader(b, n1)
			nodes := []*testNode{n1}
			for i := 2; i <= voters; i++ {
				nodes = append(nodes, startNode(b, fmt.Sprintf("l%d", i), b.TempDir(), "", true, n1.srv.Listener.Addr().String(), defaults))
			}
			defer func() {
				for _, n := range nodes {
					_ = n.Close()
					n.srv.Close()
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				start := time.Now()
				if _, err := n1.Apply(ctx, SetReverseMirror{Topic: "t", On: i%2 == 0}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
			b.ReportMetric(float64(p(0.50).Microseconds()), "p50-µs")
			b.ReportMetric(float64(p(0.99).Microseconds()), "p99-µs")
		})
	}
}

func TestOpenRefusesBadConfig(t *testing.T) {
	if _, err := Open(Config{NodeID: "x"}); err == nil {
		t.Fatal("Open without DataDir and RaftAddr succeeded")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The raft port is taken: Open fails and releases the data dir.
	dir := t.TempDir()
	if _, err := Open(Config{NodeID: "x", DataDir: dir, RaftAddr: ln.Addr().String()}); err == nil {
		t.Fatal("Open on a busy port succeeded")
	}
	// Join that cannot succeed: Open gives up after JoinTimeout.
	start := time.Now()
	_, err = Open(Config{NodeID: "x", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", Join: "127.0.0.1:1", JoinTimeout: 300 * time.Millisecond})
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("join to nowhere: %v after %v", err, time.Since(start))
	}
}
