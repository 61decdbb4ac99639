// Package loadgen is the franz-go load generator behind `make bench`: it
// produces and consumes fixed-size records against any Kafka bootstrap (a
// broker directly, or the kmigrate proxy) and reports throughput and
// per-record latency.
//
// Every function takes a bootstrap list and knows nothing about what is
// behind it, so the same code measures both sides of a comparison.
package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ProduceConfig describes one produce run.
type ProduceConfig struct {
	Bootstrap []string
	Topic     string
	// RecordSize is the value size in bytes (no key, no headers).
	RecordSize int
	// Records stops the run after this many records; 0 means run for Duration.
	Records int64
	// Duration bounds the run when Records is 0.
	Duration time.Duration
	// Rate is the target records per second; 0 means as fast as possible
	// (a throughput run). A paced run records every record's ack latency.
	Rate float64
	// Linger is kgo's ProducerLinger.
	Linger time.Duration
	// MaxBufferedRecords bounds records produced but not yet acknowledged;
	// 0 means kgo's default (50000). Throughput runs keep it smaller so the
	// final flush does not dominate the run.
	MaxBufferedRecords int
	// EndToEnd, on a paced run, also consumes the topic while producing and
	// records produce-call to consumer-poll latency per record. The topic
	// should be fresh (the consumer starts at its beginning).
	EndToEnd bool
	ClientID string
}

// ProduceResult is what one produce run measured.
type ProduceResult struct {
	Records int64         // acknowledged records
	Bytes   int64         // acknowledged value bytes
	Elapsed time.Duration // first produce call to last acknowledgement
	// Behind is how far a paced run's producer fell behind its schedule at
	// worst; more than a few ms means the generator, not the path under
	// test, limited the rate.
	Behind time.Duration
	// Latencies holds per-record ack latency (produce call to promise), only
	// for paced runs.
	Latencies []time.Duration
	// EndToEnd holds produce-call to consumer-poll latency, when asked for.
	EndToEnd []time.Duration
}

// RecordsPerSec is acknowledged records per second.
func (r ProduceResult) RecordsPerSec() float64 { return perSec(float64(r.Records), r.Elapsed) }

// MBPerSec is acknowledged value megabytes (10^6 bytes) per second.
func (r ProduceResult) MBPerSec() float64 { return perSec(float64(r.Bytes)/1e6, r.Elapsed) }

func perSec(v float64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return v / d.Seconds()
}

// Payload returns size incompressible bytes, the value every run sends.
// Random bytes keep any compression on the path from flattering one side.
func Payload(size int) []byte {
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return b
}

// producerOpts are the options every producer shares: acks=all (kgo's
// default, stated for the reader), idempotent (kgo's default, up to 5
// requests in flight per broker), no compression.
func producerOpts(cfg ProduceConfig) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Bootstrap...),
		kgo.DefaultProduceTopic(cfg.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerLinger(cfg.Linger),
		kgo.RecordRetries(10),
		kgo.ProduceRequestTimeout(30 * time.Second),
		kgo.RecordDeliveryTimeout(60 * time.Second),
	}
	if cfg.MaxBufferedRecords > 0 {
		opts = append(opts, kgo.MaxBufferedRecords(cfg.MaxBufferedRecords))
	}
	if cfg.ClientID != "" {
		opts = append(opts, kgo.ClientID(cfg.ClientID))
	}
	return opts
}

