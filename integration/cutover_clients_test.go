package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/kmigrate/kmigrate/internal/proxytest"
)

// The acceptance of a group cutover for the Java client and librdkafka, as
// TestGroupCutoverFranzGo does for franz-go: a producer writes without
// pause into 6 partitions through the proxy, a consumer group of real
// client processes consumes through the proxy and commits after every batch,
// and the group is flipped to the target and back (3 cutovers, 2 rollbacks,
// ending on the target). Per partition: every produced offset delivered, none
// delivered again below the position the group had committed at the time,
// first deliveries in offset order, never owned by two members at once (as
// their assignment callbacks report it), and no consumer process restarted.
// Redelivery at or beyond the last commit is the client's at-least-once
// window, counted and reported, not failed.
//
// With KMIGRATE_TEST_LOGS=DIR set, each test keeps in DIR/<test name> what
// the consumers printed, their logs (the Java client at INFO, librdkafka with
// debug=cgrp) and the proxy log.

const cutoverPartitions = 6

// TestGroupCutoverJava: Kafka's own VerifiableConsumer (the Java client,
// classic protocol), 3 processes in one group with the cooperative-sticky
// assignor and a synchronous commit after every poll.
//
// With a cooperative assignor a rebalance revokes nothing that stays with
// its owner, so the members keep fetching while their JoinGroup is held and
// the Java client refuses commits until the rebalance completes (it reports
// them as failed): deliveries go on, and the first commit on the new
// cluster covers them.
func TestGroupCutoverJava(t *testing.T) { testGroupCutoverJava(t, false) }

// TestGroupCutoverJavaStatic is the same with static members
// (group.instance.id, KIP-345): the Java client does not leave the group
// when a static member goes, and a static member's rejoin replaces the old
// member id on its coordinator.
func TestGroupCutoverJavaStatic(t *testing.T) { testGroupCutoverJava(t, true) }

func testGroupCutoverJava(t *testing.T, static bool) {
	if _, err := exec.LookPath("java"); err != nil {
		t.Fatalf("java is required for the Java client's cutover test (JDK 17+ on PATH): %v", err)
	}
	rig := startCutoverRig(t, 90*time.Second)
	cfg := filepath.Join(t.TempDir(), "consumer.properties")
	if err := os.WriteFile(cfg, []byte("heartbeat.interval.ms=500\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		args := []string{"--bootstrap-server", rig.proxy.Addr, "--topic", rig.topic, "--group-id", rig.group,
			"--group-protocol", "classic",
			"--assignment-strategy", "org.apache.kafka.clients.consumer.CooperativeStickyAssignor",
			"--session-timeout", "10000", "--reset-policy", "earliest",
			"--consumer.config", cfg}
		if static {
			args = append(args, "--group-instance-id", fmt.Sprintf("java-static-%d", i+1))
		}
		cmd, err := kafkatest.ToolCmd(rig.consumerCtx, kafkatest.MainVerifiableCons, args...)
		if err != nil {
			t.Fatalf("VerifiableConsumer: %v", err)
		}
		// The consumer's own INFO log (rebalances, commits refused) goes to
		// its stderr file, printed when the test fails.
		cmd.Env = append(os.Environ(), "JAVA_TOOL_OPTIONS=-Dkafkatest.log.level=INFO")
		rig.startMember(fmt.Sprintf("java-%d", i+1), cmd, parseVerifiableConsumer)
	}
	rig.run(3)
}

// TestGroupCutoverConfluentKafka: librdkafka through confluent-kafka-python,
// one consumer process with the default assignors (range,roundrobin: eager),
// auto commit off and a synchronous commit of each consume() batch.
func TestGroupCutoverConfluentKafka(t *testing.T) {
	testGroupCutoverLibrdkafka(t, "range,roundrobin", 1)
}

// TestGroupCutoverConfluentKafkaCooperative is the same with librdkafka's
// cooperative-sticky assignor and two consumer processes. librdkafka keeps
// committing while its JoinGroup is pending (the Java client refuses to), and
// treats the MEMBER_ID_REQUIRED of its first JoinGroup on the new cluster
// as a lost assignment, so it resumes from the last commit that reached the
// group's new home: this is the case that finds commits the cutover loses
// track of.
func TestGroupCutoverConfluentKafkaCooperative(t *testing.T) {
	testGroupCutoverLibrdkafka(t, "cooperative-sticky", 2)
}

