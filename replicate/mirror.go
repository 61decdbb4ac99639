// Package replicate is the ordered mirror from the source cluster to the
// target: every committed record of every selected topic is copied in order,
// per partition, exactly once, and the exact offset mapping is recorded in a
// MapStore.
//
// Exactly once across restarts does not need transactions on the target
// (whose aborted records a read_uncommitted consumer would see): the mirror is
// the only writer of its target partitions and copies in order with an
// idempotent producer, so after a crash the records the target holds beyond
// the recorded map are exactly the next records the mirror would copy. On
// start it counts them and maps them instead of writing them again.
package replicate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Config describes a mirror.
type Config struct {
	Source, Target []kgo.Opt // connection options: seed brokers, TLS, SASL
	Topics         Selection
	// Start is where partitions with no map yet begin: Earliest (the
	// default), Latest, or At(t).
	Start StartPosition
	// Recheck is how often topics and partitions are rediscovered.
	Recheck time.Duration
	Maps    MapStore
	Logger  *slog.Logger
	// MaxBufferedRecords bounds the records read but not yet acknowledged
	// by the target (default 10,000): past it the mirror stops reading.
	MaxBufferedRecords int
	// Owns, if set, restricts the mirror to the partitions this node may
	// write (one writer per partition across nodes; DESIGN.md, "Where
	// mirror writers run"). It is asked before a partition is taken, and
	// before each batch copied into it. Once it answers false the mirror
	// releases the partition: it stops reading it, records what the
	// target acknowledged if the map store still accepts it, and takes the
	// partition again only through discovery, resuming from the map. It is
	// asked often, so it must be a cheap local read. nil: every partition.
	Owns func(Partition) bool
}

// ErrNotOwner is what a MapStore returns (wrapped) when this node may no
// longer write a partition's map: another writer took it. The mirror then
// releases the partition instead of stopping.
var ErrNotOwner = errors.New("not the writer of this partition")

// StartPosition is where a partition without a map starts.
type StartPosition struct {
	latest bool
	millis int64 // > 0: first record at or after this time
}

var (
	Earliest = StartPosition{}
	Latest   = StartPosition{latest: true}
)

// At starts at the first record with a timestamp at or after t.
func At(t time.Time) StartPosition { return StartPosition{millis: t.UnixMilli()} }

// startOffset resolves the configured start position of a partition to a
// concrete source offset, which the anchor needs.
func (m *Mirror) startOffset(ctx context.Context, tp Partition) (int64, error) {
	var (
		offs kadm.ListedOffsets
		err  error
	)
	switch s := m.cfg.Start; {
	case s.latest:
		offs, err = m.srcAdm.ListEndOffsets(ctx, tp.Topic)
	case s.millis > 0:
		offs, err = m.srcAdm.ListOffsetsAfterMilli(ctx, s.millis, tp.Topic)
	default:
		offs, err = m.srcAdm.ListStartOffsets(ctx, tp.Topic)
	}
	if err != nil {
		return 0, fmt.Errorf("source start offset of %s/%d: %w", tp.Topic, tp.Partition, err)
	}
	o, ok := offs.Lookup(tp.Topic, tp.Partition)
	if !ok || o.Err != nil {
		return 0, fmt.Errorf("source start offset of %s/%d: %v", tp.Topic, tp.Partition, o.Err)
	}
	return o.Offset, nil
}

// Mirror copies the selected topics. Run drives it; Status reads it.
type Mirror struct {
	cfg    Config
	log    *slog.Logger
	src    *kgo.Client
	srcAdm *kadm.Client
	dstAdm *kadm.Client

	producersMu sync.Mutex
	producers   map[uint8]*kgo.Client // one per compression codec
	dstOpts     []kgo.Opt

	mu      sync.Mutex
	parts   map[Partition]*partState
	waiters map[Partition][]waiter // sync produce mode, see WaitMirrored
	fatal   error                  // first produce failure; Run returns it
	nudge   chan struct{}          // asks Run to discover topics now

	// The dual-write path (feed.go), under mu but fedSignal.
	fed          []fedBatches
	fedBytes     int
	fedSignal    chan struct{} // wakes Run's poll when something is fed
	fedRecords   int64         // copied from the produce path
	fedDropped   int64         // fed batches left to the fetch
	decompressor kgo.Decompressor

	// flushDone is the flush in flight (flushAsync), owned by Run's
	// goroutine; nil when none.
	flushDone chan flushResult

	// With Config.Owns: every selected partition at the last discovery,
	// and the partitions released with records maybe still in flight.
	known []Partition
	gone  map[Partition]*partState
}

