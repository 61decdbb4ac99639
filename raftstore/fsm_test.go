package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/kmigrate/kmigrate/offsetsync"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

var ctx = context.Background()

func ptr[T any](v T) *T { return &v }

// apply applies c on m and fails the test unless err matches want (nil:
// success). It also checks that a refused command left the state unchanged.
func apply(t *testing.T, m *Memory, c Command, want error) Result {
	t.Helper()
	before := m.Dump()
	res, err := m.Apply(ctx, c)
	switch {
	case want == nil && err != nil:
		t.Fatalf("%T %+v: unexpected error %v", c, c, err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("%T %+v: err = %v, want %v", c, c, err, want)
	}
	if err != nil {
		if res.Changed {
			t.Fatalf("%T: refused but Changed", c)
		}
		after := m.Dump()
		after.Applied = before.Applied
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("%T refused (%v) but the state changed:\nbefore %+v\nafter  %+v", c, err, before, after)
		}
	}
	return res
}

func TestGroupPhases(t *testing.T) {
	m := NewMemory()
	at := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	m.SetClock(func() time.Time { return at })

	if g, ok := m.State().Group("g"); ok || g.Phase != GroupSource || g.Epoch != 0 {
		t.Fatalf("unknown group = %+v, %v", g, ok)
	}
	// The cutover sequence, each step bumping the epoch.
	for i, p := range []GroupPhase{GroupDraining, GroupFenced, GroupTarget} {
		res := apply(t, m, SetGroupPhase{Group: "g", Phase: p}, nil)
		if !res.Changed || res.Epoch != uint64(i+1) {
			t.Fatalf("to %s: %+v", p, res)
		}
		g, _ := m.State().Group("g")
		if g.Phase != p || g.Epoch != uint64(i+1) || g.ChangedIndex != res.Index || !g.ChangedAt.Equal(at) {
			t.Fatalf("after %s: %+v (result %+v)", p, g, res)
		}
	}
	// A flip asked twice: success, nothing changes.
	res := apply(t, m, SetGroupPhase{Group: "g", Phase: GroupTarget, From: GroupFenced}, nil)
	if res.Changed || res.Epoch != 3 {
		t.Fatalf("repeated flip: %+v", res)
	}
	// A cutover started again on a group already on target is refused.
	apply(t, m, SetGroupPhase{Group: "g", Phase: GroupDraining}, ErrInvalidTransition)
	apply(t, m, SetGroupPhase{Group: "g", Phase: GroupDraining, From: GroupSource}, ErrPhaseMismatch)
	// Skipping steps is refused.
	apply(t, m, SetGroupPhase{Group: "g", Phase: GroupRollbackFenced}, ErrInvalidTransition)
	apply(t, m, SetGroupPhase{Group: "g", Phase: GroupSource}, ErrInvalidTransition)
	// Compare-and-set on the epoch.
	apply(t, m, SetGroupPhase{Group: "g", Phase: GroupRollbackDraining, IfEpoch: ptr(uint64(2))}, ErrEpochMismatch)
	apply(t, m, SetGroupPhase{Group: "g", Phase: GroupRollbackDraining, IfEpoch: ptr(uint64(3))}, nil)
	// A rollback can be abandoned back to target, or completed.
	apply(t, m, SetGroupPhase{Group: "g", Phase: GroupTarget}, nil)
	for _, p := range []GroupPhase{GroupRollbackDraining, GroupRollbackFenced, GroupSource} {
		apply(t, m, SetGroupPhase{Group: "g", Phase: p}, nil)
	}
	if g, _ := m.State().Group("g"); g.Phase != GroupSource || g.Epoch != 8 {
		t.Fatalf("after rollback: %+v", g)
	}
	// A half-done flip can be reversed (the new leader's choice).
	apply(t, m, SetGroupPhase{Group: "h", Phase: GroupDraining}, nil)
	apply(t, m, SetGroupPhase{Group: "h", Phase: GroupFenced}, nil)
	apply(t, m, SetGroupPhase{Group: "h", Phase: GroupSource}, nil)
	// Bad commands.
	apply(t, m, SetGroupPhase{Group: "", Phase: GroupDraining}, ErrBadCommand)
	apply(t, m, SetGroupPhase{Group: "g", Phase: "sideways"}, ErrBadCommand)
	apply(t, m, SetGroupPhase{Group: "g", Phase: GroupDraining, From: "nowhere"}, ErrBadCommand)

	if got := len(m.State().Groups()); got != 2 {
		t.Fatalf("Groups() has %d entries", got)
	}
}

