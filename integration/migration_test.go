package integration

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/faultrow"
	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/kmigrate/kmigrate/internal/proxytest"
)

// TestMigrationFranzGo is the whole migration on real Kafka, through the
// proxy, with no client restarted: a topic with a few hundred thousand
// records of history, an idempotent producer and a consumer group running
// throughout; the mirror backfills, the group flips, the topic's producers
// flip, and the source cluster is stopped. Everything keeps working. Then a
// consumer pointed straight at the target finds the group's commits valid
// and nothing to re-read, and the target's log holds every record exactly
// once, in order.
func TestMigrationFranzGo(t *testing.T) {
	row := faultrow.New(t, "source cluster stopped after the group and the topic flipped (whole migration, 200,000 records of history)")
	src := kafkatest.StartT(t, kafkatest.Options{Name: "migration-source"})
	dst := target.Get(t)
	const (
		partitions = 3
		history    = 200_000
	)
	topic, group := uniqueName(t, "topic"), uniqueName(t, "group")
	createTopicOn(t, src.Bootstrap(), topic, partitions)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// History, written straight to the source before the proxy exists.
	direct, err := kgo.NewClient(kgo.SeedBrokers(src.Bootstrap()), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < history; i++ {
		direct.Produce(ctx, &kgo.Record{Key: []byte(strconv.Itoa(i % 9)), Value: []byte(strconv.Itoa(i))}, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("history produce: %v", err)
			}
		})
	}
	if err := direct.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	direct.Close()

	proxy := proxytest.Start(t, "--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", topic, "--data-dir", t.TempDir())

	// The producer: franz-go's default idempotent producer through the
	// proxy, several records in flight, ~1000 records/s.
	prod := newSeqProducer(t, ctx, proxy.Addr, topic, history)
	defer prod.stop()

	cons := newSeqConsumer(t, ctx, proxy.Addr, topic, group)
	defer cons.stop()
	waitFor(t, ctx, "the group to consume the history", func() bool { return cons.count() > history+500 })

	// 1. The group moves; fetches still go to the source.
	if out, err := proxy.CLI(t, "cutover", "group", group); err != nil {
		t.Fatalf("cutover group: %v\n%s", err, out)
	}
	n := cons.count()
	waitFor(t, ctx, "consumption after the group flip", func() bool { return cons.count() > n+500 })

	// 2. The topic's producers move.
	flipStart := time.Now()
	out, err := proxy.CLI(t, "cutover", "topic", topic)
	if err != nil {
		t.Fatalf("cutover topic: %v\n%s", err, out)
	}
	flipTook := time.Since(flipStart)
	t.Logf("cutover topic: %s", strings.TrimSpace(out))
	if again, err := proxy.CLI(t, "cutover", "topic", topic); err != nil || !strings.Contains(again, "already") {
		t.Fatalf("a second topic cutover must be a no-op: %v\n%s", err, again)
	}
	n, p := cons.count(), prod.acked()
	waitFor(t, ctx, "produce and consume after the topic flip", func() bool { return cons.count() > n+1000 && prod.acked() > p+1000 })

	// 3. The source goes away: the proxy serves everything from the target.
	stopped := time.Now()
	src.Stop()
	n, p = cons.count(), prod.acked()
	waitFor(t, ctx, "produce and consume with the source stopped", func() bool { return cons.count() > n+2000 && prod.acked() > p+2000 })
	stopPause, _ := prod.pauseAround(stopped, 0)

	sent := prod.stop()
	waitFor(t, ctx, "every record consumed", func() bool { return cons.count() >= sent })
	time.Sleep(time.Second) // anything delivered twice arrives now
	got, afterCommit := cons.stop()

	lost, dup, reordered := countDeliveries(got, sent)
	t.Logf("%d records (%d history), %d deliveries: lost %d, delivered again after a commit %d, duplicated %d, reordered %d; produce errors %d",
		sent, history, len(got), lost, afterCommit, dup, reordered, prod.errors())
	pause, around := prod.pauseAround(flipStart, flipTook)
	t.Logf("topic flip: command %s; producer pause (longest gap between acknowledgements) %s at %s", flipTook.Round(time.Millisecond), pause.Round(time.Millisecond), around.Format("15:04:05.000"))
	row.Recovered(stopPause, "longest producer pause around the source's stop")
	row.Recovered(pause, "producer pause at the topic flip")
	row.Outcome("served from the target; %d records at the consumer: %d lost, %d duplicated, %d reordered, %d again after a commit", sent, lost, dup, reordered, afterCommit)
	if lost != 0 || afterCommit != 0 || dup != 0 || reordered != 0 || prod.errors() != 0 {
		t.Fatalf("lost %d, delivered again after a commit %d, duplicated %d, reordered %d, produce errors %d: want all 0", lost, afterCommit, dup, reordered, prod.errors())
	}

	// 4. Straight to the target, no proxy: the group's commits are the
	// target's ends (nothing to re-read), and the log is every record once,
	// in order per partition.
	dcl, err := kgo.NewClient(kgo.SeedBrokers(dst.Bootstrap()))
	if err != nil {
		t.Fatal(err)
	}
	defer dcl.Close()
	adm := kadm.NewClient(dcl)
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		c, ok := committed.Lookup(topic, o.Partition)
		if !ok || c.At != o.Offset {
			t.Errorf("partition %d: committed on the target at %d, target end %d: a direct consumer would re-read or skip", o.Partition, c.At, o.Offset)
		}
	})
	targetLog := readAll(t, ctx, dst.Bootstrap(), topic, ends)
	tlost, tdup, treordered := countDeliveries(targetLog, sent)
	t.Logf("target log read directly: %d records: lost %d, duplicated %d, reordered %d", len(targetLog), tlost, tdup, treordered)
	if tlost != 0 || tdup != 0 || treordered != 0 {
		t.Fatalf("target log: lost %d, duplicated %d, reordered %d: want 0", tlost, tdup, treordered)
	}
	row.Outcome("served from the target; %d records at the consumer and in the target log read directly: 0 lost, 0 duplicated, 0 reordered, 0 again after a commit; target commits at the ends", sent)
}