// waiter is a caller of WaitMirrored.
type waiter struct {
	offset int64 // satisfied when nextSource > offset
	done   chan struct{}
}

// partState is one partition's progress, guarded by Mirror.mu.
type partState struct {
	tp         Partition
	skip       int64 // records already in the target, to map rather than copy
	nextTarget int64 // target offset of the next skipped record
	highWater  int64
	lastStable int64
	nextSource int64 // first source offset not yet acknowledged by the target
	copied     int64
	bytes      int64
	caughtUpAt time.Time            // last time lag was 0, for lag in seconds
	pending    offsetsync.OffsetMap // acknowledged, not yet in the MapStore
	segments   int
	seen       int64   // one past the last source offset fetched (data or marker)
	inflight   []int64 // source offsets produced, not yet acknowledged, in order
	flushing   int64   // first source offset being written to the MapStore, or -1

	codec    uint8 // codec of the last record sent
	unacked  int64 // produced, not yet acknowledged
	lastSent int64 // source offset of the last record produced
}

// New connects the mirror's clients. It does not copy anything until Run.
func New(cfg Config) (*Mirror, error) {
	if cfg.Maps == nil {
		return nil, errors.New("mirror needs a map store")
	}
	if cfg.Recheck <= 0 {
		cfg.Recheck = 5 * time.Second
	}
	if cfg.MaxBufferedRecords <= 0 {
		cfg.MaxBufferedRecords = 10_000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	src, err := kgo.NewClient(append(append([]kgo.Opt{}, cfg.Source...),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), // aborted records are not data
		// Markers are not copied either, but seeing them tells the mirror
		// it has passed their offsets (Covered).
		kgo.KeepControlRecords(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("source client: %w", err)
	}
	dst, err := kgo.NewClient(cfg.Target...)
	if err != nil {
		src.Close()
		return nil, fmt.Errorf("target client: %w", err)
	}
	m := &Mirror{
		cfg:       cfg,
		log:       cfg.Logger.With("component", "mirror"),
		src:       src,
		srcAdm:    kadm.NewClient(src),
		dstAdm:    kadm.NewClient(dst),
		producers: map[uint8]*kgo.Client{},
		parts:     make(map[Partition]*partState),
		gone:      make(map[Partition]*partState),
		waiters:   make(map[Partition][]waiter),
		nudge:     make(chan struct{}, 1),

		fedSignal:    make(chan struct{}, 1),
		decompressor: kgo.DefaultDecompressor(),
	}
	m.dstOpts = append(append([]kgo.Opt{}, cfg.Target...),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.MaxBufferedRecords(cfg.MaxBufferedRecords),
		kgo.ProducerLinger(time.Millisecond),
	)
	m.producers[0], err = kgo.NewClient(append(m.dstOpts, kgo.ProducerBatchCompression(kgo.NoCompression()))...)
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("target producer: %w", err)
	}
	return m, nil
}

// Close releases the clients. Call after Run returned.
func (m *Mirror) Close() {
	m.src.Close()
	m.dstAdm.Close()
	m.producersMu.Lock()
	defer m.producersMu.Unlock()
	for _, p := range m.producers {
		p.Close()
	}
}

// Run mirrors until ctx ends or a record cannot be written; it then flushes
// what was acknowledged into the map store. After an error, Close and start a
// new Mirror: it resumes exactly where the map and the target say.
func (m *Mirror) Run(ctx context.Context) error {
	if err := m.discover(ctx); err != nil {
		return err
	}
	nextDiscovery := time.Now().Add(m.cfg.Recheck)
	for {
		pollCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		// A fed batch ends the wait: it is copied without waiting for the
		// fetch (which returns what it buffered on the next poll).
		polled := make(chan struct{})
		go func() {
			select {
			case <-m.fedSignal:
				cancel()
			case <-polled:
			}
		}()
		fetches := m.src.PollRecords(pollCtx, 5000)
		close(polled)
		cancel()
		if ctx.Err() != nil {
			return m.stop(ctx.Err())
		}
		for _, fe := range fetches.Errors() {
			if !errors.Is(fe.Err, context.DeadlineExceeded) && !errors.Is(fe.Err, context.Canceled) {
				m.log.Warn("source fetch error", "topic", fe.Topic, "partition", fe.Partition, "err", fe.Err)
			}
		}
		// Fed batches first: the fetch has usually brought the same
		// records, and skips them once they are copied. Then again after
		// the fetch, for batches that continue what it brought.
		if err := m.drainFeeds(ctx); err != nil {
			return m.stop(err)
		}
		var copyErr error
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if copyErr == nil {
				copyErr = m.copyPartition(ctx, fp)
			}
		})
		if copyErr != nil {
			return m.stop(copyErr)
		}
		if err := m.drainFeeds(ctx); err != nil {
			return m.stop(err)
		}
		if err := m.flushAsync(ctx); err != nil {
			return m.stop(err)
		}
		if err := m.fatalErr(); err != nil {
			return m.stop(err)
		}
		m.checkOwnership(ctx)
		nudged := false
		select {
		case <-m.nudge:
			nudged = true
		default:
		}
		if nudged || time.Now().After(nextDiscovery) {
			if err := m.discover(ctx); err != nil {
				m.log.Warn("topic discovery failed; retrying", "err", err)
			}
			nextDiscovery = time.Now().Add(m.cfg.Recheck)
		}
	}
}

