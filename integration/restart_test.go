package integration

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/faultrow"
)

// TestBrokerRestart: while a franz-go idempotent producer (acks=all), a
// franz-go group consumer and a franz-go partition (assign) consumer run
// continuously through the bootstrap, the broker is restarted once, so every
// partition loses and regains its leader and the group its coordinator. All
// three must recover on their own:
//
//   - the producer gets acknowledgements again and no produce fails (the
//     delivery timeout outlasts the restart), and a direct read finds every
//     acknowledged record exactly once in produce order (idempotent retries
//     are deduplicated);
//   - the assign consumer, which keeps its own positions, delivers every
//     acknowledged record exactly once, in order;
//   - the group consumer commits synchronously after each poll (rebalances
//     blocked while it processes). franz-go ends its group session when the
//     coordinator is unreachable and resumes from the committed offsets, so
//     a poll whose commit failed is legitimately delivered again; a record
//     whose commit succeeded must never be, and none may be skipped: counted
//     once per committed delivery, every acknowledged record is consumed
//     exactly once, in order, and the final commit is at the end offsets.
func TestBrokerRestart(t *testing.T) {
	row := faultrow.New(t, "source broker restarted under load (producer, group and assign consumer through the proxy)")
	c := cluster(t)
	boot := bootstrap(t, c)
	topic := uniqueName(t, "topic")
	group := uniqueName(t, "group")
	createTopic(t, c, topic, 3)
	ctx := testCtx(t, 4*time.Minute)

	prod, err := kgo.NewClient(
		kgo.SeedBrokers(boot),
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.RecordDeliveryTimeout(2*time.Minute),
		kgo.ClientID("interop-restart-producer"),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	cons, err := kgo.NewClient(
		kgo.SeedBrokers(boot),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ClientID("interop-restart-consumer"),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	assign, err := kgo.NewClient(
		kgo.SeedBrokers(boot),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {
			0: kgo.NewOffset().AtStart(), 1: kgo.NewOffset().AtStart(), 2: kgo.NewOffset().AtStart(),
		}}),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.ClientID("interop-restart-assign"),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer assign.Close()

	// The producer sends one record every 2ms (bounded in count) until
	// stopProducing is closed.
	const maxRecords = 30000
	var (
		mu       sync.Mutex
		acked    = map[int]Record{} // seq -> acknowledged record
		failed   = map[int]error{}
		attempts int
	)
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	stopProducing := make(chan struct{})
	producerDone := make(chan struct{})
	go func() {
		defer close(producerDone)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < maxRecords; i++ {
			select {
			case <-stopProducing:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			r := &kgo.Record{
				Key:     []byte("key-" + strconv.Itoa(i%17)),
				Value:   []byte(fmt.Sprintf("restart-%06d", i)),
				Headers: []kgo.RecordHeader{{Key: "seq", Value: []byte(strconv.Itoa(i))}},
			}
			mu.Lock()
			attempts++
			mu.Unlock()
			prod.Produce(context.Background(), r, func(r *kgo.Record, err error) {
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed[i] = err
					return
				}
				acked[i] = producedRecord(r)
			})
		}
	}()

	consCtx, stopConsuming := context.WithCancel(ctx)
	defer stopConsuming()
	gc := newRestartConsumer(consCtx, cons, true)
	ac := newRestartConsumer(consCtx, assign, false)
	consumedCount := func() int { return min(gc.count(), ac.count()) }

	waitFor := func(what string, d time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(d)
		for !cond() {
			if time.Now().After(deadline) || ctx.Err() != nil {
				t.Fatalf("timed out after %v waiting for %s (acked %d, consumed %d)", d, what, ackedCount(), consumedCount())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	waitFor("500 acknowledgements and 200 deliveries before the restart", 30*time.Second, func() bool {
		return ackedCount() >= 500 && consumedCount() >= 200
	})
	beforeAcked, beforeConsumed := ackedCount(), consumedCount()
	began := time.Now()
	if err := c.Restart(ctx); err != nil {
		t.Fatalf("restart broker: %v", err)
	}
	t.Logf("broker restarted in %v (acked %d, consumed %d before it)", time.Since(began).Round(time.Millisecond), beforeAcked, beforeConsumed)

	afterRestart, back := ackedCount(), time.Now()
	waitFor("an acknowledgement after the restart", 60*time.Second, func() bool { return ackedCount() > afterRestart })
	row.Recovered(time.Since(back), fmt.Sprintf("first acknowledgement after the broker was back; the restart took %s", faultrow.FormatDuration(back.Sub(began))))
	waitFor("500 new acknowledgements after the restart", 60*time.Second, func() bool {
		return ackedCount() >= afterRestart+500
	})
	close(stopProducing)
	<-producerDone
	fctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	if err := prod.Flush(fctx); err != nil {
		t.Fatalf("flush producer: %v", err)
	}
	cancel()

	mu.Lock()
	total, nAcked, nFailed := attempts, len(acked), len(failed)
	produced := make([]Record, 0, nAcked)
	for i := 0; i < total; i++ {
		if r, ok := acked[i]; ok {
			produced = append(produced, r)
		}
	}
	var firstFailure error
	for _, err := range failed {
		firstFailure = err
		break
	}
	mu.Unlock()
	t.Logf("produced %d records: %d acknowledged, %d failed", total, nAcked, nFailed)
	if nAcked+nFailed != total {
		t.Fatalf("%d records neither acknowledged nor failed after flush", total-nAcked-nFailed)
	}
	if nFailed > 0 {
		t.Errorf("%d produces failed across the restart, e.g. %v", nFailed, firstFailure)
	}

	waitFor("both consumers to deliver every acknowledged record", 90*time.Second, func() bool {
		return gc.committedCount() >= nAcked && ac.count() >= nAcked
	})
	time.Sleep(time.Second) // anything delivered beyond shows as duplicated
	stopConsuming()
	gc.wait()
	ac.wait()

	// Records whose produce failed may or may not be in the log; they do
	// not count as unexpected.
	failedSeq := map[string]bool{}
	mu.Lock()
	for i := range failed {
		failedSeq[strconv.Itoa(i)] = true
	}
	mu.Unlock()
	withoutFailed := func(rs []Record) []Record {
		var out []Record
		for _, r := range rs {
			if len(r.Headers) == 1 && failedSeq[string(r.Headers[0].Value)] {
				continue
			}
			out = append(out, r)
		}
		return out
	}

	log := readTopic(t, c, topic)
	assertClean(t, "acknowledged records vs direct read of the log", Compare(produced, withoutFailed(log)))

	directDs, directErrs := ac.result()
	if len(directErrs) > 0 {
		t.Logf("assign consumer: %d fetch errors surfaced, first: %s", len(directErrs), directErrs[0])
	}
	var directGot []Record
	for _, d := range directDs {
		directGot = append(directGot, d.rec)
	}
	assertClean(t, "acknowledged records vs assign consumer across the restart", Compare(produced, withoutFailed(directGot)))

	deliveries, groupErrs := gc.result()
	if len(groupErrs) > 0 {
		t.Logf("group consumer: %d errors surfaced, first: %s", len(groupErrs), groupErrs[0])
	}
	effective, redelivered := committedDeliveries(deliveries)
	t.Logf("group consumer: %d deliveries, %d of them again after a failed commit", len(deliveries), redelivered)
	assertClean(t, "acknowledged records vs group consumer's committed deliveries across the restart", Compare(produced, withoutFailed(effective)))

	cons.Close() // leaves the group
	assertCommittedAtEnd(t, c, group, topic)
	row.Outcome("retriable errors while down; %d acknowledged records each read once, in order, directly, by the assign consumer and by the group (%d redelivered after a failed commit); 0 produce failures", nAcked, redelivered)
}

// delivery is one record a group consumer delivered, and whether the commit
// that followed its poll succeeded.
type delivery struct {
	rec       Record
	committed bool
}

// committedDeliveries drops the deliveries that were legitimately delivered
// again: those whose commit failed and that came again later. What remains
// must hold every record exactly once. It also returns how many were dropped.
func committedDeliveries(ds []delivery) ([]Record, int) {
	last := map[string]int{} // identity -> index of the last delivery
	for i := range ds {
		last[identity(&ds[i].rec)] = i
	}
	var out []Record
	dropped := 0
	for i, d := range ds {
		if !d.committed && last[identity(&d.rec)] > i {
			dropped++
			continue
		}
		out = append(out, d.rec)
	}
	return out, dropped
}

// restartConsumer polls a client until its context ends. A group consumer
// commits each poll's records synchronously before allowing rebalances.
type restartConsumer struct {
	mu   sync.Mutex
	ds   []delivery
	errs []string
	done chan struct{}
}

func newRestartConsumer(ctx context.Context, cl *kgo.Client, isGroup bool) *restartConsumer {
	rc := &restartConsumer{done: make(chan struct{})}
	go func() {
		defer close(rc.done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			var recs []*kgo.Record
			var errs []string
			fs.EachError(func(tp string, p int32, err error) {
				if ctx.Err() == nil {
					errs = append(errs, fmt.Sprintf("fetch %s[%d]: %v", tp, p, err))
				}
			})
			fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
			committed := true
			if isGroup && len(recs) > 0 {
				cctx, cancel := context.WithTimeout(ctx, time.Minute)
				if err := cl.CommitRecords(cctx, recs...); err != nil {
					committed = false
					if ctx.Err() == nil {
						errs = append(errs, fmt.Sprintf("commit: %v", err))
					}
				}
				cancel()
			}
			rc.mu.Lock()
			for _, r := range recs {
				rc.ds = append(rc.ds, delivery{FromKgo(r), committed})
			}
			rc.errs = append(rc.errs, errs...)
			rc.mu.Unlock()
			if isGroup {
				cl.AllowRebalance()
			}
		}
	}()
	return rc
}

func (rc *restartConsumer) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.ds)
}

// committedCount is the number of deliveries whose commit succeeded.
func (rc *restartConsumer) committedCount() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	n := 0
	for _, d := range rc.ds {
		if d.committed {
			n++
		}
	}
	return n
}

func (rc *restartConsumer) wait() { <-rc.done }

// result returns the deliveries and the errors seen.
func (rc *restartConsumer) result() ([]delivery, []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.ds...), append([]string(nil), rc.errs...)
}