// countDeliveries counts sequence numbers 0..sent-1 never delivered, the
// extra deliveries, and first deliveries out of offset order per partition.
func countDeliveries(got []consumed, sent int) (lost, dup, reordered int) {
	lost, dup, reordered, _ = countRedeliveries(got, sent, nil)
	return lost, dup, reordered
}

// countRedeliveries is countDeliveries for a consumer whose commits could
// fail (its group coordinator's broker was killed): an extra delivery of a
// record in uncommitted (delivered by a poll whose commit, or a later one
// before any success, failed) is the client's at-least-once redelivery and
// counts as retried, not duplicated. Redelivery of a committed record is
// still caught by the consumer's "again after a commit" count.
func countRedeliveries(got []consumed, sent int, uncommitted map[int]bool) (lost, dup, reordered, retried int) {
	seen := make(map[int]int, sent)
	last := map[int32]int64{}
	lastSeq := map[int32]int{}
	for _, c := range got {
		seen[c.seq]++
		if seen[c.seq] > 1 && uncommitted[c.seq] {
			retried++
			seen[c.seq]--
			continue
		}
		if seen[c.seq] == 1 {
			if l, ok := last[c.partition]; ok && c.offset <= l {
				reordered++
			} else if s, ok := lastSeq[c.partition]; ok && c.seq < s {
				reordered++ // offsets rise but the records came out of order
			}
			last[c.partition], lastSeq[c.partition] = c.offset, c.seq
		}
	}
	for i := 0; i < sent; i++ {
		switch n := seen[i]; {
		case n == 0:
			lost++
		case n > 1:
			dup += n - 1
		}
	}
	return lost, dup, reordered, retried
}

