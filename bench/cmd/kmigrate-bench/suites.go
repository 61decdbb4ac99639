package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kmigrate/kmigrate/bench/loadgen"
	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

// A side is one way to reach what is measured: the broker directly, or the
// kmigrate proxy in front of it.
type side struct {
	name      string
	bootstrap []string
}

// metric is one number a run produced.
type metric struct {
	name   string  // e.g. "records/s", "p99 ms"
	unit   string  // shown after the value: "rec/s", "MB/s", "ms", "s/GB"
	value  float64 //
	higher bool    // higher is better (throughput) rather than lower (latency)
}

// measurement is what one run of a suite on one side yields.
type measurement struct {
	metrics []metric
	bytes   int64         // value bytes moved, for CPU per GB
	elapsed time.Duration // the measured window
	usage   usage         // CPU of the tracked processes and the machine
	note    string        // anything that makes this run suspect
	// loadNoted: note already says how busy the machine was (per
	// window), so flagForeign adds nothing.
	loadNoted bool
}

// A suite is one comparison measured side by side: runRound calls run once
// per side per round, alternating which side goes first, and the report
// takes medians over rounds.
//
// Extension point (issue 3, mirror comparison against MirrorMaker 2): a
// mirror suite compares two *replicators* rather than direct vs proxy. It
// returns its own sides from sides() (e.g. "mirrormaker2" and
// "kmigrate-mirror"), starts the target cluster and the replicators in setup
// and adds their processes to env.tracked (for CPU per GB), and reports
// replication throughput and source-to-target lag percentiles from run.
// Nothing else in this program needs to change: add it to allSuites.
type suite interface {
	name() string
	// sides returns the baseline and the candidate, in that order.
	sides(e *env) [2]side
	// setup runs once before any measurement (e.g. fills a topic).
	setup(ctx context.Context, e *env) error
	// run measures once. round < 0 is a warm-up whose result is dropped;
	// a suite may make it shorter.
	run(ctx context.Context, e *env, s side, round int) (measurement, error)
}

// A pairedSuite measures both sides in one run, interleaved, instead of one
// run per side; the main loop prefers runPair when a suite has it.
type pairedSuite interface {
	suite
	runPair(ctx context.Context, e *env, a, b side, round int) (ma, mb measurement, err error)
}

// A limitedSuite runs fewer (or more) rounds than -rounds.
type limitedSuite interface {
	suite
	maxRounds(e *env) int
}

func roundsOf(s suite, e *env) int {
	if ls, ok := s.(limitedSuite); ok {
		return ls.maxRounds(e)
	}
	return e.cfg.rounds
}

func allSuites() []suite {
	return []suite{&produceSuite{}, &consumeSuite{}, &latencySuite{}, &pairedLatencySuite{}, &javaProduceSuite{}, &mirrorSuite{}}
}

// defaultSuites is what `make bench` runs.
const defaultSuites = "produce,consume,latency,latency-paired,mirror"

func baseVsProxy(e *env) [2]side { return [2]side{e.base, e.proxy} }

// produceSuite: acks=all throughput, as fast as the path allows.
type produceSuite struct{}

func (*produceSuite) name() string                      { return "produce" }
func (*produceSuite) sides(e *env) [2]side              { return baseVsProxy(e) }
func (*produceSuite) setup(context.Context, *env) error { return nil }
func (*produceSuite) run(ctx context.Context, e *env, s side, round int) (measurement, error) {
	topic, err := e.freshTopic(ctx, "produce", s.name, round)
	if err != nil {
		return measurement{}, err
	}
	cfg := loadgen.ProduceConfig{
		Bootstrap:          s.bootstrap,
		Topic:              topic,
		RecordSize:         e.cfg.recordSize,
		Records:            e.cfg.produceRecords,
		Duration:           e.cfg.produceDuration,
		Linger:             e.cfg.linger,
		MaxBufferedRecords: e.cfg.maxBuffered,
		ClientID:           "kmigrate-bench",
	}
	if round < 0 {
		cfg.Records, cfg.Duration = 0, min(e.cfg.produceDuration, 2*time.Second)
	}
	var res loadgen.ProduceResult
	use, err := e.measure(s, func() error {
		var err error
		res, err = loadgen.Produce(ctx, cfg)
		return err
	})
	if err != nil {
		return measurement{}, err
	}
	e.settleWrites()
	return measurement{
		metrics: []metric{
			{name: "records/s", unit: "rec/s", value: res.RecordsPerSec(), higher: true},
			{name: "MB/s", unit: "MB/s", value: res.MBPerSec(), higher: true},
		},
		bytes: res.Bytes, elapsed: res.Elapsed, usage: use,
	}, nil
}

