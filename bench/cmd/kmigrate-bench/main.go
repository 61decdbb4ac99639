// Command kmigrate-bench is the benchmark behind `make bench`. It measures
// produce and consume throughput, produce and end-to-end latency, and the
// proxy's CPU per GB moved, directly against a broker and through the
// kmigrate proxy side by side in one run, alternating the two sides over
// several rounds and reporting medians, so drift on a noisy machine does not
// bias one side.
//
// By default it starts a single-node Kafka with internal/kafkatest, builds
// ./cmd/kmigrate and runs `kmigrate proxy` in front of the broker as a
// subprocess. Run it from the repository root:
//
//	go run ./bench/cmd/kmigrate-bench -out docs/benchmarks.md
//
// See -help for the knobs (duration, records, rate, rounds).
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

type config struct {
	bootstrap      string
	proxyBin       string
	proxyBootstrap string
	proxyPID       int
	brokerPID      int
	proxyArgs      string
	directOnly     bool
	relay          bool
	baseline       string
	pin            bool

	rounds          int
	warmup          bool
	suites          string
	recordSize      int
	partitions      int
	produceDuration time.Duration
	produceRecords  int64
	consumeRecords  int64
	consumeDuration time.Duration
	linger          time.Duration
	maxBuffered     int
	latencyRate     float64
	latencyDuration time.Duration
	latencyLinger   time.Duration
	brokerHeapMB    int
	brokerJVM       string
	brokers         int
	javaRecords     int64

	mirrorRecords      int64
	mirrorLagRates     string
	mirrorLagDuration  time.Duration
	mirrorRounds       int
	mirrorTimeout      time.Duration
	mirrorTarget       string
	mirrorProduceVia   string
	mirrorKmigrateArgs string
	mm2Tasks           int
	mm2Extra           string
	mm2LogLevel        string

	out      string
	check    bool
	keep     bool
	quiet    bool
	cmdline  string
	started  time.Time
	repoRoot string
}