// testGroupCutoverLibrdkafka runs the acceptance with members consumer
// processes using the assignment strategy.
func testGroupCutoverLibrdkafka(t *testing.T, strategy string, members int) {
	python, err := kafkatest.Python()
	if err != nil {
		t.Fatalf("the librdkafka cutover test needs confluent-kafka: %v", err)
	}
	rig := startCutoverRig(t, 90*time.Second)
	script := filepath.Join(t.TempDir(), "cutover_consumer.py")
	if err := os.WriteFile(script, []byte(cutoverConsumerScript), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < members; i++ {
		// With KMIGRATE_TEST_LOGS set, librdkafka logs its group protocol
		// to the kept stderr.
		debug := ""
		if os.Getenv("KMIGRATE_TEST_LOGS") != "" {
			debug = "cgrp"
		}
		cmd := exec.CommandContext(rig.consumerCtx, python, "-u", script, rig.proxy.Addr, rig.topic, rig.group, strategy, debug)
		cmd.WaitDelay = 5 * time.Second
		rig.startMember(fmt.Sprintf("librdkafka-%d", i+1), cmd, parseCutoverScript)
	}
	rig.run(members)
}

// cutoverConsumerScript is a confluent-kafka group consumer that prints one
// JSON line per consume() batch (partition and offset of every record) and
// per synchronous commit of that batch.
const cutoverConsumerScript = `
import json, os, sys, time
from confluent_kafka import Consumer, KafkaException, TopicPartition

boot, topic, group, strategy, debug = sys.argv[1:6]

def out(**kw):
    kw["ts"] = int(time.time() * 1000)
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()

c = Consumer({"bootstrap.servers": boot, "group.id": group, "auto.offset.reset": "earliest",
              "enable.auto.commit": False, "partition.assignment.strategy": strategy,
              "heartbeat.interval.ms": 500, "session.timeout.ms": 10000,
              "client.id": "cutover-librdkafka-%d" % os.getpid(), **({"debug": debug} if debug else {})})
c.subscribe([topic],
            on_assign=lambda c, ps: out(kind="assigned", partitions=[p.partition for p in ps]),
            on_revoke=lambda c, ps: out(kind="revoked", partitions=[p.partition for p in ps]),
            on_lost=lambda c, ps: out(kind="lost", partitions=[p.partition for p in ps]))
out(kind="started", pid=os.getpid())
while True:
    msgs = c.consume(num_messages=500, timeout=0.2)
    recs, nxt = [], {}
    for m in msgs:
        if m.error() is not None:
            out(kind="error", err=str(m.error()), fatal=m.error().fatal())
            if m.error().fatal():
                sys.exit(1)
            continue
        recs.append([m.partition(), m.offset()])
        nxt[m.partition()] = m.offset() + 1
    if recs:
        out(kind="consumed", records=recs)
    if nxt:
        try:
            res = c.commit(offsets=[TopicPartition(topic, p, o) for p, o in nxt.items()], asynchronous=False)
            out(kind="committed", offsets=[[tp.partition, tp.offset] for tp in res if tp.error is None],
                failed=[[tp.partition, tp.offset, str(tp.error)] for tp in res if tp.error is not None])
        except KafkaException as e:
            out(kind="commit_failed", err=str(e), offsets=[[p, o] for p, o in nxt.items()])
`

// cutoverRig is one run: the proxy in front of both clusters, the topic,
// the producer, the consumer processes and what they reported.
type cutoverRig struct {
	t            *testing.T
	ctx          context.Context
	src, dst     *kafkatest.Cluster
	proxy        *proxytest.Process
	topic, group string
	led          *ledger
	srcAdm       *kadm.Client
	dstAdm       *kadm.Client
	note         string // for waitFor's timeout message

	consumerCtx  context.Context
	stopMembers  context.CancelFunc
	members      []*member
	stopProducer chan struct{}
	produced     sync.WaitGroup
	prodMu       sync.Mutex
	ackedEnd     map[int32]int64 // next offset after the highest acknowledged
	ackedCount   map[int32]int64
	prodErrs     int
}

func startCutoverRig(t *testing.T, budget time.Duration) *cutoverRig {
	src, dst := cluster(t), target.Get(t)
	r := &cutoverRig{t: t, src: src, dst: dst, topic: uniqueName(t, "topic"), group: uniqueName(t, "group"),
		led: newLedger(), ackedEnd: map[int32]int64{}, ackedCount: map[int32]int64{}}
	createTopic(t, src, r.topic, cutoverPartitions)
	r.srcAdm, r.dstAdm = directAdmin(t, src), directAdmin(t, dst)
	// The target's group coordinator is up before the clock starts: on a
	// fresh cluster the first group request creates __consumer_offsets,
	// which is no part of a flip.
	warm := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d, err := r.dstAdm.DescribeGroups(ctx, r.group)
		cancel()
		// A coordinator that answers knows no such group yet: it is up.
		if gerr := d[r.group].Err; err == nil && (gerr == nil || errors.Is(gerr, kerr.GroupIDNotFound)) {
			break
		}
		if time.Since(warm) > 90*time.Second {
			t.Fatalf("the target's group coordinator is not available after 90 s: %v", errors.Join(err, d[r.group].Err))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if w := time.Since(warm); w > time.Second {
		t.Logf("target group coordinator available after %s", w.Round(time.Millisecond))
	}
	r.proxy = proxytest.Start(t, "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", regexp.QuoteMeta(r.topic), "--data-dir", t.TempDir())
	r.ctx = testCtx(t, budget+60*time.Second)
	r.consumerCtx, r.stopMembers = context.WithCancel(context.Background())
	t.Cleanup(func() {
		r.stopMembers()
		for _, m := range r.members {
			<-m.exited
		}
		if dir := os.Getenv("KMIGRATE_TEST_LOGS"); dir != "" {
			r.keepLogs(dir)
		}
		if t.Failed() {
			for _, m := range r.members {
				t.Logf("%s stderr (end):\n%s", m.name, m.stderrTail(6000))
			}
			if out, err := os.ReadFile(r.proxy.LogPath); err == nil {
				t.Logf("proxy log lines about the group:\n%s", grepLines(string(out), r.group, 60))
			}
		}
	})
	return r
}

// keepLogs copies the consumers' stderr and the proxy log to dir/<test>/.
func (r *cutoverRig) keepLogs(dir string) {
	dir = filepath.Join(dir, r.t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.t.Logf("keep logs: %v", err)
		return
	}
	files := map[string]string{"proxy.log": r.proxy.LogPath}
	for _, m := range r.members {
		files[m.name+".stderr"] = m.stderr
		files[m.name+".stdout"] = m.stdout
	}
	for name, from := range files {
		if b, err := os.ReadFile(from); err == nil {
			os.WriteFile(filepath.Join(dir, name), b, 0o644)
		}
	}
	r.t.Logf("logs kept in %s", dir)
}

// produce writes records without pause (about 1,000/s, round robin over the
// partitions) through the proxy until stopProducer closes.
func (r *cutoverRig) produce() {
	cl, err := kgo.NewClient(kgo.SeedBrokers(r.proxy.Addr), kgo.DefaultProduceTopic(r.topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		r.t.Fatal(err)
	}
	r.stopProducer = make(chan struct{})
	r.produced.Add(1)
	go func() {
		defer r.produced.Done()
		defer cl.Close()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; {
			select {
			case <-r.stopProducer:
				if err := cl.Flush(r.ctx); err != nil {
					r.t.Errorf("producer flush: %v", err)
				}
				return
			case <-tick.C:
			}
			for j := 0; j < 10; j++ {
				rec := &kgo.Record{Partition: int32(i % cutoverPartitions), Value: []byte(fmt.Sprint(i))}
				i++
				cl.Produce(r.ctx, rec, func(rec *kgo.Record, err error) {
					r.prodMu.Lock()
					defer r.prodMu.Unlock()
					if err != nil {
						if r.prodErrs++; r.prodErrs <= 5 {
							r.t.Errorf("produce %s: %v", rec.Value, err)
						}
						return
					}
					r.ackedCount[rec.Partition]++
					if rec.Offset+1 > r.ackedEnd[rec.Partition] {
						r.ackedEnd[rec.Partition] = rec.Offset + 1
					}
				})
			}
		}
	}()
}

// member is one consumer process.
type member struct {
	name     string
	cmd      *exec.Cmd
	pid      int
	stderr   string // file
	stdout   string // file: a copy of what the process printed
	exited   chan struct{}
	exitErr  error
	mu       sync.Mutex
	starts   int
	owned    map[int32]bool
	revokes  int
	assigns  int
	lost     int
	errs     []string
	nonJSON  int
	lastLine string
}

func (m *member) alive() bool {
	select {
	case <-m.exited:
		return false
	default:
		return m.cmd.Process.Signal(syscall.Signal(0)) == nil
	}
}

func (m *member) stderrTail(n int) string {
	b, _ := os.ReadFile(m.stderr)
	return tail(string(b), n)
}

func (m *member) ownedList() []int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ps []int32
	for p, ok := range m.owned {
		if ok {
			ps = append(ps, p)
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}

func (m *member) setOwned(ps []int32, own bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range ps {
		m.owned[p] = own
	}
}

type lineParser func(m *member, line []byte, led *ledger) error

func (r *cutoverRig) startMember(name string, cmd *exec.Cmd, parse lineParser) {
	t := r.t
	m := &member{name: name, cmd: cmd, exited: make(chan struct{}), owned: map[int32]bool{},
		stderr: filepath.Join(t.TempDir(), name+".stderr")}
	errFile, err := os.Create(m.stderr)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = errFile
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	outFile, err := os.Create(filepath.Join(t.TempDir(), name+".stdout"))
	if err != nil {
		t.Fatal(err)
	}
	m.stdout = outFile.Name()
	stdout := io.TeeReader(pipe, outFile)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	m.pid = cmd.Process.Pid
	r.members = append(r.members, m)
	var reading sync.WaitGroup
	reading.Add(1)
	go func() {
		defer reading.Done()
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 16<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if len(line) == 0 || line[0] != '{' {
				m.mu.Lock()
				m.nonJSON++
				m.lastLine = string(line)
				m.mu.Unlock()
				continue
			}
			if err := parse(m, line, r.led); err != nil {
				r.led.problem("%s: %v: %s", name, err, line)
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		reading.Wait()
		m.exitErr = cmd.Wait()
		errFile.Close()
		outFile.Close()
		close(m.exited)
	}()
}

// verifiableEvent is one JSON line of VerifiableConsumer.
type verifiableEvent struct {
	Name       string `json:"name"`
	Timestamp  int64  `json:"timestamp"`
	Partitions []struct {
		Partition int32 `json:"partition"`
		Count     int64 `json:"count"`
		MinOffset int64 `json:"minOffset"`
		MaxOffset int64 `json:"maxOffset"`
	} `json:"partitions"`
	Offsets []struct {
		Partition int32 `json:"partition"`
		Offset    int64 `json:"offset"`
	} `json:"offsets"`
	Success bool   `json:"success"`
	Error   string `json:"error"`
}

func parseVerifiableConsumer(m *member, line []byte, led *ledger) error {
	var e verifiableEvent
	if err := json.Unmarshal(line, &e); err != nil {
		return err
	}
	at := time.UnixMilli(e.Timestamp)
	parts := func() []int32 {
		var ps []int32
		for _, p := range e.Partitions {
			ps = append(ps, p.Partition)
		}
		return ps
	}
	switch e.Name {
	case "startup_complete":
		m.mu.Lock()
		m.starts++
		m.mu.Unlock()
	case "partitions_assigned":
		m.setOwned(parts(), true)
		led.own(m.name, parts(), true, at)
		m.mu.Lock()
		m.assigns++
		m.mu.Unlock()
	case "partitions_revoked":
		m.setOwned(parts(), false)
		led.own(m.name, parts(), false, at)
		m.mu.Lock()
		m.revokes++
		m.mu.Unlock()
	case "records_consumed":
		for _, p := range e.Partitions {
			if p.Count != p.MaxOffset-p.MinOffset+1 {
				return fmt.Errorf("partition %d: %d records in offsets %d..%d: the topic has no gaps", p.Partition, p.Count, p.MinOffset, p.MaxOffset)
			}
			led.deliver(m.name, p.Partition, p.MinOffset, p.MaxOffset, at)
		}
	case "offsets_committed":
		if !e.Success {
			led.commitFailed(m.name, e.Error)
			return nil
		}
		for _, o := range e.Offsets {
			led.commit(m.name, o.Partition, o.Offset, at)
		}
	case "shutdown_complete":
		return fmt.Errorf("consumer shut down")
	}
	return nil
}

// scriptEvent is one JSON line of cutoverConsumerScript.
type scriptEvent struct {
	Kind       string     `json:"kind"`
	TS         int64      `json:"ts"`
	Records    [][2]int64 `json:"records"`
	Offsets    [][2]int64 `json:"offsets"`
	Failed     [][]any    `json:"failed"`
	Partitions []int32    `json:"partitions"`
	Err        string     `json:"err"`
	Fatal      bool       `json:"fatal"`
}

func parseCutoverScript(m *member, line []byte, led *ledger) error {
	var e scriptEvent
	if err := json.Unmarshal(line, &e); err != nil {
		return err
	}
	at := time.UnixMilli(e.TS)
	switch e.Kind {
	case "started":
		m.mu.Lock()
		m.starts++
		m.mu.Unlock()
	case "assigned":
		m.setOwned(e.Partitions, true)
		led.own(m.name, e.Partitions, true, at)
		m.mu.Lock()
		m.assigns++
		m.mu.Unlock()
	case "revoked", "lost":
		m.setOwned(e.Partitions, false)
		led.own(m.name, e.Partitions, false, at)
		m.mu.Lock()
		if e.Kind == "lost" {
			m.lost++
		} else {
			m.revokes++
		}
		m.mu.Unlock()
	case "consumed":
		// Runs of consecutive offsets of one partition become one range.
		for i := 0; i < len(e.Records); {
			p, from := int32(e.Records[i][0]), e.Records[i][1]
			j := i + 1
			for j < len(e.Records) && int32(e.Records[j][0]) == p && e.Records[j][1] == e.Records[j-1][1]+1 {
				j++
			}
			led.deliver(m.name, p, from, e.Records[j-1][1], at)
			i = j
		}
	case "committed":
		for _, o := range e.Offsets {
			led.commit(m.name, int32(o[0]), o[1], at)
		}
		if len(e.Failed) > 0 {
			led.commitFailed(m.name, fmt.Sprint(e.Failed))
		}
	case "commit_failed":
		led.commitFailed(m.name, e.Err)
	case "error":
		m.mu.Lock()
		m.errs = append(m.errs, e.Err)
		m.mu.Unlock()
		if e.Fatal {
			return fmt.Errorf("fatal consumer error: %s", e.Err)
		}
	}
	return nil
}

// ledger collects what the group's members delivered and committed. While
// the test runs it keeps per partition what was delivered at least once and
// the highest commit (for the waits); judge replays every event in the
// order of the members' own clocks (one machine, so one clock), which is
// what "delivered again after a commit" means across processes.
type ledger struct {
	mu            sync.Mutex
	events        []ledgerEvent
	parts         map[int32]*partLedger
	got           []consumed // one entry per delivered range, for pauses
	commits       int
	failedCommits int
	failures      map[string]int // commit failure message → count
	problems      []string
}

// ledgerEvent is a delivery of offsets from..to, or (commit) a committed
// position from, or (owns) the start (from 1) or end (from 0) of who's
// ownership of partition p, as its assignment callbacks reported it.
type ledgerEvent struct {
	at       time.Time
	seq      int // arrival order, for events of the same millisecond
	commit   bool
	owns     bool
	who      string
	p        int32
	from, to int64
}

// partLedger is the live view of one partition.
type partLedger struct {
	seen       []uint16 // deliveries per offset
	contiguous int64    // every offset below it was delivered
	committed  int64    // highest committed position
	deliveries int64
}

// partVerdict is what judge found in one partition.
type partVerdict struct {
	deliveries  int64
	lost        int64
	afterCommit int64 // deliveries below the position committed before them
	beyond      int64 // redeliveries at or above it
	reordered   int64 // first deliveries below an earlier first delivery
	// sharedOwner counts assignments of the partition to a member while
	// another still owned it: both consume it, and one delivers again
	// what the other processed.
	sharedOwner int64
	committed   int64
	example     string
}

func newLedger() *ledger {
	return &ledger{parts: map[int32]*partLedger{}, failures: map[string]int{}}
}

func (l *ledger) part(p int32) *partLedger {
	pl := l.parts[p]
	if pl == nil {
		pl = &partLedger{}
		l.parts[p] = pl
	}
	return pl
}

func grow(seen []uint16, o int64) []uint16 {
	if int64(len(seen)) <= o {
		seen = append(seen, make([]uint16, o+1-int64(len(seen))+1024)...)
	}
	return seen
}

func (l *ledger) deliver(who string, p int32, from, to int64, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, ledgerEvent{at: at, seq: len(l.events), who: who, p: p, from: from, to: to})
	pl := l.part(p)
	pl.seen = grow(pl.seen, to)
	for o := from; o <= to; o++ {
		pl.deliveries++
		if pl.seen[o] < 1<<16-1 {
			pl.seen[o]++
		}
	}
	for pl.contiguous < int64(len(pl.seen)) && pl.seen[pl.contiguous] > 0 {
		pl.contiguous++
	}
	l.got = append(l.got, consumed{partition: p, offset: from, at: at})
}

func (l *ledger) commit(who string, p int32, next int64, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, ledgerEvent{at: at, seq: len(l.events), commit: true, who: who, p: p, from: next})
	l.commits++
	if pl := l.part(p); next > pl.committed {
		pl.committed = next
	}
}

// own records that who was assigned (own) or gave up partitions ps.
func (l *ledger) own(who string, ps []int32, own bool, at time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range ps {
		e := ledgerEvent{at: at, seq: len(l.events), owns: true, who: who, p: p}
		if own {
			e.from = 1
		}
		l.events = append(l.events, e)
	}
}

func (l *ledger) commitFailed(who, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failedCommits++
	if len(msg) > 160 {
		msg = msg[:160]
	}
	l.failures[msg]++
}

func (l *ledger) problem(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.problems) < MaxProblems {
		l.problems = append(l.problems, fmt.Sprintf(format, args...))
	}
}

// judge replays the events in time order. A commit counts from the moment
// its member reported it acknowledged; a delivery reported in the same
// millisecond as a commit is not counted against it.
func (l *ledger) judge(ends map[int32]int64) map[int32]*partVerdict {
	l.mu.Lock()
	events := append([]ledgerEvent(nil), l.events...)
	l.mu.Unlock()
	sort.SliceStable(events, func(i, j int) bool {
		a, b := events[i].at.UnixMilli(), events[j].at.UnixMilli()
		if a != b {
			return a < b
		}
		if events[i].commit != events[j].commit {
			return !events[i].commit // the benefit of the doubt
		}
		return events[i].seq < events[j].seq
	})
	out := map[int32]*partVerdict{}
	seen := map[int32][]uint16{}
	maxFirst := map[int32]int64{}
	for p := range ends {
		out[p] = &partVerdict{}
		maxFirst[p] = -1
	}
	verdict := func(p int32) *partVerdict {
		v := out[p]
		if v == nil {
			v = &partVerdict{}
			out[p] = v
			maxFirst[p] = -1
		}
		return v
	}
	// Ownership: a member gives up a partition (revoke callback) before it
	// rejoins, and the partition goes to another member only in a later
	// generation, so the callbacks of two members never overlap on one
	// partition. In the same millisecond an end counts first.
	var owns []ledgerEvent
	for _, e := range events {
		if e.owns {
			owns = append(owns, e)
		}
	}
	sort.SliceStable(owns, func(i, j int) bool {
		a, b := owns[i].at.UnixMilli(), owns[j].at.UnixMilli()
		if a != b {
			return a < b
		}
		return owns[i].from < owns[j].from
	})
	type owner struct {
		who   string
		since time.Time
	}
	owners := map[int32]owner{}
	for _, e := range owns {
		cur, owned := owners[e.p]
		switch {
		case e.from == 0:
			if owned && cur.who == e.who {
				delete(owners, e.p)
			}
		case owned && cur.who != e.who:
			v := verdict(e.p)
			v.sharedOwner++
			if v.example == "" {
				v.example = fmt.Sprintf("%s was assigned the partition at %s while %s owned it (since %s)",
					e.who, e.at.Format("15:04:05.000"), cur.who, cur.since.Format("15:04:05.000"))
			}
			owners[e.p] = owner{e.who, e.at}
		case !owned:
			owners[e.p] = owner{e.who, e.at}
		}
	}
	for _, e := range events {
		if e.owns {
			continue
		}
		v := verdict(e.p)
		if e.commit {
			v.committed = max(v.committed, e.from)
			continue
		}
		s := grow(seen[e.p], e.to)
		seen[e.p] = s
		for o := e.from; o <= e.to; o++ {
			v.deliveries++
			if o < v.committed {
				v.afterCommit++
				if v.example == "" {
					v.example = fmt.Sprintf("%s delivered offset %d at %s, after the group had committed %d",
						e.who, o, e.at.Format("15:04:05.000"), v.committed)
				}
			}
			switch {
			case s[o] > 0 && o >= v.committed:
				v.beyond++
			case s[o] == 0 && o < maxFirst[e.p]:
				v.reordered++
				if v.example == "" {
					v.example = fmt.Sprintf("%s delivered offset %d for the first time at %s, after offset %d",
						e.who, o, e.at.Format("15:04:05.000"), maxFirst[e.p])
				}
			case s[o] == 0:
				maxFirst[e.p] = o
			}
			if s[o] < 1<<16-1 {
				s[o]++
			}
		}
	}
	for p, v := range out {
		for o := int64(0); o < ends[p]; o++ {
			if o >= int64(len(seen[p])) || seen[p][o] == 0 {
				v.lost++
			}
		}
	}
	return out
}

// progress returns the deliveries per partition so far.
func (l *ledger) progress() map[int32]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[int32]int64{}
	for p, pl := range l.parts {
		out[p] = pl.deliveries
	}
	return out
}

func (l *ledger) contiguous(p int32) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if pl := l.parts[p]; pl != nil {
		return pl.contiguous
	}
	return 0
}

