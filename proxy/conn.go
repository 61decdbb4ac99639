package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/semaphore"
)

// finishFunc produces a response body once the upstream answers arrive. It
// runs on the connection's writer goroutine, in request order.
type finishFunc func(ctx context.Context) ([]byte, error)

// partsFunc is a finishFunc whose answer body comes in parts, written in
// order with one writev (answerFetch).
type partsFunc func(ctx context.Context) (net.Buffers, error)

// pendingResponse is one slot in the per-connection response queue.
type pendingResponse struct {
	req      protocol.Request
	start    time.Time
	finish   finishFunc
	reserved int64 // memory.go: given back once the answer is written
	// streamable, when set, is the one upstream call whose answer may be
	// cut through to the client unchanged (cutthrough.go); finish then
	// runs only if it was read into memory instead. streamMoved, when
	// set, says the answer is no longer wanted (its topic moved).
	streamable  *call
	streamMoved func() bool
	// finishParts, when set, answers instead of finish (which gives the
	// same answer in one buffer).
	finishParts partsFunc
	// afterWrite, when set, runs once the answer is written: it gives
	// pooled frames back (framepool.go).
	afterWrite func()
}

// clientConn is one client connection. The reader goroutine parses requests
// and writes them upstream in arrival order (which keeps idempotent and
// transactional produce ordering intact); the writer goroutine answers in the
// same order, as Kafka clients require.
type clientConn struct {
	p      *Proxy
	conn   net.Conn
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	queue chan *pendingResponse // bounded: the reader blocks when full
	// fanout keeps the sub-fetches of split fetches answered without
	// them (fetchfanout.go).
	fanout fanoutState

	// budget bounds the bytes this connection's requests and answers
	// reserve (memory.go).
	budget *semaphore.Weighted

	// upstreams are this connection's links to upstream brokers. Mostly
	// the reader goroutine uses them; a held group request (cutover) is
	// forwarded later from the writer, hence the lock.
	upstreamsMu sync.Mutex
	upstreams   map[brokerKey]*brokerConn
	// fetchLanes are second connections to brokers, for fan-out
	// sub-fetches that would queue behind a request still out on the
	// first (fetchUpstream).
	fetchLanes map[brokerKey]*brokerConn
	// identity, set under upstreamsMu once a pass-through client logged
	// in, is how this client's upstream connections log in, per cluster
	// (passthrough.go); nil: as the proxy.
	identity map[*cluster]*Upstream

	// software is the client library's name from ApiVersions (KIP-511).
	software atomic.Pointer[string]

	// auth is the SASL state of a client that must authenticate (nil:
	// client SASL is off). Reader goroutine only.
	auth *saslSession
	// closeAfter, set by a handler on the reader goroutine, ends the
	// connection once the answer of the request being handled is written.
	closeAfter *closeAfterAnswer
	// streamable and streamMoved, set by a handler on the reader
	// goroutine, mark the request's answer as one that may be cut
	// through (cutthrough.go).
	streamable  *call
	streamMoved func() bool
	// answerParts, set by a handler on the reader goroutine, answers the
	// request in parts (answerFetch).
	answerParts partsFunc
	// afterWrite, set by a handler on the reader goroutine, runs on the
	// writer once the request's answer is written.
	afterWrite func()
}

// javaClient reports whether the client is Apache Kafka's Java client.
func (c *clientConn) javaClient() bool {
	s := c.software.Load()
	return s != nil && strings.HasPrefix(*s, "apache-kafka-java")
}

// brokerKey names an upstream broker of one of the clusters.
type brokerKey struct {
	cluster *cluster
	id      int32
}

func newClientConn(p *Proxy, conn net.Conn) *clientConn {
	ctx, cancel := context.WithCancel(p.ctx)
	c := &clientConn{
		p:         p,
		conn:      conn,
		log:       p.log.With("client", conn.RemoteAddr().String()),
		ctx:       ctx,
		cancel:    cancel,
		queue:     make(chan *pendingResponse, p.cfg.MaxInFlight),
		budget:    semaphore.NewWeighted(p.budget.perConn),
		upstreams: make(map[brokerKey]*brokerConn),
	}
	if p.cfg.ClientSASL != nil {
		c.auth = &saslSession{}
	}
	return c
}

