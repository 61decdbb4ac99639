package loadgen

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ConsumeConfig describes one consume run: read Records records of Topic
// from its beginning, without a consumer group (so no group coordination is
// measured, only the fetch path).
type ConsumeConfig struct {
	Bootstrap []string
	Topic     string
	// Records is how many records to read; the caller knows how many the
	// topic holds (e.g. from its end offsets).
	Records  int64
	Timeout  time.Duration // 0 means 5 minutes
	ClientID string
}

// ConsumeResult is what one consume run measured: the steady state, from
// the return of the first poll that brought records to the last record. The
// first poll's records (one fetch, a few MB) are not counted: they stand for
// connecting and the first round trip, which are not throughput.
type ConsumeResult struct {
	Records int64         // records counted (after the first poll)
	Bytes   int64         // their value bytes
	Elapsed time.Duration // first poll with records to the last record
	Total   int64         // every record read, first poll included
}

// RecordsPerSec is records consumed per second.
func (r ConsumeResult) RecordsPerSec() float64 { return perSec(float64(r.Records), r.Elapsed) }

// MBPerSec is value megabytes (10^6 bytes) consumed per second.
func (r ConsumeResult) MBPerSec() float64 { return perSec(float64(r.Bytes)/1e6, r.Elapsed) }

// Consume reads cfg.Records records from the start of cfg.Topic.
func Consume(ctx context.Context, cfg ConsumeConfig) (ConsumeResult, error) {
	if cfg.Records <= 0 {
		return ConsumeResult{}, errors.New("need Records > 0")
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Bootstrap...),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	}
	if cfg.ClientID != "" {
		opts = append(opts, kgo.ClientID(cfg.ClientID))
	}
	began := time.Now()
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return ConsumeResult{}, err
	}
	defer cl.Close()

	var res ConsumeResult
	var start time.Time
	for res.Total < cfg.Records {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("consume %s: %d of %d records after %s: %w", cfg.Topic, res.Total, cfg.Records, time.Since(began).Round(time.Millisecond), err)
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			return res, ferr
		}
		first := start.IsZero()
		fs.EachRecord(func(r *kgo.Record) {
			res.Total++
			if !first {
				res.Records++
				res.Bytes += int64(len(r.Value))
			}
		})
		if first && res.Total > 0 {
			start = time.Now()
		}
	}
	res.Elapsed = time.Since(start)
	return res, nil
}

// e2eConsumer reads a paced run's topic while it is produced and records, per
// record, the time from the produce call to the consumer's poll.
type e2eConsumer struct {
	cl        *kgo.Client
	sendNanos []atomic.Int64
	warm      atomic.Int64 // warm-up records seen
	done      chan struct{}

	mu   sync.Mutex
	lats []time.Duration
	err  error
}

func startE2E(cfg ProduceConfig, sendNanos []atomic.Int64) (*e2eConsumer, error) {
	bootstrap := cfg.Bootstrap
	if len(cfg.EndToEndBootstrap) > 0 {
		bootstrap = cfg.EndToEndBootstrap
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(bootstrap...),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	}
	if cfg.ClientID != "" {
		opts = append(opts, kgo.ClientID(cfg.ClientID+"-e2e"))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	c := &e2eConsumer{
		cl:        cl,
		sendNanos: sendNanos,
		done:      make(chan struct{}),
		lats:      make([]time.Duration, 0, len(sendNanos)),
	}
	go c.loop()
	return c, nil
}

func (c *e2eConsumer) loop() {
	defer close(c.done)
	for {
		fs := c.cl.PollFetches(context.Background())
		if fs.IsClientClosed() {
			return
		}
		now := time.Now().UnixNano()
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr == nil && !errors.Is(err, kgo.ErrClientClosed) {
				ferr = fmt.Errorf("end-to-end fetch %s/%d: %w", t, p, err)
			}
		})
		if ferr != nil {
			c.mu.Lock()
			c.err = ferr
			c.mu.Unlock()
			return
		}
		fs.EachRecord(func(r *kgo.Record) {
			if isWarmup(r) {
				c.warm.Add(1)
				return
			}
			if len(r.Value) < 8 {
				return
			}
			seq := binary.BigEndian.Uint64(r.Value)
			if seq >= uint64(len(c.sendNanos)) {
				return
			}
			sent := c.sendNanos[seq].Load()
			if sent == 0 {
				return
			}
			c.mu.Lock()
			c.lats = append(c.lats, time.Duration(now-sent))
			c.mu.Unlock()
		})
	}
}

// waitReady waits until the consumer has seen the warm records produced
// before the run, one per partition.
func (c *e2eConsumer) waitReady(ctx context.Context, warm int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for c.warm.Load() < int64(warm) {
		select {
		case <-c.done:
			c.mu.Lock()
			defer c.mu.Unlock()
			return fmt.Errorf("end-to-end consumer stopped before it was ready: %v", c.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("end-to-end consumer saw %d of %d warm-up records within %s", c.warm.Load(), warm, timeout)
		}
	}
	return nil
}

// wait returns the latencies once want records were seen (or timeout passed).
func (c *e2eConsumer) wait(ctx context.Context, want int64, timeout time.Duration) ([]time.Duration, error) {
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		n, err := int64(len(c.lats)), c.err
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if n >= want {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("end-to-end consumer saw %d of %d records within %s", n, want, timeout)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.lats...), nil
}

func (c *e2eConsumer) stop() {
	c.cl.Close()
	<-c.done
}