// timeline returns the delivered ranges sorted by time.
func (l *ledger) timeline() []consumed {
	l.mu.Lock()
	got := append([]consumed(nil), l.got...)
	l.mu.Unlock()
	sort.SliceStable(got, func(i, j int) bool { return got[i].at.Before(got[j].at) })
	return got
}

// longestGap is the longest time in [start, end) during which partition p
// (any partition when p < 0) delivered nothing: gaps are clipped to the
// window, and the gap running at end counts up to the next delivery, so a
// consumer that resumes late is not missed.
func longestGap(got []consumed, p int32, start, end time.Time) time.Duration {
	var longest time.Duration
	prev := start
	for _, c := range got {
		if p >= 0 && c.partition != p {
			continue
		}
		if c.at.Before(start) {
			continue
		}
		longest = max(longest, c.at.Sub(prev))
		if !c.at.Before(end) {
			return longest
		}
		prev = c.at
	}
	return max(longest, time.Since(prev)) // nothing after the window yet
}

type clientFlip struct {
	verb    string
	start   time.Time
	took    time.Duration
	settled time.Duration // from the start of the command
	out     string
}

// run drives the test once the members are started: produce, wait for the
// group to settle with n members, flip, drain, check.
func (r *cutoverRig) run(n int) {
	t := r.t
	start := time.Now()
	r.checkAlive("start-up")
	r.produce()
	stopOnce := sync.OnceFunc(func() { close(r.stopProducer); r.produced.Wait() })
	defer stopOnce()

	// Every member owns partitions and every partition is delivering.
	r.waitSettled(r.src, n, "the group to form on the source", 60*time.Second, nil)
	settled := time.Now()
	t.Logf("group settled after %s: %s", settled.Sub(start).Round(time.Millisecond), r.assignment())
	time.Sleep(2 * time.Second) // a steady stretch to compare pauses with

	// Flip, and before the next flip wait until the group has settled on its
	// new home: every member rejoined, the assignment complete and stable,
	// every partition delivering. Cooperative members deliver all through a
	// rebalance, so deliveries alone do not say it is over. A flip while the
	// group still rebalances on its home is another case: the cutover counts
	// members from one DescribeGroups, which misses members still joining
	// (KIP-394 pending members, JoinGroups already at the coordinator), so it
	// neither waits for them nor removes them from the old group.
	var flips []clientFlip
	for i, verb := range []string{"cutover", "rollback", "cutover", "rollback", "cutover"} {
		before := r.led.progress()
		begin := time.Now()
		out, err := r.proxy.CLI(t, verb, "group", r.group)
		took := time.Since(begin)
		if err != nil {
			t.Fatalf("%s #%d: %v\n%s", verb, i+1, err, out)
		}
		f := clientFlip{verb: verb, start: begin, took: took, out: strings.TrimSpace(out)}
		home := r.dst
		if verb == "rollback" {
			home = r.src
		}
		r.waitSettled(home, n, fmt.Sprintf("the group to settle after %s #%d", verb, i+1), 30*time.Second, before)
		f.settled = time.Since(begin)
		flips = append(flips, f)
		r.checkAlive(fmt.Sprintf("%s #%d", verb, i+1))
	}

	stoppedAt := time.Now()
	stopOnce()
	r.prodMu.Lock()
	ends := map[int32]int64{}
	var sent int64
	for p, e := range r.ackedEnd {
		ends[p] = e
		sent += r.ackedCount[p]
		if r.ackedCount[p] != e {
			t.Errorf("partition %d: %d records acknowledged up to offset %d: the producer's offsets are not contiguous", p, r.ackedCount[p], e)
		}
	}
	r.prodMu.Unlock()
	r.waitFor("every produced record to be delivered", 30*time.Second, func() bool {
		for p, e := range ends {
			if r.led.contiguous(p) < e {
				return false
			}
		}
		return true
	})
	// Anything delivered twice, and the commit of the last batches, arrive now.
	r.waitFor("the last commits", 15*time.Second, func() bool {
		r.led.mu.Lock()
		defer r.led.mu.Unlock()
		for p, e := range ends {
			if r.led.part(p).committed < e {
				return false
			}
		}
		return true
	})
	time.Sleep(1500 * time.Millisecond)
	r.checkAlive("the end")
	for _, m := range r.members {
		m.mu.Lock()
		if m.starts != 1 {
			t.Errorf("%s (pid %d) started %d times", m.name, m.pid, m.starts)
		}
		m.mu.Unlock()
	}

	// Report. A flip's pause is the longest time without a delivery from
	// its command's start to the next flip's (or, for the last one, to the
	// end of producing): a rebalance it causes after the group first
	// settled still counts.
	got := r.led.timeline()
	var baseline time.Duration
	for p := int32(0); p < cutoverPartitions; p++ {
		baseline = max(baseline, longestGap(got, p, settled, flips[0].start))
	}
	t.Logf("steady state before the first flip: longest gap of a partition %s", baseline.Round(time.Millisecond))
	var worst time.Duration
	for i, f := range flips {
		end := stoppedAt
		if i+1 < len(flips) {
			end = flips[i+1].start
		}
		group := longestGap(got, -1, f.start, end)
		var part time.Duration
		var which int32
		for p := int32(0); p < cutoverPartitions; p++ {
			if g := longestGap(got, p, f.start, end); g > part {
				part, which = g, p
			}
		}
		worst = max(worst, part)
		t.Logf("%-8s command %5s, settled %6s, pause: group %6s, longest partition %6s (p%d) | %s", f.verb,
			f.took.Round(time.Millisecond), f.settled.Round(time.Millisecond), group.Round(time.Millisecond),
			part.Round(time.Millisecond), which, firstLine(f.out))
	}

	r.report(ends, sent)
	t.Logf("total %s; worst partition pause %s", time.Since(start).Round(time.Millisecond), worst.Round(time.Millisecond))
	r.checkTargetCommit(ends)
}