// settleWrites writes the page cache out (sync(2)) after a run that wrote
// to the broker's log. A produce run leaves 1.5 GB or more of dirty pages;
// left to the kernel's writeback, they were written during the next run,
// which ran slower for it whichever side it measured: the first produce run
// of a round beat the second by 10 - 40 % in both orders.
func (e *env) settleWrites() {
	start := time.Now()
	syscall.Sync()
	if d := time.Since(start); d > time.Second {
		e.logf("sync after the run took %s", d.Round(time.Millisecond))
	}
}

// consumeSuite: read a pre-filled topic from the start, without a group.
type consumeSuite struct {
	topic   string
	records int64
}

func (*consumeSuite) name() string         { return "consume" }
func (*consumeSuite) sides(e *env) [2]side { return baseVsProxy(e) }
func (c *consumeSuite) setup(ctx context.Context, e *env) error {
	topic, err := e.freshTopic(ctx, "consume", "fill", 0)
	if err != nil {
		return err
	}
	began := time.Now()
	res, err := loadgen.Produce(ctx, loadgen.ProduceConfig{
		Bootstrap:          e.direct.bootstrap,
		Topic:              topic,
		RecordSize:         e.cfg.recordSize,
		Records:            e.cfg.consumeRecords,
		Linger:             e.cfg.linger,
		MaxBufferedRecords: e.cfg.maxBuffered,
		ClientID:           "kmigrate-bench-fill",
	})
	if err != nil {
		return fmt.Errorf("fill %s: %w", topic, err)
	}
	c.topic = topic
	// The producer's warm-up record is in the topic too: count what the
	// broker holds, not what we sent.
	if c.records, err = e.topicRecords(ctx, topic); err != nil {
		return err
	}
	e.logf("filled %s with %d records (%.0f MB) in %s", topic, c.records, float64(res.Bytes)/1e6, time.Since(began).Round(time.Millisecond))
	return nil
}

func (c *consumeSuite) run(ctx context.Context, e *env, s side, round int) (measurement, error) {
	cfg := loadgen.ConsumeConfig{
		Bootstrap: s.bootstrap,
		Topic:     c.topic,
		Records:   c.records,
		ClientID:  "kmigrate-bench",
	}
	minDur := e.cfg.consumeDuration
	if round < 0 {
		minDur = 0 // one pass
	}
	// One pass over the topic can take well under a second; read it again
	// (a new client each time, from the start) until the measured time
	// reaches -consume-duration, and add the passes up.
	var total loadgen.ConsumeResult
	use, err := e.measure(s, func() error {
		for total.Elapsed == 0 || total.Elapsed < minDur {
			res, err := loadgen.Consume(ctx, cfg)
			if err != nil {
				return err
			}
			total.Records += res.Records
			total.Bytes += res.Bytes
			total.Elapsed += res.Elapsed
			total.Total += res.Total
		}
		return nil
	})
	if err != nil {
		return measurement{}, err
	}
	return measurement{
		metrics: []metric{
			{name: "records/s", unit: "rec/s", value: total.RecordsPerSec(), higher: true},
			{name: "MB/s", unit: "MB/s", value: total.MBPerSec(), higher: true},
		},
		bytes: total.Total * int64(e.cfg.recordSize), elapsed: total.Elapsed, usage: use,
	}, nil
}

// latencySuite: per-record ack latency at a fixed moderate rate, and the
// end-to-end (produce call to consumer poll) latency of the same records,
// which covers the fetch path.
type latencySuite struct{}

