package proxy

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Topic producer primaries, as stored by the control plane (raftstore) and
// sequenced by offsetsync.TopicCutover.
const (
	primarySource      = "source"
	primaryDraining    = "draining"
	primaryTarget      = "target"
	primaryRollingBack = "rolling-back"
)

// DefaultProduceHold bounds how long a produce waits while its topic flips;
// past it the produce is answered with a retriable error.
const DefaultProduceHold = 15 * time.Second

// topicPrimary is the cluster that takes a topic's produces now.
func (p *Proxy) topicPrimary(topic string) string {
	if p.target == nil || p.cfg.Routing == nil {
		return primarySource
	}
	if pr := p.cfg.Routing.TopicPrimary(topic); pr != "" {
		return pr
	}
	return primarySource
}

// servedByTarget reports whether a topic's records are read and written on
// the target: its producers flipped, so its virtual log continues there.
func (p *Proxy) servedByTarget(topic string) bool {
	pr := p.topicPrimary(topic)
	return pr == primaryTarget || pr == primaryRollingBack
}

// produceHeld reports whether a flip holds a topic's produces.
func (p *Proxy) produceHeld(topic string) bool {
	pr := p.topicPrimary(topic)
	return pr == primaryDraining || pr == primaryRollingBack
}

// produceGate counts, per topic, the produces forwarded to the source and not
// yet answered: a topic flip waits for none to be left before it reads the
// source's end offsets.
type produceGate struct {
	mu       sync.Mutex
	inflight map[string]int
}

func (g *produceGate) add(topics []string, delta int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inflight == nil {
		g.inflight = make(map[string]int)
	}
	for _, t := range topics {
		if g.inflight[t] += delta; g.inflight[t] <= 0 {
			delete(g.inflight, t)
		}
	}
}

// InflightProduces counts topic's produces forwarded to the source and not
// yet answered.
// Open transactions through this proxy that touch topic count too: their
// markers are yet to be written.
func (p *Proxy) InflightProduces(topic string) int {
	p.produces.mu.Lock()
	n := p.produces.inflight[topic]
	p.produces.mu.Unlock()
	return n + p.openTxns(topic)
}

// producerIDs maps the producer ids clients got from the source onto ids of
// the cluster a flip sends their batches to, so that idempotent producers
// keep producing across a topic flip with no error: a source id means
// nothing to the target, and its sequence numbers there would not start at
// zero. Each (client id, epoch, topic, era of the topic's route) gets a fresh
// id from InitProducerId on the cluster written to; each partition's
// sequences are shifted so that the first batch of the era is sequence 0.
// An era is one stay of the topic on one cluster: after a rollback the
// source gets a fresh id too, since the client's sequences went on at the
// target meanwhile and the source would see a gap. A client that bumps its
// epoch (KIP-360) gets a new mapping, as it would get a new epoch from a
// broker.
type producerIDs struct {
	mu     sync.Mutex
	m      map[producerKey]*mappedProducer
	issued map[int64]bool // ids the target handed out itself (source unreachable)
}

type producerKey struct {
	to    *cluster
	id    int64
	epoch int16
	topic string
	era   uint64
}

type mappedProducer struct {
	id    int64
	epoch int16
	mu    sync.Mutex
	base  map[int32]int32 // partition → client sequence sent as 0
	// early is when a partition's first batch was first refused as ahead
	// of the source's next sequence (see mapProducers); past
	// DefaultProduceHold the batch is let through, so that a predecessor
	// written elsewhere (another node's mapping) cannot block it forever.
	early map[int32]time.Time
}

// maxMappedProducers bounds the mapping table; past it the oldest eras are
// forgotten wholesale (a producer still writing then gets a fresh id, which
// is safe: its next batch starts a new sequence).
const maxMappedProducers = 100_000

