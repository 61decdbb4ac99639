package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"

	"github.com/kmigrate/kmigrate/internal/faultrow"
	"github.com/kmigrate/kmigrate/internal/proxytest"
	"github.com/kmigrate/kmigrate/raftstore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"
)

// node is one `kmigrate proxy` process of the control-plane tests.
type node struct {
	id, admin, raftAddr, dataDir, log string
	args                              []string
	cmd                               *exec.Cmd
}

func startNode(t *testing.T, n *node) {
	t.Helper()
	logFile, err := os.OpenFile(n.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	args := append([]string{"proxy", "--listen", proxytest.FreeAddr(t), "--admin-listen", n.admin,
		"--data-dir", n.dataDir, "--raft-node-id", n.id, "--raft-addr", n.raftAddr}, n.args...)
	n.cmd = exec.Command(proxytest.Binary(t), args...)
	n.cmd.Stdout, n.cmd.Stderr = logFile, logFile
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, n.id+" to serve its admin API", func() bool {
		var st nodesAnswer
		return getJSON(n.admin, "/v1/nodes", &st) == nil
	})
}

func (n *node) kill9() {
	if n.cmd != nil {
		n.cmd.Process.Signal(syscall.SIGKILL)
		n.cmd.Wait()
		n.cmd = nil
	}
}

type nodesAnswer struct {
	Node         string                 `json:"node"`
	Leader       string                 `json:"leader"`
	AppliedIndex uint64                 `json:"applied_index"`
	Nodes        []raftstore.NodeStatus `json:"nodes"`
}

var httpc = &http.Client{Timeout: 2 * time.Second}

func getJSON(admin, path string, v any) error {
	resp, err := httpc.Get("http://" + admin + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
	return time.Since(start)
}

// cluster is the test's view of the processes.
type cluster struct {
	t     *testing.T
	nodes map[string]*node
}

func (c *cluster) running() []*node {
	var out []*node
	for _, n := range c.nodes {
		if n.cmd != nil {
			out = append(out, n)
		}
	}
	return out
}

// leader is the leader a majority of the running nodes name, or nil.
func (c *cluster) leader() *node {
	votes := map[string]int{}
	running := c.running()
	for _, n := range running {
		var st nodesAnswer
		if getJSON(n.admin, "/v1/nodes", &st) == nil && st.Leader != "" {
			votes[st.Leader]++
		}
	}
	for id, v := range votes {
		if l := c.nodes[id]; 2*v > len(running) && l != nil && l.cmd != nil {
			return l
		}
	}
	return nil
}

func (c *cluster) waitLeader(timeout time.Duration) *node {
	c.t.Helper()
	var l *node
	waitFor(c.t, timeout, "a leader named by most running nodes", func() bool { l = c.leader(); return l != nil })
	return l
}

// apply posts a command to the leader's admin API (what Propose does from
// a follower) and returns its raft index.
func (c *cluster) apply(cmd raftstore.Command) uint64 {
	c.t.Helper()
	entry, err := raftstore.EncodeCommand(cmd, time.Time{})
	if err != nil {
		c.t.Fatal(err)
	}
	body, _ := json.Marshal(map[string][]byte{"entry": entry})
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		l := c.leader()
		if l == nil {
			continue
		}
		resp, err := httpc.Post("http://"+l.admin+"/v1/raftstore/apply", "application/json", bytes.NewReader(body))
		if err != nil {
			continue
		}
		var ans struct {
			Index uint64 `json:"index"`
			Error string `json:"error"`
		}
		err = json.NewDecoder(resp.Body).Decode(&ans)
		resp.Body.Close()
		if err == nil && resp.StatusCode == http.StatusOK {
			if ans.Error != "" {
				c.t.Fatalf("%T refused: %s", cmd, ans.Error)
			}
			return ans.Index
		}
	}
	c.t.Fatalf("could not apply %T", cmd)
	return 0
}

func (c *cluster) change(on *node, index uint64) raftstore.ChangeStatus {
	c.t.Helper()
	var cs raftstore.ChangeStatus
	if err := getJSON(on.admin, fmt.Sprintf("/v1/changes/%d", index), &cs); err != nil {
		c.t.Fatal(err)
	}
	return cs
}

