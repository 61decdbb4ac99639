package offsetsync

// Package offsetsync holds the exact offset map between the virtual log a
// client sees and the logs of the source and target clusters: segments,
// their merging, and translation in every direction. The raft store keeps
// the maps; the mirror appends to them; the proxy translates with them.

import (
	"errors"
	"fmt"
	"math"
	"sort"
)

// NoOffset marks a cluster that does not hold a segment's records, e.g. the
// source side of records produced to the target after a producer flip with
// the reverse mirror off.
const NoOffset int64 = -1

// ErrSegment is wrapped by every refusal of OffsetMap.Append.
var ErrSegment = errors.New("offset map segment refused")

// Segment maps Length consecutive virtual offsets starting at Virtual onto the
// same number of consecutive offsets starting at Source in the source cluster
// and at Target in the target cluster. Source or Target is NoOffset when that
// cluster does not hold the records.
type Segment struct {
	Virtual int64 `json:"virtual"`
	Source  int64 `json:"source"`
	Target  int64 `json:"target"`
	Length  int64 `json:"length"`
}

// End is the first virtual offset after the segment.
func (s Segment) End() int64 { return s.Virtual + s.Length }

// SourceEnd is the first source offset after the segment (the segment must
// hold source records).
func (s Segment) SourceEnd() int64 { return s.Source + s.Length }

// TargetEnd is the first target offset after the segment (the segment must
// hold target records).
func (s Segment) TargetEnd() int64 { return s.Target + s.Length }

// Validate reports whether the segment is well formed on its own.
func (s Segment) Validate() error {
	switch {
	case s.Length <= 0:
		return fmt.Errorf("%w: length %d must be positive", ErrSegment, s.Length)
	case s.Virtual < 0:
		return fmt.Errorf("%w: negative virtual offset %d", ErrSegment, s.Virtual)
	case s.Source < 0 && s.Source != NoOffset, s.Target < 0 && s.Target != NoOffset:
		return fmt.Errorf("%w: offsets must be >= 0 or NoOffset (source %d, target %d)", ErrSegment, s.Source, s.Target)
	case s.Source == NoOffset && s.Target == NoOffset:
		return fmt.Errorf("%w: segment at virtual %d is in neither cluster", ErrSegment, s.Virtual)
	}
	// The ends must be representable, or End() and the translations overflow.
	for _, start := range []int64{s.Virtual, s.Source, s.Target} {
		if start != NoOffset && s.Length > math.MaxInt64-start {
			return fmt.Errorf("%w: segment at virtual %d overflows int64", ErrSegment, s.Virtual)
		}
	}
	return nil
}

// sameShift reports whether n continues s with the same virtual→cluster deltas
// on both sides (NoOffset only matches NoOffset), ignoring contiguity.
func (s Segment) sameShift(n Segment) bool {
	return sameDelta(s.Virtual, s.Source, n.Virtual, n.Source) &&
		sameDelta(s.Virtual, s.Target, n.Virtual, n.Target)
}

func sameDelta(v1, o1, v2, o2 int64) bool {
	if o1 == NoOffset || o2 == NoOffset {
		return o1 == o2
	}
	return o1-v1 == o2-v2
}

// advance drops the first k offsets of the segment.
func (s Segment) advance(k int64) Segment {
	s.Virtual += k
	if s.Source != NoOffset {
		s.Source += k
	}
	if s.Target != NoOffset {
		s.Target += k
	}
	s.Length -= k
	return s
}

// OffsetMap is the ordered list of segments of one topic-partition: virtual
// offsets strictly increase from one segment to the next, and so do the
// source and target offsets of the segments that hold them. This makes every
// translation, in both directions, exact and unique.
type OffsetMap []Segment

// End is the first virtual offset after the map, 0 for an empty map.
func (m OffsetMap) End() int64 {
	if len(m) == 0 {
		return 0
	}
	return m[len(m)-1].End()
}

// Last returns the last segment, if any.
func (m OffsetMap) Last() (Segment, bool) {
	if len(m) == 0 {
		return Segment{}, false
	}
	return m[len(m)-1], true
}

// Clone returns a copy that shares nothing with m.
func (m OffsetMap) Clone() OffsetMap {
	if m == nil {
		return nil
	}
	return append(OffsetMap(make([]Segment, 0, len(m))), m...)
}

