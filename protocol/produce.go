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
		switch {
		case version >= 13:
			meta = kbin.AppendUuid(meta, t.TopicID)
		case flexible:
			meta = kbin.AppendCompactString(meta, t.Topic)
		default:
			meta = kbin.AppendString(meta, t.Topic)
		}
		meta = appendArrayLen(meta, len(t.Partitions), flexible)
		for j := range t.Partitions {
			p := &t.Partitions[j]
			meta = kbin.AppendInt32(meta, p.Partition)
			switch {
			case flexible && p.Records == nil:
				meta = kbin.AppendUvarint(meta, 0)
			case flexible:
				meta = kbin.AppendUvarint(meta, uint32(len(p.Records)+1))
			case p.Records == nil:
				meta = kbin.AppendInt32(meta, -1)
			default:
				meta = kbin.AppendInt32(meta, int32(len(p.Records)))
			}
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