func TestTopicRouting(t *testing.T) {
	m := NewMemory()
	if tr, ok := m.State().Topic("t"); ok || tr.Primary != ProducerSource {
		t.Fatalf("unknown topic = %+v", tr)
	}
	apply(t, m, SetTopicPrimary{Topic: "t", Primary: ProducerTarget}, ErrInvalidTransition)
	apply(t, m, SetTopicPrimary{Topic: "t", Primary: ProducerDraining, From: ProducerSource}, nil)
	apply(t, m, SetTopicPrimary{Topic: "t", Primary: ProducerTarget, IfEpoch: ptr(uint64(0))}, ErrEpochMismatch)
	res := apply(t, m, SetTopicPrimary{Topic: "t", Primary: ProducerTarget, IfEpoch: ptr(uint64(1))}, nil)
	if res.Epoch != 2 || !res.Changed {
		t.Fatalf("flip: %+v", res)
	}
	if res := apply(t, m, SetTopicPrimary{Topic: "t", Primary: ProducerTarget}, nil); res.Changed {
		t.Fatal("repeated flip changed the topic")
	}
	apply(t, m, SetTopicPrimary{Topic: "t", Primary: ProducerDraining}, ErrInvalidTransition)
	apply(t, m, SetTopicPrimary{Topic: "t", Primary: ProducerSource, From: ProducerDraining}, ErrPhaseMismatch)

	// Reverse mirror: idempotent, epoch-checked, bumps the topic epoch.
	res = apply(t, m, SetReverseMirror{Topic: "t", On: true}, nil)
	if res.Epoch != 3 || !res.Changed {
		t.Fatalf("reverse on: %+v", res)
	}
	if res := apply(t, m, SetReverseMirror{Topic: "t", On: true}, nil); res.Changed || res.Epoch != 3 {
		t.Fatalf("reverse on again: %+v", res)
	}
	apply(t, m, SetReverseMirror{Topic: "t", On: false, IfEpoch: ptr(uint64(1))}, ErrEpochMismatch)
	apply(t, m, SetReverseMirror{Topic: "", On: true}, ErrBadCommand)
	apply(t, m, SetTopicPrimary{Topic: "t", Primary: "x"}, ErrBadCommand)

	for _, p := range []ProducerPrimary{ProducerRollingBack, ProducerSource} {
		apply(t, m, SetTopicPrimary{Topic: "t", Primary: p}, nil)
	}
	tr, _ := m.State().Topic("t")
	if tr.Primary != ProducerSource || !tr.ReverseMirror || tr.Epoch != 5 {
		t.Fatalf("topic = %+v", tr)
	}
}

func registerNodes(t *testing.T, m *Memory, ids ...string) {
	t.Helper()
	for _, id := range ids {
		apply(t, m, RegisterNode{Member{ID: id, RaftAddr: id + ":7000", Voter: true}}, nil)
	}
}

