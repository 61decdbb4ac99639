package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand"
	"net"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// expectClosed asserts the proxy closes conn (EOF or reset) without
// answering; a read timeout means the proxy kept it open.
func expectClosed(t *testing.T, conn net.Conn, what string) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(make([]byte, 1))
	var netErr net.Error
	if n != 0 || err == nil || errors.As(err, &netErr) && netErr.Timeout() {
		t.Fatalf("%s: read %d bytes, err %v; want the connection closed", what, n, err)
	}
}

// healthy checks a well-behaved client still produces and reads back
// through the proxy.
func healthy(t *testing.T, p *Proxy) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Addr()), kgo.DefaultProduceTopic("t"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("still-alive")}).FirstErr(); err != nil {
		t.Fatalf("well-behaved client after bad input: %v", err)
	}
}

func TestBadInputClosesOnlyThatConnection(t *testing.T) {
	_, p := startKfakeProxy(t)
	cases := map[string][]byte{
		"oversized frame":   binary.BigEndian.AppendUint32(nil, 200<<20),
		"negative size":     {0xff, 0xff, 0xff, 0xfe},
		"unknown api key":   protocol.AppendFrame(nil, []byte{0x27, 0x0f, 0, 0, 0, 0, 0, 1, 0, 0}),
		"truncated header":  protocol.AppendFrame(nil, []byte{0, 3, 0}),
		"garbage body":      protocol.AppendFrame(nil, append(protocol.AppendRequestHeader(nil, 0, 9, 1, "x"), 0xff, 0xff, 0xff, 0xff, 0x01)),
		"unsupported fetch": protocol.AppendFrame(nil, protocol.AppendRequestHeader(nil, 1, 99, 1, "x")),
	}
	for name, payload := range cases {
		t.Run(name, func(t *testing.T) {
			conn, err := net.Dial("tcp", p.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.Write(payload)
			expectClosed(t, conn, name)
			healthy(t, p)
		})
	}
	t.Run("client disconnects mid-request", func(t *testing.T) {
		conn, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte{0, 0, 1, 0, 0, 3}) // announces 256 bytes, sends 2
		conn.Close()
		healthy(t, p)
	})
	t.Run("random frames from several connections", func(t *testing.T) {
		rng := rand.New(rand.NewSource(1))
		for i := 0; i < 200; i++ {
			conn, err := net.Dial("tcp", p.Addr())
			if err != nil {
				t.Fatal(err)
			}
			junk := make([]byte, rng.Intn(64))
			rng.Read(junk)
			conn.Write(protocol.AppendFrame(nil, junk))
			conn.Close()
		}
		healthy(t, p)
	})
}

// TestApiVersionsUnsupportedVersionAnswersV0 pins KIP-511: a version the
// proxy does not know gets UNSUPPORTED_VERSION in the v0 body format and a
// v0 header, listing what the proxy supports.
func TestApiVersionsUnsupportedVersionAnswersV0(t *testing.T) {
	_, p := startKfakeProxy(t)
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hdr := protocol.AppendRequestHeader(nil, 18, 77, 5, "future-client")
	conn.Write(protocol.AppendFrame(nil, append(hdr, 0, 0, 0))) // a v77 body nobody can parse
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	frame, err := protocol.ReadFrame(conn, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if id := int32(binary.BigEndian.Uint32(frame)); id != 5 {
		t.Fatalf("correlation id %d, want 5", id)
	}
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = 0
	if err := resp.ReadFrom(frame[4:]); err != nil {
		t.Fatalf("v0 body does not decode: %v", err)
	}
	if resp.ErrorCode != kerr.UnsupportedVersion.Code || len(resp.ApiKeys) == 0 {
		t.Fatalf("error %d with %d keys, want UNSUPPORTED_VERSION and the key list", resp.ErrorCode, len(resp.ApiKeys))
	}
	for _, k := range resp.ApiKeys {
		if k.ApiKey == 18 && k.MaxVersion > 4 {
			t.Fatalf("ApiVersions max %d advertised; the proxy answers up to v4", k.MaxVersion)
		}
	}
}

// TestAcksZeroProduceGetsNoResponse: Produce with acks=0 has no answer, so
// the next request's answer must be the next thing on the wire.
func TestAcksZeroProduceGetsNoResponse(t *testing.T) {
	_, p := startKfakeProxy(t)
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	produce := kmsg.NewPtrProduceRequest()
	produce.Version, produce.Acks, produce.TimeoutMillis = 9, 0, 1000
	produce.Topics = []kmsg.ProduceRequestTopic{{Topic: "t", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0}}}}
	conn.Write(protocol.AppendFrame(nil, produce.AppendTo(protocol.AppendRequestHeader(nil, 0, 9, 1, "x"))))
	meta := kmsg.NewPtrMetadataRequest()
	meta.Version = 12
	conn.Write(protocol.AppendFrame(nil, meta.AppendTo(protocol.AppendRequestHeader(nil, 3, 12, 2, "x"))))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	frame, err := protocol.ReadFrame(conn, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if id := binary.BigEndian.Uint32(frame); id != 2 {
		t.Fatalf("first answer has correlation id %d, want 2 (acks=0 produce must not be answered)", id)
	}
}
