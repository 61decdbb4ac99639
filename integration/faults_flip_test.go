package integration

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/kmigrate/kmigrate/internal/faultrow"
	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/kmigrate/kmigrate/internal/proxytest"
	"github.com/kmigrate/kmigrate/protocol"
)

// The fault tests of this file inject a fault at a chosen point of a
// migration: a broker killed (kill -9, then restarted on its data) while the
// mirror copies history, while a group flip drains and while a topic flip
// holds produces; and, on a fleet of three raft voters whose raft traffic
// goes through toxiproxy, a voter cut off during a group and a topic flip,
// the node writing the flipping topic's mirror killed, and the raft leader
// killed during a topic flip. The cases of one test share its clusters and
// nodes (subtests, each with its own topic, group and clients, each
// reporting its own row) to keep the suite short.

// flipUnderFault is what happened to a flip that met a fault.
type flipUnderFault struct {
	phaseAtFault string        // the route when the fault was injected
	first        string        // how the interrupted command ended
	outcome      string        // completed, or reverted then completed by the next command
	settled      time.Duration // fault → the route settled on the target
}

// routeGetter reads a group's phase or a topic's primary from a node.
func routeGetter(kind, admin, name string) func() string {
	if kind == "group" {
		return func() string { return groupPhase(admin, name) }
	}
	return func() string { return topicPrimary(admin, name) }
}

// flipThroughFault asks flipOn to move kind ("group" or "topic") name to
// the target and calls fault the moment observer's admin API shows the flip
// under way (polled every 2 ms: a topic flip holds produces for tens of
// milliseconds only), then recover (restart, heal; nil for none). The
// interrupted command must end with the flip completed or reverted, never
// half; a reverted flip is asked again of flipOn, which must complete it.
func flipThroughFault(t *testing.T, ctx context.Context, kind, name string, flipOn *proxytest.Process, observer string, fault, recover func()) flipUnderFault {
	t.Helper()
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1) // the goroutine ends when its command does
	go func() {
		out, err := flipOn.CLI(t, "cutover", kind, name)
		done <- result{out, err}
	}()
	var f flipUnderFault
	observe := routeGetter(kind, observer, name)
	for {
		f.phaseAtFault = observe()
		if f.phaseAtFault != "source" && !strings.HasPrefix(f.phaseAtFault, "unreachable") {
			break
		}
		select {
		case r := <-done:
			t.Fatalf("the %s flip of %s ended before it was seen under way: %v\n%s", kind, name, r.err, r.out)
		case <-ctx.Done():
			t.Fatalf("the %s flip of %s never started", kind, name)
		case <-time.After(2 * time.Millisecond):
		}
	}
	faulted := time.Now()
	fault()
	inFlip := map[string]bool{"draining": true, "fenced": true} // a topic is only ever draining
	if !inFlip[f.phaseAtFault] {
		t.Fatalf("the %s was %q when the fault was injected: it missed the flip", kind, f.phaseAtFault)
	}
	if recover != nil {
		recover()
	}
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatalf("the interrupted %s flip command never returned", kind)
	}
	get := routeGetter(kind, flipOn.Admin, name)
	f.first = settledFlip(t, "the "+kind+" flip interrupted by the fault", r.err, r.out, get)
	if r.err != nil {
		f.first += " (" + lastError(r.out) + ")"
	}
	t.Logf("%s flip of %s: %s at the fault; the interrupted command: %s\n%s", kind, name, f.phaseAtFault, f.first, strings.TrimSpace(r.out))
	f.outcome = "completed"
	if r.err != nil {
		start := time.Now()
		out, err := flipOn.CLI(t, "cutover", kind, name)
		if err != nil || settledPhase(get) != "target" {
			t.Fatalf("the %s flip asked again after the fault: %v, %s %q\n%s", kind, err, kind, get(), out)
		}
		f.outcome = "reverted; the next command completed it in " + faultrow.FormatDuration(time.Since(start))
	}
	f.settled = time.Since(faulted)
	return f
}

