package protocol

import "github.com/twmb/franz-go/pkg/kbin"

// ProduceHead is what precedes a produce request's first record batch and
// decides where the request goes: whether it is transactional, its acks,
// and its first topic. A proxy that knows this before the batches arrive
// can forward them as they come instead of storing the whole request.
type ProduceHead struct {
	TransactionID *string
	Acks          int16
	TimeoutMillis int32
	Topics        int      // how many topics the request carries
	Topic         string   // the first topic's name (versions before 13)
	TopicID       [16]byte // the first topic's id (versions 13 and later)
}

// ParseProduceHead parses the head of a produce request body from its
// first bytes. ok is false when prefix ends before the first topic is
// named, or does not parse; the caller then reads the request whole.
func ParseProduceHead(prefix []byte, version int16) (head ProduceHead, ok bool) {
	flexible := version >= 9
	r := kbin.Reader{Src: prefix}
	if version >= 3 {
		if flexible {
			head.TransactionID = r.CompactNullableString()
		} else {
			head.TransactionID = r.NullableString()
		}
	}
	head.Acks = r.Int16()
	head.TimeoutMillis = r.Int32()
	if flexible {
		head.Topics = int(r.CompactArrayLen())
	} else {
		head.Topics = int(r.ArrayLen())
	}
	if head.Topics < 1 {
		return head, false
	}
	switch {
	case version >= 13:
		head.TopicID = r.Uuid()
	case flexible:
		head.Topic = r.CompactString()
	default:
		head.Topic = r.String()
	}
	return head, r.Ok()
}
