package proxy

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// tcpPair returns both ends of a loopback TCP connection: what a client
// writes to the first, the proxy reads from the second.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// fakeBroker accepts one connection and hands it to serve; it returns the
// proxy's upstream connection to it and a context bounding the test.
func fakeBroker(t *testing.T, serve func(net.Conn)) (*brokerConn, context.Context) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		serve(conn)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	bc, err := dialBroker(ctx, &Upstream{Name: "source"}, ln.Addr().String(), 8, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bc.close(errors.New("test over")) })
	return bc, ctx
}

// streamFrom sets up a client that sends frame (size prefix already read,
// as the proxy's reader has when it decides to stream) the way send does,
// and the requestStream over the proxy's end.
func streamFrom(t *testing.T, frame []byte, hlen int, send func(client net.Conn)) (*requestStream, *bufio.Reader, net.Conn) {
	t.Helper()
	client, server := tcpPair(t)
	go send(client)
	br := bufio.NewReaderSize(server, 64<<10)
	if _, err := br.Peek(hlen); err != nil {
		t.Fatal(err)
	}
	return &requestStream{src: br, conn: server, skip: hlen, n: int64(len(frame) - hlen), done: make(chan error, 1)}, br, client
}

func sendWhole(frame []byte) func(net.Conn) { return func(c net.Conn) { c.Write(frame) } }

// sendHalf sends half the frame and disconnects.
func sendHalf(frame []byte) func(net.Conn) {
	return func(c net.Conn) {
		c.Write(frame[:len(frame)/2])
		c.Close()
	}
}

func testFrame(t *testing.T, bodyLen int) (frame []byte, hlen int) {
	hdr := protocol.AppendRequestHeader(nil, 0, 9, 41, "stream-test")
	body := make([]byte, bodyLen)
	rand.Read(body)
	return append(hdr, body...), len(hdr)
}

// The broker receives exactly the client's frame, its correlation id
// replaced by the upstream connection's, whether the body was partly in the
// reader's buffer or all in the socket.
func TestSendStreamMovesTheFrameIntact(t *testing.T) {
	frame, hlen := testFrame(t, 3<<20+17)
	got := make(chan []byte, 1)
	bc, ctx := fakeBroker(t, func(conn net.Conn) {
		f, err := protocol.ReadFrame(conn, 64<<20)
		if err != nil {
			t.Errorf("broker read: %v", err)
		}
		got <- f
		// Answer, so the call completes: correlation id and a body.
		conn.Write(protocol.AppendFrame(nil, append(append([]byte{}, f[4:8]...), 0)))
	})
	s, br, _ := streamFrom(t, frame, hlen, sendWhole(frame))
	cl, taken, err := bc.SendStream(ctx, 0, 9, frame[:hlen], s, true)
	if !taken || err != nil {
		t.Fatalf("taken %v, err %v", taken, err)
	}
	if br.Buffered() != 0 {
		t.Fatalf("%d bytes left in the client's reader: it is out of step with the client", br.Buffered())
	}
	f := <-got
	want := append([]byte{}, frame...)
	copy(want[4:8], f[4:8]) // the upstream connection's correlation id
	if corr := binary.BigEndian.Uint32(f[4:8]); corr != uint32(cl.corr) {
		t.Fatalf("broker saw correlation id %d, the call waits for %d", corr, cl.corr)
	}
	if !bytes.Equal(f, want) {
		t.Fatalf("broker got %d bytes that differ from the client's %d", len(f), len(want))
	}
	if _, err := cl.wait(ctx); err != nil {
		t.Fatalf("answer: %v", err)
	}
}

