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
	// EndToEndBootstrap, if set, is where the end-to-end consumer reads the
	// topic (of the same name) instead of Bootstrap: a mirror's target
	// cluster, so the latency is produce call to the poll that returned the
	// record from the other cluster.
	EndToEndBootstrap []string
	// EndToEndTimeout bounds the wait, after the last acknowledgement, for
	// the end-to-end consumer to see every record, and its wait for the
	// warm-up records (default 30s).
	EndToEndTimeout time.Duration
	ClientID        string
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

func (cfg ProduceConfig) e2eTimeout() time.Duration {
	if cfg.EndToEndTimeout > 0 {
		return cfg.EndToEndTimeout
	}
	return 30 * time.Second
}

// Produce runs one produce run and waits until every record is acknowledged.
// A record that fails fails the run.
func Produce(ctx context.Context, cfg ProduceConfig) (ProduceResult, error) {
	p, err := newProducer(ctx, cfg)
	if err != nil {
		return ProduceResult{}, err
	}
	defer p.close()
	base := Payload(cfg.RecordSize)
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	for seq := int64(0); ; seq++ {
		if cfg.Records > 0 && seq >= cfg.Records || p.paced() && seq >= int64(len(p.sendNanos)) {
			break
		}
		now := time.Now()
		if cfg.Records <= 0 && !now.Before(deadline) {
			break
		}
		if ctx.Err() != nil || p.failed() != nil {
			break
		}
		if p.paced() {
			now = p.pace(start, seq, now, cfg.Rate)
		}
		p.send(ctx, base, seq, now)
	}
	return p.finish(ctx, start)
}

// ProducePaired runs two paced runs at once, interleaved record by record on
// one schedule (a's record, b's record, a's, ...; each at its own Rate, which
// must be equal). Both sides then meet the same moments of noise on a shared
// machine, which makes the difference of their latencies far steadier than
// that of two runs made one after the other. Records and Duration come from a.
func ProducePaired(ctx context.Context, a, b ProduceConfig) (ProduceResult, ProduceResult, error) {
	if a.Rate <= 0 || a.Rate != b.Rate {
		return ProduceResult{}, ProduceResult{}, fmt.Errorf("paired runs need one positive rate (got %v and %v)", a.Rate, b.Rate)
	}
	b.Records, b.Duration = a.Records, a.Duration
	pa, err := newProducer(ctx, a)
	if err != nil {
		return ProduceResult{}, ProduceResult{}, err
	}
	defer pa.close()
	pb, err := newProducer(ctx, b)
	if err != nil {
		return ProduceResult{}, ProduceResult{}, err
	}
	defer pb.close()
	base := Payload(a.RecordSize)
	start := time.Now()
	n := int64(len(pa.sendNanos))
	for i := int64(0); i < 2*n; i++ {
		if ctx.Err() != nil || pa.failed() != nil || pb.failed() != nil {
			break
		}
		p, seq := pa, i/2
		if i%2 == 1 {
			p = pb
		}
		now := p.pace(start, i, time.Now(), 2*a.Rate)
		p.send(ctx, base, seq, now)
	}
	ra, erra := pa.finish(ctx, start)
	rb, errb := pb.finish(ctx, start)
	return ra, rb, errors.Join(erra, errb)
}

// producer is one kgo producer client with its bookkeeping.
type producer struct {
	cfg ProduceConfig
	cl  *kgo.Client

	acked, ackedBytes atomic.Int64
	lastAck           atomic.Int64 // unix nanos

	errMu    sync.Mutex
	firstErr error

	latMu  sync.Mutex
	lats   []time.Duration
	behind time.Duration // worst lateness against the schedule

	sendNanos []atomic.Int64 // by sequence, for paced runs
	e2e       *e2eConsumer
}

