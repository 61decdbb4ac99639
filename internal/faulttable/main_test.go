package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kmigrate/kmigrate/internal/faultrow"
)

func TestTable(t *testing.T) {
	row := faultrow.Line(faultrow.Row{Case: "link cut", Outcome: "0 lost", Recovery: "1.2 s (lag 0)"})
	stream := strings.Join([]string{
		`{"Action":"run","Package":"github.com/kmigrate/kmigrate/integration","Test":"TestA"}`,
		`{"Action":"output","Package":"github.com/kmigrate/kmigrate/integration","Test":"TestA","Output":"    a_test.go:9: ` + strings.ReplaceAll(row, `"`, `\"`) + `\n"}`,
		`{"Action":"pass","Package":"github.com/kmigrate/kmigrate/integration","Test":"TestA","Elapsed":12.3}`,
		`{"Action":"run","Package":"github.com/kmigrate/kmigrate/integration","Test":"TestB"}`,
		`{"Action":"fail","Package":"github.com/kmigrate/kmigrate/integration","Test":"TestB","Elapsed":1}`,
		`{"Action":"fail","Package":"github.com/kmigrate/kmigrate/integration","Elapsed":14}`,
	}, "\n")
	tb := &table{tests: map[testKey]*result{}}
	if err := tb.read(strings.NewReader(stream), nil); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if tb.print(&out) {
		t.Error("a failed test and package printed as a pass")
	}
	for _, want := range []string{
		"| link cut | `integration.TestA` | PASS | 0 lost | 1.2 s (lag 0) | 12 s |",
		"| (no row reported) | `integration.TestB` | FAIL |",
		"FAIL\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

// TestTableSubtests: cases reported by the subtests of one test (sharing its
// clusters) are the rows; the parent shows only if it failed.
func TestTableSubtests(t *testing.T) {
	line := func(test, kase string) string {
		row := faultrow.Line(faultrow.Row{Case: kase, Outcome: "0 lost"})
		return `{"Action":"output","Package":"p","Test":"` + test + `","Output":"    a_test.go:9: ` + strings.ReplaceAll(row, `"`, `\"`) + `\n"}`
	}
	for _, parent := range []string{"pass", "fail"} {
		stream := strings.Join([]string{
			`{"Action":"run","Package":"p","Test":"TestK"}`,
			`{"Action":"run","Package":"p","Test":"TestK/a"}`,
			line("TestK/a", "kill during a"),
			`{"Action":"pass","Package":"p","Test":"TestK/a","Elapsed":3}`,
			`{"Action":"run","Package":"p","Test":"TestK/b"}`,
			line("TestK/b", "kill during b"),
			`{"Action":"pass","Package":"p","Test":"TestK/b","Elapsed":4}`,
			`{"Action":"` + parent + `","Package":"p","Test":"TestK","Elapsed":9}`,
		}, "\n")
		tb := &table{tests: map[testKey]*result{}}
		if err := tb.read(strings.NewReader(stream), nil); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if got := tb.print(&out); got != (parent == "pass") {
			t.Errorf("parent %s: table verdict %v:\n%s", parent, got, out.String())
		}
		for _, want := range []string{"| kill during a | `p.TestK/a` | PASS | 0 lost |  | 3 s |", "| kill during b | `p.TestK/b` | PASS |", "9.0 s of test time"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("parent %s: table lacks %q:\n%s", parent, want, out.String())
			}
		}
		if shown := strings.Contains(out.String(), "(no row reported) | `p.TestK` | FAIL"); shown != (parent == "fail") {
			t.Errorf("parent %s: parent row shown %v:\n%s", parent, shown, out.String())
		}
	}
}
