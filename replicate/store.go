package replicate

import (
	"context"
	"sync"

	"github.com/kmigrate/kmigrate/offsetsync"
)

// Partition names one topic-partition.
type Partition struct {
	Topic     string
	Partition int32
}

// MapStore keeps the offset map the mirror writes. replicate/raftmaps
// implements it on the raft control plane (what kmigrate runs); MemoryMaps
// serves tests.
type MapStore interface {
	Map(tp Partition) offsetsync.OffsetMap
	// Append records segments after the partition's last one. It must be
	// durable when it returns: the mirror derives where to resume from it.
	Append(ctx context.Context, tp Partition, segs []offsetsync.Segment) error
}

// MemoryMaps is an in-process MapStore.
type MemoryMaps struct {
	mu   sync.RWMutex
	maps map[Partition]offsetsync.OffsetMap
}

func NewMemoryMaps() *MemoryMaps { return &MemoryMaps{maps: make(map[Partition]offsetsync.OffsetMap)} }

func (s *MemoryMaps) Map(tp Partition) offsetsync.OffsetMap {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.maps[tp].Clone()
}

// LastSegment returns the partition's last segment without copying the map.
func (s *MemoryMaps) LastSegment(tp Partition) (offsetsync.Segment, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.maps[tp].Last()
}

func (s *MemoryMaps) Append(_ context.Context, tp Partition, segs []offsetsync.Segment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.maps[tp].Clone() // all or nothing: Append grows the last segment in place
	for _, seg := range segs {
		if _, err := m.Append(seg); err != nil {
			return err
		}
	}
	s.maps[tp] = m
	return nil
}