// issuedByTarget records a producer id the target handed to a client.
func (ids *producerIDs) issuedByTarget(id int64, _ int16) {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if ids.issued == nil {
		ids.issued = make(map[int64]bool)
	}
	ids.issued[id] = true
}

// mappedProducer returns the producer a client's batches become on a
// cluster, asking that cluster for a new id the first time.
func (p *Proxy) mappedProducer(ctx context.Context, k producerKey) (*mappedProducer, error) {
	p.pids.mu.Lock()
	mp := p.pids.m[k]
	p.pids.mu.Unlock()
	if mp != nil {
		return mp, nil
	}
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionTimeoutMillis = 60_000
	req.ProducerID, req.ProducerEpoch = -1, -1
	resp, err := k.to.controlRequest(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("init producer id on the %s for client producer %d: %w", k.to.up.Name, k.id, err)
	}
	r := resp.(*kmsg.InitProducerIDResponse)
	if err := kerr.ErrorForCode(r.ErrorCode); err != nil {
		return nil, fmt.Errorf("init producer id on the %s for client producer %d: %w", k.to.up.Name, k.id, err)
	}
	p.pids.mu.Lock()
	defer p.pids.mu.Unlock()
	if p.pids.m == nil || len(p.pids.m) >= maxMappedProducers {
		p.pids.m = make(map[producerKey]*mappedProducer)
	}
	if mp := p.pids.m[k]; mp != nil { // another connection won the race
		return mp, nil
	}
	mp = &mappedProducer{id: r.ProducerID, epoch: r.ProducerEpoch, base: make(map[int32]int32)}
	p.pids.m[k] = mp
	p.log.Info("idempotent producer mapped across a topic flip", "cluster", k.to.up.Name, "topic", k.topic, "era", k.era,
		"client_id", k.id, "client_epoch", k.epoch, "mapped_id", mp.id, "mapped_epoch", mp.epoch)
	return mp, nil
}

// needsProducerMapping reports whether batches for topic sent to cluster to
// must have their producer mapped: always toward the target, and toward the
// source once the topic came back from the target (route epoch 4 and on:
// source, draining, target, rolling-back, source).
func (p *Proxy) needsProducerMapping(to *cluster, topic string) bool {
	if to == p.target {
		return true
	}
	return p.target != nil && p.cfg.Routing != nil && p.cfg.Routing.TopicEpoch(topic) >= 4
}

