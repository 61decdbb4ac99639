package main

import (
	"context"
	"fmt"
	"time"

	"github.com/kmigrate/kmigrate/bench/loadgen"
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

func allSuites() []suite {
	return []suite{&produceSuite{}, &consumeSuite{}, &latencySuite{}}
}

func directVsProxy(e *env) [2]side { return [2]side{e.direct, e.proxy} }

// produceSuite: acks=all throughput, as fast as the path allows.
type produceSuite struct{}

func (*produceSuite) name() string                      { return "produce" }
func (*produceSuite) sides(e *env) [2]side              { return directVsProxy(e) }
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
		MaxBufferedRecords: 10000,
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
	return measurement{
		metrics: []metric{
			{name: "records/s", unit: "rec/s", value: res.RecordsPerSec(), higher: true},
			{name: "MB/s", unit: "MB/s", value: res.MBPerSec(), higher: true},
		},
		bytes: res.Bytes, elapsed: res.Elapsed, usage: use,
	}, nil
}

// consumeSuite: read a pre-filled topic from the start, without a group.
type consumeSuite struct {
	topic   string
	records int64
}

func (*consumeSuite) name() string         { return "consume" }
func (*consumeSuite) sides(e *env) [2]side { return directVsProxy(e) }
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
		MaxBufferedRecords: 10000,
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
	if round < 0 {
		cfg.Records = max(1, c.records/5)
	}
	var res loadgen.ConsumeResult
	use, err := e.measure(s, func() error {
		var err error
		res, err = loadgen.Consume(ctx, cfg)
		return err
	})
	if err != nil {
		return measurement{}, err
	}
	return measurement{
		metrics: []metric{
			{name: "records/s", unit: "rec/s", value: res.RecordsPerSec(), higher: true},
			{name: "MB/s", unit: "MB/s", value: res.MBPerSec(), higher: true},
		},
		bytes: res.Bytes, elapsed: res.Elapsed, usage: use,
	}, nil
}

// latencySuite: per-record ack latency at a fixed moderate rate, and the
// end-to-end (produce call to consumer poll) latency of the same records,
// which covers the fetch path.
type latencySuite struct{}

func (*latencySuite) name() string                      { return "latency" }
func (*latencySuite) sides(e *env) [2]side              { return directVsProxy(e) }
func (*latencySuite) setup(context.Context, *env) error { return nil }
func (*latencySuite) run(ctx context.Context, e *env, s side, round int) (measurement, error) {
	topic, err := e.freshTopic(ctx, "latency", s.name, round)
	if err != nil {
		return measurement{}, err
	}
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
	var res loadgen.ProduceResult
	use, err := e.measure(s, func() error {
		var err error
		res, err = loadgen.Produce(ctx, cfg)
		return err
	})
	if err != nil {
		return measurement{}, err
	}
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
		bytes: res.Bytes, elapsed: res.Elapsed, usage: use,
	}
	if res.Behind > 5*time.Millisecond {
		m.note = fmt.Sprintf("generator fell %s behind schedule", res.Behind.Round(time.Millisecond))
	}
	return m, nil
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