// A broker that dies halfway through the body, or a client that does,
// fails the stream and the call and closes the upstream connection, which
// holds half a request; neither waits for a deadline.
func TestSendStreamBrokenMidBody(t *testing.T) {
	for _, side := range []string{"broker", "client"} {
		t.Run(side+" dies", func(t *testing.T) {
			frame, hlen := testFrame(t, 8<<20)
			bc, ctx := fakeBroker(t, func(conn net.Conn) {
				if side == "broker" {
					io.CopyN(io.Discard, conn, 1<<20)
					return
				}
				io.Copy(io.Discard, conn)
			})
			send := sendWhole(frame)
			if side == "client" {
				send = sendHalf(frame)
			}
			s, _, _ := streamFrom(t, frame, hlen, send)
			cl, taken, err := bc.SendStream(ctx, 0, 9, frame[:hlen], s, true)
			if !taken || err == nil || ctx.Err() != nil {
				t.Fatalf("taken %v, err %v (deadline: %v): want the broken stream's error", taken, err, ctx.Err())
			}
			if !bc.isClosed() {
				t.Fatal("the upstream connection stays open with half a request written")
			}
			if _, werr := cl.wait(ctx); werr == nil {
				t.Fatal("the call of a request never written whole succeeded")
			}
			t.Logf("stream failed: %v", err)
		})
	}
}

// A client on a slow link may take longer than the upstream write timeout
// to send a large produce: the timeout bounds each chunk moved, so a body
// that keeps coming goes through whole, however long it takes.
func TestSendStreamSlowClient(t *testing.T) {
	defer func(d time.Duration) { upstreamWriteTimeout = d }(upstreamWriteTimeout)
	upstreamWriteTimeout = time.Second
	frame, hlen := testFrame(t, 8<<20)
	got := make(chan []byte, 1)
	bc, ctx := fakeBroker(t, func(conn net.Conn) {
		f, _ := protocol.ReadFrame(conn, 64<<20)
		got <- f
	})
	paced := func(c net.Conn) { // 64 KiB every 10 ms: 6.5 MB/s, 1.3 s in all
		for rest := frame; len(rest) > 0; {
			n := min(len(rest), 64<<10)
			if _, err := c.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
			time.Sleep(10 * time.Millisecond)
		}
	}
	s, _, _ := streamFrom(t, frame, hlen, paced)
	start := time.Now()
	_, taken, err := bc.SendStream(ctx, 0, 9, frame[:hlen], s, true)
	if !taken || err != nil {
		t.Fatalf("taken %v, err %v after %v: a slow client's produce failed on the write timeout (%v)", taken, err, time.Since(start), upstreamWriteTimeout)
	}
	if f := <-got; len(f) != len(frame) || !bytes.Equal(f[8:], frame[8:]) {
		t.Fatalf("broker got %d bytes that differ from the client's %d", len(f), len(frame))
	}
	t.Logf("moved %d bytes in %v with a %v timeout", len(frame), time.Since(start).Round(time.Millisecond), upstreamWriteTimeout)
}

// A stream whose connection closes before its turn is withdrawn: nothing
// of it was read, so the caller can still read the request whole.
func TestSendStreamWithdrawnUntouched(t *testing.T) {
	release := make(chan struct{})
	bc, ctx := fakeBroker(t, func(net.Conn) { <-release }) // reads nothing
	defer close(release)
	// A request larger than the socket buffers keeps the writer busy.
	if _, err := bc.Send(0, 9, protocol.AppendRequestHeader(nil, 0, 9, 1, "x"), make([]byte, 32<<20), true); err != nil {
		t.Fatal(err)
	}
	frame, hlen := testFrame(t, 1<<20)
	s, br, _ := streamFrom(t, frame, hlen, sendWhole(frame))
	buffered := br.Buffered()
	go func() {
		time.Sleep(200 * time.Millisecond)
		bc.close(errors.New("broker gone"))
	}()
	_, taken, err := bc.SendStream(ctx, 0, 9, frame[:hlen], s, true)
	if taken || err == nil {
		t.Fatalf("taken %v, err %v: want withdrawn with the connection's error", taken, err)
	}
	if br.Buffered() != buffered {
		t.Fatalf("withdrawn stream consumed %d buffered bytes", buffered-br.Buffered())
	}
	rest, err := io.ReadAll(io.LimitReader(br, int64(len(frame))))
	if err != nil || !bytes.Equal(rest, frame) {
		t.Fatalf("the frame is not whole in the reader after a withdrawal (%d bytes, err %v)", len(rest), err)
	}
}

