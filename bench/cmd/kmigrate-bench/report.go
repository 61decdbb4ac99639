package main

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kmigrate/kmigrate/bench/loadgen"
)

// results holds every measurement by suite, side and round.
type results struct {
	by map[string]map[string][]measurement // suite -> side -> per round
}

func newResults() *results { return &results{by: map[string]map[string][]measurement{}} }

func (r *results) add(s suite, sd side, round int, m measurement) {
	if r.by[s.name()] == nil {
		r.by[s.name()] = map[string][]measurement{}
	}
	ms := r.by[s.name()][sd.name]
	for len(ms) <= round {
		ms = append(ms, measurement{})
	}
	ms[round] = m
	r.by[s.name()][sd.name] = ms
}

func (m measurement) brief() string {
	var parts []string
	for _, x := range m.metrics {
		parts = append(parts, fmt.Sprintf("%s=%s", x.name, fmtVal(x.value, x.unit)))
	}
	for _, l := range slices.Sorted(maps.Keys(m.usage.proc)) {
		parts = append(parts, fmt.Sprintf("%s-cpu=%.2fs", l, m.usage.proc[l].Seconds()))
	}
	parts = append(parts, fmt.Sprintf("foreign=%.2f-cores", m.usage.foreign))
	if m.note != "" {
		parts = append(parts, "NOTE: "+m.note)
	}
	return strings.Join(parts, " ")
}

// row is one line of the comparison table.
type row struct {
	suite, metric, unit string
	a, b                float64 // medians over rounds of baseline and candidate
	ratio, delta        float64 // medians over rounds of the paired b/a and b-a
	lo, hi              float64 // range over rounds of the paired b/a (throughput) or b-a (latency)
	hasB                bool
}

// cpuRow is one process's CPU cost on one side of one suite.
type cpuRow struct {
	suite, side, process string
	perGB                float64 // CPU seconds per GB (10^9 value bytes) moved, median over rounds
	cores                float64 // CPU seconds per wall second, median over rounds
	gbPerRun             float64
}

// check is one line of the bar.
type check struct {
	name        string
	bar, goal   string
	measured    string
	pass, great bool
	skipped     bool
}

type report struct {
	cfg                                 *config
	mirror                              *mirrorSuite // set: the mirror comparison's report
	sideA, sideB                        string
	rows                                []row
	cpu                                 []cpuRow
	checks                              []check
	notes                               []string
	kafkaVersion, brokerNote, proxyNote string
	elapsed                             time.Duration
	// foreign and steal are, per measured run, the cores used by other
	// processes on the machine and taken by the hypervisor.
	foreign, steal []float64
	warning        string // set when the machine was too busy to trust the tails
}

