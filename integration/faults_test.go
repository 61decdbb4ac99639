package integration

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/faultrow"
	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/kmigrate/kmigrate/internal/proxytest"
)

// The fault tests of this file (TestFault*, run by `make test-faults`) put
// a toxiproxy link between the proxy and the target, kill nodes in the
// middle of a group flip, and slow a client down. Each reports its row of
// the fault table (internal/faultrow).

// relayedTarget is a target broker that the proxy reaches only through a
// toxiproxy link: the broker advertises the link's address on its Relayed
// listener, so Metadata's broker addresses go through it too, while
// Bootstrap() stays direct for the test's own checks.
type relayedTarget struct {
	*kafkatest.Cluster
	Relay string // the proxy's --target-bootstrap
	link  *toxiproxy.Proxy
}

func startRelayedTarget(t *testing.T, name string) *relayedTarget {
	t.Helper()
	relay := proxytest.FreeAddr(t)
	dst := kafkatest.StartT(t, kafkatest.Options{Name: name, RelayedAddr: relay})
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	link := toxiproxy.NewProxy(srv, name, relay, dst.Addr(kafkatest.Relayed))
	if err := link.Start(); err != nil {
		t.Fatalf("toxiproxy %s → %s: %v", relay, dst.Addr(kafkatest.Relayed), err)
	}
	t.Cleanup(link.Stop)
	return &relayedTarget{Cluster: dst, Relay: relay, link: link}
}

// addToxic adds a toxic to both directions of the link (name-up, name-down).
func addToxic(t *testing.T, link *toxiproxy.Proxy, name, typ string, attrs string) {
	t.Helper()
	for _, stream := range []string{"upstream", "downstream"} {
		js := fmt.Sprintf(`{"name":%q,"type":%q,"stream":%q,"toxicity":1,"attributes":%s}`, name+"-"+stream, typ, stream, attrs)
		if _, err := link.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			t.Fatalf("add toxic %s: %v", js, err)
		}
	}
}

func removeToxic(t *testing.T, link *toxiproxy.Proxy, name string) {
	t.Helper()
	for _, stream := range []string{"upstream", "downstream"} {
		if err := link.Toxics.RemoveToxic(context.Background(), name+"-"+stream); err != nil {
			t.Fatalf("remove toxic %s-%s: %v", name, stream, err)
		}
	}
}

func topicPrimary(admin, topic string) string {
	var r struct{ Primary string }
	if err := getAdminJSON(admin, "/v1/topics/"+topic, &r); err != nil {
		return "unreachable: " + err.Error()
	}
	return r.Primary
}

func groupPhase(admin, group string) string {
	var r struct{ Phase string }
	if err := getAdminJSON(admin, "/v1/groups/"+group, &r); err != nil {
		return "unreachable: " + err.Error()
	}
	return r.Phase
}

// intermediate says whether a group phase or topic primary is a flip in
// progress (or the node could not be asked).
func intermediate(phase string) bool {
	switch phase {
	case "source", "target":
		return false
	}
	return true
}

