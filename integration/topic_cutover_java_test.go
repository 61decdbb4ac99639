package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/kmigrate/kmigrate/internal/proxytest"
)

// TestTopicCutoverJavaProducer flips a topic's producers while Kafka's own
// VerifiableProducer (the Java client: idempotent, acks=all, five requests
// in flight) writes through the proxy, and a franz-go group reads. The
// producer must see no error, and every offset it was told for a record
// must be the offset the consumer reads that record at: the target's
// answers are translated exactly into the virtual log.
func TestTopicCutoverJavaProducer(t *testing.T) {
	if _, err := exec.LookPath("java"); err != nil {
		t.Fatalf("java is required for the Java producer's topic cutover test (JDK 17+ on PATH): %v", err)
	}
	src, dst := cluster(t), target.Get(t)
	topic, group := uniqueName(t, "topic"), uniqueName(t, "group")
	createTopicOn(t, src.Bootstrap(), topic, 3)
	proxy := proxytest.Start(t, "--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", topic, "--data-dir", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	cfg := filepath.Join(t.TempDir(), "producer.properties")
	if err := os.WriteFile(cfg, []byte("enable.idempotence=true\nacks=all\nretries=2147483647\nmax.in.flight.requests.per.connection=5\nlinger.ms=5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	prodCtx, stopProducer := context.WithCancel(ctx)
	defer stopProducer()
	cmd, err := kafkatest.ToolCmd(prodCtx, kafkatest.MainVerifiableProd,
		"--bootstrap-server", proxy.Addr, "--topic", topic, "--throughput", "1000", "--max-messages", "-1",
		"--repeating-keys", "9", "--producer.config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	type ack struct {
		partition int32
		offset    int64
		at        time.Time
	}
	var (
		mu     sync.Mutex
		acks   = map[int]ack{} // value → where the producer was told it went
		errs   []string
		reader sync.WaitGroup
	)
	reader.Add(1)
	go func() {
		defer reader.Done()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev struct {
				Name      string `json:"name"`
				Value     string `json:"value"`
				Partition int32  `json:"partition"`
				Offset    int64  `json:"offset"`
				Exception string `json:"exception"`
				Message   string `json:"message"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) != nil {
				continue
			}
			mu.Lock()
			switch ev.Name {
			case "producer_send_success":
				v, _ := strconv.Atoi(ev.Value)
				acks[v] = ack{ev.Partition, ev.Offset, time.Now()}
			case "producer_send_error":
				errs = append(errs, ev.Exception+": "+ev.Message)
			}
			mu.Unlock()
		}
	}()
	acked := func() int { mu.Lock(); defer mu.Unlock(); return len(acks) }

	cons := newSeqConsumer(t, ctx, proxy.Addr, topic, group)
	defer cons.stop()
	startWait := time.Now()
	waitFor(t, ctx, "the Java producer and the group to get going", func() bool {
		if time.Since(startWait) > time.Minute {
			t.Fatalf("after a minute: %d acknowledged, %d consumed; producer stderr:\n%s", acked(), cons.count(), stderr.String())
		}
		return acked() > 2000 && cons.count() > 1000
	})

	if out, err := proxy.CLI(t, "cutover", "group", group); err != nil {
		t.Fatalf("cutover group: %v\n%s", err, out)
	}
	flipStart := time.Now()
	res, err := proxy.CLI(t, "cutover", "topic", topic)
	if err != nil {
		t.Fatalf("cutover topic: %v\n%s", err, res)
	}
	flipTook := time.Since(flipStart)
	t.Logf("%s", strings.TrimSpace(res))
	n := acked()
	waitFor(t, ctx, "the Java producer to go on after the flip", func() bool { return acked() > n+3000 })

	stopProducer()
	cmd.Wait()
	reader.Wait()
	mu.Lock()
	total := len(acks)
	mu.Unlock()
	waitFor(t, ctx, "every acknowledged record consumed", func() bool { return cons.count() >= total })
	time.Sleep(time.Second)
	got, afterCommit := cons.stop()

	// Every acknowledged record, read once, at the offset the producer was
	// told.
	seen := map[int]int{}
	wrongOffset := 0
	for _, c := range got {
		seen[c.seq]++
		if a, ok := acks[c.seq]; ok && (a.partition != c.partition || a.offset != c.offset) {
			wrongOffset++
			if wrongOffset <= 5 {
				t.Errorf("value %d: producer told %d/%d, consumer read it at %d/%d", c.seq, a.partition, a.offset, c.partition, c.offset)
			}
		}
	}
	lost, dup := 0, 0
	for v := range acks {
		switch seen[v] {
		case 0:
			lost++
		case 1:
		default:
			dup += seen[v] - 1
		}
	}
	_, _, reordered := countDeliveries(got, 0)
	// The producer's pause: the longest gap between acknowledgements
	// around the flip.
	var times []time.Time
	for _, a := range acks {
		times = append(times, a.at)
	}
	sort.Slice(times, func(i, j int) bool { return times[i].Before(times[j]) })
	var pause time.Duration
	for i := 1; i < len(times); i++ {
		if times[i].After(flipStart.Add(-time.Second)) && times[i-1].Before(flipStart.Add(flipTook+2*time.Second)) {
			pause = max(pause, times[i].Sub(times[i-1]))
		}
	}
	t.Logf("Java producer: %d acknowledged, %d send errors; consumer: %d deliveries: lost %d, duplicated %d, delivered again after a commit %d, reordered %d, at another offset than acknowledged %d; topic flip %s, producer pause %s",
		total, len(errs), len(got), lost, dup, afterCommit, reordered, wrongOffset, flipTook.Round(time.Millisecond), pause.Round(time.Millisecond))
	if len(errs) > 0 {
		t.Errorf("the Java producer saw %d errors, first: %s", len(errs), errs[0])
	}
	if lost != 0 || dup != 0 || afterCommit != 0 || reordered != 0 || wrongOffset != 0 {
		t.Fatalf("lost %d, duplicated %d, delivered again after a commit %d, reordered %d, wrong offsets %d: want 0\n%s", lost, dup, afterCommit, reordered, wrongOffset, stderr.String())
	}
	checkDescribeProducersAfterFlip(t, ctx, proxy.Addr, dst.Bootstrap(), topic)
	checkDeleteRecordsAfterFlip(t, ctx, proxy.Addr, src.Bootstrap(), dst.Bootstrap(), topic)
}

// checkDescribeProducersAfterFlip runs kafka-transactions describe-producers
// through the proxy on partition 0 of a flipped topic: it must list the
// producers the target knows (the ids the proxy got there), not the
// source's.
func checkDescribeProducersAfterFlip(t *testing.T, ctx context.Context, proxyAddr, dstAddr, topic string) {
	t.Helper()
	out, errOut, err := kafkatest.Tool(ctx, kafkatest.MainTransactions, "--bootstrap-server", proxyAddr,
		"describe-producers", "--topic", topic, "--partition", "0")
	if err != nil {
		t.Fatalf("kafka-transactions describe-producers through the proxy: %v\n%s\n%s", err, out, errOut)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(dstAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	described, err := kadm.NewClient(cl).DescribeProducers(ctx, kadm.TopicsSet{topic: {0: {}}})
	if err != nil {
		t.Fatalf("describe producers on the target: %v", err)
	}
	var ids []string
	for _, p := range described.SortedProducers() {
		ids = append(ids, strconv.FormatInt(p.ProducerID, 10))
	}
	if len(ids) == 0 {
		t.Fatalf("the target knows no producer of %s/0 after the flip", topic)
	}
	var listed []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 0 {
			listed = append(listed, f[0])
		}
	}
	sort.Strings(listed)
	sort.Strings(ids)
	if strings.Join(listed, ",") != strings.Join(ids, ",") {
		t.Fatalf("describe-producers through the proxy lists %v, the target's producers are %v\n%s", listed, ids, out)
	}
	t.Logf("describe-producers through the proxy: the target's producers %v", listed)
}

// checkDeleteRecordsAfterFlip runs Kafka's kafka-delete-records tool
// through the proxy on partition 0 of a flipped topic, ten records before
// its end: the tool is told the virtual log start it asked for, the proxy's
// earliest offset and first record are there, the target's log start moved,
// and the source's copy is left alone.
func checkDeleteRecordsAfterFlip(t *testing.T, ctx context.Context, proxyAddr, srcAddr, dstAddr, topic string) {
	t.Helper()
	viaProxy, err := kgo.NewClient(kgo.SeedBrokers(proxyAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer viaProxy.Close()
	adm := kadm.NewClient(viaProxy)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("end offsets through the proxy: %v", err)
	}
	end, _ := ends.Lookup(topic, 0)
	deleteBefore := end.Offset - 10
	spec := filepath.Join(t.TempDir(), "delete.json")
	js := fmt.Sprintf(`{"version":1,"partitions":[{"topic":%q,"partition":0,"offset":%d}]}`, topic, deleteBefore)
	if err := os.WriteFile(spec, []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
	srcStartBefore := startOffset(t, ctx, srcAddr, topic)
	out, errOut, err := kafkatest.Tool(ctx, kafkatest.MainDeleteRecords, "--bootstrap-server", proxyAddr, "--offset-json-file", spec)
	if err != nil {
		t.Fatalf("kafka-delete-records through the proxy: %v\n%s\n%s", err, out, errOut)
	}
	if want := fmt.Sprintf("low_watermark: %d", deleteBefore); !strings.Contains(out, want) {
		t.Fatalf("kafka-delete-records: want %q in its output, got:\n%s", want, out)
	}
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("start offsets through the proxy: %v", err)
	}
	if got, _ := starts.Lookup(topic, 0); got.Offset != deleteBefore {
		t.Fatalf("earliest offset through the proxy after deleting before %d: %d", deleteBefore, got.Offset)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(proxyAddr),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	fs := cl.PollFetches(ctx)
	if err := fs.Err(); err != nil {
		t.Fatalf("read partition 0 from its start through the proxy: %v", err)
	}
	recs := fs.Records()
	if len(recs) == 0 || recs[0].Offset != deleteBefore {
		t.Fatalf("first record through the proxy after the deletion: %d records, first at %v; want %d", len(recs), firstOffset(recs), deleteBefore)
	}
	dstStart, srcStart := startOffset(t, ctx, dstAddr, topic), startOffset(t, ctx, srcAddr, topic)
	if dstStart <= 0 || srcStart != srcStartBefore {
		t.Fatalf("log starts after the deletion: target %d (want > 0), source %d (want unchanged %d)", dstStart, srcStart, srcStartBefore)
	}
	t.Logf("kafka-delete-records through the proxy before virtual offset %d: target log start %d, source untouched (%d), first record read at %d", deleteBefore, dstStart, srcStart, recs[0].Offset)
}

// startOffset is partition 0's log start offset, asked of a broker directly.
func startOffset(t *testing.T, ctx context.Context, addr, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	starts, err := kadm.NewClient(cl).ListStartOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("start offsets at %s: %v", addr, err)
	}
	o, _ := starts.Lookup(topic, 0)
	return o.Offset
}

func firstOffset(recs []*kgo.Record) any {
	if len(recs) == 0 {
		return "none"
	}
	return recs[0].Offset
}