func (*latencySuite) name() string                      { return "latency" }
func (*latencySuite) sides(e *env) [2]side              { return baseVsProxy(e) }
func (*latencySuite) setup(context.Context, *env) error { return nil }
func (*latencySuite) run(ctx context.Context, e *env, s side, round int) (measurement, error) {
	topic, err := e.freshTopic(ctx, "latency", s.name, round)
	if err != nil {
		return measurement{}, err
	}
	cfg := e.latencyConfig(s, topic, round)
	var res loadgen.ProduceResult
	use, err := e.measure(s, func() error {
		var err error
		res, err = loadgen.Produce(ctx, cfg)
		return err
	})
	if err != nil {
		return measurement{}, err
	}
	m := latencyMeasurement(res)
	m.usage = use
	return m, nil
}

func (e *env) latencyConfig(s side, topic string, round int) loadgen.ProduceConfig {
	cfg := loadgen.ProduceConfig{
		Bootstrap:  s.bootstrap,
		Topic:      topic,
		RecordSize: e.cfg.recordSize,
		Duration:   e.cfg.latencyDuration,
		Rate:       e.cfg.latencyRate,
		Linger:     e.cfg.latencyLinger,
		EndToEnd:   true,
		ClientID:   "kmigrate-bench-latency",
	}
	if round < 0 {
		cfg.Duration = min(cfg.Duration, 3*time.Second)
	}
	return cfg
}

func latencyMeasurement(res loadgen.ProduceResult) measurement {
	ack := loadgen.Summarize(res.Latencies)
	e2e := loadgen.Summarize(res.EndToEnd)
	m := measurement{
		metrics: []metric{
			{name: "produce p50", unit: "ms", value: ms(ack.P50)},
			{name: "produce p99", unit: "ms", value: ms(ack.P99)},
			{name: "produce p999", unit: "ms", value: ms(ack.P999)},
			{name: "end-to-end p50", unit: "ms", value: ms(e2e.P50)},
			{name: "end-to-end p99", unit: "ms", value: ms(e2e.P99)},
			{name: "end-to-end p999", unit: "ms", value: ms(e2e.P999)},
		},
		bytes: res.Bytes, elapsed: res.Elapsed,
	}
	if res.Behind > 10*time.Millisecond {
		m.note = fmt.Sprintf("generator up to %s late", res.Behind.Round(time.Millisecond))
	}
	return m
}

// pairedLatencySuite is latencySuite with both sides in one run: one
// schedule alternates a direct record and a proxy record (each side at
// -latency-rate), so both meet the same moments of noise.
type pairedLatencySuite struct{ latencySuite }