func (c *clientConn) serve() {
	c.p.metrics.connections.Inc()
	defer c.p.metrics.connections.Dec()
	if tc, ok := c.conn.(*tls.Conn); ok {
		if err := c.tlsHandshake(tc); err != nil {
			c.closeWith(err)
			c.cancel()
			return
		}
	}
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		if err := c.writeLoop(); err != nil {
			c.closeWith(err)
		}
	}()
	err := c.readLoop()
	close(c.queue)
	var answered *closeAfterAnswer
	if errors.As(err, &answered) {
		// The last answer tells the client why: let the writer send
		// it before the connection closes.
		<-writerDone
		c.log.Debug("closing client connection after its answer", "reason", answered.reason)
		c.cancel()
		c.conn.Close()
	} else if err != nil {
		c.closeWith(err)
	}
	<-writerDone
	// A writer that failed left answers unwritten: their reservations go
	// back to the proxy's budget.
	for pr := range c.queue {
		c.release(pr.reserved)
	}
	c.cancel()
	c.upstreamsMu.Lock()
	for _, bc := range c.upstreams {
		bc.close(errors.New("client connection closed"))
	}
	for _, bc := range c.fetchLanes {
		bc.close(errors.New("client connection closed"))
	}
	c.upstreamsMu.Unlock()
	c.conn.Close()
}

// closeWith logs why the connection ends and closes it, which unblocks both
// loops.
func (c *clientConn) closeWith(err error) {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled) {
		c.log.Debug("client connection closed", "err", err)
	} else {
		c.log.Warn("closing client connection", "err", err)
	}
	c.cancel()
	c.conn.Close()
}

// tlsHandshake completes the TLS handshake up front rather than on the first
// read, so that a client refused for its certificate is counted and logged
// as an authentication failure.
func (c *clientConn) tlsHandshake(tc *tls.Conn) error {
	mtls := c.p.cfg.ClientTLS.ClientAuth == tls.RequireAndVerifyClientCert
	ctx, cancel := context.WithTimeout(c.ctx, tlsHandshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		if mtls {
			c.p.metrics.clientAuth("TLS", "failure")
		}
		return fmt.Errorf("client TLS handshake: %w", err)
	}
	if mtls {
		c.p.metrics.clientAuth("TLS", "success")
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			c.log.Debug("client certificate verified", "subject", certs[0].Subject.String())
		}
	}
	return nil
}

// tlsHandshakeTimeout bounds a client's TLS handshake.
const tlsHandshakeTimeout = 10 * time.Second

func (c *clientConn) readLoop() error {
	br := bufio.NewReaderSize(c.conn, 64<<10)
	for {
		maxFrame := c.p.cfg.MaxFrameBytes
		if c.auth != nil && !c.auth.authenticated {
			maxFrame = min(maxFrame, maxPreAuthFrame)
		}
		frame, pooled, streamed, err := c.readFrame(br, maxFrame)
		if err != nil && c.p.draining.Load() {
			return nil // shutting down: answer what was read, then close
		}
		if err != nil {
			if errors.Is(err, protocol.ErrFrameTooLarge) {
				return fmt.Errorf("client frame refused: %w", err)
			}
			return err
		}
		if streamed {
			continue // forwarded and its answer queued (producestream.go)
		}
		c.p.metrics.bytesIn.Add(float64(len(frame) + 4))
		req, known, err := protocol.ParseRequest(frame)
		if err != nil {
			return err
		}
		if !known {
			return fmt.Errorf("unknown api key %d (v%d, correlation id %d)", req.APIKey, req.APIVersion, req.CorrelationID)
		}
		if c.auth != nil && !c.auth.authenticated && !allowedBeforeAuth(req.APIKey) {
			// As Kafka's broker: close, and never forward anything of
			// an unauthenticated client.
			c.p.metrics.clientAuth(c.auth.mechanismLabel(), "failure")
			return fmt.Errorf("%s v%d before SASL authentication completed: refused (is the client configured for SASL?)", kmsg.NameForKey(req.APIKey), req.APIVersion)
		}
		h := handlerFor(req.APIKey)
		if h == nil || !c.p.versionAllowed(req.APIKey, req.APIVersion) && req.APIKey != apiVersionsKey {
			return fmt.Errorf("%s v%d is not supported by the proxy (correlation id %d)", kmsg.NameForKey(req.APIKey), req.APIVersion, req.CorrelationID)
		}
		pr := &pendingResponse{req: req, start: time.Now()}
		if pr.reserved, err = c.reserve(c.ctx, &req, len(frame)); err != nil {
			return err
		}
		c.streamable, c.streamMoved, c.answerParts, c.afterWrite = nil, nil, nil, nil
		pr.finish, err = h(c, &req)
		pr.streamable, pr.streamMoved, pr.finishParts, pr.afterWrite = c.streamable, c.streamMoved, c.answerParts, c.afterWrite
		if err != nil {
			pr.finishParts = nil
			if !isUpstreamError(err) {
				c.release(pr.reserved) // nothing will answer it
				return fmt.Errorf("%s v%d: %w", kmsg.NameForKey(req.APIKey), req.APIVersion, err)
			}
			upstreamErr := err // answered in turn by the writer, see retriableResponse
			pr.finish = func(context.Context) ([]byte, error) { return nil, upstreamErr }
		}
		if pooled {
			// Back to the pool once answered, when the request was
			// long written upstream. An acks=0 produce has no answer to
			// say when it is written: its frame is left to the GC.
			pr.afterWrite = func() { pooledFrames.put(frame) } // Produce sets none of its own
		}
		if pr.finish == nil { // no response expected (acks=0)
			c.release(pr.reserved)
			c.p.metrics.observe(req.APIKey, time.Since(pr.start))
			continue
		}
		select {
		case c.queue <- pr:
		case <-c.ctx.Done():
			c.release(pr.reserved)
			return c.ctx.Err()
		}
		if c.closeAfter != nil {
			return c.closeAfter
		}
	}
}

