package integration

import (
	"testing"
	"time"
)

// TestJudgeSharedOwnership: the judge of the client cutover tests counts
// an assignment of a partition to a member while another member's
// callbacks say it still owns it (TestGroupCutoverJava after a rollback:
// java-2 joined the source's group alone and took java-1's partitions,
// which java-1 kept consuming), and not a handoff reported in order, even
// within one millisecond. It needs no broker.
func TestJudgeSharedOwnership(t *testing.T) {
	at := func(ms int) time.Time { return time.UnixMilli(1_795_689_333_000 + int64(ms)) }
	led := newLedger()
	led.own("java-1", []int32{0, 1}, true, at(0))
	led.own("java-2", []int32{3, 4}, true, at(0))
	// Ordered handoff of partition 4, revoke and assignment in the same
	// millisecond.
	led.own("java-2", []int32{4}, false, at(100))
	led.own("java-1", []int32{4}, true, at(100))
	// java-2 alone in a new generation: partitions 0 and 1 while java-1
	// still owns them; java-1 gives them up only later.
	led.own("java-2", []int32{0, 1}, true, at(921))
	led.own("java-1", []int32{0, 1}, false, at(1600))
	v := led.judge(map[int32]int64{0: 0, 1: 0, 3: 0, 4: 0})
	for p, want := range map[int32]int64{0: 1, 1: 1, 3: 0, 4: 0} {
		if got := v[p].sharedOwner; got != want {
			t.Errorf("partition %d: owned by two members at once %d, want %d (%s)", p, got, want, v[p].example)
		}
	}
	if ex := v[0].example; ex != "java-2 was assigned the partition at "+at(921).Format("15:04:05.000")+" while java-1 owned it (since "+at(0).Format("15:04:05.000")+")" {
		t.Errorf("example: %s", ex)
	}
}