// settledPhase polls get until it names a settled phase, for up to 10 s: a
// node applies a change the leader committed a moment later (a non-voter
// that ran the flip itself too), so right after a command its view may
// still be the last intermediate phase.
func settledPhase(get func() string) string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		phase := get()
		if !intermediate(phase) || time.Now().After(deadline) {
			return phase
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settledFlip says how a flip command ended: completed ("target"), or
// refused/reverted ("source"); anything else after the command returned is
// a half-done flip and fails t.
func settledFlip(t *testing.T, what string, err error, out string, get func() string) string {
	t.Helper()
	phase := settledPhase(get)
	switch {
	case err == nil && phase == "target":
		return "completed"
	case err != nil && phase == "source":
		return "refused, reverted to the source"
	default:
		t.Fatalf("%s: command error %v, phase %q 10 s afterwards: a flip must end completed or reverted, never half\n%s", what, err, phase, out)
		return ""
	}
}

// deliveryCounts is what a fault case found at the consumers and in the
// target log read directly.
type deliveryCounts struct {
	sent, deliveries                  int
	lost, dup, reordered, afterCommit int
	tlost, tdup, treordered, prodErrs int
	// atLeastOnce: redeliveries after a failed commit were counted
	// apart, in retried (see countRedeliveries).
	atLeastOnce bool
	retried     int
}

func (c deliveryCounts) String() string {
	var retried string
	if c.atLeastOnce {
		retried = fmt.Sprintf(", %d again after a failed commit (at least once)", c.retried)
	}
	return fmt.Sprintf("%d records; consumers: %d lost, %d duplicated, %d reordered, %d again after a commit%s; target log: %d lost, %d duplicated, %d reordered; %d produce errors",
		c.sent, c.lost, c.dup, c.reordered, c.afterCommit, retried, c.tlost, c.tdup, c.treordered, c.prodErrs)
}

func (c deliveryCounts) clean() bool {
	return c.lost == 0 && c.dup == 0 && c.reordered == 0 && c.afterCommit == 0 && c.tlost == 0 && c.tdup == 0 && c.treordered == 0 && c.prodErrs == 0
}

// finishAndCount stops the producer, waits until the group consumed every
// record and the target log holds them all (mirrored or produced there),
// and counts lost, duplicated and reordered records at the consumer and in
// the target log read directly. It fails t unless everything is 0.
func finishAndCount(t *testing.T, ctx context.Context, prod *seqProducer, cons *seqConsumer, targetBoot, topic string) deliveryCounts {
	t.Helper()
	return finish(t, ctx, prod, cons, targetBoot, topic, false)
}

// finishAndCountAtLeastOnce is finishAndCount for a case that kills the
// broker of the group's coordinator: a commit in flight then fails and the
// group may deliver the records since its last successful commit again,
// which Kafka allows (at least once) and which is counted apart. A record
// delivered again after a successful commit, or twice in the target log,
// still fails t.
func finishAndCountAtLeastOnce(t *testing.T, ctx context.Context, prod *seqProducer, cons *seqConsumer, targetBoot, topic string) deliveryCounts {
	t.Helper()
	return finish(t, ctx, prod, cons, targetBoot, topic, true)
}

func finish(t *testing.T, ctx context.Context, prod *seqProducer, cons *seqConsumer, targetBoot, topic string, atLeastOnce bool) deliveryCounts {
	t.Helper()
	c := deliveryCounts{atLeastOnce: atLeastOnce}
	c.sent = prod.stop()
	c.prodErrs = prod.errors()
	waitFor(t, ctx, fmt.Sprintf("every one of %d records consumed", c.sent), func() bool { return cons.count() >= c.sent })
	time.Sleep(time.Second) // anything delivered twice arrives now
	var uncommitted map[int]bool
	if atLeastOnce {
		uncommitted = cons.uncommittedSeqs()
	}
	got, afterCommit := cons.stop()
	c.deliveries, c.afterCommit = len(got), afterCommit
	c.lost, c.dup, c.reordered, c.retried = countRedeliveries(got, c.sent, uncommitted)
	if c.dup != 0 {
		logDuplicates(t, got)
	}
	waitFor(t, ctx, "the target to hold every record", func() bool { return targetTotal(ctx, targetBoot, topic) >= int64(c.sent) })
	cl, err := kgo.NewClient(kgo.SeedBrokers(targetBoot))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("target end offsets of %s: %v", topic, err)
	}
	c.tlost, c.tdup, c.treordered = countDeliveries(readAll(t, ctx, targetBoot, topic, ends), c.sent)
	t.Logf("%s", c)
	if !c.clean() {
		t.Errorf("want 0 lost, 0 duplicated, 0 reordered everywhere: %s", c)
	}
	return c
}

