package integration

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/kmigrate/kmigrate/internal/proxytest"
)

// TestMultiBrokerMigrationFanout: the proxy has a target (the migration is
// under way), and the source is a real three-broker cluster, so a client's
// fetch spans three source brokers and, once a topic flips, the target
// too. The fetch fan-out must work as without a target:
//
//   - idle: records only in the partitions one source broker leads; no
//     fetch answer with records may wait out the idle brokers' long polls
//     (max wait 5 s), as TestMultiBrokerIdlePartitions measures without a
//     target;
//   - flips: a franz-go group (commit after every poll) consumes two
//     topics, each with partitions led by the three source brokers, under
//     live produce through the proxy; the group flips, then one topic's
//     producers flip (its sub-fetches long-polling then are answered
//     NOT_LEADER_OR_FOLLOWER, and the client's fetches then span the
//     target and the three source brokers; the target's offsets are not
//     the client's). Record by record: 0 lost, 0 duplicated, 0 reordered,
//     0 delivered again after a commit.
func TestMultiBrokerMigrationFanout(t *testing.T) {
	src := kafkatest.StartT(t, kafkatest.Options{Name: "multi-migration", Brokers: 3})
	dst := target.Get(t)
	idle, flipped, stays := uniqueName(t, "idle"), uniqueName(t, "flipped"), uniqueName(t, "stays")
	for _, topic := range []string{idle, flipped, stays} {
		createTopic(t, src, topic, 6)
	}
	adm := directAdmin(t, src)
	ctx := testCtx(t, 5*time.Minute)
	for _, topic := range []string{idle, flipped, stays} {
		if leaders := partitionLeaders(t, ctx, adm, topic); len(distinctValues(leaders)) != 3 {
			t.Fatalf("%s: partition leaders %v span brokers %v, want 3 (the test needs fetches split three ways)", topic, leaders, distinctValues(leaders))
		}
	}
	// The flipped topic's first records are deleted before the mirror
	// starts, which then maps target offset 0 to the source's log start:
	// the target's offsets differ from the client's, so an answer not
	// translated would show.
	shiftVirtual(t, ctx, src, adm, flipped, 300)
	proxy := proxytest.Start(t, "--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", regexp.QuoteMeta(idle)+"|"+regexp.QuoteMeta(flipped)+"|"+regexp.QuoteMeta(stays), "--data-dir", t.TempDir())

	t.Run("idle brokers", func(t *testing.T) {
		leaders := partitionLeaders(t, ctx, adm, idle)
		busy := leaders[0]
		var busyParts []int32
		for p, l := range leaders {
			if l == busy {
				busyParts = append(busyParts, p)
			}
		}
		slices.Sort(busyParts)
		prod, err := kgo.NewClient(
			kgo.SeedBrokers(src.Bootstrap()),
			kgo.DefaultProduceTopic(idle),
			kgo.RecordPartitioner(kgo.ManualPartitioner()),
			kgo.ProducerBatchMaxBytes(16<<10), // batches below the fetch's partition limit
			kgo.ProducerBatchCompression(kgo.NoCompression()),
		)
		if err != nil {
			t.Fatal(err)
		}
		defer prod.Close()
		const n = 2000
		recs := make([]*kgo.Record, n)
		for i := range recs {
			recs[i] = franzRecord(i, "idle")
			recs[i].Value = append(recs[i].Value, make([]byte, 1024)...)
			recs[i].Partition = busyParts[i%len(busyParts)]
		}
		produced := produceAll(t, ctx, prod, recs)
		sortByPartitionOffset(produced)

		const maxWait = 5 * time.Second
		fetches := &fetchTimes{}
		cons, err := kgo.NewClient(
			kgo.SeedBrokers(proxy.Addr),
			kgo.ConsumeTopics(idle),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchMaxWait(maxWait),
			kgo.FetchMaxPartitionBytes(64<<10),
			kgo.FetchMaxBytes(256<<10),
			kgo.WithHooks(fetches),
		)
		if err != nil {
			t.Fatal(err)
		}
		defer cons.Close()
		consumed := pollUntil(t, ctx, cons, n, time.Second)
		sortByPartitionOffset(consumed)
		assertClean(t, "acknowledgements vs franz-go consumer through the proxy with a target", Compare(produced, consumed))
		withRecords, slowest := fetches.summary()
		t.Logf("%d fetch answers with records; the slowest took %v (max wait %v; idle brokers lead %d of %d partitions)",
			withRecords, slowest.Round(time.Millisecond), maxWait, len(leaders)-len(busyParts), len(leaders))
		if withRecords < 10 {
			t.Errorf("only %d fetch answers with records: fetches too large to show a wait per fetch", withRecords)
		}
		if slowest >= maxWait/2 {
			t.Errorf("a fetch answer with records took %v: it waited for idle brokers' long polls (max wait %v)", slowest, maxWait)
		}
	})

	t.Run("group and topic flips", func(t *testing.T) {
		// Sequence numbers of the topic that stays on the source start at
		// stayBase, so one consumer's deliveries split by topic.
		const stayBase = 1 << 30
		group := uniqueName(t, "group")
		prodFlipped := newSeqProducer(t, ctx, proxy.Addr, flipped, 0)
		defer prodFlipped.stop()
		prodStays := newSeqProducer(t, ctx, proxy.Addr, stays, stayBase)
		defer prodStays.stop()
		cons := newSeqConsumer(t, ctx, proxy.Addr, flipped, group, kgo.ConsumeTopics(flipped, stays))
		defer cons.stop()
		waitFor(t, ctx, "the group to consume", func() bool { return cons.count() > 2000 })

		if out, err := proxy.CLI(t, "cutover", "group", group); err != nil {
			t.Fatalf("cutover group: %v\n%s", err, out)
		}
		n := cons.count()
		waitFor(t, ctx, "consumption after the group flip", func() bool { return cons.count() > n+2000 })

		flipStart := time.Now()
		out, err := proxy.CLI(t, "cutover", "topic", flipped)
		if err != nil {
			t.Fatalf("cutover topic: %v\n%s", err, out)
		}
		t.Logf("cutover topic after %v: %s", time.Since(flipStart).Round(time.Millisecond), strings.TrimSpace(out))
		n = cons.count()
		waitFor(t, ctx, "consumption after the topic flip", func() bool { return cons.count() > n+3000 })

		sentFlipped, sentStays := prodFlipped.stop(), prodStays.stop()-stayBase
		waitFor(t, ctx, "every record consumed", func() bool { return cons.count() >= sentFlipped+sentStays })
		time.Sleep(time.Second) // anything delivered twice arrives now
		got, afterCommit := cons.stop()
		var gotFlipped, gotStays []consumed
		for _, c := range got {
			if c.seq >= stayBase {
				c.seq -= stayBase
				gotStays = append(gotStays, c)
			} else {
				gotFlipped = append(gotFlipped, c)
			}
		}
		for _, r := range []struct {
			name string
			got  []consumed
			sent int
			errs int
		}{{"flipped topic", gotFlipped, sentFlipped, prodFlipped.errors()}, {"topic on the source", gotStays, sentStays, prodStays.errors()}} {
			lost, dup, reordered := countDeliveries(r.got, r.sent)
			t.Logf("%s: %d records, %d deliveries: lost %d, duplicated %d, reordered %d; produce errors %d",
				r.name, r.sent, len(r.got), lost, dup, reordered, r.errs)
			if lost != 0 || dup != 0 || reordered != 0 || r.errs != 0 {
				logDuplicates(t, r.got)
				t.Errorf("%s: lost %d, duplicated %d, reordered %d, produce errors %d: want all 0", r.name, lost, dup, reordered, r.errs)
			}
		}
		t.Logf("delivered again after a commit: %d", afterCommit)
		if afterCommit != 0 {
			t.Errorf("%d records delivered again after a commit, want 0", afterCommit)
		}
	})
}

// shiftVirtual writes n records to each partition of topic straight to the
// source and deletes them, so that the topic's log starts at n.
func shiftVirtual(t *testing.T, ctx context.Context, src *kafkatest.Cluster, adm *kadm.Client, topic string, n int) {
	t.Helper()
	prod, err := kgo.NewClient(kgo.SeedBrokers(src.Bootstrap()), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	leaders := partitionLeaders(t, ctx, adm, topic)
	var recs []*kgo.Record
	for p := range leaders {
		for range n {
			recs = append(recs, &kgo.Record{Partition: p, Value: []byte("deleted")})
		}
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("write %s's records to delete: %v", topic, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("%s end offsets: %v", topic, err)
	}
	deleted, err := adm.DeleteRecords(ctx, ends.Offsets())
	if err == nil {
		err = deleted.Error()
	}
	if err != nil {
		t.Fatalf("delete %s's first records: %v", topic, err)
	}
}