// stop waits for in-flight records so their mapping is not lost, then
// records it.
func (m *Mirror) stop(cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m.producersMu.Lock()
	for _, p := range m.producers {
		p.Flush(ctx)
	}
	m.producersMu.Unlock()
	if err := m.waitFlush(ctx); err != nil {
		return errors.Join(cause, err)
	}
	if err := m.afterFlush(ctx, m.flushMaps(ctx)); err != nil {
		return errors.Join(cause, err)
	}
	if errors.Is(cause, context.Canceled) {
		return nil
	}
	return cause
}

func (m *Mirror) fatalErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fatal
}

// copyPartition copies one partition's fetched records in order.
func (m *Mirror) copyPartition(ctx context.Context, fp kgo.FetchTopicPartition) error {
	tp := Partition{fp.Topic, fp.Partition}
	m.mu.Lock()
	st := m.parts[tp]
	if st == nil {
		m.mu.Unlock()
		return nil // a partition removed since the fetch
	}
	st.highWater, st.lastStable = fp.HighWatermark, fp.LastStableOffset
	st.noteLag()
	m.mu.Unlock()
	if len(fp.Records) > 0 && m.cfg.Owns != nil && !m.cfg.Owns(tp) {
		m.release(ctx, tp, "another writer owns it now")
		return nil
	}
	// Checked before every copy, not only every poll: once the partition
	// flips, the reverse mirror writes the target's new records into the
	// source, and copying those back would duplicate them in the target.
	// They exist only after the flip, so this check after the fetch is
	// enough.
	if len(fp.Records) > 0 && m.flipped(tp) {
		m.release(ctx, tp, "its producers moved to the target")
		return nil
	}
	return m.copyRecords(ctx, tp, st, fp.Records, func(i int) uint8 { return fp.Records[i].Attrs.CompressionType() })
}

