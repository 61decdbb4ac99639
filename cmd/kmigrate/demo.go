package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/offsetsync"
)

// runDemo is `kmigrate demo`: two clusters (embedded by default), a kmigrate
// node in front of the source, a producer and a consumer group through it;
// the group is moved to the target, back, and to the target again while
// records flow, and the run ends with a verdict counted record by record.
func runDemo(args []string) error {
	fs := flag.NewFlagSet("kmigrate demo", flag.ContinueOnError)
	source := fs.String("source", "", "bootstrap of a real source cluster (default: an embedded one)")
	target := fs.String("target", "", "bootstrap of a real target cluster (default: an embedded one)")
	traffic := fs.Duration("duration", 20*time.Second, "how long the producer writes")
	rate := fs.Int("rate", 2000, "records per second produced")
	partitions := fs.Int("partitions", 6, "partitions of the demo topic")
	verbose := fs.Bool("v", false, "show the node's logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*source == "") != (*target == "") {
		return errors.New("give both --source and --target, or neither for the embedded clusters")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	say := func(format string, a ...any) { fmt.Printf(format+"\n", a...) }

	if *source == "" {
		src, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return fmt.Errorf("embedded source cluster: %w", err)
		}
		defer src.Close()
		dst, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			return fmt.Errorf("embedded target cluster: %w", err)
		}
		defer dst.Close()
		*source, *target = src.ListenAddrs()[0], dst.ListenAddrs()[0]
		say("embedded clusters (franz-go kfake): source %s, target %s", *source, *target)
	}
	topic, group := fmt.Sprintf("demo-orders-%d", time.Now().Unix()), "demo-app"
	if err := createDemoTopic(ctx, *source, topic, int32(*partitions)); err != nil {
		return err
	}

	// One kmigrate node, in process, driven through its real admin API.
	dataDir, err := os.MkdirTemp("", "kmigrate-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)
	listen, admin, raftAddr := freePort(), freePort(), freePort()
	nodeCtx, stopNode := context.WithCancel(ctx)
	nodeErr := make(chan error, 1)
	ready := make(chan struct{})
	if !*verbose {
		// The node logs through slog.Default; keep the demo's screen for
		// its own progress.
		slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
	}
	go func() {
		nodeErr <- serveProxy(nodeCtx, []string{
			"--source-bootstrap", *source, "--target-bootstrap", *target, "--topics", topic,
			"--listen", listen, "--admin-listen", admin, "--raft-addr", raftAddr, "--data-dir", dataDir,
			"--log-level", map[bool]string{true: "debug", false: "error"}[*verbose],
		}, func() { close(ready) })
	}()
	select {
	case <-ready:
	case err := <-nodeErr:
		stopNode()
		return fmt.Errorf("kmigrate node: %w", err)
	case <-time.After(60 * time.Second):
		stopNode()
		<-nodeErr
		return errors.New("kmigrate node did not start within 60 s")
	}
	defer func() { stopNode(); <-nodeErr }()
	say("kmigrate proxy at %s (admin http://%s), mirroring %s to the target", listen, admin, topic)

	w := newDemoWorkload(listen, topic, group)
	if err := w.start(ctx, *rate); err != nil {
		return err
	}
	defer w.close()

	// The group moves, comes back and moves again; then the topic's
	// producers do the same, evenly spread over the traffic.
	type flip struct {
		what    string // "group" or "topic"
		verb    string
		at      time.Time
		took    time.Duration
		report  offsetsync.Report
		topic   offsetsync.TopicReport
		failure string
	}
	plan := []struct{ what, verb string }{{"group", "cutover"}, {"group", "rollback"}, {"group", "cutover"},
		{"topic", "cutover"}, {"topic", "rollback"}, {"topic", "cutover"}}
	var flips []flip
	start := time.Now()
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	next := 0
	lastConsumed, lastTick := 0, start
	for time.Since(start) < *traffic {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
		}
		elapsed := time.Since(start)
		if next < len(plan) && elapsed >= time.Duration(next+1)**traffic/time.Duration(len(plan)+1) {
			f := flip{what: plan[next].what, verb: plan[next].verb, at: time.Now()}
			if f.what == "group" {
				f.report, err = moveGroup(admin, group, f.verb)
			} else {
				f.topic, err = moveTopic(admin, topic, f.verb)
			}
			f.took = time.Since(f.at)
			if err != nil {
				f.failure = err.Error()
			}
			flips = append(flips, f)
			if f.what == "group" {
				say("  %-8s group %s: %s → %s in %s (drain %s, %d/%d members rejoined)%s", f.verb, group, f.report.From, f.report.To,
					f.took.Round(time.Millisecond), f.report.Drain.Round(time.Millisecond), f.report.Rejoined, f.report.Members, failureSuffix(f.failure))
			} else {
				say("  %-8s topic %s: producers %s → %s in %s (produces held %s)%s", f.verb, topic, f.topic.From, f.topic.To,
					f.took.Round(time.Millisecond), f.topic.Hold.Round(time.Millisecond), failureSuffix(f.failure))
			}
			next++
		}
		produced, consumed := w.counts()
		mirrored := endOffsets(ctx, *target, topic)
		rate := float64(consumed-lastConsumed) / time.Since(lastTick).Seconds()
		lastConsumed, lastTick = consumed, time.Now()
		say("t=%2ds  group on %-6s  producers on %-6s  produced %6d  consumed %6d (%5.0f/s)  in target %6d  (lag %d)", int(elapsed.Seconds()),
			phaseOf(admin, group), primaryOf(admin, topic), produced, consumed, rate, mirrored, max(0, int64(produced)-mirrored))
	}

	sent := w.stopProducing()
	say("producer stopped after %d records; waiting for the group to catch up", sent)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, consumed := w.counts(); consumed >= sent || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second) // a redelivery would arrive now
	v := w.verdict(sent)

	// Where the group ended: its commit on the target must be the target's end.
	resumeOK := true
	if final := phaseOf(admin, group); final == offsetsync.PhaseTarget {
		resumeOK = checkTargetCommit(ctx, *target, topic, group)
	}

	say("")
	say("verdict")
	say("  records produced            %d", sent)
	say("  records consumed            %d", v.distinct)
	say("  lost                        %d", v.lost)
	say("  delivered again after commit %d", v.afterCommit)
	say("  redelivered beyond commit   %d", v.beyondCommit)
	say("  reordered                   %d", v.reordered)
	for _, f := range flips {
		extra := ""
		if f.what == "topic" {
			extra = fmt.Sprintf(", produces held %s", f.topic.Hold.Round(time.Millisecond))
		}
		say("  %-8s %-5s command %-8s consumer pause %s%s%s", f.verb, f.what, f.took.Round(time.Millisecond),
			w.pauseAround(f.at, f.took).Round(time.Millisecond), extra, failureSuffix(f.failure))
	}
	say("  a consumer pointed straight at the target resumes at the group's last commit: %v", resumeOK)
	failed := v.lost != 0 || v.afterCommit != 0 || v.reordered != 0 || !resumeOK
	for _, f := range flips {
		failed = failed || f.failure != ""
	}
	if failed {
		say("  FAIL")
		return errors.New("the demo's verdict failed")
	}
	say("  PASS: nothing lost, nothing committed delivered twice, nothing reordered")
	return nil
}