// logDuplicates shows the first records delivered twice: where and when.
func logDuplicates(t *testing.T, got []consumed) {
	first := map[int]consumed{}
	shown := 0
	for _, c := range got {
		if f, ok := first[c.seq]; ok {
			if shown++; shown <= 8 {
				t.Logf("value %d delivered at %d/%d (%s) and again at %d/%d (%s)", c.seq, f.partition, f.offset, f.at.Format("15:04:05.000"), c.partition, c.offset, c.at.Format("15:04:05.000"))
			}
			continue
		}
		first[c.seq] = c
	}
}

// readAll reads a topic from its start to ends, without a group.
func readAll(t *testing.T, ctx context.Context, addr, topic string, ends kadm.ListedOffsets) []consumed {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	var out []consumed
	for int64(len(out)) < total && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			seq, _ := strconv.Atoi(string(r.Value))
			out = append(out, consumed{r.Partition, r.Offset, seq, time.Now()})
		})
	}
	return out
}

// seqProducer produces sequence numbers from start on, asynchronously with
// several records in flight, and keeps when each was acknowledged.
type seqProducer struct {
	t      *testing.T
	cl     *kgo.Client
	done   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	sent   int
	acks   []time.Time
	errs   int
	closed bool
}

func newSeqProducer(t *testing.T, ctx context.Context, addr, topic string, start int) *seqProducer {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.RecordRetries(1<<30))
	if err != nil {
		t.Fatal(err)
	}
	p := &seqProducer{t: t, cl: cl, done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for i := start; ; i++ {
			select {
			case <-p.done:
				p.mu.Lock()
				p.sent = i
				p.mu.Unlock()
				return
			default:
			}
			cl.Produce(ctx, &kgo.Record{Key: []byte(strconv.Itoa(i % 9)), Value: []byte(strconv.Itoa(i))}, func(r *kgo.Record, err error) {
				p.mu.Lock()
				defer p.mu.Unlock()
				if err != nil {
					p.errs++
					if p.errs <= 5 {
						t.Logf("produce %s: %v", r.Value, err)
					}
					return
				}
				p.acks = append(p.acks, time.Now())
			})
			time.Sleep(time.Millisecond)
		}
	}()
	return p
}

func (p *seqProducer) acked() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.acks) }
func (p *seqProducer) errors() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.errs
}

// stop ends producing, waits for every record's outcome and returns the
// number of sequence numbers handed to the client (one past the last).
func (p *seqProducer) stop() int {
	p.mu.Lock()
	if p.closed {
		defer p.mu.Unlock()
		return p.sent
	}
	p.closed = true
	p.mu.Unlock()
	close(p.done)
	p.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.cl.Flush(ctx); err != nil {
		p.t.Errorf("flush producer: %v", err)
	}
	p.cl.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent
}

// pauseAround is the longest gap between acknowledgements from a little
// before a flip to a little after it, and when it ended.
func (p *seqProducer) pauseAround(start time.Time, took time.Duration) (time.Duration, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	acks := append([]time.Time(nil), p.acks...)
	sort.Slice(acks, func(i, j int) bool { return acks[i].Before(acks[j]) })
	var longest time.Duration
	var at time.Time
	from, to := start.Add(-time.Second), start.Add(took+2*time.Second)
	for i := 1; i < len(acks); i++ {
		if acks[i].Before(from) || acks[i-1].After(to) {
			continue
		}
		if d := acks[i].Sub(acks[i-1]); d > longest {
			longest, at = d, acks[i]
		}
	}
	return longest, at
}

// topicPartition keys a consumer's commits: a group may consume several
// topics.
type topicPartition struct {
	topic     string
	partition int32
}

// seqConsumer is a franz-go group member that commits after every poll
// before allowing a rebalance, and counts deliveries below its last commit.
type seqConsumer struct {
	cl          *kgo.Client
	done        chan struct{}
	wg          sync.WaitGroup
	mu          sync.Mutex
	got         []consumed
	committed   map[topicPartition]int64 // next offset after the last commit
	afterCommit int
	stopped     bool
	// sinceCommit are the sequence numbers delivered since the last
	// successful commit; when a commit fails they join uncommitted: the
	// group may deliver them again (at least once), unlike a committed one.
	sinceCommit []int
	uncommitted map[int]bool
}

