package protocol

import (
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ProduceParts encodes a produce request body as a list of parts whose
// record batches are the request's own slices, not copies. A produce split
// by partition leader is mostly batches, megabytes at full speed: written
// with one writev of these parts, they go from the client's frame to the
// broker's socket without being copied in between, where kmsg's AppendTo
// would copy each one (and grow its buffer several times over).
//
// The parts concatenated equal req.AppendTo(nil). ok is false when the
// request carries tagged fields, which Produce does not define and this
// encoder does not write; the caller then encodes with kmsg.
func ProduceParts(req *kmsg.ProduceRequest) (parts [][]byte, ok bool) {
	if hasProduceTags(req) {
		return nil, false
	}
	version := req.Version
	flexible := version >= 9
	// Small fields accumulate in meta; each batch cuts it. Earlier parts
	// stay valid when meta grows: they keep the array they point into.
	meta := make([]byte, 0, 64+16*len(req.Topics))
	start := 0
	cut := func() {
		if len(meta) > start {
			parts = append(parts, meta[start:len(meta):len(meta)])
		}
		start = len(meta)
	}
	if version >= 3 {
		if flexible {
			meta = kbin.AppendCompactNullableString(meta, req.TransactionID)
		} else {
			meta = kbin.AppendNullableString(meta, req.TransactionID)
		}
	}
	meta = kbin.AppendInt16(meta, req.Acks)
	meta = kbin.AppendInt32(meta, req.TimeoutMillis)
	meta = appendArrayLen(meta, len(req.Topics), flexible)
	for i := range req.Topics {
		t := &req.Topics[i]
		meta = appendTopic(meta, t.Topic, t.TopicID, version, flexible)
		meta = appendArrayLen(meta, len(t.Partitions), flexible)
		for j := range t.Partitions {
			p := &t.Partitions[j]
			meta = kbin.AppendInt32(meta, p.Partition)
			meta = appendBytesLen(meta, p.Records, flexible)
			if len(p.Records) > 0 {
				cut()
				parts = append(parts, p.Records)
			}
			if flexible {
				meta = kbin.AppendUvarint(meta, 0) // no tagged fields
			}
		}
		if flexible {
			meta = kbin.AppendUvarint(meta, 0)
		}
	}
	if flexible {
		meta = kbin.AppendUvarint(meta, 0)
	}
	cut()
	return parts, true
}

// appendTopic appends a topic's name, or its id from v13 on (both Produce
// and Fetch name topics by id from v13).
func appendTopic(dst []byte, name string, id [16]byte, version int16, flexible bool) []byte {
	switch {
	case version >= 13:
		return kbin.AppendUuid(dst, id)
	case flexible:
		return kbin.AppendCompactString(dst, name)
	default:
		return kbin.AppendString(dst, name)
	}
}

func appendArrayLen(dst []byte, n int, flexible bool) []byte {
	if flexible {
		return kbin.AppendCompactArrayLen(dst, n)
	}
	return kbin.AppendArrayLen(dst, n)
}

func hasProduceTags(req *kmsg.ProduceRequest) bool {
	if req.UnknownTags.Len() > 0 {
		return true
	}
	for i := range req.Topics {
		t := &req.Topics[i]
		if t.UnknownTags.Len() > 0 {
			return true
		}
		for j := range t.Partitions {
			if t.Partitions[j].UnknownTags.Len() > 0 {
				return true
			}
		}
	}
	return false
}

// FetchResponseParts encodes a fetch answer as parts whose record batches
// are the answer's own slices (the upstream frames they were decoded from),
// as ProduceParts does for produce requests: an answer merged from several
// brokers is written to the client with one writev instead of being copied
// whole into one buffer.
//
// The parts concatenated equal resp.AppendTo(nil). ok is false when a
// tagged field is set (leader hints, diverging epochs, snapshot ids, node
// endpoints, unknown tags), which this encoder does not write; the caller
// then encodes with kmsg.
func FetchResponseParts(resp *kmsg.FetchResponse) (parts [][]byte, ok bool) {
	version := resp.Version
	flexible := version >= 12
	if flexible && hasFetchTags(resp) {
		return nil, false
	}
	meta := make([]byte, 0, 64+64*len(resp.Topics))
	start := 0
	cut := func() {
		if len(meta) > start {
			parts = append(parts, meta[start:len(meta):len(meta)])
		}
		start = len(meta)
	}
	if version >= 1 {
		meta = kbin.AppendInt32(meta, resp.ThrottleMillis)
	}
	if version >= 7 {
		meta = kbin.AppendInt16(meta, resp.ErrorCode)
		meta = kbin.AppendInt32(meta, resp.SessionID)
	}
	meta = appendArrayLen(meta, len(resp.Topics), flexible)
	for i := range resp.Topics {
		t := &resp.Topics[i]
		meta = appendTopic(meta, t.Topic, t.TopicID, version, flexible)
		meta = appendArrayLen(meta, len(t.Partitions), flexible)
		for j := range t.Partitions {
			p := &t.Partitions[j]
			meta = kbin.AppendInt32(meta, p.Partition)
			meta = kbin.AppendInt16(meta, p.ErrorCode)
			meta = kbin.AppendInt64(meta, p.HighWatermark)
			if version >= 4 {
				meta = kbin.AppendInt64(meta, p.LastStableOffset)
			}
			if version >= 5 {
				meta = kbin.AppendInt64(meta, p.LogStartOffset)
			}
			if version >= 4 {
				aborted := p.AbortedTransactions
				if flexible {
					meta = kbin.AppendCompactNullableArrayLen(meta, len(aborted), aborted == nil)
				} else {
					meta = kbin.AppendNullableArrayLen(meta, len(aborted), aborted == nil)
				}
				for _, a := range aborted {
					meta = kbin.AppendInt64(meta, a.ProducerID)
					meta = kbin.AppendInt64(meta, a.FirstOffset)
					if flexible {
						meta = kbin.AppendUvarint(meta, 0)
					}
				}
			}
			if version >= 11 {
				meta = kbin.AppendInt32(meta, p.PreferredReadReplica)
			}
			meta = appendBytesLen(meta, p.RecordBatches, flexible)
			if len(p.RecordBatches) > 0 {
				cut()
				parts = append(parts, p.RecordBatches)
			}
			if flexible {
				meta = kbin.AppendUvarint(meta, 0)
			}
		}
		if flexible {
			meta = kbin.AppendUvarint(meta, 0)
		}
	}
	if flexible {
		meta = kbin.AppendUvarint(meta, 0)
	}
	cut()
	return parts, true
}

// appendBytesLen appends the length prefix of a nullable bytes field.
func appendBytesLen(dst, b []byte, flexible bool) []byte {
	switch {
	case flexible && b == nil:
		return kbin.AppendUvarint(dst, 0)
	case flexible:
		return kbin.AppendUvarint(dst, uint32(len(b)+1))
	case b == nil:
		return kbin.AppendInt32(dst, -1)
	default:
		return kbin.AppendInt32(dst, int32(len(b)))
	}
}

// hasFetchTags reports whether a flexible fetch answer has a tagged field
// kmsg would write.
func hasFetchTags(resp *kmsg.FetchResponse) bool {
	if len(resp.Brokers) > 0 || resp.UnknownTags.Len() > 0 {
		return true
	}
	for i := range resp.Topics {
		t := &resp.Topics[i]
		if t.UnknownTags.Len() > 0 {
			return true
		}
		for j := range t.Partitions {
			p := &t.Partitions[j]
			if p.UnknownTags.Len() > 0 ||
				p.DivergingEpoch.Epoch != -1 || p.DivergingEpoch.EndOffset != -1 || p.DivergingEpoch.UnknownTags.Len() > 0 ||
				p.CurrentLeader.LeaderID != -1 || p.CurrentLeader.LeaderEpoch != -1 || p.CurrentLeader.UnknownTags.Len() > 0 ||
				p.SnapshotID.EndOffset != -1 || p.SnapshotID.Epoch != -1 || p.SnapshotID.UnknownTags.Len() > 0 {
				return true
			}
			for _, a := range p.AbortedTransactions {
				if a.UnknownTags.Len() > 0 {
					return true
				}
			}
		}
	}
	return false
}