// report logs and asserts the per-partition counts.
func (r *cutoverRig) report(ends map[int32]int64, sent int64) {
	t := r.t
	verdict := r.led.judge(ends)
	r.led.mu.Lock()
	defer r.led.mu.Unlock()
	var lost, afterCommit, beyond, reordered, deliveries int64
	for p := int32(0); p < cutoverPartitions; p++ {
		v := verdict[p]
		t.Logf("partition %d: produced %d, delivered %d, lost %d, delivered again after a commit %d, redelivered beyond the last commit %d, reordered %d, owned by two members at once %d, committed %d%s",
			p, ends[p], v.deliveries, v.lost, v.afterCommit, v.beyond, v.reordered, v.sharedOwner, v.committed, exampleSuffix(v.example))
		lost += v.lost
		afterCommit += v.afterCommit
		beyond += v.beyond
		reordered += v.reordered
		deliveries += v.deliveries
		if v.lost+v.afterCommit+v.reordered+v.sharedOwner != 0 {
			t.Errorf("partition %d: lost %d, delivered again after a commit %d, reordered %d, owned by two members at once %d: want all 0",
				p, v.lost, v.afterCommit, v.reordered, v.sharedOwner)
		}
	}
	var fails []string
	for msg, n := range r.led.failures {
		fails = append(fails, fmt.Sprintf("%dx %s", n, msg))
	}
	sort.Strings(fails)
	t.Logf("%d members, %d records produced, %d deliveries: lost %d, delivered again after a commit %d, redelivered beyond the last commit %d, reordered %d; %d commits, %d failed%s",
		len(r.members), sent, deliveries, lost, afterCommit, beyond, reordered, r.led.commits, r.led.failedCommits, bulletList(fails))
	for _, m := range r.members {
		m.mu.Lock()
		t.Logf("%s: pid %d alive, %d assignment and %d revocation callbacks, %d lost, %d client errors%s", m.name, m.pid,
			m.assigns, m.revokes, m.lost, len(m.errs), bulletList(firstN(m.errs, 5)))
		m.mu.Unlock()
	}
	if len(r.led.problems) > 0 {
		t.Errorf("problems reading the consumers' output:%s", bulletList(r.led.problems))
	}
}

