package proxy

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// startKfakeProxy runs a three-broker kfake cluster and a proxy in front of
// it: the fast test of routing, splitting and rewriting. Real-Kafka tests
// live in ../integration.
func startKfakeProxy(t *testing.T) (*kfake.Cluster, *Proxy) {
	t.Helper()
	fake, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(6, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := Start(ctx, Config{Listen: "127.0.0.1:0", NodeID: 7, Source: Upstream{Bootstrap: fake.ListenAddrs()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return fake, p
}

func TestProduceConsumeThroughProxyAcrossBrokers(t *testing.T) {
	_, p := startKfakeProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Addr()), kgo.ConsumeTopics("t"), kgo.ConsumerGroup("g"), kgo.DefaultProduceTopic("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	// The client must see a one-broker cluster: the proxy.
	md, err := kadm.NewClient(cl).BrokerMetadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Brokers) != 1 || md.Brokers[0].NodeID != 7 || fmt.Sprintf("%s:%d", md.Brokers[0].Host, md.Brokers[0].Port) != p.Addr() {
		t.Fatalf("metadata leaks upstream brokers: %+v", md.Brokers)
	}

	const n = 600
	for i := 0; i < n; i++ {
		r := &kgo.Record{Key: []byte(fmt.Sprint(i % 12)), Value: []byte(fmt.Sprint(i))}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce: %v", err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	lastPerPartition := map[int32]int64{}
	for len(seen) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d: %v", len(seen), n, err)
		}
		fs.EachError(func(topic string, part int32, err error) { t.Errorf("fetch %s/%d: %v", topic, part, err) })
		fs.EachRecord(func(r *kgo.Record) {
			seen[string(r.Value)]++
			if last, ok := lastPerPartition[r.Partition]; ok && r.Offset != last+1 {
				t.Errorf("partition %d: offset %d after %d", r.Partition, r.Offset, last)
			}
			lastPerPartition[r.Partition] = r.Offset
		})
	}
	for v, c := range seen {
		if c != 1 {
			t.Errorf("record %s consumed %d times", v, c)
		}
	}
	if len(lastPerPartition) != 6 {
		t.Errorf("records came from %d partitions, want 6", len(lastPerPartition))
	}
	if err := cl.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	lags, err := kadm.NewClient(cl).Lag(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	total = lags["g"].Lag.Total()
	if total != 0 {
		t.Errorf("group lag after consuming everything = %d, want 0", total)
	}
}

// TestShutdownAnswersRequestsInFlight: a fetch long-polling when the proxy
// shuts down still gets its answer; then the proxy accepts nothing more.
func TestShutdownAnswersRequestsInFlight(t *testing.T) {
	fake, p := startKfakeProxy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	adm, err := kgo.NewClient(kgo.SeedBrokers(fake.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	created, err := kadm.NewClient(adm).CreateTopic(ctx, 1, 1, nil, "shutdown")
	if err == nil {
		err = created.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	// A fetch that waits 2 s at the broker for data that never comes.
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 2000, 1, 1<<20
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = "shutdown", created.ID
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes, rp.CurrentLeaderEpoch, rp.LogStartOffset = 0, 0, 1<<20, -1, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl); err != nil {
		t.Fatal(err)
	}
	type result struct {
		resp *kmsg.FetchResponse
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := req.RequestWith(ctx, cl)
		got <- result{resp, err}
	}()
	time.Sleep(300 * time.Millisecond) // the fetch is now waiting upstream
	start := time.Now()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.err != nil {
		t.Fatalf("fetch in flight at shutdown: %v", r.err)
	}
	if len(r.resp.Topics) != 1 || r.resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("fetch in flight at shutdown answered %+v", r.resp)
	}
	t.Logf("shutdown took %s with a fetch in flight", time.Since(start).Round(time.Millisecond))
	if c, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("the proxy still accepts connections after Shutdown")
	}
}
