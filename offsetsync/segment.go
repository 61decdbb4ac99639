// Package offsetsync holds the exact offset map between the virtual log a
// client sees and the logs of the source and target clusters, and (later)
// the group cutover state machine built on it.
package offsetsync

import "fmt"

// Segment maps Length consecutive offsets: virtual offset Virtual+i is
// source offset Source+i and target offset Target+i.
type Segment struct {
	Virtual int64 `json:"virtual"`
	Source  int64 `json:"source"`
	Target  int64 `json:"target"`
	Length  int64 `json:"length"`
}

// SourceEnd is the first source offset after the segment.
func (s Segment) SourceEnd() int64 { return s.Source + s.Length }

// TargetEnd is the first target offset after the segment.
func (s Segment) TargetEnd() int64 { return s.Target + s.Length }

// VirtualEnd is the first virtual offset after the segment.
func (s Segment) VirtualEnd() int64 { return s.Virtual + s.Length }

// continues reports whether next starts exactly where s ends in all three
// logs, so the two can merge into one segment.
func (s Segment) continues(next Segment) bool {
	return next.Virtual == s.VirtualEnd() && next.Source == s.SourceEnd() && next.Target == s.TargetEnd()
}

// Map is the ordered list of segments of one partition.
type Map []Segment

// Append adds a segment after the last one, merging when contiguous. It
// refuses segments that would make the map non-monotonic in any log: the
// mirror has one writer per partition, so a backwards segment is a bug or a
// stale writer, never something to paper over.
//
// The first segment may be empty: an anchor saying where copying starts in
// both logs, stored before the first record is written, so that a writer
// that dies before recording any mapping still knows what it wrote.
func (m Map) Append(seg Segment) (Map, error) {
	if seg.Length < 0 || seg.Length == 0 && len(m) > 0 {
		return m, fmt.Errorf("segment %+v: length must be positive (only the first segment, the anchor, may be empty)", seg)
	}
	if n := len(m); n > 0 {
		last := m[n-1]
		if seg.Virtual < last.VirtualEnd() || seg.Source < last.SourceEnd() || seg.Target < last.TargetEnd() {
			return m, fmt.Errorf("segment %+v overlaps or precedes the last segment %+v", seg, last)
		}
		if last.continues(seg) {
			m[n-1].Length += seg.Length
			return m, nil
		}
	}
	return append(m, seg), nil
}

// Last returns the last segment, if any.
func (m Map) Last() (Segment, bool) {
	if len(m) == 0 {
		return Segment{}, false
	}
	return m[len(m)-1], true
}
