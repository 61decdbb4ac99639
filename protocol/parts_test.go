package protocol

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// randomProduce builds a produce request with nil, empty and filled record
// sets, a transactional id or none, several topics.
func randomProduce(rng *rand.Rand, version int16) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.Version = version
	if rng.IntN(2) == 0 {
		id := "txn-" + string(rune('a'+rng.IntN(26)))
		req.TransactionID = &id
	}
	req.Acks, req.TimeoutMillis = -1, rng.Int32()
	for range rng.IntN(4) {
		t := kmsg.NewProduceRequestTopic()
		t.Topic = string(bytes.Repeat([]byte{'t'}, 1+rng.IntN(300)))
		t.TopicID[0] = byte(rng.IntN(256))
		for range rng.IntN(4) {
			p := kmsg.NewProduceRequestTopicPartition()
			p.Partition = rng.Int32N(1000)
			switch rng.IntN(3) {
			case 0: // nil
			case 1:
				p.Records = []byte{}
			default:
				p.Records = make([]byte, rng.IntN(200_000))
				for i := range p.Records {
					p.Records[i] = byte(i)
				}
			}
			t.Partitions = append(t.Partitions, p)
		}
		req.Topics = append(req.Topics, t)
	}
	return req
}

func TestProducePartsEqualKmsg(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	req := kmsg.NewPtrProduceRequest()
	for version := int16(0); version <= req.MaxVersion(); version++ {
		for range 50 {
			req := randomProduce(rng, version)
			parts, ok := ProduceParts(req)
			if !ok {
				t.Fatalf("v%d: refused a request without tags", version)
			}
			if got, want := bytes.Join(parts, nil), req.AppendTo(nil); !bytes.Equal(got, want) {
				t.Fatalf("v%d: parts (%d bytes) differ from kmsg's encoding (%d bytes)", version, len(got), len(want))
			}
			for _, tp := range req.Topics {
				for _, p := range tp.Partitions {
					if len(p.Records) > 0 && !sharesOneOf(parts, p.Records) {
						t.Fatalf("v%d: records of partition %d were copied", version, p.Partition)
					}
				}
			}
		}
	}
}

func sharesOneOf(parts [][]byte, records []byte) bool {
	for _, p := range parts {
		if len(p) == len(records) && &p[0] == &records[0] {
			return true
		}
	}
	return false
}

func TestProducePartsRefusesTags(t *testing.T) {
	req := randomProduce(rand.New(rand.NewPCG(3, 4)), 9)
	req.UnknownTags.Set(7, []byte{1})
	if _, ok := ProduceParts(req); ok {
		t.Fatal("a request with tagged fields was encoded without them")
	}
}

// FuzzProduceParts: for any produce request kmsg decodes, the parts equal
// kmsg's own encoding.
func FuzzProduceParts(f *testing.F) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, v := range []int16{3, 8, 9, 12} {
		req := randomProduce(rng, v)
		for i := range req.Topics {
			for j := range req.Topics[i].Partitions {
				if r := req.Topics[i].Partitions[j].Records; len(r) > 64 {
					req.Topics[i].Partitions[j].Records = r[:64]
				}
			}
		}
		f.Add(v, req.AppendTo(nil))
	}
	f.Fuzz(func(t *testing.T, version int16, body []byte) {
		req := kmsg.NewPtrProduceRequest()
		if version < 0 || version > req.MaxVersion() {
			return
		}
		req.Version = version
		if req.ReadFrom(body) != nil {
			return
		}
		parts, ok := ProduceParts(req)
		if !ok {
			return
		}
		if !bytes.Equal(bytes.Join(parts, nil), req.AppendTo(nil)) {
			t.Fatal("parts differ from kmsg's encoding")
		}
	})
}

