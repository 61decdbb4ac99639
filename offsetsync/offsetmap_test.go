package offsetsync

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func mustAppend(t *testing.T, m *OffsetMap, segs ...Segment) {
	t.Helper()
	for _, s := range segs {
		if _, err := m.Append(s); err != nil {
			t.Fatalf("append %+v: %v", s, err)
		}
	}
}

func TestSegmentMerge(t *testing.T) {
	var m OffsetMap
	// Batches mirrored one after the other with the same shift merge.
	mustAppend(t, &m,
		Segment{Virtual: 100, Source: 100, Target: 0, Length: 10},
		Segment{Virtual: 110, Source: 110, Target: 10, Length: 5},
		Segment{Virtual: 115, Source: 115, Target: 15, Length: 1},
	)
	if want := (OffsetMap{{Virtual: 100, Source: 100, Target: 0, Length: 16}}); !slices.Equal(m, want) {
		t.Fatalf("merged map = %+v, want %+v", m, want)
	}
	// A different target shift (e.g. a transaction marker on the target)
	// starts a new segment.
	mustAppend(t, &m, Segment{Virtual: 116, Source: 116, Target: 17, Length: 4})
	// Records only in the target (producer flipped, no reverse mirror).
	mustAppend(t, &m, Segment{Virtual: 120, Source: NoOffset, Target: 21, Length: 3})
	mustAppend(t, &m, Segment{Virtual: 123, Source: NoOffset, Target: 24, Length: 3})
	// A hole in virtual offsets is allowed but does not merge.
	mustAppend(t, &m, Segment{Virtual: 130, Source: NoOffset, Target: 31, Length: 2})
	want := OffsetMap{
		{Virtual: 100, Source: 100, Target: 0, Length: 16},
		{Virtual: 116, Source: 116, Target: 17, Length: 4},
		{Virtual: 120, Source: NoOffset, Target: 21, Length: 6},
		{Virtual: 130, Source: NoOffset, Target: 31, Length: 2},
	}
	if !slices.Equal(m, want) {
		t.Fatalf("map = %+v, want %+v", m, want)
	}
	if m.End() != 132 {
		t.Fatalf("End = %d, want 132", m.End())
	}
}

func TestSegmentAppendIdempotentAndRefusals(t *testing.T) {
	var m OffsetMap
	mustAppend(t, &m,
		Segment{Virtual: 0, Source: 0, Target: 0, Length: 10},
		Segment{Virtual: 10, Source: 10, Target: 12, Length: 10},
	)
	orig := m.Clone()

	// Restating mapped offsets exactly (a writer retrying) changes nothing.
	for _, s := range []Segment{
		{Virtual: 0, Source: 0, Target: 0, Length: 10},
		{Virtual: 5, Source: 5, Target: 5, Length: 5},
		{Virtual: 12, Source: 12, Target: 14, Length: 8},
	} {
		changed, err := m.Append(s)
		if err != nil || changed {
			t.Fatalf("restating %+v: changed=%v err=%v", s, changed, err)
		}
	}
	if !slices.Equal(m, orig) {
		t.Fatalf("map changed by restatements: %+v", m)
	}

	// A segment overlapping the tail consistently adds only its new part.
	changed, err := m.Append(Segment{Virtual: 15, Source: 15, Target: 17, Length: 10})
	if err != nil || !changed {
		t.Fatalf("overlapping extension: changed=%v err=%v", changed, err)
	}
	if got := m[len(m)-1]; got != (Segment{Virtual: 10, Source: 10, Target: 12, Length: 15}) {
		t.Fatalf("after extension last = %+v", got)
	}
	orig = m.Clone()

	bad := []struct {
		name string
		s    Segment
	}{
		{"zero length after the first", Segment{Virtual: 25, Source: 25, Target: 27, Length: 0}},
		{"negative length", Segment{Virtual: 25, Source: 25, Target: 27, Length: -1}},
		{"negative virtual", Segment{Virtual: -1, Source: 25, Target: 27, Length: 1}},
		{"negative source", Segment{Virtual: 25, Source: -5, Target: 27, Length: 1}},
		{"in neither cluster", Segment{Virtual: 25, Source: NoOffset, Target: NoOffset, Length: 1}},
		{"overflow", Segment{Virtual: math.MaxInt64 - 1, Source: 30, Target: 30, Length: 2}},
		{"conflicting restatement", Segment{Virtual: 3, Source: 3, Target: 4, Length: 2}},
		{"conflict in the overlapped part", Segment{Virtual: 20, Source: 20, Target: 20, Length: 10}},
		{"target goes back", Segment{Virtual: 25, Source: 25, Target: 20, Length: 1}},
		{"source goes back", Segment{Virtual: 25, Source: 24, Target: 27, Length: 1}},
	}
	for _, tc := range bad {
		if _, err := m.Append(tc.s); !errors.Is(err, ErrSegment) {
			t.Errorf("%s: err = %v, want ErrSegment", tc.name, err)
		}
		if !slices.Equal(m, orig) {
			t.Fatalf("%s: refused append changed the map: %+v", tc.name, m)
		}
	}

	// Restating inside a hole is refused: the map cannot grow in the middle.
	var h OffsetMap
	mustAppend(t, &h, Segment{Virtual: 0, Source: 0, Target: 0, Length: 5}, Segment{Virtual: 10, Source: 10, Target: 5, Length: 5})
	if _, err := h.Append(Segment{Virtual: 6, Source: 6, Target: 20, Length: 1}); !errors.Is(err, ErrSegment) {
		t.Fatalf("append into a hole: err = %v", err)
	}
}

