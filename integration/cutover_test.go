package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/kmigrate/kmigrate/internal/proxytest"
)

// target is the second cluster of the cutover tests; the shared interop
// broker is their source.
var target = kafkatest.NewShared(kafkatest.Options{Name: "cutover-target"})

// consumed is one record a consumer delivered, with when.
type consumed struct {
	partition int32
	offset    int64
	seq       int
	at        time.Time
}

// TestGroupCutoverFranzGo moves a live franz-go consumer group (eager range
// assignor, commit after every poll) to the target and back several times
// while a producer writes without pause, and asserts that nothing is lost,
// nothing committed is delivered again, and nothing is reordered.
//
// franz-go's default autocommit is at-least-once by design (its revoke
// commits up to the previous poll), so redelivery of the last uncommitted
// poll is the client's choice, not the cutover's: the test commits each poll
// before allowing a rebalance, and counts any redelivery beyond the last
// commit separately from redelivery after a commit, which must be 0.
func TestGroupCutoverFranzGo(t *testing.T) {
	testGroupCutoverFranzGo(t, "cutover-live", "cutover-franz")
}

// TestGroupCutoverFranzGoStatic is the same with a static member
// (group.instance.id, KIP-345): the source coordinator keeps a static
// member's id across rejoins, so the flips must not leave the old
// coordinator fencing the instance when the group comes back.
func TestGroupCutoverFranzGoStatic(t *testing.T) {
	testGroupCutoverFranzGo(t, uniqueName(t, "topic"), uniqueName(t, "group"), kgo.InstanceID("static-member-1"))
}

