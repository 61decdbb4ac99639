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

// MapStore keeps the offset map the mirror writes. The raft store implements
// it for real deployments; MemoryMaps serves tests and the single-process
// default until then.
type MapStore interface {
	Map(tp Partition) offsetsync.Map
	// Append records segments after the partition's last one. It must be
	// durable when it returns: the mirror derives where to resume from it.
	Append(ctx context.Context, tp Partition, segs []offsetsync.Segment) error
}

// MemoryMaps is an in-process MapStore.
type MemoryMaps struct {
	mu   sync.RWMutex
	maps map[Partition]offsetsync.Map
}

func NewMemoryMaps() *MemoryMaps { return &MemoryMaps{maps: make(map[Partition]offsetsync.Map)} }

func (s *MemoryMaps) Map(tp Partition) offsetsync.Map {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return append(offsetsync.Map(nil), s.maps[tp]...)
}

func (s *MemoryMaps) Append(_ context.Context, tp Partition, segs []offsetsync.Segment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.maps[tp]
	for _, seg := range segs {
		var err error
		if m, err = m.Append(seg); err != nil {
			return err
		}
	}
	s.maps[tp] = m
	return nil
}
