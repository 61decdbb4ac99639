package raftstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"github.com/kmigrate/kmigrate/offsetsync"
	"io"
	"log/slog"
	"sync"

	"github.com/hashicorp/raft"
)

// ErrClosed is returned by calls on a closed Store.
var ErrClosed = errors.New("raftstore: store closed")

// fsm is the raft state machine: the state behind a read-write lock, the
// index of the last entry applied, and a channel closed at every apply so
// that WaitApplied can sleep without polling.
type fsm struct {
	log *slog.Logger

	mu      sync.RWMutex
	st      *state
	applied uint64
	// lastChange is the index of the last applied entry that is not a
	// ReportApplied: nodes report again only when it moves, so reports do
	// not trigger reports forever.
	lastChange uint64
	notify     chan struct{}
}

var (
	_ raft.BatchingFSM = (*fsm)(nil)
	_ Reader           = (*fsm)(nil)
)

func newFSM(log *slog.Logger) *fsm {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &fsm{log: log, st: newState(), notify: make(chan struct{})}
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.wakeLocked()
	return f.applyLocked(l)
}

// ApplyBatch implements raft.BatchingFSM: one lock and one wake-up per batch.
// Raft hands configuration entries here too, which lets the applied index
// follow membership changes.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.wakeLocked()
	out := make([]any, len(logs))
	for i, l := range logs {
		out[i] = f.applyLocked(l)
	}
	return out
}

func (f *fsm) applyLocked(l *raft.Log) any {
	if l.Index > f.applied {
		f.applied = l.Index
	}
	if l.Type != raft.LogCommand {
		return nil
	}
	res := applyEntry(f.st, l.Data, l.Index)
	if len(l.Data) == 0 || CommandType(l.Data[0]) != CmdReportApplied {
		f.lastChange = l.Index
	}
	if res.Err != nil {
		// Every node refuses the same entries; debug level keeps the
		// fleet from logging each refusal once per node.
		f.log.Debug("raftstore: command refused", "index", l.Index, "err", res.Err)
	}
	return res
}

// wakeLocked wakes every WaitApplied.
func (f *fsm) wakeLocked() {
	close(f.notify)
	f.notify = make(chan struct{})
}

// waitApplied blocks until the state has applied index, ctx ends, or stop
// is closed.
func (f *fsm) waitApplied(ctx context.Context, index uint64, stop <-chan struct{}) error {
	for {
		f.mu.RLock()
		applied, ch := f.applied, f.notify
		f.mu.RUnlock()
		if applied >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d (applied %d): %w", index, applied, ctx.Err())
		case <-stop:
			return fmt.Errorf("wait for index %d (applied %d): %w", index, applied, ErrClosed)
		}
	}
}

func (f *fsm) indexes() (applied, lastChange uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied, f.lastChange
}

// Snapshot implements raft.FSM. Raft calls it on the apply goroutine, so the
// copy taken here is consistent; the encoding runs later in Persist,
// concurrently with new applies.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{dump: f.Dump()}, nil
}

// Restore implements raft.FSM: it replaces the whole state.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	d, err := ReadSnapshot(bufio.NewReaderSize(rc, 1<<16))
	if err != nil {
		return fmt.Errorf("raftstore: restore snapshot: %w", err)
	}
	f.restoreDump(d)
	return nil
}

func (f *fsm) restoreDump(d Dump) {
	st := stateFromDump(d)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st, f.applied, f.lastChange = st, d.Applied, d.Applied
	f.wakeLocked()
}

// Dump returns a deep copy of the whole state.
func (f *fsm) Dump() Dump {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.dump(f.applied)
}

type fsmSnapshot struct{ dump Dump }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriterSize(sink, 1<<16)
	err := WriteSnapshot(w, s.dump)
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("raftstore: persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// Reader methods.

func (f *fsm) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

func (f *fsm) Group(name string) (GroupRoute, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.group(name)
}

func (f *fsm) Groups() []GroupRoute {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.st.groups, byGroup)
}

func (f *fsm) Topic(name string) (TopicRoute, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.topic(name)
}

func (f *fsm) Topics() []TopicRoute {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.st.topics, byTopic)
}

func (f *fsm) OffsetMap(tp TopicPartition) offsetsync.OffsetMap {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.maps[tp].Clone()
}

func (f *fsm) LastSegment(tp TopicPartition) (offsetsync.Segment, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.maps[tp].Last()
}

func (f *fsm) Writer(tp TopicPartition) (WriterOwner, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.writer(tp)
}

func (f *fsm) Writers() []WriterOwner {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.st.writers, byWriter)
}

func (f *fsm) Node(id string) (Node, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, ok := f.st.nodes[id]
	return n, ok
}

func (f *fsm) Nodes() []Node {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return sortedValues(f.st.nodes, byNode)
}
