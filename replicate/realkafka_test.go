package replicate

import (
	"context"
	"fmt"
	"math/rand"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The source's log cleaner runs often so that a compacted topic has gaps
// within a test's time.
var (
	realSource = kafkatest.NewShared(kafkatest.Options{Name: "source", BrokerConfig: map[string]string{
		"log.cleaner.backoff.ms": "200", "log.cleaner.min.compaction.lag.ms": "0",
	}})
	realTarget = kafkatest.NewShared(kafkatest.Options{Name: "target"})
)

// mirrorUntil runs an in-process mirror between two real clusters until
// done reports true.
func mirrorUntil(t *testing.T, src, dst *kafkatest.Cluster, maps MapStore, include string, done func() bool, timeout time.Duration) {
	t.Helper()
	m, err := New(Config{
		Source:  []kgo.Opt{kgo.SeedBrokers(src.Bootstrap())},
		Target:  []kgo.Opt{kgo.SeedBrokers(dst.Bootstrap())},
		Topics:  Selection{Include: regexp.MustCompile(include)},
		Maps:    maps,
		Recheck: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	var runErr error
	wg.Add(1)
	go func() { defer wg.Done(); runErr = m.Run(ctx) }()
	for !done() {
		if ctx.Err() != nil {
			t.Fatalf("mirror did not finish in %s: %+v", timeout, m.Status())
		}
		time.Sleep(200 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if runErr != nil {
		t.Fatalf("mirror: %v", runErr)
	}
}

// TestRealMirrorExact copies 200,000 records over 12 partitions, a compacted
// topic with deletes and gaps, and a transactional topic with aborted
// transactions between two real Kafka clusters, then compares every target
// record with its source record through the map.
func TestRealMirrorExact(t *testing.T) {
	src, dst := realSource.Get(t), realTarget.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(src.Bootstrap()), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	// 1. 200,000 records over 12 partitions.
	if resp, err := adm.CreateTopic(ctx, 12, 1, nil, "big"); err != nil || resp.Err != nil {
		t.Fatalf("create topic: %v %v", err, resp.Err)
	}
	const bigN = 200_000
	var produceErr error
	var mu sync.Mutex
	for i := 0; i < bigN; i++ {
		r := &kgo.Record{Topic: "big", Key: []byte(fmt.Sprintf("key-%d", i%1000)), Value: []byte(fmt.Sprintf("value-%d-%s", i, pad)),
			Headers: []kgo.RecordHeader{{Key: "seq", Value: []byte(fmt.Sprint(i))}}}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				produceErr = err
				mu.Unlock()
			}
		})
	}
	if err := cl.Flush(ctx); err != nil || produceErr != nil {
		t.Fatalf("produce: %v %v", err, produceErr)
	}

	// 2. A compacted topic with updates and deletes, compacted before the
	// mirror starts so its log has gaps.
	compacted := map[string]*string{"cleanup.policy": ptr("compact"), "segment.ms": ptr("100"),
		"min.cleanable.dirty.ratio": ptr("0.01"), "delete.retention.ms": ptr("100")}
	if resp, err := adm.CreateTopic(ctx, 2, 1, compacted, "compacted"); err != nil || resp.Err != nil {
		t.Fatalf("create compacted topic: %v %v %s", err, resp.Err, resp.ErrMessage)
	}
	for round := 0; round < 6; round++ {
		for k := 0; k < 200; k++ {
			if k%(round+1) != 0 {
				continue // later rounds update fewer keys, so survivors are scattered: gaps
			}
			r := &kgo.Record{Topic: "compacted", Key: []byte(fmt.Sprintf("k%d", k)), Value: []byte(fmt.Sprintf("r%d", round))}
			if round%2 == 1 && k%5 == 0 {
				r.Value = nil // delete
			}
			cl.Produce(ctx, r, nil)
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // let segment.ms roll the segment
	}
	waitForGaps(t, src.Bootstrap(), "compacted", 2)

	// 3. Transactions, some aborted.
	if resp, err := adm.CreateTopic(ctx, 3, 1, nil, "txns"); err != nil || resp.Err != nil {
		t.Fatalf("create topic: %v %v", err, resp.Err)
	}
	txn, err := kgo.NewClient(kgo.SeedBrokers(src.Bootstrap()), kgo.TransactionalID("mirror-test"), kgo.DefaultProduceTopic("txns"))
	if err != nil {
		t.Fatal(err)
	}
	defer txn.Close()
	rng := rand.New(rand.NewSource(7))
	committed := 0
	for i := 0; i < 40; i++ {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		n := 1 + rng.Intn(50)
		for j := 0; j < n; j++ {
			txn.Produce(ctx, &kgo.Record{Key: []byte(fmt.Sprint(j)), Value: []byte(fmt.Sprintf("txn%d-%d", i, j))}, nil)
		}
		if err := txn.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		commit := rng.Intn(3) != 0
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
		if commit {
			committed += n
		}
	}

	maps := NewMemoryMaps()
	compactedLive := len(readAll(t, []string{src.Bootstrap()}, "compacted", 2)[0]) + len(readAll(t, []string{src.Bootstrap()}, "compacted", 2)[1])
	start := time.Now()
	mirrorUntil(t, src, dst, maps, "^(big|compacted|txns)$", func() bool {
		return mappedCount(maps, "big", 12) == bigN && mappedCount(maps, "txns", 3) == int64(committed) &&
			mappedCount(maps, "compacted", 2) == int64(compactedLive)
	}, 4*time.Minute)
	t.Logf("mirrored %d records in %s", bigN+committed+compactedLive, time.Since(start).Round(time.Millisecond))
	checkExactAddrs(t, []string{src.Bootstrap()}, []string{dst.Bootstrap()}, maps, "big", 12)
	checkExactAddrs(t, []string{src.Bootstrap()}, []string{dst.Bootstrap()}, maps, "compacted", 2)
	checkExactAddrs(t, []string{src.Bootstrap()}, []string{dst.Bootstrap()}, maps, "txns", 3)

	// The target topic got the configs that matter.
	dcl, _ := kgo.NewClient(kgo.SeedBrokers(dst.Bootstrap()))
	defer dcl.Close()
	cfgs, err := kadm.NewClient(dcl).DescribeTopicConfigs(ctx, "compacted")
	if err != nil {
		t.Fatal(err)
	}
	policy, _ := cfgs[0].Configs, 0
	found := false
	for _, c := range policy {
		if c.Key == "cleanup.policy" && c.Value != nil && *c.Value == "compact" {
			found = true
		}
	}
	if !found {
		t.Fatal("target topic 'compacted' lacks cleanup.policy=compact")
	}
}

const pad = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func ptr(s string) *string { return &s }

// waitForGaps waits until the cleaner has compacted topic so that its
// offsets are no longer contiguous.
func waitForGaps(t *testing.T, addr, topic string, partitions int) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		recs := readAll(t, []string{addr}, topic, partitions)
		for _, rs := range recs {
			for i := 1; i < len(rs); i++ {
				if rs[i].offset != rs[i-1].offset+1 {
					return
				}
			}
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("the source's log cleaner never compacted %s; the test needs offset gaps", topic)
}
