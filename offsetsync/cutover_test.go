package offsetsync

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// memPhases is a PhaseStore in memory with the transitions the raft store
// enforces: a move must start from the phase the caller names.
type memPhases struct {
	mu     sync.Mutex
	phases map[string]string
}

func (m *memPhases) GroupPhase(g string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p, ok := m.phases[g]; ok {
		return p
	}
	return PhaseSource
}

func (m *memPhases) SetGroupPhase(_ context.Context, g, from, to string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.phases[g]
	if !ok {
		cur = PhaseSource
	}
	if cur != from {
		return fmt.Errorf("group %s is %s, not %s", g, cur, from)
	}
	m.phases[g] = to
	return nil
}

type noGate struct{}

func (noGate) HeldMembers(string) map[string]bool { return nil }
func (noGate) InflightCommits(string) int         { return 0 }

func newCutoverForTest(t *testing.T) (*Cutover, *kgo.Client, *kgo.Client, *memPhases) {
	t.Helper()
	var clients [2]*kgo.Client
	for i := range clients {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "t"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		if clients[i], err = kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(clients[i].Close)
	}
	phases := &memPhases{phases: map[string]string{}}
	identity := OffsetMap{{Virtual: 0, Source: 0, Target: 0, Length: 1000}}
	return &Cutover{
		Source: clients[0], Target: clients[1], Phases: phases, Gate: noGate{},
		Maps:    func(string, int32) OffsetMap { return identity },
		Covered: func(context.Context, string, int32, int64) error { return nil },
	}, clients[0], clients[1], phases
}

// TestCutoverMisuse: an unknown group is refused, a flip asked twice is a
// no-op the second time, and a rollback cannot start while a cutover holds
// the group.
func TestCutoverMisuse(t *testing.T) {
	cut, src, dst, phases := newCutoverForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if _, err := cut.Run(ctx, "nobody", true); !errors.Is(err, ErrUnknownGroup) {
		t.Fatalf("cutover of an unknown group: err = %v, want ErrUnknownGroup", err)
	}
	if p := phases.GroupPhase("nobody"); p != PhaseSource {
		t.Fatalf("a refused cutover left the group in %s", p)
	}

	// A group with commits but no members moves, offsets translated.
	offs := make(kadm.Offsets)
	offs.Add(kadm.Offset{Topic: "t", Partition: 1, At: 42, LeaderEpoch: -1})
	if _, err := kadm.NewClient(src).CommitOffsets(ctx, "g", offs); err != nil {
		t.Fatal(err)
	}
	rep, err := cut.Run(ctx, "g", true)
	if err != nil || rep.Phase != PhaseTarget || rep.Partitions != 1 {
		t.Fatalf("cutover: %+v, %v", rep, err)
	}
	got, err := kadm.NewClient(dst).FetchOffsets(ctx, "g")
	if o, ok := got.Lookup("t", 1); err != nil || !ok || o.At != 42 {
		t.Fatalf("target commit = %+v (%v), want 42", o, err)
	}
	rep, err = cut.Run(ctx, "g", true)
	if err != nil || !rep.AlreadyDone {
		t.Fatalf("second cutover: %+v, %v; want AlreadyDone", rep, err)
	}

	// A cutover in progress (fenced, say after a crash) blocks a rollback.
	phases.phases["h"] = PhaseFenced
	if _, err := cut.Run(ctx, "h", false); !errors.Is(err, ErrInProgress) {
		t.Fatalf("rollback during a cutover: err = %v, want ErrInProgress", err)
	}
}
