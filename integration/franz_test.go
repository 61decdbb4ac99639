package integration

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// franzRecord builds record i of a franz-go test: keyed, with headers and a
// value of varying length.
func franzRecord(i int, tag string) *kgo.Record {
	v := []byte(fmt.Sprintf("%s-%06d|", tag, i))
	for j := 0; j < (i*29)%500; j++ {
		v = append(v, byte('a'+(i+j)%26))
	}
	return &kgo.Record{
		Key:   []byte(fmt.Sprintf("key-%d", i%101)),
		Value: v,
		Headers: []kgo.RecordHeader{
			{Key: "seq", Value: []byte(strconv.Itoa(i))},
			{Key: "tag", Value: []byte(tag)},
			{Key: "empty", Value: []byte{}},
		},
	}
}

// producedRecord is the acknowledged form of r: where the broker put it, with
// the millisecond timestamp it stores.
func producedRecord(r *kgo.Record) Record {
	p := FromKgo(r)
	p.Timestamp = time.UnixMilli(r.Timestamp.UnixMilli())
	return p
}

// produceAll produces recs asynchronously on cl and waits for every
// acknowledgement, failing t on any error. It returns the acknowledged
// records in produce order.
func produceAll(t *testing.T, ctx context.Context, cl *kgo.Client, recs []*kgo.Record) []Record {
	t.Helper()
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	out := make([]Record, len(recs))
	for i, r := range recs {
		wg.Add(1)
		cl.Produce(ctx, r, func(r *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("record %d: %w", i, err))
				mu.Unlock()
				return
			}
			out[i] = producedRecord(r)
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d produces failed, first: %v", len(errs), len(recs), errs[0])
	}
	return out
}

