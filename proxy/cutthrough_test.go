package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/kmigrate/kmigrate/protocol"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// startOneBrokerProxy runs a one-broker kfake cluster, where every fetch
// goes to a single upstream broker and so may be cut through, with a proxy
// in front of it and records already in topic "t".
func startOneBrokerProxy(t *testing.T, cfg Config, records int) (*kfake.Cluster, *Proxy) {
	t.Helper()
	fake, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	direct, err := kgo.NewClient(kgo.SeedBrokers(fake.ListenAddrs()...), kgo.DefaultProduceTopic("t"), kgo.ProducerLinger(time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	for i := 0; i < records; i++ {
		v := make([]byte, 100+i%4000)
		rand.Read(v)
		direct.Produce(ctx, &kgo.Record{Key: []byte(fmt.Sprint(i)), Value: v, Headers: []kgo.RecordHeader{{Key: "i", Value: []byte(fmt.Sprint(i))}}}, nil)
	}
	if err := direct.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cfg.Listen, cfg.NodeID, cfg.Source = "127.0.0.1:0", 7, Upstream{Bootstrap: fake.ListenAddrs()}
	cfg.Metrics = NewMetrics(nil)
	p, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return fake, p
}

// readAll consumes topic t from the start until it has n records.
func readAll(t *testing.T, ctx context.Context, bootstrap string, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %d of %d records from %s: %v", len(out), n, bootstrap, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d from %s: %v", topic, p, bootstrap, err) })
		out = append(out, fs.Records()...)
	}
	return out
}

func TestFetchCutThroughDeliversTheBrokersRecords(t *testing.T) {
	const n = 3000
	fake, p := startOneBrokerProxy(t, Config{}, n)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if v := p.apiVersions()[fetchKey]; v[1] != maxCutThroughFetch {
		t.Fatalf("Fetch advertised up to v%d, want v%d: answers of later versions carry leader hints and cannot be cut through", v[1], maxCutThroughFetch)
	}
	want := readAll(t, ctx, fake.ListenAddrs()[0], n)
	got := readAll(t, ctx, p.Addr(), n)
	assertSameRecords(t, want, got)
	if cut := testutil.ToFloat64(p.metrics.cutThrough); cut == 0 {
		t.Fatal("no answer was cut through: every fetch answer was read into memory")
	} else {
		t.Logf("%.0f bytes cut through of %.0f sent", cut, testutil.ToFloat64(p.metrics.bytesOut))
	}
}

func TestFetchLeaderHintsServesLaterVersions(t *testing.T) {
	const n = 500
	fake, p := startOneBrokerProxy(t, Config{FetchLeaderHints: true}, n)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if v := p.apiVersions()[fetchKey]; v[1] <= maxCutThroughFetch {
		t.Fatalf("with FetchLeaderHints Fetch is advertised up to v%d only", v[1])
	}
	assertSameRecords(t, readAll(t, ctx, fake.ListenAddrs()[0], n), readAll(t, ctx, p.Addr(), n))
	if cut := testutil.ToFloat64(p.metrics.cutThrough); cut != 0 {
		t.Fatalf("%.0f bytes cut through from Fetch v16+ answers, which may carry leader hints", cut)
	}
}

func assertSameRecords(t *testing.T, want, got []*kgo.Record) {
	t.Helper()
	byPos := func(rs []*kgo.Record) map[string]*kgo.Record {
		m := make(map[string]*kgo.Record, len(rs))
		for _, r := range rs {
			m[fmt.Sprintf("%d/%d", r.Partition, r.Offset)] = r
		}
		return m
	}
	w, g := byPos(want), byPos(got)
	if len(w) != len(want) || len(g) != len(got) || len(w) != len(g) {
		t.Fatalf("direct read %d records (%d positions), proxy read %d (%d positions)", len(want), len(w), len(got), len(g))
	}
	for pos, wr := range w {
		gr := g[pos]
		if gr == nil || !bytes.Equal(gr.Key, wr.Key) || !bytes.Equal(gr.Value, wr.Value) ||
			len(gr.Headers) != 1 || !bytes.Equal(gr.Headers[0].Value, wr.Headers[0].Value) || !gr.Timestamp.Equal(wr.Timestamp) {
			t.Fatalf("record at %s differs through the proxy", pos)
		}
	}
}