// copyRecords copies records of one partition in offset order; codec gives
// the compression codec of records[i], which the target batch keeps.
// Records the mirror has already seen (fed from the produce path, see
// feed.go) are skipped.
func (m *Mirror) copyRecords(ctx context.Context, tp Partition, st *partState, records []*kgo.Record, codecOf func(i int) uint8) error {
	for i, r := range records {
		m.mu.Lock()
		if r.Offset < st.seen {
			m.mu.Unlock()
			continue // copied already, from the produce path
		}
		st.seen = r.Offset + 1
		if r.Attrs.IsControl() {
			m.mu.Unlock()
			continue // a transaction marker: not data
		}
		if st.skip > 0 {
			// Already in the target from before a restart: map, don't copy.
			err := m.mapped(st, r.Offset, st.nextTarget)
			st.nextTarget++
			st.skip--
			m.mu.Unlock()
			if err != nil {
				return fmt.Errorf("%s/%d: %w", tp.Topic, tp.Partition, err)
			}
			continue
		}
		if st.unacked > 0 && r.Offset != st.lastSent+1 {
			// A hole in the source (a transaction marker, aborted or
			// compacted records) starts a new map segment. The record
			// after it must start a new batch on the target too: a fetch
			// served by the target after a producer flip moves each batch
			// to virtual offsets by its base offset alone, which cannot
			// express a hole inside a batch.
			m.mu.Unlock()
			if err := m.waitAcked(ctx, st); err != nil {
				return err
			}
			m.mu.Lock()
		}
		st.lastSent = r.Offset
		codec := codecOf(i)
		if st.unacked > 0 {
			// One producer per codec: switching while this partition has
			// records in flight would let two producers reorder it, and
			// waiting for them costs a round trip to the target per
			// switch. franz-go sends a batch uncompressed when compressing
			// does not shrink it, so a partition's codecs alternate; with
			// a wait per switch the mirror fell 20 s behind a target with
			// 200 ms of latency (integration.TestFaultSlowTarget). Keep
			// the codec in use until nothing is in flight: the records are
			// the same, only the target batch's compression differs.
			codec = st.codec
		}
		st.codec = codec
		st.unacked++
		st.inflight = append(st.inflight, r.Offset)
		m.mu.Unlock()
		producer, err := m.producer(codec)
		if err != nil {
			return err
		}
		srcOffset := r.Offset
		out := &kgo.Record{
			Topic: r.Topic, Partition: r.Partition,
			Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp,
		}
		producer.Produce(ctx, out, func(out *kgo.Record, err error) {
			m.mu.Lock()
			defer m.mu.Unlock()
			st.unacked--
			st.inflight = st.inflight[1:] // promises complete in order per partition
			if err == nil {
				err = m.mapped(st, srcOffset, out.Offset)
				st.bytes += recordBytes(out)
				st.noteLag()
			}
			if err != nil && m.fatal == nil {
				m.fatal = fmt.Errorf("mirror %s/%d source offset %d: %w", tp.Topic, tp.Partition, srcOffset, err)
			}
		})
	}
	return nil
}

// waitAcked waits until the target acknowledged every record produced to
// st's partition.
func (m *Mirror) waitAcked(ctx context.Context, st *partState) error {
	for {
		m.mu.Lock()
		n := st.unacked
		m.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Microsecond):
		}
		if err := m.fatalErr(); err != nil {
			return err
		}
	}
}

// mapped records that source offset src is target offset dst. Called with mu held.
func (m *Mirror) mapped(st *partState, src, dst int64) error {
	if _, err := st.pending.Append(offsetsync.Segment{Virtual: src, Source: src, Target: dst, Length: 1}); err != nil {
		return err
	}
	st.nextSource = src + 1
	st.copied++
	if ws := m.waiters[st.tp]; len(ws) > 0 {
		kept := ws[:0]
		for _, w := range ws {
			if w.offset < st.nextSource {
				close(w.done)
			} else {
				kept = append(kept, w)
			}
		}
		m.waiters[st.tp] = kept
	}
	return nil
}

// firstUnstored is the first source offset copied or being copied but not
// yet in the MapStore: every data record before it is in the stored map.
func (st *partState) firstUnstored() int64 {
	first := int64(math.MaxInt64)
	if st.flushing >= 0 {
		first = st.flushing
	}
	if len(st.pending) > 0 {
		first = min(first, st.pending[0].Source)
	}
	if len(st.inflight) > 0 {
		first = min(first, st.inflight[0])
	}
	return first
}