// checkTargetCommit asserts that the group, which ended on the target,
// committed the target's end offsets there (once the mirror has everything),
// so a consumer pointed straight at the target resumes exactly there.
func (r *cutoverRig) checkTargetCommit(ends map[int32]int64) {
	t, ctx := r.t, r.ctx
	adm := directAdmin(t, r.dst)
	var want int64
	for _, e := range ends {
		want += e
	}
	r.waitFor("the mirror to copy everything", 30*time.Second, func() bool {
		lo, err := adm.ListEndOffsets(ctx, r.topic)
		if err != nil || lo.Error() != nil {
			return false
		}
		var total int64
		lo.Each(func(o kadm.ListedOffset) { total += o.Offset })
		return total >= want
	})
	targetEnds := endOffsets(t, r.dst, r.topic)
	committed := committedOffsets(t, r.dst, r.group, r.topic)
	for p, e := range targetEnds {
		if committed[p] != e {
			t.Errorf("partition %d: committed on the target at %d, target end %d", p, committed[p], e)
		}
	}
	t.Logf("committed on the target (direct): %v = the target's end offsets", committed)
}

// waitSettled waits until the group is Stable on home with n members and
// stays so (same members) for half a second, every member reports owning
// partitions and every partition has exactly one owner, and every partition
// delivered 150 records more than in before (nil: 200 in all).
func (r *cutoverRig) waitSettled(home *kafkatest.Cluster, n int, what string, d time.Duration, before map[int32]int64) {
	r.t.Helper()
	adm := r.srcAdm
	if home == r.dst {
		adm = r.dstAdm
	}
	var last string
	stableSince := time.Time{}
	r.waitFor(what, d, func() bool {
		prog := r.led.progress()
		for p := int32(0); p < cutoverPartitions; p++ {
			if prog[p] < before[p]+150 || (before == nil && prog[p] < 200) {
				return false
			}
		}
		owners := map[int32]int{}
		for _, m := range r.members {
			ps := m.ownedList()
			if len(ps) == 0 {
				return false
			}
			for _, p := range ps {
				owners[p]++
			}
		}
		for p := int32(0); p < cutoverPartitions; p++ {
			if owners[p] != 1 {
				return false
			}
		}
		ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
		defer cancel()
		described, err := adm.DescribeGroups(ctx, r.group)
		if err != nil {
			return false
		}
		g := described[r.group]
		var ids []string
		for _, m := range g.Members {
			ids = append(ids, m.MemberID)
		}
		sort.Strings(ids)
		now := strings.Join(ids, ",")
		r.note = fmt.Sprintf("; group on its home: %s with %d members", g.State, len(g.Members))
		if g.Err != nil || g.State != "Stable" || len(g.Members) != n || now != last {
			last, stableSince = now, time.Time{}
			return false
		}
		if stableSince.IsZero() {
			stableSince = time.Now()
		}
		return time.Since(stableSince) >= 500*time.Millisecond
	})
	r.note = ""
}