// TestFetchCutThroughPipelined sends many fetches at once on one
// connection: answers arriving while the writer is busy with earlier ones
// are read into memory, the rest cut through, and the client must get
// every answer whole, in order, identical to the broker's.
func TestFetchCutThroughPipelined(t *testing.T) {
	const n, fetches = 2000, 64
	fake, p := startOneBrokerProxy(t, Config{}, n)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	adm, err := kgo.NewClient(kgo.SeedBrokers(fake.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	mdReq := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr("t")
	mdReq.Topics = append(mdReq.Topics, mt)
	md, err := mdReq.RequestWith(ctx, adm)
	if err != nil {
		t.Fatal(err)
	}
	fetch := kmsg.NewPtrFetchRequest()
	fetch.Version = maxCutThroughFetch
	fetch.MaxBytes, fetch.MinBytes, fetch.MaxWaitMillis = 1<<20, 1, 0
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic, ft.TopicID = "t", md.Topics[0].TopicID
	for i := int32(0); i < 3; i++ {
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.Partition, fp.PartitionMaxBytes = i, 256<<10
		ft.Partitions = append(ft.Partitions, fp)
	}
	fetch.Topics = append(fetch.Topics, ft)

	exchange := func(addr string) [][]byte {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		var out []byte
		for i := 0; i < fetches; i++ {
			req := protocol.AppendRequestHeader(nil, fetch.Key(), fetch.Version, int32(1000+i), "cut-test")
			out = protocol.AppendFrame(out, fetch.AppendTo(req))
		}
		if _, err := conn.Write(out); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		bodies := make([][]byte, fetches)
		for i := range bodies {
			frame, err := protocol.ReadFrame(br, 64<<20)
			if err != nil {
				t.Fatalf("answer %d of %d from %s: %v", i, fetches, addr, err)
			}
			hlen, err := protocol.ResponseHeaderLen(frame, fetch.Key(), fetch.Version)
			if err != nil {
				t.Fatal(err)
			}
			if corr := int32(frame[0])<<24 | int32(frame[1])<<16 | int32(frame[2])<<8 | int32(frame[3]); corr != int32(1000+i) {
				t.Fatalf("answer %d has correlation id %d, want %d", i, corr, 1000+i)
			}
			bodies[i] = frame[hlen:]
		}
		return bodies
	}
	direct := exchange(fake.ListenAddrs()[0])
	proxied := exchange(p.Addr())
	for i := range direct {
		if !bytes.Equal(direct[i], proxied[i]) {
			t.Fatalf("answer %d differs: %d bytes direct, %d through the proxy", i, len(direct[i]), len(proxied[i]))
		}
	}
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = fetch.Version
	if err := resp.ReadFrom(proxied[0]); err != nil || len(resp.Topics) != 1 || len(resp.Topics[0].Partitions[0].RecordBatches) == 0 {
		t.Fatalf("answer carries no records (err %v): the test proves nothing", err)
	}
	t.Logf("%d answers identical; %.0f bytes cut through", fetches, testutil.ToFloat64(p.metrics.cutThrough))
}

// flippableRouting serves every group on the source and topic "t" where
// primary says.
type flippableRouting struct{ primary atomic.Value }

func (r *flippableRouting) GroupPhase(string) string { return "source" }
func (r *flippableRouting) TopicPrimary(topic string) string {
	if topic != "t" {
		return primarySource
	}
	return r.primary.Load().(string)
}
func (r *flippableRouting) TopicEpoch(string) uint64 { return 0 }

type noMaps struct{}

func (noMaps) OffsetMap(string, int32) offsetsync.OffsetMap { return nil }

// TestFetchCutThroughWithdrawnWhenTopicMoves long-polls a source fetch
// that waits, offered for cut-through, when its topic flips to the
// target: the client must get NOT_LEADER_OR_FOLLOWER at once rather than
// after the long poll, and the upstream connection must stay in step (the
// late answer is read and dropped) for the next fetch, which is cut through.
func TestFetchCutThroughWithdrawnWhenTopicMoves(t *testing.T) {
	const n = 200
	fake, _ := startOneBrokerProxy(t, Config{}, n) // the source, with records
	target, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	routing := &flippableRouting{}
	routing.primary.Store(primarySource)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := Start(ctx, Config{
		Listen: "127.0.0.1:0", NodeID: 7, Metrics: NewMetrics(nil),
		Source:  Upstream{Bootstrap: fake.ListenAddrs()},
		Target:  &Upstream{Bootstrap: target.ListenAddrs()},
		Routing: routing, Maps: noMaps{},
		Covered: func(context.Context, string, int32, int64) error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	conn, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	corr := int32(0)
	fetch := func(offset int64, maxWait int32) (*kmsg.FetchResponse, time.Duration) {
		req := kmsg.NewPtrFetchRequest()
		req.Version = 12 // the highest served with a target
		req.MaxBytes, req.MinBytes, req.MaxWaitMillis = 1<<20, 1, maxWait
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic = "t"
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.Partition, fp.FetchOffset, fp.PartitionMaxBytes = 0, offset, 1<<20
		ft.Partitions = append(ft.Partitions, fp)
		req.Topics = append(req.Topics, ft)
		corr++
		start := time.Now()
		if _, err := conn.Write(protocol.AppendFrame(nil, req.AppendTo(protocol.AppendRequestHeader(nil, req.Key(), req.Version, corr, "withdraw-test")))); err != nil {
			t.Fatal(err)
		}
		frame, err := protocol.ReadFrame(br, 64<<20)
		if err != nil {
			t.Fatalf("fetch at %d: %v", offset, err)
		}
		took := time.Since(start)
		hlen, _ := protocol.ResponseHeaderLen(frame, req.Key(), req.Version)
		resp := kmsg.NewPtrFetchResponse()
		resp.Version = req.Version
		if err := resp.ReadFrom(frame[hlen:]); err != nil {
			t.Fatalf("fetch at %d: decoding the answer: %v", offset, err)
		}
		return resp, took
	}

	first, _ := fetch(0, 0)
	hw := first.Topics[0].Partitions[0].HighWatermark
	if hw == 0 || len(first.Topics[0].Partitions[0].RecordBatches) == 0 {
		t.Fatalf("partition 0 has no records (high watermark %d): the test proves nothing", hw)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		routing.primary.Store(primaryTarget)
	}()
	moved, took := fetch(hw, 4000) // long-polls at the end until the flip
	if code := moved.Topics[0].Partitions[0].ErrorCode; code != kerr.NotLeaderForPartition.Code {
		t.Fatalf("fetch outliving the flip got error code %d, want NOT_LEADER_OR_FOLLOWER", code)
	}
	if took > 2*time.Second {
		t.Fatalf("fetch outliving the flip answered after %v: the withdrawn offer waited for the long poll", took)
	}
	routing.primary.Store(primarySource)
	before := testutil.ToFloat64(p.metrics.cutThrough)
	again, _ := fetch(0, 0) // queued upstream behind the dropped long poll
	if !bytes.Equal(again.Topics[0].Partitions[0].RecordBatches, first.Topics[0].Partitions[0].RecordBatches) {
		t.Fatal("the fetch after a withdrawn offer got other records than the first: the upstream connection is out of step")
	}
	// An answer that reaches the proxy before its writer is ready is read
	// into memory by design, which a loaded machine can make happen to any
	// one fetch: of a few more, one must be cut through.
	for i := 0; i < 10 && testutil.ToFloat64(p.metrics.cutThrough) == before; i++ {
		fetch(0, 0)
	}
	if testutil.ToFloat64(p.metrics.cutThrough) == before {
		t.Fatal("no fetch after the withdrawn offer was cut through")
	}
	t.Logf("moved answer after %v", took)
}

// TestUpstreamDiesMidAnswerFailsTheCall: a broker that dies half way
// through an answer must fail the call waiting for it, streamed or not,
// rather than leave its client waiting for good.
func TestUpstreamDiesMidAnswerFailsTheCall(t *testing.T) {
	for _, offered := range []bool{false, true} {
		t.Run(fmt.Sprintf("writer_waiting=%v", offered), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				br := bufio.NewReader(conn)
				frame, err := protocol.ReadFrame(br, 1<<20)
				if err != nil {
					return
				}
				// Announce 1 MiB, send the header (this connection's
				// correlation id) and a few bytes, and die.
				out := binary.BigEndian.AppendUint32(nil, 1<<20)
				out = append(out, frame[4:8]...)
				out = append(out, 0, 1, 2, 3)
				if offered {
					time.Sleep(100 * time.Millisecond) // the writer offers first
				}
				conn.Write(out)
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			bc, err := dialBroker(ctx, &Upstream{Name: "source"}, ln.Addr().String(), 8, 64<<20)
			if err != nil {
				t.Fatal(err)
			}
			defer bc.close(errors.New("test over"))
			req := kmsg.NewPtrFetchRequest()
			req.Version = 4 // non-flexible: a 4-byte response header
			cl, err := bc.Send(req.Key(), req.Version, protocol.AppendRequestHeader(nil, req.Key(), req.Version, 1, "t"), req.AppendTo(nil), true)
			if err != nil {
				t.Fatal(err)
			}
			var werr error
			if offered {
				var s *bodyStream
				if s, werr = cl.offerStream(ctx, nil); s != nil {
					_, werr = s.copyTo(bufio.NewWriter(io.Discard))
				} else if werr == nil {
					_, werr = cl.wait(ctx)
				}
			} else {
				_, werr = cl.wait(ctx)
			}
			if werr == nil || ctx.Err() != nil {
				t.Fatalf("got %v (deadline: %v); want the broken answer's error before the deadline", werr, ctx.Err())
			}
			t.Logf("the call failed: %v", werr)
		})
	}
}

// countingWriter counts the writes that reach it, as a socket counts the
// segments a client wakes up for.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// A streamed answer leaves with its head in one write when it fits the
// writer's buffer, even when its body arrives in pieces, and moves intact
// when it does not fit.
func TestStreamedAnswerWrites(t *testing.T) {
	for _, tc := range []struct {
		name      string
		body      int
		maxWrites int
	}{
		{"small body in two pieces", 1200, 1},
		{"large body", 1 << 20, 1<<20/(64<<10) + 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := make([]byte, tc.body)
			rand.Read(body)
			upstream, feed := net.Pipe()
			defer upstream.Close()
			// The reader's buffer holds the first 100 bytes; the rest is
			// still in the socket, written in two pieces.
			br := bufio.NewReader(io.MultiReader(bytes.NewReader(body[:100]), upstream))
			if _, err := br.Peek(100); err != nil {
				t.Fatal(err)
			}
			go func() {
				half := 100 + (tc.body-100)/2
				feed.Write(body[100:half])
				feed.Write(body[half:])
			}()
			s := &bodyStream{br: br, nbuf: 100, conn: upstream, n: int64(tc.body), done: make(chan error, 1)}
			var out countingWriter
			bw := bufio.NewWriterSize(&out, 64<<10)
			head := []byte("head")
			bw.Write(head)
			n, err := s.copyTo(bw)
			if err == nil {
				err = bw.Flush()
			}
			if err != nil || n != int64(tc.body) {
				t.Fatalf("moved %d of %d bytes: %v", n, tc.body, err)
			}
			if err := <-s.done; err != nil {
				t.Fatalf("the reader was told %v", err)
			}
			if !bytes.Equal(out.Bytes(), append(head, body...)) {
				t.Fatal("the answer arrived changed")
			}
			if out.writes > tc.maxWrites {
				t.Fatalf("the answer took %d writes; want at most %d", out.writes, tc.maxWrites)
			}
			t.Logf("%d bytes in %d writes", out.Len(), out.writes)
		})
	}
}
