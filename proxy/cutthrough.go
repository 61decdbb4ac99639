package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"time"
)

// Cut-through answers. A fetch answer is most of what a proxy moves, and
// read whole into memory then written out it costs two copies through user
// space, a fresh zeroed buffer and its garbage. When the answer needs no
// rewrite and the client's writer is already waiting for it, the upstream
// reader hands the socket itself to the writer: the writer sends the size
// and header, then moves the body socket to socket (splice(2) on Linux,
// through *net.TCPConn.ReadFrom), and the reader resumes once it is done.
//
// The handover only happens when the writer is waiting at the moment the
// answer arrives. An answer that arrives earlier, while the writer is busy
// with answers ahead of it, is read into memory as any other: the reader
// never blocks on a writer that may itself be waiting for a later answer of
// the same upstream connection (a held group request, a lookup), so the
// handover cannot deadlock.

// maxCutThroughFetch is the last Fetch version without KIP-951 leader
// hints (v16 added them, and the node endpoints they point at, which the
// proxy must replace with itself): answers up to it need no rewrite. With
// the proxy as the only broker clients know, a hint could only ever name
// the proxy again; clients lose nothing but the hint's leader epoch and
// refresh metadata instead.
const maxCutThroughFetch = 15

// Handover states of a call (call.handover).
const (
	handoverIdle    int32 = iota // nobody claimed the answer yet
	handoverWaiting              // the client's writer waits and can take the socket
	handoverTaken                // the reader chose: buffered, or streamed if it found the writer waiting
)

// bodyStream is an answer's body still in the upstream socket.
type bodyStream struct {
	br   io.Reader // the reader's buffer, holding the body's first bytes
	nbuf int64     // how many of the body's bytes br holds
	conn net.Conn  // the upstream socket, for the rest
	n    int64     // body length
	done chan error
}

// copyTo writes the body to dst and tells the upstream reader it may go on
// (with the error when the upstream stream is broken mid-body). The caller
// flushes dst. Going through dst's buffer, a small answer leaves in one
// write with its head, as a client expects it; a large one fills the
// buffer once, and then bufio.Writer.ReadFrom hands the rest to
// *net.TCPConn.ReadFrom, which splices when the source is a *net.TCPConn
// under an io.LimitedReader.
func (s *bodyStream) copyTo(dst *bufio.Writer) (int64, error) {
	n, err := io.CopyN(dst, s.br, s.nbuf)
	if err == nil && n < s.n {
		var m int64
		m, err = io.Copy(dst, &io.LimitedReader{R: s.conn, N: s.n - n})
		n += m
		if err == nil && n < s.n {
			err = io.ErrUnexpectedEOF
		}
	}
	s.done <- err
	return n, err
}

// abort tells the upstream reader the body will not be moved: the writer
// failed before it began.
func (s *bodyStream) abort(err error) { s.done <- err }

// offerStream is the writer's side: wait for the call's answer, ready to
// take it straight from the socket. It returns the stream, or nil when
// the answer was read into memory (call.wait then has it) or the offer was
// withdrawn. moved, when set, is asked every streamCheckInterval whether
// the answer is still wanted; once it says no, the offer is withdrawn if
// the reader has not taken it yet (the answer, when it comes, is read into
// memory and dropped by whoever waits for it).
func (cl *call) offerStream(ctx context.Context, moved func() bool) (*bodyStream, error) {
	cl.handover.CompareAndSwap(handoverIdle, handoverWaiting)
	var tick <-chan time.Time
	if moved != nil {
		t := time.NewTicker(streamCheckInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-cl.done:
			return cl.stream, nil
		case <-ctx.Done():
			// The connection is closing: the reader, blocked on a
			// stream nobody will take, is freed when the upstream
			// closes.
			return nil, ctx.Err()
		case <-tick:
			if moved() && cl.handover.CompareAndSwap(handoverWaiting, handoverIdle) {
				return nil, nil
			}
			// Still wanted, or the reader took it: the stream comes.
		}
	}
}

// streamCheckInterval is how often a waiting writer asks whether a fetch's
// topics moved cluster (waitFetchUnlessMoved's pace).
const streamCheckInterval = 50 * time.Millisecond

// handOver is the reader's side for an answer of size bytes whose header,
// hlen bytes, br holds: when the writer waits for it, it streams the body
// to the writer and returns once the writer moved it. delivered says
// whether the writer got the stream (cl.done is closed); false with no
// error: the writer was not waiting, and the caller reads the answer into
// memory; false with an error: the caller fails the call.
func (bc *brokerConn) handOver(cl *call, br *bufio.Reader, hlen int, size int32) (delivered bool, err error) {
	if !cl.handover.CompareAndSwap(handoverWaiting, handoverTaken) {
		return false, nil
	}
	if _, err := br.Discard(hlen); err != nil {
		return false, fmt.Errorf("read from %s: %w", bc.who, err)
	}
	n := int64(size) - int64(hlen)
	s := &bodyStream{br: br, nbuf: min(int64(br.Buffered()), n), conn: bc.conn, n: n, done: make(chan error, 1)}
	cl.stream = s
	close(cl.done)
	select {
	case err := <-s.done:
		if err != nil {
			return true, fmt.Errorf("streaming an answer from %s: %w", bc.who, err)
		}
		return true, nil
	case <-bc.closed:
		return true, bc.err
	}
}
