package proxy

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// rewriteForKey applies the response rewrite the proxy performs for key, for
// fuzzing; it reports false for keys without a rewrite.
func (p *Proxy) rewriteForKey(resp kmsg.Response) bool {
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		p.rewriteMetadata(r)
	case *kmsg.ProduceResponse:
		p.rewriteProduceHints(r)
	case *kmsg.FetchResponse:
		p.rewriteFetchHints(r)
	default:
		return false
	}
	return true
}

func fuzzProxy() *Proxy {
	return &Proxy{cfg: Config{NodeID: 3}, advHost: "127.0.0.1", advPort: 9092}
}

// FuzzRewriteResponses feeds arbitrary bodies to the response decoders and
// rewrites the proxy applies: never a panic, and a rewritten response always
// re-encodes into something that decodes and names no upstream broker.
func FuzzRewriteResponses(f *testing.F) {
	seeds := []kmsg.Response{
		&kmsg.MetadataResponse{Version: 12, Brokers: []kmsg.MetadataResponseBroker{{NodeID: 1, Host: "10.0.0.1", Port: 9092}},
			Topics: []kmsg.MetadataResponseTopic{{Topic: kmsg.StringPtr("t"), Partitions: []kmsg.MetadataResponseTopicPartition{{Leader: 1, Replicas: []int32{1, 2}}}}}},
		&kmsg.ProduceResponse{Version: 11, Topics: []kmsg.ProduceResponseTopic{{Topic: "t", Partitions: []kmsg.ProduceResponseTopicPartition{{CurrentLeader: kmsg.ProduceResponseTopicPartitionCurrentLeader{LeaderID: 2}}}}},
			Brokers: []kmsg.ProduceResponseBroker{{NodeID: 2, Host: "10.0.0.2", Port: 9092}}},
		&kmsg.FetchResponse{Version: 16, Topics: []kmsg.FetchResponseTopic{{TopicID: [16]byte{1}, Partitions: []kmsg.FetchResponseTopicPartition{{PreferredReadReplica: 2, RecordBatches: []byte{1, 2, 3}}}}},
			Brokers: []kmsg.FetchResponseBroker{{NodeID: 2, Host: "10.0.0.2", Port: 9092}}},
	}
	for _, s := range seeds {
		f.Add(s.Key(), s.GetVersion(), s.AppendTo(nil))
	}
	p := fuzzProxy()
	f.Fuzz(func(t *testing.T, key, version int16, body []byte) {
		resp := kmsg.ResponseForKey(key)
		if resp == nil || version < 0 || version > resp.MaxVersion() {
			return
		}
		resp.SetVersion(version)
		if resp.ReadFrom(body) != nil {
			return
		}
		if !p.rewriteForKey(resp) {
			return
		}
		again := kmsg.ResponseForKey(key)
		again.SetVersion(version)
		if err := again.ReadFrom(resp.AppendTo(nil)); err != nil {
			t.Fatalf("%s v%d: rewritten response does not decode: %v", kmsg.NameForKey(key), version, err)
		}
		switch r := again.(type) {
		case *kmsg.MetadataResponse:
			for _, b := range r.Brokers {
				if b.NodeID != 3 || b.Host != "127.0.0.1" {
					t.Fatalf("metadata still names broker %+v", b)
				}
			}
		case *kmsg.FetchResponse:
			for _, b := range r.Brokers {
				if b.NodeID != 3 {
					t.Fatalf("fetch still names broker %+v", b)
				}
			}
		}
	})
}

// FuzzSplitProduce splits arbitrary produce requests over three fake
// brokers: every partition lands in exactly one sub-request, which encodes
// and decodes, and batches are carried byte for byte.
func FuzzSplitProduce(f *testing.F) {
	seed := &kmsg.ProduceRequest{Version: 9, Acks: -1, Topics: []kmsg.ProduceRequestTopic{
		{Topic: "a", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: []byte{1}}, {Partition: 1, Records: []byte{2}}, {Partition: 2}}},
		{Topic: "b", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 4, Records: []byte{3, 4}}}},
	}}
	f.Add(int16(9), seed.AppendTo(nil))
	f.Fuzz(func(t *testing.T, version int16, body []byte) {
		req := kmsg.NewPtrProduceRequest()
		if version < 3 || version > req.MaxVersion() {
			return
		}
		req.Version = version
		if req.ReadFrom(body) != nil {
			return
		}
		want := 0
		for _, tp := range req.Topics {
			want += len(tp.Partitions)
		}
		split, order := splitByBroker(req.Topics, produceTopics, func(_ string, p int32) int32 { return p % 3 })
		got := 0
		for _, b := range order {
			sub := *req
			sub.Topics = split[b]
			again := kmsg.NewPtrProduceRequest()
			again.Version = version
			if err := again.ReadFrom(sub.AppendTo(nil)); err != nil {
				t.Fatalf("sub-request for broker %d does not decode: %v", b, err)
			}
			for _, tp := range again.Topics {
				for _, pt := range tp.Partitions {
					if pt.Partition%3 != b {
						t.Fatalf("partition %d routed to broker %d", pt.Partition, b)
					}
					got++
				}
			}
		}
		if got != want {
			t.Fatalf("split carries %d partitions, request had %d", got, want)
		}
	})
}

// FuzzClientSASL feeds arbitrary client messages to the proxy's server side
// of SASL: PLAIN parsing, the SCRAM first step, and both forms of the SCRAM
// final message (RFC 5802's through xdg-go/scram, librdkafka's through
// scramFirst). Nothing may panic, and no message the fuzzer makes up may
// authenticate: a valid proof needs the password.
func FuzzClientSASL(f *testing.F) {
	creds, err := ParseCredentials([]byte("users:\n  app:\n    password: app-secret\n"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("\x00app\x00app-secret"), []byte("n,,n=app,r=abc"), []byte("c=biws,r=abc,p=AAAA"))
	f.Add([]byte("app\x00app\x00x"), []byte("n,,n=app,r=]U|QYxx"), []byte("c=biws,r=]U|QYxx]U|QYxx,p="))
	f.Add([]byte(""), []byte("y,a=other,n=app,r=1"), []byte("c=eSxhPW90aGVyLA==,r=1,p=x"))
	f.Fuzz(func(t *testing.T, plain, first, final []byte) {
		parsePlain(plain)
		for _, mech := range []string{MechScramSHA256, MechScramSHA512} {
			lookup := creds.scramLookup(mech)
			srv, err := scramHashes[mech].NewServer(lookup)
			if err != nil {
				t.Fatal(err)
			}
			conv := srv.NewConversation()
			serverFirst, err := conv.Step(string(first))
			if err != nil {
				continue
			}
			sf := newScramFirst(string(first), serverFirst)
			cred, _ := lookup(conv.Username())
			if _, valid, _ := sf.librdkafkaFinal(scramHashes[mech], cred, string(final)); valid {
				t.Fatalf("%s: a made-up final message %q authenticated", mech, final)
			}
			if _, err := conv.Step(string(final)); err == nil && conv.Valid() {
				t.Fatalf("%s: a made-up final message %q authenticated", mech, final)
			}
		}
	})
}
