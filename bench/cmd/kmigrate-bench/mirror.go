package main

// The mirror comparison (issue 3, item 9): kmigrate's mirror against
// MirrorMaker 2 in dedicated mode, from the benchmark's broker (the source)
// to a second single-node broker (the target) on the same machine.
//
// One run of one side:
//
//  1. two fresh source topics named after the side and the round: one is
//     filled with -mirror-records records before the replicator starts, the
//     other stays empty for the lag run;
//  2. the replicator starts (a `kmigrate proxy --target-bootstrap ...`
//     subprocess, or a MirrorMaker 2 JVM) with only those two topics in
//     scope; the target's end offsets are polled until the target holds
//     every record of the filled topic: throughput is the records copied
//     between the first poll that saw any and the poll that saw them all,
//     over that time (start-up is reported on its own rows);
//  3. with the same replicator still running, records are produced to the
//     empty topic at a fixed rate while a franz-go consumer reads the target
//     topic: each record's lag is its produce call to the poll that
//     returned it from the target;
//  4. the replicator stops and the run's topics are deleted on both
//     clusters.
//
// The sides never share data: every run has its own topics (names carry the
// side and the round), and MirrorMaker 2's source alias carries them too, so
// each of its runs starts with fresh internal topics and a fresh Connect
// group, as a new deployment would.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/bench/loadgen"
	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

const (
	sideMM2      = "mirrormaker2"
	sideKmigrate = "kmigrate"
)

type mirrorSuite struct {
	target    *kafkatest.Cluster
	targetPID int
	tcl       *kgo.Client
	tadm      *kadm.Client
	bin       string // kmigrate binary
	work      string // replicators' files
	// rates are the lag runs' records/s, the same for every run;
	// directRate is the direct produce throughput the relative ones were
	// derived from (0 when all are absolute).
	rates      []lagRate
	directRate float64
	mm2Props   []string // rendered once, for the report
	// setupTime and runTime are what the suite cost, for the report.
	setupTime, runTime time.Duration
	keepWork           bool // -keep-topics: leave the logs and configs for a look
}

func (*mirrorSuite) name() string { return "mirror" }
func (*mirrorSuite) sides(*env) [2]side {
	return [2]side{{name: sideMM2}, {name: sideKmigrate}}
}

func (ms *mirrorSuite) maxRounds(e *env) int {
	if e.cfg.mirrorRounds > 0 {
		return e.cfg.mirrorRounds
	}
	return e.cfg.rounds
}

