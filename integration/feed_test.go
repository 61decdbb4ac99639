package integration

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/proxytest"
)

// TestMirrorFeedDualWrite: records produced through the proxy reach the
// mirror from the Produce path (dual-write), while another producer writes
// the same partitions straight to the source, so fed batches keep finding
// gaps the fetch must fill. Afterwards the target holds exactly the
// source's records, partition by partition in the same order (key, value,
// headers, timestamp), and the metrics show both paths were used.
func TestMirrorFeedDualWrite(t *testing.T) {
	src, dst := cluster(t), target.Get(t)
	topic := uniqueName(t, "topic")
	const partitions = 3
	createTopicOn(t, src.Bootstrap(), topic, partitions)
	ctx := testCtx(t, 4*time.Minute)
	proxy := proxytest.Start(t, "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", topic, "--data-dir", t.TempDir())
	// The mirror must write the partitions before anything can be fed: a
	// record per partition, then wait until the target has each.
	dstAdm := directAdmin(t, dst)
	warm, err := kgo.NewClient(kgo.SeedBrokers(proxy.Addr), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	for p := int32(0); p < partitions; p++ {
		if err := warm.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Value: []byte("warm-up")}).FirstErr(); err != nil {
			t.Fatalf("warm-up produce: %v", err)
		}
	}
	warm.Close()
	waitFor(t, ctx, "the mirror to copy the warm-up records", func() bool {
		ends, err := dstAdm.ListEndOffsets(ctx, topic)
		if err != nil {
			return false
		}
		copied := 0
		ends.Each(func(o kadm.ListedOffset) {
			if o.Offset > 0 {
				copied++
			}
		})
		return copied == partitions
	})

	viaProxy, err := kgo.NewClient(kgo.SeedBrokers(proxy.Addr), kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchCompression(kgo.SnappyCompression()), kgo.ProducerLinger(2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer viaProxy.Close()
	direct, err := kgo.NewClient(kgo.SeedBrokers(src.Bootstrap()), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()

	const viaProxyN, directN = 20_000, 2_000
	done := make(chan error, 1)
	go func() {
		for i := 0; i < directN; i++ {
			if err := direct.ProduceSync(ctx, &kgo.Record{Key: []byte(strconv.Itoa(i % 7)), Value: []byte("direct-" + strconv.Itoa(i))}).FirstErr(); err != nil {
				done <- fmt.Errorf("direct produce %d: %w", i, err)
				return
			}
			time.Sleep(time.Millisecond)
		}
		done <- nil
	}()
	for i := 0; i < viaProxyN; i++ {
		r := &kgo.Record{Key: []byte(strconv.Itoa(i % 11)), Value: []byte("proxy-" + strconv.Itoa(i)),
			Headers: []kgo.RecordHeader{{Key: "seq", Value: []byte(strconv.Itoa(i))}}}
		if i%97 == 0 {
			r.Value = nil // a tombstone
		}
		viaProxy.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce through the proxy: %v", err)
			}
		})
		if i%20 == 0 {
			time.Sleep(10 * time.Millisecond) // about 2,000 records/s for 10 s, beside the direct producer
		}
	}
	if err := viaProxy.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	srcAdm := directAdmin(t, src)
	srcEnds, err := srcAdm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the target to hold every record", func() bool {
		ends, err := dstAdm.ListEndOffsets(ctx, topic)
		if err != nil {
			return false
		}
		var n int64
		ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
		return n >= viaProxyN+directN+partitions
	})
	time.Sleep(500 * time.Millisecond) // a duplicate would land now
	dstEnds, err := dstAdm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for p := int32(0); p < partitions; p++ {
		s, _ := srcEnds.Lookup(topic, p)
		d, _ := dstEnds.Lookup(topic, p)
		if s.Offset != d.Offset {
			t.Errorf("partition %d: source ends at %d, target at %d", p, s.Offset, d.Offset)
		}
	}
	srcRecs := readPartitionsFrom(t, ctx, src.Bootstrap(), topic, srcEnds)
	dstRecs := readPartitionsFrom(t, ctx, dst.Bootstrap(), topic, dstEnds)
	mismatches := 0
	for p := int32(0); p < partitions; p++ {
		a, b := srcRecs[p], dstRecs[p]
		if len(a) != len(b) {
			t.Errorf("partition %d: %d records on the source, %d on the target", p, len(a), len(b))
		}
		for i := 0; i < min(len(a), len(b)); i++ {
			if a[i] != b[i] {
				if mismatches++; mismatches <= 5 {
					t.Errorf("partition %d record %d: source %q, target %q", p, i, a[i], b[i])
				}
			}
		}
	}
	fed := scrapeGauge(t, proxy.Admin, "kmigrate_mirror_fed_records_total")
	dropped := scrapeGauge(t, proxy.Admin, "kmigrate_mirror_fed_dropped_total")
	t.Logf("%d records through the proxy, %d straight to the source: target equals source record by record (%d mismatches); %.0f records copied from the produce path, %.0f fed batches left to the fetch", viaProxyN, directN, mismatches, fed, dropped)
	if fed == 0 {
		t.Fatalf("no record was copied from the produce path (kmigrate_mirror_fed_records_total = 0)")
	}
}

// readPartitionsFrom reads every record of topic up to ends from addr, as
// "key|value|headers|timestamp" strings per partition, in offset order.
func readPartitionsFrom(t *testing.T, ctx context.Context, addr, topic string, ends kadm.ListedOffsets) map[int32][]string {
	t.Helper()
	offsets := map[int32]kgo.Offset{}
	want := 0
	ends.Each(func(o kadm.ListedOffset) {
		offsets[o.Partition] = kgo.NewOffset().AtStart()
		want += int(o.Offset)
	})
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	out := map[int32][]string{}
	got := 0
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for got < want && rctx.Err() == nil {
		fs := cl.PollFetches(rctx)
		fs.EachRecord(func(r *kgo.Record) {
			e, _ := ends.Lookup(topic, r.Partition)
			if r.Offset >= e.Offset {
				return
			}
			out[r.Partition] = append(out[r.Partition], fmt.Sprintf("%q|%q|%v|%d", r.Key, r.Value, r.Headers, r.Timestamp.UnixMilli()))
			got++
		})
	}
	if got < want {
		t.Fatalf("read %d of %d records from %s", got, want, addr)
	}
	return out
}