func TestWriterOwnership(t *testing.T) {
	m := NewMemory()
	registerNodes(t, m, "a", "b")
	tp := TopicPartition{Topic: "t", Partition: 3}

	apply(t, m, ClaimWriter{TopicPartition: tp, Node: "zz", IfEpoch: 0}, ErrUnknownNode)
	res := apply(t, m, ClaimWriter{TopicPartition: tp, Node: "a", IfEpoch: 0}, nil)
	if res.Epoch != 1 {
		t.Fatalf("claim: %+v", res)
	}
	// Two claims from the same epoch: only one can win.
	apply(t, m, ClaimWriter{TopicPartition: tp, Node: "b", IfEpoch: 0}, ErrEpochMismatch)
	if w, _ := m.State().Writer(tp); w.Node != "a" || w.Epoch != 1 {
		t.Fatalf("writer = %+v", w)
	}
	if err := CheckWriter(m.State(), tp, "a", 1); err != nil {
		t.Fatal(err)
	}
	// The leader moves it to b: a is now stale and cannot write or release.
	w, err := AssignWriter(ctx, m, tp, "b")
	if err != nil || w.Node != "b" || w.Epoch != 2 {
		t.Fatalf("AssignWriter = %+v, %v", w, err)
	}
	if err := CheckWriter(m.State(), tp, "a", 1); !errors.Is(err, ErrStaleWriter) {
		t.Fatalf("CheckWriter of the old owner: %v", err)
	}
	apply(t, m, AppendSegments{Node: "a", Partitions: []PartitionAppend{{TopicPartition: tp, Epoch: 1,
		Segments: []offsetsync.Segment{{Virtual: 0, Source: 0, Target: 0, Length: 1}}}}}, ErrStaleWriter)
	apply(t, m, ReleaseWriter{TopicPartition: tp, Node: "a", Epoch: 1}, ErrStaleWriter)
	// Assigning to the current owner keeps the epoch.
	if w, err := AssignWriter(ctx, m, tp, "b"); err != nil || w.Epoch != 2 {
		t.Fatalf("AssignWriter to owner = %+v, %v", w, err)
	}
	res = apply(t, m, ReleaseWriter{TopicPartition: tp, Node: "b", Epoch: 2}, nil)
	if w, _ := m.State().Writer(tp); w.Node != "" || w.Epoch != 3 || res.Epoch != 3 {
		t.Fatalf("after release: %+v %+v", w, res)
	}
	// Dead nodes cannot claim.
	apply(t, m, SetNodeDead{ID: "a", Dead: true}, nil)
	apply(t, m, ClaimWriter{TopicPartition: tp, Node: "a", IfEpoch: 3}, ErrNodeDead)
	apply(t, m, ClaimWriter{TopicPartition: TopicPartition{Topic: "", Partition: 1}, Node: "b"}, ErrBadCommand)
	apply(t, m, ClaimWriter{TopicPartition: tp, Node: ""}, ErrBadCommand)
	if n := len(m.State().Writers()); n != 1 {
		t.Fatalf("Writers() = %d", n)
	}
}

func TestAppendSegments(t *testing.T) {
	m := NewMemory()
	registerNodes(t, m, "a", "b")
	p0, p1 := TopicPartition{Topic: "t", Partition: 0}, TopicPartition{Topic: "t", Partition: 1}
	apply(t, m, ClaimWriter{TopicPartition: p0, Node: "a"}, nil)
	apply(t, m, ClaimWriter{TopicPartition: p1, Node: "a"}, nil)

	res := apply(t, m, AppendSegments{Node: "a", Partitions: []PartitionAppend{
		{TopicPartition: p0, Epoch: 1, Segments: []offsetsync.Segment{seg(0, 0, 0, 10), seg(10, 10, 10, 10)}},
		{TopicPartition: p1, Epoch: 1, Segments: []offsetsync.Segment{seg(5, 5, 0, 10)}},
	}}, nil)
	if !res.Changed {
		t.Fatal("append did not change")
	}
	if got := m.State().OffsetMap(p0); !slices.Equal(got, offsetsync.OffsetMap{seg(0, 0, 0, 20)}) {
		t.Fatalf("p0 = %+v", got)
	}
	// The same append again (a writer retrying): accepted, unchanged.
	if res := apply(t, m, AppendSegments{Node: "a", Partitions: []PartitionAppend{
		{TopicPartition: p0, Epoch: 1, Segments: []offsetsync.Segment{seg(10, 10, 10, 10)}},
	}}, nil); res.Changed {
		t.Fatal("restatement changed the map")
	}
	// Atomic: p0 would grow (and merge into its last segment), p1 is
	// refused, so neither changes. apply() checks the whole state.
	apply(t, m, AppendSegments{Node: "a", Partitions: []PartitionAppend{
		{TopicPartition: p0, Epoch: 1, Segments: []offsetsync.Segment{seg(20, 20, 20, 5), seg(25, 25, 30, 5)}},
		{TopicPartition: p1, Epoch: 1, Segments: []offsetsync.Segment{seg(15, 15, 3, 1)}},
	}}, offsetsync.ErrSegment)
	// Same, with a new partition that must disappear again.
	p2 := TopicPartition{Topic: "t", Partition: 2}
	apply(t, m, ClaimWriter{TopicPartition: p2, Node: "a"}, nil)
	apply(t, m, AppendSegments{Node: "a", Partitions: []PartitionAppend{
		{TopicPartition: p2, Epoch: 1, Segments: []offsetsync.Segment{seg(0, 0, 0, 5)}},
		{TopicPartition: p1, Epoch: 1, Segments: []offsetsync.Segment{seg(0, 0, 0, 0)}},
	}}, offsetsync.ErrSegment)
	if m.State().OffsetMap(p2) != nil {
		t.Fatal("refused append left a map behind")
	}
	apply(t, m, AppendSegments{Node: "a", Partitions: []PartitionAppend{
		{TopicPartition: p0, Epoch: 1, Segments: []offsetsync.Segment{seg(20, 20, 20, 1)}},
		{TopicPartition: p0, Epoch: 1, Segments: []offsetsync.Segment{seg(21, 21, 21, 1)}},
	}}, ErrBadCommand)
	apply(t, m, AppendSegments{Partitions: nil}, ErrBadCommand)
	apply(t, m, AppendSegments{Node: "b", Partitions: []PartitionAppend{
		{TopicPartition: p0, Epoch: 1, Segments: []offsetsync.Segment{seg(20, 20, 20, 1)}},
	}}, ErrStaleWriter)

	// Readers get copies.
	got := m.State().OffsetMap(p0)
	got[0].Length = 999
	if m.State().OffsetMap(p0)[0].Length != 20 {
		t.Fatal("offsetsync.OffsetMap returned shared memory")
	}
}