// lastError is the gist of a failed command's output: the admin API's
// error (a JSON answer at the end of the last line), its first clause and
// its last cause.
func lastError(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	msg := lines[len(lines)-1]
	if i := strings.Index(msg, `{"error":`); i >= 0 {
		var ans struct{ Error string }
		if json.Unmarshal([]byte(msg[i:]), &ans) == nil && ans.Error != "" {
			msg = ans.Error
		}
	}
	first, last := msg, msg
	if i := strings.Index(msg, ": "); i >= 0 {
		first = msg[:i]
	}
	if i := strings.LastIndex(msg, ": "); i >= 0 {
		last = msg[i+2:]
	}
	if first == last {
		return last
	}
	return first + " … " + last
}

// writeSeqHistory writes records 0..n-1 (seqProducer's form) straight to a
// cluster.
func writeSeqHistory(t *testing.T, ctx context.Context, addr, topic string, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 0; i < n; i++ {
		cl.Produce(ctx, &kgo.Record{Key: []byte(strconv.Itoa(i % 9)), Value: []byte(strconv.Itoa(i))}, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("history produce: %v", err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatalf("write the history of %s: %v", topic, err)
	}
}

// TestFaultSourceBrokerKilled: the source broker is killed (kill -9) and
// restarted on its data at three points of a migration through one proxy.
func TestFaultSourceBrokerKilled(t *testing.T) { testFaultBrokerKilled(t, "source") }

// TestFaultTargetBrokerKilled: the same with the target broker.
func TestFaultTargetBrokerKilled(t *testing.T) { testFaultBrokerKilled(t, "target") }

// testFaultBrokerKilled kills side's broker (a cluster of its own; the
// other side is the package's shared one) while the mirror copies history,
// while a group flip drains and while a topic flip holds produces, and
// restarts it on the same data each time. Each point has its own topic,
// producer and group through the proxy; each must end with every record
// consumed once, in order, and the target log, read directly, holding
// every record once, in order; each flip completed or reverted and then
// completed.
func testFaultBrokerKilled(t *testing.T, side string) {
	victim := kafkatest.StartT(t, kafkatest.Options{Name: "faults-killed-" + side})
	src, dst := cluster(t), target.Get(t)
	if side == "source" {
		src = victim
	} else {
		dst = victim
	}
	base := uniqueName(t, "t")
	backfill, grouped, flipped := base+"-backfill", base+"-group", base+"-topic"
	for _, topic := range []string{backfill, grouped, flipped} {
		createTopicOn(t, src.Bootstrap(), topic, 3)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const history = 50_000
	writeSeqHistory(t, ctx, src.Bootstrap(), backfill, history)
	proxy := proxytest.Start(t, "--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", regexp.QuoteMeta(base)+"-.*", "--data-dir", t.TempDir())

	// crash kills the broker and restarts it on its data, returning how
	// long the restart took (the broker's downtime, less a few ms).
	crash := func(t *testing.T) time.Duration {
		t.Helper()
		victim.Kill()
		start := time.Now()
		if err := victim.Restart(ctx); err != nil {
			t.Fatalf("restart the %s broker after kill -9: %v", side, err)
		}
		took := time.Since(start)
		t.Logf("%s broker killed and restarted in %s", side, took.Round(time.Millisecond))
		return took
	}

	t.Run("backfill", func(t *testing.T) {
		row := faultrow.New(t, fmt.Sprintf("%s broker killed (kill -9) while the mirror copies %d records of history, restarted on its data (producer and group through the proxy)", side, history))
		prod := newSeqProducer(t, ctx, proxy.Addr, backfill, history)
		defer prod.stop()
		cons := newSeqConsumer(t, ctx, proxy.Addr, backfill, uniqueName(t, "group"))
		defer cons.stop()
		var copied int64
		waitFor(t, ctx, "the mirror to start copying the history", func() bool {
			copied = targetTotal(ctx, dst.Bootstrap(), backfill)
			return copied > 0
		})
		if copied >= history*9/10 {
			t.Fatalf("the mirror had copied %d of %d records before the kill: it missed the backfill", copied, history)
		}
		killed := time.Now()
		restart := crash(t)
		sourceEnd := targetTotal(ctx, src.Bootstrap(), backfill)
		waitFor(t, ctx, "the mirror to copy what the source held after the restart", func() bool {
			return targetTotal(ctx, dst.Bootstrap(), backfill) >= sourceEnd
		})
		lagZero := time.Since(killed)
		n, p := cons.count(), prod.acked()
		waitFor(t, ctx, "produce and consume after the restart", func() bool { return cons.count() > n+500 && prod.acked() > p+500 })
		prodPause, _ := prod.pauseAround(killed, restart)
		consPause := pauseAround(cons.snapshot(), killed, restart)
		counts := finishAndCountAtLeastOnce(t, ctx, prod, cons, dst.Bootstrap(), backfill)
		row.Recovered(lagZero, "kill → mirror lag 0")
		row.Recovered(max(prodPause, consPause), fmt.Sprintf("longest pause of the clients; the broker's restart took %s", faultrow.FormatDuration(restart)))
		row.Outcome("killed with %d of %d history records in the target; the mirror resumed from the map; %s", copied, history, counts)
	})

	t.Run("group flip", func(t *testing.T) {
		row := faultrow.New(t, side+" broker killed (kill -9) while a group flip drains, restarted on its data")
		group := uniqueName(t, "group")
		prod := newSeqProducer(t, ctx, proxy.Addr, grouped, 0)
		defer prod.stop()
		// Java's default heartbeat interval (3 s): the drain lasts until
		// the member's next heartbeat, the window the kill aims at.
		cons := newSeqConsumer(t, ctx, proxy.Addr, grouped, group, kgo.HeartbeatInterval(3*time.Second))
		defer cons.stop()
		waitFor(t, ctx, "the mirror to map the topic (kmigrate verify passes)", func() bool {
			_, err := proxy.CLI(t, "verify", "--topic", grouped, "--records", "0")
			return err == nil && cons.count() > 1000
		})
		var restart time.Duration
		killed := time.Now()
		f := flipThroughFault(t, ctx, "group", group, proxy, proxy.Admin, func() { killed = time.Now(); restart = crash(t) }, nil)
		n, p := cons.count(), prod.acked()
		waitFor(t, ctx, "produce and consume after the flip", func() bool { return cons.count() > n+500 && prod.acked() > p+500 })
		pause := pauseAround(cons.snapshot(), killed, f.settled)
		counts := finishAndCountAtLeastOnce(t, ctx, prod, cons, dst.Bootstrap(), grouped)
		row.Recovered(f.settled, fmt.Sprintf("kill → group on the target; the broker's restart took %s", faultrow.FormatDuration(restart)))
		row.Recovered(pause, "the group's longest pause in deliveries")
		row.Outcome("killed while %s; the interrupted command: %s; %s; %s", f.phaseAtFault, f.first, f.outcome, counts)
	})

	t.Run("topic flip", func(t *testing.T) {
		row := faultrow.New(t, side+" broker killed (kill -9) while a topic flip holds produces, restarted on its data")
		prod := newSeqProducer(t, ctx, proxy.Addr, flipped, 0)
		defer prod.stop()
		cons := newSeqConsumer(t, ctx, proxy.Addr, flipped, uniqueName(t, "group"))
		defer cons.stop()
		waitFor(t, ctx, "the mirror to map the topic (kmigrate verify passes)", func() bool {
			_, err := proxy.CLI(t, "verify", "--topic", flipped, "--records", "0")
			return err == nil && cons.count() > 1000
		})
		var restart time.Duration
		killed := time.Now()
		f := flipThroughFault(t, ctx, "topic", flipped, proxy, proxy.Admin, func() { killed = time.Now(); restart = crash(t) }, nil)
		n, p := cons.count(), prod.acked()
		waitFor(t, ctx, "produce and consume after the flip", func() bool { return cons.count() > n+500 && prod.acked() > p+500 })
		prodPause, _ := prod.pauseAround(killed, f.settled)
		counts := finishAndCountAtLeastOnce(t, ctx, prod, cons, dst.Bootstrap(), flipped)
		row.Recovered(f.settled, fmt.Sprintf("kill → topic on the target; the broker's restart took %s", faultrow.FormatDuration(restart)))
		row.Recovered(prodPause, "the producer's longest pause")
		row.Outcome("killed while %s; the interrupted command: %s; %s; %s", f.phaseAtFault, f.first, f.outcome, counts)
	})
}

// raftFleet is three raft voters, each a proxy whose raft listener is
// reached only through a toxiproxy link (its advertised raft address), so
// that any follower can be cut off from the others.
type raftFleet struct {
	t     *testing.T
	nodes map[string]*proxytest.Process
	links map[string]*toxiproxy.Proxy
	args  map[string][]string // each node's arguments, to restart it
}

func startRaftFleet(t *testing.T, common []string) *raftFleet {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	f := &raftFleet{t: t, nodes: map[string]*proxytest.Process{}, links: map[string]*toxiproxy.Proxy{}, args: map[string][]string{}}
	for _, id := range []string{"v1", "v2", "v3"} {
		link := toxiproxy.NewProxy(srv, id+"-raft", proxytest.FreeAddr(t), proxytest.FreeAddr(t))
		if err := link.Start(); err != nil {
			t.Fatalf("toxiproxy for %s's raft: %v", id, err)
		}
		t.Cleanup(link.Stop)
		f.links[id] = link
		args := append(append([]string(nil), common...), "--data-dir", t.TempDir(), "--raft-node-id", id, "--raft-voter",
			"--raft-addr", link.Upstream, "--raft-advertise", link.Listen)
		if id != "v1" {
			args = append(args, "--join", f.nodes["v1"].Admin)
		}
		f.args[id] = args
		f.nodes[id] = proxytest.Start(t, args...)
	}
	return f
}

// view is what a node says of the control plane: the leader, and the live
// voters.
func (f *raftFleet) view(id string) (leader string, live int) {
	var st struct {
		Leader string
		Nodes  []struct {
			ID    string
			Voter bool
			Dead  bool
		}
	}
	if getAdminJSON(f.nodes[id].Admin, "/v1/nodes", &st) != nil {
		return "", 0
	}
	for _, n := range st.Nodes {
		if n.Voter && !n.Dead {
			live++
		}
	}
	return st.Leader, live
}

// waitLeader waits until every node names the same leader and three live
// voters, and returns the leader and the two followers.
func (f *raftFleet) waitLeader(ctx context.Context) (leader string, followers []string) {
	f.t.Helper()
	var last string
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		leader, last = "", ""
		agreed := true
		for _, id := range []string{"v1", "v2", "v3"} {
			l, live := f.view(id)
			last += fmt.Sprintf(" %s: leader %q, %d live voters;", id, l, live)
			if l == "" || live < 3 || (leader != "" && l != leader) {
				agreed = false
			}
			leader = l
		}
		if agreed && f.nodes[leader] != nil {
			break
		}
		if wctx.Err() != nil {
			f.t.Fatalf("no three live voters agreeing on a leader after 30 s:%s", last)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, id := range []string{"v1", "v2", "v3"} {
		if id != leader {
			followers = append(followers, id)
		}
	}
	return leader, followers
}

// writers maps each partition of topic to the node writing its mirror.
func (f *raftFleet) writers(id, topic string) map[int32]string {
	var ws []struct {
		Topic     string
		Partition int32
		Node      string
	}
	if getAdminJSON(f.nodes[id].Admin, "/v1/writers", &ws) != nil {
		return nil
	}
	out := map[int32]string{}
	for _, w := range ws {
		if w.Topic == topic && w.Node != "" {
			out[w.Partition] = w.Node
		}
	}
	return out
}

// TestFaultControlPlaneDuringFlips: three raft voters, every one a proxy
// and a mirror writer, their raft traffic through toxiproxy. Four cases,
// each with its own topic, group and clients: a follower voter cut off
// from the others (its raft link down 5 s, past the 4 s after which the
// leader declares it dead) while a group flip drains and while a topic flip
// holds produces, the group's and producer's clients on that voter; the
// node writing some of the flipping topic's partitions killed (kill -9)
// while the topic flip holds produces; and the raft leader killed while a
// topic flip asked of a follower holds produces. Each flip must end
// completed or reverted (then completed by the next command), and every
// record be consumed once, in order, and be in the target log once, in
// order.
func TestFaultControlPlaneDuringFlips(t *testing.T) {
	src, dst := cluster(t), target.Get(t)
	base := uniqueName(t, "t")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	fleet := startRaftFleet(t, []string{"--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", regexp.QuoteMeta(base) + "-.*"})
	fleet.waitLeader(ctx)
	// The topics appear once the three nodes are members, so that the
	// leader spreads their partitions over the three writers.
	cases := []string{"cut-group", "cut-topic", "writer", "leader"}
	for _, c := range cases {
		createTopicOn(t, src.Bootstrap(), base+"-"+c, 3)
	}
	leader, _ := fleet.waitLeader(ctx)
	waitFor(t, ctx, "a mirror writer for every partition", func() bool {
		for _, c := range cases {
			if len(fleet.writers(leader, base+"-"+c)) != 3 {
				return false
			}
		}
		return true
	})

	// run starts a producer and a group member on the clients' node, waits
	// until the mirror maps the topic, and ends with the counts.
	type workload struct {
		prod  *seqProducer
		cons  *seqConsumer
		topic string
	}
	start := func(t *testing.T, clients *proxytest.Process, topic, group string) workload {
		t.Helper()
		w := workload{topic: topic}
		w.prod = newSeqProducer(t, ctx, clients.Addr, topic, 0)
		// Java's default heartbeat interval: a drain lasts until the
		// member's next heartbeat.
		w.cons = newSeqConsumer(t, ctx, clients.Addr, topic, group, kgo.HeartbeatInterval(3*time.Second))
		waitFor(t, ctx, "the mirror to map the topic (kmigrate verify passes)", func() bool {
			_, err := clients.CLI(t, "verify", "--topic", topic, "--records", "0")
			return err == nil && w.cons.count() > 1000
		})
		return w
	}
	finishWork := func(t *testing.T, w workload) deliveryCounts {
		t.Helper()
		n, p := w.cons.count(), w.prod.acked()
		waitFor(t, ctx, "produce and consume after the flip", func() bool { return w.cons.count() > n+500 && w.prod.acked() > p+500 })
		return finishAndCount(t, ctx, w.prod, w.cons, dst.Bootstrap(), w.topic)
	}
	const cutFor = 5 * time.Second

	for _, kind := range []string{"group", "topic"} {
		t.Run("voter cut during a "+kind+" flip", func(t *testing.T) {
			row := faultrow.New(t, fmt.Sprintf("raft voter holding the clients cut off from the others (toxiproxy, %s) during a %s flip asked of another follower, then healed (3 voters)", faultrow.FormatDuration(cutFor), kind))
			leader, followers := fleet.waitLeader(ctx)
			victim, flipper := fleet.nodes[followers[0]], fleet.nodes[followers[1]]
			t.Logf("leader %s; %s (the clients' node) cut off; the flip asked of %s", leader, followers[0], followers[1])
			topic, group := base+"-cut-"+kind, uniqueName(t, "group")
			w := start(t, victim, topic, group)
			defer w.prod.stop()
			defer w.cons.stop()
			name := topic
			if kind == "group" {
				name = group
			}
			var healed time.Time
			f := flipThroughFault(t, ctx, kind, name, flipper, victim.Admin,
				func() { fleet.links[followers[0]].Stop() },
				func() {
					time.Sleep(cutFor)
					if err := fleet.links[followers[0]].Start(); err != nil {
						t.Fatalf("heal %s's raft link: %v", followers[0], err)
					}
					healed = time.Now()
				})
			waitFor(t, ctx, "the healed voter to apply the flip", func() bool { return routeGetter(kind, victim.Admin, name)() == "target" })
			caughtUp := time.Since(healed)
			n := w.cons.count()
			waitFor(t, ctx, "the clients on the healed voter to consume", func() bool { return w.cons.count() > n+100 })
			serving := time.Since(healed)
			counts := finishWork(t, w)
			row.Recovered(caughtUp, "heal → the cut voter applied the flip")
			row.Recovered(serving, "heal → its clients consume again")
			row.Outcome("cut while %s; the interrupted command: %s; %s; %s", f.phaseAtFault, f.first, f.outcome, counts)
		})
	}

	t.Run("writer node killed during a topic flip", func(t *testing.T) {
		row := faultrow.New(t, "node writing the flipping topic's mirror killed (kill -9) while the topic flip holds produces (3 voters; clients and the flip on the others)")
		leader, followers := fleet.waitLeader(ctx)
		topic := base + "-writer"
		ws := fleet.writers(leader, topic)
		victim := ""
		for _, id := range followers {
			for _, n := range ws {
				if n == id {
					victim = id
				}
			}
		}
		if victim == "" {
			t.Fatalf("no follower writes a partition of %s (writers %v): the case needs the writer to be other than the leader", topic, ws)
		}
		clients := followers[0]
		if clients == victim {
			clients = followers[1]
		}
		var owned []int32
		for p, n := range ws {
			if n == victim {
				owned = append(owned, p)
			}
		}
		sort.Slice(owned, func(i, j int) bool { return owned[i] < owned[j] })
		t.Logf("leader %s; %s writes partitions %v of %s and is killed; clients on %s; the flip asked of the leader", leader, victim, owned, topic, clients)
		w := start(t, fleet.nodes[clients], topic, uniqueName(t, "group"))
		defer w.prod.stop()
		defer w.cons.stop()
		var killed time.Time
		f := flipThroughFault(t, ctx, "topic", topic, fleet.nodes[leader], fleet.nodes[clients].Admin,
			func() { killed = time.Now(); fleet.nodes[victim].Kill9() }, nil)
		prodPause, _ := w.prod.pauseAround(killed, f.settled)
		counts := finishWork(t, w)
		// Back from its data dir, for the next case's quorum; a process
		// of the whole test, not of this case.
		fleet.nodes[victim] = proxytest.Start(fleet.t, fleet.args[victim]...)
		row.Recovered(f.settled, "kill → topic on the target")
		row.Recovered(prodPause, "the producer's longest pause")
		row.Outcome("killed while %s, writer of partitions %v; the interrupted command: %s; %s; %s", f.phaseAtFault, owned, f.first, f.outcome, counts)
	})

	t.Run("leader killed during a topic flip", func(t *testing.T) {
		row := faultrow.New(t, "raft leader killed (kill -9) while a topic flip asked of a follower holds produces (3 voters; clients on the other follower)")
		leader, followers := fleet.waitLeader(ctx)
		clients, flipper := fleet.nodes[followers[0]], fleet.nodes[followers[1]]
		topic := base + "-leader"
		t.Logf("leader %s killed; clients on %s; the flip asked of %s", leader, followers[0], followers[1])
		w := start(t, clients, topic, uniqueName(t, "group"))
		defer w.prod.stop()
		defer w.cons.stop()
		var killed time.Time
		f := flipThroughFault(t, ctx, "topic", topic, flipper, clients.Admin,
			func() { killed = time.Now(); fleet.nodes[leader].Kill9() }, nil)
		waitFor(t, ctx, "a new leader", func() bool { l, _ := fleet.view(followers[0]); return l != "" && l != leader })
		prodPause, _ := w.prod.pauseAround(killed, f.settled)
		counts := finishWork(t, w)
		row.Recovered(f.settled, "kill → topic on the target")
		row.Recovered(prodPause, "the producer's longest pause")
		row.Outcome("killed while %s; the interrupted command: %s; %s; %s", f.phaseAtFault, f.first, f.outcome, counts)
	})
}

// seqBatch encodes one uncompressed v2 record batch of an idempotent
// producer holding the records first..first+n-1 (seqProducer's values), as
// a client would send it with base sequence first.
func seqBatch(pid int64, epoch int16, first, n int) []byte {
	var recs []byte
	for i := 0; i < n; i++ {
		v := []byte(strconv.Itoa(first + i))
		var body []byte
		body = append(body, 0)                          // attributes
		body = binary.AppendVarint(body, 0)             // timestamp delta
		body = binary.AppendVarint(body, int64(i))      // offset delta
		body = binary.AppendVarint(body, -1)            // null key
		body = binary.AppendVarint(body, int64(len(v))) // value
		body = append(body, v...)                       //
		body = binary.AppendVarint(body, 0)             // no headers
		recs = append(binary.AppendVarint(recs, int64(len(body))), body...)
	}
	now := time.Now().UnixMilli()
	b := binary.BigEndian.AppendUint64(nil, 0) // base offset
	b = binary.BigEndian.AppendUint32(b, uint32(49+len(recs)))
	b = binary.BigEndian.AppendUint32(b, 0xffffffff) // partition leader epoch
	b = append(b, 2)                                 // magic
	b = binary.BigEndian.AppendUint32(b, 0)          // CRC, set below
	b = binary.BigEndian.AppendUint16(b, 0)          // attributes
	b = binary.BigEndian.AppendUint32(b, uint32(n-1))
	b = binary.BigEndian.AppendUint64(b, uint64(now))
	b = binary.BigEndian.AppendUint64(b, uint64(now))
	b = binary.BigEndian.AppendUint64(b, 0) // producer id, epoch, sequence: below
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = append(b, recs...)
	protocol.Batch(b).SetProducer(pid, epoch, int32(first)) // and the CRC
	return b
}

// TestTopicFlipRetriedBatch is the regression test of what
// TestFaultSourceBrokerKilled found: a batch the source wrote but whose
// answer the client never got, retried after the topic flipped, must not
// be written to the target a second time; and what
// TestFaultControlPlaneDuringFlips found: a batch whose predecessor was
// answered with an error must not be written ahead of it. An idempotent
// producer's batch 5..9 is written straight to the source (the answer
// "lost"), the topic flips, and the same batch comes through the proxy: it
// is answered as a duplicate. Then 15..19 comes before 10..14: refused
// (retriable), and both land once, in order, when sent in order; the
// target log holds 0..19 once, in order.
func TestTopicFlipRetriedBatch(t *testing.T) {
	row := faultrow.New(t, "a produce's answer lost before a topic flip (the batch on the source), the batch retried after the flip; then a batch sent ahead of its predecessor (raw idempotent batches, deterministic)")
	src, dst := cluster(t), target.Get(t)
	topic := uniqueName(t, "topic")
	createTopicOn(t, src.Bootstrap(), topic, 1)
	proxy := proxytest.Start(t, "--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", regexp.QuoteMeta(topic), "--data-dir", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	through, err := kgo.NewClient(kgo.SeedBrokers(proxy.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer through.Close()
	// Produce v13 names topics by id; the request here names it.
	direct, err := kgo.NewClient(kgo.SeedBrokers(src.Bootstrap()), kgo.MaxVersions(kversion.V3_6_0()))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	init := kmsg.NewPtrInitProducerIDRequest()
	init.ProducerID, init.ProducerEpoch = -1, -1
	ir, err := init.RequestWith(ctx, through)
	if err == nil {
		err = kerr.ErrorForCode(ir.ErrorCode)
	}
	if err != nil {
		t.Fatalf("init producer id through the proxy: %v", err)
	}
	produce := func(cl *kgo.Client, first int) int16 {
		t.Helper()
		req := kmsg.NewPtrProduceRequest()
		req.Acks, req.TimeoutMillis = -1, 10_000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = seqBatch(ir.ProducerID, ir.ProducerEpoch, first, 5)
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatalf("produce %d..%d: %v", first, first+4, err)
		}
		return resp.Topics[0].Partitions[0].ErrorCode
	}
	if code := produce(through, 0); code != 0 {
		t.Fatalf("produce 0..4 through the proxy: %v", kerr.ErrorForCode(code))
	}
	if code := produce(direct, 5); code != 0 { // the answer the client "never got"
		t.Fatalf("produce 5..9 to the source: %v", kerr.ErrorForCode(code))
	}
	waitFor(t, ctx, "the mirror to copy 0..9 (kmigrate verify passes)", func() bool {
		_, err := proxy.CLI(t, "verify", "--topic", topic, "--records", "0")
		return err == nil && targetTotal(ctx, dst.Bootstrap(), topic) == 10
	})
	if out, err := proxy.CLI(t, "cutover", "topic", topic); err != nil {
		t.Fatalf("cutover topic: %v\n%s", err, out)
	}
	code := produce(through, 5) // the client's retry, after the flip
	if code != 0 && code != kerr.DuplicateSequenceNumber.Code {
		t.Fatalf("the retried batch 5..9 after the flip: %v; want success or DUPLICATE_SEQUENCE_NUMBER", kerr.ErrorForCode(code))
	}
	// A batch ahead of its predecessor (which a node answered with an
	// error) must not become the target's first: refused, retriably.
	early := produce(through, 15)
	if early != kerr.NotLeaderForPartition.Code {
		t.Errorf("batch 15..19 sent before 10..14 after the flip: %v; want NOT_LEADER_OR_FOLLOWER (it must come after 10..14)", kerr.ErrorForCode(early))
	}
	for _, first := range []int{10, 15} {
		if code := produce(through, first); code != 0 {
			t.Fatalf("produce %d..%d after the flip: %v", first, first+4, kerr.ErrorForCode(code))
		}
	}
	waitFor(t, ctx, "the target to hold 10..19", func() bool { return targetTotal(ctx, dst.Bootstrap(), topic) >= 20 })
	cl, err := kgo.NewClient(kgo.SeedBrokers(dst.Bootstrap()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	log := readAll(t, ctx, dst.Bootstrap(), topic, ends)
	lost, dup, reordered := countDeliveries(log, 20)
	t.Logf("the retried batch was answered %v, the early one %v; target log: %d records, %d lost, %d duplicated, %d reordered",
		kerr.ErrorForCode(code), kerr.ErrorForCode(early), len(log), lost, dup, reordered)
	codeName := func(c int16) string {
		if c == 0 {
			return "success"
		}
		if e, ok := kerr.ErrorForCode(c).(*kerr.Error); ok {
			return e.Message
		}
		return fmt.Sprintf("code %d", c)
	}
	row.Outcome("the retry answered %s, the early batch %s (then sent after its predecessor); target log: %d records, %d lost, %d duplicated, %d reordered",
		codeName(code), codeName(early), len(log), lost, dup, reordered)
	if lost != 0 || dup != 0 || reordered != 0 || len(log) != 20 {
		t.Fatalf("target log: %d records, %d lost, %d duplicated, %d reordered; want 0..19 once, in order", len(log), lost, dup, reordered)
	}
}
