package raftstore

import (
	"context"
	"testing"
	"time"
)

// TestStuckFlipsRevert: routes left between phases by a node that died
// mid-flip go back to where their sequence started once the bound passes;
// settled routes and fresh flips are left alone; a flip that moved on
// after the janitor looked wins (compare-and-set on the epoch).
func TestStuckFlipsRevert(t *testing.T) {
	m := NewMemory()
	clock := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	m.SetClock(func() time.Time { return clock })
	ctx := context.Background()
	apply := func(c Command) {
		t.Helper()
		if res, err := m.Apply(ctx, c); err != nil || res.Err != nil {
			t.Fatalf("%T: %v %v", c, err, res.Err)
		}
	}
	apply(SetTopicPrimary{Topic: "held", Primary: ProducerDraining})
	apply(SetTopicPrimary{Topic: "moved", Primary: ProducerDraining})
	apply(SetTopicPrimary{Topic: "moved", Primary: ProducerTarget})
	apply(SetGroupPhase{Group: "fenced", Phase: GroupDraining})
	apply(SetGroupPhase{Group: "fenced", Phase: GroupFenced})
	apply(SetGroupPhase{Group: "back", Phase: GroupDraining})
	apply(SetGroupPhase{Group: "back", Phase: GroupFenced})
	apply(SetGroupPhase{Group: "back", Phase: GroupTarget})
	apply(SetGroupPhase{Group: "back", Phase: GroupRollbackDraining})

	if cmds := StuckFlips(m.State(), clock.Add(5*time.Second), 30*time.Second, 3*time.Minute); len(cmds) != 0 {
		t.Fatalf("fresh flips must be left alone: %+v", cmds)
	}
	clock = clock.Add(time.Minute)
	apply(SetTopicPrimary{Topic: "fresh", Primary: ProducerDraining}) // a flip under way now
	cmds := StuckFlips(m.State(), clock.Add(time.Second), 30*time.Second, 3*time.Minute)
	if len(cmds) != 1 {
		t.Fatalf("after a minute only the held topic is stuck: %+v", cmds)
	}
	for _, c := range cmds {
		apply(c)
	}
	if r, _ := m.State().Topic("held"); r.Primary != ProducerSource {
		t.Fatalf("held topic: %+v", r)
	}
	if r, _ := m.State().Topic("moved"); r.Primary != ProducerTarget {
		t.Fatalf("a settled topic moved: %+v", r)
	}

	clock = clock.Add(5 * time.Minute)
	cmds = StuckFlips(m.State(), clock, 30*time.Second, 3*time.Minute)
	if len(cmds) != 3 { // fresh topic, and both groups
		t.Fatalf("after 5 more minutes: %+v", cmds)
	}
	// The fresh topic's flip completes before the janitor's command lands:
	// the stale command must be refused, not undo the flip.
	apply(SetTopicPrimary{Topic: "fresh", Primary: ProducerTarget})
	for _, c := range cmds {
		_, err := m.Apply(ctx, c)
		if st, ok := c.(SetTopicPrimary); ok && st.Topic == "fresh" {
			if err == nil {
				t.Fatal("a stale revert undid a completed flip")
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if g, _ := m.State().Group("fenced"); g.Phase != GroupSource {
		t.Fatalf("fenced group: %+v", g)
	}
	if g, _ := m.State().Group("back"); g.Phase != GroupTarget {
		t.Fatalf("group stuck rolling back: %+v", g)
	}
	if r, _ := m.State().Topic("fresh"); r.Primary != ProducerTarget {
		t.Fatalf("fresh topic: %+v", r)
	}
}