func (r *cutoverRig) checkAlive(when string) {
	for _, m := range r.members {
		if !m.alive() {
			m.mu.Lock()
			last := m.lastLine
			m.mu.Unlock()
			r.t.Fatalf("%s (pid %d) is not running at %s: %v (last non-JSON output %q)\nstderr:\n%s",
				m.name, m.pid, when, m.exitErr, last, m.stderrTail(3000))
		}
	}
}

func (r *cutoverRig) waitFor(what string, d time.Duration, cond func() bool) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, d)
	defer cancel()
	for !cond() {
		for _, m := range r.members {
			if !m.alive() {
				r.checkAlive("waiting for " + what)
			}
		}
		if ctx.Err() != nil {
			r.t.Fatalf("timed out after %s waiting for %s; deliveries per partition %v, assignment %s%s", d, what, r.led.progress(), r.assignment(), r.note)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *cutoverRig) assignment() string {
	var parts []string
	for _, m := range r.members {
		parts = append(parts, fmt.Sprintf("%s(pid %d) %v", m.name, m.pid, m.ownedList()))
	}
	return strings.Join(parts, ", ")
}

func grepLines(s, substr string, n int) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return strings.Join(out, "\n")
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func exampleSuffix(s string) string {
	if s == "" {
		return ""
	}
	return " (first: " + s + ")"
}

func bulletList(items []string) string {
	var b strings.Builder
	for _, s := range items {
		b.WriteString("\n  - ")
		b.WriteString(s)
	}
	return b.String()
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