func testGroupCutoverFranzGo(t *testing.T, topic, group string, memberOpts ...kgo.Opt) {
	src, dst := cluster(t), target.Get(t)
	createTopicOn(t, src.Bootstrap(), topic, 3)
	proxy := proxytest.Start(t, "--log-level", "debug", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", topic, "--data-dir", t.TempDir())

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	// Producer: sequence numbers, straight to the source at ~1000/s.
	prodCl, err := kgo.NewClient(kgo.SeedBrokers(proxy.Addr), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer prodCl.Close()
	var produced sync.WaitGroup
	stopProducing := make(chan struct{})
	var sent int
	produced.Add(1)
	go func() {
		defer produced.Done()
		for i := 0; ; i++ {
			select {
			case <-stopProducing:
				sent = i
				return
			default:
			}
			if err := prodCl.ProduceSync(ctx, &kgo.Record{Key: []byte(strconv.Itoa(i % 9)), Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
				t.Errorf("produce %d: %v", i, err)
				sent = i
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()

	// Consumer group through the proxy.
	consCl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(proxy.Addr), kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group),
		kgo.Balancers(kgo.RangeBalancer()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.HeartbeatInterval(500 * time.Millisecond), kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll()}, memberOpts...)...)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []consumed
	committed := map[int32]int64{} // next offset per partition, as committed
	afterCommit := 0               // deliveries of records at offsets already committed
	stopConsuming := make(chan struct{})
	var consuming sync.WaitGroup
	consuming.Add(1)
	go func() {
		defer consuming.Done()
		for {
			select {
			case <-stopConsuming:
				return
			default:
			}
			pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
			fs := consCl.PollFetches(pctx)
			pcancel()
			now := time.Now()
			mu.Lock()
			next := map[int32]int64{}
			fs.EachRecord(func(r *kgo.Record) {
				seq, _ := strconv.Atoi(string(r.Value))
				got = append(got, consumed{r.Partition, r.Offset, seq, now})
				if c, ok := committed[r.Partition]; ok && r.Offset < c {
					afterCommit++
					if afterCommit <= 10 {
						t.Logf("delivered again after a commit: partition %d offset %d (committed %d) at %s", r.Partition, r.Offset, c, now.Format("15:04:05.000"))
					}
				}
				next[r.Partition] = r.Offset + 1
			})
			mu.Unlock()
			if len(next) > 0 {
				if err := consCl.CommitUncommittedOffsets(ctx); err == nil {
					mu.Lock()
					for p, o := range next {
						committed[p] = o
					}
					mu.Unlock()
				} else {
					t.Logf("commit failed at %s (its records may come again): %v", time.Now().Format("15:04:05.000"), err)
				}
			}
			consCl.AllowRebalance()
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	waitFor(t, ctx, "the group to consume", func() bool { return count() > 1000 })

	type flip struct {
		verb    string
		at      time.Time
		took    time.Duration
		outcome string
	}
	var flips []flip
	for i := 0; i < 3; i++ {
		for _, verb := range []string{"cutover", "rollback"} {
			if i == 2 && verb == "rollback" {
				break // end on the target
			}
			before := count()
			start := time.Now()
			out, err := proxy.CLI(t, verb, "group", group)
			if err != nil {
				t.Fatalf("%s #%d: %v\n%s", verb, i+1, err, out)
			}
			flips = append(flips, flip{verb, start, time.Since(start), out})
			t.Logf("%s started %s", verb, start.Format("15:04:05.000"))
			waitFor(t, ctx, "consumption after "+verb, func() bool { return count() > before+500 })
		}
	}
	again, err := proxy.CLI(t, "cutover", "group", group)
	if err != nil {
		t.Fatalf("a second cutover must succeed as a no-op: %v\n%s", err, again)
	}

	close(stopProducing)
	produced.Wait()
	waitFor(t, ctx, "every record consumed", func() bool { return count() >= sent })
	time.Sleep(time.Second) // anything delivered twice arrives now
	close(stopConsuming)
	consuming.Wait()
	if err := consCl.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	consCl.Close()

	// Exactly once, in order, per partition.
	mu.Lock()
	defer mu.Unlock()
	seen := make(map[int]int)
	lastOffset := map[int32]int64{}
	reordered := 0
	for _, c := range got {
		seen[c.seq]++
		// Order is judged on first deliveries: a redelivery restarts from
		// an earlier offset by definition.
		if seen[c.seq] == 1 {
			if last, ok := lastOffset[c.partition]; ok && c.offset <= last {
				reordered++
			}
			lastOffset[c.partition] = c.offset
		}
	}
	lost, dup := 0, 0
	for i := 0; i < sent; i++ {
		switch n := seen[i]; {
		case n == 0:
			lost++
		case n > 1:
			dup += n - 1
		}
	}
	for _, f := range flips {
		t.Logf("%s: command took %s, pause %s: %s", f.verb, f.took.Round(time.Millisecond), pauseAround(got, f.at, f.took).Round(time.Millisecond), f.outcome)
	}
	t.Logf("%d records produced, %d deliveries: lost %d, delivered again after a commit %d, redelivered beyond the last commit %d, reordered %d",
		sent, len(got), lost, afterCommit, dup-afterCommit, reordered)
	if lost != 0 || afterCommit != 0 || reordered != 0 {
		t.Fatalf("lost %d, delivered again after a commit %d, reordered %d: want all 0", lost, afterCommit, reordered)
	}
	if dup-afterCommit != 0 {
		t.Errorf("%d records redelivered beyond the last commit although every poll was committed before a rebalance", dup-afterCommit)
	}

	// The group ended on the target: its commit there is the target's end,
	// so a consumer pointed straight at the target resumes exactly there.
	dcl, err := kgo.NewClient(kgo.SeedBrokers(dst.Bootstrap()))
	if err != nil {
		t.Fatal(err)
	}
	defer dcl.Close()
	adm := kadm.NewClient(dcl)
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the mirror to finish", func() bool {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			return false
		}
		var total int64
		ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
		return total >= int64(sent)
	})
	ends, _ := adm.ListEndOffsets(ctx, topic)
	ends.Each(func(o kadm.ListedOffset) {
		c, ok := offs.Lookup(topic, o.Partition)
		if !ok || c.At != o.Offset {
			t.Errorf("partition %d: committed on the target at %d, target end %d", o.Partition, c.At, o.Offset)
		}
	})
}

// pauseAround is the longest gap between consecutive deliveries from the
// start of a flip command to a little after it ended.
func pauseAround(got []consumed, start time.Time, took time.Duration) time.Duration {
	var longest time.Duration
	var prev time.Time
	end := start.Add(took + 2*time.Second)
	for _, c := range got {
		if c.at.Before(start) {
			prev = c.at
			continue
		}
		if c.at.After(end) {
			break
		}
		if !prev.IsZero() && c.at.Sub(prev) > longest {
			longest = c.at.Sub(prev)
		}
		prev = c.at
	}
	return longest
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func createTopicOn(t *testing.T, addr, topic string, partitions int32) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create %s: %v", topic, err)
	}
	_ = fmt.Sprint()
}

// TestGroupCutoverRefusesConsumerProtocol: a group on the KIP-848 consumer
// protocol (the Java client with group.protocol=consumer) consumes through
// the proxy, and a cutover of it is refused with an answer that says why
// and what to do; the group stays on the source and keeps consuming.
func TestGroupCutoverRefusesConsumerProtocol(t *testing.T) {
	if _, err := exec.LookPath("java"); err != nil {
		t.Fatalf("java is required for the KIP-848 consumer test (JDK 17+ on PATH): %v", err)
	}
	src, dst := cluster(t), target.Get(t)
	topic, group := uniqueName(t, "topic"), uniqueName(t, "group")
	createTopicOn(t, src.Bootstrap(), topic, 3)
	proxy := proxytest.Start(t, "--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", topic, "--data-dir", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prod := newSeqProducer(t, ctx, proxy.Addr, topic, 0)
	defer prod.stop()

	cctx, stopConsumer := context.WithCancel(ctx)
	defer stopConsumer()
	cmd, err := kafkatest.ToolCmd(cctx, kafkatest.MainVerifiableCons, "--bootstrap-server", proxy.Addr, "--topic", topic,
		"--group-id", group, "--group-protocol", "consumer", "--reset-policy", "earliest")
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var consumed atomic.Int64
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev struct {
				Name  string `json:"name"`
				Count int64  `json:"count"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Name == "records_consumed" {
				consumed.Add(ev.Count)
			}
		}
	}()
	defer func() { stopConsumer(); cmd.Wait() }()
	waitFor(t, ctx, "the KIP-848 consumer to consume through the proxy", func() bool { return consumed.Load() > 500 })

	res, err := proxy.CLI(t, "cutover", "group", group)
	if err == nil || !strings.Contains(res, "KIP-848") || !strings.Contains(res, "group.protocol=classic") {
		t.Fatalf("cutover of a KIP-848 group: want a refusal naming KIP-848 and the way out, got %v\n%s", err, res)
	}
	t.Logf("refused as wanted: %s", strings.TrimSpace(res[strings.LastIndex(res, "kmigrate:"):]))
	var route struct{ Phase string }
	if err := getAdminJSON(proxy.Admin, "/v1/groups/"+group, &route); err != nil || route.Phase != "source" {
		t.Fatalf("group after the refusal: %+v %v", route, err)
	}
	n := consumed.Load()
	waitFor(t, ctx, "the consumer to go on after the refusal", func() bool { return consumed.Load() > n+500 })
}