// Covered blocks until every record of tp before virtual position v is in
// the stored offset map, so that v translates exactly (PositionToTarget
// with covered=true): the mirror has fetched past v, and no record before v
// is still in flight. Topics outside the selection never become covered.
func (m *Mirror) Covered(ctx context.Context, tp Partition, v int64) error {
	if !m.cfg.Topics.matches(tp.Topic) {
		return fmt.Errorf("topic %s is not mirrored", tp.Topic)
	}
	for {
		m.mu.Lock()
		st := m.parts[tp]
		ok := st != nil && st.seen >= v && st.firstUnstored() >= v
		m.mu.Unlock()
		// A flipped partition is covered: the flip waited for everything
		// the source had, and the map is exact beyond it.
		if ok || m.flipped(tp) {
			return nil
		}
		if st == nil {
			select {
			case m.nudge <- struct{}{}:
			default:
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s/%d not mirrored up to %d: %w", tp.Topic, tp.Partition, v, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// WaitMirrored blocks until the source record at offset of tp is in the
// target, or ctx ends. Topics outside the selection return at once. It backs
// produce.mode=sync: the client's acknowledgement waits for both clusters.
func (m *Mirror) WaitMirrored(ctx context.Context, tp Partition, offset int64) error {
	if !m.cfg.Topics.matches(tp.Topic) {
		return nil
	}
	m.mu.Lock()
	st := m.parts[tp]
	if st != nil && st.nextSource > offset {
		m.mu.Unlock()
		return nil
	}
	w := waiter{offset: offset, done: make(chan struct{})}
	m.waiters[tp] = append(m.waiters[tp], w)
	m.mu.Unlock()
	if st == nil {
		select { // a topic just created by this produce: discover it now
		case m.nudge <- struct{}{}:
		default:
		}
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		m.mu.Lock()
		ws := m.waiters[tp]
		for i := range ws {
			if ws[i].done == w.done {
				m.waiters[tp] = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		m.mu.Unlock()
		return fmt.Errorf("source offset %d of %s/%d not mirrored yet: %w", offset, tp.Topic, tp.Partition, ctx.Err())
	}
}

// producer returns the target producer for a codec, so batches keep the
// source's compression. A partition changes codec only when none of its
// records is in flight (copyPartition): two producers never reorder it.
func (m *Mirror) producer(codec uint8) (*kgo.Client, error) {
	m.producersMu.Lock()
	defer m.producersMu.Unlock()
	if p := m.producers[codec]; p != nil {
		return p, nil
	}
	c, ok := codecs[codec]
	if !ok {
		return nil, fmt.Errorf("unknown compression codec %d in a source batch", codec)
	}
	p, err := kgo.NewClient(append(m.dstOpts, kgo.ProducerBatchCompression(c))...)
	if err != nil {
		return nil, fmt.Errorf("target producer (codec %d): %w", codec, err)
	}
	m.producers[codec] = p
	return p, nil
}

var codecs = map[uint8]kgo.CompressionCodec{
	0: kgo.NoCompression(), 1: kgo.GzipCompression(), 2: kgo.SnappyCompression(),
	3: kgo.Lz4Compression(), 4: kgo.ZstdCompression(),
}

// flushAsync starts moving acknowledged mappings into the map store, unless
// the previous flush still waits for its raft commit (the next one then
// takes more at once). The copy loop never waits for a commit: an fsync
// slowed by the brokers' writes on the same disk would stall the copy, and
// produce-to-target lag with it. Nothing is lost by storing late: on a
// restart the target's records beyond the stored map are the next ones the
// mirror copied, in order, and are mapped again (resume).
func (m *Mirror) flushAsync(ctx context.Context) error {
	if m.flushDone != nil {
		select {
		case res := <-m.flushDone:
			m.flushDone = nil
			if err := m.afterFlush(ctx, res); err != nil {
				return err
			}
		default:
			return nil
		}
	}
	done := make(chan flushResult, 1)
	m.flushDone = done
	go func() {
		// Not the loop's context: a flush that shutdown cancelled
		// halfway would leave a hole in the map before the final one.
		fctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
		defer cancel()
		done <- m.flushMaps(fctx)
	}()
	return nil
}

// flushTimeout bounds one flush's raft commits.
const flushTimeout = 30 * time.Second

// waitFlush waits for the flush in flight, if any, and handles its result.
// Called from the loop only, like flushAsync.
func (m *Mirror) waitFlush(ctx context.Context) error {
	if m.flushDone == nil {
		return nil
	}
	var res flushResult
	select {
	case res = <-m.flushDone:
	case <-ctx.Done():
		return fmt.Errorf("wait for the offset map flush: %w", ctx.Err())
	}
	m.flushDone = nil
	return m.afterFlush(ctx, res)
}

// flushResult is what one flush did: partitions another writer took, or
// the first failure.
type flushResult struct {
	notOwned []Partition
	err      error
}

// afterFlush releases the partitions a flush found taken by another writer.
func (m *Mirror) afterFlush(ctx context.Context, res flushResult) error {
	for _, tp := range res.notOwned {
		m.release(ctx, tp, "another writer owns it now")
	}
	return res.err
}

// flushMaps moves acknowledged mappings into the map store.
func (m *Mirror) flushMaps(ctx context.Context) flushResult {
	m.mu.Lock()
	batch := make(map[Partition]offsetsync.OffsetMap)
	for tp, st := range m.parts {
		if len(st.pending) > 0 {
			batch[tp] = st.pending
			st.flushing = st.pending[0].Source
			st.pending = nil
		}
	}
	m.mu.Unlock()
	// Partitions are appended concurrently: each append to the raft store
	// waits for a commit, and raft batches concurrent proposals into one
	// fsync, where one after the other they would wait for one fsync per
	// partition.
	errs := make(map[Partition]error, len(batch))
	var errsMu sync.Mutex
	var wg sync.WaitGroup
	for tp, segs := range batch {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := m.cfg.Maps.Append(ctx, tp, segs)
			n := len(m.cfg.Maps.Map(tp))
			m.mu.Lock()
			if st := m.parts[tp]; st != nil {
				st.segments = n
				st.flushing = -1
			}
			m.mu.Unlock()
			errsMu.Lock()
			errs[tp] = err
			errsMu.Unlock()
		}()
	}
	wg.Wait()
	var res flushResult
	for tp, err := range errs {
		switch {
		case errors.Is(err, ErrNotOwner):
			res.notOwned = append(res.notOwned, tp)
		case err != nil && res.err == nil:
			res.err = fmt.Errorf("record offset map of %s/%d: %w", tp.Topic, tp.Partition, err)
		}
	}
	return res
}

// checkOwnership releases the partitions this node may no longer write, and
// runs discovery early when it may write one that it does not copy yet.
func (m *Mirror) checkOwnership(ctx context.Context) {
	var lost []Partition
	gained := false
	m.mu.Lock()
	for tp := range m.parts {
		if m.cfg.Owns != nil && !m.cfg.Owns(tp) || m.flipped(tp) {
			lost = append(lost, tp)
		}
	}
	for _, tp := range m.known {
		if m.parts[tp] == nil && m.cfg.Owns != nil && m.cfg.Owns(tp) && !m.flipped(tp) {
			gained = true
			break
		}
	}
	m.mu.Unlock()
	for _, tp := range lost {
		m.release(ctx, tp, "no longer its writer")
	}
	if gained {
		select {
		case m.nudge <- struct{}{}:
		default:
		}
	}
}

// release stops copying a partition. Its acknowledged mappings are recorded
// if the map store still takes them; otherwise the next writer finds those
// records in the target and maps them (see resume). The partition is taken
// again only through discovery, once its records in flight are settled.
func (m *Mirror) release(ctx context.Context, tp Partition, why string) {
	// The flush in flight may hold earlier segments of tp: they go first.
	if err := m.waitFlush(ctx); err != nil {
		m.log.Warn("offset map flush before a release failed; the next writer maps those records", "err", err)
	}
	m.mu.Lock()
	st := m.parts[tp]
	if st == nil {
		m.mu.Unlock()
		return
	}
	delete(m.parts, tp)
	m.gone[tp] = st
	segs := st.pending
	st.pending = nil
	m.mu.Unlock()
	m.src.RemoveConsumePartitions(map[string][]int32{tp.Topic: {tp.Partition}})
	if len(segs) > 0 {
		if err := m.cfg.Maps.Append(ctx, tp, segs); err != nil && !errors.Is(err, ErrNotOwner) {
			m.log.Warn("offset map of a released partition not recorded; its next writer will map those records",
				"topic", tp.Topic, "partition", tp.Partition, "err", err)
		}
	}
	m.log.Info("released partition", "topic", tp.Topic, "partition", tp.Partition, "why", why)
}

// discover brings new topics and partitions into the mirror.
func (m *Mirror) discover(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	counts, err := syncTopics(ctx, m.srcAdm, m.dstAdm, m.cfg.Topics, m.owns)
	if err != nil {
		return err
	}
	var fresh []Partition
	m.mu.Lock()
	m.known = m.known[:0]
	for topic, n := range counts {
		for p := int32(0); p < int32(n); p++ {
			tp := Partition{topic, p}
			m.known = append(m.known, tp)
			if _, ok := m.parts[tp]; ok || !m.mayTake(tp) {
				continue
			}
			fresh = append(fresh, tp)
		}
	}
	m.mu.Unlock()
	if len(fresh) == 0 {
		return nil
	}
	sort.Slice(fresh, func(i, j int) bool {
		return fresh[i].Topic < fresh[j].Topic || fresh[i].Topic == fresh[j].Topic && fresh[i].Partition < fresh[j].Partition
	})
	topics := make([]string, 0, len(counts))
	for t := range counts {
		topics = append(topics, t)
	}
	ends, err := m.dstAdm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return fmt.Errorf("target end offsets: %w", err)
	}
	starts, err := m.dstAdm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return fmt.Errorf("target start offsets: %w", err)
	}
	assign := make(map[string]map[int32]kgo.Offset)
	for _, tp := range fresh {
		end, ok := ends.Lookup(tp.Topic, tp.Partition)
		if !ok || end.Err != nil {
			// Not yet visible on the target (a topic just created there
			// has no leader for a moment): look again shortly rather than
			// at the next recheck, which would hold its records for
			// seconds.
			time.AfterFunc(200*time.Millisecond, func() {
				select {
				case m.nudge <- struct{}{}:
				default:
				}
			})
			continue
		}
		start, _ := starts.Lookup(tp.Topic, tp.Partition)
		st, from, err := m.resume(ctx, tp, start.Offset, end.Offset)
		if err != nil {
			return err
		}
		st.tp = tp
		m.mu.Lock()
		m.parts[tp] = st
		m.mu.Unlock()
		if assign[tp.Topic] == nil {
			assign[tp.Topic] = make(map[int32]kgo.Offset)
		}
		assign[tp.Topic][tp.Partition] = from
		m.log.Info("mirroring partition", "topic", tp.Topic, "partition", tp.Partition, "skip", st.skip, "target_end", end.Offset)
	}
	m.src.AddConsumePartitions(assign)
	return nil
}

// mayTake reports whether discovery may start copying tp: this node owns it
// and no record of an earlier copy of it is still in flight (the resume
// would miscount the target's records). Called with mu held.
func (m *Mirror) mayTake(tp Partition) bool {
	if g := m.gone[tp]; g != nil {
		if g.unacked > 0 {
			return false
		}
		delete(m.gone, tp)
	}
	return (m.cfg.Owns == nil || m.cfg.Owns(tp)) && !m.flipped(tp)
}

// flipped reports whether tp's producers moved to the target (its map ends
// with the flip's open segment): the source gets nothing to copy any more,
// and a record written there directly would have no virtual offset.
func (m *Mirror) flipped(tp Partition) bool {
	if l, ok := m.cfg.Maps.(lastSegmenter); ok {
		last, ok := l.LastSegment(tp)
		return ok && last.Open()
	}
	return m.cfg.Maps.Map(tp).Flipped()
}

// lastSegmenter is a MapStore that reads a map's last segment without
// copying the map (flipped is asked for every partition on every poll).
type lastSegmenter interface {
	LastSegment(tp Partition) (offsetsync.Segment, bool)
}

// resume decides where a partition starts from the map and the target log.
// A partition seen for the first time gets an anchor in the map before any
// record is copied.
func (m *Mirror) resume(ctx context.Context, tp Partition, targetStart, targetEnd int64) (*partState, kgo.Offset, error) {
	segs := m.cfg.Maps.Map(tp)
	last, ok := segs.Last()
	if !ok {
		if targetEnd > targetStart {
			return nil, kgo.Offset{}, fmt.Errorf("target partition %s/%d already holds %d records that kmigrate did not write; mirroring into it would duplicate them: empty it or exclude the topic", tp.Topic, tp.Partition, targetEnd-targetStart)
		}
		from, err := m.startOffset(ctx, tp)
		if err != nil {
			return nil, kgo.Offset{}, err
		}
		last = offsetsync.Segment{Virtual: from, Source: from, Target: targetEnd}
		if err := m.cfg.Maps.Append(ctx, tp, []offsetsync.Segment{last}); err != nil {
			return nil, kgo.Offset{}, fmt.Errorf("anchor offset map of %s/%d: %w", tp.Topic, tp.Partition, err)
		}
	}
	extra := targetEnd - last.TargetEnd()
	if extra < 0 {
		return nil, kgo.Offset{}, fmt.Errorf("target partition %s/%d ends at offset %d but the map records offsets up to %d: the target lost records", tp.Topic, tp.Partition, targetEnd, last.TargetEnd())
	}
	st := &partState{skip: extra, nextTarget: last.TargetEnd(), nextSource: last.SourceEnd(), seen: last.SourceEnd(), segments: len(segs), flushing: -1}
	return st, kgo.NewOffset().At(last.SourceEnd()), nil
}

// owns reports whether the mirror already maps a topic (it created it or
// copied into it, here or on another writer node), so that new source
// partitions may be added on the target.
func (m *Mirror) owns(topic string) bool {
	m.mu.Lock()
	for tp := range m.parts {
		if tp.Topic == topic {
			m.mu.Unlock()
			return true
		}
	}
	m.mu.Unlock()
	return len(m.cfg.Maps.Map(Partition{topic, 0})) > 0
}

// lag is the committed source records not yet in the target.
func (st *partState) lag() int64 {
	if lag := st.lastStable - st.nextSource; st.lastStable > 0 && lag > 0 {
		return lag
	}
	return 0
}

// noteLag remembers when the partition was last caught up.
func (st *partState) noteLag() {
	if st.lag() == 0 {
		st.caughtUpAt = time.Now()
	}
}

func recordBytes(r *kgo.Record) int64 {
	n := len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return int64(n)
}

// PartitionStatus is one partition's mirror progress.
type PartitionStatus struct {
	Topic      string `json:"topic"`
	Partition  int32  `json:"partition"`
	NextSource int64  `json:"next_source_offset"`
	LastStable int64  `json:"source_last_stable_offset"`
	Lag        int64  `json:"lag_records"`
	LagMs      int64  `json:"lag_ms"` // time since last fully mirrored; 0 while caught up
	Copied     int64  `json:"copied"`
	Segments   int    `json:"map_segments"`
}

// Status reports every partition, sorted.
func (m *Mirror) Status() []PartitionStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	out := make([]PartitionStatus, 0, len(m.parts))
	for tp, st := range m.parts {
		lag, lagMs := st.lag(), int64(0)
		if lag > 0 && !st.caughtUpAt.IsZero() {
			lagMs = now.Sub(st.caughtUpAt).Milliseconds()
		}
		out = append(out, PartitionStatus{tp.Topic, tp.Partition, st.nextSource, st.lastStable, lag, lagMs, st.copied, st.segments})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Topic < out[j].Topic || out[i].Topic == out[j].Topic && out[i].Partition < out[j].Partition
	})
	return out
}
