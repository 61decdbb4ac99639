package replicate

import (
	"context"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// owners is a toy control plane for two mirrors: which node writes each
// partition, with an epoch, and a map store that refuses appends from a
// node that does not hold the partition at the epoch it took it with (what
// raftstore's AppendSegments does).
type owners struct {
	mu    sync.Mutex
	owner map[Partition]string
	epoch map[Partition]int
	maps  *MemoryMaps
}

func (o *owners) set(tp Partition, node string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.owner[tp] = node
	o.epoch[tp]++
}

// node is one mirror's view: Owns and the map store with its held epochs.
type node struct {
	o    *owners
	name string
	mu   sync.Mutex
	held map[Partition]int
}

func (n *node) Owns(tp Partition) bool {
	n.o.mu.Lock()
	owner, epoch := n.o.owner[tp], n.o.epoch[tp]
	n.o.mu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if owner != n.name {
		delete(n.held, tp)
		return false
	}
	if e, ok := n.held[tp]; ok && e != epoch {
		delete(n.held, tp)
		return false
	}
	n.held[tp] = epoch
	return true
}

func (n *node) Map(tp Partition) offsetsync.OffsetMap { return n.o.maps.Map(tp) }

func (n *node) Append(ctx context.Context, tp Partition, segs []offsetsync.Segment) error {
	n.mu.Lock()
	e, ok := n.held[tp]
	n.mu.Unlock()
	n.o.mu.Lock()
	defer n.o.mu.Unlock()
	if !ok || n.o.owner[tp] != n.name || n.o.epoch[tp] != e {
		return fmt.Errorf("%w: %s/%d", ErrNotOwner, tp.Topic, tp.Partition)
	}
	return n.o.maps.Append(ctx, tp, segs)
}

func startOwnedMirror(t *testing.T, src, dst *kfake.Cluster, n *node, topic string) (stop func()) {
	t.Helper()
	m, err := New(Config{
		Source: []kgo.Opt{kgo.SeedBrokers(src.ListenAddrs()...)},
		Target: []kgo.Opt{kgo.SeedBrokers(dst.ListenAddrs()...)},
		Topics: Selection{Include: regexp.MustCompile("^" + topic + "$")},
		Maps:   n, Owns: n.Owns, Recheck: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mirror %s: %v", n.name, err)
		}
		m.Close()
	}
}

// TestMirrorOwnsOnlyItsPartitions: two mirrors share three partitions by
// ownership; partitions move between them while records flow, and the target
// still holds every record exactly once, in order, with an exact map.
func TestMirrorOwnsOnlyItsPartitions(t *testing.T) {
	src := newFake(t, kfake.SeedTopics(3, "shared"))
	dst := newFake(t)
	o := &owners{owner: map[Partition]string{}, epoch: map[Partition]int{}, maps: NewMemoryMaps()}
	a := &node{o: o, name: "a", held: map[Partition]int{}}
	b := &node{o: o, name: "b", held: map[Partition]int{}}
	p := func(i int32) Partition { return Partition{"shared", i} }
	o.set(p(0), "a")
	o.set(p(1), "b")
	// p(2) has no writer yet: nothing may copy it.
	stopA := startOwnedMirror(t, src, dst, a, "shared")
	stopB := startOwnedMirror(t, src, dst, b, "shared")
	defer func() { stopA(); stopB() }()

	produceWorkload(t, src.ListenAddrs(), "shared", 150)
	srcRecs := readAll(t, src.ListenAddrs(), "shared", 3)
	want01 := int64(len(srcRecs[0]) + len(srcRecs[1]))
	waitUntil(t, "partitions 0 and 1 mirrored", 20*time.Second, func() bool { return mappedCount(o.maps, "shared", 2) == want01 })
	if m := o.maps.Map(p(2)); len(m) != 0 {
		t.Fatalf("partition 2 has no writer but was mapped: %v", m)
	}

	// Give partition 2 to b and move partition 0 from a to b, then 1 from
	// b to a, with records arriving after each move. (Moves happen here
	// when the previous writer has nothing in flight, as in production,
	// where a partition moves only away from a dead node.)
	all := func() int64 {
		var n int64
		for _, rs := range readAll(t, src.ListenAddrs(), "shared", 3) {
			n += int64(len(rs))
		}
		return n
	}
	o.set(p(2), "b")
	o.set(p(0), "b")
	produceWorkload(t, src.ListenAddrs(), "shared", 100)
	want := all()
	waitUntil(t, "everything mirrored", 30*time.Second, func() bool { return mappedCount(o.maps, "shared", 3) == want })
	o.set(p(1), "a")
	produceWorkload(t, src.ListenAddrs(), "shared", 100)
	want = all()
	waitUntil(t, "everything mirrored again", 30*time.Second, func() bool { return mappedCount(o.maps, "shared", 3) == want })
	checkExact(t, src, dst, o.maps, "shared", 3)
}
