package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmigrate/kmigrate/internal/proxytest"
	"github.com/kmigrate/kmigrate/protocol"
)

// TestNonReadingClientsCannotGrowMemory attacks a proxy process with
// clients that pipeline 128 large fetches each and never read an answer,
// while a well-behaved franz-go client produces and consumes through the
// same proxy. Each attacker's fetch answer is 24 MiB, so without a bound
// the proxy would hold 8 × 128 × 24 MiB = 24 GiB. With the budget
// (--max-buffer-bytes 256 MiB, --max-conn-buffer-bytes 16 MiB) it holds one
// answer per attacker: the proxy's peak RSS (VmHWM) must stay under
// 400 MiB, the good client must get every record, the reservations must
// be given back once the attackers leave, and connections past
// --max-connections-per-ip must be closed at once.
func TestNonReadingClientsCannotGrowMemory(t *testing.T) {
	c := cluster(t)
	ctx := testCtx(t, 4*time.Minute)
	bulky, topic := uniqueName(t, "bulky"), uniqueName(t, "topic")
	createTopic(t, c, bulky, 1)
	createTopic(t, c, topic, 3)

	// 24 MiB of history the attackers fetch, written directly.
	direct, err := kgo.NewClient(kgo.SeedBrokers(c.Bootstrap()), kgo.ProducerBatchMaxBytes(1<<20),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	var bulk []*kgo.Record
	for i := 0; i < 2400; i++ {
		value := make([]byte, 10<<10)
		rand.Read(value) // incompressible: the answers stay 24 MiB
		bulk = append(bulk, &kgo.Record{Topic: bulky, Value: value})
	}
	if err := direct.ProduceSync(ctx, bulk...).FirstErr(); err != nil {
		t.Fatalf("produce the attackers' history: %v", err)
	}

	// The attack means something only if each answer is large.
	if n := answerBytes(t, c.Bootstrap(), fetchFrame(bulky, 1)); n < 20<<20 {
		t.Fatalf("a fetch of the attackers' history answers %d bytes, want ≥ 20 MiB", n)
	} else {
		t.Logf("each attacker fetch is answered with %.1f MiB", float64(n)/(1<<20))
	}

	const attackers, perIP = 8, 64
	p := proxytest.Start(t, "--source-bootstrap", c.Bootstrap(), "--data-dir", t.TempDir(),
		"--max-buffer-bytes", strconv.Itoa(256<<20), "--max-conn-buffer-bytes", strconv.Itoa(16<<20),
		"--max-connections-per-ip", strconv.Itoa(perIP))
	before := procStatusKB(t, p.Pid(), "VmRSS")

	var conns []net.Conn
	for i := 0; i < attackers; i++ {
		conn, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		var frames []byte
		for corr := int32(1); corr <= 128; corr++ {
			frames = append(frames, fetchFrame(bulky, corr)...)
		}
		// The proxy stops reading once the budget is held, so the
		// writes may block: they run beside the test.
		go conn.Write(frames)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		held := scrapeGauge(t, p.Admin, "kmigrate_client_buffered_bytes")
		if held >= attackers*16<<20 {
			t.Logf("attackers hold %.0f MiB of reservations", held/(1<<20))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("attackers hold only %.0f MiB of reservations after 30 s", held/(1<<20))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The well-behaved client meanwhile.
	good, err := kgo.NewClient(kgo.SeedBrokers(p.Addr), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	var recs []*kgo.Record
	for i := 0; i < 3000; i++ {
		r := franzRecord(i, "good")
		r.Topic = topic
		recs = append(recs, r)
	}
	produced := produceAll(t, ctx, good, recs)
	consumed := pollUntil(t, testCtx(t, time.Minute), good, len(produced), time.Second)
	if rep := Compare(produced, consumed); !rep.OK() {
		t.Fatalf("the well-behaved client during the attack:\n%s", rep)
	}
	peak := procStatusKB(t, p.Pid(), "VmHWM")
	t.Logf("proxy RSS before the attack %d MiB, peak during it %d MiB (bound 400 MiB); good client: %d records produced and consumed, 0 lost, 0 duplicated", before>>10, peak>>10, len(produced))
	if peak > 400<<10 {
		t.Fatalf("peak RSS %d MiB under %d non-reading clients: over the 400 MiB bound", peak>>10, attackers)
	}

	// Leaving gives the reservations back (the good client's long-polling
	// fetch holds one too).
	good.Close()
	for _, conn := range conns {
		conn.Close()
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		held := scrapeGauge(t, p.Admin, "kmigrate_client_buffered_bytes")
		if held < 1<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%.0f MiB still reserved 20 s after every client closed its connections", held/(1<<20))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Connections past the per-address limit are closed at once.
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for i := 0; i < perIP; i++ {
		conn, err := net.Dial("tcp", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, conn)
	}
	time.Sleep(500 * time.Millisecond) // the proxy counts what it accepted
	extra, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("connection %d from one address: want it closed at once (EOF), got %v", perIP+1, err)
	}
	if refused := scrapeGauge(t, p.Admin, "kmigrate_client_connections_refused_total"); refused < 1 {
		t.Fatalf("kmigrate_client_connections_refused_total = %v, want ≥ 1", refused)
	}
}

// fetchFrame is a framed Fetch v12 of partition 0 of topic from offset 0,
// asking for up to 50 MiB.
func fetchFrame(topic string, corr int32) []byte {
	req := kmsg.NewPtrFetchRequest()
	req.Version = 12
	req.ReplicaID = -1
	req.MaxWaitMillis = 100
	req.MinBytes = 1
	req.MaxBytes = 50 << 20
	req.SessionEpoch = -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.PartitionMaxBytes = 50 << 20
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	buf := protocol.AppendRequestHeader(nil, req.Key(), req.Version, corr, "never-reads")
	return protocol.AppendFrame(nil, req.AppendTo(buf))
}

// answerBytes sends one framed request to addr and returns the size of the
// answer.
func answerBytes(t *testing.T, addr string, frame []byte) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(frame); err != nil {
		t.Fatal(err)
	}
	answer, err := protocol.ReadFrame(bufio.NewReader(conn), 1<<30)
	if err != nil {
		t.Fatalf("read the answer from %s: %v", addr, err)
	}
	return len(answer)
}

// procStatusKB reads a kB field (VmRSS, VmHWM) of /proc/<pid>/status.
func procStatusKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read proxy status: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("%s: %v", field, err)
			}
			return kb
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// scrapeGauge reads one unlabelled series from the admin API's /metrics.
func scrapeGauge(t *testing.T, admin, name string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", admin, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return v
		}
	}
	t.Fatalf("no %s series at %s/metrics", name, admin)
	return 0
}