// readFrame reads a client's frame, or forwards it as it arrives when it
// is a produce that can be (streamed; producestream.go). A produce frame is
// read into a pooled buffer when nothing will refer to it after its answer
// (framepool.go): pooled says so.
func (c *clientConn) readFrame(br *bufio.Reader, maxFrame int32) (frame []byte, pooled, streamed bool, err error) {
	size, err := protocol.ReadFrameSize(br, maxFrame)
	if err != nil {
		return nil, false, false, err
	}
	if streamed, err = c.streamProduce(br, size); streamed || err != nil {
		return nil, false, streamed, err
	}
	if size >= pooledFrameMin && c.p.cfg.Feed == nil {
		if key, err := br.Peek(2); err == nil && key[0] == 0 && key[1] == byte(kmsg.Produce) {
			frame = pooledFrames.get(int(size))
			return frame, true, false, protocol.ReadFrameInto(br, frame)
		}
	}
	frame, err = protocol.ReadFrameBody(br, size)
	return frame, false, false, err
}

func (c *clientConn) writeLoop() error {
	bw := bufio.NewWriterSize(c.conn, 64<<10)
	var head []byte
	for pr := range c.queue {
		if pr.streamable != nil {
			streamed, err := c.writeStreamed(bw, pr)
			if streamed || err != nil {
				c.release(pr.reserved)
			}
			if err != nil {
				return err
			}
			if streamed {
				continue
			}
		}
		var parts net.Buffers
		var err error
		if pr.finishParts != nil {
			parts, err = pr.finishParts(c.ctx)
		} else {
			var body []byte
			body, err = pr.finish(c.ctx)
			parts = net.Buffers{body}
		}
		if err != nil && isUpstreamError(err) && c.ctx.Err() == nil {
			if retry, ok := retriableResponse(&pr.req); ok {
				warnOnce.warn(c.log, "upstream unavailable; answering with a retriable error", "api", kmsg.NameForKey(pr.req.APIKey), "err", err)
				parts, err = net.Buffers{retry}, nil
			}
		}
		if err != nil {
			c.release(pr.reserved)
			return fmt.Errorf("%s v%d (correlation id %d): %w", kmsg.NameForKey(pr.req.APIKey), pr.req.APIVersion, pr.req.CorrelationID, err)
		}
		n := 0
		for _, p := range parts {
			n += len(p)
		}
		head = appendResponseHead(head[:0], &pr.req, n)
		c.conn.SetWriteDeadline(time.Now().Add(clientWriteTimeout))
		err = writeAnswer(bw, c.conn, head, parts, n)
		// What the buffer still holds is at most its 64 KiB.
		c.release(pr.reserved)
		if err != nil {
			return err
		}
		// Every answer leaves at once, as a broker sends each: waiting for
		// the next one to share a syscall would hold this one for the
		// next one's whole upstream round trip (an idempotent producer
		// pipelines five produces; each ack came a produce late).
		if err := bw.Flush(); err != nil {
			return err
		}
		if pr.afterWrite != nil {
			pr.afterWrite()
		}
		c.p.metrics.bytesOut.Add(float64(len(head) + n))
		c.p.metrics.observe(pr.req.APIKey, time.Since(pr.start))
	}
	return bw.Flush()
}

