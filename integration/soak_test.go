//go:build soak

package integration

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/faultrow"
	"github.com/kmigrate/kmigrate/internal/proxytest"
)

// TestSoak (`make soak`, build tag soak; not in CI) runs a producer and a
// consumer group through a 2-node proxy fleet for KMIGRATE_SOAK (default
// 30m), flipping the topic and the group every minute (cutover, then
// rollback, alternately), and samples each node's RSS (VmRSS) and
// goroutines (go_goroutines from /metrics) every 10 s. At the end: 0 lost,
// 0 duplicated, 0 reordered at the consumer and in the target log, no flip
// left half-done, and flat memory and goroutines: the median of the last
// quarter of the samples within +20 % of the second quarter's, for the
// anonymous part of RSS (RssAnon) and goroutines; VmRSS is reported.
func TestSoak(t *testing.T) {
	d := 30 * time.Minute
	if s := os.Getenv("KMIGRATE_SOAK"); s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d < 4*time.Minute {
			t.Fatalf("KMIGRATE_SOAK=%q: want a duration of at least 4m (%v)", s, err)
		}
	}
	row := faultrow.New(t, fmt.Sprintf("soak: %s of load through 2 nodes, a topic and a group flip or rollback every minute", d))
	src, dst := cluster(t), target.Get(t)
	topic, group := uniqueName(t, "topic"), uniqueName(t, "group")
	createTopicOn(t, src.Bootstrap(), topic, 3)
	common := []string{"--log-level", "warn", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(), "--topics", topic}
	v1 := proxytest.Start(t, append(common, "--data-dir", t.TempDir(), "--raft-node-id", "v1")...)
	s1 := proxytest.Start(t, append(common, "--data-dir", t.TempDir(), "--raft-node-id", "s1", "--join", v1.Admin)...)
	nodes := []*proxytest.Process{v1, s1}
	ctx, cancel := context.WithTimeout(context.Background(), d+10*time.Minute)
	defer cancel()
	waitFor(t, ctx, "both nodes in the control plane", func() bool {
		out, err := v1.CLI(t, "status", "--json")
		return err == nil && strings.Count(out, `"raft_addr"`) >= 2
	})
	prod := newSeqProducer(t, ctx, s1.Addr, topic, 0) // the producer on the sidecar
	defer prod.stop()
	cons := newSeqConsumer(t, ctx, v1.Addr, topic, group) // the group on the voter
	defer cons.stop()
	waitFor(t, ctx, "the mirror to map the topic (kmigrate verify passes)", func() bool {
		_, err := v1.CLI(t, "verify", "--topic", topic, "--records", "0")
		return err == nil && cons.count() > 1000
	})

	type sample struct {
		at         time.Duration
		rss, anon  [2]int64 // KiB: VmRSS, and its anonymous part RssAnon
		goroutines [2]float64
		acked, got int
	}
	var samples []sample
	start := time.Now()
	take := func() {
		s := sample{at: time.Since(start), acked: prod.acked(), got: cons.count()}
		for i, n := range nodes {
			s.rss[i] = procStatusKB(t, n.Pid(), "VmRSS")
			s.anon[i] = procStatusKB(t, n.Pid(), "RssAnon")
			s.goroutines[i] = scrapeGauge(t, n.Admin, "go_goroutines")
		}
		samples = append(samples, s)
	}
	var flips, refused int
	var longestPause time.Duration
	flip := func(minute int) {
		// Even minutes move to the target, odd ones back; the topic first
		// when moving there, the group first when moving back.
		verb := "cutover"
		steps := [][]string{{verb, "topic", topic}, {verb, "group", group}}
		if minute%2 == 1 {
			verb = "rollback"
			steps = [][]string{{verb, "group", group}, {verb, "topic", topic}}
		}
		for _, step := range steps {
			admin := nodes[minute%2] // alternate the node asked
			began := time.Now()
			out, err := admin.CLI(t, step...)
			took := time.Since(began)
			phase := settledPhase(func() string {
				if step[1] == "group" {
					return groupPhase(admin.Admin, group)
				}
				return topicPrimary(admin.Admin, topic)
			})
			want := map[string]string{"cutover": "target", "rollback": "source"}[verb]
			switch {
			case err == nil && phase == want:
				flips++
			case err != nil && !intermediate(phase):
				refused++
				t.Logf("minute %d: %v refused, %s stays %s: %s", minute, step, step[1], phase, firstLine(strings.TrimSpace(out)))
			default:
				t.Fatalf("minute %d: %v: error %v, phase %q 10 s afterwards: a flip must end completed or reverted\n%s", minute, step, err, phase, out)
			}
			if p, _ := prod.pauseAround(began, took); step[1] == "topic" && p > longestPause {
				longestPause = p
			}
		}
	}
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	take()
	for minute := 0; time.Since(start) < d; {
		<-tick.C
		take()
		if len(samples)%6 == 0 {
			flip(minute)
			minute++
		}
	}
	// End on the target, as a migration does.
	for _, step := range [][]string{{"cutover", "topic", topic}, {"cutover", "group", group}} {
		if out, err := v1.CLI(t, step...); err != nil {
			t.Fatalf("final %v: %v\n%s", step, err, out)
		}
	}
	counts := finishAndCount(t, ctx, prod, cons, dst.Bootstrap(), topic)

	var b strings.Builder
	fmt.Fprintf(&b, "| t | v1 RSS (anon) MiB | s1 RSS (anon) MiB | v1 goroutines | s1 goroutines | acked | consumed |\n| --- | --- | --- | --- | --- | --- | --- |\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "| %s | %d (%d) | %d (%d) | %.0f | %.0f | %d | %d |\n", s.at.Round(time.Second), s.rss[0]>>10, s.anon[0]>>10, s.rss[1]>>10, s.anon[1]>>10,
			s.goroutines[0], s.goroutines[1], s.acked, s.got)
	}
	t.Logf("samples:\n%s", b.String())
	median := func(from, to int, v func(sample) float64) float64 {
		var xs []float64
		for _, s := range samples[from:to] {
			xs = append(xs, v(s))
		}
		sort.Float64s(xs)
		return xs[len(xs)/2]
	}
	q := len(samples) / 4
	var flat []string
	for i, name := range []string{"v1", "s1"} {
		for _, m := range []struct {
			what   string
			v      func(sample) float64
			slack  float64
			assert bool
		}{
			// VmRSS includes the pages of the raft log's bolt file that
			// the process touched (file-backed, reclaimable, and growing
			// with the log until a snapshot compacts it): it is reported;
			// the anonymous part (heap, stacks) is what must stay flat.
			{"RSS", func(s sample) float64 { return float64(s.rss[i]) }, 0, false},
			{"RssAnon", func(s sample) float64 { return float64(s.anon[i]) }, 0, true},
			{"goroutines", func(s sample) float64 { return s.goroutines[i] }, 5, true}, // a few connections come and go
		} {
			second, last := median(q, 2*q, m.v), median(3*q, len(samples), m.v)
			flat = append(flat, fmt.Sprintf("%s %s %.0f → %.0f", name, m.what, second, last))
			if m.assert && last > second*1.2+m.slack {
				t.Errorf("%s %s grew: median %.0f in the second quarter, %.0f in the last (bound +20 %%)", name, m.what, second, last)
			}
		}
	}
	t.Logf("second-quarter → last-quarter medians (RSS, RssAnon in KiB): %s", strings.Join(flat, "; "))
	row.Recovered(longestPause, "longest producer pause at a topic flip")
	row.Outcome("%d flips completed, %d refused and left where they were, none half; medians (2nd → last quarter): %s; %s",
		flips, refused, strings.Join(flat, ", "), counts)
}
