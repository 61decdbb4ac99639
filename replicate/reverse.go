package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Reverse is the reverse mirror: for every partition whose producers flipped
// to the target, it copies what they write there back to the source, in
// order, and records where each record landed (offsetsync.FillSource). The
// source stays a complete copy of the virtual log, which is what lets a
// topic flip be rolled back, and groups or tools still reading the source
// directly see every record.
//
// It is the forward mirror's twin, kept simple: one poll at a time, every
// partition's records produced and acknowledged before they are recorded.
type Reverse struct {
	cfg    ReverseConfig
	log    *slog.Logger
	tgt    *kgo.Client // reads the target
	srcAdm *kadm.Client
	prod   *kgo.Client // writes the source

	mu     sync.Mutex
	active map[Partition]*reversePart
	// stuck: partitions whose target log has a hole at this offset
	// (transaction markers): their records cannot sit at the same offsets
	// in the source, so they are not copied back and cannot roll back.
	stuck map[Partition]int64
}

// ReverseConfig describes a reverse mirror.
type ReverseConfig struct {
	// Source is written to, Target read from.
	Source, Target []kgo.Opt
	Maps           ReverseMapStore
	// Partitions lists the partitions this node reverse-mirrors now: the
	// flipped partitions it is the writer of.
	Partitions func() []Partition
	Recheck    time.Duration // how often Partitions is asked (default 500 ms)
	Logger     *slog.Logger
}

// ReverseMapStore is where the reverse mirror reads maps and records fills.
type ReverseMapStore interface {
	Map(tp Partition) offsetsync.OffsetMap
	FillSource(ctx context.Context, tp Partition, virtual, source, length int64) error
}

type reversePart struct {
	nextTarget int64 // target offset of the next record to copy
	copied     int64
}

// NewReverse connects the reverse mirror's clients.
func NewReverse(cfg ReverseConfig) (*Reverse, error) {
	if cfg.Maps == nil || cfg.Partitions == nil {
		return nil, errors.New("reverse mirror needs a map store and a partition list")
	}
	if cfg.Recheck <= 0 {
		cfg.Recheck = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	tgt, err := kgo.NewClient(append(append([]kgo.Opt{}, cfg.Target...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxWait(250*time.Millisecond),
	)...)
	if err != nil {
		return nil, fmt.Errorf("reverse mirror: target client: %w", err)
	}
	prod, err := kgo.NewClient(append(append([]kgo.Opt{}, cfg.Source...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(time.Millisecond),
	)...)
	if err != nil {
		tgt.Close()
		return nil, fmt.Errorf("reverse mirror: source producer: %w", err)
	}
	return &Reverse{cfg: cfg, log: cfg.Logger.With("component", "reverse-mirror"), tgt: tgt, prod: prod,
		srcAdm: kadm.NewClient(prod), active: make(map[Partition]*reversePart), stuck: make(map[Partition]int64)}, nil
}

// Close releases the clients.
func (r *Reverse) Close() { r.tgt.Close(); r.prod.Close() }

// Run copies until ctx ends.
func (r *Reverse) Run(ctx context.Context) error {
	next := time.Now()
	for ctx.Err() == nil {
		if time.Now().After(next) {
			r.discover(ctx)
			next = time.Now().Add(r.cfg.Recheck)
		}
		r.mu.Lock()
		n := len(r.active)
		r.mu.Unlock()
		if n == 0 {
			select {
			case <-ctx.Done():
			case <-time.After(r.cfg.Recheck):
			}
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, r.cfg.Recheck)
		fs := r.tgt.PollFetches(pctx)
		cancel()
		fs.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				r.log.Warn("reverse mirror fetch", "topic", topic, "partition", p, "err", err)
			}
		})
		fs.EachPartition(func(fp kgo.FetchTopicPartition) {
			if len(fp.Records) == 0 {
				return
			}
			tp := Partition{fp.Topic, fp.Partition}
			var hole errHole
			if err := r.copy(ctx, tp, fp.Records); errors.As(err, &hole) {
				r.log.Error("reverse mirror stopped for this partition: the target has transaction markers, so its records cannot keep their offsets in the source; this topic cannot be rolled back", "topic", fp.Topic, "partition", fp.Partition, "target_offset", int64(hole))
				r.drop(tp)
				r.mu.Lock()
				r.stuck[tp] = int64(hole)
				r.mu.Unlock()
			} else if err != nil {
				r.log.Warn("reverse mirror: copy failed; the partition starts again from its map", "topic", fp.Topic, "partition", fp.Partition, "err", err)
				r.drop(tp)
			}
		})
	}
	return ctx.Err()
}

// discover starts the partitions that flipped and stops those that came back.
func (r *Reverse) discover(ctx context.Context) {
	want := make(map[Partition]bool)
	for _, tp := range r.cfg.Partitions() {
		want[tp] = true
	}
	r.mu.Lock()
	var gone []Partition
	for tp := range r.active {
		if !want[tp] || !r.cfg.Maps.Map(tp).Flipped() {
			gone = append(gone, tp)
		}
	}
	for tp := range r.stuck {
		if !want[tp] {
			delete(r.stuck, tp) // flipped back or away: a new start
		}
	}
	r.mu.Unlock()
	for _, tp := range gone {
		r.drop(tp)
	}
	for tp := range want {
		r.mu.Lock()
		_, running := r.active[tp]
		_, stuck := r.stuck[tp]
		r.mu.Unlock()
		if running || stuck {
			continue
		}
		if err := r.start(ctx, tp); err != nil {
			r.log.Warn("reverse mirror: cannot start partition", "topic", tp.Topic, "partition", tp.Partition, "err", err)
		}
	}
}