func applied(n *node) uint64 {
	var st nodesAnswer
	if getJSON(n.admin, "/v1/nodes", &st) != nil {
		return 0
	}
	return st.AppliedIndex
}

// topics is the producer routes a node's state holds, by name.
func topics(n *node) map[string]raftstore.RouteChange {
	var rc []raftstore.RouteChange
	out := map[string]raftstore.RouteChange{}
	if getJSON(n.admin, "/v1/changes", &rc) != nil {
		return nil
	}
	for _, r := range rc {
		if r.Kind == "topic" {
			out[r.Name] = r
		}
	}
	return out
}

// TestControlPlaneProcesses runs the control plane as five `kmigrate proxy`
// processes on loopback: three voters (one behind a toxiproxy) and two
// non-voters. It checks failover after kill -9 of the leader, a voter cut
// off and healed, a restarted non-voter catching up, and that a change is
// complete only once every live node applied it: a node reporting a stale
// index holds it back until it catches up, a dead one until it is declared
// dead.
func TestControlPlaneProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	row := faultrow.New(t, "raft leader killed (kill -9), a voter cut off by toxiproxy and healed, a non-voter restarted (5 processes)")
	src, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	// The raft traffic to voters v2 and v3 goes through toxiproxy, so that
	// whichever follows can be cut off.
	toxics := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	links := map[string]*toxiproxy.Proxy{}
	for _, id := range []string{"v2", "v3"} {
		links[id] = toxiproxy.NewProxy(toxics, id+"-raft", proxytest.FreeAddr(t), proxytest.FreeAddr(t))
		if err := links[id].Start(); err != nil {
			t.Fatal(err)
		}
		defer links[id].Stop()
	}

	dir := t.TempDir()
	c := &cluster{t: t, nodes: map[string]*node{}}
	mk := func(id string, raftAddr string, args ...string) *node {
		n := &node{id: id, admin: proxytest.FreeAddr(t), raftAddr: raftAddr, dataDir: filepath.Join(dir, id),
			log: filepath.Join(dir, id+".log"), args: append([]string{"--source-bootstrap", src.ListenAddrs()[0]}, args...)}
		c.nodes[id] = n
		return n
	}
	v1 := mk("v1", proxytest.FreeAddr(t), "--raft-voter")
	startNode(t, v1)
	join := []string{"--join", v1.admin}
	v2 := mk("v2", links["v2"].Upstream, append(join, "--raft-voter", "--raft-advertise", links["v2"].Listen)...)
	v3 := mk("v3", links["v3"].Upstream, append(join, "--raft-voter", "--raft-advertise", links["v3"].Listen)...)
	s1 := mk("s1", proxytest.FreeAddr(t), join...)
	s2 := mk("s2", proxytest.FreeAddr(t), join...)
	for _, n := range []*node{v2, v3, s1, s2} {
		startNode(t, n)
	}
	defer func() {
		for _, n := range c.nodes {
			n.kill9()
		}
		if t.Failed() {
			for _, n := range c.nodes {
				out, _ := os.ReadFile(n.log)
				t.Logf("--- %s log (tail) ---\n%s", n.id, tail(string(out), 3000))
			}
		}
	}()

	// 1. Five members, three voters, one leader.
	leader := c.waitLeader(10 * time.Second)
	waitFor(t, 10*time.Second, "five registered members", func() bool {
		var st nodesAnswer
		if getJSON(leader.admin, "/v1/nodes", &st) != nil || len(st.Nodes) != 5 {
			return false
		}
		voters := 0
		for _, n := range st.Nodes {
			if n.Voter {
				voters++
			}
		}
		return voters == 3
	})

	// 2. Committed entries survive kill -9 of the leader; a new leader is
	// elected within 5 s.
	var last uint64
	for i := range 50 {
		last = c.apply(raftstore.SetReverseMirror{Topic: fmt.Sprintf("t%02d", i), On: true})
	}
	killed := leader
	start := time.Now()
	killed.kill9()
	leader = c.waitLeader(10 * time.Second)
	failover := time.Since(start)
	t.Logf("kill -9 of leader %s: new leader %s after %v", killed.id, leader.id, failover.Round(time.Millisecond))
	row.Recovered(failover, "new leader after kill -9 of the leader")
	if failover > 5*time.Second {
		t.Errorf("failover took %v, want < 5s", failover)
	}
	// A new leader applies the entries it already holds asynchronously;
	// a committed entry it never applies, within the bound, is lost.
	waitFor(t, 10*time.Second, "the new leader to hold all 50 committed routes", func() bool { return len(topics(leader)) == 50 })
	startNode(t, killed) // back from its data dir
	waitFor(t, 10*time.Second, killed.id+" to catch up after restart", func() bool { return applied(killed) >= last })

	// 3. A following voter cut off by a network partition: it keeps
	// reporting (admin traffic is not cut) a stale applied index, which
	// holds the change back; after healing it catches up, converges, and
	// the change completes.
	victim := v3
	if c.leader() == v3 {
		victim = v2
	}
	cut := links[victim.id]
	cut.Stop()
	cutAt := time.Now()
	idx := c.apply(raftstore.SetGroupPhase{Group: "orders", Phase: raftstore.GroupDraining})
	time.Sleep(1500 * time.Millisecond) // several report rounds
	leader = c.waitLeader(10 * time.Second)
	cs := c.change(leader, idx)
	if cs.Complete || len(cs.Behind) != 1 || cs.Behind[0].ID != victim.id {
		t.Fatalf("with %s cut off, change %d = %+v; want incomplete, behind: %s", victim.id, idx, cs, victim.id)
	}
	if applied(victim) >= idx {
		t.Fatalf("%s applied %d while cut off", victim.id, applied(victim))
	}
	if err := cut.Start(); err != nil {
		t.Fatal(err)
	}
	healed := waitFor(t, 30*time.Second, "the change to complete after healing", func() bool { return c.change(leader, idx).Complete })
	t.Logf("%s cut off for %v; caught up and reported %v after healing", victim.id, time.Since(cutAt).Round(time.Millisecond)-healed, healed.Round(time.Millisecond))
	row.Recovered(healed, "cut-off voter caught up after the heal")
	waitFor(t, 10*time.Second, victim.id+" to hold the leader's routes", func() bool {
		got, want := routes(victim), routes(leader)
		return got != "" && got == want
	})

	// 4. A restarted non-voter catches up with what it missed.
	s1.kill9()
	for i := range 20 {
		last = c.apply(raftstore.SetReverseMirror{Topic: fmt.Sprintf("late%02d", i), On: true})
	}
	startNode(t, s1)
	took := waitFor(t, 10*time.Second, "s1 to catch up", func() bool { return applied(s1) >= last })
	t.Logf("restarted non-voter caught up %d entries in %v", 20, took.Round(time.Millisecond))
	if got := len(topics(s1)); got != 70 {
		t.Fatalf("s1 holds %d routes, want 70", got)
	}

	// 5. A dead node holds a change back only until the leader declares it
	// dead (no report for 4 s).
	s2.kill9()
	idx = c.apply(raftstore.SetGroupPhase{Group: "orders", Phase: raftstore.GroupFenced})
	time.Sleep(500 * time.Millisecond)
	if cs := c.change(leader, idx); cs.Complete {
		t.Fatalf("change %d complete while s2 has not applied it and is not declared dead: %+v", idx, cs)
	}
	took = waitFor(t, 15*time.Second, "s2 declared dead", func() bool { return c.change(leader, idx).Complete })
	cs = c.change(leader, idx)
	if len(cs.Dead) != 1 || cs.Dead[0] != "s2" {
		t.Fatalf("change %d = %+v; want s2 dead", idx, cs)
	}
	t.Logf("change complete %v after s2 was killed (declared dead)", took.Round(time.Millisecond))
	row.Outcome("failover; committed entries kept; a change completes only once every live node applied it (the cut-off voter held it back until healed, a dead node until declared dead)")
}

// routes is every route a node holds with its phase, epoch and change index.
func routes(n *node) string {
	var rc []raftstore.RouteChange
	if getJSON(n.admin, "/v1/changes", &rc) != nil {
		return ""
	}
	var b strings.Builder
	for _, r := range rc {
		fmt.Fprintf(&b, "%s %s %s %d %d\n", r.Kind, r.Name, r.Phase, r.Epoch, r.Index)
	}
	return b.String()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}
