package offsetsync

import "fmt"

// Positions differ from offsets: a consumer's position (a committed offset,
// a fetch offset) names the next record to read, and may point at an offset
// no record occupies: a transaction marker, an aborted record, a compacted
// gap, or the log end. Translating a position means "the first record at or
// after it", which is exact for the consumer: nothing between the two
// positions is a record it would read.

// ErrNotCovered is returned for a virtual position beyond what the map
// covers: the mirror has not copied up to it yet.
var ErrNotCovered = fmt.Errorf("position not mirrored yet")

// PositionToTarget translates a virtual position to the target position
// holding the same next record. A position past the map's end is only valid
// when the caller knows no record lies between the end and it (covered is
// true); it then maps to the target's end.
func (m OffsetMap) PositionToTarget(v int64, covered bool) (int64, error) {
	if len(m) == 0 {
		return 0, fmt.Errorf("empty offset map: %w", ErrNotCovered)
	}
	if v < m[0].Virtual {
		return 0, fmt.Errorf("position %d precedes the mirrored range (starts at %d): those records are not in the target", v, m[0].Virtual)
	}
	i, exact := m.find(v)
	switch {
	case exact && m[i].Target != NoOffset:
		return m[i].Target + (v - m[i].Virtual), nil
	case i < len(m):
		// In a hole: the next record is the next segment's first.
		for ; i < len(m); i++ {
			if m[i].Target != NoOffset {
				return m[i].Target, nil
			}
		}
	}
	if v > m.End() && !covered {
		return 0, fmt.Errorf("position %d beyond mirrored end %d: %w", v, m.End(), ErrNotCovered)
	}
	end, ok := m.sideEnd(func(g Segment) int64 { return g.Target })
	if !ok {
		return 0, fmt.Errorf("no segment holds target records: %w", ErrNotCovered)
	}
	return end, nil
}

// PositionToVirtual translates a target position (a committed offset stored
// in the target) back to the virtual position of the same next record.
func (m OffsetMap) PositionToVirtual(t int64) (int64, error) {
	if v, ok := m.TargetToVirtual(t); ok {
		return v, nil
	}
	end, ok := m.sideEnd(func(g Segment) int64 { return g.Target })
	if ok && t == end {
		return m.End(), nil
	}
	return 0, fmt.Errorf("target position %d is outside the offset map (target end %d)", t, end)
}