// Produce runs one produce run and waits until every record is acknowledged.
// A record that fails fails the run.
func Produce(ctx context.Context, cfg ProduceConfig) (ProduceResult, error) {
	if cfg.RecordSize < 8 {
		return ProduceResult{}, fmt.Errorf("record size %d: need at least 8 bytes", cfg.RecordSize)
	}
	if cfg.Records <= 0 && cfg.Duration <= 0 {
		return ProduceResult{}, errors.New("need Records or Duration")
	}
	cl, err := kgo.NewClient(producerOpts(cfg)...)
	if err != nil {
		return ProduceResult{}, err
	}
	defer cl.Close()
	paced := cfg.Rate > 0
	capacity := 0
	if paced {
		n := cfg.Records
		if n <= 0 {
			n = int64(cfg.Rate*cfg.Duration.Seconds()) + 1
		}
		capacity = int(n)
	}

	var (
		acked, ackedBytes atomic.Int64
		lastAck           atomic.Int64 // unix nanos
		errMu             sync.Mutex
		firstErr          error
		latMu             sync.Mutex
		lats              = make([]time.Duration, 0, capacity)
		sendNanos         []atomic.Int64 // by sequence, for end-to-end
		e2e               *e2eConsumer
	)
	if paced && cfg.EndToEnd {
		sendNanos = make([]atomic.Int64, capacity)
		e2e, err = startE2E(cfg, sendNanos)
		if err != nil {
			return ProduceResult{}, err
		}
		defer e2e.stop()
	}
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
	}
	failed := func() error {
		errMu.Lock()
		defer errMu.Unlock()
		return firstErr
	}

	// Connect, fetch metadata and the producer id before the clock starts,
	// so the run measures steady state, not the handshake. The end-to-end
	// consumer must have seen every warm-up record, so it is fetching at the
	// tail of every partition, before the first measured record goes out.
	warm, err := warmProducer(ctx, cl, cfg.Topic)
	if err != nil {
		return ProduceResult{}, fmt.Errorf("warm up producer: %w", err)
	}
	if e2e != nil {
		if err := e2e.waitReady(ctx, warm, 30*time.Second); err != nil {
			return ProduceResult{}, err
		}
	}

	base := Payload(cfg.RecordSize)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	var behind time.Duration
	var seq int64
	for ; ; seq++ {
		if cfg.Records > 0 && seq >= cfg.Records {
			break
		}
		if paced && seq >= int64(capacity) {
			break
		}
		now := time.Now()
		if cfg.Records <= 0 && !now.Before(deadline) {
			break
		}
		if runCtx.Err() != nil || failed() != nil {
			break
		}
		value := base
		if paced {
			due := start.Add(time.Duration(float64(seq) / cfg.Rate * float64(time.Second)))
			if d := due.Sub(now); d > 0 {
				time.Sleep(d)
				now = time.Now()
			} else if -d > behind {
				behind = -d
			}
			// Paced records carry their sequence number so the
			// end-to-end consumer can find the send time.
			value = make([]byte, len(base))
			copy(value, base)
			binary.BigEndian.PutUint64(value, uint64(seq))
			if sendNanos != nil {
				sendNanos[seq].Store(now.UnixNano())
			}
		}
		sent := now
		cl.Produce(runCtx, &kgo.Record{Value: value}, func(r *kgo.Record, err error) {
			if err != nil {
				fail(fmt.Errorf("produce to %s: %w", cfg.Topic, err))
				return
			}
			done := time.Now()
			acked.Add(1)
			ackedBytes.Add(int64(len(r.Value)))
			lastAck.Store(done.UnixNano())
			if paced {
				latMu.Lock()
				lats = append(lats, done.Sub(sent))
				latMu.Unlock()
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		fail(err)
	}
	if err := failed(); err != nil {
		return ProduceResult{}, err
	}
	res := ProduceResult{
		Records: acked.Load(),
		Bytes:   ackedBytes.Load(),
		Behind:  behind,
	}
	if last := lastAck.Load(); last > 0 {
		res.Elapsed = time.Unix(0, last).Sub(start)
	}
	if paced {
		latMu.Lock()
		res.Latencies = lats
		latMu.Unlock()
	}
	if e2e != nil {
		res.EndToEnd, err = e2e.wait(ctx, res.Records, 30*time.Second)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// warmProducer brings up the producer before the clock starts: the
// connection, the metadata and the producer id. It produces one small keyed
// record to every partition of the topic (keys are hashed by kgo's default
// partitioner, so trying a few keys reaches them all) and returns how many it
// produced. The records carry a header so consumers that match records to
// sends can skip them.
func warmProducer(ctx context.Context, cl *kgo.Client, topic string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	md, err := kadm.NewClient(cl).Metadata(ctx, topic)
	if err != nil {
		return 0, err
	}
	t, ok := md.Topics[topic]
	if !ok || t.Err != nil {
		return 0, fmt.Errorf("metadata of %s: %v", topic, t.Err)
	}
	want := len(t.Partitions)
	seen := map[int32]bool{}
	n := 0
	for i := 0; len(seen) < want && i < 64*want; i++ {
		r := &kgo.Record{
			Key:     []byte(fmt.Sprintf("warmup-%d", i)),
			Value:   []byte("warmup"),
			Headers: []kgo.RecordHeader{{Key: warmupHeader}},
		}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			return n, err
		}
		n++
		seen[r.Partition] = true
	}
	if len(seen) < want {
		return n, fmt.Errorf("warm-up reached %d of %d partitions of %s", len(seen), want, topic)
	}
	return n, nil
}

const warmupHeader = "kmigrate-bench-warmup"

func isWarmup(r *kgo.Record) bool {
	return len(r.Headers) == 1 && r.Headers[0].Key == warmupHeader
}
