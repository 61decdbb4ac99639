package proxy

import (
	"context"
	"encoding/binary"
	"fmt"

	"golang.org/x/sync/semaphore"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Memory bounds. A Kafka broker answers one request per connection at a
// time (it mutes the socket until the answer is sent), so a client that never
// reads its answers costs it one answer. The proxy pipelines up to
// MaxInFlight requests per connection, and a fetch answer may be as large as
// the client's fetch.max.bytes (50 MiB by default), so without a bound one
// such client could make the proxy hold MaxInFlight × 50 MiB.
//
// The reader therefore reserves, before forwarding a request, the bytes the
// request and its answer may hold: the frame itself plus, for a Fetch, the
// answer's MaxBytes, and a small allowance for any other answer. The
// reservation is taken from the connection's budget and from the proxy's,
// in request order, and given back by the writer once the answer is written
// (or the connection ends). The reader stops reading while it waits, so the
// client feels TCP backpressure, as with a broker. Reservations are taken in
// the order the writer releases them, so the request at the head of the
// queue always holds its reservation: no deadlock.
const (
	// DefaultMaxConnBufferBytes bounds what one connection's requests and
	// answers may hold at once.
	DefaultMaxConnBufferBytes = 64 << 20
	// DefaultMaxBufferBytes bounds the same over all connections.
	DefaultMaxBufferBytes = 1 << 30
	// smallAnswerBytes is reserved for the answer of any request but a
	// Fetch: Produce, Metadata, group and offset answers are small.
	smallAnswerBytes = 64 << 10
)

// memoryBudget is the proxy-wide reservation pool.
type memoryBudget struct {
	all     *semaphore.Weighted
	perConn int64
}

func newMemoryBudget(total, perConn int64) *memoryBudget {
	if total <= 0 {
		total = DefaultMaxBufferBytes
	}
	if perConn <= 0 {
		perConn = DefaultMaxConnBufferBytes
	}
	perConn = min(perConn, total)
	return &memoryBudget{all: semaphore.NewWeighted(total), perConn: perConn}
}

// reserve waits until req (framed in frameLen bytes) may be forwarded and
// returns the bytes it holds; 0 for requests without an answer.
func (c *clientConn) reserve(ctx context.Context, req *protocol.Request, frameLen int) (int64, error) {
	n := int64(frameLen) + answerEstimate(req)
	// One request larger than the whole budget still goes through, alone.
	n = min(n, c.p.budget.perConn)
	if err := c.budget.Acquire(ctx, n); err != nil {
		return 0, err
	}
	if err := c.p.budget.all.Acquire(ctx, n); err != nil {
		c.budget.Release(n)
		return 0, err
	}
	c.p.metrics.bufferedBytes.Add(float64(n))
	return n, nil
}

// release gives back what reserve returned.
func (c *clientConn) release(n int64) {
	if n == 0 {
		return
	}
	c.p.budget.all.Release(n)
	c.budget.Release(n)
	c.p.metrics.bufferedBytes.Sub(float64(n))
}

// answerEstimate is the largest answer req is expected to get.
func answerEstimate(req *protocol.Request) int64 {
	if req.APIKey != int16(kmsg.Fetch) {
		return smallAnswerBytes
	}
	maxBytes, err := fetchMaxBytes(req)
	if err != nil || maxBytes <= 0 {
		return DefaultMaxConnBufferBytes // unreadable: the budget clamps it
	}
	return int64(maxBytes)
}

// fetchMaxBytes reads a Fetch request's MaxBytes (v3+) without decoding the
// request: it sits after ReplicaID (before v15), MaxWaitMillis and MinBytes.
func fetchMaxBytes(req *protocol.Request) (int32, error) {
	if req.APIVersion < 3 {
		return 0, fmt.Errorf("fetch v%d has no MaxBytes", req.APIVersion)
	}
	off := 12 // ReplicaID, MaxWaitMillis, MinBytes
	if req.APIVersion >= 15 {
		off = 8 // ReplicaID moved into a tagged field (KIP-903)
	}
	if len(req.Body) < off+4 {
		return 0, fmt.Errorf("fetch v%d body of %d bytes: %w", req.APIVersion, len(req.Body), protocol.ErrMalformed)
	}
	return int32(binary.BigEndian.Uint32(req.Body[off:])), nil
}