// Append adds s at the end of the map, merging it into the last segment when
// it continues it with the same shift. The first segment may be empty (an
// anchor, see appendAnchor). A segment (or prefix of one) that
// restates offsets already mapped identically is accepted and ignored, so a
// writer that retries after a crash cannot corrupt the map; one that maps
// them differently, leaves a hole inside the mapped range, or goes back in
// either cluster is refused. changed is false when nothing was added.
//
// Append mutates the map in place (the last segment may grow), like an
// in-place update: callers that hand the map out must copy it first.
func (m *OffsetMap) Append(s Segment) (changed bool, err error) {
	cur := *m
	if s.Length == 0 {
		return m.appendAnchor(s)
	}
	if err := s.Validate(); err != nil {
		return false, err
	}
	// Skip the part of s that is already mapped, checking that it agrees.
	for s.Length > 0 && s.Virtual < cur.End() {
		i, ok := cur.find(s.Virtual)
		if !ok {
			return false, fmt.Errorf("%w: virtual offset %d falls in a hole of the map", ErrSegment, s.Virtual)
		}
		if !cur[i].sameShift(s) {
			return false, fmt.Errorf("%w: %+v conflicts with mapped segment %+v", ErrSegment, s, cur[i])
		}
		s = s.advance(min(cur[i].End(), s.End()) - s.Virtual)
	}
	if s.Length == 0 {
		return false, nil
	}
	if n := len(cur); n > 0 {
		if end, ok := cur.sideEnd(func(g Segment) int64 { return g.Source }); ok && s.Source != NoOffset && s.Source < end {
			return false, fmt.Errorf("%w: source offset %d goes back before %d", ErrSegment, s.Source, end)
		}
		if end, ok := cur.sideEnd(func(g Segment) int64 { return g.Target }); ok && s.Target != NoOffset && s.Target < end {
			return false, fmt.Errorf("%w: target offset %d goes back before %d", ErrSegment, s.Target, end)
		}
		if last := &cur[n-1]; last.End() == s.Virtual && last.sameShift(s) {
			last.Length += s.Length
			return true, nil
		}
	}
	*m = append(cur, s)
	return true, nil
}

// appendAnchor stores an empty first segment: where copying starts in all
// three logs, recorded before the first record is written so that a writer
// that dies before mapping anything still knows where it began (the anchor
// of offsetsync.Map). The next contiguous segment merges into it.
func (m *OffsetMap) appendAnchor(s Segment) (bool, error) {
	if len(*m) > 0 {
		if len(*m) == 1 && (*m)[0] == s {
			return false, nil // the same anchor again
		}
		return false, fmt.Errorf("%w: empty segment %+v: only the first segment (the anchor) may be empty", ErrSegment, s)
	}
	probe := s
	probe.Length = 1 // Validate the offsets as for a one-record segment.
	if err := probe.Validate(); err != nil {
		return false, err
	}
	*m = OffsetMap{s}
	return true, nil
}

// sideEnd is the end offset, in one cluster, of the last segment that holds
// records there.
func (m OffsetMap) sideEnd(side func(Segment) int64) (int64, bool) {
	for i := len(m) - 1; i >= 0; i-- {
		if o := side(m[i]); o != NoOffset {
			return o + m[i].Length, true
		}
	}
	return 0, false
}

// find returns the index of the segment holding virtual offset v.
func (m OffsetMap) find(v int64) (int, bool) {
	i := sort.Search(len(m), func(i int) bool { return m[i].End() > v })
	return i, i < len(m) && m[i].Virtual <= v
}

// VirtualToSource translates a virtual offset to the source offset holding the
// same record; ok is false outside the mapped ranges or when the source does
// not hold it.
func (m OffsetMap) VirtualToSource(v int64) (int64, bool) {
	i, ok := m.find(v)
	if !ok || m[i].Source == NoOffset {
		return 0, false
	}
	return m[i].Source + (v - m[i].Virtual), true
}

// VirtualToTarget translates a virtual offset to the target offset holding
// the same record; ok is false outside the mapped ranges or when the target
// does not hold it.
func (m OffsetMap) VirtualToTarget(v int64) (int64, bool) {
	i, ok := m.find(v)
	if !ok || m[i].Target == NoOffset {
		return 0, false
	}
	return m[i].Target + (v - m[i].Virtual), true
}

