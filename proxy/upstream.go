package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
)

const (
	dialTimeout = 10 * time.Second
	authTimeout = 15 * time.Second
)

// upstreamWriteTimeout bounds the write of one request to a broker (of
// each streamChunk of a streamed one). A variable for tests.
var upstreamWriteTimeout = 30 * time.Second

// errConnClosed is returned for calls on, or pending on, a closed upstream
// connection.
var errConnClosed = errors.New("upstream connection closed")

// brokerConn is one connection to one upstream broker. Requests are written in
// the order Send is called and the broker answers in that order, so pending
// calls form a FIFO: no correlation-id map is needed, only a check.
type brokerConn struct {
	addr    string
	who     string // "source broker host:port", for errors
	conn    net.Conn
	maxResp int32

	// renewAt is when the connection stops taking new requests because
	// the broker's SASL session (KIP-368) ends soon after; zero: never.
	// See renewAfter and docs/INTERNALS.md.
	renewAt  time.Time
	lifetime time.Duration
	inflight atomic.Int32 // calls sent and not yet answered
	retired  atomic.Bool  // closes once inflight reaches 0

	// writeMu orders the enqueue of requests (out) and of the calls
	// awaiting their answers (pending); writeLoop writes out in order.
	writeMu  sync.Mutex
	nextCorr int32
	pending  chan *call
	out      chan outgoing
	unsent   atomic.Int32 // requests in out not yet written
	// wmu serialises writes to bw: writeLoop's, and Send's own of a
	// small request when nothing is queued.
	wmu sync.Mutex
	bw  *bufio.Writer

	closeOnce sync.Once
	closed    chan struct{}
	err       error // set before closed is closed
}

// call is one request in flight on a brokerConn.
type call struct {
	key, version int16
	corr         int32
	done         chan struct{}
	body         []byte // response body, header stripped
	frame        []byte // the whole answer frame body lies in (framepool.go)
	err          error

	// handover and stream let the client's writer take the body
	// straight from the socket (cutthrough.go).
	handover atomic.Int32
	stream   *bodyStream
}