// mapProducers rewrites the producer of the batches of a produce bound for
// cluster to: transactional batches after their transaction's home
// (txnBatchFor), idempotent ones where needsProducerMapping says so. It
// returns, per partition key, an error code for partitions that cannot be
// sent (answered locally).
func (c *clientConn) mapProducers(ctx context.Context, to *cluster, topics []kmsg.ProduceRequestTopic) (map[string]int16, error) {
	var refused map[string]int16
	refuse := func(topic string, partition int32, code int16) {
		if refused == nil {
			refused = make(map[string]int16)
		}
		refused[partitionKey(topic, partition)] = code
	}
	for i := range topics {
		t := &topics[i]
		mapIdempotent := c.p.needsProducerMapping(to, t.Topic)
		var era uint64
		if mapIdempotent {
			era = c.p.cfg.Routing.TopicEpoch(t.Topic)
		}
		for j := range t.Partitions {
			pt := &t.Partitions[j]
			batches, err := protocol.Batches(pt.Records)
			if err != nil {
				return nil, err
			}
			for _, b := range batches {
				if b.Transactional() {
					if code := c.txnBatchFor(to, t.Topic, pt.Partition, b); code != 0 {
						refuse(t.Topic, pt.Partition, code)
						break
					}
					continue
				}
				if !mapIdempotent || b.ProducerID() < 0 {
					continue
				}
				c.p.pids.mu.Lock()
				issued := c.p.pids.issued[b.ProducerID()]
				c.p.pids.mu.Unlock()
				if issued && to == c.p.target {
					continue // the target's own id
				}
				mp, err := c.p.mappedProducer(ctx, producerKey{to, b.ProducerID(), b.ProducerEpoch(), t.Topic, era})
				if err != nil {
					return nil, asUpstreamError(err)
				}
				mp.mu.Lock()
				_, based := mp.base[pt.Partition]
				mp.mu.Unlock()
				if !based && to == c.p.target && len(batches) == 1 && sourceEraUnmapped(era) {
					// The first batch of this producer on the partition
					// since the flip becomes sequence 0 on the target, so it
					// must be the one that follows what the source holds:
					//  - a retry of a batch the source wrote but whose
					//    answer the client never got (the source died, the
					//    request timed out) was copied by the mirror
					//    already; sent on, it would be written twice. It is
					//    answered as a broker answers a duplicate it can no
					//    longer place, which clients take as success.
					//  - a batch whose predecessors were answered with an
					//    error (a produce held past its bound on a node
					//    that saw the flip late) would become sequence 0
					//    ahead of them; they would then be refused as out
					//    of order, the client would bump its epoch and send
					//    everything it had not seen acknowledged again
					//    under a new mapping: duplicates. It is refused as
					//    a leader change is, and comes again after them.
					// Found by integration.TestFaultSourceBrokerKilled (one
					// record twice in the target log) and
					// TestFaultControlPlaneDuringFlips (a voter cut off
					// during a topic flip: 33 records twice, 3 reordered).
					if next, ok := c.sourceNextSequence(ctx, t.Topic, pt.Partition, b); ok {
						first, last := b.BaseSequence(), b.BaseSequence()+b.LastOffsetDelta()
						if last < next {
							c.log.Info("dropped a retried batch the source holds since before the topic flip", "topic", t.Topic, "partition", pt.Partition,
								"producer_id", b.ProducerID(), "sequence", first, "source_next_sequence", next)
							refuse(t.Topic, pt.Partition, kerr.DuplicateSequenceNumber.Code)
							break
						}
						mp.mu.Lock()
						since, seen := mp.early[pt.Partition]
						if !seen && first > next {
							if mp.early == nil {
								mp.early = make(map[int32]time.Time)
							}
							since = time.Now()
							mp.early[pt.Partition] = since
						}
						mp.mu.Unlock()
						if first > next && time.Since(since) < DefaultProduceHold {
							c.log.Info("refused a batch ahead of its producer's next sequence after the topic flip", "topic", t.Topic, "partition", pt.Partition,
								"producer_id", b.ProducerID(), "sequence", first, "source_next_sequence", next)
							refuse(t.Topic, pt.Partition, kerr.NotLeaderForPartition.Code)
							break
						}
					}
				}
				mp.mu.Lock()
				base, ok := mp.base[pt.Partition]
				if !ok {
					base = b.BaseSequence()
					mp.base[pt.Partition] = base
				}
				mp.mu.Unlock()
				// Sequences wrap at int32 like the client's own.
				b.SetProducer(mp.id, mp.epoch, int32(uint32(b.BaseSequence())-uint32(base))&0x7fffffff)
			}
		}
	}
	return refused, nil
}

// sourceEraUnmapped says whether the topic's last stay on the source, two
// route changes before era (source → draining → target), wrote under the
// clients' own producer ids (needsProducerMapping maps them from epoch 4
// on): only then does the source's producer state speak of the ids the
// clients send, rather than of what they sent before a rollback.
func sourceEraUnmapped(era uint64) bool { return era >= 2 && era < 4+2 }