func TestSegmentAnchor(t *testing.T) {
	var m OffsetMap
	anchor := Segment{Virtual: 100, Source: 100, Target: 7, Length: 0}
	if changed, err := m.Append(anchor); err != nil || !changed {
		t.Fatalf("anchor: %v %v", changed, err)
	}
	if _, ok := m.VirtualToTarget(100); ok {
		t.Fatal("an anchor maps nothing")
	}
	if changed, err := m.Append(anchor); err != nil || changed {
		t.Fatalf("same anchor again: %v %v", changed, err)
	}
	if _, err := m.Append(Segment{Virtual: 99, Source: 99, Target: 6, Length: 1}); !errors.Is(err, ErrSegment) {
		t.Fatalf("segment before the anchor: %v", err)
	}
	mustAppend(t, &m, Segment{Virtual: 100, Source: 100, Target: 7, Length: 5})
	if !slices.Equal(m, OffsetMap{{Virtual: 100, Source: 100, Target: 7, Length: 5}}) {
		t.Fatalf("first segment did not merge into the anchor: %+v", m)
	}
	if _, err := m.Append(Segment{Virtual: 105, Source: 105, Target: 12, Length: 0}); !errors.Is(err, ErrSegment) {
		t.Fatalf("empty segment after the first: %v", err)
	}
	var bad OffsetMap
	if _, err := bad.Append(Segment{Virtual: -1, Source: 0, Target: 0}); !errors.Is(err, ErrSegment) {
		t.Fatalf("invalid anchor: %v", err)
	}
}

func TestTranslateBoundaries(t *testing.T) {
	var m OffsetMap
	mustAppend(t, &m,
		Segment{Virtual: 100, Source: 100, Target: 0, Length: 10},       // [100,110) ↔ t[0,10)
		Segment{Virtual: 110, Source: 110, Target: 20, Length: 5},       // [110,115) ↔ t[20,25)
		Segment{Virtual: 115, Source: NoOffset, Target: 25, Length: 5},  // target only
		Segment{Virtual: 125, Source: 115, Target: NoOffset, Length: 5}, // source only (after a hole)
	)
	type pair struct {
		in, out int64
		ok      bool
	}
	check := func(name string, f func(int64) (int64, bool), cases []pair) {
		t.Helper()
		for _, c := range cases {
			got, ok := f(c.in)
			if ok != c.ok || (ok && got != c.out) {
				t.Errorf("%s(%d) = %d,%v; want %d,%v", name, c.in, got, ok, c.out, c.ok)
			}
		}
	}
	check("VirtualToTarget", m.VirtualToTarget, []pair{
		{99, 0, false}, {100, 0, true}, {109, 9, true}, {110, 20, true}, {114, 24, true},
		{115, 25, true}, {119, 29, true}, {120, 0, false}, {124, 0, false}, {125, 0, false}, {130, 0, false}, {-1, 0, false},
	})
	check("VirtualToSource", m.VirtualToSource, []pair{
		{99, 0, false}, {100, 100, true}, {114, 114, true}, {115, 0, false}, {119, 0, false},
		{125, 115, true}, {129, 119, true}, {130, 0, false},
	})
	check("TargetToVirtual", m.TargetToVirtual, []pair{
		{-1, 0, false}, {0, 100, true}, {9, 109, true}, {10, 0, false}, {19, 0, false}, {20, 110, true},
		{24, 114, true}, {25, 115, true}, {29, 119, true}, {30, 0, false},
	})
	check("SourceToVirtual", m.SourceToVirtual, []pair{
		{99, 0, false}, {100, 100, true}, {114, 114, true}, {115, 125, true}, {119, 129, true}, {120, 0, false},
	})
	var empty OffsetMap
	check("empty VirtualToTarget", empty.VirtualToTarget, []pair{{0, 0, false}})
	check("empty TargetToVirtual", empty.TargetToVirtual, []pair{{0, 0, false}})
}

