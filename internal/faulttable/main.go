// Command faulttable turns the `go test -json` output of the fault tests into
// the fault table of docs/reliability.md: one row per case (logged by
// internal/faultrow), with the test's result. `make test-faults` runs it.
//
//	go test -json ... | faulttable -live run.json   # echo the output, keep the stream
//	faulttable run1.json run2.json                  # print the table; exit 1 on any failure
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/kmigrate/kmigrate/internal/faultrow"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Time    time.Time
	Action  string
	Package string
	Test    string
	Elapsed float64
	Output  string
}

type testKey struct{ pkg, test string }

type result struct {
	action  string // pass, fail, skip; "" if the stream ended before it did
	elapsed float64
	rows    []faultrow.Row
	order   int
}

type table struct {
	tests    map[testKey]*result
	pkgFails []string // packages that failed outside any test (build, timeout)
	n        int
}

func (tb *table) test(k testKey) *result {
	r := tb.tests[k]
	if r == nil {
		tb.n++
		r = &result{order: tb.n}
		tb.tests[k] = r
	}
	return r
}

// read consumes one stream; echo, when not nil, gets the test output as
// plain text, as `go test -v` would print it.
func (tb *table) read(in io.Reader, echo io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			// go test prints build errors as plain text before any event.
			if echo != nil {
				fmt.Fprintln(echo, sc.Text())
			}
			continue
		}
		if echo != nil && e.Output != "" {
			io.WriteString(echo, e.Output)
		}
		if e.Test == "" {
			if e.Action == "fail" {
				tb.pkgFails = append(tb.pkgFails, e.Package)
			}
			continue
		}
		k := testKey{e.Package, e.Test}
		switch e.Action {
		case "run":
			tb.test(k)
		case "output":
			if row, ok := faultrow.Parse(e.Output); ok {
				r := tb.test(k)
				r.rows = append(r.rows, row)
			}
		case "pass", "fail", "skip":
			r := tb.test(k)
			r.action, r.elapsed = e.Action, e.Elapsed
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read go test -json: %w", err)
	}
	return nil
}

// print writes the markdown table and says whether everything passed.
func (tb *table) print(w io.Writer) bool {
	keys := make([]testKey, 0, len(tb.tests))
	for k := range tb.tests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return tb.tests[keys[i]].order < tb.tests[keys[j]].order })
	ok := len(keys) > 0 && len(tb.pkgFails) == 0
	fmt.Fprintln(w, "| case | test | result | outcome | recovery | test time |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- |")
	var total float64
	for _, k := range keys {
		r := tb.tests[k]
		if !strings.Contains(k.test, "/") {
			total += r.elapsed
		}
		res := strings.ToUpper(r.action)
		switch r.action {
		case "pass":
		case "skip":
			ok = false // a fault test must run: a missing prerequisite is a failure
		case "":
			res, ok = "DID NOT FINISH", false
		default:
			ok = false
		}
		if len(r.rows) == 0 && (strings.Contains(k.test, "/") || r.action == "pass" && tb.subtestRows(k)) {
			// A subtest without a row of its own, or a test that passed
			// and whose subtests report the rows (cases sharing clusters).
			continue
		}
		name := "`" + shortPkg(k.pkg) + "." + k.test + "`"
		secs := fmt.Sprintf("%.0f s", r.elapsed)
		if len(r.rows) == 0 {
			fmt.Fprintf(w, "| (no row reported) | %s | %s | | | %s |\n", name, res, secs)
			continue
		}
		for _, row := range r.rows {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", cell(row.Case), name, res, cell(row.Outcome), cell(row.Recovery), secs)
		}
	}
	for _, p := range tb.pkgFails {
		if tb.failedTests(p) {
			continue // the package failed because a test did: already shown
		}
		fmt.Fprintf(w, "| (package failed outside a test: build error or timeout) | `%s` | FAIL | | | |\n", shortPkg(p))
	}
	verdict := "PASS"
	if !ok {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "\n%d tests, %s of test time: %s\n", len(keys), faultrow.FormatDuration(time.Duration(total*float64(time.Second))), verdict)
	return ok
}

// subtestRows says whether a subtest of k reported a row.
func (tb *table) subtestRows(k testKey) bool {
	for sk, r := range tb.tests {
		if sk.pkg == k.pkg && strings.HasPrefix(sk.test, k.test+"/") && len(r.rows) > 0 {
			return true
		}
	}
	return false
}

// failedTests says whether a test of package pkg failed or did not finish.
func (tb *table) failedTests(pkg string) bool {
	for k, r := range tb.tests {
		if k.pkg == pkg && r.action != "pass" && r.action != "skip" {
			return true
		}
	}
	return false
}

func shortPkg(p string) string {
	return strings.TrimPrefix(p, "github.com/kmigrate/kmigrate/")
}

func cell(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}

func main() {
	live := flag.String("live", "", "read one stream from stdin, echo its output as text and save the stream to this file (no table)")
	flag.Parse()
	tb := &table{tests: map[testKey]*result{}}
	if *live != "" {
		f, err := os.Create(*live)
		if err != nil {
			fmt.Fprintln(os.Stderr, "faulttable:", err)
			os.Exit(2)
		}
		err = tb.read(io.TeeReader(os.Stdin, f), os.Stdout)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "faulttable:", err)
			os.Exit(2)
		}
		return
	}
	if flag.NArg() == 0 {
		if err := tb.read(os.Stdin, nil); err != nil {
			fmt.Fprintln(os.Stderr, "faulttable:", err)
			os.Exit(2)
		}
	}
	for _, name := range flag.Args() {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintln(os.Stderr, "faulttable:", err)
			os.Exit(2)
		}
		err = tb.read(f, nil)
		f.Close()
		if err != nil {
			fmt.Fprintf(os.Stderr, "faulttable: %s: %v\n", name, err)
			os.Exit(2)
		}
	}
	if !tb.print(os.Stdout) {
		os.Exit(1)
	}
}