func (c *call) wait(ctx context.Context) ([]byte, error) {
	select {
	case <-c.done:
		return c.body, asUpstreamError(c.err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// dialBroker connects, negotiates TLS and SASL, and starts the reader.
func dialBroker(ctx context.Context, up *Upstream, addr string, maxInFlight int, maxResp int32) (*brokerConn, error) {
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s broker %s: %w", up.Name, addr, err)
	}
	conn := raw
	if up.TLS != nil {
		cfg := up.TLS.Clone()
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg.ServerName = host
		}
		tc := tls.Client(raw, cfg)
		hctx, cancel := context.WithTimeout(ctx, authTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("tls handshake with %s broker %s: %w", up.Name, addr, err)
		}
		conn = tc
	}
	var lifetime time.Duration
	var authSent time.Time
	if up.SASL != nil {
		if lifetime, authSent, err = saslAuthenticate(ctx, conn, up.SASL, addr, maxResp); err != nil {
			conn.Close()
			return nil, fmt.Errorf("sasl %s with %s broker %s: %w", up.SASL.Name(), up.Name, addr, err)
		}
	}
	bc := &brokerConn{
		addr:    addr,
		who:     up.Name + " broker " + addr,
		conn:    conn,
		maxResp: maxResp,
		pending: make(chan *call, maxInFlight),
		out:     make(chan outgoing, maxInFlight),
		bw:      bufio.NewWriterSize(conn, 64<<10),
		closed:  make(chan struct{}),
	}
	if lifetime > 0 {
		// The broker's clock starts when it has checked our last
		// SaslAuthenticate, ours when we sent it: ours runs ahead.
		bc.lifetime = lifetime
		bc.renewAt = authSent.Add(renewAfter(lifetime))
	}
	go bc.readLoop()
	go bc.writeLoop()
	return bc, nil
}

// renewAfter is how long a connection whose SASL session lasts lifetime
// takes new requests: 85% of the session, and at least 2 s before its end
// when the session is long enough. A broker closes a connection that sends
// anything but re-authentication after its session ended (KIP-368), but
// answers the requests it received before, so the margin only has to cover
// the trip of the last request.
func renewAfter(lifetime time.Duration) time.Duration {
	margin := max(lifetime*15/100, min(2*time.Second, lifetime/2))
	return lifetime - margin
}

// usable says whether new requests may go on bc: it is open and its SASL
// session is not about to end.
func (bc *brokerConn) usable() bool {
	if bc.isClosed() || bc.retired.Load() {
		return false
	}
	return bc.renewAt.IsZero() || time.Now().Before(bc.renewAt)
}

// renewing says whether bc is open but must be replaced before its SASL
// session ends.
func (bc *brokerConn) renewing() bool {
	return !bc.isClosed() && !bc.usable()
}

// retire takes bc out of service: it closes as soon as every request is
// written and every call in flight answered (at once when none is).
func (bc *brokerConn) retire() {
	bc.retired.Store(true)
	bc.closeIfRetiredAndIdle()
}

// closeIfRetiredAndIdle closes a retired connection with nothing left to
// write or to wait for, and reports whether it did. Each of retire, the
// reader (an answer) and the writer (a request written) checks after its
// own change, so the last of them sees the connection idle.
func (bc *brokerConn) closeIfRetiredAndIdle() bool {
	if bc.retired.Load() && bc.inflight.Load() == 0 && bc.unsent.Load() == 0 {
		bc.close(errRetired)
		return true
	}
	return false
}

// errRetired closes a connection replaced before its SASL session ended.
var errRetired = errors.New("replaced by a newly authenticated connection before the SASL session ends")

// outgoing is one request queued for writeLoop.
type outgoing struct {
	key   int16
	size  [4]byte
	hdr   []byte
	parts [][]byte // the body, in order
	n     int      // bytes in parts
	// stream, when set, is the body instead of parts: still in the
	// client's socket (producestream.go).
	stream *requestStream
}

// Send queues one request and returns its call, or nil when the request
// has no response (Produce with acks=0). header is the client's header; its
// correlation id is replaced by this connection's. body must stay unchanged
// until the request is written, which is before its answer arrives.
//
// Send does not wait for the bytes to reach the socket: a broker reads a
// connection's next request only after answering the previous one, so a
// write can block for a whole produce; meanwhile the client's next request
// is read and queued, ready the moment the broker wants it (writeLoop).
func (bc *brokerConn) Send(key, version int16, header, body []byte, expectResponse bool) (*call, error) {
	return bc.SendParts(key, version, header, [][]byte{body}, expectResponse)
}

// SendParts is Send with a body in parts (a split produce whose batches are
// slices of the client's frame, protocol.ProduceParts), written in order.
func (bc *brokerConn) SendParts(key, version int16, header []byte, parts [][]byte, expectResponse bool) (*call, error) {
	o := outgoing{parts: parts}
	for _, p := range parts {
		o.n += len(p)
	}
	c, err := bc.enqueue(key, version, header, o, expectResponse)
	if err != nil || !expectResponse {
		return nil, err
	}
	return c, nil
}

// SendStream is Send with a body that is still in the client's socket
// (requestStream). It returns once the writer moved the body, or failed
// to: the caller reads the client's next request only then. taken is
// false when the body was never touched (the connection closed before its
// turn came); the caller then still has the whole request to read.
func (bc *brokerConn) SendStream(ctx context.Context, key, version int16, header []byte, s *requestStream, expectResponse bool) (c *call, taken bool, err error) {
	c, err = bc.enqueue(key, version, header, outgoing{stream: s}, expectResponse)
	if err != nil {
		return nil, false, err
	}
	if !expectResponse {
		c = nil
	}
	select {
	case err = <-s.done:
		return c, true, err
	case <-bc.closed:
	case <-ctx.Done():
	}
	if s.state.CompareAndSwap(streamQueued, streamWithdrawn) {
		// Its call sits in pending but the request will never be
		// written: the connection cannot be used after it.
		bc.close(errors.New("client connection closed before its produce was forwarded"))
		return nil, false, bc.err
	}
	return c, true, <-s.done
}

// enqueue numbers a request (its body in o) with this connection's next
// correlation id and queues it for the writer, and its call for the reader
// when an answer is expected: both under writeMu, so requests and calls
// queue in the same order.
func (bc *brokerConn) enqueue(key, version int16, header []byte, o outgoing, expectResponse bool) (*call, error) {
	bc.writeMu.Lock()
	defer bc.writeMu.Unlock()
	select {
	case <-bc.closed:
		return nil, bc.err
	default:
	}
	bc.nextCorr++
	c := &call{key: key, version: version, corr: bc.nextCorr, done: make(chan struct{})}
	o.key, o.hdr = key, protocol.WithCorrelationID(header, c.corr)
	n := int64(len(o.hdr)) + int64(o.n)
	if o.stream != nil {
		n += o.stream.n
	}
	binary.BigEndian.PutUint32(o.size[:], uint32(n))
	// Enqueue the call before the request: the reader may see the
	// response before Send returns.
	if expectResponse {
		bc.inflight.Add(1)
		select {
		case bc.pending <- c:
		case <-bc.closed:
			return nil, bc.err
		}
	}
	if o.stream == nil && n < inlineWriteMax && bc.unsent.Load() == 0 {
		// Nothing queued ahead: a small request is written at once,
		// sparing the hand-off to writeLoop (a goroutine wake-up, in
		// the latency of every small produce). It fits the socket
		// buffer, so the write does not wait for the broker.
		if err := bc.write(o, true); err != nil {
			return nil, err
		}
		return c, nil
	}
	bc.unsent.Add(1)
	select {
	case bc.out <- o:
		return c, nil
	case <-bc.closed:
		return nil, bc.err
	}
}

// inlineWriteMax is the largest request Send writes itself when nothing
// is queued.
const inlineWriteMax = 64 << 10

// writeLoop writes queued requests in order, flushing whenever the queue
// runs dry.
func (bc *brokerConn) writeLoop() {
	for {
		var o outgoing
		select {
		case o = <-bc.out:
		case <-bc.closed:
			return
		}
		if bc.write(o, len(bc.out) == 0) != nil {
			return
		}
		bc.unsent.Add(-1)
		if bc.closeIfRetiredAndIdle() {
			return
		}
	}
}

// write writes one request (under wmu: Send and writeLoop both write) and
// closes the connection when that fails.
func (bc *brokerConn) write(o outgoing, flush bool) error {
	bc.wmu.Lock()
	defer bc.wmu.Unlock()
	bc.conn.SetWriteDeadline(time.Now().Add(upstreamWriteTimeout))
	var err error
	if o.stream != nil {
		if !o.stream.state.CompareAndSwap(streamQueued, streamTaken) {
			return nil // withdrawn; the connection is closing
		}
		if err = bc.bw.Flush(); err == nil {
			err = o.stream.moveTo(bc.conn, net.Buffers{o.size[:], o.hdr})
		}
		o.stream.done <- err
	} else if o.n >= bc.bw.Size() {
		// A large body (a produce) goes from the client's frame to the
		// socket in one writev with its size and header; through the
		// buffer, its first 64 KiB would be copied once more.
		if err = bc.bw.Flush(); err == nil {
			bufs := append(net.Buffers{o.size[:], o.hdr}, o.parts...)
			_, err = bufs.WriteTo(bc.conn)
		}
	} else {
		_, err = bc.bw.Write(o.size[:])
		if err == nil {
			_, err = bc.bw.Write(o.hdr)
		}
		for _, p := range o.parts {
			if err == nil {
				_, err = bc.bw.Write(p)
			}
		}
		if err == nil && flush {
			err = bc.bw.Flush()
		}
	}
	if err != nil {
		err = fmt.Errorf("write %s to %s: %w", kmsg.NameForKey(o.key), bc.who, err)
		bc.close(err)
	}
	return err
}

func (bc *brokerConn) readLoop() {
	br := bufio.NewReaderSize(bc.conn, 64<<10)
	for {
		size, err := protocol.ReadFrameSize(br, bc.maxResp)
		if err != nil {
			bc.close(fmt.Errorf("read from %s: %w", bc.who, err))
			return
		}
		var c *call
		select {
		case c = <-bc.pending:
		default:
			bc.close(fmt.Errorf("%s sent a response to no request", bc.who))
			return
		}
		// Once popped, c is answered here or failed here: close drains
		// only the calls still pending.
		fail := func(err error) {
			c.err = err
			close(c.done)
			bc.close(err)
		}
		if hlen, ok := plainResponseHeader(br, c, size); ok {
			delivered, err := bc.handOver(c, br, hlen, size)
			switch {
			case err != nil && !delivered:
				fail(err)
				return
			case err != nil:
				bc.close(err)
				return
			case delivered:
				if bc.answered() {
					return
				}
				continue
			}
		}
		frame, err := readAnswerFrame(br, c.key, size)
		if err != nil {
			fail(fmt.Errorf("read from %s: %w", bc.who, err))
			return
		}
		hlen, err := protocol.ResponseHeaderLen(frame, c.key, c.version)
		if err == nil {
			if got := int32(binary.BigEndian.Uint32(frame)); got != c.corr {
				err = fmt.Errorf("%s answered correlation id %d, expected %d", bc.who, got, c.corr)
			}
		}
		if err != nil {
			fail(err)
			return
		}
		c.body, c.frame = frame[hlen:], frame
		close(c.done)
		if bc.answered() {
			return
		}
	}
}

// readAnswerFrame reads an answer frame of size bytes, a large fetch
// answer into a pooled buffer (framepool.go; the fan-out gives it back).
func readAnswerFrame(br *bufio.Reader, key int16, size int32) ([]byte, error) {
	if key != fetchKey || size < pooledFrameMin {
		return protocol.ReadFrameBody(br, size)
	}
	frame := pooledFrames.get(int(size))
	return frame, protocol.ReadFrameInto(br, frame)
}

// answered counts one call answered and closes a retired connection whose
// last call it was; it reports whether the connection closed.
func (bc *brokerConn) answered() bool {
	bc.inflight.Add(-1)
	return bc.closeIfRetiredAndIdle()
}

// plainResponseHeader peeks at the header of c's answer and reports its
// length when it is the common one (the right correlation id, no tagged
// fields), which is all a streamed answer may carry.
func plainResponseHeader(br *bufio.Reader, c *call, size int32) (int, bool) {
	if c.handover.Load() != handoverWaiting {
		return 0, false
	}
	hlen := 4
	if protocol.IsFlexible(c.key, c.version) && c.key != apiVersionsKey {
		hlen = 5
	}
	if int(size) < hlen {
		return 0, false
	}
	hdr, err := br.Peek(hlen)
	if err != nil || int32(binary.BigEndian.Uint32(hdr)) != c.corr || hlen == 5 && hdr[4] != 0 {
		return 0, false
	}
	return hlen, true
}

// close fails every pending call with err and closes the socket. Safe to call
// more than once; the first error wins.
func (bc *brokerConn) close(err error) {
	bc.closeOnce.Do(func() {
		bc.err = fmt.Errorf("%w: %w", errConnClosed, err)
		close(bc.closed)
		bc.conn.Close()
		go func() {
			// Drain under the write lock so no Send enqueues after.
			bc.writeMu.Lock()
			defer bc.writeMu.Unlock()
			for {
				select {
				case c := <-bc.pending:
					c.err = bc.err
					close(c.done)
				default:
					return
				}
			}
		}()
	})
}

func (bc *brokerConn) isClosed() bool {
	select {
	case <-bc.closed:
		return true
	default:
		return false
	}
}

// roundTrip encodes a request the proxy originates and decodes its response.
func (bc *brokerConn) roundTrip(ctx context.Context, req kmsg.Request) (kmsg.Response, error) {
	hdr := protocol.AppendRequestHeader(nil, req.Key(), req.GetVersion(), 0, "kmigrate")
	c, err := bc.Send(req.Key(), req.GetVersion(), hdr, req.AppendTo(nil), true)
	if err != nil {
		return nil, err
	}
	body, err := c.wait(ctx)
	if err != nil {
		return nil, err
	}
	resp := req.ResponseKind()
	if err := resp.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("decode %s v%d from %s: %w", kmsg.NameForKey(req.Key()), req.GetVersion(), bc.addr, err)
	}
	return resp, nil
}

