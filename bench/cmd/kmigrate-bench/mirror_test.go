package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

func TestParseLagRates(t *testing.T) {
	rs, err := parseLagRates("0.5x, 10000")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].fraction != 0.5 || rs[1].perSec != 10000 || rs[1].fraction != 0 {
		t.Fatalf("got %+v", rs)
	}
	rs[0].perSec = 60000
	if got := rs[0].label(); got != "0.5x direct" {
		t.Errorf("label %q", got)
	}
	if got := rs[1].label(); got != "10000 rec/s" {
		t.Errorf("label %q", got)
	}
	for _, bad := range []string{"", "x", "-1", "0x", "fast"} {
		if _, err := parseLagRates(bad); err == nil {
			t.Errorf("parseLagRates(%q): no error", bad)
		}
	}
}

func TestRegexpQuote(t *testing.T) {
	for _, topic := range []string{"kmigrate-bench-72590-mirror-kmigrate-r1", "a.b+c", "x|y(z)"} {
		re := regexp.MustCompile("^(?:" + regexpQuote(topic) + ")$")
		if !re.MatchString(topic) {
			t.Errorf("%q does not match itself quoted", topic)
		}
		if re.MatchString(topic + "x") {
			t.Errorf("%q quoted matches more", topic)
		}
	}
	if regexp.MustCompile("^(?:" + regexpQuote("a.b") + ")$").MatchString("axb") {
		t.Error("the dot is not quoted")
	}
}

// TestMM2Config checks the properties that make the comparison like for
// like: identity topic names, a task per partition, the flow enabled one way.
func TestMM2Config(t *testing.T) {
	cfg := &config{partitions: 6, mm2Extra: "target.producer.linger.ms=0, offset.lag.max = 1000"}
	lines := (&mirrorSuite{}).mm2Config("srcr1", "127.0.0.1:1", "127.0.0.1:2", []string{"t1", "t2"}, cfg)
	for _, want := range []string{
		"clusters = srcr1, target",
		"srcr1.bootstrap.servers = 127.0.0.1:1",
		"target.bootstrap.servers = 127.0.0.1:2",
		"srcr1->target.enabled = true",
		"target->srcr1.enabled = false",
		"srcr1->target.topics = t1, t2",
		"replication.policy.class = org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
		"tasks.max = 6",
		"offset.lag.max = 1000",
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("missing %q in\n%s", want, strings.Join(lines, "\n"))
		}
	}
	// Extras come last, so a later key wins in a Java properties file.
	if i, j := slices.Index(lines, "target.producer.linger.ms = 5"), slices.Index(lines, "target.producer.linger.ms = 0"); i < 0 || j < i {
		t.Errorf("-mm2-props does not override: %d, %d", i, j)
	}
	cfg.mm2Tasks = 2
	if lines := (&mirrorSuite{}).mm2Config("a", "s", "t", []string{"x"}, cfg); !slices.Contains(lines, "tasks.max = 2") {
		t.Error("-mm2-tasks ignored")
	}
}

// TestWriteDocBlocks: each kind of suite rewrites only its own block.
func TestWriteDocBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.md")
	doc := "# B\n\n" + beginMarker + "\nold proxy\n" + endMarker + "\n\n## Mirror vs MirrorMaker 2\n\ntext\n\n" + mirrorBeginMarker + "\nold mirror\n" + mirrorEndMarker + "\n\ntail\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeDocBlock(path, "new mirror", mirrorBeginMarker, mirrorEndMarker); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	got := string(b)
	if !strings.Contains(got, "old proxy") || strings.Contains(got, "old mirror") || !strings.Contains(got, "new mirror") || !strings.HasSuffix(got, "tail\n") {
		t.Errorf("after the mirror block:\n%s", got)
	}
	if err := writeDoc(path, "new proxy"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(path)
	got = string(b)
	if strings.Contains(got, "old proxy") || !strings.Contains(got, "new proxy") || !strings.Contains(got, "new mirror") {
		t.Errorf("after the proxy block:\n%s", got)
	}
}

func TestMirrorRowCells(t *testing.T) {
	r := row{suite: "mirror", metric: "lag p99 @ 10000 rec/s", unit: "ms", a: 400, b: 100, ratio: 0.25, delta: -300, lo: 0.2, hi: 0.5, hasB: true}
	c := r.cells()
	if c[4] != "0.25×" || c[6] != "0.20× .. 0.50×" {
		t.Errorf("mirror latency row: %q", c)
	}
	r.suite = "latency"
	if c := r.cells(); c[4] != "-" {
		t.Errorf("proxy latency row shows a ratio: %q", c)
	}
}
