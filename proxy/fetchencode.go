package proxy

import (
	"bytes"
	"context"
	"net"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// encodeFetchAnswer encodes a fetch answer the proxy assembled (merged from
// several brokers, or rewritten) into a buffer sized up front. Encoded into
// a growing slice, megabytes of record batches would be copied and the
// buffer reallocated several times over (append grows large slices by a
// quarter): that growth was most of the proxy's CPU per GB consumed from
// a multi-broker cluster.
func encodeFetchAnswer(resp *kmsg.FetchResponse) []byte {
	return resp.AppendTo(make([]byte, 0, fetchAnswerSizeBound(resp)))
}

// fetchAnswerSizeBound is at least the encoded size of resp: the batches
// plus generous room for every other field.
func fetchAnswerSizeBound(resp *kmsg.FetchResponse) int {
	n := 64 + len(resp.UnknownTags.AppendEach(nil))
	for i := range resp.Topics {
		t := &resp.Topics[i]
		n += 32 + len(t.Topic)
		for j := range t.Partitions {
			p := &t.Partitions[j]
			// Fixed fields, leader hint and diverging epoch (KIP-951,
			// KIP-320), and the aborted transactions.
			n += 128 + 16*len(p.AbortedTransactions) + len(p.RecordBatches)
			if p.CurrentLeader.LeaderID >= 0 || p.SnapshotID.Epoch >= 0 {
				n += 32
			}
			n += len(p.UnknownTags.AppendEach(nil))
		}
	}
	for i := range resp.Brokers {
		b := &resp.Brokers[i]
		n += 32 + len(b.Host)
		if b.Rack != nil {
			n += len(*b.Rack)
		}
	}
	return n
}

// answerFetch returns the finish of a fetch whose answer the proxy
// assembles from upstream answers, and has the writer take that answer in
// parts (answerParts): its batches go to the client from the upstream
// frames in one writev, never copied into one buffer. The finish it
// returns gives the same answer joined into one buffer.
func (c *clientConn) answerFetch(assemble func(context.Context) (*kmsg.FetchResponse, error)) finishFunc {
	answer := func(ctx context.Context) (net.Buffers, error) {
		resp, err := assemble(ctx)
		if err != nil {
			return nil, err
		}
		if parts, ok := protocol.FetchResponseParts(resp); ok {
			return parts, nil
		}
		return net.Buffers{encodeFetchAnswer(resp)}, nil // tagged fields: kmsg writes them
	}
	c.answerParts = answer
	return func(ctx context.Context) ([]byte, error) {
		parts, err := answer(ctx)
		if err != nil {
			return nil, err
		}
		return bytes.Join(parts, nil), nil
	}
}