// sourceNextSequence is the sequence the source expects next from batch
// b's producer (its id and epoch) on a partition: one past the last it
// holds, from its producer state (DescribeProducers on the partition's
// leader). ok is false when the source cannot tell: the producer never
// wrote the partition there (or expired), the batch has no sequence or
// wraps, or the source cannot be asked (down, too old), which is logged;
// the batch then goes to the target as before. Only the client's own id is
// looked up, so this covers the first flip, not a batch retried across a
// rollback and a second flip.
func (c *clientConn) sourceNextSequence(ctx context.Context, topic string, partition int32, b protocol.Batch) (next int32, ok bool) {
	first := b.BaseSequence()
	if first < 0 || first+b.LastOffsetDelta() < first {
		return 0, false
	}
	src := c.p.source
	_, max, supported := src.supports(61)
	if !supported {
		return 0, false
	}
	req := kmsg.NewPtrDescribeProducersRequest()
	req.Version = min16(max, req.MaxVersion())
	rt := kmsg.NewDescribeProducersRequestTopic()
	rt.Topic, rt.Partitions = topic, []int32{partition}
	req.Topics = append(req.Topics, rt)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	warn := func(err error) (int32, bool) {
		warnOnce.warn(c.log, "cannot ask the source which sequence a producer's first batch since the flip should carry; sending it to the target as it is",
			"topic", topic, "partition", partition, "producer_id", b.ProducerID(), "err", err)
		return 0, false
	}
	bc, err := c.upstream(src, src.leader(ctx, topic, partition))
	if err != nil {
		return warn(err)
	}
	raw, err := bc.roundTrip(ctx, req)
	if err != nil {
		return warn(err)
	}
	for _, t := range raw.(*kmsg.DescribeProducersResponse).Topics {
		for _, p := range t.Partitions {
			if t.Topic != topic || p.Partition != partition {
				continue
			}
			if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
				return warn(err)
			}
			for _, ap := range p.ActiveProducers {
				if ap.ProducerID == b.ProducerID() && ap.ProducerEpoch == int32(b.ProducerEpoch()) && ap.LastSequence >= 0 {
					return ap.LastSequence + 1, true
				}
			}
		}
	}
	return 0, false
}

// refusalMessage explains a produce partition answered by the proxy.
func refusalMessage(code int16) string {
	switch code {
	case kerr.DuplicateSequenceNumber.Code:
		return "kmigrate: the source holds this batch since before the topic flipped"
	case kerr.NotLeaderForPartition.Code:
		return "kmigrate: the topic flipped; this producer's earlier batches must reach the target first"
	}
	return "kmigrate: this transaction runs on the other cluster (its topic flipped); abort it and run it again"
}

// mapOf is the offset map of a partition served by the target.
func (c *clientConn) mapOf(topic string, partition int32) offsetsync.OffsetMap {
	return c.p.cfg.Maps.OffsetMap(topic, partition)
}

// virtualPosition translates a target position (an end offset, a log start)
// to a virtual one; below the mapped range it is the map's start, as the
// virtual log holds nothing earlier that the target has.
func virtualPosition(m offsetsync.OffsetMap, t int64) int64 {
	if t < 0 {
		return t
	}
	if v, err := m.PositionToVirtual(t); err == nil {
		return v
	}
	if len(m) > 0 && m[0].Target != offsetsync.NoOffset && t < m[0].Target {
		return m[0].Virtual
	}
	return -1
}

// produceToVirtual translates a target's Produce answer for the partitions
// of flipped topics.
func (c *clientConn) produceToVirtual(resp *kmsg.ProduceResponse) {
	for i := range resp.Topics {
		t := &resp.Topics[i]
		for j := range t.Partitions {
			pt := &t.Partitions[j]
			m := c.mapOf(t.Topic, pt.Partition)
			if pt.ErrorCode == 0 || pt.BaseOffset >= 0 {
				if v, ok := m.TargetToVirtual(pt.BaseOffset); ok {
					pt.BaseOffset = v
				} else if pt.BaseOffset >= 0 {
					c.log.Error("target produce offset outside the offset map", "topic", t.Topic, "partition", pt.Partition, "offset", pt.BaseOffset)
					pt.BaseOffset = -1
				}
			}
			pt.LogStartOffset = virtualPosition(m, pt.LogStartOffset)
		}
	}
}