// TestFaultTargetLinkCut: the link between the proxy and the target is
// partitioned (toxiproxy holds every byte both ways) for 10 s while the
// mirror copies a producer's load, then cut (connections refused) for 10 s
// while a topic flip and a group flip are asked. The proxy keeps serving
// from the source; each flip completes or is reverted, never left half;
// after the heal the mirror catches up and both flips complete; the target
// log equals what was produced and the group consumed every record once.
func TestFaultTargetLinkCut(t *testing.T) {
	src, dst := cluster(t), startRelayedTarget(t, "faults-link-target")
	topic, group := uniqueName(t, "topic"), uniqueName(t, "group")
	createTopicOn(t, src.Bootstrap(), topic, 3)
	proxy := proxytest.Start(t, "--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Relay,
		"--topics", topic, "--data-dir", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	prod := newSeqProducer(t, ctx, proxy.Addr, topic, 0)
	defer prod.stop()
	cons := newSeqConsumer(t, ctx, proxy.Addr, topic, group)
	defer cons.stop()
	waitFor(t, ctx, "the mirror to map the topic (kmigrate verify passes)", func() bool {
		_, err := proxy.CLI(t, "verify", "--topic", topic, "--records", "0")
		return err == nil && cons.count() > 1000
	})

	// 1. Partition while mirroring under load.
	rowA := faultrow.New(t, "proxy ↔ target link partitioned 10 s (toxiproxy holds every byte) while mirroring a producer's load")
	acked, consumed := prod.acked(), cons.count()
	addToxic(t, dst.link, "partition", "timeout", `{"timeout":0}`)
	time.Sleep(10 * time.Second)
	duringAcks, duringCons := prod.acked()-acked, cons.count()-consumed
	atHeal := targetTotal(ctx, src.Bootstrap(), topic)
	removeToxic(t, dst.link, "partition")
	healed := time.Now()
	t.Logf("partitioned 10 s: %d records acknowledged, %d consumed meanwhile", duringAcks, duringCons)
	if duringAcks < 1000 || duringCons < 1000 {
		t.Fatalf("while the target was partitioned the proxy acknowledged %d records and delivered %d: it must keep serving from the source", duringAcks, duringCons)
	}
	waitFor(t, ctx, "the mirror to catch up after the heal", func() bool { return targetTotal(ctx, dst.Bootstrap(), topic) >= atHeal })
	caughtUp := time.Since(healed)
	rowA.Recovered(caughtUp, "mirror lag back to 0 (everything produced before the heal copied)")

	// 2. Link down (connections refused) while the flips are asked.
	rowB := faultrow.New(t, "proxy ↔ target link down 10 s while a topic flip and a group flip are asked")
	dst.link.Stop()
	cutAt := time.Now()
	type result struct {
		out  string
		err  error
		took time.Duration
	}
	groupDone := make(chan result, 1) // the goroutine ends when its command does
	go func() {
		out, err := proxy.CLI(t, "cutover", "group", group)
		groupDone <- result{out, err, time.Since(cutAt)}
	}()
	flipStart := time.Now()
	out, err := proxy.CLI(t, "cutover", "topic", topic)
	flipTook := time.Since(flipStart)
	topicOutcome := settledFlip(t, "topic flip asked with the target link down", err, out, func() string { return topicPrimary(proxy.Admin, topic) })
	t.Logf("topic flip with the link down: %s after %s: %v %s", topicOutcome, flipTook.Round(time.Millisecond), err, strings.TrimSpace(out))
	if wait := 10*time.Second - time.Since(cutAt); wait > 0 {
		time.Sleep(wait)
	}
	atHeal = targetTotal(ctx, src.Bootstrap(), topic)
	if err := dst.link.Start(); err != nil {
		t.Fatalf("heal the link: %v", err)
	}
	healed = time.Now()
	var g result
	select {
	case g = <-groupDone:
	case <-ctx.Done():
		t.Fatal("the group flip asked during the cut never returned")
	}
	groupOutcome := settledFlip(t, "group flip asked with the target link down", g.err, g.out, func() string { return groupPhase(proxy.Admin, group) }) + " after " + faultrow.FormatDuration(g.took)
	t.Logf("group flip asked with the link down: %s: %v %s", groupOutcome, g.err, strings.TrimSpace(g.out))
	waitFor(t, ctx, "the mirror to catch up after the heal", func() bool { return targetTotal(ctx, dst.Bootstrap(), topic) >= atHeal })
	caughtUp = time.Since(healed)
	// Whatever was refused now completes.
	for _, step := range [][]string{{"cutover", "group", group}, {"cutover", "topic", topic}} {
		if out, err := proxy.CLI(t, step...); err != nil {
			t.Fatalf("%v after the heal: %v\n%s", step, err, out)
		}
	}
	flipped := time.Since(healed)
	if p, g := topicPrimary(proxy.Admin, topic), groupPhase(proxy.Admin, group); p != "target" || g != "target" {
		t.Fatalf("after the heal and the flips: topic %s, group %s; want both on the target", p, g)
	}
	n, p := cons.count(), prod.acked()
	waitFor(t, ctx, "produce and consume after the flips", func() bool { return cons.count() > n+1000 && prod.acked() > p+1000 })
	rowB.Recovered(caughtUp, "mirror lag back to 0 after the heal")
	rowB.Recovered(flipped, "both flips done after the heal")
	counts := finishAndCount(t, ctx, prod, cons, dst.Bootstrap(), topic)
	rowA.Outcome("proxy kept serving (%d acknowledged, %d consumed during the partition); see the next row for the counts", duringAcks, duringCons)
	rowB.Outcome("topic flip %s (%s); group flip %s; both completed after the heal; %s", topicOutcome, faultrow.FormatDuration(flipTook), groupOutcome, counts)
}

// TestFaultSlowTarget: 200 ms of latency each way on the link between the
// proxy and the target while a group flip and a topic flip run: both
// complete, nothing is lost, duplicated or reordered; the flips' durations
// and the producer's pause are reported.
func TestFaultSlowTarget(t *testing.T) {
	row := faultrow.New(t, "slow target: 200 ms latency each way on the proxy ↔ target link during a group flip and a topic flip")
	src, dst := cluster(t), startRelayedTarget(t, "faults-slow-target")
	topic, group := uniqueName(t, "topic"), uniqueName(t, "group")
	createTopicOn(t, src.Bootstrap(), topic, 3)
	proxy := proxytest.Start(t, "--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Relay,
		"--topics", topic, "--data-dir", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	prod := newSeqProducer(t, ctx, proxy.Addr, topic, 0)
	defer prod.stop()
	cons := newSeqConsumer(t, ctx, proxy.Addr, topic, group)
	defer cons.stop()
	waitFor(t, ctx, "the mirror to map the topic (kmigrate verify passes)", func() bool {
		_, err := proxy.CLI(t, "verify", "--topic", topic, "--records", "0")
		return err == nil && cons.count() > 1000
	})
	addToxic(t, dst.link, "slow", "latency", `{"latency":200}`)
	time.Sleep(2 * time.Second) // the mirror now writes through the slow link
	var report []string
	for _, step := range [][]string{{"cutover", "group", group}, {"cutover", "topic", topic}} {
		start := time.Now()
		out, err := proxy.CLI(t, step...)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("%v with a slow target: %v\n%s", step, err, out)
		}
		n, p := cons.count(), prod.acked()
		waitFor(t, ctx, "produce and consume after "+strings.Join(step, " "), func() bool { return cons.count() > n+500 && prod.acked() > p+500 })
		prodPause, _ := prod.pauseAround(start, took)
		consPause := pauseAround(cons.snapshot(), start, took)
		t.Logf("%s with 200 ms latency: took %s; producer pause %s, consumer pause %s: %s", strings.Join(step, " "), took.Round(time.Millisecond),
			prodPause.Round(time.Millisecond), consPause.Round(time.Millisecond), strings.TrimSpace(out))
		report = append(report, fmt.Sprintf("%s flip %s (producer pause %s, consumer pause %s)", step[1], faultrow.FormatDuration(took),
			faultrow.FormatDuration(prodPause), faultrow.FormatDuration(consPause)))
		row.Recovered(max(prodPause, consPause), step[1]+" flip: longest pause")
	}
	if p, g := topicPrimary(proxy.Admin, topic), groupPhase(proxy.Admin, group); p != "target" || g != "target" {
		t.Fatalf("after the flips: topic %s, group %s; want both on the target", p, g)
	}
	removeToxic(t, dst.link, "slow")
	counts := finishAndCount(t, ctx, prod, cons, dst.Bootstrap(), topic)
	row.Outcome("both completed: %s; %s", strings.Join(report, "; "), counts)
}

// killedGroupFlip is what happened when a node was killed mid group flip.
type killedGroupFlip struct {
	phaseAtKill string        // draining or fenced
	first       string        // how the interrupted command ended
	outcome     string        // completed / reverted, after the next command
	nextTook    time.Duration // the next command's duration
	settled     time.Duration // kill → the next command's end
	pause       time.Duration // the group's longest pause from the kill to 2 s after settled
}

// killDuringGroupFlip asks flipOn to move group to the target, kills victim
// (kill -9) as soon as observer's admin API shows the group draining, then
// asks next to move it again: the group must end moved or not, never half,
// and consume again.
func killDuringGroupFlip(t *testing.T, ctx context.Context, flipOn, victim, next *proxytest.Process, observer string, cons *seqConsumer, group string) killedGroupFlip {
	t.Helper()
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1) // the goroutine ends when its command does
	go func() {
		out, err := flipOn.CLI(t, "cutover", "group", group)
		done <- result{out, err}
	}()
	var k killedGroupFlip
	waitFor(t, ctx, "the group flip to start draining", func() bool { k.phaseAtKill = groupPhase(observer, group); return k.phaseAtKill != "source" })
	killed := time.Now()
	victim.Kill9()
	if k.phaseAtKill != "draining" && k.phaseAtKill != "fenced" {
		t.Fatalf("the group was %q when the node was killed: the kill missed the flip's drain", k.phaseAtKill)
	}
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("the interrupted group flip command never returned")
	}
	k.first = fmt.Sprintf("%q after the kill", groupPhase(next.Admin, group))
	if r.err != nil {
		lines := strings.Split(strings.TrimSpace(r.out), "\n")
		msg := lines[len(lines)-1] // the error comes after the progress lines
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		k.first = "failed (" + msg + "), " + k.first
	} else {
		k.first = "returned, " + k.first
	}
	t.Logf("killed with the group %s; the interrupted command %s", k.phaseAtKill, k.first)
	start := time.Now()
	out, err := next.CLI(t, "cutover", "group", group)
	k.nextTook, k.settled = time.Since(start), time.Since(killed)
	k.outcome = settledFlip(t, "the command after the kill", err, out, func() string { return groupPhase(next.Admin, group) })
	t.Logf("the next command: %s after %s: %s", k.outcome, k.nextTook.Round(time.Millisecond), strings.TrimSpace(out))
	n := cons.count()
	waitFor(t, ctx, "the group to consume after the next command", func() bool { return cons.count() > n+100 })
	time.Sleep(2 * time.Second)
	k.pause = pauseAround(cons.snapshot(), killed, k.settled)
	return k
}

