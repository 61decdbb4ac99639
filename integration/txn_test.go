package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/kmigrate/kmigrate/internal/proxytest"
)

// TestTopicCutoverTransactions flips a topic while a franz-go transactional
// producer commits a transaction of 20 records after another through the
// proxy, and a read_committed group reads. The transaction open at the flip
// is aborted (TRANSACTION_ABORTABLE) and run again; later transactions run
// on the target under the producer id the proxy got there. Every committed
// record is read once, in order; no aborted record is read; the producer
// never meets a fatal error. The target's log, read directly with
// read_committed, holds every committed record once.
func TestTopicCutoverTransactions(t *testing.T) {
	src, dst := cluster(t), target.Get(t)
	topic, group := uniqueName(t, "topic"), uniqueName(t, "group")
	createTopicOn(t, src.Bootstrap(), topic, 3)
	proxy := proxytest.Start(t, "--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", topic, "--data-dir", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	txp := startTxnProducer(t, ctx, proxy.Addr, topic, uniqueName(t, "txn"))
	defer txp.stop()
	cons := newSeqConsumer(t, ctx, proxy.Addr, topic, group, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	defer cons.stop()
	began := time.Now()
	waitFor(t, ctx, "the mirror to map the topic and transactions to flow", func() bool {
		out, err := proxy.CLI(t, "verify", "--topic", topic, "--records", "0")
		if time.Since(began) > 30*time.Second {
			t.Fatalf("after 30 s: verify %v\n%s\ncommitted %d, consumed %d", err, out, txp.committedCount(), cons.count())
		}
		return err == nil && txp.committedCount() > 1000 && cons.count() > 500
	})
	for _, step := range [][]string{{"cutover", "group", group}, {"cutover", "topic", topic}} {
		start := time.Now()
		out, err := proxy.CLI(t, step...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", step, err, out)
		}
		n, c := cons.count(), txp.committedCount()
		waitFor(t, ctx, "transactions and consumption after "+strings.Join(step, " "), func() bool {
			return cons.count() > n+1000 && txp.committedCount() > c+1000
		})
		t.Logf("%s: %s (took %s)", strings.Join(step, " "), strings.TrimSpace(out), time.Since(start).Round(time.Millisecond))
	}
	committed, aborted, fatal := txp.stop()
	if fatal != nil {
		t.Fatalf("the transactional producer met a fatal error: %v", fatal)
	}
	waitFor(t, ctx, "every committed record consumed", func() bool { return cons.count() >= len(committed) })
	time.Sleep(time.Second)
	got, afterCommit := cons.stop()

	want := map[int]bool{}
	for _, s := range committed {
		want[s] = true
	}
	seen := map[int]int{}
	abortedSeen := 0
	for _, c := range got {
		seen[c.seq]++
		if !want[c.seq] {
			abortedSeen++
		}
	}
	lost, dup := 0, 0
	for s := range want {
		switch seen[s] {
		case 0:
			lost++
		case 1:
		default:
			dup += seen[s] - 1
		}
	}
	_, _, reordered := countDeliveries(got, 0)
	t.Logf("%d records committed in transactions, %d transactions aborted and run again; %d deliveries: lost %d, duplicated %d, delivered again after a commit %d, aborted records read %d, reordered %d",
		len(committed), aborted, len(got), lost, dup, afterCommit, abortedSeen, reordered)
	if lost != 0 || dup != 0 || afterCommit != 0 || abortedSeen != 0 || reordered != 0 {
		t.Fatalf("lost %d, duplicated %d, delivered again after a commit %d, aborted records read %d, reordered %d: want 0", lost, dup, afterCommit, abortedSeen, reordered)
	}

	// The target, read directly with read_committed.
	dcl, err := kgo.NewClient(kgo.SeedBrokers(dst.Bootstrap()))
	if err != nil {
		t.Fatal(err)
	}
	ends, err := kadm.NewClient(dcl).ListEndOffsets(ctx, topic)
	dcl.Close()
	if err != nil {
		t.Fatal(err)
	}
	rcl, err := kgo.NewClient(kgo.SeedBrokers(dst.Bootstrap()), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer rcl.Close()
	direct := map[int]int{}
	deadline := time.Now().Add(30 * time.Second)
	for len(direct) < len(want) && time.Now().Before(deadline) {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		fs := rcl.PollFetches(pctx)
		pcancel()
		fs.EachRecord(func(r *kgo.Record) {
			s, _ := strconv.Atoi(string(r.Value))
			direct[s]++
		})
	}
	_ = ends
	dlost, ddup, dextra := 0, 0, 0
	for s := range want {
		switch direct[s] {
		case 0:
			dlost++
		case 1:
		default:
			ddup += direct[s] - 1
		}
	}
	for s := range direct {
		if !want[s] {
			dextra++
		}
	}
	t.Logf("target read directly (read_committed): %d records: lost %d, duplicated %d, aborted records visible %d", len(direct), dlost, ddup, dextra)
	if dlost != 0 || ddup != 0 || dextra != 0 {
		t.Fatalf("target log: lost %d, duplicated %d, aborted visible %d: want 0", dlost, ddup, dextra)
	}
}

// txnProducer commits transactions of 20 sequence numbers in a loop; a
// transaction that fails is aborted and the same numbers run again in the
// next one, so each number is committed exactly once.
type txnProducer struct {
	cl        *kgo.Client
	done      chan struct{}
	wg        sync.WaitGroup
	mu        sync.Mutex
	committed []int
	aborted   int
	fatal     error
}

func startTxnProducer(t *testing.T, ctx context.Context, addr, topic, txnID string) *txnProducer {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.TransactionalID(txnID),
		kgo.TransactionTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	p := &txnProducer{cl: cl, done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		next := 0
		for {
			select {
			case <-p.done:
				return
			default:
			}
			if err := cl.BeginTransaction(); err != nil {
				p.setFatal(err)
				return
			}
			batch := make([]int, 20)
			var produceErr error
			var pmu sync.Mutex
			for i := range batch {
				batch[i] = next + i
				cl.Produce(ctx, &kgo.Record{Key: []byte(strconv.Itoa(batch[i] % 9)), Value: []byte(strconv.Itoa(batch[i]))}, func(_ *kgo.Record, err error) {
					if err != nil {
						pmu.Lock()
						produceErr = err
						pmu.Unlock()
					}
				})
				// A transaction stays open ~100 ms: a flip meets one.
				time.Sleep(5 * time.Millisecond)
			}
			flushErr := cl.Flush(ctx)
			pmu.Lock()
			failed := produceErr != nil || flushErr != nil
			pmu.Unlock()
			commit := kgo.TryCommit
			if failed {
				commit = kgo.TryAbort
			}
			err := cl.EndTransaction(ctx, commit)
			switch {
			case err == nil && commit == kgo.TryCommit:
				p.mu.Lock()
				p.committed = append(p.committed, batch...)
				p.mu.Unlock()
				next += len(batch)
			case err == nil || isAbortable(err):
				// Aborted (or the commit was refused): the same numbers go
				// again in the next transaction.
				if err != nil {
					if aerr := cl.EndTransaction(ctx, kgo.TryAbort); aerr != nil && !isAbortable(aerr) {
						p.setFatal(aerr)
						return
					}
				}
				p.mu.Lock()
				p.aborted++
				p.mu.Unlock()
				if failed {
					t.Logf("transaction of %d..%d aborted: produce %v, flush %v", batch[0], batch[len(batch)-1], produceErr, flushErr)
				}
			default:
				p.setFatal(err)
				return
			}
		}
	}()
	return p
}

func isAbortable(err error) bool {
	var ke interface{ Error() string }
	return errors.As(err, &ke) && (strings.Contains(err.Error(), "TRANSACTION_ABORTABLE") || strings.Contains(err.Error(), "abort"))
}

func (p *txnProducer) setFatal(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fatal == nil {
		p.fatal = err
	}
}

func (p *txnProducer) committedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.committed)
}

func (p *txnProducer) stop() (committed []int, aborted int, fatal error) {
	select {
	case <-p.done:
	default:
		close(p.done)
	}
	p.wg.Wait()
	p.cl.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.committed, p.aborted, p.fatal
}

// TestExactlyOncePipelineAcrossFlips runs a consume-transform-produce
// pipeline (franz-go GroupTransactSession: read_committed from topic in,
// produce to topic out and commit its offsets in one transaction) through
// the proxy while its group and both topics move to the target. Between the
// group's flip and the output topic's, its transactions are aborted (the
// group and the transaction are on different clusters) and run again once
// both are on the target. In the end the output, read directly from the
// target with read_committed, holds every input record exactly once.
func TestExactlyOncePipelineAcrossFlips(t *testing.T) {
	src, dst := cluster(t), target.Get(t)
	in, out := uniqueName(t, "in"), uniqueName(t, "out")
	group, outGroup := uniqueName(t, "pipeline"), uniqueName(t, "reader")
	createTopicOn(t, src.Bootstrap(), in, 3)
	createTopicOn(t, src.Bootstrap(), out, 3)
	proxy := proxytest.Start(t, "--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", "^("+in+"|"+out+")$", "--data-dir", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	prod := newSeqProducer(t, ctx, proxy.Addr, in, 0)
	defer prod.stop()

	sess, err := kgo.NewGroupTransactSession(kgo.SeedBrokers(proxy.Addr), kgo.TransactionalID(uniqueName(t, "txn")),
		kgo.ConsumerGroup(group), kgo.ConsumeTopics(in), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DefaultProduceTopic(out),
		kgo.HeartbeatInterval(500*time.Millisecond), kgo.TransactionTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		commits  int
		aborts   int
		pipeDone = make(chan struct{})
		stopPipe = make(chan struct{})
	)
	go func() {
		defer close(pipeDone)
		for {
			select {
			case <-stopPipe:
				return
			default:
			}
			pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
			fs := sess.PollFetches(pctx)
			pcancel()
			if err := sess.Begin(); err != nil {
				t.Errorf("begin: %v", err)
				return
			}
			fs.EachRecord(func(r *kgo.Record) {
				sess.Produce(ctx, &kgo.Record{Key: r.Key, Value: r.Value}, nil)
			})
			committed, err := sess.End(ctx, kgo.TryCommit)
			mu.Lock()
			if committed {
				commits++
			} else {
				aborts++
			}
			mu.Unlock()
			if err != nil && ctx.Err() == nil {
				t.Logf("pipeline transaction not committed: %v", err)
			}
		}
	}()
	reader := newSeqConsumer(t, ctx, proxy.Addr, out, outGroup, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	defer reader.stop()
	waitFor(t, ctx, "the mirror to map both topics and the pipeline to flow", func() bool {
		_, err1 := proxy.CLI(t, "verify", "--topic", in, "--records", "0")
		_, err2 := proxy.CLI(t, "verify", "--topic", out, "--records", "0")
		return err1 == nil && err2 == nil && reader.count() > 1000
	})
	steps := [][]string{{"cutover", "group", outGroup}, {"cutover", "group", group}, {"cutover", "topic", out}, {"cutover", "topic", in}}
	for _, step := range steps {
		start := time.Now()
		res, err := proxy.CLI(t, step...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", step, err, res)
		}
		t.Logf("%s: took %s", strings.Join(step, " "), time.Since(start).Round(time.Millisecond))
	}
	n := reader.count()
	waitFor(t, ctx, "the pipeline to flow with everything on the target", func() bool { return reader.count() > n+1000 })
	sent := prod.stop()
	waitFor(t, ctx, "every input record through the pipeline", func() bool { return reader.count() >= sent })
	close(stopPipe)
	<-pipeDone
	sess.Close()
	time.Sleep(time.Second)
	got, _ := reader.stop()
	lost, dup, _ := countDeliveries(got, sent)
	mu.Lock()
	t.Logf("%d input records; pipeline: %d transactions committed, %d aborted; output read through the proxy: %d records, lost %d, duplicated %d",
		sent, commits, aborts, len(got), lost, dup)
	mu.Unlock()
	if lost != 0 || dup != 0 {
		t.Fatalf("output: lost %d, duplicated %d: want 0 (exactly once)", lost, dup)
	}
	direct := readCommitted(t, ctx, dst.Bootstrap(), out, sent)
	dlost, ddup := 0, 0
	for i := 0; i < sent; i++ {
		switch direct[i] {
		case 0:
			dlost++
		case 1:
		default:
			ddup += direct[i] - 1
		}
	}
	t.Logf("output read directly from the target (read_committed): lost %d, duplicated %d", dlost, ddup)
	if dlost != 0 || ddup != 0 {
		t.Fatalf("target output: lost %d, duplicated %d: want 0", dlost, ddup)
	}
}

// readCommitted counts each sequence number in topic, read with
// read_committed from addr until want distinct ones or 30 s.
func readCommitted(t *testing.T, ctx context.Context, addr, topic string, want int) map[int]int {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[int]int{}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < want && time.Now().Before(deadline) {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		pcancel()
		fs.EachRecord(func(r *kgo.Record) {
			s, _ := strconv.Atoi(string(r.Value))
			seen[s]++
		})
	}
	return seen
}

// TestExactlyOnceJavaCopierAcrossFlips: Kafka's own TransactionalMessageCopier
// (the Java client: read_committed consumer in a group, transactional
// producer, offsets sent with the group metadata) copies a topic through the
// proxy while its group and both topics move to the target. It must finish
// with no fatal error, and the output, read directly from the target with
// read_committed, must hold every input record exactly once.
func TestExactlyOnceJavaCopierAcrossFlips(t *testing.T) {
	src, dst := cluster(t), target.Get(t)
	in, out, group := uniqueName(t, "in"), uniqueName(t, "out"), uniqueName(t, "copier")
	createTopicOn(t, src.Bootstrap(), in, 1)
	createTopicOn(t, src.Bootstrap(), out, 1)
	const records = 8_000
	direct, err := kgo.NewClient(kgo.SeedBrokers(src.Bootstrap()), kgo.DefaultProduceTopic(in), kgo.ProducerLinger(5*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	for i := 0; i < records; i++ {
		direct.Produce(ctx, &kgo.Record{Value: []byte(strconv.Itoa(i))}, nil)
	}
	if err := direct.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	direct.Close()
	proxy := proxytest.Start(t, "--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", "^("+in+"|"+out+")$", "--data-dir", t.TempDir())
	waitFor(t, ctx, "the mirror to map both topics", func() bool {
		_, err1 := proxy.CLI(t, "verify", "--topic", in, "--records", "0")
		_, err2 := proxy.CLI(t, "verify", "--topic", out, "--records", "0")
		return err1 == nil && err2 == nil
	})

	cmd, err := kafkatest.ToolCmd(ctx, kafkatest.MainTxnCopier, "--broker-list", proxy.Addr,
		"--input-topic", in, "--input-partition", "0", "--output-topic", out, "--consumer-group", group,
		"--group-mode", "--use-group-metadata", "--transactional-id", uniqueName(t, "txn"), "--transaction-size", "20")
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var remaining atomic.Int64
	remaining.Store(records)
	lines := make(chan struct{})
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev struct {
				Remaining *int64 `json:"remaining"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Remaining != nil {
				remaining.Store(*ev.Remaining)
			}
		}
	}()
	waitFor(t, ctx, "the copier to get going", func() bool { return remaining.Load() < records-1000 })
	for _, step := range [][]string{{"cutover", "group", group}, {"cutover", "topic", out}, {"cutover", "topic", in}} {
		res, err := proxy.CLI(t, step...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", step, err, res)
		}
		t.Logf("%s done, %d records left to copy", strings.Join(step, " "), remaining.Load())
	}
	werr := cmd.Wait()
	<-lines
	if werr != nil {
		t.Fatalf("the Java copier failed: %v\n%s", werr, tailString(stderr.String(), 3000))
	}
	seen := readCommitted(t, ctx, dst.Bootstrap(), out, records)
	lost, dup := 0, 0
	for i := 0; i < records; i++ {
		switch seen[i] {
		case 0:
			lost++
		case 1:
		default:
			dup += seen[i] - 1
		}
	}
	aborts := strings.Count(stderr.String(), "abort")
	t.Logf("Java copier: %d records copied across the flips; output read directly from the target (read_committed): lost %d, duplicated %d; %d log lines mention an abort", records, lost, dup, aborts)
	if lost != 0 || dup != 0 {
		t.Fatalf("output: lost %d, duplicated %d: want 0 (exactly once)\n%s", lost, dup, tailString(stderr.String(), 3000))
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