// TestTranslateAgainstBruteForce builds random maps and checks every offset
// in range against a per-offset table built from the segments.
func TestTranslateAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 200; iter++ {
		var m OffsetMap
		v, s, tg := int64(rng.IntN(5)), int64(rng.IntN(5)), int64(rng.IntN(5))
		for range rng.IntN(30) + 1 {
			n := int64(rng.IntN(4) + 1)
			seg := Segment{Virtual: v, Source: s, Target: tg, Length: n}
			switch rng.IntN(6) {
			case 0:
				seg.Source = NoOffset
			case 1:
				seg.Target = NoOffset
			}
			mustAppend(t, &m, seg)
			v += n + int64(rng.IntN(2))
			if seg.Source != NoOffset {
				s += n
			}
			if seg.Target != NoOffset {
				tg += n
			}
			s += int64(rng.IntN(2))
			tg += int64(rng.IntN(3))
		}
		v2s, v2t, s2v, t2v := map[int64]int64{}, map[int64]int64{}, map[int64]int64{}, map[int64]int64{}
		for _, g := range m {
			for k := range g.Length {
				if g.Source != NoOffset {
					v2s[g.Virtual+k], s2v[g.Source+k] = g.Source+k, g.Virtual+k
				}
				if g.Target != NoOffset {
					v2t[g.Virtual+k], t2v[g.Target+k] = g.Target+k, g.Virtual+k
				}
			}
		}
		for o := int64(-2); o < v+5; o++ {
			for _, c := range []struct {
				name string
				f    func(int64) (int64, bool)
				want map[int64]int64
			}{
				{"v2s", m.VirtualToSource, v2s}, {"v2t", m.VirtualToTarget, v2t},
				{"s2v", m.SourceToVirtual, s2v}, {"t2v", m.TargetToVirtual, t2v},
			} {
				got, ok := c.f(o)
				w, wok := c.want[o]
				if ok != wok || got != w {
					t.Fatalf("iter %d: %s(%d) = %d,%v want %d,%v; map %+v", iter, c.name, o, got, ok, w, wok, m)
				}
			}
		}
	}
}

func BenchmarkTargetToVirtual(b *testing.B) {
	var m OffsetMap
	for i := range int64(10000) {
		if _, err := m.Append(Segment{Virtual: i * 10, Source: i * 10, Target: i*10 + i, Length: 10}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := m.TargetToVirtual(int64(i%10000) * 11); !ok {
			b.Fatal("not found")
		}
	}
}

func TestFillSource(t *testing.T) {
	m := OffsetMap{{Virtual: 0, Source: 0, Target: 0, Length: 100}}
	if _, err := m.Append(OpenSegment(105, 100)); err != nil { // 5 markers at the source's tail
		t.Fatal(err)
	}
	if _, err := m.FillSource(105, 105, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := m.FillSource(115, 115, 5); err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 || m[1] != (Segment{Virtual: 105, Source: 105, Target: 100, Length: 15}) || !m.Flipped() || m[2].Virtual != 120 || m[2].Target != 115 {
		t.Fatalf("map after two fills: %+v", m)
	}
	if changed, err := m.FillSource(110, 110, 3); err != nil || changed {
		t.Fatalf("a repeated fill must be a no-op: %v %v", changed, err)
	}
	if _, err := m.FillSource(110, 111, 3); err == nil {
		t.Fatal("a fill that disagrees must be refused")
	}
	if _, err := m.FillSource(125, 125, 1); err == nil {
		t.Fatal("a fill after a hole must be refused")
	}
	if v, ok := m.TargetToVirtual(117); !ok || v != 122 {
		t.Fatalf("target 117 → %d %v, want 122", v, ok)
	}
	m.CloseOpen()
	if m.Flipped() || m.End() != 120 {
		t.Fatalf("closed map: %+v", m)
	}
}