func parseFlags() *config {
	c := &config{}
	flag.StringVar(&c.bootstrap, "bootstrap", "", "measure against this running Kafka (host:port) instead of starting one with internal/kafkatest")
	flag.IntVar(&c.brokerPID, "broker-pid", 0, "with -bootstrap: pid of that broker, for its CPU per GB (and so its CPU is not counted as other load)")
	flag.StringVar(&c.proxyBin, "proxy-bin", "", "kmigrate binary to run (default: go build ./cmd/kmigrate into a temp dir)")
	flag.StringVar(&c.proxyBootstrap, "proxy-bootstrap", "", "measure an already running proxy at this address instead of starting one (CPU per GB needs -proxy-pid)")
	flag.IntVar(&c.proxyPID, "proxy-pid", 0, "with -proxy-bootstrap: pid of that proxy, for CPU per GB")
	flag.StringVar(&c.proxyArgs, "proxy-args", "", "extra arguments for `kmigrate proxy`, space separated")
	flag.BoolVar(&c.directOnly, "direct-only", false, "measure only the direct side (checks the generator and the broker; no ratios)")
	flag.StringVar(&c.baseline, "baseline", "direct", "what the proxy is compared with: direct (clients talk to the broker) or relay (clients go through a plain byte relay, side by side in the same run: what the proxy costs beyond one more hop; needs the harness's single broker)")
	flag.BoolVar(&c.relay, "relay", false, "measure a plain byte relay (no Kafka parsing, spliced copies) in place of the proxy: what one more loopback hop costs any proxy on this machine (needs the harness's broker, not -bootstrap)")

	flag.BoolVar(&c.pin, "pin", false, "sidecar CPU layout: the broker JVMs on CPU 0, the load generator and the proxy on the other CPUs, as a sidecar shares its application's host and not the brokers' (needs taskset; with -bootstrap, pins -broker-pid)")

	flag.IntVar(&c.rounds, "rounds", 6, "rounds; each runs every suite on both sides, alternating which goes first")
	flag.BoolVar(&c.warmup, "warmup", true, "run each suite briefly on both sides before measuring, and drop the result")
	flag.StringVar(&c.suites, "suites", defaultSuites, "comma-separated suites to run")
	flag.IntVar(&c.recordSize, "record-size", 1024, "record value size in bytes")
	flag.IntVar(&c.partitions, "partitions", 6, "partitions of every topic")
	flag.DurationVar(&c.produceDuration, "produce-duration", 6*time.Second, "length of one produce-throughput run")
	flag.Int64Var(&c.produceRecords, "produce-records", 0, "records per produce-throughput run; overrides -produce-duration when > 0")
	flag.Int64Var(&c.consumeRecords, "consume-records", 300000, "records in the topic the consume runs read")
	flag.DurationVar(&c.consumeDuration, "consume-duration", 3*time.Second, "least measured time of one consume run: the topic is read again from the start until it is reached")
	flag.DurationVar(&c.linger, "linger", 5*time.Millisecond, "producer linger for throughput runs")
	flag.IntVar(&c.maxBuffered, "max-buffered-records", 10000, "records the producer of throughput runs may hold unacknowledged (kgo.MaxBufferedRecords; 10000 is kgo's default)")
	flag.Float64Var(&c.latencyRate, "latency-rate", 500, "records/s of the latency runs (moderate, so they measure latency, not queueing)")
	flag.DurationVar(&c.latencyDuration, "latency-duration", 10*time.Second, "length of one latency run")
	flag.DurationVar(&c.latencyLinger, "latency-linger", 0, "producer linger for latency runs")
	flag.Int64Var(&c.javaRecords, "java-records", 300000, "records per run of the java-produce suite (Kafka's ProducerPerformance; add it with -suites)")
	flag.IntVar(&c.brokerHeapMB, "broker-heap-mb", 1024, "heap of the broker started by the harness")
	flag.StringVar(&c.brokerJVM, "broker-jvm", "shipped", "JVM settings of the broker started by the harness: shipped (those of Kafka's start scripts: fixed heap, G1 with a 20 ms pause goal) or small (the test harness's serial collector)")
	flag.IntVar(&c.brokers, "brokers", 1, "brokers of the cluster the harness starts; with more than one, a topic's partitions have leaders on several and the proxy splits every produce and fetch")

	flag.Int64Var(&c.mirrorRecords, "mirror-records", 300000, "mirror suite: records in the source topic before the replicator starts (throughput)")
	flag.StringVar(&c.mirrorLagRates, "mirror-lag-rates", "0.5x,10000", "mirror suite: rates of the lag runs, comma-separated: records/s, or a share of the direct produce throughput (measured once at setup) such as 0.5x")
	flag.DurationVar(&c.mirrorLagDuration, "mirror-lag-duration", 5*time.Second, "mirror suite: length of one lag run")
	flag.IntVar(&c.mirrorRounds, "mirror-rounds", 3, "mirror suite: rounds (each runs kmigrate and MirrorMaker 2 once, alternating which goes first); 0: -rounds")
	flag.DurationVar(&c.mirrorTimeout, "mirror-timeout", 3*time.Minute, "mirror suite: longest wait for a copy, or for the lag run's records to reach the target")
	flag.StringVar(&c.mirrorTarget, "mirror-target", "", "mirror suite: mirror to this running Kafka (host:port) instead of starting a second broker")
	flag.StringVar(&c.mirrorProduceVia, "mirror-produce-via", "source", "mirror suite: where the kmigrate side's lag-run producer writes: source (the broker, as for MirrorMaker 2) or proxy (the mirroring kmigrate proxy)")
	flag.StringVar(&c.mirrorKmigrateArgs, "mirror-kmigrate-args", "", "mirror suite: extra arguments for the mirroring `kmigrate proxy`, space separated")
	flag.IntVar(&c.mm2Tasks, "mm2-tasks", 0, "mirror suite: MirrorMaker 2 tasks.max; 0: -partitions")
	flag.StringVar(&c.mm2Extra, "mm2-props", "", "mirror suite: extra MirrorMaker 2 properties, k=v,k=v (added last, so they override)")
	flag.StringVar(&c.mm2LogLevel, "mm2-log-level", "", "mirror suite: MirrorMaker 2 root log level (default: the harness's WARN); INFO shows its effective client configs")

	flag.StringVar(&c.out, "out", "", "write the results into this markdown file (e.g. docs/benchmarks.md); empty: stdout only")
	flag.BoolVar(&c.check, "check", false, "exit 1 if a result misses the bar (throughput >= 90% of direct, p99 added latency <= 1 ms)")
	flag.BoolVar(&c.keep, "keep-topics", false, "do not delete the benchmark's topics at the end (only matters with -bootstrap)")
	flag.BoolVar(&c.quiet, "quiet", false, "no per-run progress lines on stderr")
	flag.Parse()
	if flag.NArg() > 0 {
		log.Fatalf("unexpected arguments: %q", flag.Args())
	}
	if c.baseline != "direct" && c.baseline != "relay" {
		log.Fatalf("-baseline: %q is not direct or relay", c.baseline)
	}
	if c.baseline == "relay" && (c.relay || c.brokers > 1 || c.bootstrap != "" || c.directOnly) {
		log.Fatalf("-baseline relay needs the harness's single broker and the proxy: not with -relay, -brokers, -bootstrap or -direct-only")
	}
	if c.brokers > 1 && c.relay {
		log.Fatalf("-relay needs a single broker: a relay forwards to one address")
	}
	if c.relay && (c.bootstrap != "" || c.proxyBootstrap != "" || c.directOnly) {
		log.Fatalf("-relay needs the harness's broker and measures the relay in place of the proxy: not with -bootstrap, -proxy-bootstrap or -direct-only")
	}
	if c.brokerJVM != "shipped" && c.brokerJVM != "small" {
		log.Fatalf("-broker-jvm: %q is not shipped or small", c.brokerJVM)
	}
	if c.mirrorProduceVia != "source" && c.mirrorProduceVia != "proxy" {
		log.Fatalf("-mirror-produce-via: %q is not source or proxy", c.mirrorProduceVia)
	}
	c.cmdline = commandLine()
	return c
}