// Through the proxy, produces whose route their head decides are
// streamed and land record for record; produces that must be split are
// not streamed.
func TestProduceCutThrough(t *testing.T) {
	cases := []struct {
		name          string
		brokers       int
		partitions    int32
		clientTLS     bool // a TLS client socket: copied through the TLS reader, not spliced
		acksZero      bool // no answers: the next answer on the wire must be the next request's
		wantStreaming bool
	}{
		{"one broker, six partitions", 1, 6, false, false, true},
		{"one broker, client TLS", 1, 6, true, false, true},
		{"one broker, acks=0", 1, 6, false, true, true},
		{"three brokers, one partition", 3, 1, false, false, true},
		{"three brokers, six partitions", 3, 6, false, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake, err := kfake.NewCluster(kfake.NumBrokers(tc.brokers), kfake.SeedTopics(tc.partitions, "t"))
			if err != nil {
				t.Fatal(err)
			}
			defer fake.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cfg := Config{Listen: "127.0.0.1:0", NodeID: 7, Source: Upstream{Bootstrap: fake.ListenAddrs()}, Metrics: NewMetrics(nil)}
			opts := []kgo.Opt{kgo.DefaultProduceTopic("t"),
				kgo.ProducerLinger(20 * time.Millisecond), kgo.ProducerBatchMaxBytes(1 << 20), kgo.RequiredAcks(kgo.AllISRAcks())}
			if tc.clientTLS {
				cert, pool := selfSigned(t)
				cfg.ClientTLS = &tls.Config{Certificates: []tls.Certificate{cert}}
				opts = append(opts, kgo.DialTLSConfig(&tls.Config{RootCAs: pool}))
			}
			if tc.acksZero {
				opts = append(opts, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
			}
			p, err := Start(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			cl, err := kgo.NewClient(append(opts, kgo.SeedBrokers(p.Addr()))...)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			const n = 4000
			var sent []*kgo.Record
			for i := range n {
				v := make([]byte, 1024)
				rand.Read(v)
				r := &kgo.Record{Key: []byte(fmt.Sprint(i % 24)), Value: v, Headers: []kgo.RecordHeader{{Key: "i", Value: []byte(fmt.Sprint(i))}}}
				sent = append(sent, r)
				cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
					if err != nil {
						t.Errorf("produce: %v", err)
					}
				})
			}
			if err := cl.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			got := readAll(t, ctx, fake.ListenAddrs()[0], n)
			if tc.acksZero {
				assertSentInOrder(t, sent, got) // unacknowledged: kgo never learns their offsets
			} else {
				assertSameRecords(t, sent, got)
			}
			streamed := testutil.ToFloat64(p.metrics.streamedIn)
			if tc.wantStreaming && streamed < n*1024/2 {
				t.Fatalf("%.0f bytes streamed of %d KiB produced: the produces whose route is known went store and forward", streamed, n)
			}
			if !tc.wantStreaming && streamed != 0 {
				t.Fatalf("%.0f bytes streamed, though the topic's partitions have several leaders", streamed)
			}
			t.Logf("%.0f of %.0f bytes in streamed", streamed, testutil.ToFloat64(p.metrics.bytesIn))
		})
	}
}

// assertSentInOrder checks that each partition's log (got) holds exactly the
// records sent to it, in the order they were sent, byte for byte.
func assertSentInOrder(t *testing.T, sent, got []*kgo.Record) {
	t.Helper()
	byPartition := func(rs []*kgo.Record, byOffset bool) map[int32][]*kgo.Record {
		m := map[int32][]*kgo.Record{}
		for _, r := range rs {
			m[r.Partition] = append(m[r.Partition], r)
		}
		if byOffset {
			for _, l := range m {
				slices.SortFunc(l, func(a, b *kgo.Record) int { return cmp.Compare(a.Offset, b.Offset) })
			}
		}
		return m
	}
	want, have := byPartition(sent, false), byPartition(got, true)
	if len(got) != len(sent) {
		t.Fatalf("%d records in the log, %d sent", len(got), len(sent))
	}
	for p, l := range want {
		if len(have[p]) != len(l) {
			t.Fatalf("partition %d: %d records in the log, %d sent", p, len(have[p]), len(l))
		}
		for i, r := range l {
			g := have[p][i]
			if !bytes.Equal(g.Key, r.Key) || !bytes.Equal(g.Value, r.Value) || fmt.Sprint(g.Headers) != fmt.Sprint(r.Headers) {
				t.Fatalf("partition %d, record %d of the log differs from the one sent in that place", p, i)
			}
		}
	}
}
