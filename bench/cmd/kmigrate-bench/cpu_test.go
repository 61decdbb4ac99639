package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// comm with spaces and a ')' must not shift the fields.
	line := "1234 (we ird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 8 0 100 0 0\n"
	got, err := parseStatCPU([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3250 * time.Millisecond; got != want {
		t.Fatalf("got %v, want %v", got, want)
	}
	if _, err := parseStatCPU([]byte("garbage")); err == nil {
		t.Fatal("no error for garbage")
	}
	self, err := procCPU(os.Getpid())
	if err != nil || self < 0 {
		t.Fatalf("procCPU(self) = %v, %v", self, err)
	}
}

func TestParseProcStat(t *testing.T) {
	busy, steal, err := parseProcStat("cpu  100 5 50 1000 7 3 2 9 0 0\n")
	if err != nil {
		t.Fatal(err)
	}
	if busy != 1600*time.Millisecond || steal != 90*time.Millisecond {
		t.Fatalf("busy %v steal %v", busy, steal)
	}
	if _, _, err := machineCPU(); err != nil {
		t.Fatal(err)
	}
}

func TestWriteDoc(t *testing.T) {
	path := filepath.Join(t.TempDir(), "docs", "benchmarks.md")
	if err := writeDoc(path, "first"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), beginMarker+"\nfirst\n"+endMarker) {
		t.Fatalf("new file:\n%s", b)
	}
	// Prose outside the markers survives a rewrite.
	edited := strings.Replace(string(b), "# Benchmarks", "# Benchmarks\n\nhand-written", 1) + "\ntrailer\n"
	if err := os.WriteFile(path, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeDoc(path, "second"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	s := string(b)
	if !strings.Contains(s, "hand-written") || !strings.Contains(s, "trailer") || strings.Contains(s, "first") ||
		!strings.Contains(s, beginMarker+"\nsecond\n"+endMarker) {
		t.Fatalf("rewritten file:\n%s", s)
	}
}

func TestParseProducerPerf(t *testing.T) {
	out := `749326 records sent, 149865.2 records/sec (146.35 MB/sec), 12.3 ms avg latency, 210.0 ms max latency.
1000000 records sent, 151898.7 records/sec (148.34 MB/sec), 95.12 ms avg latency, 310.00 ms max latency, 91 ms 50th, 180 ms 95th, 260 ms 99th, 300 ms 99.9th.
`
	p, err := parseProducerPerf(out)
	if err != nil {
		t.Fatal(err)
	}
	if p.records != 1000000 || p.recordsPerSec != 151898.7 || p.p99 != 260 {
		t.Fatalf("%+v", p)
	}
	if _, err := parseProducerPerf("nothing"); err == nil {
		t.Fatal("no error without a summary")
	}
}