func buildReport(e *env, suites []suite, res *results) *report {
	rep := &report{cfg: e.cfg, sideA: "direct", sideB: "proxy", elapsed: time.Since(e.cfg.started)}
	if len(suites) > 0 {
		sd := suites[0].sides(e)
		rep.sideA, rep.sideB = sd[0].name, sd[1].name
	}
	for _, s := range suites {
		if ms, ok := s.(*mirrorSuite); ok {
			rep.mirror = ms
		}
	}
	for _, s := range suites {
		sd := s.sides(e)
		a, b := res.by[s.name()][sd[0].name], res.by[s.name()][sd[1].name]
		if len(a) == 0 {
			continue
		}
		for i, m := range a[0].metrics {
			r := row{suite: s.name(), metric: m.name, unit: m.unit}
			var av, bv, ratios, deltas []float64
			for round := range a {
				av = append(av, a[round].metrics[i].value)
				if round < len(b) && len(b[round].metrics) > i {
					x, y := a[round].metrics[i].value, b[round].metrics[i].value
					bv = append(bv, y)
					deltas = append(deltas, y-x)
					if x != 0 {
						ratios = append(ratios, y/x)
					}
				}
			}
			r.a = loadgen.Median(av)
			if len(bv) > 0 {
				r.hasB = true
				r.b = loadgen.Median(bv)
				r.ratio = loadgen.Median(ratios)
				r.delta = loadgen.Median(deltas)
				spread := deltas
				if m.higher || s.name() == "mirror" {
					spread = ratios
				}
				if len(spread) > 0 {
					r.lo, r.hi = slices.Min(spread), slices.Max(spread)
				}
			}
			rep.rows = append(rep.rows, r)
		}
		for _, x := range []struct {
			name string
			ms   []measurement
		}{{sd[0].name, a}, {sd[1].name, b}} {
			labels := map[string]bool{}
			for _, m := range x.ms {
				for l := range m.usage.proc {
					labels[l] = true
				}
			}
			for _, label := range slices.Sorted(maps.Keys(labels)) {
				var perGB, cores, gb []float64
				for _, m := range x.ms {
					cpu, ok := m.usage.proc[label]
					if !ok {
						continue
					}
					if m.bytes > 0 {
						perGB = append(perGB, cpu.Seconds()/(float64(m.bytes)/1e9))
						gb = append(gb, float64(m.bytes)/1e9)
					}
					if m.usage.wall > 0 {
						cores = append(cores, cpu.Seconds()/m.usage.wall.Seconds())
					}
				}
				if len(cores) > 0 {
					rep.cpu = append(rep.cpu, cpuRow{suite: s.name(), side: x.name, process: label,
						perGB: loadgen.Median(perGB), cores: loadgen.Median(cores), gbPerRun: loadgen.Median(gb)})
				}
			}
			for _, m := range x.ms {
				rep.foreign = append(rep.foreign, m.usage.foreign)
				rep.steal = append(rep.steal, m.usage.steal)
			}
		}
		for round := range max(len(a), len(b)) {
			for _, x := range []struct {
				name string
				ms   []measurement
			}{{sd[0].name, a}, {sd[1].name, b}} {
				if round < len(x.ms) && x.ms[round].note != "" {
					rep.notes = append(rep.notes, fmt.Sprintf("%s round %d %s: %s", s.name(), round+1, x.name, x.ms[round].note))
				}
			}
		}
	}
	rep.checks = rep.bar()
	if rep.mirror != nil {
		rep.checks = rep.mirrorBar()
	}
	if len(rep.foreign) > 0 && loadgen.Median(rep.foreign) > foreignNoteCores && rep.mirror != nil {
		rep.warning = fmt.Sprintf("The machine was busy with other work during this run (median %.2f of %d cores used by other processes). "+
			"Throughput then depends on what else ran during each copy, and lag tails measure scheduling delays as much as the replicators; "+
			"the alternation of the sides spreads the noise over both, but single rounds are not to be trusted (see the per-round range and the notes).",
			loadgen.Median(rep.foreign), runtime.NumCPU())
	} else if len(rep.foreign) > 0 && loadgen.Median(rep.foreign) > foreignNoteCores {
		rep.warning = fmt.Sprintf("The machine was busy with other work during this run (median %.2f of %d cores used by other processes). "+
			"Latency tails (p99, p99.9) then measure scheduling delays more than the proxy: the generator itself was starved "+
			"(see the notes), and p99 verdicts are not reliable; p50 and the throughput ratios are, to a degree, thanks to the alternation.",
			loadgen.Median(rep.foreign), runtime.NumCPU())
	}
	return rep
}

func (rep *report) find(suite, metric string) (row, bool) {
	for _, r := range rep.rows {
		if r.suite == suite && r.metric == metric {
			return r, true
		}
	}
	return row{}, false
}

