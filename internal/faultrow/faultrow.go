// Package faultrow is how a fault test reports its row of the fault table
// (docs/reliability.md): one machine-readable line in the test's log, which
// `make test-faults` collects from `go test -json` (internal/faulttable).
//
//	row := faultrow.New(t, "proxy ↔ target link cut 10 s under load")
//	...
//	row.Recovered(lagZero, "mirror lag back to 0 after the heal")
//	row.Outcome("0 lost / 0 duplicated; flip refused")
//
// The row is logged when the test ends, passed or failed, so a failing test
// still shows what it measured before it failed.
package faultrow

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// Marker starts the logged line; Parse looks for it.
const Marker = "FAULTROW "

// Row is one case of the fault table.
type Row struct {
	Case     string `json:"case"`
	Outcome  string `json:"outcome,omitempty"`
	Recovery string `json:"recovery,omitempty"` // "3.5 s (what was measured)"
	Failed   bool   `json:"failed,omitempty"`   // the test had failed when the row was logged
}

// Recorder fills one row over a test and logs it at the test's end.
type Recorder struct {
	mu  sync.Mutex
	row Row
}

var (
	mu   sync.Mutex
	open = map[testing.TB][]*Recorder{} // rows of running tests, in creation order
)

// New starts the row of case kase; it is logged in t's cleanup, after the
// rows t started before it.
func New(t testing.TB, kase string) *Recorder {
	r := &Recorder{row: Row{Case: kase}}
	mu.Lock()
	defer mu.Unlock()
	if len(open[t]) == 0 {
		t.Cleanup(func() {
			mu.Lock()
			rows := open[t]
			delete(open, t)
			mu.Unlock()
			for _, r := range rows {
				r.mu.Lock()
				row := r.row
				r.mu.Unlock()
				row.Failed = t.Failed()
				t.Log(Line(row))
			}
		})
	}
	open[t] = append(open[t], r)
	return r
}

// Recovered records how long recovery took and what was measured; called
// again, it appends (a case may measure several recoveries).
func (r *Recorder) Recovered(d time.Duration, what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := FormatDuration(d)
	if what != "" {
		s += " (" + what + ")"
	}
	if r.row.Recovery != "" {
		r.row.Recovery += "; "
	}
	r.row.Recovery += s
}

// Outcome sets the outcome text (what the test found, in a few words).
func (r *Recorder) Outcome(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.row.Outcome = fmt.Sprintf(format, args...)
}

// Report logs a complete row at once.
func Report(t testing.TB, kase, outcome string, recovery time.Duration, what string) {
	t.Helper()
	r := &Recorder{row: Row{Case: kase, Outcome: outcome}}
	r.Recovered(recovery, what)
	r.row.Failed = t.Failed()
	t.Log(Line(r.row))
}

// Line is the logged form of a row.
func Line(r Row) string {
	b, _ := json.Marshal(r) // strings only: cannot fail
	return Marker + string(b)
}

// Parse finds a row in one line of test output (t.Log prefixes the file and
// line; go test -json may indent it).
func Parse(line string) (Row, bool) {
	i := strings.Index(line, Marker)
	if i < 0 {
		return Row{}, false
	}
	var r Row
	if err := json.Unmarshal([]byte(strings.TrimSpace(line[i+len(Marker):])), &r); err != nil {
		return Row{}, false
	}
	return r, true
}

// FormatDuration rounds for a table: 3.5 s, 240 ms, 1 min 12 s.
func FormatDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Round(time.Millisecond).Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	default:
		d = d.Round(time.Second)
		return fmt.Sprintf("%d min %d s", int(d.Minutes()), int(d.Seconds())%60)
	}
}