func TestNodes(t *testing.T) {
	m := NewMemory()
	at := time.Unix(1700000000, 0).UTC()
	m.SetClock(func() time.Time { return at })
	apply(t, m, RegisterNode{Member{ID: "", RaftAddr: "x"}}, ErrBadCommand)
	apply(t, m, ReportApplied{ID: "a", Applied: 1}, ErrUnknownNode)
	registerNodes(t, m, "a", "b", "c")
	if res := apply(t, m, RegisterNode{Member{ID: "a", RaftAddr: "a:7000", Voter: true}}, nil); res.Changed {
		t.Fatal("re-registering the same member changed it")
	}
	flip := apply(t, m, SetGroupPhase{Group: "g", Phase: GroupDraining}, nil)

	apply(t, m, ReportApplied{ID: "a", Applied: flip.Index}, nil)
	apply(t, m, ReportApplied{ID: "b", Applied: flip.Index + 1}, nil)
	behind := NodesBehind(m.State(), flip.Index)
	if len(behind) != 1 || behind[0].ID != "c" {
		t.Fatalf("behind = %+v", behind)
	}
	if n, _ := m.State().Node("a"); n.Applied != flip.Index || !n.ReportedAt.Equal(at) {
		t.Fatalf("node a = %+v", n)
	}
	// A dead node is not waited for; a report brings it back.
	apply(t, m, SetNodeDead{ID: "c", Dead: true}, nil)
	if behind := NodesBehind(m.State(), flip.Index); len(behind) != 0 {
		t.Fatalf("behind with c dead = %+v", behind)
	}
	apply(t, m, ReportApplied{ID: "c", Applied: 1}, nil)
	if n, _ := m.State().Node("c"); n.Dead {
		t.Fatal("report did not revive c")
	}
	apply(t, m, SetNodeDead{ID: "zz", Dead: true}, ErrUnknownNode)
	// Updating a member keeps what it reported.
	apply(t, m, RegisterNode{Member{ID: "a", RaftAddr: "a:7001", AdminAddr: "a:8080"}}, nil)
	if n, _ := m.State().Node("a"); n.Applied != flip.Index || n.RaftAddr != "a:7001" || n.Voter {
		t.Fatalf("updated a = %+v", n)
	}
	apply(t, m, RemoveNode{ID: "a"}, nil)
	if res := apply(t, m, RemoveNode{ID: "a"}, nil); res.Changed {
		t.Fatal("removing twice changed")
	}
	if _, ok := m.State().Node("a"); ok || len(m.State().Nodes()) != 2 {
		t.Fatal("a not removed")
	}
}