func (ms *mirrorSuite) setup(ctx context.Context, e *env) error {
	defer func(t time.Time) { ms.setupTime = time.Since(t) }(time.Now())
	cfg := e.cfg
	var err error
	if ms.work, err = os.MkdirTemp("", "kmigrate-bench-mirror-"); err != nil {
		return err
	}
	if ms.keepWork = cfg.keep; ms.keepWork {
		e.logf("replicator logs and configs in %s (kept: -keep-topics)", ms.work)
	}
	ms.bin = e.bin
	if ms.bin == "" {
		e.logf("building ./cmd/kmigrate for the mirror ...")
		if ms.bin, err = buildProxy(ctx, cfg.repoRoot, ms.work); err != nil {
			return err
		}
	}
	// The target is polled every mirrorPollEvery while the replicator
	// creates its topics: kgo caches the metadata behind ListOffsets for
	// MetadataMinAge (5s by default), which would hide a new topic's
	// first records for that long.
	pollOpts := []kgo.Opt{kgo.MetadataMinAge(mirrorPollEvery)}
	if cfg.mirrorTarget != "" {
		ms.tcl, err = kgo.NewClient(append(pollOpts, kgo.SeedBrokers(cfg.mirrorTarget))...)
		if err != nil {
			return err
		}
	} else {
		e.logf("starting the mirror's target Kafka ...")
		for attempt := 1; ; attempt++ {
			ms.target, err = kafkatest.Start(ctx, kafkatest.Options{Name: "bench-target", HeapMB: cfg.brokerHeapMB, ShippedJVM: cfg.shippedJVM()})
			if err == nil {
				break
			}
			if attempt == 2 || ctx.Err() != nil {
				return fmt.Errorf("start the target Kafka: %w", err)
			}
			e.logf("target Kafka did not start, trying once more: %v", firstLine(err.Error()))
		}
		if ms.targetPID = findBrokerIn(ms.target.Dir()); ms.targetPID == 0 {
			e.logf("target broker JVM not found: no target broker CPU figures")
		}
		// Not target.Client(): that one may create topics, and the
		// polls of the target would then create the run's topics with
		// the broker's default partition count before the replicator.
		if ms.tcl, err = kgo.NewClient(append(pollOpts, kgo.SeedBrokers(ms.target.Bootstrap()))...); err != nil {
			return err
		}
		e.logf("target Kafka up at %s", ms.target.Bootstrap())
	}
	ms.tadm = kadm.NewClient(ms.tcl)
	ms.mm2Props = ms.mm2Config("<alias>", "<source>", "<target>", []string{"<topics>"}, cfg)

	if ms.rates, err = parseLagRates(cfg.mirrorLagRates); err != nil {
		return err
	}
	relative := slices.ContainsFunc(ms.rates, func(r lagRate) bool { return r.fraction > 0 })
	// Warm both brokers' produce paths (the target's is cold) and, for the
	// lag rates relative to the direct path, measure that path once, so
	// every run of both sides is paced alike.
	for _, c := range []struct {
		name      string
		bootstrap []string
		admin     *kadm.Client
		measure   bool
	}{{"source", e.direct.bootstrap, e.admin, relative}, {"target", []string{ms.targetBootstrap(e)}, ms.tadm, false}} {
		topic := fmt.Sprintf("kmigrate-bench-%s-mirrorwarm-%s", e.runID, c.name)
		if err := createTopicOn(ctx, c.admin, topic, cfg.partitions); err != nil {
			return err
		}
		pc := loadgen.ProduceConfig{
			Bootstrap:          c.bootstrap,
			Topic:              topic,
			RecordSize:         cfg.recordSize,
			Records:            50000,
			Linger:             cfg.linger,
			MaxBufferedRecords: 10000,
			ClientID:           "kmigrate-bench-warm",
		}
		if c.measure {
			pc.Records, pc.Duration = 0, cfg.produceDuration
		}
		res, err := loadgen.Produce(ctx, pc)
		if err != nil {
			return fmt.Errorf("warm up the %s broker: %w", c.name, err)
		}
		if c.measure {
			ms.directRate = res.RecordsPerSec()
		}
		if _, err := c.admin.DeleteTopics(ctx, topic); err != nil {
			e.logf("delete %s: %v", topic, err)
		}
	}
	for i := range ms.rates {
		if ms.rates[i].fraction > 0 {
			ms.rates[i].perSec = ms.rates[i].fraction * ms.directRate
		}
	}
	if relative {
		e.logf("direct produce throughput %.0f rec/s", ms.directRate)
	}
	var rs []string
	for _, r := range ms.rates {
		rs = append(rs, r.String())
	}
	e.logf("mirror lag runs at %s", strings.Join(rs, ", "))
	return nil
}

// lagRate is one rate of the lag runs: relative to the direct produce
// throughput ("0.5x") or absolute ("10000").
type lagRate struct {
	spec     string
	fraction float64 // > 0: share of the direct produce throughput
	perSec   float64 // resolved records/s
}

func (r lagRate) String() string {
	if r.fraction > 0 {
		return fmt.Sprintf("%.0f rec/s (%s direct)", r.perSec, r.spec)
	}
	return fmt.Sprintf("%.0f rec/s", r.perSec)
}

