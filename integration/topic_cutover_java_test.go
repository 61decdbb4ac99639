package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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
}