// saslAuthenticate runs SaslHandshake v1 and SaslAuthenticate rounds on a
// connection before any other traffic uses it. It returns the session
// lifetime the broker granted (0: unlimited) and when the last
// SaslAuthenticate was sent, from which the lifetime counts.
func saslAuthenticate(ctx context.Context, conn net.Conn, mech sasl.Mechanism, addr string, maxResp int32) (lifetime time.Duration, sent time.Time, err error) {
	ctx, cancel := context.WithTimeout(ctx, authTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	defer conn.SetDeadline(time.Time{})
	br := bufio.NewReader(conn)
	corr := int32(0)
	exchange := func(req kmsg.Request, resp kmsg.Response) error {
		corr++
		buf := protocol.AppendRequestHeader(nil, req.Key(), req.GetVersion(), corr, "kmigrate")
		buf = req.AppendTo(buf)
		if _, err := conn.Write(protocol.AppendFrame(nil, buf)); err != nil {
			return err
		}
		frame, err := protocol.ReadFrame(br, maxResp)
		if err != nil {
			return err
		}
		hlen, err := protocol.ResponseHeaderLen(frame, req.Key(), req.GetVersion())
		if err != nil {
			return err
		}
		resp.SetVersion(req.GetVersion())
		return resp.ReadFrom(frame[hlen:])
	}

	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version = 1
	hs.Mechanism = mech.Name()
	hsResp := kmsg.NewPtrSASLHandshakeResponse()
	if err := exchange(hs, hsResp); err != nil {
		return 0, sent, fmt.Errorf("handshake: %w", err)
	}
	if err := kerr.ErrorForCode(hsResp.ErrorCode); err != nil {
		return 0, sent, fmt.Errorf("handshake: %w (broker enables %v)", err, hsResp.SupportedMechanisms)
	}
	session, clientWrite, err := mech.Authenticate(ctx, addr)
	if err != nil {
		return 0, sent, err
	}
	for {
		auth := kmsg.NewPtrSASLAuthenticateRequest()
		auth.Version = 1
		auth.SASLAuthBytes = clientWrite
		authResp := kmsg.NewPtrSASLAuthenticateResponse()
		sent = time.Now()
		if err := exchange(auth, authResp); err != nil {
			return 0, sent, fmt.Errorf("authenticate: %w", err)
		}
		if err := kerr.ErrorForCode(authResp.ErrorCode); err != nil {
			msg := ""
			if authResp.ErrorMessage != nil {
				msg = *authResp.ErrorMessage
			}
			return 0, sent, fmt.Errorf("authenticate: %w: %s", err, msg)
		}
		done, next, err := session.Challenge(authResp.SASLAuthBytes)
		if err != nil {
			return 0, sent, err
		}
		if done {
			return time.Duration(authResp.SessionLifetimeMillis) * time.Millisecond, sent, nil
		}
		clientWrite = next
	}
}
