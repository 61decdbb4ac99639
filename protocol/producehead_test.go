package protocol

import (
	"math/rand/v2"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// The head parsed from every prefix long enough to name the first topic
// equals the request's own fields; shorter prefixes are refused, never
// misread.
func TestParseProduceHead(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for version := int16(0); version <= kmsg.NewPtrProduceRequest().MaxVersion(); version++ {
		for range 30 {
			req := randomProduce(rng, version)
			if len(req.Topics) > 0 {
				req.Topics[0].Partitions = nil // the head ends at the first topic's name
			}
			body := req.AppendTo(nil)
			full, ok := ParseProduceHead(body, version)
			if len(req.Topics) == 0 {
				if ok {
					t.Fatalf("v%d: a request without topics gave a head", version)
				}
				continue
			}
			if !ok {
				t.Fatalf("v%d: whole body refused", version)
			}
			if full.Acks != req.Acks || full.TimeoutMillis != req.TimeoutMillis || full.Topics != len(req.Topics) {
				t.Fatalf("v%d: head %+v, request acks %d timeout %d topics %d", version, full, req.Acks, req.TimeoutMillis, len(req.Topics))
			}
			if version >= 3 && !equalNullable(full.TransactionID, req.TransactionID) {
				t.Fatalf("v%d: transactional id %v, want %v", version, full.TransactionID, req.TransactionID)
			}
			if version >= 13 && full.TopicID != req.Topics[0].TopicID || version < 13 && full.Topic != req.Topics[0].Topic {
				t.Fatalf("v%d: first topic %q/%x, want %q/%x", version, full.Topic, full.TopicID, req.Topics[0].Topic, req.Topics[0].TopicID)
			}
			// The shortest prefix that parses is where the first topic's
			// name ends: anything shorter must be refused.
			shortest := len(body)
			for n := len(body); n >= 0; n-- {
				if _, ok := ParseProduceHead(body[:n], version); !ok {
					break
				}
				shortest = n
			}
			for n := range shortest {
				if _, ok := ParseProduceHead(body[:n], version); ok {
					t.Fatalf("v%d: %d-byte prefix of a %d-byte head parsed", version, n, shortest)
				}
			}
		}
	}
}

func equalNullable(a, b *string) bool {
	return a == nil && b == nil || a != nil && b != nil && *a == *b
}