// SourceToVirtual translates a source offset to its virtual offset; ok is
// false when no segment maps it.
func (m OffsetMap) SourceToVirtual(o int64) (int64, bool) {
	return m.toVirtual(o, func(g Segment) int64 { return g.Source })
}

// TargetToVirtual translates a target offset to its virtual offset; ok is
// false when no segment maps it.
func (m OffsetMap) TargetToVirtual(o int64) (int64, bool) {
	return m.toVirtual(o, func(g Segment) int64 { return g.Target })
}

// toVirtual binary-searches the segments by their offsets on one side.
// Segments absent from that side (NoOffset) are skipped by giving them the
// end of the nearest earlier present segment as key, which keeps the key
// non-decreasing, so the search stays valid; the first segment whose key
// passes o is then always a present one.
func (m OffsetMap) toVirtual(o int64, side func(Segment) int64) (int64, bool) {
	if o < 0 {
		return 0, false
	}
	key := func(i int) int64 {
		for ; i >= 0; i-- {
			if s := side(m[i]); s != NoOffset {
				return s + m[i].Length
			}
		}
		return -1
	}
	i := sort.Search(len(m), func(i int) bool { return key(i) > o })
	if i == len(m) {
		return 0, false
	}
	start := side(m[i])
	if start == NoOffset || start > o {
		return 0, false
	}
	return m[i].Virtual + (o - start), true
}

// OpenSegment is the segment a producer flip appends: from virtual offset
// virtual on, every record is the target's, target offset target onward,
// with no end. Records produced to the target after the flip need no further
// map writes: their virtual offsets follow from this one segment.
func OpenSegment(virtual, target int64) Segment {
	return Segment{Virtual: virtual, Source: NoOffset, Target: target, Length: math.MaxInt64 - max(virtual, target)}
}

// Open reports whether s is an OpenSegment (it runs to the end of int64).
func (s Segment) Open() bool {
	return s.Length == math.MaxInt64-max(s.Virtual, s.Source, s.Target)
}

// Flipped reports whether the map ends with a producer flip's open segment:
// the target is the partition's primary and the source holds nothing newer.
func (m OffsetMap) Flipped() bool {
	last, ok := m.Last()
	return ok && last.Open()
}

// FillSource records that the reverse mirror copied the target records of
// the open segment's first length virtual offsets to the source, at source
// offsets from source on: the open segment is split into a closed segment
// holding both clusters (merged into the one before it when the shift is
// the same) and an open remainder. A range already filled identically is
// accepted and ignored (a retried write); anything else is refused.
func (m *OffsetMap) FillSource(virtual, source, length int64) (changed bool, err error) {
	last, ok := m.Last()
	if !ok || !last.Open() {
		return false, fmt.Errorf("%w: the map has no open segment to fill (topic not flipped)", ErrSegment)
	}
	if length <= 0 || source < 0 {
		return false, fmt.Errorf("%w: fill of %d records at source %d", ErrSegment, length, source)
	}
	if virtual < last.Virtual {
		// Already filled: it must agree with what is there.
		for v, s := virtual, source; v < virtual+length; v, s = v+1, s+1 {
			got, ok := m.VirtualToSource(v)
			if !ok || got != s {
				return false, fmt.Errorf("%w: virtual %d already maps to another source offset", ErrSegment, v)
			}
		}
		return false, nil
	}
	if virtual != last.Virtual {
		return false, fmt.Errorf("%w: fill at virtual %d leaves a hole before it (open segment starts at %d)", ErrSegment, virtual, last.Virtual)
	}
	closed := Segment{Virtual: last.Virtual, Source: source, Target: last.Target, Length: length}
	rest := (*m)[:len(*m)-1].Clone()
	if _, err := rest.Append(closed); err != nil {
		return false, err
	}
	rest = append(rest, OpenSegment(last.Virtual+length, last.Target+length))
	*m = rest
	return true, nil
}

// CloseOpen drops a flipped map's open segment (a topic's producers going
// back to the source): what the reverse mirror filled stays.
func (m *OffsetMap) CloseOpen() {
	if m.Flipped() {
		*m = (*m)[:len(*m)-1]
	}
}