// shippedJVM says whether the harness's brokers run with the JVM settings
// of Kafka's start scripts (-broker-jvm shipped).
func (c *config) shippedJVM() bool { return c.brokerJVM == "shipped" }

// withRelay says whether the run has a byte relay: in the proxy's place
// (-relay) or in direct's (-baseline relay).
func (c *config) withRelay() bool { return c.relay || c.baseline == "relay" }

// commandLine is how this run was invoked, for the report.
func commandLine() string {
	args := []string{"go run ./bench/cmd/kmigrate-bench"}
	flag.Visit(func(f *flag.Flag) { args = append(args, fmt.Sprintf("-%s=%s", f.Name, f.Value)) })
	return strings.Join(args, " ")
}

// env is what every suite runs against.
type env struct {
	cfg    *config
	direct side // the broker itself
	// base is what the proxy is compared with: direct, or a byte relay
	// (-baseline relay).
	base   side
	proxy  side
	admin  *kadm.Client // direct to the broker
	topics []string     // created by this run
	runID  string
	bin    string // the kmigrate binary, when this run built or was given one
	// tracked are the processes whose CPU per GB is reported.
	tracked []tracked
}

func (e *env) logf(format string, args ...any) {
	if !e.cfg.quiet {
		fmt.Fprintf(os.Stderr, "bench %6.1fs: "+format+"\n", append([]any{time.Since(e.cfg.started).Seconds()}, args...)...)
	}
}