func TestCommandEncoding(t *testing.T) {
	at := time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC)
	cmds := []Command{
		SetGroupPhase{Group: "g", Phase: GroupFenced, From: GroupDraining, IfEpoch: ptr(uint64(4))},
		SetTopicPrimary{Topic: "t", Primary: ProducerTarget},
		SetReverseMirror{Topic: "t", On: true},
		AppendSegments{Node: "a", Partitions: []PartitionAppend{{TopicPartition: TopicPartition{"t", 1}, Epoch: 2, Segments: []offsetsync.Segment{seg(1, 2, 3, 4)}}}},
		ClaimWriter{TopicPartition: TopicPartition{"t", 1}, Node: "a", IfEpoch: 7},
		ReleaseWriter{TopicPartition: TopicPartition{"t", 1}, Node: "a", Epoch: 8},
		RegisterNode{Member{ID: "a", RaftAddr: "x:1", AdminAddr: "x:2", Voter: true}},
		ReportApplied{ID: "a", Applied: 9},
		SetNodeDead{ID: "a", Dead: true},
		RemoveNode{ID: "a"},
		FillSource{TopicPartition: TopicPartition{"t", 1}, Virtual: 10, Source: 10, Length: 5},
	}
	seen := map[CommandType]bool{}
	for _, c := range cmds {
		b1, err := EncodeCommand(c, at)
		if err != nil {
			t.Fatal(err)
		}
		b2, _ := EncodeCommand(c, at)
		if !bytes.Equal(b1, b2) {
			t.Fatalf("%T: encoding not deterministic", c)
		}
		if b1[0] != byte(c.Type()) || b1[1] != 1 {
			t.Fatalf("%T: header % x", c, b1[:2])
		}
		got, gotAt, err := DecodeCommand(b1)
		if err != nil {
			t.Fatalf("%T: decode: %v", c, err)
		}
		if !reflect.DeepEqual(got, c) || !gotAt.Equal(at) {
			t.Fatalf("%T: round trip = %+v at %v", c, got, gotAt)
		}
		seen[c.Type()] = true
	}
	if len(seen) != len(commandVersions) {
		t.Fatalf("test covers %d command types of %d", len(seen), len(commandVersions))
	}
}

func TestBadEntriesAreRefusedSafely(t *testing.T) {
	good, _ := EncodeCommand(SetGroupPhase{Group: "g", Phase: GroupDraining}, time.Now())
	withType := func(t CommandType, v byte) []byte {
		b := bytes.Clone(good)
		b[0], b[1] = byte(t), v
		return b
	}
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrBadCommand},
		{"short header", good[:5], ErrBadCommand},
		{"unknown type", withType(99, 1), ErrUnknownCommand},
		{"unknown version", withType(CmdSetGroupPhase, 2), ErrUnknownCommand},
		{"version 0", withType(CmdSetGroupPhase, 0), ErrUnknownCommand},
		{"truncated body", good[:len(good)-3], ErrBadCommand},
		{"trailing data", append(bytes.Clone(good), []byte(" {}")...), ErrBadCommand},
		{"unknown field", append(bytes.Clone(good[:headerLen]), []byte(`{"group":"g","phase":"draining","color":"red"}`)...), ErrBadCommand},
		{"wrong field type", append(bytes.Clone(good[:headerLen]), []byte(`{"group":7}`)...), ErrBadCommand},
		{"body of another type", withType(CmdClaimWriter, 1), ErrBadCommand},
	}
	f := newFSM(nil)
	for i, c := range cases {
		res := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: c.data}).(Result)
		if !errors.Is(res.Err, c.want) || res.Changed {
			t.Errorf("%s: result %+v, want %v", c.name, res, c.want)
		}
	}
	if d := f.Dump(); len(d.Groups) != 0 {
		t.Fatalf("state changed: %+v", d)
	}
	// An unknown type flagged as ignorable is skipped without error.
	res := f.Apply(&raft.Log{Index: 100, Type: raft.LogCommand, Data: withType(IgnoreUnknownFlag|42, 1)}).(Result)
	if res.Err != nil || !res.Ignored || res.Index != 100 {
		t.Fatalf("ignorable: %+v", res)
	}
	if f.AppliedIndex() != 100 {
		t.Fatalf("applied = %d", f.AppliedIndex())
	}
}

// FuzzApply: no entry makes Apply panic, and a refused entry leaves the
// state unchanged.
func FuzzApply(f *testing.F) {
	for _, c := range []Command{
		SetGroupPhase{Group: "g", Phase: GroupDraining},
		AppendSegments{Node: "a", Partitions: []PartitionAppend{{TopicPartition: TopicPartition{"t", 0}, Epoch: 1, Segments: []offsetsync.Segment{seg(0, 0, 0, 1)}}}},
		ClaimWriter{TopicPartition: TopicPartition{"t", 0}, Node: "a"},
	} {
		b, _ := EncodeCommand(c, time.Unix(1, 0))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := NewMemory()
		registerNodes(t, m, "a")
		apply(t, m, ClaimWriter{TopicPartition: TopicPartition{"t", 0}, Node: "a"}, nil)
		before := m.Dump()
		res := m.fsm.Apply(&raft.Log{Index: 1000, Type: raft.LogCommand, Data: data}).(Result)
		if res.Err != nil {
			after := m.Dump()
			after.Applied = before.Applied
			if !reflect.DeepEqual(before, after) {
				t.Fatalf("refused entry changed the state: %v", res.Err)
			}
		}
	})
}

