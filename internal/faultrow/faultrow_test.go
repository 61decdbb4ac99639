package faultrow

import (
	"testing"
	"time"
)

func TestParseLine(t *testing.T) {
	row := Row{Case: "link cut | 10 s", Outcome: "0 lost", Recovery: "1.2 s (lag 0)"}
	line := "    fleet_test.go:42: " + Line(row) + "\n"
	got, ok := Parse(line)
	if !ok || got != row {
		t.Fatalf("Parse(%q) = %+v, %v; want %+v", line, got, ok, row)
	}
	if _, ok := Parse("    x_test.go:1: something else"); ok {
		t.Fatal("a line without the marker parsed as a row")
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		240 * time.Millisecond:   "240 ms",
		3500 * time.Millisecond:  "3.5 s",
		72500 * time.Millisecond: "1 min 13 s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

func TestRowsInOrder(t *testing.T) {
	// The rows are logged first then second (see -v); what this checks is
	// that an ended test's rows are dropped.
	t.Run("case", func(t *testing.T) {
		New(t, "first").Outcome("a")
		New(t, "second").Outcome("b")
	})
	if len(open) != 0 {
		t.Fatalf("rows of ended tests kept: %v", open)
	}
}
