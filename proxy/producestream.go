package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Cut-through produces. A produce is store and forward by nature: which
// broker it goes to is known only once its last partition is read, so the
// proxy reads megabytes into memory, then writes them out, and the broker
// starts reading only when the client has finished writing. When the
// request's head already decides its route (one topic, every partition of
// it led by one source broker: a single-broker cluster, a one-partition
// topic) and nothing will look at its batches (no target, no mirror feed),
// the proxy reads only the head and moves the rest from the client's socket
// to the broker's as it arrives (splice(2) on Linux), the way cutthrough.go
// moves fetch answers the other way.
//
// The client's reader waits while the body moves: it reads the client's
// next request only once this one is through, which keeps requests in
// order on the upstream connection, as for any other request. A body
// that breaks off midway (either socket failing) leaves the upstream
// connection with half a request and the client's with half a frame read:
// both close, and the client retries as after any broken connection.

// streamProduceMin is the smallest produce streamed: smaller ones arrive
// whole with the reader's first fill of its 64 KiB buffer anyway.
const streamProduceMin = 64 << 10

// States of a requestStream.
const (
	streamQueued    int32 = iota // waiting for its turn on the upstream connection
	streamTaken                  // the writer moves it
	streamWithdrawn              // the connection closed first; nothing was read
)

// requestStream is a request body still in the client's socket: the first
// bytes in the client's reader, the rest in the socket.
type requestStream struct {
	state atomic.Int32
	src   *bufio.Reader // the client's reader, at the start of the frame
	conn  net.Conn      // the client's socket, for what src does not hold
	skip  int           // header bytes at the front of src (sent rewritten instead)
	n     int64         // body bytes after them
	done  chan error    // the writer's result, once it took the stream
}

// moveTo writes head (size and header) and the body to dst.
func (s *requestStream) moveTo(dst net.Conn, head net.Buffers) error {
	if _, err := s.src.Discard(s.skip); err != nil {
		return fmt.Errorf("read request header from client: %w", err)
	}
	buffered := int(min(int64(s.src.Buffered()), s.n))
	first, _ := s.src.Peek(buffered) // already buffered: cannot fail
	bufs := append(head, first)
	if _, err := bufs.WriteTo(dst); err != nil {
		return err
	}
	s.src.Discard(buffered)
	rest := s.n - int64(buffered)
	if rest == 0 {
		return nil
	}
	// The write deadline bounds each chunk, not the whole body: a client
	// on a slow link may take longer than that to send a large produce,
	// which is no fault of the broker's.
	for rest > 0 {
		chunk := min(rest, streamChunk)
		dst.SetWriteDeadline(time.Now().Add(upstreamWriteTimeout))
		// *net.TCPConn.ReadFrom splices when the source is a
		// *net.TCPConn under an io.LimitedReader; other connections
		// are copied.
		moved, err := io.Copy(dst, &io.LimitedReader{R: s.conn, N: chunk})
		if err == nil && moved < chunk {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return fmt.Errorf("produce body: moved %d of %d bytes: %w", s.n-rest+moved, s.n, err)
		}
		rest -= moved
	}
	return nil
}

// streamChunk is how much of a streamed body one write deadline covers.
const streamChunk = 1 << 20

// mayStreamProduce says whether a frame of size bytes could be a produce
// to stream: large, and nothing but its upstream broker needs its batches.
func (c *clientConn) mayStreamProduce(size int32) bool {
	return size > streamProduceMin && c.p.target == nil && c.p.cfg.Feed == nil && !c.p.cfg.SyncProduce &&
		(c.auth == nil || c.auth.authenticated)
}

// streamProduce forwards the frame of size bytes at the front of br, when
// it is a produce whose head decides its route, by moving its body socket
// to socket, and queues its answer. streamed is false when it is not (or
// its upstream connection failed before the body was touched): the frame
// is then still whole in br, for the usual path.
func (c *clientConn) streamProduce(br *bufio.Reader, size int32) (streamed bool, err error) {
	if !c.mayStreamProduce(size) {
		return false, nil
	}
	prefix, err := br.Peek(min(int(size), br.Size()))
	if err != nil || binary.BigEndian.Uint16(prefix) != uint16(kmsg.Produce) {
		return false, nil // a read error shows again on the usual path
	}
	req, known, err := protocol.ParseRequest(prefix)
	if err != nil || !known || !c.p.versionAllowed(req.APIKey, req.APIVersion) {
		return false, nil
	}
	head, ok := protocol.ParseProduceHead(req.Body, req.APIVersion)
	if !ok || head.Topics != 1 {
		return false, nil
	}
	topic, ok := c.topicOfKey(topicKey(head.Topic, head.TopicID))
	if !ok {
		return false, nil
	}
	leader, ok := c.p.source.soleLeader(topic)
	if !ok {
		return false, nil
	}
	bc, err := c.upstream(c.p.source, leader)
	if err != nil {
		return false, nil // the usual path answers with a retriable error
	}
	req.Header, req.Body = bytes.Clone(req.Header), nil // prefix is br's buffer
	pr := &pendingResponse{req: req, start: time.Now()}
	if pr.reserved, err = c.reserve(c.ctx, &req, 0); err != nil {
		return false, err
	}
	s := &requestStream{src: br, conn: c.conn, skip: len(req.Header), n: int64(size) - int64(len(req.Header)), done: make(chan error, 1)}
	cl, taken, err := bc.SendStream(c.ctx, req.APIKey, req.APIVersion, req.Header, s, head.Acks != 0)
	if !taken {
		c.release(pr.reserved)
		return false, nil
	}
	if err != nil {
		c.release(pr.reserved)
		return true, fmt.Errorf("Produce v%d (correlation id %d) to %s: %w", req.APIVersion, req.CorrelationID, bc.who, err)
	}
	c.p.metrics.bytesIn.Add(float64(size) + 4)
	c.p.metrics.streamedIn.Add(float64(s.n))
	if head.Acks == 0 {
		c.release(pr.reserved)
		c.p.metrics.observe(req.APIKey, time.Since(pr.start))
		return true, nil
	}
	pr.finish = c.sourceProduceAnswer(req.APIVersion, nil, cl)
	select {
	case c.queue <- pr:
		return true, nil
	case <-c.ctx.Done():
		c.release(pr.reserved)
		return true, c.ctx.Err()
	}
}