// newProducer connects, fetches metadata and the producer id before the
// clock starts, so that a run measures steady state, not the handshake. The
// end-to-end consumer, if any, has seen every warm-up record when it
// returns, so it is fetching at the tail of every partition before the first
// measured record goes out.
func newProducer(ctx context.Context, cfg ProduceConfig) (*producer, error) {
	if cfg.RecordSize < 8 {
		return nil, fmt.Errorf("record size %d: need at least 8 bytes", cfg.RecordSize)
	}
	if cfg.Records <= 0 && cfg.Duration <= 0 {
		return nil, errors.New("need Records or Duration")
	}
	cl, err := kgo.NewClient(producerOpts(cfg)...)
	if err != nil {
		return nil, err
	}
	p := &producer{cfg: cfg, cl: cl}
	if cfg.Rate > 0 {
		n := cfg.Records
		if n <= 0 {
			n = int64(cfg.Rate*cfg.Duration.Seconds()) + 1
		}
		p.sendNanos = make([]atomic.Int64, n)
		p.lats = make([]time.Duration, 0, n)
		if cfg.EndToEnd {
			if p.e2e, err = startE2E(cfg, p.sendNanos); err != nil {
				cl.Close()
				return nil, err
			}
		}
	}
	warm, err := warmProducer(ctx, cl, cfg.Topic)
	if err != nil {
		p.close()
		return nil, fmt.Errorf("warm up producer for %s: %w", cfg.Topic, err)
	}
	if p.e2e != nil {
		if err := p.e2e.waitReady(ctx, warm, cfg.e2eTimeout()); err != nil {
			p.close()
			return nil, err
		}
	}
	return p, nil
}

func (p *producer) paced() bool { return p.sendNanos != nil }

func (p *producer) close() {
	if p.e2e != nil {
		p.e2e.stop()
	}
	p.cl.Close()
}

func (p *producer) fail(err error) {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	if p.firstErr == nil {
		p.firstErr = err
	}
}

func (p *producer) failed() error {
	p.errMu.Lock()
	defer p.errMu.Unlock()
	return p.firstErr
}

// pace sleeps until slot i of a schedule of rate slots per second from
// start, and returns the time it woke (or now, if already late).
func (p *producer) pace(start time.Time, i int64, now time.Time, rate float64) time.Time {
	due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
	if d := due.Sub(now); d > 0 {
		time.Sleep(d)
		return time.Now()
	} else if -d > p.behind {
		p.behind = -d
	}
	return now
}

// send produces one record. On a paced run the value carries seq, so the
// end-to-end consumer can find the send time, and the ack latency is
// recorded from now.
func (p *producer) send(ctx context.Context, base []byte, seq int64, now time.Time) {
	value := base
	paced := p.paced()
	if paced {
		value = make([]byte, len(base))
		copy(value, base)
		binary.BigEndian.PutUint64(value, uint64(seq))
		p.sendNanos[seq].Store(now.UnixNano())
	}
	p.cl.Produce(ctx, &kgo.Record{Value: value}, func(r *kgo.Record, err error) {
		if err != nil {
			p.fail(fmt.Errorf("produce to %s: %w", p.cfg.Topic, err))
			return
		}
		done := time.Now()
		p.acked.Add(1)
		p.ackedBytes.Add(int64(len(r.Value)))
		p.lastAck.Store(done.UnixNano())
		if paced {
			p.latMu.Lock()
			p.lats = append(p.lats, done.Sub(now))
			p.latMu.Unlock()
		}
	})
}

// finish waits for every record's ack (and, on an end-to-end run, for the
// consumer to see them) and returns the result.
func (p *producer) finish(ctx context.Context, start time.Time) (ProduceResult, error) {
	if err := p.cl.Flush(ctx); err != nil {
		p.fail(err)
	}
	if err := p.failed(); err != nil {
		return ProduceResult{}, err
	}
	res := ProduceResult{
		Records: p.acked.Load(),
		Bytes:   p.ackedBytes.Load(),
		Behind:  p.behind,
	}
	if last := p.lastAck.Load(); last > 0 {
		res.Elapsed = time.Unix(0, last).Sub(start)
	}
	if p.paced() {
		p.latMu.Lock()
		res.Latencies = p.lats
		p.latMu.Unlock()
	}
	if p.e2e != nil {
		var err error
		if res.EndToEnd, err = p.e2e.wait(ctx, res.Records, p.cfg.e2eTimeout()); err != nil {
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
