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