// TestFaultGroupFlipSidecarKilled: a sidecar (non-voter) running a group
// flip is killed (kill -9) while the group drains; the group's clients talk
// to the other node, which holds their JoinGroups. The next command, asked
// of the survivor, completes the flip (or reverts it); the group consumes
// every record exactly once.
func TestFaultGroupFlipSidecarKilled(t *testing.T) {
	row := faultrow.New(t, "sidecar running a group flip killed (kill -9) while the group drains (2 nodes; the group's clients on the other)")
	src, dst := cluster(t), target.Get(t)
	topic, group := uniqueName(t, "topic"), uniqueName(t, "group")
	createTopicOn(t, src.Bootstrap(), topic, 3)
	common := []string{"--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(), "--topics", topic}
	v1 := proxytest.Start(t, append(common, "--data-dir", t.TempDir(), "--raft-node-id", "v1")...)
	s1 := proxytest.Start(t, append(common, "--data-dir", t.TempDir(), "--raft-node-id", "s1", "--join", v1.Admin)...)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	waitFor(t, ctx, "both nodes in the control plane", func() bool {
		out, err := v1.CLI(t, "status", "--json")
		return err == nil && strings.Count(out, `"raft_addr"`) >= 2
	})
	prod := newSeqProducer(t, ctx, v1.Addr, topic, 0)
	defer prod.stop()
	// Java's default heartbeat interval (3 s): the drain lasts until the
	// member's next heartbeat, the window the kill aims at.
	cons := newSeqConsumer(t, ctx, v1.Addr, topic, group, kgo.HeartbeatInterval(3*time.Second))
	defer cons.stop()
	waitFor(t, ctx, "the mirror to map the topic (kmigrate verify passes)", func() bool {
		_, err := v1.CLI(t, "verify", "--topic", topic, "--records", "0")
		return err == nil && cons.count() > 1000
	})
	k := killDuringGroupFlip(t, ctx, s1, s1, v1, v1.Admin, cons, group)
	row.Recovered(k.settled, "kill → flip settled by the next command")
	row.Recovered(k.pause, "the group's longest pause in deliveries")
	n, p := cons.count(), prod.acked()
	waitFor(t, ctx, "produce and consume after the kill", func() bool { return cons.count() > n+1000 && prod.acked() > p+1000 })
	counts := finishAndCount(t, ctx, prod, cons, dst.Bootstrap(), topic)
	row.Outcome("killed while %s; the interrupted command %s; the next command (on the survivor) %s in %s; %s",
		k.phaseAtKill, k.first, k.outcome, faultrow.FormatDuration(k.nextTook), counts)
}

// TestFaultGroupFlipLeaderKilled: three voters; the group's clients talk to
// one follower, the flip is asked of the other, and the raft leader is
// killed (kill -9) while the group drains. A new leader is elected; the
// interrupted flip completes or reverts, the next command completes or
// reverts it, never half; the group consumes every record exactly once.
func TestFaultGroupFlipLeaderKilled(t *testing.T) {
	row := faultrow.New(t, "raft leader killed (kill -9) while a group flip asked of a follower drains (3 voters; clients on the other follower)")
	src, dst := cluster(t), target.Get(t)
	topic, group := uniqueName(t, "topic"), uniqueName(t, "group")
	createTopicOn(t, src.Bootstrap(), topic, 3)
	common := []string{"--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(), "--topics", topic, "--raft-voter"}
	nodes := map[string]*proxytest.Process{}
	nodes["v1"] = proxytest.Start(t, append(common, "--data-dir", t.TempDir(), "--raft-node-id", "v1")...)
	for _, id := range []string{"v2", "v3"} {
		nodes[id] = proxytest.Start(t, append(common, "--data-dir", t.TempDir(), "--raft-node-id", id, "--join", nodes["v1"].Admin)...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	leaderOf := func(admin string) string {
		var st struct {
			Leader string
			Nodes  []struct{ Voter bool }
		}
		if getAdminJSON(admin, "/v1/nodes", &st) != nil {
			return ""
		}
		voters := 0
		for _, n := range st.Nodes {
			if n.Voter {
				voters++
			}
		}
		if voters < 3 {
			return ""
		}
		return st.Leader
	}
	var leader string
	waitFor(t, ctx, "three voters and a leader", func() bool { leader = leaderOf(nodes["v1"].Admin); return nodes[leader] != nil })
	var followers []string
	for _, id := range []string{"v1", "v2", "v3"} {
		if id != leader {
			followers = append(followers, id)
		}
	}
	clients, flipper := nodes[followers[0]], nodes[followers[1]]
	t.Logf("leader %s; clients on %s; the flip asked of %s", leader, followers[0], followers[1])
	prod := newSeqProducer(t, ctx, clients.Addr, topic, 0)
	defer prod.stop()
	cons := newSeqConsumer(t, ctx, clients.Addr, topic, group, kgo.HeartbeatInterval(3*time.Second))
	defer cons.stop()
	waitFor(t, ctx, "the mirror to map the topic (kmigrate verify passes)", func() bool {
		_, err := clients.CLI(t, "verify", "--topic", topic, "--records", "0")
		return err == nil && cons.count() > 1000
	})
	k := killDuringGroupFlip(t, ctx, flipper, nodes[leader], flipper, clients.Admin, cons, group)
	waitFor(t, ctx, "a new leader", func() bool { l := leaderOf(clients.Admin); return l != "" && l != leader })
	row.Recovered(k.settled, "kill → flip settled by the next command")
	row.Recovered(k.pause, "the group's longest pause in deliveries")
	n, p := cons.count(), prod.acked()
	waitFor(t, ctx, "produce and consume after the kill", func() bool { return cons.count() > n+1000 && prod.acked() > p+1000 })
	counts := finishAndCount(t, ctx, prod, cons, dst.Bootstrap(), topic)
	row.Outcome("killed while %s; the interrupted command %s; the next command %s in %s; %s",
		k.phaseAtKill, k.first, k.outcome, faultrow.FormatDuration(k.nextTook), counts)
}

// TestFaultSlowClient: a consumer reads 23 MiB of history through a
// toxiproxy link limited to 1 MiB/s with 50 ms latency (proxy → client)
// while a producer and a group consumer run at full speed through the same
// proxy. The fast clients are unaffected (no pause over 3 s, every record
// once, in order), the slow one gets every record exactly once, and the
// proxy's peak RSS stays within its memory budget.
func TestFaultSlowClient(t *testing.T) {
	row := faultrow.New(t, "slow client: a consumer behind a 1 MiB/s, 50 ms link reads 23 MiB while other clients run at full speed (one proxy)")
	c := cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bulky, topic, group := uniqueName(t, "bulky"), uniqueName(t, "topic"), uniqueName(t, "group")
	const partitions, history, size = 3, 6000, 4 << 10
	createTopicOn(t, c.Bootstrap(), bulky, partitions)
	createTopicOn(t, c.Bootstrap(), topic, partitions)
	direct, err := kgo.NewClient(kgo.SeedBrokers(c.Bootstrap()), kgo.DefaultProduceTopic(bulky), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	var recs []*kgo.Record
	for i := 0; i < history; i++ {
		v := make([]byte, size)
		rand.Read(v) // incompressible
		copy(v, fmt.Sprintf("%08d", i))
		recs = append(recs, &kgo.Record{Key: []byte(strconv.Itoa(i % 9)), Value: v})
	}
	if err := direct.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("write the slow client's history: %v", err)
	}

	const budget, connBudget = 256 << 20, 16 << 20
	p := proxytest.Start(t, "--source-bootstrap", c.Bootstrap(), "--data-dir", t.TempDir(),
		"--max-buffer-bytes", strconv.Itoa(budget), "--max-conn-buffer-bytes", strconv.Itoa(connBudget))
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	link := toxiproxy.NewProxy(srv, "slow-client", proxytest.FreeAddr(t), p.Addr)
	if err := link.Start(); err != nil {
		t.Fatalf("toxiproxy → %s: %v", p.Addr, err)
	}
	defer link.Stop()
	for _, js := range []string{
		`{"name":"bw","type":"bandwidth","stream":"downstream","toxicity":1,"attributes":{"rate":1024}}`,
		`{"name":"lat","type":"latency","stream":"downstream","toxicity":1,"attributes":{"latency":50}}`,
	} {
		if _, err := link.Toxics.AddToxicJson(strings.NewReader(js)); err != nil {
			t.Fatalf("add toxic %s: %v", js, err)
		}
	}
	rssBefore := procStatusKB(t, p.Pid(), "VmRSS")

	prod := newSeqProducer(t, ctx, p.Addr, topic, 0)
	defer prod.stop()
	cons := newSeqConsumer(t, ctx, p.Addr, topic, group)
	defer cons.stop()
	waitFor(t, ctx, "the fast clients to run", func() bool { return cons.count() > 1000 })

	// The slow consumer: every connection, whatever address Metadata
	// names, goes through the slow link.
	slow, err := kgo.NewClient(kgo.SeedBrokers(link.Listen), kgo.ConsumeTopics(bulky), kgo.ConsumerGroup(group+"-slow"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.Dialer(func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, link.Listen)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slowStart := time.Now()
	seen := make([]int, history)
	next := map[int32]int{} // per partition: the last index seen, to check order
	var slowGot, reordered int
	for slowGot < history {
		fs := slow.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("the slow consumer got %d of %d records before %v", slowGot, history, ctx.Err())
		}
		fs.EachError(func(tp string, p int32, err error) { t.Logf("slow consumer: fetch %s/%d: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			i, err := strconv.Atoi(string(r.Value[:8]))
			if err != nil || i < 0 || i >= history || len(r.Value) != size {
				t.Fatalf("slow consumer: record %s/%d@%d is not one of the history's", r.Topic, r.Partition, r.Offset)
			}
			if last, ok := next[r.Partition]; ok && i <= last {
				reordered++
			}
			next[r.Partition] = i
			seen[i]++
			slowGot++
		})
	}
	slowTook := time.Since(slowStart)
	time.Sleep(time.Second) // anything delivered twice would come now
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	extra := len(slow.PollFetches(pctx).Records())
	pcancel()
	var lostSlow, dupSlow int
	for _, n := range seen {
		switch {
		case n == 0:
			lostSlow++
		case n > 1:
			dupSlow += n - 1
		}
	}
	dupSlow += extra
	hwm := procStatusKB(t, p.Pid(), "VmHWM")
	fastProdPause, _ := prod.pauseAround(slowStart, slowTook)
	fastConsPause := pauseAround(cons.snapshot(), slowStart, slowTook)
	t.Logf("slow consumer: %d MiB in %s (%.2f MiB/s): lost %d, duplicated %d, reordered %d; fast clients meanwhile: longest producer pause %s, consumer pause %s; proxy RSS %d MiB before, peak %d MiB",
		history*size>>20, slowTook.Round(time.Millisecond), float64(history*size)/(1<<20)/slowTook.Seconds(), lostSlow, dupSlow, reordered,
		fastProdPause.Round(time.Millisecond), fastConsPause.Round(time.Millisecond), rssBefore>>10, hwm>>10)

	sent := prod.stop()
	waitFor(t, ctx, "every fast record consumed", func() bool { return cons.count() >= sent })
	time.Sleep(time.Second)
	got, afterCommit := cons.stop()
	lost, dup, reord := countDeliveries(got, sent)
	t.Logf("fast clients: %d records: lost %d, duplicated %d, reordered %d, again after a commit %d; produce errors %d", sent, lost, dup, reord, afterCommit, prod.errors())
	row.Recovered(slowTook, "the slow consumer's read of the 23 MiB")
	row.Outcome("slow consumer: %d records, %d lost, %d duplicated, %d reordered; fast clients: %d records, %d lost, %d duplicated, %d reordered, longest pause %s (producer) / %s (consumer); proxy peak RSS %d MiB (budget %d MiB, bound asserted 200 MiB)",
		history, lostSlow, dupSlow, reordered, sent, lost, dup, reord, faultrow.FormatDuration(fastProdPause), faultrow.FormatDuration(fastConsPause), hwm>>10, budget>>20)
	if lostSlow != 0 || dupSlow != 0 || reordered != 0 {
		t.Errorf("slow consumer: lost %d, duplicated %d, reordered %d: want 0", lostSlow, dupSlow, reordered)
	}
	if lost != 0 || dup != 0 || reord != 0 || afterCommit != 0 || prod.errors() != 0 {
		t.Errorf("fast clients: lost %d, duplicated %d, reordered %d, again after a commit %d, produce errors %d: want 0", lost, dup, reord, afterCommit, prod.errors())
	}
	if fastProdPause > 3*time.Second || fastConsPause > 3*time.Second {
		t.Errorf("fast clients paused %s (producer) / %s (consumer) while the slow one read: want ≤ 3 s", fastProdPause, fastConsPause)
	}
	if hwm > 200<<10 {
		t.Errorf("proxy peak RSS %d MiB with a slow client: want ≤ 200 MiB", hwm>>10)
	}
}