// freshTopic creates a new topic for one run (directly on the broker).
func (e *env) freshTopic(ctx context.Context, suite, sideName string, round int) (string, error) {
	name := fmt.Sprintf("kmigrate-bench-%s-%s-%s-r%d", e.runID, suite, sideName, round)
	if round < 0 {
		name = fmt.Sprintf("kmigrate-bench-%s-%s-%s-warmup", e.runID, suite, sideName)
	}
	resp, err := e.admin.CreateTopic(ctx, int32(e.cfg.partitions), 1, nil, name)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return "", fmt.Errorf("create topic %s: %w", name, err)
	}
	e.topics = append(e.topics, name)
	// Wait until every partition has a leader, so the first requests of a
	// run do not meet a topic the broker is still loading.
	deadline := time.Now().Add(30 * time.Second)
	for {
		md, err := e.admin.Metadata(ctx, name)
		if err == nil {
			t := md.Topics[name]
			ready := t.Err == nil && len(t.Partitions) == e.cfg.partitions
			for _, p := range t.Partitions {
				ready = ready && p.Err == nil && p.Leader >= 0
			}
			if ready {
				// A leader in the metadata is not yet a loaded log:
				// ListOffsets answers only once the partitions are served.
				_, err = e.topicRecords(ctx, name)
				if err == nil {
					return name, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("topic %s has no leader for every partition after 30s (last error: %v)", name, err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// topicRecords is the sum of a topic's end offsets.
func (e *env) topicRecords(ctx context.Context, topic string) (int64, error) {
	offs, err := e.admin.ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	var n int64
	var ferr error
	offs.Each(func(o kadm.ListedOffset) {
		if o.Err != nil && ferr == nil {
			ferr = o.Err
		}
		n += o.Offset
	})
	return n, ferr
}

func main() {
	if spec := os.Getenv(relayEnv); spec != "" {
		os.Exit(serveRelay(spec))
	}
	log.SetFlags(0)
	log.SetPrefix("kmigrate-bench: ")
	cfg := parseFlags()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, cfg)
	if err != nil {
		log.Print(err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func run(ctx context.Context, cfg *config) (int, error) {
	cfg.started = time.Now()
	root, err := kafkatest.RepoRoot()
	if err != nil {
		return 1, err
	}
	cfg.repoRoot = root
	work, err := os.MkdirTemp("", "kmigrate-bench-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(work)

	suites, err := pickSuites(cfg.suites)
	if err != nil {
		return 2, err
	}
	if cfg.pin {
		// The mirror suite's target broker and MirrorMaker 2 start later
		// and are not placed: its layout would be half one, half the other.
		if slices.ContainsFunc(suites, func(s suite) bool { return strings.HasPrefix(s.name(), "mirror") }) {
			return 2, fmt.Errorf("-pin applies to the proxy suites; leave the mirror suite out (-suites)")
		}
		if cfg.bootstrap != "" && cfg.brokerPID == 0 {
			return 2, fmt.Errorf("-pin with -bootstrap needs -broker-pid, the broker JVM to place on CPU 0")
		}
		if err := pinSelf(); err != nil {
			return 1, err
		}
	}
	e := &env{cfg: cfg, runID: fmt.Sprintf("%x", time.Now().Unix()&0xffffff)}

	// The broker.
	kafkaVersion := kafkatest.KafkaVersion
	brokerNote := "single-node KRaft broker started by internal/kafkatest"
	if cfg.brokers > 1 {
		brokerNote = fmt.Sprintf("KRaft cluster of %d brokers started by internal/kafkatest (the first also the controller; topics have one replica, so partitions spread over the brokers)", cfg.brokers)
	}
	if cfg.bootstrap == "" {
		brokerNote += fmt.Sprintf(", JVM %s", strings.Join(kafkatest.BrokerJVMOpts(cfg.brokerHeapMB, cfg.shippedJVM()), " "))
	}
	bootstrap := cfg.bootstrap
	// With -relay: the relay's address, which the broker advertises on
	// its relayed listener, and that listener's own address.
	var relayAddr, relayTo string
	if bootstrap == "" {
		e.logf("starting Kafka %s ...", kafkatest.KafkaVersion)
		var c *kafkatest.Cluster
		for attempt := 1; ; attempt++ {
			opts := kafkatest.Options{Name: "bench", HeapMB: cfg.brokerHeapMB, ShippedJVM: cfg.shippedJVM(), Brokers: cfg.brokers}
			if cfg.withRelay() {
				if relayAddr, err = freeAddr(); err != nil {
					return 1, err
				}
				opts.RelayedAddr = relayAddr
			}
			c, err = kafkatest.Start(ctx, opts)
			if err == nil {
				break
			}
			// One retry covers a start that failed by chance (a lost
			// port race, a random cluster id the format tool rejects).
			if attempt == 2 || ctx.Err() != nil {
				return 1, fmt.Errorf("start Kafka: %w", err)
			}
			e.logf("Kafka did not start, trying once more: %v", firstLine(err.Error()))
		}
		defer c.Close()
		bootstrap = c.Bootstrap()
		if cfg.withRelay() {
			relayTo = c.Addr(kafkatest.Relayed)
		}
		e.logf("Kafka up at %s in %s", bootstrap, c.StartupTime().Round(time.Millisecond))
		pids := findBrokers()
		if len(pids) == 0 {
			e.logf("broker JVM not found among this process's children: no broker CPU figures")
		}
		for i, pid := range pids {
			if cfg.pin {
				if err := pinBroker(pid); err != nil {
					return 1, err
				}
			}
			label := "broker"
			if len(pids) > 1 {
				label = fmt.Sprintf("broker%d", i+1)
			}
			e.tracked = append(e.tracked, tracked{label: label, pid: pid})
		}
	} else {
		kafkaVersion = "unknown (external -bootstrap)"
		brokerNote = "external broker at " + bootstrap
		if cfg.brokerPID != 0 {
			e.tracked = append(e.tracked, tracked{label: "broker", pid: cfg.brokerPID})
			if cfg.pin {
				if err := pinBroker(cfg.brokerPID); err != nil {
					return 1, err
				}
			}
		}
	}
	e.direct = side{name: "direct", bootstrap: []string{bootstrap}}
	e.base = e.direct
	acl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	if err != nil {
		return 1, err
	}
	defer acl.Close()
	e.admin = kadm.NewClient(acl)
	if !cfg.keep {
		defer func() {
			if len(e.topics) == 0 {
				return
			}
			dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := e.admin.DeleteTopics(dctx, e.topics...); err != nil {
				e.logf("delete topics: %v", err)
			}
		}()
	}

	// The relay: in the proxy's place (-relay) or in direct's (-baseline
	// relay).
	var relaySide side
	relayNote := ""
	if cfg.withRelay() {
		r, err := spawnRelay(ctx, relayAddr, relayTo, filepath.Join(work, "relay.log"))
		if err != nil {
			return 1, err
		}
		defer r.stop()
		relaySide = side{name: "relay", bootstrap: []string{r.addr}}
		e.tracked = append(e.tracked, tracked{label: "relay", pid: r.pid(), onlySide: "relay"})
		relayNote = fmt.Sprintf("a byte relay (a subprocess (pid %d) copying bytes both ways with io.Copy, spliced on Linux, no Kafka parsing) at %s, in front of a broker listener that advertises it", r.pid(), r.addr)
		e.logf("relay up at %s -> %s (pid %d)", r.addr, relayTo, r.pid())
	}

	// The proxy.
	proxyNote := ""
	if cfg.baseline == "relay" {
		e.base = relaySide
		proxyNote = "compared with " + relayNote + " (`-baseline relay`); "
	}
	if !cfg.directOnly {
		switch {
		case cfg.relay:
			e.proxy = relaySide
			proxyNote = relayNote + ", in place of the proxy (`-relay`)"
		case cfg.proxyBootstrap != "":
			e.proxy = side{name: "proxy", bootstrap: []string{cfg.proxyBootstrap}}
			proxyNote = "external proxy at " + cfg.proxyBootstrap
			if cfg.proxyPID != 0 {
				e.tracked = append(e.tracked, tracked{label: "proxy", pid: cfg.proxyPID, onlySide: "proxy"})
			}
		default:
			bin := cfg.proxyBin
			if bin == "" {
				e.logf("building ./cmd/kmigrate ...")
				if bin, err = buildProxy(ctx, root, work); err != nil {
					return 1, err
				}
			}
			e.bin = bin
			var extra []string
			if cfg.proxyArgs != "" {
				extra = strings.Fields(cfg.proxyArgs)
			}
			p, err := startProxy(ctx, bin, bootstrap, filepath.Join(work, "proxy.log"), extra)
			if err != nil {
				return 1, err
			}
			defer p.stop()
			e.proxy = side{name: "proxy", bootstrap: []string{p.addr}}
			e.tracked = append(e.tracked, tracked{label: "proxy", pid: p.pid(), onlySide: "proxy"})
			proxyNote += fmt.Sprintf("`kmigrate proxy` subprocess (pid %d) at %s", p.pid(), p.addr)
			e.logf("proxy up at %s (pid %d)", p.addr, p.pid())
		}
	}

	if cfg.proxyBin != "" {
		e.bin = cfg.proxyBin
	}
	defer func() {
		for _, s := range suites {
			if c, ok := s.(interface{ close() }); ok {
				c.close()
			}
		}
	}()
	for _, s := range suites {
		if err := s.setup(ctx, e); err != nil {
			return 1, fmt.Errorf("%s setup: %w", s.name(), err)
		}
	}

	res := newResults()
	sidesOf := func(s suite) []side {
		sd := s.sides(e)
		if cfg.directOnly {
			return []side{sd[0]}
		}
		return sd[:]
	}
	if cfg.warmup {
		for _, s := range suites {
			if _, ok := s.(pairedSuite); ok {
				continue // the unpaired suites have warmed up the same paths
			}
			if _, ok := s.(*mirrorSuite); ok {
				continue // fresh replicators every run; setup warmed the brokers
			}
			for _, sd := range sidesOf(s) {
				e.logf("warm-up %s %s", s.name(), sd.name)
				if _, err := s.run(ctx, e, sd, -1); err != nil {
					return 1, fmt.Errorf("warm-up %s %s: %w", s.name(), sd.name, err)
				}
			}
		}
	}
	rounds := cfg.rounds
	for _, s := range suites {
		if ls, ok := s.(limitedSuite); ok {
			rounds = max(rounds, ls.maxRounds(e))
		}
	}
	for round := 0; round < rounds; round++ {
		for _, s := range suites {
			if round >= roundsOf(s, e) {
				continue
			}
			if ps, ok := s.(pairedSuite); ok {
				if cfg.directOnly {
					continue
				}
				sd := s.sides(e)
				ma, mb, err := ps.runPair(ctx, e, sd[0], sd[1], round)
				if err != nil {
					return 1, fmt.Errorf("round %d %s: %w", round+1, s.name(), err)
				}
				for i, m := range []measurement{ma, mb} {
					m = flagForeign(m)
					res.add(s, sd[i], round, m)
					e.logf("round %d/%d %-8s %-7s %s", round+1, roundsOf(s, e), s.name(), sd[i].name, m.brief())
				}
				continue
			}
			order := sidesOf(s)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, sd := range order {
				m, err := s.run(ctx, e, sd, round)
				if err != nil {
					return 1, fmt.Errorf("round %d %s %s: %w", round+1, s.name(), sd.name, err)
				}
				m = flagForeign(m)
				res.add(s, sd, round, m)
				e.logf("round %d/%d %-8s %-7s %s", round+1, roundsOf(s, e), s.name(), sd.name, m.brief())
			}
		}
	}

	// The proxy suites (direct vs proxy) and the mirror suite (MirrorMaker 2
	// vs kmigrate) compare different sides: each group has its own report
	// and its own block in the document.
	var proxySuites, mirrorSuites []suite
	for _, s := range suites {
		if _, ok := s.(*mirrorSuite); ok {
			mirrorSuites = append(mirrorSuites, s)
		} else {
			proxySuites = append(proxySuites, s)
		}
	}
	proxyBegin, proxyEnd := beginMarker, endMarker
	switch {
	case cfg.relay:
		proxyBegin, proxyEnd = relayBeginMarker, relayEndMarker
	case cfg.baseline == "relay":
		proxyBegin, proxyEnd = vsRelayBeginMarker, vsRelayEndMarker
	case cfg.brokers > 1:
		proxyBegin, proxyEnd = brokersBeginMarker, brokersEndMarker
	}
	pass := true
	for _, g := range []struct {
		suites     []suite
		begin, end string
	}{{proxySuites, proxyBegin, proxyEnd}, {mirrorSuites, mirrorBeginMarker, mirrorEndMarker}} {
		if len(g.suites) == 0 {
			continue
		}
		rep := buildReport(e, g.suites, res)
		rep.kafkaVersion = kafkaVersion
		rep.brokerNote = brokerNote
		if cfg.pin {
			rep.brokerNote += "; " + pinLayout()
		}
		rep.proxyNote = proxyNote
		fmt.Println(rep.text())
		fmt.Println()
		md := rep.markdown()
		fmt.Println(md)
		fmt.Println()
		if cfg.out != "" {
			if err := writeDocBlock(cfg.out, md, g.begin, g.end); err != nil {
				return 1, err
			}
			e.logf("wrote %s", cfg.out)
		}
		pass = pass && rep.pass()
	}
	if cfg.check && !pass {
		return 1, fmt.Errorf("below the bar")
	}
	return 0, nil
}

// foreignNoteCores is the load from other processes above which a run is
// flagged in the report.
const foreignNoteCores = 0.3

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

func flagForeign(m measurement) measurement {
	if f := m.usage.foreign; f > foreignNoteCores && !m.loadNoted {
		m.note = strings.TrimPrefix(m.note+fmt.Sprintf("; other load %.2f cores", f), "; ")
	}
	return m
}

func pickSuites(list string) ([]suite, error) {
	var out []suite
	all := allSuites()
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		i := slices.IndexFunc(all, func(s suite) bool { return s.name() == n })
		if i < 0 {
			var names []string
			for _, s := range all {
				names = append(names, s.name())
			}
			return nil, fmt.Errorf("unknown suite %q (have %s)", n, strings.Join(names, ", "))
		}
		out = append(out, all[i])
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no suites selected")
	}
	return out, nil
}