// bar is the performance bar of the design: throughput through the proxy at
// least 90% of direct (goal 97%), p99 latency added by the proxy at most
// 1 ms (goal 0.5 ms).
func (rep *report) bar() []check {
	var cs []check
	for _, s := range []string{"produce", "consume"} {
		c := check{name: s + " throughput, " + rep.sideB + "/" + rep.sideA + " (records/s)", bar: ">= 90%", goal: ">= 97%"}
		if r, ok := rep.find(s, "records/s"); ok && r.hasB {
			c.measured = fmt.Sprintf("%.1f%%", 100*r.ratio)
			c.pass, c.great = r.ratio >= 0.90, r.ratio >= 0.97
		} else {
			c.skipped = true
		}
		cs = append(cs, c)
	}
	for _, suite := range []string{"latency", "latency-paired"} {
		for _, m := range []string{"produce p99", "end-to-end p99"} {
			c := check{name: m + " added by the " + rep.sideB + " (" + suite + ")", bar: "<= 1 ms", goal: "<= 0.5 ms"}
			if r, ok := rep.find(suite, m); ok && r.hasB {
				c.measured = fmt.Sprintf("%+.2f ms", r.delta)
				c.pass, c.great = r.delta <= 1, r.delta <= 0.5
			} else {
				c.skipped = true
			}
			cs = append(cs, c)
		}
	}
	return cs
}

func (rep *report) pass() bool {
	for _, c := range rep.checks {
		if !c.skipped && !c.pass {
			return false
		}
	}
	return true
}

func (c check) verdict() string {
	switch {
	case c.skipped:
		return "not measured"
	case c.great:
		return "PASS (meets goal)"
	case c.pass:
		return "PASS (bar, not goal)"
	default:
		return "FAIL"
	}
}

func fmtVal(v float64, unit string) string {
	switch unit {
	case "rec/s":
		return fmt.Sprintf("%.0f rec/s", v)
	case "MB/s":
		return fmt.Sprintf("%.1f MB/s", v)
	case "ms":
		return fmt.Sprintf("%.2f ms", v)
	case "s":
		return fmt.Sprintf("%.2f s", v)
	case "cores":
		return fmt.Sprintf("%.2f cores", v)
	}
	return fmt.Sprintf("%.3g %s", v, unit)
}

func fmtDelta(v float64, unit string) string {
	switch unit {
	case "rec/s":
		return fmt.Sprintf("%+.0f rec/s", v)
	case "MB/s":
		return fmt.Sprintf("%+.1f MB/s", v)
	case "ms":
		return fmt.Sprintf("%+.2f ms", v)
	case "s":
		return fmt.Sprintf("%+.2f s", v)
	case "cores":
		return fmt.Sprintf("%+.2f cores", v)
	}
	return fmt.Sprintf("%+.3g %s", v, unit)
}

func (r row) cells() []string {
	c := []string{r.suite, r.metric, fmtVal(r.a, r.unit), "-", "-", "-", "-"}
	if r.hasB && r.suite == "mirror" {
		// Two replicators: the ratio is the comparison, for lag too.
		c[3] = fmtVal(r.b, r.unit)
		c[4] = fmt.Sprintf("%.2f×", r.ratio)
		c[5] = fmtDelta(r.delta, r.unit)
		c[6] = fmt.Sprintf("%.2f× .. %.2f×", r.lo, r.hi)
		return c
	}
	if r.hasB {
		c[3] = fmtVal(r.b, r.unit)
		if r.unit != "ms" { // a ratio of latencies says little; their difference does
			c[4] = fmt.Sprintf("%.1f%%", 100*r.ratio)
		}
		c[5] = fmtDelta(r.delta, r.unit)
		if r.unit == "ms" {
			c[6] = fmt.Sprintf("%+.2f .. %+.2f ms", r.lo, r.hi)
		} else {
			c[6] = fmt.Sprintf("%.0f%% .. %.0f%%", 100*r.lo, 100*r.hi)
		}
	}
	return c
}

func (rep *report) header() []string {
	return []string{"suite", "metric", rep.sideA, rep.sideB, rep.sideB + "/" + rep.sideA, rep.sideB + " - " + rep.sideA, "per-round range"}
}

