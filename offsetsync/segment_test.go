package offsetsync

import "testing"

func TestMapAppendMergesAndRefuses(t *testing.T) {
	m, err := Map(nil).Append(Segment{Virtual: 10, Source: 10, Target: 0})
	if err != nil {
		t.Fatalf("anchor refused: %v", err)
	}
	for i := int64(0); i < 5; i++ {
		if m, err = m.Append(Segment{Virtual: 10 + i, Source: 10 + i, Target: i, Length: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if len(m) != 1 || m[0] != (Segment{10, 10, 0, 5}) {
		t.Fatalf("contiguous appends should merge into one segment, got %+v", m)
	}
	// A gap in the source (a transaction marker) starts a new segment.
	if m, err = m.Append(Segment{Virtual: 16, Source: 16, Target: 5, Length: 2}); err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 {
		t.Fatalf("gap should start a segment, got %+v", m)
	}
	if _, err := m.Append(Segment{Virtual: 17, Source: 17, Target: 7, Length: 1}); err == nil {
		t.Fatal("overlapping segment accepted")
	}
	if _, err := m.Append(Segment{Virtual: 18, Source: 18, Target: 6, Length: 1}); err == nil {
		t.Fatal("segment going backwards in the target accepted")
	}
	if _, err := m.Append(Segment{Virtual: 30, Source: 30, Target: 30, Length: 0}); err == nil {
		t.Fatal("empty segment after the anchor accepted")
	}
}
