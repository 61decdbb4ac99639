package raftmaps

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/kmigrate/kmigrate/raftstore"
	"github.com/kmigrate/kmigrate/replicate"
)

func TestMapsFollowWriterEpochs(t *testing.T) {
	s, err := raftstore.Open(raftstore.Config{
		NodeID: "me", DataDir: t.TempDir(), RaftAddr: "127.0.0.1:0", Writer: true,
		Tune: func(c *raft.Config) {
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 200*time.Millisecond
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !s.IsLeader() {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := s.VerifiedRead(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		if _, ok := s.State().Node("me"); ok {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := s.Apply(ctx, raftstore.RegisterNode{Member: raftstore.Member{ID: "other", RaftAddr: "127.0.0.1:1"}}); err != nil {
		t.Fatal(err)
	}
	m := New(s, time.Second)
	m.Handoff = 300 * time.Millisecond
	tp := replicate.Partition{Topic: "t", Partition: 0}
	key := raftstore.TopicPartition{Topic: "t", Partition: 0}
	seg := func(src, n int64) []offsetsync.Segment {
		return []offsetsync.Segment{{Virtual: src, Source: src, Target: src, Length: n}}
	}

	if m.Owns(tp) {
		t.Fatal("owns a partition nobody assigned")
	}
	if err := m.Append(ctx, tp, seg(0, 0)); !errors.Is(err, replicate.ErrNotOwner) {
		t.Fatalf("append without ownership: %v", err)
	}
	if _, err := raftstore.AssignWriter(ctx, s, key, "me"); err != nil {
		t.Fatal(err)
	}
	if !m.Owns(tp) || !m.IsWriter(tp) {
		t.Fatal("does not own its partition")
	}
	if err := m.Append(ctx, tp, seg(0, 5)); err != nil {
		t.Fatal(err)
	}
	if got := m.Map(tp); len(got) != 1 || got[0].Length != 5 {
		t.Fatalf("map = %v", got)
	}
	if err := m.WaitMapped(ctx, tp, 4); err != nil {
		t.Fatal(err)
	}
	short, stop := context.WithTimeout(ctx, 50*time.Millisecond)
	if err := m.WaitMapped(short, tp, 5); err == nil {
		t.Fatal("offset 5 is not mapped yet")
	}
	stop()

	// Moved to another node and back: the mirror must drop its copy and
	// take the partition afresh, at the new epoch.
	away := func() {
		for _, to := range []string{"other", "me"} {
			if _, err := raftstore.AssignWriter(ctx, s, key, to); err != nil {
				t.Fatal(err)
			}
		}
	}
	away()
	if m.Owns(tp) {
		t.Fatal("Owns true right after the epoch moved: the mirror would keep its old copy")
	}
	if m.Owns(tp) {
		t.Fatal("took a partition another node wrote before the handoff delay")
	}
	time.Sleep(m.Handoff)
	if !m.Owns(tp) {
		t.Fatal("cannot take the partition again")
	}
	if err := m.Append(ctx, tp, seg(5, 1)); err != nil {
		t.Fatalf("append at the new epoch: %v", err)
	}
	// An append still at the old epoch is refused by the leader.
	away()
	if err := m.Append(ctx, tp, seg(6, 1)); !errors.Is(err, replicate.ErrNotOwner) || !errors.Is(err, raftstore.ErrStaleWriter) {
		t.Fatalf("append at a stale epoch: %v", err)
	}
}