// writeAnswer writes an answer's size and header, then its body of n bytes
// in parts. Size and header go through the buffer; a large body then goes
// straight to the socket, one part (bufio writes through when its buffer
// cannot hold it) or several in one writev, so a fetch answer is never
// copied whole.
func writeAnswer(bw *bufio.Writer, conn net.Conn, head []byte, parts net.Buffers, n int) error {
	if _, err := bw.Write(head); err != nil {
		return err
	}
	if len(parts) > 1 && n >= bw.Size() {
		if err := bw.Flush(); err != nil {
			return err
		}
		_, err := parts.WriteTo(conn)
		return err
	}
	for _, p := range parts {
		if _, err := bw.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// clientWriteTimeout bounds the write of one answer to a client.
const clientWriteTimeout = 60 * time.Second

// appendResponseHead appends the size prefix and response header of req's
// answer, whose body is bodyLen bytes.
func appendResponseHead(dst []byte, req *protocol.Request, bodyLen int) []byte {
	hdr := protocol.AppendResponseHeader(nil, req.CorrelationID, req.APIKey, req.APIVersion)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(hdr)+bodyLen))
	return append(dst, hdr...)
}

// writeStreamed waits for pr's upstream answer and, when the upstream
// reader hands its socket over, writes the size and header and moves the
// body socket to socket. It reports false when the answer was read into
// memory instead (pr.finish then has it) or the call failed (pr.finish
// then reports it).
func (c *clientConn) writeStreamed(bw *bufio.Writer, pr *pendingResponse) (bool, error) {
	s, err := pr.streamable.offerStream(c.ctx, pr.streamMoved)
	if err != nil {
		return false, err
	}
	if s == nil {
		// Read into memory, failed, or withdrawn because the topic
		// moved: pr.finish answers as it would have.
		return false, nil
	}
	head := appendResponseHead(nil, &pr.req, int(s.n))
	c.conn.SetWriteDeadline(time.Now().Add(clientWriteTimeout))
	if _, err = bw.Write(head); err != nil {
		s.abort(err)
		return true, err
	}
	n, err := s.copyTo(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return true, fmt.Errorf("%s v%d (correlation id %d): %w", kmsg.NameForKey(pr.req.APIKey), pr.req.APIVersion, pr.req.CorrelationID, err)
	}
	c.p.metrics.bytesOut.Add(float64(int64(len(head)) + n))
	c.p.metrics.cutThrough.Add(float64(n))
	c.p.metrics.observe(pr.req.APIKey, time.Since(pr.start))
	return true, nil
}

// upstream returns this connection's link to an upstream broker, dialling it
// on first use or after it failed.
func (c *clientConn) upstream(cl *cluster, id int32) (*brokerConn, error) {
	c.upstreamsMu.Lock()
	defer c.upstreamsMu.Unlock()
	key := brokerKey{cl, id}
	old := c.upstreams[key]
	if old != nil && old.usable() {
		return old, nil
	}
	bc, err := c.dialUpstream(cl, id)
	if err != nil {
		return nil, err
	}
	if old != nil && old.renewing() {
		c.renew(cl, old)
	}
	c.upstreams[key] = bc
	return bc, nil
}

// dialUpstream dials a broker as this client's upstream connections log in
// (under upstreamsMu).
func (c *clientConn) dialUpstream(cl *cluster, id int32) (*brokerConn, error) {
	addr, ok := cl.brokerAddr(id)
	if !ok {
		return nil, fmt.Errorf("no address for %s broker %d", cl.up.Name, id)
	}
	ctx, cancel := context.WithTimeout(c.ctx, dialTimeout+authTimeout)
	defer cancel()
	up := &cl.up
	if id := c.identity[cl]; id != nil {
		up = id
	}
	return dialBroker(ctx, up, addr, c.p.cfg.MaxInFlight, c.p.cfg.MaxFrameBytes)
}

// fetchUpstream returns the connection a fan-out sub-fetch to a broker goes
// on. A broker answers a connection's requests one at a time, and a
// sub-fetch the client's next fetch could not take over still long-polls
// on its connection (up to fanoutMaxWait): a new sub-fetch sent behind it
// would wait that long though its broker has records. So when the usual
// connection has a request out, the sub-fetch goes on a second one, dialled
// once, unless that one is the busier. Fetches are reads: their order
// across connections does not matter.
func (c *clientConn) fetchUpstream(cl *cluster, id int32) (*brokerConn, error) {
	usual, err := c.upstream(cl, id)
	if err != nil || busy(usual) == 0 {
		return usual, err
	}
	c.upstreamsMu.Lock()
	defer c.upstreamsMu.Unlock()
	if c.fetchLanes == nil {
		c.fetchLanes = make(map[brokerKey]*brokerConn)
	}
	key := brokerKey{cl, id}
	lane := c.fetchLanes[key]
	if lane == nil || !lane.usable() {
		if lane != nil {
			lane.retire() // closes once its answers are in
		}
		if lane, err = c.dialUpstream(cl, id); err != nil {
			c.log.Debug("second fetch connection not dialled; the sub-fetch waits on the first", "broker", id, "err", err)
			delete(c.fetchLanes, key)
			return usual, nil
		}
		c.fetchLanes[key] = lane
	}
	if busy(lane) > busy(usual) {
		return usual, nil
	}
	return lane, nil
}

