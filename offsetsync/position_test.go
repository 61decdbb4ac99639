package offsetsync

import (
	"errors"
	"testing"
)

func TestPositionTranslation(t *testing.T) {
	// Source offsets 100..104 copied to target 0..4, a marker at 105,
	// 106..108 copied to 5..7.
	var m OffsetMap
	for _, s := range []Segment{{Virtual: 100, Source: 100, Target: 0}, {Virtual: 100, Source: 100, Target: 0, Length: 5}, {Virtual: 106, Source: 106, Target: 5, Length: 3}} {
		if _, err := m.Append(s); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		v, want int64
		covered bool
		err     error
	}{
		{100, 0, false, nil},
		{104, 4, false, nil},
		{105, 5, false, nil}, // the marker: next record is 106 at target 5
		{106, 5, false, nil},
		{109, 8, false, nil}, // the end
		{110, 0, false, ErrNotCovered},
		{110, 8, true, nil},
	}
	for _, c := range cases {
		got, err := m.PositionToTarget(c.v, c.covered)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("PositionToTarget(%d) err = %v, want %v", c.v, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("PositionToTarget(%d, %v) = %d, %v; want %d", c.v, c.covered, got, err, c.want)
		}
	}
	if _, err := m.PositionToTarget(99, true); err == nil {
		t.Error("a position before the mirrored range translated")
	}
	for tpos, want := range map[int64]int64{0: 100, 4: 104, 5: 106, 8: 109} {
		if got, err := m.PositionToVirtual(tpos); err != nil || got != want {
			t.Errorf("PositionToVirtual(%d) = %d, %v; want %d", tpos, got, err, want)
		}
	}
	if _, err := m.PositionToVirtual(9); err == nil {
		t.Error("a target position past the end translated")
	}
}