func failureSuffix(failure string) string {
	if failure == "" {
		return ""
	}
	return "  FAILED: " + failure
}

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(fmt.Sprintf("no free loopback port: %v", err))
	}
	defer ln.Close()
	return ln.Addr().String()
}

func createDemoTopic(ctx context.Context, bootstrap, topic string, partitions int32) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create demo topic %s: %w", topic, err)
	}
	return nil
}

// moveGroup calls the node's admin API, as `kmigrate cutover group` does.
func moveGroup(admin, group, verb string) (offsetsync.Report, error) {
	rep, _, err := postMove[offsetsync.Report](admin, "", fmt.Sprintf("/v1/groups/%s/%s", group, verb))
	return rep, err
}

// moveTopic calls the node's admin API, as `kmigrate cutover topic` does.
func moveTopic(admin, topic, verb string) (offsetsync.TopicReport, error) {
	rep, _, err := postMove[offsetsync.TopicReport](admin, "", fmt.Sprintf("/v1/topics/%s/%s", topic, verb))
	return rep, err
}

func primaryOf(admin, topic string) string {
	return routeFieldOr(admin, "/v1/topics/"+topic, "primary")
}
func phaseOf(admin, group string) string { return routeFieldOr(admin, "/v1/groups/"+group, "phase") }

func routeFieldOr(admin, path, field string) string {
	if v, ok := routeField(admin, "", path, field); ok {
		return v
	}
	return "?"
}