// pollUntil polls cl until want records arrived or ctx ends, then polls for
// quiet longer to catch records delivered beyond want.
func pollUntil(t *testing.T, ctx context.Context, cl *kgo.Client, want int, quiet time.Duration) []Record {
	t.Helper()
	var got []Record
	collect := func(fs kgo.Fetches) {
		fs.EachError(func(tp string, p int32, err error) {
			if err != context.DeadlineExceeded && err != context.Canceled {
				t.Errorf("fetch %s[%d]: %v", tp, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) { got = append(got, FromKgo(r)) })
	}
	for len(got) < want && ctx.Err() == nil {
		collect(cl.PollFetches(ctx))
	}
	if ctx.Err() != nil {
		t.Errorf("consumed %d of %d records before %v", len(got), want, ctx.Err())
		return got
	}
	qctx, cancel := context.WithTimeout(ctx, quiet)
	defer cancel()
	for qctx.Err() == nil {
		collect(cl.PollFetches(qctx))
	}
	return got
}

// TestFranzGoIdempotentGroup: a franz-go idempotent producer (acks=all)
// sends 5,000 keyed records with headers across 6 partitions through the
// bootstrap; every acknowledgement's partition, offset and timestamp must
// match a direct read. A franz-go group consumer then reads all of them
// through the bootstrap: exactly the acknowledged records, none twice, in
// order per partition; its commit lands at the end offsets.
func TestFranzGoIdempotentGroup(t *testing.T) {
	c := cluster(t)
	boot := bootstrap(t, c)
	topic := uniqueName(t, "topic")
	group := uniqueName(t, "group")
	createTopic(t, c, topic, 6)
	const n = 5000

	ctx := testCtx(t, 2*time.Minute)
	prod, err := kgo.NewClient(
		kgo.SeedBrokers(boot),
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotence is franz-go's default
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.RecordDeliveryTimeout(60*time.Second),
		kgo.ClientID("interop-franz-producer"),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = franzRecord(i, "idem")
	}
	produced := produceAll(t, ctx, prod, recs)

	log := readTopic(t, c, topic)
	assertClean(t, "acknowledgements vs direct read of the topic", Compare(produced, log))
	if parts := partitionsUsed(log); len(parts) != 6 {
		t.Errorf("records landed in partitions %v, want all 6 used", parts)
	}

	cons, err := kgo.NewClient(
		kgo.SeedBrokers(boot),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.ClientID("interop-franz-consumer"),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	consumed := pollUntil(t, ctx, cons, n, time.Second)
	assertClean(t, "acknowledgements vs group consumer", Compare(produced, consumed))
	if err := cons.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	cons.Close() // leaves the group
	assertCommittedAtEnd(t, c, group, topic)
}

// TestFranzGoTransactions: a franz-go transactional producer, through the
// bootstrap, commits a transaction of 300 records, aborts one of 200, then
// commits one of 100. A read_committed consumer sees exactly the 400
// committed records, in order, none of the aborted; a read_uncommitted
// consumer sees all 600.
func TestFranzGoTransactions(t *testing.T) {
	c := cluster(t)
	boot := bootstrap(t, c)
	topic := uniqueName(t, "topic")
	createTopic(t, c, topic, 3)
	ctx := testCtx(t, 2*time.Minute)

	txn, err := kgo.NewClient(
		kgo.SeedBrokers(boot),
		kgo.DefaultProduceTopic(topic),
		kgo.TransactionalID(uniqueName(t, "txn")),
		kgo.TransactionTimeout(30*time.Second),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(5*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()

	var committed, all []Record
	for _, tx := range []struct {
		tag    string
		n      int
		commit bool
	}{{"commit1", 300, true}, {"abort", 200, false}, {"commit2", 100, true}} {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatalf("begin transaction %s: %v", tx.tag, err)
		}
		recs := make([]*kgo.Record, tx.n)
		for i := range recs {
			recs[i] = franzRecord(i, tx.tag)
		}
		acked := produceAll(t, ctx, txn, recs)
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(tx.commit)); err != nil {
			t.Fatalf("end transaction %s (commit=%v): %v", tx.tag, tx.commit, err)
		}
		all = append(all, acked...)
		if tx.commit {
			committed = append(committed, acked...)
		}
	}
	if len(partitionsUsed(all)) != 3 {
		t.Fatalf("transactional records in partitions %v, want all 3", partitionsUsed(all))
	}

	// One plain record per partition after the transactions marks the end:
	// consumers read until they have seen all three.
	writeEndMarkers(t, ctx, boot, topic, 3)

	read := func(t *testing.T, level kgo.IsolationLevel) []Record {
		return readToEndMarkers(t, boot, topic, 3, level)
	}

	t.Run("read_committed", func(t *testing.T) {
		got := read(t, kgo.ReadCommitted())
		if len(got) != len(committed) {
			t.Errorf("read_committed consumer got %d records, want the %d committed", len(got), len(committed))
		}
		aborted := 0
		for _, r := range got {
			if len(r.Headers) > 1 && string(r.Headers[1].Value) == "abort" {
				aborted++
			}
		}
		if aborted != 0 {
			t.Errorf("read_committed consumer got %d records of the aborted transaction", aborted)
		}
		assertClean(t, "committed transactions vs read_committed consumer", Compare(committed, got))
	})
	t.Run("read_uncommitted", func(t *testing.T) {
		got := read(t, kgo.ReadUncommitted())
		if len(got) != len(all) {
			t.Errorf("read_uncommitted consumer got %d records, want all %d", len(got), len(all))
		}
		assertClean(t, "all transactions vs read_uncommitted consumer", Compare(all, got))
	})
}

const endMarker = "end-marker"

// writeEndMarkers appends one plain record to each partition of topic,
// through boot; readToEndMarkers reads up to them.
func writeEndMarkers(t *testing.T, ctx context.Context, boot, topic string, partitions int32) {
	t.Helper()
	plain, err := kgo.NewClient(kgo.SeedBrokers(boot), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	for p := int32(0); p < partitions; p++ {
		if err := plain.ProduceSync(ctx, &kgo.Record{Partition: p, Value: []byte(endMarker)}).FirstErr(); err != nil {
			t.Fatalf("end marker for partition %d: %v", p, err)
		}
	}
}

// readToEndMarkers reads topic through boot at the given isolation level
// until it has seen the end marker of every partition, returning the records
// before them. It works on transactional topics, whose offsets have gaps.
func readToEndMarkers(t *testing.T, boot, topic string, partitions int, level kgo.IsolationLevel) []Record {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(boot),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(level),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := testCtx(t, time.Minute)
	var got []Record
	ends := map[int32]bool{}
	for len(ends) < partitions {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d records and %d end markers of %s before %v", len(got), len(ends), topic, ctx.Err())
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s[%d]: %v", tp, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Value) == endMarker {
				ends[r.Partition] = true
				return
			}
			if ends[r.Partition] {
				t.Errorf("record %s[%d]@%d after the end marker", r.Topic, r.Partition, r.Offset)
			}
			got = append(got, FromKgo(r))
		})
	}
	return got
}

// TestFranzGoTransactSession: exactly-once consume-transform-produce through
// the bootstrap with franz-go's GroupTransactSession (transactional produce
// plus TxnOffsetCommit of the group's offsets in the same transaction), 100
// records per transaction. Every one of 1,500 input records becomes exactly
// one output record in the same partition and order, visible to a
// read_committed consumer, and the group's committed offsets end at the
// input's end offsets.
func TestFranzGoTransactSession(t *testing.T) {
	c := cluster(t)
	boot := bootstrap(t, c)
	in, out := uniqueName(t, "in"), uniqueName(t, "out")
	group := uniqueName(t, "group")
	createTopic(t, c, in, 3)
	createTopic(t, c, out, 3)
	const n = 1500
	ctx := testCtx(t, 2*time.Minute)

	// Input, written directly.
	src, err := kgo.NewClient(kgo.SeedBrokers(c.Bootstrap()), kgo.DefaultProduceTopic(in))
	if err != nil {
		t.Fatal(err)
	}
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = franzRecord(i, "eos")
	}
	produceAll(t, ctx, src, recs)
	src.Close()
	input := readTopic(t, c, in)

	sess, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(boot),
		kgo.TransactionalID(uniqueName(t, "txn")),
		kgo.TransactionTimeout(30*time.Second),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(in),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.DefaultProduceTopic(out),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()

	done, txns := 0, 0
	for done < n {
		fs := sess.PollRecords(ctx, 100) // about 15 transactions
		if ctx.Err() != nil {
			t.Fatalf("transformed %d of %d records before %v", done, n, ctx.Err())
		}
		fs.EachError(func(tp string, p int32, err error) { t.Fatalf("fetch %s[%d]: %v", tp, p, err) })
		if fs.NumRecords() == 0 {
			continue
		}
		if err := sess.Begin(); err != nil {
			t.Fatalf("begin: %v", err)
		}
		var batch []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			batch = append(batch, &kgo.Record{
				Partition: r.Partition,
				Key:       r.Key,
				Value:     append([]byte("out:"), r.Value...),
				Headers:   r.Headers,
			})
		})
		if err := sess.ProduceSync(ctx, batch...).FirstErr(); err != nil {
			t.Fatalf("transactional produce: %v", err)
		}
		committed, err := sess.End(ctx, kgo.TryCommit)
		if err != nil {
			t.Fatalf("end transaction: %v", err)
		}
		if committed {
			done += len(batch)
			txns++
		} // else the session aborted and the records come again
	}
	t.Logf("%d records in %d transactions", done, txns)
	if done != n {
		t.Errorf("transformed %d records, want %d", done, n)
	}
	sess.Close()

	want := make([]Record, len(input))
	for i, r := range input {
		w := r
		w.Topic, w.Offset, w.Timestamp = out, -1, time.Time{}
		w.Value = append([]byte("out:"), r.Value...)
		want[i] = w
	}
	writeEndMarkers(t, ctx, boot, out, 3)
	got := readToEndMarkers(t, boot, out, 3, kgo.ReadCommitted())
	assertClean(t, "input vs read_committed output", Compare(want, got))
	assertCommittedAtEnd(t, c, group, in)
}
