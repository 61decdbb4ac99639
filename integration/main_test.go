package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

// kafka is the one broker the tests of this package share. Tests run one at
// a time (no t.Parallel): TestBrokerRestart restarts it, and the machine has
// two cores.
var kafka = kafkatest.NewShared(kafkatest.Options{Name: "interop"})

func TestMain(m *testing.M) {
	// Kafka's console consumer prints header keys through Java's default
	// charset, which JDK 17 takes from the locale: under LANG=C a
	// non-ASCII header key comes out as "?". Every tool this package runs
	// gets a UTF-8 locale.
	os.Setenv("LC_ALL", "C.UTF-8")
	os.Exit(kafkatest.RunMain(m))
}

// cluster returns the shared broker, failing t when it cannot start.
func cluster(t *testing.T) *kafkatest.Cluster {
	t.Helper()
	return kafka.Get(t)
}

// testCtx is a context bounded by d and by the test's deadline.
func testCtx(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var nonName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// uniqueName derives a topic or group name from the test name plus a random
// suffix, so reruns against a long-lived broker never collide.
func uniqueName(t *testing.T, kind string) string {
	var b [4]byte
	rand.Read(b[:])
	n := strings.ToLower(nonName.ReplaceAllString(t.Name(), "-"))
	if len(n) > 60 {
		n = n[:60]
	}
	return fmt.Sprintf("%s-%s-%s", n, kind, hex.EncodeToString(b[:]))
}

// directAdmin is a kadm client talking to the broker itself, never through
// the bootstrap under test: set-up and independent checks use it.
func directAdmin(t *testing.T, c *kafkatest.Cluster) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Bootstrap()), kgo.RetryTimeout(20*time.Second))
	if err != nil {
		t.Fatalf("direct admin client: %v", err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// createTopic creates a topic directly on the broker and waits until its
// partitions have leaders.
func createTopic(t *testing.T, c *kafkatest.Cluster, topic string, partitions int32) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	adm := directAdmin(t, c)
	resp, err := adm.CreateTopic(ctx, partitions, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	waitTopic(t, ctx, adm, topic, int(partitions))
}

// waitTopic waits until topic has n partitions, each with a leader.
func waitTopic(t *testing.T, ctx context.Context, adm *kadm.Client, topic string, n int) {
	t.Helper()
	var last string
	for {
		md, err := adm.Metadata(ctx, topic)
		if err == nil {
			td, ok := md.Topics[topic]
			switch {
			case !ok || td.Err != nil:
				last = fmt.Sprintf("topic error %v", td.Err)
			case len(td.Partitions) != n:
				last = fmt.Sprintf("%d partitions", len(td.Partitions))
			default:
				ready := true
				for _, p := range td.Partitions {
					if p.Err != nil || p.Leader < 0 {
						ready = false
						last = fmt.Sprintf("partition %d: leader %d, err %v", p.Partition, p.Leader, p.Err)
					}
				}
				if ready {
					return
				}
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topic %s not ready with %d partitions: %s", topic, n, last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// endOffsets lists the high watermarks of topic's partitions, directly.
func endOffsets(t *testing.T, c *kafkatest.Cluster, topic string) map[int32]int64 {
	t.Helper()
	ctx := testCtx(t, 20*time.Second)
	lo, err := directAdmin(t, c).ListEndOffsets(ctx, topic)
	if err == nil {
		err = lo.Error()
	}
	if err != nil {
		t.Fatalf("list end offsets of %s: %v", topic, err)
	}
	out := map[int32]int64{}
	lo.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// committedOffsets fetches group's committed offsets for topic, directly.
func committedOffsets(t *testing.T, c *kafkatest.Cluster, group, topic string) map[int32]int64 {
	t.Helper()
	ctx := testCtx(t, 20*time.Second)
	offs, err := directAdmin(t, c).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatalf("fetch offsets of group %s: %v", group, err)
	}
	out := map[int32]int64{}
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic {
			if o.Err != nil {
				t.Fatalf("fetch offsets of group %s: %s[%d]: %v", group, o.Topic, o.Partition, o.Err)
			}
			out[o.Partition] = o.At
		}
	})
	return out
}

// assertCommittedAtEnd checks that group committed the end offset of every
// non-empty partition of topic.
func assertCommittedAtEnd(t *testing.T, c *kafkatest.Cluster, group, topic string) {
	t.Helper()
	ends := endOffsets(t, c, topic)
	got := committedOffsets(t, c, group, topic)
	for p, end := range ends {
		if end == 0 {
			continue
		}
		if got[p] != end {
			t.Errorf("group %s: committed offset of %s[%d] = %d, want the end offset %d (all committed: %v)", group, topic, p, got[p], end, got)
		}
	}
}

// readTopic reads every record of a non-transactional topic directly from the
// broker (an independent view, never through the bootstrap under test), in
// offset order per partition. It reads up to the end offsets listed when
// it starts.
func readTopic(t *testing.T, c *kafkatest.Cluster, topic string) []Record {
	t.Helper()
	ends := endOffsets(t, c, topic)
	var want int64
	for _, e := range ends {
		want += e
	}
	ctx := testCtx(t, 60*time.Second)
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.Bootstrap()),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("direct reader: %v", err)
	}
	defer cl.Close()
	next := map[int32]int64{} // next offset expected per partition
	done := func() bool {
		for p, e := range ends {
			if next[p] < e {
				return false
			}
		}
		return true
	}
	var out []Record
	for !done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("direct read of %s: got %d of %d records before %v (next offsets %v, ends %v)", topic, len(out), want, ctx.Err(), next, ends)
		}
		fs.EachError(func(tp string, p int32, err error) {
			t.Fatalf("direct read of %s[%d]: %v", tp, p, err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= ends[r.Partition] {
				return // produced after we listed the ends
			}
			if r.Offset != next[r.Partition] {
				t.Fatalf("direct read of %s[%d]: offset %d after %d (the topic must have no gaps)", topic, r.Partition, r.Offset, next[r.Partition]-1)
			}
			next[r.Partition] = r.Offset + 1
			out = append(out, FromKgo(r))
		})
	}
	sortByPartitionOffset(out)
	return out
}

func sortByPartitionOffset(rs []Record) {
	sort.SliceStable(rs, func(i, j int) bool {
		if rs[i].Partition != rs[j].Partition {
			return rs[i].Partition < rs[j].Partition
		}
		return rs[i].Offset < rs[j].Offset
	})
}

// assertClean fails t with the report when r is not clean.
func assertClean(t *testing.T, what string, r Report) {
	t.Helper()
	if !r.OK() {
		t.Errorf("%s: %s", what, r)
		return
	}
	t.Logf("%s: %s", what, r)
}

// partitionsUsed counts the distinct partitions of rs.
func partitionsUsed(rs []Record) map[int32]int {
	m := map[int32]int{}
	for _, r := range rs {
		m[r.Partition]++
	}
	return m
}
