// Package raftmaps connects the mirror (replicate) to the replicated control
// plane (raftstore): the offset maps live in raft, and a node's mirror writes
// only the partitions raft says it owns.
//
// Maps is both the mirror's MapStore and its ownership hook
// (replicate.Config.Owns). A partition is held at the writer epoch seen when
// the mirror took it; every map append carries that epoch, and the leader
// refuses it once the partition moved (raftstore.ErrStaleWriter), which the
// mirror sees as replicate.ErrNotOwner and releases the partition. Owns also
// answers false when this node has not heard from the leader for Lease:
// a node cut off from the cluster stops writing before the leader gives its
// partitions away (the leader waits longer, see raftstore.AssignerConfig).
//
// A partition that had another writer before (epoch above 1) is taken only
// Handoff after this node first sees it assigned: had the leader declared a
// live writer dead by mistake, that writer sees the new epoch at its next
// check (its replica applies the claim within milliseconds) and stops, and
// its records in flight land before the new writer reads the target's end.
// The target itself cannot fence a writer without transactions, which the
// mirror avoids (see replicate), so this delay is the margin.
package raftmaps

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/kmigrate/kmigrate/raftstore"
	"github.com/kmigrate/kmigrate/replicate"
)

// Store is what Maps needs of a raft node (*raftstore.Store implements it).
type Store interface {
	ID() string
	State() raftstore.Reader
	Staleness() raftstore.Staleness
	Propose(ctx context.Context, c raftstore.Command) (raftstore.Result, error)
	WaitApplied(ctx context.Context, index uint64) error
}

var _ Store = (*raftstore.Store)(nil)

// DefaultLease is how long a writer keeps writing without news from the
// leader. It must be shorter than the leader's DeadAfter.
const DefaultLease = 2 * time.Second

// DefaultHandoff is how long a node waits before taking a partition that
// another node wrote before.
const DefaultHandoff = time.Second

// Maps is the mirror's map store and ownership oracle on a raft node.
type Maps struct {
	store Store
	lease time.Duration
	// Handoff is the wait before taking a partition another node wrote
	// (DefaultHandoff; set before use).
	Handoff time.Duration

	mu      sync.Mutex
	held    map[replicate.Partition]uint64 // partition → writer epoch held
	waiting map[replicate.Partition]handoff
}

type handoff struct {
	epoch uint64
	since time.Time
}

var _ replicate.MapStore = (*Maps)(nil)

// New returns the maps of store's node; lease <= 0 means DefaultLease.
func New(store Store, lease time.Duration) *Maps {
	if lease <= 0 {
		lease = DefaultLease
	}
	return &Maps{store: store, lease: lease, Handoff: DefaultHandoff,
		held: make(map[replicate.Partition]uint64), waiting: make(map[replicate.Partition]handoff)}
}

func key(tp replicate.Partition) raftstore.TopicPartition {
	return raftstore.TopicPartition{Topic: tp.Topic, Partition: tp.Partition}
}

// Map returns the partition's map from this node's replica of the state.
func (m *Maps) Map(tp replicate.Partition) offsetsync.OffsetMap {
	return m.store.State().OffsetMap(key(tp))
}

// LastSegment returns the partition's last segment without copying the map.
func (m *Maps) LastSegment(tp replicate.Partition) (offsetsync.Segment, bool) {
	return m.store.State().LastSegment(key(tp))
}

// Owns reports whether this node's mirror may write tp: raft names this node
// its writer, at the epoch the mirror took it with, and this node heard from
// the leader within the lease. The first true answer for a partition takes it
// at the current epoch (after Handoff if another node wrote it before); a
// false answer drops it, so that a partition that comes back is taken afresh
// at its new epoch.
func (m *Maps) Owns(tp replicate.Partition) bool {
	w, _ := m.store.State().Writer(key(tp))
	m.mu.Lock()
	defer m.mu.Unlock()
	if w.Node != m.store.ID() || !m.store.Staleness().Within(m.lease) {
		delete(m.held, tp)
		delete(m.waiting, tp)
		return false
	}
	epoch, ok := m.held[tp]
	if !ok {
		if w.Epoch > 1 && m.Handoff > 0 {
			h, ok := m.waiting[tp]
			if !ok || h.epoch != w.Epoch {
				m.waiting[tp] = handoff{epoch: w.Epoch, since: time.Now()}
				return false
			}
			if time.Since(h.since) < m.Handoff {
				return false
			}
		}
		delete(m.waiting, tp)
		m.held[tp] = w.Epoch
		return true
	}
	if epoch != w.Epoch {
		delete(m.held, tp) // moved away and back: the mirror must start over
		return false
	}
	return true
}