// text is the human table for the terminal.
func (rep *report) text() string {
	var buf bytes.Buffer
	rounds := rep.cfg.rounds
	if rep.mirror != nil {
		rounds = roundsOf(rep.mirror, &env{cfg: rep.cfg})
	}
	fmt.Fprintf(&buf, "kmigrate bench: %d rounds, alternating %s/%s order, medians (ratio and difference: medians of per-round pairs)\n\n", rounds, rep.sideA, rep.sideB)
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	line := func(cells []string) { fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t") }
	line(rep.header())
	for _, r := range rep.rows {
		line(r.cells())
	}
	tw.Flush()
	if len(rep.cpu) > 0 {
		buf.WriteString("\n")
		tw = tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
		line([]string{"suite", "side", "process", "CPU s per GB", "cores busy", "GB per run"})
		for _, c := range rep.cpu {
			line([]string{c.suite, c.side, c.process, fmt.Sprintf("%.2f", c.perGB), fmt.Sprintf("%.2f", c.cores), fmt.Sprintf("%.3f", c.gbPerRun)})
		}
		tw.Flush()
	}
	buf.WriteString("\n")
	tw = tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	for _, c := range rep.checks {
		fmt.Fprintf(tw, "%s\tbar %s, goal %s\t%s\t%s\n", c.name, c.bar, c.goal, c.measured, c.verdict())
	}
	tw.Flush()
	fmt.Fprintf(&buf, "\n%s\n", rep.loadLine())
	if rep.warning != "" {
		fmt.Fprintf(&buf, "WARNING: %s\n", rep.warning)
	}
	for _, n := range rep.notes {
		fmt.Fprintf(&buf, "note: %s\n", n)
	}
	return strings.TrimRight(buf.String(), "\n")
}

// markdown is the block written into docs/benchmarks.md.
func (rep *report) markdown() string {
	if rep.mirror != nil {
		return rep.mirrorMarkdown()
	}
	var b strings.Builder
	cfg := rep.cfg
	fmt.Fprintf(&b, "### Run of %s\n\n", cfg.started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "- Command: `%s`\n", cfg.cmdline)
	fmt.Fprintf(&b, "- Machine: %d CPUs (`nproc`), %s, %s, Linux %s, %s\n", runtime.NumCPU(), cpuModel(), memTotal(), kernel(), runtime.Version())
	fmt.Fprintf(&b, "- Kafka: %s, %s\n", rep.kafkaVersion, rep.brokerNote)
	if rep.proxyNote != "" {
		fmt.Fprintf(&b, "- Proxy: %s\n", rep.proxyNote)
	}
	fmt.Fprintf(&b, "- Load: franz-go %s, idempotent producer, acks=all, %d B incompressible values, no compression, %d partitions; "+
		"throughput runs %s with linger %s and %d records buffered; consume runs read a %d-record topic for at least %s; "+
		"latency runs %.0f records/s per side for %s with linger %s (latency-paired: both sides at once, interleaved)\n",
		"kgo", cfg.recordSize, cfg.partitions, produceLen(cfg), cfg.linger, cfg.maxBuffered, cfg.consumeRecords, cfg.consumeDuration, cfg.latencyRate, cfg.latencyDuration, cfg.latencyLinger)
	fmt.Fprintf(&b, "- Method: %d rounds, each running every suite on both sides, the side that goes first alternating by round; "+
		"a side's value is the median over rounds; the ratio and difference columns are medians of the per-round pairs, "+
		"and the range column gives the lowest and highest per-round pair (ratio for throughput, difference for latency). Whole run took %s.\n\n",
		cfg.rounds, rep.elapsed.Round(time.Second))

	h := rep.header()
	b.WriteString("| " + strings.Join(h, " | ") + " |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.rows {
		b.WriteString("| " + strings.Join(r.cells(), " | ") + " |\n")
	}
	if len(rep.cpu) > 0 {
		b.WriteString("\nCPU per GB moved (utime+stime from /proc/<pid>/stat around each run; GB = 10^9 record value bytes; medians over rounds):\n\n")
		b.WriteString("| suite | side | process | CPU s per GB | cores busy | GB per run |\n|---|---|---|---:|---:|---:|\n")
		for _, c := range rep.cpu {
			fmt.Fprintf(&b, "| %s | %s | %s | %.2f | %.2f | %.3f |\n", c.suite, c.side, c.process, c.perGB, c.cores, c.gbPerRun)
		}
	}
	b.WriteString("\nAgainst the bar:\n\n| check | bar | goal | measured | verdict |\n|---|---|---|---:|---|\n")
	for _, c := range rep.checks {
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", c.name, c.bar, c.goal, c.measured, c.verdict())
	}
	fmt.Fprintf(&b, "\n%s\n", rep.loadLine())
	if rep.warning != "" {
		fmt.Fprintf(&b, "\n**Warning:** %s\n", rep.warning)
	}
	if len(rep.notes) > 0 {
		b.WriteString("\nNotes:\n\n")
		for _, n := range rep.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

// loadLine says how busy the machine was with other work during the runs.
func (rep *report) loadLine() string {
	if len(rep.foreign) == 0 {
		return ""
	}
	return fmt.Sprintf("Other load on the machine during the measured runs (CPU not used by the benchmark, its broker or its proxy): "+
		"median %.2f cores, worst run %.2f cores; hypervisor steal: median %.2f cores, worst %.2f.",
		loadgen.Median(rep.foreign), slices.Max(rep.foreign), loadgen.Median(rep.steal), slices.Max(rep.steal))
}

func produceLen(cfg *config) string {
	if cfg.produceRecords > 0 {
		return fmt.Sprintf("%d records", cfg.produceRecords)
	}
	return cfg.produceDuration.String()
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "unknown memory"
	}
	var kb int64
	for _, l := range strings.Split(string(b), "\n") {
		if _, err := fmt.Sscanf(l, "MemTotal: %d kB", &kb); err == nil {
			return fmt.Sprintf("%.0f GiB RAM", math.Round(float64(kb)/(1<<20)))
		}
	}
	return "unknown memory"
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

const (
	beginMarker = "<!-- kmigrate-bench:results:begin (generated by bench/cmd/kmigrate-bench; edits inside are overwritten) -->"
	endMarker   = "<!-- kmigrate-bench:results:end -->"
	// A -relay run has its own block: it measures the hop, not the proxy.
	relayBeginMarker = "<!-- kmigrate-bench:relay:begin (generated by bench/cmd/kmigrate-bench -relay; edits inside are overwritten) -->"
	relayEndMarker   = "<!-- kmigrate-bench:relay:end -->"
	// So has a -baseline relay run: it compares the proxy with the hop,
	// not with direct.
	vsRelayBeginMarker = "<!-- kmigrate-bench:vs-relay:begin (generated by bench/cmd/kmigrate-bench -baseline relay; edits inside are overwritten) -->"
	vsRelayEndMarker   = "<!-- kmigrate-bench:vs-relay:end -->"
	// And a run against several brokers (-brokers).
	brokersBeginMarker = "<!-- kmigrate-bench:brokers:begin (generated by bench/cmd/kmigrate-bench -brokers N; edits inside are overwritten) -->"
	brokersEndMarker   = "<!-- kmigrate-bench:brokers:end -->"
)

// writeDoc puts md between the markers of path, creating the file from
// docTemplate when it does not exist. Text outside the markers is kept.
func writeDoc(path, md string) error { return writeDocBlock(path, md, beginMarker, endMarker) }

// writeDocBlock puts md between the markers begin and end of path (appended
// at the end when the file lacks them).
func writeDocBlock(path, md, beginMarker, endMarker string) error {
	old, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		old, err = []byte(docTemplate), nil
	}
	if err != nil {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, beginMarker), strings.Index(s, endMarker)
	if i < 0 || j < i {
		s = strings.TrimRight(s, "\n") + "\n\n" + beginMarker + "\n" + endMarker + "\n"
		i, j = strings.Index(s, beginMarker), strings.Index(s, endMarker)
	}
	s = s[:i+len(beginMarker)] + "\n" + md + "\n" + s[j:]
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

const docTemplate = `# Benchmarks

See the top of this file in the repository for the method; the block
between the markers below is rewritten by every ` + "`make bench`" + `.

` + beginMarker + `
` + endMarker + `
`
