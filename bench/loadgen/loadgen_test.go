package loadgen

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestQuantile(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 1000; i++ {
		s = append(s, time.Duration(i))
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500}, {0.99, 990}, {0.999, 999}, {1, 1000}, {0, 1}} {
		if got := Quantile(s, c.q); got != c.want {
			t.Errorf("Quantile(1..1000, %v) = %v, want %v", c.q, got, c.want)
		}
	}
	if got := Quantile(nil, 0.5); got != 0 {
		t.Errorf("Quantile(nil) = %v", got)
	}
	sum := Summarize([]time.Duration{3, 1, 2})
	if sum.P50 != 2 || sum.Max != 3 || sum.Count != 3 {
		t.Errorf("Summarize = %+v", sum)
	}
}

func TestMedian(t *testing.T) {
	if got := Median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("odd: %v", got)
	}
	if got := Median([]float64{4, 1, 2, 3}); got != 2.5 {
		t.Errorf("even: %v", got)
	}
	if got := Median(nil); got != 0 {
		t.Errorf("empty: %v", got)
	}
}

// TestProduceConsume runs the generator against kfake, an in-memory Kafka,
// to check the bookkeeping (counts, bytes, latencies, end-to-end matching);
// the numbers themselves mean nothing here.
func TestProduceConsume(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "tp", "lat"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bs := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	res, err := Produce(ctx, ProduceConfig{Bootstrap: bs, Topic: "tp", RecordSize: 100, Records: 2000, Linger: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 2000 || res.Bytes != 200000 || res.Elapsed <= 0 || res.RecordsPerSec() <= 0 {
		t.Fatalf("throughput run: %+v", res)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(bs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, "tp")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total < 2003 { // 2000 plus at least one warm-up record per partition
		t.Fatalf("topic holds %d records", total)
	}
	cres, err := Consume(ctx, ConsumeConfig{Bootstrap: bs, Topic: "tp", Records: total})
	if err != nil {
		t.Fatal(err)
	}
	if cres.Total != total || cres.Records > total || cres.Bytes > int64(cres.Records)*100 {
		t.Fatalf("consume run: %+v (want %d records)", cres, total)
	}

	lat, err := Produce(ctx, ProduceConfig{Bootstrap: bs, Topic: "lat", RecordSize: 64, Duration: 500 * time.Millisecond, Rate: 200, EndToEnd: true})
	if err != nil {
		t.Fatal(err)
	}
	if lat.Records < 90 || len(lat.Latencies) != int(lat.Records) || len(lat.EndToEnd) != int(lat.Records) {
		t.Fatalf("paced run: %d records, %d ack latencies, %d end-to-end", lat.Records, len(lat.Latencies), len(lat.EndToEnd))
	}
	if s := Summarize(lat.Latencies); s.P50 <= 0 || s.P99 < s.P50 {
		t.Fatalf("latency summary %+v", s)
	}
}

func TestProducePaired(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	bs := c.ListenAddrs()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := ProduceConfig{Bootstrap: bs, Topic: "a", RecordSize: 64, Duration: 300 * time.Millisecond, Rate: 200, EndToEnd: true}
	cfgB := cfg
	cfgB.Topic = "b"
	ra, rb, err := ProducePaired(ctx, cfg, cfgB)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []ProduceResult{ra, rb} {
		if r.Records != 61 || len(r.Latencies) != 61 || len(r.EndToEnd) != 61 {
			t.Fatalf("paired run: %d records, %d latencies, %d end-to-end; want 61 each", r.Records, len(r.Latencies), len(r.EndToEnd))
		}
	}
}

// TestEndToEndOtherCluster: with EndToEndBootstrap the end-to-end consumer
// reads a second cluster, here fed by a minimal copier standing in for a
// mirror, and matches every record (the mirror benchmark's lag).
func TestEndToEndOtherCluster(t *testing.T) {
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "m"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "m"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	in, err := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...), kgo.ConsumeTopics("m"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := kgo.NewClient(kgo.SeedBrokers(dst.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	copyCtx, stopCopy := context.WithCancel(ctx)
	defer stopCopy()
	go func() {
		for copyCtx.Err() == nil {
			in.PollFetches(copyCtx).EachRecord(func(r *kgo.Record) {
				out.Produce(copyCtx, &kgo.Record{Topic: r.Topic, Partition: r.Partition, Key: r.Key, Value: r.Value, Headers: r.Headers}, nil)
			})
		}
	}()

	res, err := Produce(ctx, ProduceConfig{
		Bootstrap: src.ListenAddrs(), Topic: "m", RecordSize: 64, Duration: 300 * time.Millisecond, Rate: 200,
		EndToEnd: true, EndToEndBootstrap: dst.ListenAddrs(), EndToEndTimeout: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 61 || len(res.EndToEnd) != 61 {
		t.Fatalf("%d records, %d end-to-end latencies; want 61 each", res.Records, len(res.EndToEnd))
	}
}