// Append records segments through the leader with the epoch this node holds
// tp at, and waits until this node's replica has them (so that Map reads its
// own writes). A partition not held, or refused as stale by the leader, gives
// an error wrapping replicate.ErrNotOwner.
func (m *Maps) Append(ctx context.Context, tp replicate.Partition, segs []offsetsync.Segment) error {
	m.mu.Lock()
	epoch, ok := m.held[tp]
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s/%d is not held by %s", replicate.ErrNotOwner, tp.Topic, tp.Partition, m.store.ID())
	}
	res, err := m.store.Propose(ctx, raftstore.AppendSegments{Node: m.store.ID(), Partitions: []raftstore.PartitionAppend{
		{TopicPartition: key(tp), Epoch: epoch, Segments: segs},
	}})
	if errors.Is(err, raftstore.ErrStaleWriter) {
		m.mu.Lock()
		if m.held[tp] == epoch {
			delete(m.held, tp)
		}
		m.mu.Unlock()
		return fmt.Errorf("%w: %w", replicate.ErrNotOwner, err)
	}
	if err != nil {
		return err
	}
	return m.store.WaitApplied(ctx, res.Index)
}

// FillSource records the reverse mirror's progress through the leader and
// waits until this node's replica has it.
func (m *Maps) FillSource(ctx context.Context, tp replicate.Partition, virtual, source, length int64) error {
	res, err := m.store.Propose(ctx, raftstore.FillSource{TopicPartition: key(tp), Virtual: virtual, Source: source, Length: length})
	if err != nil {
		return err
	}
	return m.store.WaitApplied(ctx, res.Index)
}

// Flipped lists the partitions whose producers flipped to the target and
// whose writer is this node: the reverse mirror's work here.
func (m *Maps) Flipped() []replicate.Partition {
	st := m.store.State()
	var out []replicate.Partition
	for _, t := range st.Topics() {
		if t.Primary != raftstore.ProducerTarget && t.Primary != raftstore.ProducerRollingBack {
			continue
		}
		for p := int32(0); ; p++ {
			last, ok := st.LastSegment(raftstore.TopicPartition{Topic: t.Topic, Partition: p})
			if !ok {
				break
			}
			tp := replicate.Partition{Topic: t.Topic, Partition: p}
			if last.Open() && m.IsWriter(tp) {
				out = append(out, tp)
			}
		}
	}
	return out
}

// IsWriter reports whether raft names this node the writer of tp (whatever
// the mirror holds): the proxy then waits on its own mirror, and otherwise on
// the replicated map (WaitMapped).
func (m *Maps) IsWriter(tp replicate.Partition) bool {
	w, _ := m.store.State().Writer(key(tp))
	return w.Node == m.store.ID()
}

// WaitMapped blocks until this node's replica of tp's map covers source
// offset (the record there is in the target, or is not data), or ctx ends.
// It serves produce-mode sync on nodes that do not write tp.
func (m *Maps) WaitMapped(ctx context.Context, tp replicate.Partition, offset int64) error {
	for {
		st := m.store.State()
		index := st.AppliedIndex()
		if last, ok := st.OffsetMap(key(tp)).Last(); ok && last.SourceEnd() > offset {
			return nil
		}
		if err := m.store.WaitApplied(ctx, index+1); err != nil {
			return fmt.Errorf("source offset %d of %s/%d not mirrored yet: %w", offset, tp.Topic, tp.Partition, err)
		}
	}
}
