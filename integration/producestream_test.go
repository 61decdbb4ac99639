//go:build !direct

package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/faultrow"
	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/kmigrate/kmigrate/proxy"
)

// TestProduceCutThroughRealClients: in front of the one-broker cluster
// every produce's route is known from its head, so large produces are cut
// through (their bodies spliced from the client's socket to the broker's).
// The Java client (ConsoleProducer), franz-go and librdkafka (kcat) produce
// records of 2 KiB in batches of up to 256 KiB through the proxy; the topic, read directly,
// must hold every record once, in order, byte for byte, and the proxy must
// have streamed most of the bytes.
func TestProduceCutThroughRealClients(t *testing.T) {
	c := cluster(t)
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	p, err := proxy.Start(ctx, proxy.Config{
		Listen:  "127.0.0.1:0",
		Source:  proxy.Upstream{Name: "source", Bootstrap: []string{c.Bootstrap()}},
		Metrics: proxy.NewMetrics(reg),
	})
	cancel()
	if err != nil {
		t.Fatalf("start proxy: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	streamed := func() float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "kmigrate_client_bytes_in_cut_through_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		t.Fatal("the proxy does not export kmigrate_client_bytes_in_cut_through_total")
		return 0
	}
	const n = 3000
	const valueBytes = 2048
	records := func(tag string) []Record {
		out := consoleRecords(n)
		for i := range out {
			v := fmt.Sprintf("%s-%05d|", tag, i)
			out[i].Value = []byte(v + strings.Repeat(string(rune('a'+i%26)), valueBytes-len(v)))
		}
		return out
	}
	check := func(t *testing.T, topic string, produced []Record, before float64) {
		t.Helper()
		log := readTopic(t, c, topic)
		assertClean(t, "produced through the proxy vs direct read of the topic", Compare(produced, log))
		moved := streamed() - before
		if moved < n*valueBytes/2 {
			t.Fatalf("%.0f bytes cut through of about %d produced: the produces went store and forward", moved, n*valueBytes)
		}
		t.Logf("%d records landed exactly; %.1f MB of produce bodies cut through", len(log), moved/1e6)
	}

	t.Run("java ConsoleProducer", func(t *testing.T) {
		topic := uniqueName(t, "topic")
		createTopic(t, c, topic, 3)
		input := records("java")
		before := streamed()
		consoleProduce(t, p.Addr(), topic, input, "linger.ms=50", "batch.size=262144")
		check(t, topic, input, before)
	})

	t.Run("franz-go idempotent", func(t *testing.T) {
		topic := uniqueName(t, "topic")
		createTopic(t, c, topic, 3)
		ctx := testCtx(t, 2*time.Minute)
		cl, err := kgo.NewClient(kgo.SeedBrokers(p.Addr()), kgo.DefaultProduceTopic(topic),
			kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(50*time.Millisecond), kgo.ProducerBatchMaxBytes(256<<10),
			kgo.ProducerBatchCompression(kgo.NoCompression())) // the values are letters: snappy would leave little to stream
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		var recs []*kgo.Record
		for i := range n {
			r := franzRecord(i, "franz")
			v := fmt.Sprintf("franz-%05d|", i)
			r.Value = []byte(v + strings.Repeat(string(rune('a'+i%26)), valueBytes-len(v)))
			recs = append(recs, r)
		}
		before := streamed()
		produced := produceAll(t, ctx, cl, recs)
		check(t, topic, produced, before)
	})

	t.Run("librdkafka kcat", func(t *testing.T) {
		kcat, err := kafkatest.Kcat()
		if err != nil {
			t.Fatal(err)
		}
		topic := uniqueName(t, "topic")
		createTopic(t, c, topic, 3)
		var lines []string
		var input []Record
		for i := range n {
			key := fmt.Sprintf("key-%d", i%89)
			v := fmt.Sprintf("kcat-%05d|", i)
			v += strings.Repeat(string(rune('a'+i%26)), valueBytes-len(v))
			lines = append(lines, key+":"+v)
			input = append(input, Record{Partition: -1, Offset: -1, Key: []byte(key), Value: []byte(v), Headers: []Header{{"tool", []byte("kcat")}}})
		}
		before := streamed()
		ctx := testCtx(t, 2*time.Minute)
		_, stderr := runKcat(t, ctx, kcat, []byte(strings.Join(lines, "\n")+"\n"), "-b", p.Addr(), "-P", "-t", topic, "-K:", "-H", "tool=kcat",
			"-X", "enable.idempotence=true", "-X", "acks=all", "-X", "linger.ms=50", "-X", "batch.size=262144")
		if strings.Contains(stderr, "Delivery failed") || strings.Contains(stderr, "% ERROR") {
			t.Fatalf("kcat -P reported errors:\n%s", tail(stderr, 3000))
		}
		check(t, topic, input, before)
	})

	// The broker is killed (SIGKILL) while an idempotent producer streams
	// through the proxy, so produces are cut off mid-body on both sides,
	// then restarted on its data: the producer must recover by itself
	// (every record acknowledged, none failed) and the log hold each
	// acknowledged record once, in produce order.
	t.Run("broker killed mid-stream", func(t *testing.T) {
		row := faultrow.New(t, "source broker killed (kill -9) while produces are cut through the proxy, restarted on its data (idempotent franz-go producer)")
		topic := uniqueName(t, "topic")
		createTopic(t, c, topic, 3)
		ctx := testCtx(t, 4*time.Minute)
		cl, err := kgo.NewClient(kgo.SeedBrokers(p.Addr()), kgo.DefaultProduceTopic(topic),
			kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(20*time.Millisecond), kgo.ProducerBatchMaxBytes(256<<10),
			kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.MaxBufferedRecords(2000),
			kgo.RecordDeliveryTimeout(2*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		const total = 40000
		var mu sync.Mutex
		acked := make([]*Record, total)
		var nAcked, nFailed int
		var firstErr error
		ackedCount := func() int {
			mu.Lock()
			defer mu.Unlock()
			return nAcked
		}
		stop := make(chan struct{})
		done := make(chan int)
		go func() {
			i := 0
			defer func() { done <- i }()
			for ; i < total; i++ {
				select {
				case <-stop:
					return
				default:
				}
				seq := i // i outlives the iteration: the callback needs this one
				r := franzRecord(seq, "kill")
				v := fmt.Sprintf("kill-%05d|", seq)
				r.Value = []byte(v + strings.Repeat(string(rune('a'+seq%26)), valueBytes-len(v)))
				cl.Produce(ctx, r, func(r *kgo.Record, err error) {
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						nFailed++
						firstErr = err
						return
					}
					rec := producedRecord(r)
					acked[seq], nAcked = &rec, nAcked+1
				})
			}
		}()
		waitUntil := func(what string, cond func() bool) {
			t.Helper()
			for !cond() {
				if ctx.Err() != nil {
					t.Fatalf("waiting for %s: %v (acknowledged %d)", what, ctx.Err(), ackedCount())
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		before := streamed()
		waitUntil("3000 acknowledgements", func() bool { return ackedCount() >= 3000 })
		if streamed() == before {
			t.Fatal("nothing was cut through before the kill: the test would not break a stream")
		}
		c.Kill()
		began := time.Now()
		if err := c.Restart(ctx); err != nil {
			t.Fatalf("restart broker: %v", err)
		}
		afterRestart, back := ackedCount(), time.Now()
		t.Logf("broker killed and restarted in %v (%d acknowledged before)", back.Sub(began).Round(time.Millisecond), afterRestart)
		waitUntil("an acknowledgement after the restart", func() bool { return ackedCount() > afterRestart })
		row.Recovered(time.Since(back), fmt.Sprintf("first acknowledgement after the broker was back; the restart took %s", faultrow.FormatDuration(back.Sub(began))))
		waitUntil("3000 acknowledgements after the restart", func() bool { return ackedCount() >= afterRestart+3000 })
		streamedAfter := streamed()
		close(stop)
		sent := <-done
		if err := cl.Flush(ctx); err != nil {
			t.Fatalf("flush: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if nFailed > 0 || nAcked != sent {
			t.Fatalf("%d sent, %d acknowledged, %d failed (first: %v): want every record acknowledged", sent, nAcked, nFailed, firstErr)
		}
		var produced []Record
		for _, r := range acked[:sent] {
			produced = append(produced, *r)
		}
		assertClean(t, "produced across a broker kill vs direct read of the topic", Compare(produced, readTopic(t, c, topic)))
		if streamed() == streamedAfter {
			t.Log("note: no produce was cut through after the restart")
		}
		row.Outcome("%d records acknowledged, 0 failed; 0 lost, 0 duplicated, 0 reordered", sent)
		t.Logf("%d records, all acknowledged once, in order; %.1f MB cut through", sent, (streamed()-before)/1e6)
	})
}
