package integration

import (
	"context"
	"encoding/binary"
	"math/rand"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/proxytest"
	"github.com/kmigrate/kmigrate/protocol"
)

// TestBadInputUnderLoad sends 10,000 malformed frames from 8 connections at
// a time (random bytes, truncated frames, oversized and negative sizes, and
// valid headers of every API the proxy rewrites followed by random bodies)
// to a proxy process in front of a real broker, while a franz-go client
// produces and consumes through the same proxy. The client must get every
// record exactly once and in order, the proxy must survive (no panic in its
// log) and its memory stay bounded.
func TestBadInputUnderLoad(t *testing.T) {
	c := cluster(t)
	ctx := testCtx(t, 3*time.Minute)
	topic := uniqueName(t, "topic")
	createTopic(t, c, topic, 3)
	p := proxytest.Start(t, "--source-bootstrap", c.Bootstrap(), "--data-dir", t.TempDir())

	// The well-behaved client, started first so the attack overlaps it.
	good, err := kgo.NewClient(kgo.SeedBrokers(p.Addr), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()

	const attackers, perAttacker = 8, 1250
	var sent sync.Map
	var wg sync.WaitGroup
	attackCtx, stopAttack := context.WithCancel(ctx)
	defer stopAttack()
	for a := 0; a < attackers; a++ {
		wg.Add(1)
		go func(a int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(a)))
			var conn net.Conn
			n := 0
			for n < perAttacker && attackCtx.Err() == nil {
				if conn == nil {
					var err error
					if conn, err = net.DialTimeout("tcp", p.Addr, 5*time.Second); err != nil {
						t.Errorf("attacker %d: dial: %v", a, err)
						return
					}
				}
				frame := badFrame(rng)
				conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
				_, err := conn.Write(frame)
				n++
				// Bad input ends the connection; about one frame in
				// four also closes it from this side, mid-frame or not.
				if err != nil || rng.Intn(4) == 0 {
					conn.Close()
					conn = nil
				}
			}
			if conn != nil {
				conn.Close()
			}
			sent.Store(a, n)
		}(a)
	}

	var recs []*kgo.Record
	for i := 0; i < 5000; i++ {
		r := franzRecord(i, "good")
		r.Topic = topic
		recs = append(recs, r)
	}
	produced := produceAll(t, ctx, good, recs)
	consumed := pollUntil(t, testCtx(t, time.Minute), good, len(produced), time.Second)
	wg.Wait()
	total := 0
	sent.Range(func(_, v any) bool { total += v.(int); return true })
	if total < attackers*perAttacker {
		t.Fatalf("only %d of %d bad frames sent", total, attackers*perAttacker)
	}
	if rep := Compare(produced, consumed); !rep.OK() {
		t.Fatalf("the well-behaved client during %d bad frames:\n%s", total, rep)
	}
	// The proxy still serves a new client.
	after, err := kgo.NewClient(kgo.SeedBrokers(p.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if err := after.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("after")}).FirstErr(); err != nil {
		t.Fatalf("a new client after the attack: %v", err)
	}
	log, err := os.ReadFile(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(log), "panic") {
		t.Fatalf("the proxy log mentions a panic:\n%s", log)
	}
	peak := procStatusKB(t, p.Pid(), "VmHWM")
	t.Logf("%d bad frames from %d connections at a time; good client: %d records produced and consumed, 0 lost, 0 duplicated, 0 reordered; proxy peak RSS %d MiB", total, attackers, len(produced), peak>>10)
	if peak > 300<<10 {
		t.Fatalf("proxy peak RSS %d MiB under bad input: over the 300 MiB bound", peak>>10)
	}
}

// rewrittenKeys are the API keys whose requests the proxy decodes: garbage
// bodies behind their headers reach the decoders.
var rewrittenKeys = []int16{0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 21, 22, 23, 24, 25, 26, 28, 32, 36, 37, 42, 47, 60, 61, 75}

// badFrame makes one malformed frame: random bytes, a truncated frame, an
// impossible size, or a real header (any version, flexible or not) over a
// random body.
func badFrame(rng *rand.Rand) []byte {
	junk := func(n int) []byte { b := make([]byte, n); rng.Read(b); return b }
	switch rng.Intn(5) {
	case 0:
		return protocol.AppendFrame(nil, junk(rng.Intn(128)))
	case 1: // announces more than it sends
		body := junk(rng.Intn(64))
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(body)+1+rng.Intn(1000))), body...)
	case 2: // oversized or negative size
		sizes := []uint32{200 << 20, 0xffffffff, 0x80000000, 1 << 30}
		return binary.BigEndian.AppendUint32(nil, sizes[rng.Intn(len(sizes))])
	default:
		key := rewrittenKeys[rng.Intn(len(rewrittenKeys))]
		hdr := protocol.AppendRequestHeader(nil, key, int16(rng.Intn(18)), rng.Int31(), "bad-input")
		return protocol.AppendFrame(nil, append(hdr, junk(rng.Intn(256))...))
	}
}