// topicPartition names a partition in the proxy's per-request tables.
type topicPartition struct {
	topic     string
	partition int32
}

// fetchMaps holds, for one fetch, the offset maps of its partitions whose
// topics flipped, each read once (a read copies the map out of the control
// plane's state), and the partitions whose position the target cannot
// serve: history older than the mirror's start stays on the source.
type fetchMaps struct {
	maps     map[topicPartition]offsetsync.OffsetMap
	toSource map[topicPartition]bool
}

func (c *clientConn) readFetchMaps(topics []kmsg.FetchRequestTopic) *fetchMaps {
	fm := &fetchMaps{}
	for _, t := range topics {
		if !c.p.servedByTarget(t.Topic) {
			continue
		}
		for _, p := range t.Partitions {
			if fm.maps == nil {
				fm.maps = make(map[topicPartition]offsetsync.OffsetMap)
				fm.toSource = make(map[topicPartition]bool)
			}
			tp := topicPartition{t.Topic, p.Partition}
			m := c.mapOf(t.Topic, p.Partition)
			fm.maps[tp] = m
			if _, err := m.PositionToTarget(p.FetchOffset, true); err != nil {
				fm.toSource[tp] = true
			}
		}
	}
	return fm
}

// of is a partition's map, read now if the fetch did not read it.
func (fm *fetchMaps) of(c *clientConn, topic string, partition int32) offsetsync.OffsetMap {
	if m, ok := fm.maps[topicPartition{topic, partition}]; ok {
		return m
	}
	return c.mapOf(topic, partition)
}

// fetchToTarget rewrites the partitions of a fetch bound for the target:
// positions to target offsets; epochs, which are the source's, withdrawn.
func (c *clientConn) fetchToTarget(topics []kmsg.FetchRequestTopic, fm *fetchMaps) {
	for i := range topics {
		t := &topics[i]
		for j := range t.Partitions {
			pt := &t.Partitions[j]
			if at, err := fm.of(c, t.Topic, pt.Partition).PositionToTarget(pt.FetchOffset, true); err == nil {
				pt.FetchOffset = at
			}
			pt.CurrentLeaderEpoch, pt.LastFetchedEpoch, pt.LogStartOffset = -1, -1, -1
		}
	}
}

// fetchToVirtual translates a target's Fetch answer: every offset, and the
// base offset of every batch (not covered by the batch CRC: the records stay
// as they are).
func (c *clientConn) fetchToVirtual(resp *kmsg.FetchResponse, fm *fetchMaps) {
	for i := range resp.Topics {
		t := &resp.Topics[i]
		for j := range t.Partitions {
			pt := &t.Partitions[j]
			m := fm.of(c, t.Topic, pt.Partition)
			pt.HighWatermark = virtualPosition(m, pt.HighWatermark)
			pt.LastStableOffset = virtualPosition(m, pt.LastStableOffset)
			pt.LogStartOffset = virtualPosition(m, pt.LogStartOffset)
			for k := range pt.AbortedTransactions {
				a := &pt.AbortedTransactions[k]
				a.FirstOffset = virtualPosition(m, a.FirstOffset)
			}
			pt.DivergingEpoch.Epoch, pt.DivergingEpoch.EndOffset = -1, -1
			pt.RecordBatches = c.batchesToVirtual(t.Topic, pt.Partition, m, pt.RecordBatches)
		}
	}
}