// label names the rate in metric names; the same for both sides.
func (r lagRate) label() string {
	if r.fraction > 0 {
		return fmt.Sprintf("%s direct", r.spec)
	}
	return fmt.Sprintf("%.0f rec/s", r.perSec)
}

func parseLagRates(list string) ([]lagRate, error) {
	var out []lagRate
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		r := lagRate{spec: f}
		var err error
		if num, ok := strings.CutSuffix(f, "x"); ok {
			r.fraction, err = strconv.ParseFloat(num, 64)
			if err == nil && r.fraction <= 0 {
				err = fmt.Errorf("not positive")
			}
		} else {
			r.perSec, err = strconv.ParseFloat(f, 64)
			if err == nil && r.perSec <= 0 {
				err = fmt.Errorf("not positive")
			}
		}
		if err != nil {
			return nil, fmt.Errorf("-mirror-lag-rates: %q: want records/s (10000) or a share of the direct produce throughput (0.5x): %v", f, err)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-mirror-lag-rates: no rate")
	}
	return out, nil
}

// createTopicOn creates a topic with replication factor 1.
func createTopicOn(ctx context.Context, adm *kadm.Client, topic string, partitions int) error {
	resp, err := adm.CreateTopic(ctx, int32(partitions), 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

func (ms *mirrorSuite) close() {
	if ms.tcl != nil {
		ms.tcl.Close()
	}
	if ms.target != nil {
		ms.target.Close()
	}
	if ms.work != "" && !ms.keepWork {
		os.RemoveAll(ms.work)
	}
}

func (ms *mirrorSuite) targetBootstrap(e *env) string {
	if ms.target != nil {
		return ms.target.Bootstrap()
	}
	return e.cfg.mirrorTarget
}

// replicator is one running kmigrate mirror or MirrorMaker 2.
type replicator interface {
	pid() int
	stop()
	exited() bool
	logTail() string
}

func (ms *mirrorSuite) run(ctx context.Context, e *env, s side, round int) (measurement, error) {
	if round < 0 {
		// Not called by the main loop: every run starts its own
		// replicator, so there is nothing to warm but the brokers,
		// which setup did.
		return measurement{}, nil
	}
	defer func(t time.Time) { ms.runTime += time.Since(t) }(time.Now())
	cfg := e.cfg
	bulk, err := e.freshTopic(ctx, "mirror", s.name, round)
	if err != nil {
		return measurement{}, err
	}
	topics := []string{bulk}
	for i := range ms.rates {
		t, err := e.freshTopic(ctx, fmt.Sprintf("mirrorlag%d", i+1), s.name, round)
		if err != nil {
			return measurement{}, err
		}
		topics = append(topics, t)
	}
	defer func() {
		if cfg.keep {
			return
		}
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		e.deleteSourceTopics(dctx, topics...)
		if _, err := ms.tadm.DeleteTopics(dctx, topics...); err != nil {
			e.logf("delete target topics: %v", err)
		}
	}()

	// 1. Fill the source.
	if _, err := loadgen.Produce(ctx, loadgen.ProduceConfig{
		Bootstrap:          e.direct.bootstrap,
		Topic:              bulk,
		RecordSize:         cfg.recordSize,
		Records:            cfg.mirrorRecords,
		Linger:             cfg.linger,
		MaxBufferedRecords: 10000,
		ClientID:           "kmigrate-bench-fill",
	}); err != nil {
		return measurement{}, fmt.Errorf("fill %s: %w", bulk, err)
	}
	want, err := e.topicRecords(ctx, bulk) // with the producer's warm-up records
	if err != nil {
		return measurement{}, err
	}

	// 2. Start the replicator and time the copy. Polling starts as soon as
	// the process does, so the window cannot miss the first records.
	tag := s.name + "-" + roundTag(round)
	began := time.Now()
	var (
		rep   replicator
		kproc *proxyProc
	)
	switch s.name {
	case sideKmigrate:
		p, err := ms.startKmigrate(e, tag, topics)
		if err != nil {
			return measurement{}, err
		}
		rep, kproc = p, p.proxyProc
	case sideMM2:
		p, err := ms.startMM2(ctx, e, tag, topics)
		if err != nil {
			return measurement{}, err
		}
		rep = p
	default:
		return measurement{}, fmt.Errorf("unknown mirror side %q", s.name)
	}
	defer rep.stop()
	procs := []tracked{{label: "replicator", pid: rep.pid()}}
	for _, p := range e.tracked {
		if p.label == "broker" {
			procs = append(procs, tracked{label: "source broker", pid: p.pid})
		}
	}
	if ms.targetPID != 0 {
		procs = append(procs, tracked{label: "target broker", pid: ms.targetPID})
	}

	cp, err := ms.waitCopied(ctx, bulk, want, rep, procs, cfg.mirrorTimeout)
	if err != nil {
		return measurement{}, fmt.Errorf("%s: %w\n--- %s log tail ---\n%s", s.name, err, s.name, rep.logTail())
	}
	m := measurement{
		metrics: []metric{
			{name: "throughput records/s", unit: "rec/s", value: cp.recordsPerSec(), higher: true},
			{name: "throughput MB/s", unit: "MB/s", value: cp.recordsPerSec() * float64(cfg.recordSize) / 1e6, higher: true},
			{name: "start to first record", unit: "s", value: cp.first.Sub(began).Seconds()},
			{name: "start to all records", unit: "s", value: cp.done.Sub(began).Seconds()},
		},
		bytes:   cp.copied * int64(cfg.recordSize),
		elapsed: cp.done.Sub(cp.first),
		usage:   cp.usage,
	}
	var notes []string
	if cp.usage.foreign > foreignNoteCores {
		notes = append(notes, fmt.Sprintf("other load %.2f cores while copying", cp.usage.foreign))
	}
	if cp.samples < 10 {
		notes = append(notes, fmt.Sprintf("copy window seen by only %d polls", cp.samples))
	}
	summary := fmt.Sprintf("%d records copied in %s after %s of start-up",
		cp.copied, cp.done.Sub(cp.first).Round(time.Millisecond), cp.first.Sub(began).Round(time.Millisecond))

	// 3. Lag at fixed rates, same replicator, one fresh topic per rate.
	produceTo := e.direct.bootstrap
	if kproc != nil && cfg.mirrorProduceVia == "proxy" {
		if err := kproc.waitReady(ctx, 30*time.Second); err != nil {
			return measurement{}, fmt.Errorf("kmigrate listener: %w\n%s", err, rep.logTail())
		}
		produceTo = []string{kproc.addr}
	}
	for i, rate := range ms.rates {
		lcfg := loadgen.ProduceConfig{
			Bootstrap:         produceTo,
			Topic:             topics[1+i],
			RecordSize:        cfg.recordSize,
			Duration:          cfg.mirrorLagDuration,
			Rate:              rate.perSec,
			Linger:            cfg.latencyLinger,
			EndToEnd:          true,
			EndToEndBootstrap: []string{ms.targetBootstrap(e)},
			EndToEndTimeout:   cfg.mirrorTimeout,
			ClientID:          "kmigrate-bench-mirror-lag",
		}
		var lres loadgen.ProduceResult
		luse, err := measureProcs(procs, func() error {
			var err error
			lres, err = loadgen.Produce(ctx, lcfg)
			return err
		})
		if err != nil {
			return measurement{}, fmt.Errorf("%s lag run at %s: %w\n--- %s log tail ---\n%s", s.name, rate, err, s.name, rep.logTail())
		}
		lag := loadgen.Summarize(lres.EndToEnd)
		at := " @ " + rate.label()
		m.metrics = append(m.metrics,
			metric{name: "lag p50" + at, unit: "ms", value: ms2(lag.P50)},
			metric{name: "lag p99" + at, unit: "ms", value: ms2(lag.P99)},
			metric{name: "lag p999" + at, unit: "ms", value: ms2(lag.P999)},
			metric{name: "replicator CPU" + at, unit: "cores", value: luse.proc["replicator"].Seconds() / luse.wall.Seconds()},
		)
		if luse.foreign > foreignNoteCores {
			notes = append(notes, fmt.Sprintf("other load %.2f cores during the lag run at %s", luse.foreign, rate))
		}
		if lres.Behind > 10*time.Millisecond {
			notes = append(notes, fmt.Sprintf("generator up to %s late at %s", lres.Behind.Round(time.Millisecond), rate))
		}
		if got := lres.RecordsPerSec(); got < 0.95*rate.perSec {
			notes = append(notes, fmt.Sprintf("lag run produced only %.0f of %.0f rec/s asked", got, rate.perSec))
		}
		m.usage.foreign = max(m.usage.foreign, luse.foreign) // the report takes the worst window
		m.usage.steal = max(m.usage.steal, luse.steal)
		summary += fmt.Sprintf("; lag at %s p50 %.1f ms p99 %.1f ms max %.1f ms over %d records",
			rate, ms2(lag.P50), ms2(lag.P99), ms2(lag.Max), lag.Count)
	}
	if rep.exited() {
		return measurement{}, fmt.Errorf("%s exited during the run\n%s", s.name, rep.logTail())
	}
	m.note = strings.Join(notes, "; ")
	m.loadNoted = true
	e.logf("%s %s: %s", s.name, roundTag(round), summary)
	return m, nil
}

func roundTag(round int) string {
	if round < 0 {
		return "warmup"
	}
	return "r" + strconv.Itoa(round+1)
}

func ms2(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// copyResult is the throughput window of one run.
type copyResult struct {
	first, done time.Time // polls that first saw records, and saw them all
	copied      int64     // records that reached the target between them
	samples     int       // polls in the window
	usage       usage
}

func (c copyResult) recordsPerSec() float64 {
	return perSecond(float64(c.copied), c.done.Sub(c.first))
}

func perSecond(v float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return v / d.Seconds()
}

// waitCopied polls the target topic's end offsets until they add up to
// want. The window runs from the first poll that saw any record to the poll
// that saw them all; CPU is read at both ends.
func (ms *mirrorSuite) waitCopied(ctx context.Context, topic string, want int64, rep replicator, procs []tracked, timeout time.Duration) (copyResult, error) {
	var (
		res       copyResult
		startSnap snapshot
		firstN    int64
	)
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(mirrorPollEvery)
	defer tick.Stop()
	for {
		n, at, err := ms.targetRecords(ctx, topic)
		if err == nil && n > 0 {
			if res.first.IsZero() {
				if startSnap, err = takeSnapshot(procs); err != nil {
					return res, err
				}
				res.first, firstN = at, n
			}
			res.samples++
			if n >= want {
				endSnap, err := takeSnapshot(procs)
				if err != nil {
					return res, err
				}
				res.done, res.copied = at, n-firstN
				res.usage = between(startSnap, endSnap, procs)
				return res, nil
			}
		}
		if rep.exited() {
			return res, fmt.Errorf("replicator exited after copying %d of %d records", n, want)
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("target holds %d of %d records of %s after %s (last error: %v)", n, want, topic, timeout, err)
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-tick.C:
		}
	}
}

// mirrorPollEvery is how often the copy's progress is read: the window's
// ends are known to within this.
const mirrorPollEvery = 25 * time.Millisecond

// targetRecords sums the target topic's end offsets over the partitions
// that answered (a partition the replicator has not created yet counts 0)
// and returns when the answer came.
func (ms *mirrorSuite) targetRecords(ctx context.Context, topic string) (int64, time.Time, error) {
	offs, err := ms.tadm.ListEndOffsets(ctx, topic)
	at := time.Now()
	if err != nil {
		return 0, at, err
	}
	var n int64
	var ferr error
	offs.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			ferr = o.Err
			return
		}
		n += o.Offset
	})
	if n > 0 {
		return n, at, nil
	}
	return n, at, ferr
}

