package replicate

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmigrate/kmigrate/protocol"
)

// The dual-write path. A Produce that passes through this node's proxy
// hands its record batches and the source offsets the broker gave them to
// the mirror (Feed), which copies them at once instead of waiting for its
// source fetch to bring them back. The fetch stays the source of truth: a
// fed batch is used only when it continues a partition exactly where the
// mirror is (its base offset is the next offset the mirror expects), and
// the fetch skips what was fed. Anything else, a gap (producers writing the
// source directly, transaction markers), a transactional batch (its fate is
// unknown until its marker), a full queue, is dropped and the fetch copies
// it. So feeding can make the mirror faster, never wrong.

// maxFedBytes bounds the fed batches waiting for the mirror's loop.
const maxFedBytes = 16 << 20

// fedBatches is one partition's part of a Produce the source acknowledged.
type fedBatches struct {
	tp            Partition
	base          int64  // source offset of the first record
	logAppendTime int64  // the broker's timestamp for every record; -1: CreateTime
	records       []byte // the record batches as produced
}

// Feed hands the mirror records a Produce just wrote to the source at
// baseOffset (logAppendTime as in the Produce answer). It never blocks and
// keeps records only for partitions this mirror writes.
func (m *Mirror) Feed(topic string, partition int32, baseOffset, logAppendTime int64, records []byte) {
	tp := Partition{topic, partition}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ours := m.parts[tp]; !ours || baseOffset < 0 {
		return
	}
	if m.fedBytes+len(records) > maxFedBytes {
		m.fedDropped++
		return
	}
	m.fed = append(m.fed, fedBatches{tp: tp, base: baseOffset, logAppendTime: logAppendTime, records: records})
	m.fedBytes += len(records)
	select {
	case m.fedSignal <- struct{}{}:
	default:
	}
}

// drainFeeds copies the fed batches that continue their partition; the
// others are dropped for the fetch to copy.
func (m *Mirror) drainFeeds(ctx context.Context) error {
	m.mu.Lock()
	fed := m.fed
	m.fed, m.fedBytes = nil, 0
	m.mu.Unlock()
	for _, f := range fed {
		m.mu.Lock()
		st := m.parts[f.tp]
		usable := st != nil && st.skip == 0 && st.seen == f.base
		m.mu.Unlock()
		var recs []*kgo.Record
		var codecs []uint8
		if usable {
			var err error
			recs, codecs, err = m.decodeFed(f)
			usable = err == nil && len(recs) > 0
			if err != nil {
				m.log.Debug("fed batch not decoded; the fetch copies it", "topic", f.tp.Topic, "partition", f.tp.Partition, "err", err)
			}
		}
		if usable && (m.cfg.Owns != nil && !m.cfg.Owns(f.tp) || m.flipped(f.tp)) {
			usable = false // the fetch path releases the partition
		}
		if !usable {
			m.mu.Lock()
			m.fedDropped++
			m.mu.Unlock()
			continue
		}
		if err := m.copyRecords(ctx, f.tp, st, recs, func(i int) uint8 { return codecs[i] }); err != nil {
			return fmt.Errorf("fed records of %s/%d: %w", f.tp.Topic, f.tp.Partition, err)
		}
		m.mu.Lock()
		m.fedRecords += int64(len(recs))
		m.mu.Unlock()
	}
	return nil
}

// decodeFed turns fed batches into records with their source offsets. A
// transactional or control batch ends the decoding with an error: its
// records are the fetch's to copy (read_committed).
func (m *Mirror) decodeFed(f fedBatches) ([]*kgo.Record, []uint8, error) {
	batches, err := protocol.Batches(f.records)
	if err != nil {
		return nil, nil, err
	}
	var recs []*kgo.Record
	var codecs []uint8
	next := f.base
	for _, raw := range batches {
		var b kmsg.RecordBatch
		if err := b.ReadFrom(raw); err != nil {
			return nil, nil, fmt.Errorf("record batch: %w", err)
		}
		const transactional, control = 0x10, 0x20
		if b.Attributes&(transactional|control) != 0 {
			return nil, nil, fmt.Errorf("transactional or control batch")
		}
		codec := uint8(b.Attributes & 0x07)
		data := b.Records
		if codec != 0 {
			if data, err = m.decompressor.Decompress(b.Records, kgo.CompressionCodecType(codec)); err != nil {
				return nil, nil, fmt.Errorf("decompress: %w", err)
			}
		}
		for i := int32(0); i < b.NumRecords; i++ {
			length, n := binary.Varint(data)
			if n <= 0 || length < 0 || int64(len(data)-n) < length {
				return nil, nil, fmt.Errorf("record %d of %d: %w", i, b.NumRecords, protocol.ErrMalformed)
			}
			var r kmsg.Record
			if err := r.ReadFrom(data[:n+int(length)]); err != nil {
				return nil, nil, fmt.Errorf("record %d of %d: %w", i, b.NumRecords, err)
			}
			data = data[n+int(length):]
			ts := b.FirstTimestamp + r.TimestampDelta64
			if f.logAppendTime >= 0 {
				ts = f.logAppendTime
			}
			out := &kgo.Record{
				Topic: f.tp.Topic, Partition: f.tp.Partition,
				Offset: next + int64(r.OffsetDelta), Key: r.Key, Value: r.Value,
				Timestamp: time.UnixMilli(ts),
			}
			for _, h := range r.Headers {
				out.Headers = append(out.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
			}
			recs = append(recs, out)
			codecs = append(codecs, codec)
		}
		next += int64(b.LastOffsetDelta) + 1
	}
	return recs, codecs, nil
}