func endOffsets(ctx context.Context, bootstrap, topic string) int64 {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	if err != nil {
		return -1
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return -1
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// checkTargetCommit reports whether the group's commit on the target equals
// the target's end offsets, once the mirror has caught up.
func checkTargetCommit(ctx context.Context, bootstrap, topic, group string) bool {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	if err != nil {
		return false
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		ends, err1 := adm.ListEndOffsets(ctx, topic)
		offs, err2 := adm.FetchOffsets(ctx, group)
		if err1 == nil && err2 == nil {
			ok := true
			ends.Each(func(o kadm.ListedOffset) {
				c, found := offs.Lookup(topic, o.Partition)
				ok = ok && found && c.At == o.Offset
			})
			if ok {
				return true
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// demoWorkload is a producer of sequence numbers and a consumer group that
// commits after every poll, both through the proxy.
type demoWorkload struct {
	bootstrap, topic, group string
	prod, cons              *kgo.Client
	stopProd, stopCons      chan struct{}
	prodDone, consDone      chan struct{}

	mu          sync.Mutex
	sent        int
	deliveries  []demoDelivery
	committed   map[int32]int64
	afterCommit int
}

type demoDelivery struct {
	partition int32
	offset    int64
	seq       int
	at        time.Time
}

func newDemoWorkload(bootstrap, topic, group string) *demoWorkload {
	return &demoWorkload{bootstrap: bootstrap, topic: topic, group: group, committed: map[int32]int64{},
		stopProd: make(chan struct{}), stopCons: make(chan struct{}), prodDone: make(chan struct{}), consDone: make(chan struct{})}
}

func (w *demoWorkload) start(ctx context.Context, rate int) error {
	var err error
	if w.prod, err = kgo.NewClient(kgo.SeedBrokers(w.bootstrap), kgo.DefaultProduceTopic(w.topic)); err != nil {
		return err
	}
	if w.cons, err = kgo.NewClient(kgo.SeedBrokers(w.bootstrap), kgo.ConsumeTopics(w.topic), kgo.ConsumerGroup(w.group),
		kgo.Balancers(kgo.RangeBalancer()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.HeartbeatInterval(500*time.Millisecond), kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll()); err != nil {
		return err
	}
	go w.produce(ctx, rate)
	go w.consume(ctx)
	return nil
}

func (w *demoWorkload) produce(ctx context.Context, rate int) {
	defer close(w.prodDone)
	start := time.Now()
	for i := 0; ; i++ {
		select {
		case <-w.stopProd:
			w.prod.Flush(ctx)
			return
		default:
		}
		if ahead := time.Duration(i)*time.Second/time.Duration(rate) - time.Since(start); ahead > 0 {
			time.Sleep(ahead)
		}
		r := &kgo.Record{Key: []byte(strconv.Itoa(i % 64)), Value: []byte(strconv.Itoa(i))}
		w.prod.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err == nil {
				w.mu.Lock()
				w.sent++
				w.mu.Unlock()
			}
		})
	}
}

func (w *demoWorkload) consume(ctx context.Context) {
	defer close(w.consDone)
	for {
		select {
		case <-w.stopCons:
			return
		default:
		}
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		fs := w.cons.PollFetches(pctx)
		cancel()
		now := time.Now()
		next := map[int32]int64{}
		w.mu.Lock()
		fs.EachRecord(func(r *kgo.Record) {
			seq, _ := strconv.Atoi(string(r.Value))
			w.deliveries = append(w.deliveries, demoDelivery{r.Partition, r.Offset, seq, now})
			if c, ok := w.committed[r.Partition]; ok && r.Offset < c {
				w.afterCommit++
			}
			next[r.Partition] = r.Offset + 1
		})
		w.mu.Unlock()
		if len(next) > 0 && w.cons.CommitUncommittedOffsets(ctx) == nil {
			w.mu.Lock()
			for p, o := range next {
				w.committed[p] = o
			}
			w.mu.Unlock()
		}
		w.cons.AllowRebalance()
	}
}

func (w *demoWorkload) counts() (produced, consumed int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := make(map[int]bool, len(w.deliveries))
	for _, d := range w.deliveries {
		seen[d.seq] = true
	}
	return w.sent, len(seen)
}

func (w *demoWorkload) stopProducing() int {
	close(w.stopProd)
	<-w.prodDone
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sent
}

func (w *demoWorkload) close() {
	select {
	case <-w.stopProd:
	default:
		close(w.stopProd)
		<-w.prodDone
	}
	close(w.stopCons)
	<-w.consDone
	w.prod.Close()
	w.cons.Close()
}

type demoVerdict struct {
	distinct, lost, afterCommit, beyondCommit, reordered int
}

// verdict counts, over every record produced (sequence numbers 0..sent-1),
// what the group lost, delivered twice and reordered.
func (w *demoWorkload) verdict(sent int) demoVerdict {
	w.mu.Lock()
	defer w.mu.Unlock()
	var v demoVerdict
	seen := make(map[int]int)
	last := map[int32]int64{}
	for _, d := range w.deliveries {
		seen[d.seq]++
		if seen[d.seq] == 1 {
			if l, ok := last[d.partition]; ok && d.offset <= l {
				v.reordered++
			}
			last[d.partition] = d.offset
		}
	}
	dup := 0
	for i := 0; i < sent; i++ {
		switch n := seen[i]; {
		case n == 0:
			v.lost++
		case n > 1:
			dup += n - 1
		}
	}
	v.distinct = len(seen)
	v.afterCommit = w.afterCommit
	v.beyondCommit = dup - w.afterCommit
	return v
}

// pauseAround is the longest gap between deliveries from a flip's start to
// shortly after it ended.
func (w *demoWorkload) pauseAround(start time.Time, took time.Duration) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	times := make([]time.Time, 0, len(w.deliveries))
	for _, d := range w.deliveries {
		times = append(times, d.at)
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	var longest time.Duration
	var prev time.Time
	end := start.Add(took + 2*time.Second)
	for _, at := range times {
		if at.Before(start) {
			prev = at
			continue
		}
		if at.After(end) {
			break
		}
		if !prev.IsZero() {
			longest = max(longest, at.Sub(prev))
		}
		prev = at
	}
	return longest
}