func newSeqConsumer(t *testing.T, ctx context.Context, addr, topic, group string, extra ...kgo.Opt) *seqConsumer {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group),
		kgo.Balancers(kgo.RangeBalancer()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.HeartbeatInterval(500 * time.Millisecond), kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll()}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	c := &seqConsumer{cl: cl, done: make(chan struct{}), committed: map[topicPartition]int64{}, uncommitted: map[int]bool{}}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			select {
			case <-c.done:
				return
			default:
			}
			pctx, pcancel := context.WithTimeout(ctx, 200*time.Millisecond)
			fs := cl.PollFetches(pctx)
			pcancel()
			now := time.Now()
			next := map[topicPartition]int64{}
			c.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				seq, _ := strconv.Atoi(string(r.Value))
				c.got = append(c.got, consumed{r.Partition, r.Offset, seq, now})
				c.sinceCommit = append(c.sinceCommit, seq)
				if at, ok := c.committed[topicPartition{r.Topic, r.Partition}]; ok && r.Offset < at {
					c.afterCommit++
					if c.afterCommit <= 10 {
						t.Logf("delivered again after a commit: partition %d offset %d (committed %d)", r.Partition, r.Offset, at)
					}
				}
				next[topicPartition{r.Topic, r.Partition}] = r.Offset + 1
			})
			c.mu.Unlock()
			fs.EachError(func(topic string, p int32, err error) {
				if ctx.Err() == nil && err != context.DeadlineExceeded {
					t.Logf("fetch %s/%d: %v", topic, p, err)
				}
			})
			if len(next) > 0 {
				if err := cl.CommitUncommittedOffsets(ctx); err == nil {
					c.mu.Lock()
					for p, o := range next {
						c.committed[p] = o
					}
					c.sinceCommit = c.sinceCommit[:0]
					c.mu.Unlock()
				} else {
					t.Logf("commit failed (its records may come again): %v", err)
					c.mu.Lock()
					for _, seq := range c.sinceCommit {
						c.uncommitted[seq] = true
					}
					c.mu.Unlock()
				}
			}
			cl.AllowRebalance()
		}
	}()
	return c
}

func (c *seqConsumer) count() int { c.mu.Lock(); defer c.mu.Unlock(); return len(c.got) }

// uncommittedSeqs are the records delivered by polls whose commit failed
// (see countRedeliveries).
func (c *seqConsumer) uncommittedSeqs() map[int]bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[int]bool, len(c.uncommitted))
	for s := range c.uncommitted {
		out[s] = true
	}
	return out
}

// snapshot is a copy of the deliveries so far.
func (c *seqConsumer) snapshot() []consumed {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]consumed(nil), c.got...)
}

// stop ends consuming, commits, and returns the deliveries and how many
// were below a commit.
func (c *seqConsumer) stop() ([]consumed, int) {
	c.mu.Lock()
	if c.stopped {
		defer c.mu.Unlock()
		return c.got, c.afterCommit
	}
	c.stopped = true
	c.mu.Unlock()
	close(c.done)
	c.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.cl.CommitUncommittedOffsets(ctx); err != nil {
		fmt.Println("final commit:", err)
	}
	c.cl.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.got, c.afterCommit
}