// batchesToVirtual moves each batch's base offset into the virtual log. A
// trailing partial batch (a fetch answer cut at max bytes) is dropped: its
// offsets cannot be rewritten and clients skip it anyway. A batch whose
// records would not stay contiguous there (it spans a hole of the map) ends
// the answer before it; the mirror starts a batch at every hole, so this is
// a defect to log, not a state to serve.
func (c *clientConn) batchesToVirtual(topic string, partition int32, m offsetsync.OffsetMap, records []byte) []byte {
	end := 0
	for _, b := range protocol.CompleteBatches(records) {
		base := b.BaseOffset()
		v, ok := m.TargetToVirtual(base)
		last, okLast := m.TargetToVirtual(base + int64(b.LastOffsetDelta()))
		if !ok || !okLast || last-v != int64(b.LastOffsetDelta()) {
			c.log.Error("target batch outside the offset map or across a hole; answer cut before it", "topic", topic, "partition", partition, "target_offset", base)
			break
		}
		b.SetBaseOffset(v)
		end += len(b)
	}
	return records[:end]
}

// listOffsetsToTarget and listOffsetsToVirtual translate ListOffsets for
// flipped topics: timestamps need nothing, answers cross the map.
func listOffsetsToTarget(topics []kmsg.ListOffsetsRequestTopic) {
	for i := range topics {
		for j := range topics[i].Partitions {
			topics[i].Partitions[j].CurrentLeaderEpoch = -1
		}
	}
}

// deleteRecordsToTarget translates the virtual offsets a DeleteRecords asks
// to delete before into the target's, for topics whose producers moved
// there. Only the target's log start moves: the source keeps its copy (a
// rollback serves those records again; see README, Limits).
func (c *clientConn) deleteRecordsToTarget(topics []kmsg.DeleteRecordsRequestTopic) {
	for i := range topics {
		t := &topics[i]
		for j := range t.Partitions {
			pt := &t.Partitions[j]
			if pt.Offset < 0 { // -1: up to the high watermark, the same on every side
				continue
			}
			m := c.mapOf(t.Topic, pt.Partition)
			at, err := m.PositionToTarget(pt.Offset, true)
			switch {
			case err == nil:
				pt.Offset = at
			case len(m) > 0 && pt.Offset < m[0].Virtual:
				// Before everything the target holds: nothing to delete.
				pt.Offset = m[0].Target
			default:
				// Not translatable: an offset no log has, which the broker
				// answers OFFSET_OUT_OF_RANGE as it would for a bad offset.
				pt.Offset = math.MaxInt64
			}
		}
	}
}

// deleteRecordsToVirtual translates the target's new log start offsets.
func (c *clientConn) deleteRecordsToVirtual(resp *kmsg.DeleteRecordsResponse) {
	for i := range resp.Topics {
		t := &resp.Topics[i]
		for j := range t.Partitions {
			pt := &t.Partitions[j]
			if pt.ErrorCode == 0 {
				pt.LowWatermark = virtualPosition(c.mapOf(t.Topic, pt.Partition), pt.LowWatermark)
			}
		}
	}
}

// describeProducersToVirtual translates the first offsets of the target's
// open transactions.
func (c *clientConn) describeProducersToVirtual(resp *kmsg.DescribeProducersResponse) {
	for i := range resp.Topics {
		t := &resp.Topics[i]
		for j := range t.Partitions {
			pt := &t.Partitions[j]
			for k := range pt.ActiveProducers {
				ap := &pt.ActiveProducers[k]
				if ap.CurrentTxnStartOffset >= 0 {
					ap.CurrentTxnStartOffset = virtualPosition(c.mapOf(t.Topic, pt.Partition), ap.CurrentTxnStartOffset)
				}
			}
		}
	}
}

func (c *clientConn) listOffsetsToVirtual(resp *kmsg.ListOffsetsResponse) {
	for i := range resp.Topics {
		t := &resp.Topics[i]
		for j := range t.Partitions {
			pt := &t.Partitions[j]
			if pt.ErrorCode != 0 || pt.Offset < 0 {
				continue
			}
			m := c.mapOf(t.Topic, pt.Partition)
			if v, ok := m.TargetToVirtual(pt.Offset); ok {
				pt.Offset = v
			} else {
				pt.Offset = virtualPosition(m, pt.Offset)
			}
			pt.LeaderEpoch = -1
		}
	}
}