// measureProcs runs f and returns what procs and the machine did meanwhile.
func measureProcs(procs []tracked, f func() error) (usage, error) {
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

func (e *env) deleteSourceTopics(ctx context.Context, topics ...string) {
	if e.cfg.keep {
		return
	}
	if _, err := e.admin.DeleteTopics(ctx, topics...); err != nil {
		e.logf("delete topics: %v", err)
		return
	}
	e.topics = slices.DeleteFunc(e.topics, func(t string) bool { return slices.Contains(topics, t) })
}

// --- kmigrate ---

type kmigrateRep struct{ *proxyProc }

func (k kmigrateRep) logTail() string { return tail(k.logPath, 30) }

func (ms *mirrorSuite) startKmigrate(e *env, tag string, topics []string) (kmigrateRep, error) {
	dir := filepath.Join(ms.work, "kmigrate-"+tag)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return kmigrateRep{}, err
	}
	var quoted []string
	for _, t := range topics {
		quoted = append(quoted, regexpQuote(t))
	}
	args := []string{
		"--target-bootstrap", ms.targetBootstrap(e),
		"--topics", strings.Join(quoted, "|"),
		"--data-dir", filepath.Join(dir, "data"),
	}
	if e.cfg.mirrorKmigrateArgs != "" {
		args = append(args, strings.Fields(e.cfg.mirrorKmigrateArgs)...)
	}
	p, err := spawnProxy(ms.bin, e.direct.bootstrap[0], filepath.Join(dir, "kmigrate.log"), args)
	if err != nil {
		return kmigrateRep{}, err
	}
	return kmigrateRep{p}, nil
}