// TestTopicRollbackFranzGo flips a topic's producers to the target, rolls
// them back, and flips them again, under live produce and consume, with the
// group first on the source and then on the target. The reverse mirror
// copies what is produced to the target back to the source, so after the
// rollback the source holds the whole virtual log at its own offsets; in
// the end both clusters, read directly, hold every record once, in order.
func TestTopicRollbackFranzGo(t *testing.T) {
	src, dst := cluster(t), target.Get(t)
	const history = 20_000
	topic, group := uniqueName(t, "topic"), uniqueName(t, "group")
	createTopicOn(t, src.Bootstrap(), topic, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	direct, err := kgo.NewClient(kgo.SeedBrokers(src.Bootstrap()), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < history; i++ {
		direct.Produce(ctx, &kgo.Record{Key: []byte(strconv.Itoa(i % 9)), Value: []byte(strconv.Itoa(i))}, nil)
	}
	if err := direct.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	direct.Close()

	proxy := proxytest.Start(t, "--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", topic, "--data-dir", t.TempDir())
	prod := newSeqProducer(t, ctx, proxy.Addr, topic, history)
	defer prod.stop()
	cons := newSeqConsumer(t, ctx, proxy.Addr, topic, group)
	defer cons.stop()
	waitFor(t, ctx, "the group to consume the history", func() bool { return cons.count() > history+500 })
	waitFor(t, ctx, "the mirror to map the topic (kmigrate verify passes)", func() bool {
		_, err := proxy.CLI(t, "verify", "--topic", topic, "--records", "0")
		return err == nil
	})

	type step struct{ verb, what, name string }
	steps := []step{
		{"cutover", "topic", topic},  // group still on the source: fetches go to the target, commits to the source
		{"rollback", "topic", topic}, // back to the source, which now holds the reverse-mirrored records
		{"cutover", "topic", topic},  // and out again
		{"cutover", "group", group},  // then the group
		{"rollback", "topic", topic}, // group on the target, producers back on the source
		{"cutover", "topic", topic},  // the end state: everything on the target
	}
	for _, s := range steps {
		start := time.Now()
		out, err := proxy.CLI(t, s.verb, s.what, s.name)
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", s.verb, s.what, err, out)
		}
		took := time.Since(start)
		n, p := cons.count(), prod.acked()
		waitFor(t, ctx, "produce and consume after "+s.verb+" "+s.what, func() bool { return cons.count() > n+1000 && prod.acked() > p+1000 })
		pause, _ := prod.pauseAround(start, took)
		t.Logf("%s %s: %s; producer pause %s", s.verb, s.what, strings.TrimSpace(out), pause.Round(time.Millisecond))
	}

	sent := prod.stop()
	waitFor(t, ctx, "every record consumed", func() bool { return cons.count() >= sent })
	time.Sleep(time.Second)
	got, afterCommit := cons.stop()
	lost, dup, reordered := countDeliveries(got, sent)
	t.Logf("%d records, %d deliveries: lost %d, delivered again after a commit %d, duplicated %d, reordered %d; produce errors %d",
		sent, len(got), lost, afterCommit, dup, reordered, prod.errors())
	if dup != 0 {
		logDuplicates(t, got)
	}
	if lost != 0 || afterCommit != 0 || dup != 0 || reordered != 0 || prod.errors() != 0 {
		t.Fatalf("lost %d, delivered again after a commit %d, duplicated %d, reordered %d, produce errors %d: want all 0", lost, afterCommit, dup, reordered, prod.errors())
	}

	// Both clusters, read directly, hold every record once and in order
	// (the source through the reverse mirror, the target through the
	// forward one).
	for _, c := range []struct {
		name string
		addr string
	}{{"source", src.Bootstrap()}, {"target", dst.Bootstrap()}} {
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.addr))
		if err != nil {
			t.Fatal(err)
		}
		adm := kadm.NewClient(cl)
		var ends kadm.ListedOffsets
		waitFor(t, ctx, c.name+" to hold every record", func() bool {
			ends, err = adm.ListEndOffsets(ctx, topic)
			if err != nil {
				return false
			}
			var total int64
			ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
			return total >= int64(sent)
		})
		cl.Close()
		log := readAll(t, ctx, c.addr, topic, ends)
		l, d, r := countDeliveries(log, sent)
		t.Logf("%s read directly: %d records: lost %d, duplicated %d, reordered %d", c.name, len(log), l, d, r)
		if l != 0 || d != 0 || r != 0 {
			t.Errorf("%s log: lost %d, duplicated %d, reordered %d: want 0", c.name, l, d, r)
		}
	}
}