// start resumes a partition from its map. Records the source holds beyond
// the map's filled range are this mirror's own writes from before a
// restart (nothing else writes a flipped topic's source): they are recorded
// as copies of the next target records instead of being written again.
func (r *Reverse) start(ctx context.Context, tp Partition) error {
	m := r.cfg.Maps.Map(tp)
	open, ok := m.Last()
	if !ok || !open.Open() {
		return nil // not flipped (any more)
	}
	// The flip started the open segment at the source's end, and every fill
	// keeps virtual = source (a rollback refuses otherwise), so the source's
	// next offset is the open segment's virtual start.
	expected := open.Virtual
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ends, err := r.srcAdm.ListEndOffsets(ctx, tp.Topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return fmt.Errorf("source end of %s/%d: %w", tp.Topic, tp.Partition, err)
	}
	end, _ := ends.Lookup(tp.Topic, tp.Partition)
	skip := end.Offset - expected
	if skip < 0 {
		return fmt.Errorf("the source of %s/%d ends at %d, before the %d the map records: it lost records", tp.Topic, tp.Partition, end.Offset, expected)
	}
	if skip > 0 {
		if err := r.cfg.Maps.FillSource(ctx, tp, open.Virtual, expected, skip); err != nil {
			return fmt.Errorf("record %d records already copied to the source: %w", skip, err)
		}
		r.log.Info("reverse mirror adopted records it wrote before a restart", "topic", tp.Topic, "partition", tp.Partition, "records", skip)
	}
	st := &reversePart{nextTarget: open.Target + skip}
	r.mu.Lock()
	r.active[tp] = st
	r.mu.Unlock()
	r.tgt.AddConsumePartitions(map[string]map[int32]kgo.Offset{tp.Topic: {tp.Partition: kgo.NewOffset().At(st.nextTarget)}})
	r.log.Info("reverse mirroring partition", "topic", tp.Topic, "partition", tp.Partition, "from_target_offset", st.nextTarget, "source_offset", expected+skip)
	return nil
}

func (r *Reverse) drop(tp Partition) {
	r.mu.Lock()
	_, ok := r.active[tp]
	delete(r.active, tp)
	r.mu.Unlock()
	if ok {
		r.tgt.RemoveConsumePartitions(map[string][]int32{tp.Topic: {tp.Partition}})
	}
}

// copy writes one fetched run of target records to the source and records
// where they landed.
func (r *Reverse) copy(ctx context.Context, tp Partition, recs []*kgo.Record) error {
	r.mu.Lock()
	st := r.active[tp]
	r.mu.Unlock()
	if st == nil {
		return nil
	}
	var out []*kgo.Record
	for _, rec := range recs {
		if rec.Offset < st.nextTarget {
			continue
		}
		if rec.Offset != st.nextTarget+int64(len(out)) {
			if len(out) > 0 {
				break // copy what comes before the hole first
			}
			return errHole(st.nextTarget)
		}
		out = append(out, &kgo.Record{Topic: tp.Topic, Partition: tp.Partition, Key: rec.Key, Value: rec.Value, Headers: rec.Headers, Timestamp: rec.Timestamp})
	}
	if len(out) == 0 {
		return nil
	}
	// Only while the partition is still flipped, from exactly where the map
	// says: once a rollback closes the map, the forward mirror writes the
	// target again, and copying its records back would duplicate them in
	// the source. Records past the rollback's end exist only after the
	// close, so checking after the fetch is enough.
	if last, ok := r.cfg.Maps.Map(tp).Last(); !ok || !last.Open() || last.Target != st.nextTarget {
		return fmt.Errorf("%s/%d is no longer flipped at target offset %d (rolled back)", tp.Topic, tp.Partition, st.nextTarget)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res := r.prod.ProduceSync(pctx, out...)
	if err := res.FirstErr(); err != nil {
		return fmt.Errorf("write %d records to the source: %w", len(out), err)
	}
	first := res[0].Record.Offset
	for i, pr := range res {
		if pr.Record.Offset != first+int64(i) {
			return fmt.Errorf("source offsets not contiguous (%d then %d): someone else writes the source", first, pr.Record.Offset)
		}
	}
	v, ok := r.cfg.Maps.Map(tp).TargetToVirtual(st.nextTarget)
	if !ok {
		return fmt.Errorf("target offset %d is outside the map", st.nextTarget)
	}
	if err := r.cfg.Maps.FillSource(pctx, tp, v, first, int64(len(out))); err != nil {
		return fmt.Errorf("record %d records at source %d: %w", len(out), first, err)
	}
	r.mu.Lock()
	st.nextTarget += int64(len(out))
	st.copied += int64(len(out))
	r.mu.Unlock()
	return nil
}

// errHole is the target offset where a partition's log skips offsets.
type errHole int64

func (e errHole) Error() string {
	return fmt.Sprintf("the target skips offset %d (a transaction marker or aborted records)", int64(e))
}