func regexpQuote(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// kmigrateArgsDoc is how the report shows the kmigrate side's command.
func kmigrateArgsDoc(cfg *config) string {
	s := "kmigrate proxy --source-bootstrap <source> --listen 127.0.0.1:<free> --admin-listen 127.0.0.1:<free> --target-bootstrap <target> --topics '<the run's topics>' --data-dir <fresh dir>"
	if cfg.mirrorKmigrateArgs != "" {
		s += " " + cfg.mirrorKmigrateArgs
	}
	return s
}

// --- MirrorMaker 2 ---

type mm2Rep struct {
	cmd     *exec.Cmd
	cancel  context.CancelFunc
	done    chan struct{}
	logPath string
}

func (m *mm2Rep) pid() int { return m.cmd.Process.Pid }
func (m *mm2Rep) exited() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}
func (m *mm2Rep) logTail() string { return tail(m.logPath, 40) }

// stop asks MirrorMaker to shut down (SIGTERM runs its shutdown hook: tasks
// stop, the worker leaves its group), then kills it after 30s.
func (m *mm2Rep) stop() {
	if !m.exited() {
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.done:
		case <-time.After(30 * time.Second):
		}
	}
	m.cancel() // kills the process group if anything is left
	<-m.done
}

// mm2Config renders MirrorMaker 2's properties. The source alias differs
// per run, which gives every run its own internal topics and Connect group;
// with the identity policy the alias does not show in topic names.
func (ms *mirrorSuite) mm2Config(alias, source, target string, topics []string, cfg *config) []string {
	tasks := cfg.mm2Tasks
	if tasks <= 0 {
		tasks = cfg.partitions
	}
	lines := []string{
		"clusters = " + alias + ", target",
		alias + ".bootstrap.servers = " + source,
		"target.bootstrap.servers = " + target,
		alias + "->target.enabled = true",
		"target->" + alias + ".enabled = false",
		alias + "->target.topics = " + strings.Join(topics, ", "),
		// Target topics keep their names, like kmigrate's.
		"replication.policy.class = org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
		"tasks.max = " + strconv.Itoa(tasks),
		// The target producer (the Connect worker's, one per task):
		// acks=all and idempotence as kmigrate's, up to 5 requests in
		// flight (ordered thanks to idempotence; Connect's own default is
		// 1), batches up to 256 KiB (default 16 KiB, i.e. 16 of our
		// records), Kafka 4's default linger, no compression (the
		// source's codec, which kmigrate keeps).
		"target.producer.acks = all",
		"target.producer.enable.idempotence = true",
		"target.producer.max.in.flight.requests.per.connection = 5",
		"target.producer.batch.size = 262144",
		"target.producer.linger.ms = 5",
		"target.producer.compression.type = none",
		// The source consumer: bigger polls than the default 500.
		alias + ".consumer.max.poll.records = 2000",
		// What kmigrate does not do either: heartbeats, group
		// checkpoints, ACL sync (no authorizer here). Offset syncs (MM2's
		// offset map, every offset.lag.max=100 records) stay on.
		"emit.heartbeats.enabled = false",
		"emit.checkpoints.enabled = false",
		"sync.group.offsets.enabled = false",
		"sync.topic.acls.enabled = false",
		// Start-up only: find the connectors through their ServiceLoader
		// manifests instead of scanning every class of the classpath
		// (which MirrorMaker's own warning recommends).
		"plugin.discovery = service_load",
		// Single-broker clusters: every internal topic gets one replica.
		"replication.factor = 1",
		"checkpoints.topic.replication.factor = 1",
		"heartbeats.topic.replication.factor = 1",
		"offset-syncs.topic.replication.factor = 1",
		"offset.storage.replication.factor = 1",
		"status.storage.replication.factor = 1",
		"config.storage.replication.factor = 1",
	}
	for _, kv := range strings.Split(cfg.mm2Extra, ",") {
		if kv = strings.TrimSpace(kv); kv != "" {
			k, v, _ := strings.Cut(kv, "=")
			lines = append(lines, strings.TrimSpace(k)+" = "+strings.TrimSpace(v))
		}
	}
	return lines
}

