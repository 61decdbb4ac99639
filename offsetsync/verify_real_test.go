package offsetsync_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/kmigrate/kmigrate/replicate"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

var (
	realSource = kafkatest.NewShared(kafkatest.Options{Name: "source"})
	realTarget = kafkatest.NewShared(kafkatest.Options{Name: "target"})
)

func TestMain(m *testing.M) { os.Exit(kafkatest.RunMain(m)) }

// mirrorUntil runs the real mirror between the clusters until want records
// of topic are mapped.
func mirrorUntil(t *testing.T, src, dst *kafkatest.Cluster, maps *replicate.MemoryMaps, topic string, partitions int32, want int64) {
	t.Helper()
	m, err := replicate.New(replicate.Config{
		Source:  []kgo.Opt{kgo.SeedBrokers(src.Bootstrap())},
		Target:  []kgo.Opt{kgo.SeedBrokers(dst.Bootstrap())},
		Topics:  replicate.Selection{Include: regexp.MustCompile("^" + regexp.QuoteMeta(topic) + "$")},
		Maps:    maps,
		Recheck: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = m.Run(ctx) })
	mapped := func() (n int64) {
		for p := range partitions {
			for _, g := range maps.Map(replicate.Partition{Topic: topic, Partition: p}) {
				n += g.Length
			}
		}
		return n
	}
	for mapped() < want {
		if ctx.Err() != nil {
			t.Fatalf("mirror mapped %d of %d records in 2 minutes: %+v", mapped(), want, m.Status())
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if runErr != nil {
		t.Fatalf("mirror: %v", runErr)
	}
}

func client(t *testing.T, c *kafkatest.Cluster, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.Bootstrap())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func produce(t *testing.T, ctx context.Context, cl *kgo.Client, rs ...*kgo.Record) {
	t.Helper()
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyRealKafka mirrors a topic whose source log has transaction
// markers and aborted records (so source and target offsets differ) with the
// real mirror between two real Kafka clusters, checks that Verify finds them
// equal, then writes into the target behind the mirror's back and checks that
// Verify reports it: first as an unmapped tail, then, once a restarted mirror
// has adopted the stray record as its own, as a record that differs.
func TestVerifyRealKafka(t *testing.T) {
	src, dst := realSource.Get(t), realTarget.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const topic, group = "verify-orders", "verify-app"
	if err := src.CreateTopic(ctx, topic, 2, nil); err != nil {
		t.Fatal(err)
	}
	srcCl, dstCl := client(t, src), client(t, dst)

	// 100 plain records per partition, then a committed and an aborted
	// transaction on partition 0, then 50 more: partition 0's source has
	// two markers and aborted records the target does not.
	plain := func(p int32, from, n int) {
		var rs []*kgo.Record
		for i := from; i < from+n; i++ {
			rs = append(rs, &kgo.Record{Topic: topic, Partition: p, Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("order-%d-%d", p, i)),
				Headers: []kgo.RecordHeader{{Key: "seq", Value: []byte(fmt.Sprint(i))}}})
		}
		produce(t, ctx, srcCl, rs...)
	}
	manual := kgo.RecordPartitioner(kgo.ManualPartitioner())
	srcCl = client(t, src, manual)
	plain(0, 0, 100)
	plain(1, 0, 100)
	txn := client(t, src, manual, kgo.TransactionalID("verify-txn"))
	for _, commit := range []bool{true, false} {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := range 10 {
			produce(t, ctx, txn, &kgo.Record{Topic: topic, Partition: 0, Value: []byte(fmt.Sprintf("txn-%v-%d", commit, i))})
		}
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	// The coordinator writes the markers after EndTransaction returns: wait
	// for them, so that the offsets below are known.
	adm := kadm.NewClient(srcCl)
	for {
		lso, err1 := adm.ListCommittedOffsets(ctx, topic)
		hwm, err2 := adm.ListEndOffsets(ctx, topic)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		l, _ := lso.Lookup(topic, 0)
		h, _ := hwm.Lookup(topic, 0)
		if l.Offset == h.Offset && h.Offset == 122 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("markers: last stable offset %d, end %d", l.Offset, h.Offset)
		}
		time.Sleep(50 * time.Millisecond)
	}
	plain(0, 100, 50)
	plain(1, 100, 50)
	const mapped = 150 + 10 + 150

	maps := replicate.NewMemoryMaps()
	mirrorUntil(t, src, dst, maps, topic, 2, mapped)

	// The group committed on the source, inside the range after the
	// aborted transaction: its target position differs from its source one.
	if _, err := adm.CommitOffsets(ctx, group, kadm.OffsetsFromRecords(
		kgo.Record{Topic: topic, Partition: 0, Offset: 129}, kgo.Record{Topic: topic, Partition: 1, Offset: 49})); err != nil {
		t.Fatal(err)
	}

	cfg := offsetsync.VerifyConfig{
		Source: srcCl, Target: dstCl, Topics: []string{topic}, Groups: []string{group}, Settle: 500 * time.Millisecond,
		Maps: func(topic string, partition int32) offsetsync.OffsetMap {
			return maps.Map(replicate.Partition{Topic: topic, Partition: partition})
		},
	}
	start := time.Now()
	rep, err := offsetsync.Verify(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("verify of 2 partitions, 310 records compared, took %s", time.Since(start).Round(time.Millisecond))
	if !rep.OK() || len(rep.Partitions) != 2 {
		t.Fatalf("consistent mirror: %v %+v", rep.Problems(), rep)
	}
	p0 := rep.Partitions[0]
	if p0.Verdict != offsetsync.VerifyOK || p0.Checked != 160 || p0.Source.Read != 160 || p0.Target.Read != 160 ||
		p0.Source.Checksum != p0.Target.Checksum || p0.Source.End != 172 || p0.Target.End != 160 || p0.Segments != 2 {
		// Source: 100 records, 10 committed, marker (110), 10 aborted,
		// marker (121), 50 records (122..171). Target: the 160 records.
		t.Errorf("partition 0: %+v", p0)
	}
	if p1 := rep.Partitions[1]; p1.Verdict != offsetsync.VerifyOK || p1.Checked != 150 || p1.Source.Checksum != p1.Target.Checksum {
		t.Errorf("partition 1: %+v", p1)
	}
	if len(rep.Groups) != 1 || len(rep.Groups[0].Partitions) != 2 {
		t.Fatalf("groups: %+v", rep.Groups)
	}
	// The commit after record 129 is position 130, the 9th record after
	// the transactions (122..), which the target holds at 110+8.
	if gp := rep.Groups[0].Partitions[0]; gp.Source != 130 || gp.SourceOnTarget != 118 || gp.Target != -1 || gp.InSync {
		t.Errorf("group partition 0: %+v", gp)
	}

	// A stray record written straight into the target: past the map's end.
	produce(t, ctx, client(t, dst, manual), &kgo.Record{Topic: topic, Partition: 0, Value: []byte("stray")})
	rep, err = offsetsync.Verify(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p0 = rep.Partitions[0]
	if rep.OK() || p0.Verdict != offsetsync.VerifyMismatch || p0.TargetUnmapped != 1 || !strings.Contains(p0.Reason, "past the mapped end (offsets 160..160)") {
		t.Fatalf("stray record at the target's tail not reported: %+v", p0)
	}
	if rep.Partitions[1].Verdict != offsetsync.VerifyOK {
		t.Errorf("partition 1 should stay ok: %+v", rep.Partitions[1])
	}
	t.Logf("stray tail: %s", rep.Problems()[0])

	// The next source record: a restarted mirror takes the target's
	// unmapped tail for its own copy of it (it cannot tell), so the map is
	// whole again and only the records' bytes tell.
	plain(0, 150, 1)
	mirrorUntil(t, src, dst, maps, topic, 2, mapped+1)
	rep, err = offsetsync.Verify(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p0 = rep.Partitions[0]
	if rep.OK() || p0.Verdict != offsetsync.VerifyMismatch || !strings.Contains(p0.Reason, "record at virtual offset 172 (source 172, target 160): key, value, headers, timestamp differs") ||
		p0.Source.Checksum == p0.Target.Checksum {
		t.Fatalf("adopted stray record not reported: %+v", p0)
	}
	t.Logf("adopted stray: %s", rep.Problems()[0])

	// The window can miss it: checksums off, the map alone agrees.
	cfg.ChecksumRecords = -1
	if rep, err = offsetsync.Verify(ctx, cfg); err != nil || !rep.OK() {
		t.Errorf("without checksums the map is consistent: %v %v", err, rep.Problems())
	}

	// Unknown topics are refused as such.
	cfg.Topics = []string{"no-such-topic"}
	if _, err := offsetsync.Verify(ctx, cfg); err == nil || !strings.Contains(err.Error(), "no-such-topic") || !strings.Contains(err.Error(), "unknown topic") {
		t.Errorf("unknown topic: %v", err)
	}
}