// randomCommands drives a Memory with a mix of commands, most valid.
func randomCommands(t testing.TB, m *Memory, n int, rng *rand.Rand) {
	nodes := []string{"a", "b", "c", "d"}
	for _, id := range nodes {
		if _, err := m.Apply(ctx, RegisterNode{Member{ID: id, RaftAddr: id + ":1", AdminAddr: id + ":2", Voter: id < "c"}}); err != nil {
			t.Fatal(err)
		}
	}
	groupSeq := []GroupPhase{GroupDraining, GroupFenced, GroupTarget, GroupRollbackDraining, GroupRollbackFenced, GroupSource}
	topicSeq := []ProducerPrimary{ProducerDraining, ProducerTarget, ProducerRollingBack, ProducerSource}
	tick := time.Unix(1700000000, 0)
	m.SetClock(func() time.Time { tick = tick.Add(time.Millisecond); return tick })
	ends := map[TopicPartition][3]int64{}
	for range n {
		var c Command
		switch rng.IntN(7) {
		case 0:
			g := fmt.Sprintf("g%d", rng.IntN(20))
			cur, _ := m.State().Group(g)
			next := GroupDraining
			for i, p := range groupSeq {
				if p == cur.Phase {
					next = groupSeq[(i+1)%len(groupSeq)]
				}
			}
			c = SetGroupPhase{Group: g, Phase: next}
		case 1:
			tp := fmt.Sprintf("t%d", rng.IntN(5))
			cur, _ := m.State().Topic(tp)
			next := ProducerDraining
			for i, p := range topicSeq {
				if p == cur.Primary {
					next = topicSeq[(i+1)%len(topicSeq)]
				}
			}
			c = SetTopicPrimary{Topic: tp, Primary: next}
		case 2:
			c = SetReverseMirror{Topic: fmt.Sprintf("t%d", rng.IntN(5)), On: rng.IntN(2) == 0}
		case 3:
			tp := TopicPartition{Topic: fmt.Sprintf("t%d", rng.IntN(5)), Partition: int32(rng.IntN(4))}
			w, _ := m.State().Writer(tp)
			c = ClaimWriter{TopicPartition: tp, Node: nodes[rng.IntN(len(nodes))], IfEpoch: w.Epoch}
		case 4, 5:
			tp := TopicPartition{Topic: fmt.Sprintf("t%d", rng.IntN(5)), Partition: int32(rng.IntN(4))}
			w, _ := m.State().Writer(tp)
			if w.Node == "" {
				continue
			}
			e := ends[tp]
			var segs []offsetsync.Segment
			for range rng.IntN(3) + 1 {
				l := int64(rng.IntN(100) + 1)
				segs = append(segs, offsetsync.Segment{Virtual: e[0], Source: e[1], Target: e[2], Length: l})
				e[0], e[1], e[2] = e[0]+l, e[1]+l, e[2]+l+int64(rng.IntN(2))
			}
			ends[tp] = e
			c = AppendSegments{Node: w.Node, Partitions: []PartitionAppend{{TopicPartition: tp, Epoch: w.Epoch, Segments: segs}}}
		case 6:
			c = ReportApplied{ID: nodes[rng.IntN(len(nodes))], Applied: m.State().AppliedIndex()}
		}
		if _, err := m.Apply(ctx, c); err != nil {
			t.Fatalf("%T %+v: %v", c, c, err)
		}
	}
}

func snapshotBytes(t testing.TB, f *fsm) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if !sink.closed {
		t.Fatal("Persist did not close the sink")
	}
	return sink.Bytes()
}

type memSink struct {
	bytes.Buffer
	closed, canceled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.canceled = true; return nil }
func (s *memSink) Close() error  { s.closed = true; return nil }

