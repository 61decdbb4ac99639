package replicate

import (
	"context"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestCoveredPastTransactionMarkers: a position after an aborted
// transaction's marker (no data record follows) is covered once the mirror
// has seen the marker, and translates to the target's end; a position past
// the log's end is not covered.
func TestCoveredPastTransactionMarkers(t *testing.T) {
	src := newFake(t, kfake.SeedTopics(1, "tail"))
	dst := newFake(t)
	produceWorkload(t, src.ListenAddrs(), "tail", 20) // ends with an aborted transaction
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cl, _ := kgo.NewClient(kgo.SeedBrokers(src.ListenAddrs()...))
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, "tail")
	if err != nil {
		t.Fatal(err)
	}
	end, _ := ends.Lookup("tail", 0)

	maps := NewMemoryMaps()
	m, err := New(Config{
		Source: []kgo.Opt{kgo.SeedBrokers(src.ListenAddrs()...)},
		Target: []kgo.Opt{kgo.SeedBrokers(dst.ListenAddrs()...)},
		Topics: Selection{Include: regexp.MustCompile("^tail$")},
		Maps:   maps,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(runCtx) }()

	tp := Partition{"tail", 0}
	if err := m.Covered(ctx, tp, end.Offset); err != nil {
		t.Fatalf("position %d (after the abort marker) never covered: %v", end.Offset, err)
	}
	om := maps.Map(tp)
	if om.End() >= end.Offset {
		t.Fatalf("the test needs a marker tail: map ends at %d, log at %d", om.End(), end.Offset)
	}
	got, err := om.PositionToTarget(end.Offset, true)
	if err != nil || got != 30 { // 20 records + 10 committed transactional ones
		t.Fatalf("PositionToTarget(%d) = %d, %v; want 30, the target's end", end.Offset, got, err)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if err := m.Covered(short, tp, end.Offset+1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a position past the log end reported covered: %v", err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
