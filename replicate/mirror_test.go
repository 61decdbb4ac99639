package replicate

import (
	"context"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

type rec struct {
	key, value, header string
	ts                 int64
	offset             int64
}

func newFake(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// readAll reads every committed record of topic from a cluster, per partition.
func readAll(t *testing.T, addrs []string, topic string, partitions int) map[int32][]rec {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	out := map[int32][]rec{}
	idle := 0
	for idle < 2 {
		pctx, pcancel := context.WithTimeout(ctx, 700*time.Millisecond)
		fs := cl.PollFetches(pctx)
		pcancel()
		n := 0
		fs.EachRecord(func(r *kgo.Record) {
			n++
			h := ""
			for _, hd := range r.Headers {
				h += hd.Key + "=" + string(hd.Value) + ";"
			}
			out[r.Partition] = append(out[r.Partition], rec{string(r.Key), string(r.Value), h, r.Timestamp.UnixMilli(), r.Offset})
		})
		if n == 0 {
			idle++
		} else {
			idle = 0
		}
		if ctx.Err() != nil {
			t.Fatal("timed out reading", topic)
		}
	}
	return out
}

// produceWorkload writes keyed records with headers and explicit timestamps,
// plus one committed and one aborted transaction, to the source.
func produceWorkload(t *testing.T, addrs []string, topic string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	base := time.UnixMilli(1_700_000_000_000)
	for i := 0; i < n; i++ {
		r := &kgo.Record{Key: []byte(fmt.Sprintf("k%d", i%7)), Value: []byte(fmt.Sprintf("v%d", i)),
			Headers: []kgo.RecordHeader{{Key: "h", Value: []byte(fmt.Sprint(i))}}, Timestamp: base.Add(time.Duration(i) * time.Millisecond)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for _, commit := range []bool{true, false} {
		txn, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.DefaultProduceTopic(topic), kgo.TransactionalID(fmt.Sprintf("txn-%v", commit)))
		if err != nil {
			t.Fatal(err)
		}
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 10; i++ {
			txn.Produce(ctx, &kgo.Record{Key: []byte(fmt.Sprintf("k%d", i%7)), Value: []byte(fmt.Sprintf("txn-%v-%d", commit, i))}, nil)
		}
		if err := txn.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
		txn.Close()
	}
}

// runMirror runs a mirror until the target holds want records, then stops it.
func runMirror(t *testing.T, src, dst *kfake.Cluster, maps MapStore, topic string, until func() bool) {
	t.Helper()
	m, err := New(Config{
		Source: []kgo.Opt{kgo.SeedBrokers(src.ListenAddrs()...)},
		Target: []kgo.Opt{kgo.SeedBrokers(dst.ListenAddrs()...)},
		Topics: Selection{Include: regexp.MustCompile("^" + topic + "$")},
		Maps:   maps, Recheck: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var runErr error
	wg.Add(1)
	go func() { defer wg.Done(); runErr = m.Run(ctx) }()
	for !until() {
		if ctx.Err() != nil {
			t.Fatalf("mirror did not finish: %+v", m.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if runErr != nil {
		t.Fatalf("mirror: %v", runErr)
	}
}

func mappedCount(maps MapStore, topic string, partitions int) int64 {
	var n int64
	for p := 0; p < partitions; p++ {
		for _, s := range maps.Map(Partition{topic, int32(p)}) {
			n += s.Length
		}
	}
	return n
}

// checkExact asserts the target holds exactly the source's committed
// records in order, and that the map sends each source offset to the
// target offset of the same record.
func checkExact(t *testing.T, src, dst *kfake.Cluster, maps MapStore, topic string, partitions int) {
	t.Helper()
	checkExactAddrs(t, src.ListenAddrs(), dst.ListenAddrs(), maps, topic, partitions)
}

func checkExactAddrs(t *testing.T, src, dst []string, maps MapStore, topic string, partitions int) {
	t.Helper()
	want := readAll(t, src, topic, partitions)
	got := readAll(t, dst, topic, partitions)
	for p := int32(0); p < int32(partitions); p++ {
		w, g := want[p], got[p]
		if len(w) != len(g) {
			t.Fatalf("partition %d: source has %d records, target %d", p, len(w), len(g))
		}
		m := maps.Map(Partition{topic, p})
		for i := range w {
			if w[i].key != g[i].key || w[i].value != g[i].value || w[i].header != g[i].header || w[i].ts != g[i].ts {
				t.Fatalf("partition %d record %d differs: source %+v target %+v", p, i, w[i], g[i])
			}
			tgt, ok := sourceToTarget(m, w[i].offset)
			if !ok || tgt != g[i].offset {
				t.Fatalf("partition %d: map sends source offset %d to %d (ok=%v), the record is at target offset %d", p, w[i].offset, tgt, ok, g[i].offset)
			}
		}
	}
}

func sourceToTarget(m offsetsync.OffsetMap, src int64) (int64, bool) {
	for _, s := range m {
		if src >= s.Source && src < s.SourceEnd() {
			return s.Target + src - s.Source, true
		}
	}
	return 0, false
}

func TestMirrorCopiesExactlyWithMap(t *testing.T) {
	src := newFake(t, kfake.SeedTopics(3, "orders"))
	dst := newFake(t)
	produceWorkload(t, src.ListenAddrs(), "orders", 300)
	maps := NewMemoryMaps()
	runMirror(t, src, dst, maps, "orders", func() bool { return mappedCount(maps, "orders", 3) == 310 })
	checkExact(t, src, dst, maps, "orders", 3)
}

// lossyMaps forgets every Append after the first few, as if the process died
// after the target acknowledged records but before their mapping was stored.
type lossyMaps struct {
	*MemoryMaps
	mu      sync.Mutex
	allowed int
}

func (l *lossyMaps) Append(ctx context.Context, tp Partition, segs []offsetsync.Segment) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(segs) == 1 && segs[0].Length == 0 {
		return l.MemoryMaps.Append(ctx, tp, segs) // anchors are written before any copy
	}
	if l.allowed == 0 {
		return nil
	}
	l.allowed--
	return l.MemoryMaps.Append(ctx, tp, segs)
}

func TestMirrorResumesWithoutDuplicatesAfterLostMappings(t *testing.T) {
	src := newFake(t, kfake.SeedTopics(2, "events"))
	dst := newFake(t)
	produceWorkload(t, src.ListenAddrs(), "events", 200)
	maps := NewMemoryMaps()
	lossy := &lossyMaps{MemoryMaps: maps, allowed: 1}
	// First run: copies everything but records only the first mapping.
	runMirror(t, src, dst, lossy, "events", func() bool { return targetRecords(t, dst.ListenAddrs(), "events") == 210 })
	if got := mappedCount(maps, "events", 2); got >= 210 {
		t.Fatalf("the lossy store kept %d mappings; the test needs some lost", got)
	}
	// Second run: must map the records already in the target, not copy them again.
	produceWorkload(t, src.ListenAddrs(), "events", 50)
	runMirror(t, src, dst, maps, "events", func() bool { return mappedCount(maps, "events", 2) == 270 })
	checkExact(t, src, dst, maps, "events", 2)
}

// targetRecords sums the end offsets of a topic (the mirror's target holds
// no markers, so this is its record count).
func targetRecords(t *testing.T, addrs []string, topic string) int64 {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return -1
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}