func randomFetchResponse(rng *rand.Rand, version int16) *kmsg.FetchResponse {
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = version
	resp.ThrottleMillis, resp.ErrorCode, resp.SessionID = rng.Int32(), int16(rng.IntN(100)), rng.Int32()
	for range rng.IntN(4) {
		t := kmsg.NewFetchResponseTopic()
		t.Topic = string(bytes.Repeat([]byte{'f'}, 1+rng.IntN(300)))
		t.TopicID[3] = byte(rng.IntN(256))
		for range rng.IntN(4) {
			p := kmsg.NewFetchResponseTopicPartition()
			p.Partition, p.ErrorCode = rng.Int32N(1000), int16(rng.IntN(100))
			p.HighWatermark, p.LastStableOffset, p.LogStartOffset = rng.Int64(), rng.Int64(), rng.Int64()
			p.PreferredReadReplica = rng.Int32N(5) - 1
			switch rng.IntN(3) {
			case 0: // nil aborted transactions
			case 1:
				p.AbortedTransactions = []kmsg.FetchResponseTopicPartitionAbortedTransaction{}
			default:
				for range 1 + rng.IntN(3) {
					a := kmsg.NewFetchResponseTopicPartitionAbortedTransaction()
					a.ProducerID, a.FirstOffset = rng.Int64(), rng.Int64()
					p.AbortedTransactions = append(p.AbortedTransactions, a)
				}
			}
			switch rng.IntN(3) {
			case 0: // nil
			case 1:
				p.RecordBatches = []byte{}
			default:
				p.RecordBatches = make([]byte, rng.IntN(200_000))
				for i := range p.RecordBatches {
					p.RecordBatches[i] = byte(i * 7)
				}
			}
			t.Partitions = append(t.Partitions, p)
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

func TestFetchResponsePartsEqualKmsg(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for version := int16(0); version <= kmsg.NewPtrFetchResponse().MaxVersion(); version++ {
		for range 50 {
			resp := randomFetchResponse(rng, version)
			parts, ok := FetchResponseParts(resp)
			if !ok {
				t.Fatalf("v%d: refused an answer without tagged fields", version)
			}
			if got, want := bytes.Join(parts, nil), resp.AppendTo(nil); !bytes.Equal(got, want) {
				t.Fatalf("v%d: parts (%d bytes) differ from kmsg's encoding (%d bytes)", version, len(got), len(want))
			}
			for _, tp := range resp.Topics {
				for _, p := range tp.Partitions {
					if len(p.RecordBatches) > 0 && !sharesOneOf(parts, p.RecordBatches) {
						t.Fatalf("v%d: batches of partition %d were copied", version, p.Partition)
					}
				}
			}
		}
	}
}

func TestFetchResponsePartsRefusesTags(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for name, set := range map[string]func(*kmsg.FetchResponseTopicPartition){
		"leader hint":     func(p *kmsg.FetchResponseTopicPartition) { p.CurrentLeader.LeaderID = 2 },
		"diverging epoch": func(p *kmsg.FetchResponseTopicPartition) { p.DivergingEpoch.Epoch = 3 },
		"snapshot id":     func(p *kmsg.FetchResponseTopicPartition) { p.SnapshotID.EndOffset = 4 },
		"unknown tag":     func(p *kmsg.FetchResponseTopicPartition) { p.UnknownTags.Set(9, []byte{1}) },
	} {
		resp := randomFetchResponse(rng, 15)
		p := kmsg.NewFetchResponseTopicPartition()
		set(&p)
		rt := kmsg.NewFetchResponseTopic()
		rt.Partitions = append(rt.Partitions, p)
		resp.Topics = append(resp.Topics, rt)
		if _, ok := FetchResponseParts(resp); ok {
			t.Fatalf("%s: encoded without it", name)
		}
		resp.Version = 11 // not flexible: no tagged fields to write
		if parts, ok := FetchResponseParts(resp); !ok || !bytes.Equal(bytes.Join(parts, nil), resp.AppendTo(nil)) {
			t.Fatalf("%s: v11 refused or differs", name)
		}
	}
	resp := randomFetchResponse(rng, 16)
	resp.Brokers = append(resp.Brokers, kmsg.NewFetchResponseBroker())
	if _, ok := FetchResponseParts(resp); ok {
		t.Fatal("node endpoints: encoded without them")
	}
}

// FuzzFetchResponseParts: for any fetch answer kmsg decodes, the parts
// equal kmsg's own encoding.
func FuzzFetchResponseParts(f *testing.F) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, v := range []int16{4, 11, 12, 15} {
		resp := randomFetchResponse(rng, v)
		for i := range resp.Topics {
			for j := range resp.Topics[i].Partitions {
				if r := resp.Topics[i].Partitions[j].RecordBatches; len(r) > 64 {
					resp.Topics[i].Partitions[j].RecordBatches = r[:64]
				}
			}
		}
		f.Add(v, resp.AppendTo(nil))
	}
	f.Fuzz(func(t *testing.T, version int16, body []byte) {
		resp := kmsg.NewPtrFetchResponse()
		if version < 0 || version > resp.MaxVersion() {
			return
		}
		resp.Version = version
		if resp.ReadFrom(body) != nil {
			return
		}
		parts, ok := FetchResponseParts(resp)
		if !ok {
			return
		}
		if !bytes.Equal(bytes.Join(parts, nil), resp.AppendTo(nil)) {
			t.Fatal("parts differ from kmsg's encoding")
		}
	})
}