// busy is the number of requests on a connection not yet answered.
func busy(bc *brokerConn) int32 { return bc.inflight.Load() + bc.unsent.Load() }

// renewDrainWait bounds how long a renewal waits for the old connection's
// answers before the new one takes requests.
const renewDrainWait = time.Minute

// renew retires old, whose SASL session ends soon, and waits until the
// broker answered everything sent on it: the broker serves one request of
// a connection at a time, so requests written on the new connection now
// could overtake them (an idempotent producer's batches, say). The broker
// would have made the next request wait as long on the old connection, so
// waiting costs the client nothing.
func (c *clientConn) renew(cl *cluster, old *brokerConn) {
	c.p.metrics.upstreamRenewed(cl.up.Name)
	c.log.Debug("upstream SASL session ending: new connection", "cluster", cl.up.Name, "broker", old.addr, "session", old.lifetime, "in_flight", old.inflight.Load())
	old.retire()
	select {
	case <-old.closed:
	case <-c.ctx.Done():
	case <-time.After(renewDrainWait):
		c.log.Warn("upstream connection replaced before the broker answered its requests; their order with later ones is not guaranteed",
			"cluster", cl.up.Name, "broker", old.addr, "in_flight", old.inflight.Load())
	}
}

// forward sends body (the client's, or a rewritten one) under the client's
// own header to a source broker.
func (c *clientConn) forward(broker int32, req *protocol.Request, body []byte, expectResponse bool) (*call, error) {
	return c.forwardTo(c.p.source, broker, req, body, expectResponse)
}

// forwardTo sends to a broker of the given cluster.
func (c *clientConn) forwardTo(cl *cluster, broker int32, req *protocol.Request, body []byte, expectResponse bool) (*call, error) {
	return c.forwardPartsTo(cl, broker, req, [][]byte{body}, expectResponse)
}

// forwardPartsTo is forwardTo with a body in parts (brokerConn.SendParts).
func (c *clientConn) forwardPartsTo(cl *cluster, broker int32, req *protocol.Request, parts [][]byte, expectResponse bool) (*call, error) {
	bc, err := c.upstream(cl, broker)
	if err != nil {
		return nil, asUpstreamError(err)
	}
	call, err := bc.SendParts(req.APIKey, req.APIVersion, req.Header, parts, expectResponse)
	return call, asUpstreamError(err)
}

// forwardAny sends a request that any broker can serve, trying the known
// brokers in turn so that one dead broker does not fail it, and the target's
// when no source broker answers: once every topic's producers moved, the
// source may be switched off and clients keep working. It returns the
// cluster that took the request.
func (c *clientConn) forwardAny(req *protocol.Request, body []byte) (*call, *cluster, error) {
	var lastErr error
	for _, cl := range []*cluster{c.p.source, c.p.target} {
		if cl == nil {
			continue
		}
		for _, b := range cl.allBrokers() {
			call, err := c.forwardTo(cl, b, req, body, true)
			if err == nil {
				if cl == c.p.target {
					warnOnce.warn(c.log, "no source broker reachable; requests any broker can serve go to the target", "api", kmsg.NameForKey(req.APIKey), "err", lastErr)
				}
				return call, cl, nil
			}
			lastErr = err
		}
	}
	return nil, nil, lastErr
}

// forwardRaw forwards a request unchanged to a source broker and returns
// its answer unchanged.
func (c *clientConn) forwardRaw(broker int32, req *protocol.Request) (finishFunc, error) {
	return c.forwardRawTo(brokerKey{c.p.source, broker}, req)
}

// forwardRawTo is forwardRaw to a broker of either cluster.
func (c *clientConn) forwardRawTo(b brokerKey, req *protocol.Request) (finishFunc, error) {
	cl, err := c.forwardTo(b.cluster, b.id, req, req.Body, true)
	if err != nil {
		return nil, err
	}
	return cl.wait, nil
}