func TestSnapshotRestore(t *testing.T) {
	m := NewMemory()
	randomCommands(t, m, 3000, rand.New(rand.NewPCG(7, 7)))
	want := m.Dump()
	if len(want.Groups) == 0 || len(want.Maps) == 0 || len(want.Writers) == 0 || len(want.Nodes) == 0 {
		t.Fatalf("random commands left parts of the state empty: %d groups %d maps %d writers %d nodes",
			len(want.Groups), len(want.Maps), len(want.Writers), len(want.Nodes))
	}
	b := snapshotBytes(t, m.fsm)

	fresh := newFSM(nil)
	if err := fresh.Restore(ioNopCloser{bytes.NewReader(b)}); err != nil {
		t.Fatal(err)
	}
	if got := fresh.Dump(); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored state differs:\n got %+v\nwant %+v", got, want)
	}
	// Equal states give equal snapshot bytes.
	if b2 := snapshotBytes(t, fresh); !bytes.Equal(b, b2) {
		t.Fatal("snapshot of the restored state differs")
	}
	// Restore replaces, it does not merge.
	other := NewMemory()
	registerNodes(t, other, "zz")
	if err := other.fsm.Restore(ioNopCloser{bytes.NewReader(b)}); err != nil {
		t.Fatal(err)
	}
	if got := other.Dump(); !reflect.DeepEqual(got, want) {
		t.Fatal("restore into a used FSM kept old state")
	}
	// Corrupt or foreign snapshots are refused.
	for name, bad := range map[string][]byte{
		"empty":      nil,
		"magic":      append([]byte("XXXX"), b[4:]...),
		"version":    append(append([]byte("KMRS"), 9), b[5:]...),
		"truncated":  b[:len(b)/2],
		"no trailer": b[:len(b)-1],
	} {
		if err := newFSM(nil).Restore(ioNopCloser{bytes.NewReader(bad)}); err == nil {
			t.Errorf("%s snapshot accepted", name)
		}
	}
}

func TestSnapshotLargeMap(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000,000 segments")
	}
	// One million segments (a new segment every batch: the worst case).
	const parts, perPart = 100, 10000
	st := newState()
	for p := range int32(parts) {
		tp := TopicPartition{Topic: "big", Partition: p}
		m := make(offsetsync.OffsetMap, 0, perPart)
		for i := range int64(perPart) {
			m = append(m, offsetsync.Segment{Virtual: i * 100, Source: i * 100, Target: i*100 + i, Length: 100})
		}
		st.maps[tp] = m
	}
	f := newFSM(nil)
	f.st, f.applied = st, 42
	start := time.Now()
	b := snapshotBytes(t, f)
	persist := time.Since(start)
	start = time.Now()
	fresh := newFSM(nil)
	if err := fresh.Restore(ioNopCloser{bytes.NewReader(b)}); err != nil {
		t.Fatal(err)
	}
	restore := time.Since(start)
	t.Logf("1,000,000 segments: snapshot %d bytes (%.1f B/segment), snapshot+persist %v, restore %v",
		len(b), float64(len(b))/1e6, persist, restore)
	if !reflect.DeepEqual(fresh.Dump(), f.Dump()) {
		t.Fatal("restored large state differs")
	}
}

type ioNopCloser struct{ *bytes.Reader }

func (ioNopCloser) Close() error { return nil }

func TestBatchApplyAndConfigurationEntries(t *testing.T) {
	f := newFSM(nil)
	c1, _ := EncodeCommand(SetGroupPhase{Group: "g", Phase: GroupDraining}, time.Time{})
	c2, _ := EncodeCommand(SetGroupPhase{Group: "g", Phase: GroupFenced}, time.Time{})
	out := f.ApplyBatch([]*raft.Log{
		{Index: 1, Type: raft.LogConfiguration},
		{Index: 2, Type: raft.LogCommand, Data: c1},
		{Index: 3, Type: raft.LogCommand, Data: c2},
		{Index: 4, Type: raft.LogConfiguration},
	})
	if len(out) != 4 || out[0] != nil || out[1].(Result).Epoch != 1 || out[2].(Result).Epoch != 2 || out[3] != nil {
		t.Fatalf("ApplyBatch = %+v", out)
	}
	if f.AppliedIndex() != 4 {
		t.Fatalf("applied = %d", f.AppliedIndex())
	}
	if g, _ := f.Group("g"); g.Phase != GroupFenced || g.ChangedIndex != 3 || !g.ChangedAt.IsZero() {
		t.Fatalf("group = %+v", g)
	}
}

// seg builds a segment {virtual, source, target, length}.
func seg(virtual, source, target, length int64) offsetsync.Segment {
	return offsetsync.Segment{Virtual: virtual, Source: source, Target: target, Length: length}
}