func (*pairedLatencySuite) name() string { return "latency-paired" }
func (*pairedLatencySuite) runPair(ctx context.Context, e *env, a, b side, round int) (measurement, measurement, error) {
	ta, err := e.freshTopic(ctx, "latpair", a.name, round)
	if err != nil {
		return measurement{}, measurement{}, err
	}
	tb, err := e.freshTopic(ctx, "latpair", b.name, round)
	if err != nil {
		return measurement{}, measurement{}, err
	}
	var ra, rb loadgen.ProduceResult
	use, err := e.measure(b, func() error {
		var err error
		ra, rb, err = loadgen.ProducePaired(ctx, e.latencyConfig(a, ta, round), e.latencyConfig(b, tb, round))
		return err
	})
	if err != nil {
		return measurement{}, measurement{}, err
	}
	ma, mb := latencyMeasurement(ra), latencyMeasurement(rb)
	// The candidate's own processes (the proxy) carry only its traffic;
	// shared ones (the broker) carry both sides', so they are left out.
	ma.usage = usage{wall: use.wall, foreign: use.foreign, steal: use.steal}
	mb.usage = usage{wall: use.wall, foreign: use.foreign, steal: use.steal, proc: map[string]time.Duration{}}
	for _, p := range e.tracked {
		if p.onlySide == b.name {
			mb.usage.proc[p.label] = use.proc[p.label]
		}
	}
	return ma, mb, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// measure runs f and returns what the CPUs did meanwhile.
func (e *env) measure(s side, f func() error) (usage, error) {
	var procs []tracked
	for _, p := range e.tracked {
		if p.onlySide == "" || p.onlySide == s.name {
			procs = append(procs, p)
		}
	}
	before, err := takeSnapshot(procs)
	if err != nil {
		return usage{}, err
	}
	if err := f(); err != nil {
		return usage{}, err
	}
	after, err := takeSnapshot(procs)
	if err != nil {
		return usage{}, err
	}
	return between(before, after, procs), nil
}

// javaProduceSuite is a second opinion on produce throughput: Kafka's own
// ProducerPerformance tool (from the harness's jars) with the same settings
// (acks=all, idempotent, linger, no compression), its output parsed. Not in
// the default set: a JVM per run costs time.
type javaProduceSuite struct{}

func (*javaProduceSuite) name() string                      { return "java-produce" }
func (*javaProduceSuite) sides(e *env) [2]side              { return baseVsProxy(e) }
func (*javaProduceSuite) setup(context.Context, *env) error { return nil }
func (*javaProduceSuite) run(ctx context.Context, e *env, s side, round int) (measurement, error) {
	topic, err := e.freshTopic(ctx, "javaproduce", s.name, round)
	if err != nil {
		return measurement{}, err
	}
	records := e.cfg.javaRecords
	if round < 0 {
		records = min(records, 50000)
	}
	args := []string{
		"--topic", topic,
		"--num-records", strconv.FormatInt(records, 10),
		"--record-size", strconv.Itoa(e.cfg.recordSize),
		"--throughput", "-1",
		"--producer-props",
		"bootstrap.servers=" + strings.Join(s.bootstrap, ","),
		"acks=all",
		"enable.idempotence=true",
		"compression.type=none",
		"linger.ms=" + strconv.FormatInt(e.cfg.linger.Milliseconds(), 10),
	}
	var out string
	use, err := e.measure(s, func() error {
		var err error
		out, _, err = kafkatest.Tool(ctx, kafkatest.MainProducerPerf, args...)
		return err
	})
	if err != nil {
		return measurement{}, err
	}
	e.settleWrites()
	sum, err := parseProducerPerf(out)
	if err != nil {
		return measurement{}, err
	}
	return measurement{
		metrics: []metric{
			{name: "records/s", unit: "rec/s", value: sum.recordsPerSec, higher: true},
			{name: "MB/s", unit: "MB/s", value: sum.recordsPerSec * float64(e.cfg.recordSize) / 1e6, higher: true},
			{name: "p99 at saturation", unit: "ms", value: sum.p99},
		},
		bytes:   sum.records * int64(e.cfg.recordSize),
		elapsed: time.Duration(float64(sum.records) / sum.recordsPerSec * float64(time.Second)),
		usage:   use,
	}, nil
}

type producerPerf struct {
	records       int64
	recordsPerSec float64
	p99           float64 // ms
}

// producerPerfRE matches ProducerPerformance's summary line, e.g.
// "300000 records sent, 151898.7 records/sec (148.34 MB/sec), 95.12 ms avg
// latency, 310.00 ms max latency, 91 ms 50th, 180 ms 95th, 260 ms 99th,
// 300 ms 99.9th."
var producerPerfRE = regexp.MustCompile(`(\d+) records sent, ([\d.]+) records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg latency, [\d.]+ ms max latency, \d+ ms 50th, \d+ ms 95th, (\d+) ms 99th`)

func parseProducerPerf(out string) (producerPerf, error) {
	all := producerPerfRE.FindAllStringSubmatch(out, -1)
	if len(all) == 0 {
		return producerPerf{}, fmt.Errorf("no summary line in ProducerPerformance output:\n%s", out)
	}
	m := all[len(all)-1] // the last line is the summary; earlier ones are 5 s windows
	var p producerPerf
	p.records, _ = strconv.ParseInt(m[1], 10, 64)
	p.recordsPerSec, _ = strconv.ParseFloat(m[2], 64)
	p.p99, _ = strconv.ParseFloat(m[3], 64)
	if p.records == 0 || p.recordsPerSec == 0 {
		return p, fmt.Errorf("empty ProducerPerformance summary %q", m[0])
	}
	return p, nil
}