func (ms *mirrorSuite) startMM2(ctx context.Context, e *env, tag string, topics []string) (*mm2Rep, error) {
	dir := filepath.Join(ms.work, "mm2-"+tag)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	alias := "src" + strings.NewReplacer("-", "", "_", "").Replace(e.runID+tag)
	props := filepath.Join(dir, "mm2.properties")
	lines := ms.mm2Config(alias, e.direct.bootstrap[0], ms.targetBootstrap(e), topics, e.cfg)
	if err := os.WriteFile(props, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "mm2.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	mctx, cancel := context.WithCancel(ctx)
	// The properties file goes first: --clusters takes all following words.
	cmd, err := kafkatest.ToolCmd(mctx, kafkatest.MainMirrorMaker2, props, "--clusters", "target")
	if err != nil {
		cancel()
		return nil, err
	}
	if lvl := e.cfg.mm2LogLevel; lvl != "" {
		// A JVM option: it goes before the main class.
		cmd.Args = append([]string{cmd.Args[0], "-Dkafkatest.log.level=" + lvl}, cmd.Args[1:]...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("start MirrorMaker 2: %w", err)
	}
	m := &mm2Rep{cmd: cmd, cancel: cancel, done: make(chan struct{}), logPath: logPath}
	go func() { _ = cmd.Wait(); close(m.done) }()
	return m, nil
}

// findBrokerIn returns the pid of the broker JVM among this process's
// descendants whose command line mentions dir (its cluster's directory).
func findBrokerIn(dir string) int {
	for _, pid := range descendants(os.Getpid()) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		if strings.Contains(string(b), "kafka.Kafka") && strings.Contains(string(b), dir) {
			return pid
		}
	}
	return 0
}
