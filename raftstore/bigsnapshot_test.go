package raftstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/kmigrate/kmigrate/offsetsync"
)

// fillMaps gives node `writer` partitions of topic "big" and appends segs
// segments to each, perBatch per command, with commands proposed
// concurrently so that raft batches them. Segments never merge (each shifts
// differently), so the maps hold exactly parts*segs segments.
func fillMaps(t testing.TB, s *Store, writer string, parts, segs, perBatch int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, parts)
	sem := make(chan struct{}, 16)
	for p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			tp := TopicPartition{"big", int32(p)}
			res, err := s.Apply(ctx, ClaimWriter{TopicPartition: tp, Node: writer})
			if err != nil {
				errs <- err
				return
			}
			for first := 0; first < segs; first += perBatch {
				batch := make([]offsetsync.Segment, 0, perBatch)
				for i := first; i < min(first+perBatch, segs); i++ {
					batch = append(batch, offsetsync.Segment{Virtual: int64(2 * i), Source: int64(2 * i), Target: int64(i), Length: 1})
				}
				if _, err := s.Apply(ctx, AppendSegments{Node: writer, Partitions: []PartitionAppend{{TopicPartition: tp, Epoch: res.Epoch, Segments: batch}}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func sameMaps(t *testing.T, what string, got, want Dump) {
	t.Helper()
	if len(got.Maps) != len(want.Maps) {
		t.Fatalf("%s: %d maps, want %d", what, len(got.Maps), len(want.Maps))
	}
	for i := range want.Maps {
		if got.Maps[i].TopicPartition != want.Maps[i].TopicPartition || !slices.Equal(got.Maps[i].Segments, want.Maps[i].Segments) {
			t.Fatalf("%s: map %d (%v) differs", what, i, want.Maps[i].TopicPartition)
		}
	}
	if !slices.Equal(got.Writers, want.Writers) {
		t.Fatalf("%s: writers differ", what)
	}
}

// TestSnapshotRestoreMillionSegments: a node holding 1,000,000 map segments
// snapshots them; a new non-voter receives the snapshot over raft
// (InstallSnapshot: the leader's log was compacted), the restarted node
// restores it from disk, and ReadDir reads it offline: all equal.
func TestSnapshotRestoreMillionSegments(t *testing.T) {
	const parts, segs = 100, 10_000
	compact := func(c *Config) {
		c.Tune = func(rc *raft.Config) {
			fastRaft(rc)
			rc.TrailingLogs = 10 // compact after the snapshot: new members need it
			rc.SnapshotThreshold = 1 << 30
			rc.SnapshotInterval = time.Hour
		}
	}
	dir := t.TempDir()
	n1 := startNode(t, "s1", dir, "", true, "", compact)
	waitLeader(t, n1)
	start := time.Now()
	fillMaps(t, n1.Store, "s1", parts, segs, 5_000)
	t.Logf("applied %d segments in %v", parts*segs, time.Since(start).Round(time.Millisecond))
	want := n1.Dump()
	total := 0
	for _, m := range want.Maps {
		total += len(m.Segments)
	}
	if total != parts*segs {
		t.Fatalf("%d segments, want %d", total, parts*segs)
	}

	start = time.Now()
	if err := n1.raft.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	snapTook := time.Since(start)
	files, _ := filepath.Glob(filepath.Join(dir, "snapshots", "*", "state.bin"))
	var size int64
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			size = fi.Size()
		}
	}
	t.Logf("snapshot of %d segments: %v, %.1f MB", total, snapTook.Round(time.Millisecond), float64(size)/1e6)

	// A new member gets the state by snapshot.
	start = time.Now()
	n2 := startNode(t, "s2", t.TempDir(), "", false, n1.srv.Listener.Addr().String())
	ctx := withTimeout(t, 2*time.Minute)
	if err := n2.WaitApplied(ctx, want.Applied); err != nil {
		t.Fatal(err)
	}
	t.Logf("new non-voter caught up by InstallSnapshot in %v", time.Since(start).Round(time.Millisecond))
	sameMaps(t, "installed snapshot", n2.Dump(), want)
	n2.stop(t)

	// The node restarts from its own snapshot.
	n1.stop(t)
	start = time.Now()
	n1 = n1.restart(t)
	defer n1.stop(t)
	if err := n1.WaitApplied(ctx, want.Applied); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart restored in %v", time.Since(start).Round(time.Millisecond))
	sameMaps(t, "restored", n1.Dump(), want)

	// Offline: snapshot plus the log after it.
	waitLeader(t, n1)
	if _, err := n1.Apply(ctx, SetGroupPhase{Group: "after-snapshot", Phase: GroupDraining}); err != nil {
		t.Fatal(err)
	}
	live := n1.Dump()
	n1.stop(t)
	off, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	sameMaps(t, "ReadDir", off, want)
	if len(off.Groups) != 1 || off.Groups[0] != live.Groups[0] {
		t.Fatalf("ReadDir groups = %+v, want %+v", off.Groups, live.Groups)
	}
	n1 = n1.restart(t) // for the deferred stop
}

// BenchmarkSegmentMemory reports the heap one million map segments take in
// the state machine (100 partitions of 10,000 segments), and the snapshot's
// size and encoding time:
//
//	go test -run '^$' -bench SegmentMemory -benchtime 1x ./raftstore
func BenchmarkSegmentMemory(b *testing.B) {
	const parts, segs = 100, 10_000
	for range b.N {
		var before, after runtimeMem
		before.read()
		f := newFSM(nil)
		idx := uint64(0)
		for p := range parts {
			tp := TopicPartition{"big", int32(p)}
			idx++
			f.Apply(entry(b, idx, RegisterNode{Member{ID: "w", RaftAddr: "w:1"}}))
			idx++
			f.Apply(entry(b, idx, ClaimWriter{TopicPartition: tp, Node: "w", IfEpoch: 0}))
			batch := make([]offsetsync.Segment, 0, segs)
			for i := range segs {
				batch = append(batch, offsetsync.Segment{Virtual: int64(2 * i), Source: int64(2 * i), Target: int64(i), Length: 1})
			}
			idx++
			if res := f.Apply(entry(b, idx, AppendSegments{Node: "w", Partitions: []PartitionAppend{{TopicPartition: tp, Epoch: 1, Segments: batch}}})).(Result); res.Err != nil {
				b.Fatal(res.Err)
			}
		}
		after.read()
		b.ReportMetric(float64(after.heap-before.heap)/1e6, "MB-heap/1M-segments")
		start := time.Now()
		var w countingWriter
		if err := WriteSnapshot(&w, f.Dump()); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(w.n)/1e6, "MB-snapshot/1M-segments")
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms-snapshot")
		fmt.Fprint(&w, f.AppliedIndex()) // keep f alive until here
	}
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func entry(t testing.TB, index uint64, c Command) *raft.Log {
	data, err := EncodeCommand(c, time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: index, Type: raft.LogCommand, Data: data}
}

type runtimeMem struct{ heap uint64 }

func (m *runtimeMem) read() {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.heap = ms.HeapAlloc
}
